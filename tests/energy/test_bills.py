"""Utility bills and manual meter readings (issue 22): import from CSV and .xlsx against the real
database, the ledger, and how reports count or compare them."""

from __future__ import annotations

import csv
import datetime as dt
import io
import zipfile
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import openpyxl
import psycopg
import pytest

from energy.bills import ImportError_, ImportResult, import_bills
from energy.render import carbon_csv, carbon_out, energy_out
from energy.reports import carbon_report, energy_series
from rules.site import SiteModel
from store import registry

pytestmark = pytest.mark.integration

HEADER = "site,carrier,first_day,last_day,quantity,unit,cost,kind,space,device,reference"
NOW = dt.datetime(2023, 2, 10, tzinfo=dt.UTC)


@pytest.fixture
def site(conn: psycopg.Connection[Any], kit: Any) -> SiteModel:
    """Building b with January 2023 metered: 1000 kWh on em-main; no heat meter."""
    model: SiteModel = kit.make_site(grid_region="national", max_gap="40d")
    registry.sync_site(conn, model, actor="test", now=kit.local(2023, 1, 1))
    jan, feb = kit.local(2023, 1, 1), kit.local(2023, 2, 1)
    kit.insert_readings(conn, model, "em-main", "energy_kwh", [(jan, 0), (feb, 1000)])
    conn.commit()
    return model


def models(site: SiteModel) -> Callable[[str], SiteModel | None]:
    return lambda name: site if name == site.site.id else None


def run(
    conn: psycopg.Connection[Any],
    site: SiteModel,
    text: str,
    *,
    dry_run: bool = False,
    name: str = "bills.csv",
) -> ImportResult:
    result = import_bills(
        conn, name, text.encode(), models(site), actor="alice", now=NOW, dry_run=dry_run
    )
    conn.commit()
    return result


def bills_csv(site: SiteModel, electricity: str = "1.2") -> str:
    sid = site.site.id
    return "\n".join(
        [
            HEADER,
            f"{sid},electricity,2023-01-01,2023-01-31,{electricity},MWh,960.00,billed,b,,E-2301",
            f"{sid},热力,2023-01-01,2023-01-31,2500,kWh,,manual,b,,",
        ]
    )


def ledger_rows(conn: psycopg.Connection[Any], site: SiteModel) -> list[tuple[str, Any]]:
    rows = conn.execute(
        "SELECT kind, payload::jsonb FROM ledger WHERE kind LIKE 'energy.bill.%%'"
        " AND payload::jsonb->>'site' = %s ORDER BY seq",
        (site.site.id,),
    ).fetchall()
    return [(kind, payload) for kind, payload in rows]


def test_dry_run_apply_again_and_a_correction(
    conn: psycopg.Connection[Any], site: SiteModel
) -> None:
    dry = run(conn, site, bills_csv(site), dry_run=True)
    assert (dry.new, dry.errors, dry.applied) == (2, [], False)
    count = "SELECT count(*) FROM energy_bills WHERE site = %s"
    assert conn.execute(count, (site.site.id,)).fetchone() == (0,)

    applied = run(conn, site, bills_csv(site))
    assert (applied.new, applied.applied) == (2, True)
    # converted exactly: 1.2 MWh = 1200 kWh; 2500 kWh of heat = 9 GJ
    assert [(c.carrier, c.amount, c.report_unit) for c in applied.changes] == [
        ("electricity", 1200, "kWh"),
        ("heat", 9, "GJ"),
    ]
    recorded = ledger_rows(conn, site)
    assert [k for k, _ in recorded] == ["energy.bill.recorded"] * 2
    assert recorded[0][1]["actor"] == "alice"
    assert recorded[0][1]["source"] == "bills.csv row 2"

    again = run(conn, site, bills_csv(site))
    assert (again.new, again.corrected, again.unchanged) == (0, 0, 2)
    assert conn.execute(count, (site.site.id,)).fetchone() == (2,)
    assert len(ledger_rows(conn, site)) == 2

    corrected = run(conn, site, bills_csv(site, electricity="1.25"))
    assert (corrected.corrected, corrected.unchanged) == (1, 1)
    entries = ledger_rows(conn, site)
    assert [k for k, _ in entries][-1] == "energy.bill.corrected"
    assert entries[-1][1]["previous"]["quantity"] == "1.2"
    assert entries[-1][1]["quantity"] == "1.25"
    assert entries[-1][1]["revision"] == 2
    current = conn.execute(
        "SELECT amount, revision FROM energy_bills WHERE site = %s AND carrier = 'electricity'"
        " ORDER BY id",
        (site.site.id,),
    ).fetchall()
    assert current == [(1200, 1), (1250, 2)]  # the first revision is kept


