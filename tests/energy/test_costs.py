"""Operating cost (issue 21): tariffs with time-of-use periods, bills' costs beside the tariff
estimate, per m2 and per person, against the real database."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from pydantic import ValidationError

from energy.bills import import_bills
from energy.costs import Band, Tariff, TariffError, add_tariff, cost_report, load_tariffs
from energy.render import carbon_csv, carbon_out
from energy.reports import carbon_report
from rules.site import SiteModel
from store import registry

pytestmark = pytest.mark.integration

TOU = (
    Band(band="valley", start="00:00", end="07:00", price=Decimal("0.3")),
    Band(band="flat", start="07:00", end="10:00", price=Decimal("0.6")),
    Band(band="peak", start="10:00", end="12:00", price=Decimal("1.0")),
    Band(band="flat", start="12:00", end="23:00", price=Decimal("0.6")),
    Band(band="valley", start="23:00", end="24:00", price=Decimal("0.3")),
)


@pytest.fixture
def site(conn: psycopg.Connection[Any], kit: Any) -> SiteModel:
    """Building b (1000 m2, 50 people) of an organisation of its own, with 1 March 2023 of
    electricity read at times that cross the time-of-use boundaries, and 10 m3 of water."""
    base: SiteModel = kit.make_site(grid_region="national", max_gap="40d")
    org = f"o{uuid.uuid4().hex[:10]}"
    data = base.model_dump(mode="json", exclude_defaults=True)
    data["site"]["org"] = [f"{org}-city", org]
    model = SiteModel.model_validate(data)
    registry.sync_site(conn, model, actor="test", now=kit.local(2023, 1, 1))
    day = [kit.local(2023, 3, 1, h, m) for h, m in ((0, 0), (6, 45), (7, 15), (10, 30))]
    day += [kit.local(2023, 3, 1, h, m) for h, m in ((11, 0), (12, 0), (23, 30))]
    values = [0, 100, 160, 290, 330, 350, 580]
    points = [*zip(day, values, strict=True), (kit.local(2023, 3, 2), 600)]
    kit.insert_readings(conn, model, "em-main", "energy_kwh", points)
    water = [(kit.local(2023, 3, 1), 0), (kit.local(2023, 3, 2), 10)]
    kit.insert_readings(conn, model, "wm", "water_m3", water)
    add_tariff(
        conn,
        Tariff(scope="org", scope_id=org, carrier="electricity", first_day=dt.date(2023, 1, 1),
               bands=TOU, source="test TOU notice"),
        added_by="test",
    )  # fmt: skip
    # the organisation above sets water at 5.0; the site's own price (4.2) wins
    for scope, scope_id, price in (("org", f"{org}-city", "5.0"), ("site", model.site.id, "4.2")):
        add_tariff(
            conn,
            Tariff(scope=scope, scope_id=scope_id, carrier="water", first_day=dt.date(2023, 1, 1),
                   price=Decimal(price)),
            added_by="test",
        )  # fmt: skip
    conn.commit()
    return model


def report(conn: psycopg.Connection[Any], site: SiteModel, kit: Any) -> Any:
    carbon = carbon_report(conn, site, kit.local(2023, 3, 1), kit.local(2023, 3, 2))
    cost = cost_report(conn, site, carbon)
    return carbon, cost, carbon_out(carbon, cost)


def test_time_of_use_split_at_period_boundaries_by_hand(
    conn: psycopg.Connection[Any], site: SiteModel, kit: Any
) -> None:
    _, _, out = report(conn, site, kit)
    assert out.cost is not None
    electricity = next(c for c in out.cost.carriers if c.carrier == "electricity")
    bands = {b.band: (b.consumption, b.cost) for b in electricity.bands}
    # 00:00-06:45 100 kWh valley. 06:45-07:15 60 kWh across 07:00: 30 valley + 30 flat.
    # 07:15-10:30 130 kWh across 10:00: 165 min flat (110) + 30 min peak (20). 10:30-11:00 40
    # and 11:00-12:00 20 peak. 12:00-23:30 230 kWh across 23:00: 660 min flat (220) + 30 min
    # valley (10). 23:30-24:00 20 valley.
    # valley 100+30+10+20 = 160 x 0.3 = 48; flat 30+110+220 = 360 x 0.6 = 216; peak 80 x 1 = 80
    assert bands == {
        "valley": (Decimal("160.000"), Decimal("48.00")),
        "flat": (Decimal("360.000"), Decimal("216.00")),
        "peak": (Decimal("80.000"), Decimal("80.00")),
    }
    assert (electricity.cost, electricity.estimated_cost, electricity.billed_cost) == (
        Decimal("344.00"), Decimal("344.00"), Decimal("0.00"),
    )  # fmt: skip
    water = next(c for c in out.cost.carriers if c.carrier == "water")
    assert water.cost == Decimal("42.00")  # the site's 4.2, not the organisation's 5.0
    # 386 yuan over 1000 m2 and 50 people (the building, the site's only top-level space)
    assert (out.cost.total, out.cost.estimated, out.cost.billed) == (
        Decimal("386.00"), Decimal("386.00"), Decimal("0.00"),
    )  # fmt: skip
    assert (out.cost.per_m2, out.cost.per_person) == (Decimal("0.39"), Decimal("7.72"))
    assert [m.estimated for m in out.cost.months] == [True, True]
    assert {t.carrier for t in out.cost.tariffs} == {"electricity", "water"}
    assert all(t.scope != "org" or t.carrier != "water" for t in out.cost.tariffs)


def test_a_bills_cost_counts_with_the_tariff_estimate_beside_it(
    conn: psycopg.Connection[Any], site: SiteModel, kit: Any
) -> None:
    sid = site.site.id
    add_tariff(
        conn,
        Tariff(scope="site", scope_id=sid, carrier="heat", first_day=dt.date(2023, 1, 1),
               price=Decimal("90")),
        added_by="test",
    )  # fmt: skip
    text = "\n".join(
        [
            "site,carrier,first_day,last_day,quantity,unit,cost,kind,space,device,reference",
            f"{sid},electricity,2023-03-01,2023-03-01,600,kWh,400.00,billed,b,em-main,E-1",
            f"{sid},heat,2023-03-01,2023-03-01,2500,kWh,900,billed,b,,H-1",
        ]
    )
    models = {sid: site}
    result = import_bills(
        conn,
        "b.csv",
        text.encode(),
        models.get,
        actor="t",
        now=dt.datetime.now(dt.UTC),
        dry_run=False,
    )
    assert not result.errors
    conn.commit()
    carbon, cost, out = report(conn, site, kit)
    assert out.cost is not None
    bills = {b.carrier: b for b in out.cost.bills}
    # electricity: measured by em-main (600 kWh priced 344.00 by the tariff); the bill says 400
    assert (bills["electricity"].cost, bills["electricity"].tariff_estimate) == (
        Decimal("400.00"), Decimal("344.00"),
    )  # fmt: skip
    assert bills["electricity"].difference == Decimal("56.00")
    assert bills["electricity"].difference_pct == Decimal("16.28")  # 56 / 344
    # heat: no meter, the bill's 9 GJ count; the tariff prices them at 810
    assert (bills["heat"].cost, bills["heat"].tariff_estimate, bills["heat"].difference) == (
        Decimal("900.00"), Decimal("810.00"), Decimal("90.00"),
    )  # fmt: skip
    carriers = {c.carrier: c for c in out.cost.carriers}
    assert (carriers["electricity"].cost, carriers["electricity"].estimated_cost) == (
        Decimal("400.00"), Decimal("0.00"),
    )  # fmt: skip
    assert carriers["electricity"].tariff_estimate == Decimal("344.00")
    assert carriers["heat"].cost == Decimal("900.00")
    assert (out.cost.total, out.cost.billed, out.cost.estimated) == (
        Decimal("1342.00"), Decimal("1300.00"), Decimal("42.00"),
    )  # fmt: skip
    months = {m.carrier: m for m in out.cost.months}
    assert not months["electricity"].estimated and months["water"].estimated
    rows = list(csv.DictReader(io.StringIO(carbon_csv(carbon, cost))))
    diff = next(r for r in rows if r["section"] == "cost bill" and r["item"] == "bill - estimate"
                and "electricity" in r["key"])  # fmt: skip
    assert (diff["value"], diff["detail"]) == ("56.00", "16.28 % of the estimate")
    total = next(r for r in rows if r["section"] == "cost" and r["item"] == "total")
    assert total["value"] == "1342.00"


def test_no_tariff_means_no_price_and_says_so(conn: psycopg.Connection[Any], kit: Any) -> None:
    model: SiteModel = kit.make_site(grid_region="national", max_gap="40d")
    registry.sync_site(conn, model, actor="test", now=kit.local(2023, 1, 1))
    points = [(kit.local(2023, 3, 1), 0), (kit.local(2023, 3, 2), 10)]
    kit.insert_readings(conn, model, "wm", "water_m3", points)
    conn.commit()
    carbon = carbon_report(conn, model, kit.local(2023, 3, 1), kit.local(2023, 3, 2))
    out = carbon_out(carbon, cost_report(conn, model, carbon))
    assert out.cost is not None
    water = next(c for c in out.cost.carriers if c.carrier == "water")
    assert (water.cost, water.untariffed) == (Decimal("0.00"), Decimal("10.000"))
    assert any("without a tariff" in n for n in out.cost.notes)


def test_tariffs_are_validated_and_never_overlap(
    conn: psycopg.Connection[Any], site: SiteModel
) -> None:
    with pytest.raises(ValidationError, match="cover the day once"):
        Tariff(scope="site", scope_id="x", carrier="electricity", first_day=dt.date(2023, 1, 1),
               bands=TOU[:2] + TOU[3:])  # fmt: skip
    with pytest.raises(ValidationError, match="electricity only"):
        Tariff(scope="site", scope_id="x", carrier="water", first_day=dt.date(2023, 1, 1),
               bands=TOU)  # fmt: skip
    with pytest.raises(ValidationError, match="either a flat price"):
        Tariff(scope="site", scope_id="x", carrier="water", first_day=dt.date(2023, 1, 1))
    later = Tariff(scope="site", scope_id=site.site.id, carrier="water",
                   first_day=dt.date(2024, 1, 1), price=Decimal("5"))  # fmt: skip
    with pytest.raises(TariffError, match="overlaps"):
        add_tariff(conn, later, added_by="test")
    conn.rollback()
    assert len([t for t in load_tariffs(conn, site) if t.carrier == "water"]) == 2


def test_cli_tariff_add_and_the_reports_show_the_cost(
    conn: psycopg.Connection[Any],
    kit: Any,
    energy_database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from clausewatch.cli import main

    model: SiteModel = kit.make_site(grid_region="national", max_gap="40d")
    registry.sync_site(conn, model, actor="test", now=kit.local(2023, 1, 1))
    points = [(kit.local(2023, 3, 1), 0), (kit.local(2023, 3, 1, 12), 50)]
    points.append((kit.local(2023, 3, 2), 100))
    kit.insert_readings(conn, model, "em-main", "energy_kwh", points)
    conn.commit()
    db = ["--database-url", energy_database_url]
    add = ["energy", "tariff", "add", *db, "--scope", "site", "--id", model.site.id,
           "--carrier", "electricity", "--from", "2023-01-01"]  # fmt: skip
    assert main([*add, "--band", "valley=00:00-08:00@0.3", "--band", "peak=08:00-20:00@1"]) == 2
    assert "cover the day" in capsys.readouterr().err
    bands = ["--band", "valley=00:00-12:00@0.3", "--band", "peak=12:00-24:00@1.0"]
    assert main([*add, *bands, "--source", "测试电价"]) == 0
    assert main([*add, "--price", "0.5"]) == 1  # overlaps the one just added
    assert "overlaps" in capsys.readouterr().err
    period = ["--site", model.site.id, "--from", "2023-03-01", "--to", "2023-03-01"]
    assert main(["report", "energy", *db, *period]) == 0
    err = capsys.readouterr().err
    # 50 kWh before noon at 0.3, 50 after at 1.0
    assert "成本 cost 65.00 yuan (billed 0.00, estimated 65.00)" in err
    assert "peak 50.000 kWh 50.00; valley 50.000 kWh 15.00" in err
    assert main(["report", "carbon", *db, *period, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    per = {r["item"]: r["value"] for r in rows if r["section"] == "cost"}
    assert (per["total"], per["per m2"], per["per person"]) == (
        "65.00",
        "0.06",
        "1.30",
    )  # 0.065 half to even
    assert main(["energy", "tariff", "list", *db, "--site", model.site.id]) == 0
    assert "测试电价" in capsys.readouterr().out
