"""Utility bills and manual meter readings: consumption over a period typed from paper.

A row says: for `site` (and a space, and a meter or other device when known), `carrier` used
`quantity` `unit` from `first_day` to `last_day` (local dates, both included), costing `cost`
yuan, as a `billed` value (a utility's bill) or a `manual` one (a reading typed by hand, or an
estimate). They come from CSV or Excel (.xlsx) files, read by `config.spreadsheets` as the site
workbook is (bounded; a formula cell is refused, never its cached result taken, and a workbook
that may hold macros is not read); every row is checked before anything is stored, and every
error is named by sheet, row and column.

Stored in `energy_bills` (migration 0053). The natural key is site, carrier, space, device and
period: importing the same file again changes nothing; a row with the same key and other values
is a correction, a new revision of the bill that replaces the current one (the old one is kept),
recorded in the ledger with the actor; a row whose period overlaps another bill of the same key
is refused (it would be counted twice). A bill entered wrongly (another period or site) is
withdrawn (`withdraw_bill`): kept, no longer current, and the ledger says who and why.

Quantities are converted exactly (`decimal.Decimal`, factors.UNIT_SCALE) to the carrier's
report unit; a unit that does not fit the carrier is an error, never a guess.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal, InvalidOperation
from typing import Any, Literal

import psycopg
from pydantic import BaseModel

from config import spreadsheets
from config.spreadsheets import Header, Limits, Row, SpreadsheetError, Table
from energy.factors import ACTIVITY_UNIT, UNIT_SCALE
from rules.site import SiteModel
from store import ledger

Kind = Literal["billed", "manual"]
KINDS: tuple[Kind, ...] = ("billed", "manual")
# Bounds of one import: the file, what an Excel file may unpack to, rows, a bill's length.
MAX_FILE_BYTES = 1024 * 1024
MAX_UNPACKED_BYTES = 32 * 1024 * 1024
MAX_ROWS = 5000
MAX_BILL_DAYS = 366
MAX_TEXT = 200
LIMITS = Limits(
    max_file_bytes=MAX_FILE_BYTES, max_unpacked_bytes=MAX_UNPACKED_BYTES, max_rows=MAX_ROWS
)
FIRST_YEAR, LAST_YEAR = 1990, 2100  # the years reports cover (energy.reports)
EXCEL_DIGITS = 15  # significant digits Excel shows of a number
# A number with thousands separators (1,234,567.5); any other comma (a decimal comma) is refused.
THOUSANDS = re.compile(r"\d{1,3}(,\d{3})+(\.\d+)?")

# Column names as the header row may give them (case-insensitive), Chinese or English.
COLUMNS: dict[str, tuple[str, ...]] = {
    "site": ("site", "站点"),
    "carrier": ("carrier", "能源", "能源种类"),
    "first_day": ("first_day", "from", "起始日", "起始日期"),
    "last_day": ("last_day", "to", "截止日", "截止日期"),
    "quantity": ("quantity", "数量", "用量"),
    "unit": ("unit", "单位"),
    "cost": ("cost", "cost_cny", "费用", "金额"),
    "kind": ("kind", "类型"),
    "space": ("space", "空间"),
    "device": ("device", "meter", "表计", "设备"),
    "reference": ("reference", "单号", "账单号"),
}
ALIASES = {alias: name for name, aliases in COLUMNS.items() for alias in aliases}
REQUIRED = ("site", "carrier", "first_day", "last_day", "quantity", "unit", "kind")
CARRIER_NAMES: dict[str, str] = {
    **{c: c for c in ACTIVITY_UNIT},
    "电": "electricity",
    "电力": "electricity",
    "gas": "natural_gas",
    "天然气": "natural_gas",
    "水": "water",
    "热": "heat",
    "热力": "heat",
    "汽油": "gasoline",
    "柴油": "diesel",
}
KIND_NAMES: dict[str, Kind] = {
    "billed": "billed",
    "账单": "billed",
    "manual": "manual",
    "estimated": "manual",
    "手工": "manual",
    "估计": "manual",
}
KIND_LABEL = {"billed": "账单 billed", "manual": "手工/估计 manual (estimated)"}


class RowError(BaseModel):
    """One problem of an import: where (sheet None for CSV; row 1 is the header) and what."""

    sheet: str | None
    row: int
    column: str | None
    message: str

    def __str__(self) -> str:
        place = f"{self.sheet}!" if self.sheet else ""
        column = f" {self.column}" if self.column else ""
        return f"{place}row {self.row}{column}: {self.message}"


class BillChange(BaseModel):
    """What an import does (or, dry, would do) with one row."""

    action: Literal["new", "corrected", "unchanged"]
    sheet: str | None
    row: int
    site: str
    carrier: str
    space: str | None
    device: str | None
    first_day: dt.date
    last_day: dt.date
    kind: Kind
    quantity: Decimal
    unit: str
    amount: Decimal  # in the carrier's report unit
    report_unit: str
    cost: Decimal | None
    reference: str
    previous: dict[str, str] | None = None  # a correction: the values it replaces
    id: int | None = None  # the stored bill (after apply)


class ImportResult(BaseModel):
    file: str
    dry_run: bool
    applied: bool
    rows: int
    new: int
    corrected: int
    unchanged: int
    errors: list[RowError]
    changes: list[BillChange]


class BillWithdrawn(BaseModel):
    id: int
    site: str
    reason: str


class ImportError_(ValueError):
    """The file cannot be read at all (not CSV/xlsx, too big, no header)."""


@dataclass(frozen=True, slots=True)
class Bill:
    """A current bill as stored."""

    id: int
    site: str
    carrier: str
    space: str | None
    device: str | None
    first_day: dt.date
    last_day: dt.date
    kind: Kind
    quantity: Decimal
    unit: str
    amount: Decimal
    cost: Decimal | None
    reference: str
    revision: int

    def bounds(self, site: SiteModel) -> tuple[float, float]:
        """[start, end) as epoch seconds: local midnight of the first day to that after the
        last."""
        zone = site.zone()
        start = dt.datetime.combine(self.first_day, dt.time(), zone)
        end = dt.datetime.combine(self.last_day + dt.timedelta(days=1), dt.time(), zone)
        return start.timestamp(), end.timestamp()


# ---- reading a file ----


@dataclass(frozen=True, slots=True)
class RawRow:
    sheet: str | None
    row: int
    cells: dict[str, object]


def read_rows(name: str, data: bytes) -> tuple[list[RawRow], list[RowError]]:
    """The rows of a CSV or .xlsx file (by its name, else its first bytes) under their
    canonical column names, read by `config.spreadsheets` within `LIMITS`; refused cells (a
    formula, a CSV cell beginning with `=`) and header problems as errors. Raises ImportError_
    when the file cannot be read at all (too large, a workbook with macros, not CSV/xlsx)."""
    try:
        spreadsheets.refuse_macros(name)
        if spreadsheets.is_xlsx(name, data):
            with spreadsheets.read_xlsx(data, LIMITS, header_rows=1) as tables:
                return _table_rows(tables)
        return _table_rows([spreadsheets.read_csv(data, LIMITS, header_rows=1)])
    except SpreadsheetError as exc:
        raise ImportError_(str(exc)) from None


def _table_rows(tables: Iterable[Table]) -> tuple[list[RawRow], list[RowError]]:
    rows: list[RawRow] = []
    errors: list[RowError] = []
    for table in tables:
        sheet = table.name or None
        header: Header | None = None
        for row in table.rows:
            for problem in row.problems:
                name = header.name(problem.column) if header is not None else None
                errors.append(
                    RowError(
                        sheet=sheet,
                        row=row.number,
                        column=name or (problem.cell(row.number) if problem.column else None),
                        message=f"{problem.zh} {problem.en} ({problem.cell(row.number)})",
                    )
                )
            if header is None:
                header = _header(sheet, row, errors)
                continue
            if len(rows) >= MAX_ROWS:
                raise ImportError_(f"more than {MAX_ROWS} rows; split the file")
            cells: dict[str, object] = {
                c: v for c, v in zip(header.columns, row.cells, strict=False) if c
            }
            rows.append(RawRow(sheet, row.number, cells))
    if not rows and not errors:
        raise ImportError_("no rows: the file needs a header row and at least one bill")
    return rows, errors


def _header(sheet: str | None, row: Row, errors: list[RowError]) -> Header:
    header = spreadsheets.header_columns(row.cells, ALIASES)
    for problem in header.problems:
        errors.append(
            RowError(
                sheet=sheet,
                row=row.number,
                column=str(row.cells[problem.column - 1]),
                message=f"{problem.zh} {problem.en}",
            )
        )
    for name in REQUIRED:
        if name not in header.columns:
            errors.append(
                RowError(sheet=sheet, row=row.number, column=name, message="缺少列 missing column")
            )
    return header


# ---- checking rows ----


@dataclass(frozen=True, slots=True)
class Checked:
    raw: RawRow
    site: str
    carrier: str
    space: str | None
    device: str | None
    first_day: dt.date
    last_day: dt.date
    kind: Kind
    quantity: Decimal
    unit: str
    amount: Decimal
    cost: Decimal | None
    reference: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.site, self.carrier, self.space or "", self.device or "")


def check_rows(
    rows: Sequence[RawRow], site_model: Callable[[str], SiteModel | None]
) -> tuple[list[Checked], list[RowError]]:
    """Each row checked against its site's model (`site_model`: None for an unknown site):
    the good rows and every error found."""
    checked: list[Checked] = []
    errors: list[RowError] = []
    for raw in rows:
        found: list[RowError] = []

        def fail(
            column: str | None, message: str, raw: RawRow = raw, found: list[RowError] = found
        ) -> None:
            found.append(RowError(sheet=raw.sheet, row=raw.row, column=column, message=message))

        result = _check(raw, site_model, fail)
        if result is not None and not found:
            checked.append(result)
        errors.extend(found)
    errors.extend(_overlaps(checked))
    return checked, errors


def _text(raw: RawRow, column: str) -> str:
    value = raw.cells.get(column)
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _check(
    raw: RawRow,
    site_model: Callable[[str], SiteModel | None],
    fail: Callable[[str | None, str], None],
) -> Checked | None:
    for column in COLUMNS:
        if len(_text(raw, column)) > MAX_TEXT:
            fail(column, f"超长 longer than {MAX_TEXT} characters")
            return None
    site_id = _text(raw, "site")
    site = site_model(site_id) if site_id else None
    if site is None:
        fail("site", f"未知站点 unknown site {site_id!r}")
    carrier = CARRIER_NAMES.get(_text(raw, "carrier").lower())
    if carrier is None:
        fail("carrier", f"未知能源 unknown carrier; one of {', '.join(ACTIVITY_UNIT)}")
    kind = KIND_NAMES.get(_text(raw, "kind").lower())
    if kind is None:
        fail("kind", "类型应为 billed（账单）或 manual（手工/估计）")
    first = _date(raw, "first_day", fail)
    last = _date(raw, "last_day", fail)
    if first and last and last < first:
        fail("last_day", "截止日早于起始日 last_day is before first_day")
    elif first and last and (last - first).days + 1 > MAX_BILL_DAYS:
        fail("last_day", f"账期超过 {MAX_BILL_DAYS} 天 a bill covers at most {MAX_BILL_DAYS} days")
    quantity = _decimal(raw, "quantity", fail, required=True)
    cost = _decimal(raw, "cost", fail, required=False)
    unit = _text(raw, "unit")
    scale = UNIT_SCALE.get((unit, ACTIVITY_UNIT[carrier])) if carrier else None
    if carrier and scale is None:
        fits = sorted(u for u, r in UNIT_SCALE if r == ACTIVITY_UNIT[carrier])
        fail("unit", f"单位不符 unit {unit!r} does not fit {carrier}; one of {', '.join(fits)}")
    space, device = _text(raw, "space") or None, _text(raw, "device") or None
    if site is not None:
        space, device = _place(site, carrier, space, device, fail)
    if (
        site is None
        or carrier is None
        or kind is None
        or first is None
        or last is None
        or quantity is None
        or scale is None
    ):
        return None
    return Checked(
        raw,
        site.site.id,
        carrier,
        space,
        device,
        first,
        last,
        kind,
        quantity,
        unit,
        quantity * scale,
        cost,
        _text(raw, "reference"),
    )


def _place(
    site: SiteModel,
    carrier: str | None,
    space: str | None,
    device: str | None,
    fail: Callable[[str | None, str], None],
) -> tuple[str | None, str | None]:
    spaces = {s.id for s in site.spaces}
    if space is not None and space not in spaces:
        fail("space", f"站点无此空间 site {site.site.id} has no space {space!r}")
    if device is None:
        return space, None
    found = next((d for d in site.devices if d.id == device), None)
    if found is None:
        fail("device", f"站点无此设备 site {site.site.id} has no device {device!r}")
        return space, device
    if space is not None and space not in site.ancestors(found.space):
        fail("device", f"设备 {device} 不在空间 {space} is not in that space")
    carriers = {m.carrier for m in found.metrics.values() if m.carrier is not None}
    if carrier is not None and carriers and carrier not in carriers:
        fail("device", f"表计计量 meter measures {', '.join(sorted(carriers))}, not {carrier}")
    return found.space, device


def _date(raw: RawRow, column: str, fail: Callable[[str | None, str], None]) -> dt.date | None:
    day = _day(raw, column, fail)
    if day is not None and not FIRST_YEAR <= day.year <= LAST_YEAR:
        fail(column, f"年份超出范围 the years {FIRST_YEAR} to {LAST_YEAR}, please")
        return None
    return day


def _day(raw: RawRow, column: str, fail: Callable[[str | None, str], None]) -> dt.date | None:
    value = raw.cells.get(column)
    if isinstance(value, dt.datetime):
        if value.time() != dt.time():
            fail(column, "应为日期 a date without a time, please")
            return None
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = _text(raw, column)
    try:
        return dt.date.fromisoformat(text.replace("/", "-"))
    except ValueError:
        fail(column, f"日期无效 {text!r} is not a date (2026-07-31)")
        return None


def _decimal(
    raw: RawRow, column: str, fail: Callable[[str | None, str], None], *, required: bool
) -> Decimal | None:
    value = raw.cells.get(column)
    if isinstance(value, bool):
        fail(column, "应为数字 not a number")
        return None
    if isinstance(value, float):
        number = _cell_number(value)
    else:
        text = _text(raw, column)
        if not text:
            if required:
                fail(column, "不能为空 empty")
            return None
        if "," in text:
            if not THOUSANDS.fullmatch(text):
                fail(column, f"逗号有歧义 {text!r}: write decimals with a point (1234.5)")
                return None
            text = text.replace(",", "")
        try:
            number = Decimal(text)
        except InvalidOperation:
            fail(column, f"应为数字 {text!r} is not a number")
            return None
    if not number.is_finite() or number < 0:
        fail(column, "应为非负数 must be a number of zero or more")
        return None
    if number.adjusted() > 12:
        fail(column, "数值过大 too large")
        return None
    return number


def _cell_number(value: float) -> Decimal:
    """A number cell as Excel shows it: the shortest text of its double, at most 15
    significant digits (0.1 + 0.2 computed in a cell is 0.3, not 0.30000000000000004)."""
    number = Decimal(repr(value))
    if len(number.as_tuple().digits) > EXCEL_DIGITS:
        number = Context(prec=EXCEL_DIGITS).create_decimal(number)
        exponent = number.normalize().as_tuple().exponent
        if isinstance(exponent, int) and exponent <= 0:
            number = number.normalize()
    return number


def _overlaps(rows: Sequence[Checked]) -> list[RowError]:
    """Rows of one key whose periods meet: the same period twice, or overlapping periods."""
    errors = []
    seen: dict[tuple[str, str, str, str], list[Checked]] = {}
    for row in rows:
        for other in seen.get(row.key, []):
            if row.first_day <= other.last_day and other.first_day <= row.last_day:
                where = f"{other.raw.sheet}!" if other.raw.sheet else ""
                errors.append(
                    RowError(
                        sheet=row.raw.sheet,
                        row=row.raw.row,
                        column="first_day",
                        message=(
                            f"与 {where}row {other.raw.row} 账期重叠 overlaps the period of "
                            f"{where}row {other.raw.row} ({other.first_day}..{other.last_day})"
                        ),
                    )
                )
                break
        seen.setdefault(row.key, []).append(row)
    return errors


# ---- storing ----

_BILL_COLUMNS = (
    "id, site, carrier, space, device, first_day, last_day, kind, quantity, unit, amount, cost,"
    " reference, revision"
)


def _bill(row: tuple[Any, ...]) -> Bill:
    (id_, site, carrier, space, device, first, last, kind, quantity, unit, amount, cost,
     reference, revision) = row  # fmt: skip
    return Bill(
        id_, site, carrier, space or None, device or None, first, last, kind, quantity, unit,
        amount, cost, reference, revision,
    )  # fmt: skip


def load_bills(
    conn: psycopg.Connection[Any], site: str, first: dt.date, last: dt.date
) -> list[Bill]:
    """The current bills of `site` whose period meets [first, last] (local dates)."""
    rows = conn.execute(
        f"SELECT {_BILL_COLUMNS} FROM energy_bills WHERE site = %s AND current"
        " AND first_day <= %s AND last_day >= %s ORDER BY carrier, first_day, space, device, id",
        (site, last, first),
    ).fetchall()
    return [_bill(row) for row in rows]


def _values(
    kind: str, quantity: Decimal, unit: str, cost: Decimal | None, ref: str
) -> dict[str, str]:
    return {
        "kind": kind,
        "quantity": str(quantity),
        "unit": unit,
        "cost": "" if cost is None else str(cost),
        "reference": ref,
    }


def import_bills(
    conn: psycopg.Connection[Any],
    name: str,
    data: bytes,
    site_model: Callable[[str], SiteModel | None],
    *,
    actor: str,
    now: dt.datetime,
    dry_run: bool,
) -> ImportResult:
    """Reads, checks and (unless `dry_run`, and only when no row has an error) stores a file of
    bills in the caller's transaction: new bills, corrections (a new revision; the ledger says
    what it replaced, who and from which row) and unchanged ones. Raises ImportError_ when the
    file cannot be read."""
    raw, errors = read_rows(name, data)
    checked: list[Checked] = []
    if not errors:  # rows under a wrong header are not checked: their errors would be noise
        checked, errors = check_rows(raw, site_model)
    changes: list[tuple[Checked, BillChange, Bill | None]] = []
    for row in checked:
        current = conn.execute(
            f"SELECT {_BILL_COLUMNS} FROM energy_bills WHERE site = %s AND carrier = %s"
            " AND space = %s AND device = %s AND current AND first_day <= %s AND last_day >= %s",
            (*row.key, row.last_day, row.first_day),
        ).fetchall()
        stored = [_bill(r) for r in current]
        same = next(
            (b for b in stored if (b.first_day, b.last_day) == (row.first_day, row.last_day)),
            None,
        )
        clash = next((b for b in stored if b is not same), None)
        if clash is not None:
            errors.append(
                RowError(
                    sheet=row.raw.sheet,
                    row=row.raw.row,
                    column="first_day",
                    message=(
                        f"与已存账单 #{clash.id} 账期重叠 overlaps the stored bill #{clash.id} "
                        f"({clash.first_day}..{clash.last_day})"
                    ),
                )
            )
            continue
        action: Literal["new", "corrected", "unchanged"] = "new"
        previous = None
        if same is not None:
            before = _values(same.kind, same.quantity, same.unit, same.cost, same.reference)
            unchanged = (same.kind, same.quantity, same.unit, same.cost, same.reference) == (
                row.kind,
                row.quantity,
                row.unit,
                row.cost,
                row.reference,
            )
            action = "unchanged" if unchanged else "corrected"
            previous = None if unchanged else before
        change = BillChange(
            action=action,
            sheet=row.raw.sheet,
            row=row.raw.row,
            site=row.site,
            carrier=row.carrier,
            space=row.space,
            device=row.device,
            first_day=row.first_day,
            last_day=row.last_day,
            kind=row.kind,
            quantity=row.quantity,
            unit=row.unit,
            amount=row.amount,
            report_unit=ACTIVITY_UNIT[row.carrier],
            cost=row.cost,
            reference=row.reference,
            previous=previous,
            id=same.id if same is not None else None,
        )
        changes.append((row, change, same))
    errors.sort(key=lambda e: (e.sheet or "", e.row))
    apply = not dry_run and not errors
    if apply:
        entries = [_store(conn, name, row, change, same, actor) for row, change, same in changes]
        ledger.append(conn, [e for e in entries if e is not None], now)
    return ImportResult(
        file=name,
        dry_run=dry_run,
        applied=apply,
        rows=len(raw),
        new=sum(1 for _, c, _ in changes if c.action == "new"),
        corrected=sum(1 for _, c, _ in changes if c.action == "corrected"),
        unchanged=sum(1 for _, c, _ in changes if c.action == "unchanged"),
        errors=errors,
        changes=[c for _, c, _ in changes],
    )


def _store(
    conn: psycopg.Connection[Any],
    name: str,
    row: Checked,
    change: BillChange,
    same: Bill | None,
    actor: str,
) -> ledger.Entry | None:
    if change.action == "unchanged":
        return None
    revision = 1
    if same is not None:
        conn.execute("UPDATE energy_bills SET current = false WHERE id = %s", (same.id,))
        revision = same.revision + 1
    source = f"{name}" + (f"!{row.raw.sheet}" if row.raw.sheet else "") + f" row {row.raw.row}"
    inserted = conn.execute(
        "INSERT INTO energy_bills (site, carrier, space, device, first_day, last_day, kind,"
        " quantity, unit, amount, cost, reference, revision, replaces, source, recorded_by)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            *row.key,
            row.first_day,
            row.last_day,
            row.kind,
            row.quantity,
            row.unit,
            row.amount,
            row.cost,
            row.reference,
            revision,
            same.id if same is not None else None,
            source,
            actor,
        ),
    ).fetchone()
    assert inserted is not None
    change.id = inserted[0]
    payload: dict[str, Any] = {
        "site": row.site,
        "carrier": row.carrier,
        "space": row.space,
        "device": row.device,
        "first_day": row.first_day.isoformat(),
        "last_day": row.last_day.isoformat(),
        **_values(row.kind, row.quantity, row.unit, row.cost, row.reference),
        "amount": str(row.amount),
        "report_unit": ACTIVITY_UNIT[row.carrier],
        "revision": revision,
        "source": source,
        "actor": actor,
    }
    if same is not None:
        payload["replaces"] = same.id
        payload["previous"] = change.previous
    kind = "energy.bill.corrected" if same is not None else "energy.bill.recorded"
    return ledger.Entry(kind=kind, entity=f"energy_bill:{inserted[0]}", payload=payload)


def withdraw_bill(
    conn: psycopg.Connection[Any], bill_id: int, *, actor: str, reason: str, now: dt.datetime
) -> Bill | None:
    """Withdraws a current bill (entered for the wrong period or site, say): it stops counting
    and stops blocking other periods, the row is kept, and the ledger records who and why.
    None when `bill_id` is no current bill."""
    row = conn.execute(
        f"UPDATE energy_bills SET current = false WHERE id = %s AND current"
        f" RETURNING {_BILL_COLUMNS}",
        (bill_id,),
    ).fetchone()
    if row is None:
        return None
    bill = _bill(row)
    payload = {
        "site": bill.site,
        "carrier": bill.carrier,
        "space": bill.space,
        "device": bill.device,
        "first_day": bill.first_day.isoformat(),
        "last_day": bill.last_day.isoformat(),
        **_values(bill.kind, bill.quantity, bill.unit, bill.cost, bill.reference),
        "revision": bill.revision,
        "reason": reason,
        "actor": actor,
    }
    entry = ledger.Entry(
        kind="energy.bill.withdrawn", entity=f"energy_bill:{bill.id}", payload=payload
    )
    ledger.append(conn, [entry], now)
    return bill


def bill_site(conn: psycopg.Connection[Any], bill_id: int) -> str | None:
    """The site of a stored bill (None: no such bill)."""
    row = conn.execute("SELECT site FROM energy_bills WHERE id = %s", (bill_id,)).fetchone()
    return None if row is None else str(row[0])