def test_every_bad_row_is_named_and_nothing_is_stored(
    conn: psycopg.Connection[Any], site: SiteModel
) -> None:
    sid = site.site.id
    text = "\n".join(
        [
            HEADER,
            f"{sid},electricity,2023-01-01,2023-01-31,100,m3,,billed,b,,",  # unit
            "nowhere,electricity,2023-01-01,2023-01-31,100,kWh,,billed,,,",  # site
            f"{sid},coal,2023-01-01,2023-01-31,100,kg,,billed,,,",  # carrier
            f"{sid},water,2023-01-31,2023-01-01,100,m3,,billed,,,",  # period
            f"{sid},water,2023-01-01,2023-01-31,-5,m3,,billed,,,",  # quantity
            f"{sid},water,2023-01-01,2023-01-31,5,m3,abc,guess,,,",  # cost, kind
            f"{sid},natural_gas,2023-01-01,2023-01-31,5,m3,,billed,b,em-main,",  # device
            f"{sid},water,2023-01-01,2023-01-31,5,m3,,billed,f9,,",  # space
            f"{sid},heat,2023-01-01,2023-01-31,5,GJ,,billed,b,,",
            f"{sid},heat,2023-01-15,2023-02-14,5,GJ,,manual,b,,",  # overlaps the row before
            f'{sid},water,2023-01-01,2023-01-31,"12,5",m3,,billed,,,',  # a decimal comma
            f'{sid},water,2023-02-01,2023-02-28,"1,250.5",m3,,billed,,,',  # thousands: fine
            f"{sid},water,1900-02-01,1900-02-28,1,m3,,billed,,,",  # a year reports never cover
        ]
    )
    result = run(conn, site, text)
    assert not result.applied
    named = [(e.row, e.column) for e in result.errors]
    assert named == [
        (2, "unit"),
        (3, "site"),
        (4, "carrier"),
        (5, "last_day"),
        (6, "quantity"),
        (7, "kind"),
        (7, "cost"),
        (8, "device"),
        (9, "space"),
        (11, "first_day"),
        (12, "quantity"),
        (14, "first_day"),
        (14, "last_day"),
    ]
    assert "does not fit electricity" in result.errors[0].message
    assert conn.execute("SELECT count(*) FROM energy_bills WHERE site = %s", (sid,)).fetchone() == (
        0,
    )
    missing = run(conn, site, "site,carrier,quantity\nx,water,1\n")
    assert {(e.row, e.column) for e in missing.errors} == {
        (1, "first_day"),
        (1, "last_day"),
        (1, "unit"),
        (1, "kind"),
    }


def test_xlsx_workbook_with_two_sheets(conn: psycopg.Connection[Any], site: SiteModel) -> None:
    book = openpyxl.Workbook()
    first = book.active
    assert first is not None
    first.title = "电费"
    first.append(["站点", "能源", "起始日", "截止日", "数量", "单位", "费用", "类型", "空间"])
    first.append(
        [site.site.id, "电", dt.date(2023, 1, 1), dt.date(2023, 1, 31), 1234.56, "kWh", 987.6,
         "账单", "b"]
    )  # fmt: skip
    second = book.create_sheet("热")
    second.append(["site", "carrier", "first_day", "last_day", "quantity", "unit", "kind"])
    second.append([site.site.id, "heat", dt.date(2023, 1, 1), dt.date(2023, 1, 31), 9, "GJ", "x"])
    second.append([site.site.id, "heat", "2023-01-01", "2023-01-31", 0.1 + 0.2, "GJ", "manual"])
    buffer = io.BytesIO()
    book.save(buffer)
    data = buffer.getvalue()

    result = import_bills(conn, "jan.xlsx", data, models(site), actor="bob", now=NOW, dry_run=False)
    assert [(e.sheet, e.row, e.column) for e in result.errors] == [("热", 2, "kind")]
    assert not result.applied
    second.delete_rows(2)
    buffer = io.BytesIO()
    book.save(buffer)
    result = import_bills(
        conn, "jan.xlsx", buffer.getvalue(), models(site), actor="bob", now=NOW, dry_run=False
    )
    conn.commit()
    assert result.errors == []
    electricity = result.changes[0]
    assert (electricity.sheet, electricity.row, electricity.quantity) == (
        "电费",
        2,
        Decimal("1234.56"),
    )
    assert str(electricity.quantity) == "1234.56"  # the cell's number as Excel shows it
    assert str(electricity.cost) == "987.6"
    assert str(result.changes[1].quantity) == "0.3"  # as Excel shows the cell, 15 digits


def test_formulas_and_macro_workbooks_are_refused(
    conn: psycopg.Connection[Any], site: SiteModel
) -> None:
    """A formula's cached result is not a bill: the cell is named and nothing is stored; a
    workbook with macros is not read at all (as the site workbook, config/spreadsheets.py)."""
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "电费"
    sheet.append(["site", "carrier", "first_day", "last_day", "quantity", "unit", "kind"])
    sheet.append([site.site.id, "电", "2023-01-01", "2023-01-31", "=1000+234", "kWh", "账单"])
    buffer = io.BytesIO()
    book.save(buffer)
    # as Excel saves it: the formula with its result (1234) cached beside it
    cached = _with_cached_result(buffer.getvalue(), "<f>1000+234</f><v />", "1234")
    result = import_bills(
        conn, "jan.xlsx", cached, models(site), actor="bob", now=NOW, dry_run=False
    )
    assert [(e.sheet, e.row, e.column) for e in result.errors] == [("电费", 2, "quantity")]
    assert "formula" in result.errors[0].message and "公式" in result.errors[0].message
    assert "E2" in result.errors[0].message
    assert (result.applied, result.changes) == (False, [])

    sheet["E2"] = 1234
    buffer = io.BytesIO()
    book.save(buffer)
    macro = io.BytesIO(buffer.getvalue())
    with zipfile.ZipFile(macro, "a") as archive:
        archive.writestr("xl/vbaProject.bin", b"\0" * 16)
    with pytest.raises(ImportError_, match=r"vbaProject\.bin"):
        import_bills(
            conn, "jan.xlsx", macro.getvalue(), models(site), actor="b", now=NOW, dry_run=True
        )
    with pytest.raises(ImportError_, match="macros"):
        import_bills(
            conn, "jan.xlsm", buffer.getvalue(), models(site), actor="b", now=NOW, dry_run=True
        )

    sid = site.site.id
    text = f"{HEADER}\n{sid},electricity,2023-01-01,2023-01-31,=2*600,kWh,,billed,b,,\n"
    refused = run(conn, site, text)
    assert [(e.sheet, e.row, e.column) for e in refused.errors] == [(None, 2, "quantity")]
    stored = conn.execute("SELECT count(*) FROM energy_bills WHERE site = %s", (sid,))
    assert stored.fetchone() == (0,)


def _with_cached_result(data: bytes, formula: str, value: str) -> bytes:
    """The workbook with the result Excel caches beside a formula (openpyxl writes none)."""
    cached = formula.replace("<v />", f"<v>{value}</v>").encode()
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for item in source.infolist():
            content = source.read(item)
            if item.filename.startswith("xl/worksheets/"):
                content = content.replace(formula.encode(), cached)
            target.writestr(item, content)
    return out.getvalue()


def test_bill_beside_its_meter_and_a_manual_figure_counted(
    conn: psycopg.Connection[Any], site: SiteModel, kit: Any
) -> None:
    run(conn, site, bills_csv(site))
    report = carbon_report(conn, site, kit.local(2023, 1, 1), kit.local(2023, 2, 1))
    out = carbon_out(report)
    electricity = next(b for b in out.bills if b.carrier == "electricity")
    # the meter counts; the bill is beside it over its own period, with the difference
    assert not electricity.counted
    assert (electricity.amount, electricity.metered, electricity.difference) == (1200, 1000, -200)
    assert str(electricity.difference_pct) == "-16.67"
    assert electricity.meters == ["em-main"]
    carriers = {c.carrier: c for c in out.carriers}
    assert carriers["electricity"].consumption == 1000
    assert (carriers["electricity"].billed, carriers["electricity"].manual) == (0, 0)
    # no heat meter: the manual 9 GJ count, flagged in the activity and the carbon figure
    heat = carriers["heat"]
    assert (heat.consumption, heat.manual, heat.billed) == (9, 9, 0)
    assert str(heat.location_tco2) == "0.990000"  # 9 GJ x 0.11 tCO2/GJ
    assert str(heat.manual_tco2) == "0.990000"
    assert str(out.manual_tco2) == "0.990000"
    assert str(out.billed_tco2) == "0.000000"
    assert str(out.manual_kgce) == "307.080"  # 9 GJ x 34.12 kgce/GJ
    energy_target = next(c for c in out.comparisons if "energy per m2" in c.name)
    assert "manual (estimated) 307.080 kgce" in energy_target.note
    assert "手工/估计 307.080 kgce" in energy_target.note_zh
    assert energy_target.name_zh == "“十四五”目标 单位面积能耗（2025 年）"
    assert any("manual (estimated) value counted: heat b" in n for n in out.notes)

    rows = list(csv.DictReader(io.StringIO(carbon_csv(report))))
    label = "billed electricity b 2023-01-01..2023-01-31"
    bill = {r["item"]: r["value"] for r in rows if r["section"] == "bill" and r["key"] == label}
    assert bill == {"bill": "1200.000", "metered": "1000.000", "metered - bill": "-200.000"}
    total = next(r for r in rows if r["item"] == "total location-based")
    assert "manual (estimated) 0.990000" in total["detail"]
    heat_row = next(r for r in rows if r["key"] == "heat" and r["item"] == "consumption")
    assert heat_row["detail"] == "estimated 0.000; billed 0.000; manual 9.000"

    series = energy_series(
        conn, site, kit.local(2023, 1, 1), kit.local(2023, 2, 1), "month", by="carrier"
    )
    energy = energy_out(
        site, None, (kit.local(2023, 1, 1), kit.local(2023, 2, 1)), "month", "carrier", series
    )
    heat_point = next(p for p in energy.points if p.carrier == "heat")
    assert (heat_point.value, heat_point.manual) == (9, 9)
    assert [b.difference for b in energy.bills if b.carrier == "electricity"] == [-200]


def test_a_bill_across_months_is_split_pro_rata_and_flagged_estimated(
    conn: psycopg.Connection[Any], site: SiteModel, kit: Any
) -> None:
    sid = site.site.id
    run(conn, site, f"{HEADER}\n{sid},heat,2023-01-17,2023-02-15,30,GJ,,billed,b,,\n")
    points, _, _, _ = energy_series(
        conn, site, kit.local(2023, 1, 1), kit.local(2023, 3, 1), "month", by="carrier"
    )
    heat = [(p.value, p.estimated, p.billed) for p in points if p.carrier == "heat"]
    assert heat == [(15, 15, 15), (15, 15, 15)]  # 15 of 30 days in each month
