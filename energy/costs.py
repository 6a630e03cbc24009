"""Operating cost (机关运行成本核算): tariffs, and the cost of a site or building over a period.

A tariff is a price per report unit of a carrier (yuan per kWh, m3, GJ) valid over local dates,
for a site, an organisation of the site's org path, or a grid region; electricity may be
time-of-use (峰/平/谷, and 尖峰) with its periods by local time. For a site and day the tariff
of the narrowest scope in force counts: the site's, else the deepest organisation's, else the
region's.

How consumption is priced. The report's meters are measured again with bucket edges at every
instant the price can change: local month starts, local midnights where another tariff takes
over, and every time-of-use period boundary of every day (local time). Each bucket then lies in
one tariff and one period. The accounting (energy/accounting.py) splits a reading interval that
crosses such an edge in proportion to time, as it splits one crossing an hour: 1 kWh used
between 06:45 and 07:15 with the valley ending at 07:00 is 0.5 kWh valley and 0.5 kWh flat (the
shares are `estimated`). This is the hourly consumption of the report (raw readings, past
retention the hourly register summaries) summed per period; period boundaries off the whole hour
cannot be priced past raw retention (the report refuses, as for any edge inside such an hour).
A bill counted in place of meters has no time profile: its amount is spread over its period in
proportion to time, and priced so.

Bills' costs. Where a current bill (or manual entry) with a cost meets the period, its cost counts
for its scope and period, pro rata in time when it reaches beyond the report's period; the tariff
estimate of the same consumption (its meters' over the bill's period, or the bill's own amount
when it is counted instead of meters) is given beside it with `difference` = bill − estimate.
All other consumption is priced at the tariff: its cost is `estimated`. Money is Decimal,
unrounded inside; figures are shown in yuan with 2 decimals (half to even) once, at the end.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from energy.accounting import ZERO, BucketTotal, spread
from energy.factors import ACTIVITY_UNIT
from energy.notes import Note
from energy.reports import (
    CARRIER_ZH,
    BillLine,
    CarbonReport,
    Meter,
    ReportError,
    RetentionError,
    measure,
)
from rules.site import ID_PATTERN, SiteModel

PRICED = ("electricity", "natural_gas", "water", "heat")
BANDS = ("sharp", "peak", "flat", "valley")
BAND_LABEL = {"sharp": "尖峰 sharp", "peak": "峰 peak", "flat": "平 flat", "valley": "谷 valley"}
SCOPES = ("site", "org", "region")
MAX_PRICE = Decimal(100_000)  # yuan per unit: far above any tariff, bounds the input
DAY_MINUTES = 24 * 60
YUAN = Decimal("0.01")

Carrier = Literal["electricity", "natural_gas", "water", "heat"]
BandName = Literal["sharp", "peak", "flat", "valley"]


class TariffError(ValueError):
    """A tariff that cannot be stored (overlapping validity, unknown scope)."""


def _minutes(text: str) -> int:
    hours, _, minutes = text.partition(":")
    value = int(hours) * 60 + int(minutes)
    if not 0 <= value <= DAY_MINUTES:
        raise ValueError(f"{text!r} is not a time of day 00:00..24:00")
    return value


class Band(BaseModel):
    """One time-of-use period of the day, local time [start, end); `end` 24:00 is midnight."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    band: BandName
    start: str = Field(pattern=r"^([01][0-9]|2[0-4]):[0-5][0-9]$")
    end: str = Field(pattern=r"^([01][0-9]|2[0-4]):[0-5][0-9]$")
    price: Decimal = Field(ge=0, le=MAX_PRICE, max_digits=16, decimal_places=6)

    @property
    def span(self) -> tuple[int, int]:
        return _minutes(self.start), _minutes(self.end)

    @model_validator(mode="after")
    def _forward(self) -> Band:
        start, end = self.span
        if end <= start:
            raise ValueError(f"period {self.start}-{self.end}: end must be after start")
        return self


class Tariff(BaseModel):
    """A tariff as given (API body, CLI) and as stored (with `id`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: int | None = None
    scope: Literal["site", "org", "region"]
    scope_id: str = Field(pattern=ID_PATTERN)
    carrier: Carrier
    first_day: dt.date
    last_day: dt.date | None = None
    price: Decimal | None = Field(default=None, ge=0, le=MAX_PRICE, max_digits=16, decimal_places=6)
    bands: tuple[Band, ...] = Field(default=(), max_length=48)
    source: str = Field(default="", max_length=200, pattern=r"^[^\x00]*$")  # no NUL: text column

    @field_validator("bands")
    @classmethod
    def _whole_day(cls, bands: tuple[Band, ...]) -> tuple[Band, ...]:
        if not bands:
            return bands
        spans = sorted(b.span for b in bands)
        at = 0
        for start, end in spans:
            if start != at:
                raise ValueError(
                    "time-of-use periods must cover the day once, from 00:00 to 24:00 without "
                    f"gaps or overlaps (at {at // 60:02d}:{at % 60:02d})"
                )
            at = end
        if at != DAY_MINUTES:
            raise ValueError(
                "time-of-use periods must cover the day once, from 00:00 to 24:00 (they end at "
                f"{at // 60:02d}:{at % 60:02d})"
            )
        return bands

    @model_validator(mode="after")
    def _consistent(self) -> Tariff:
        if (self.price is None) == (not self.bands):
            raise ValueError("give either a flat price or time-of-use bands, not both")
        if self.bands and self.carrier != "electricity":
            raise ValueError("time-of-use bands are for electricity only")
        if self.last_day is not None and self.last_day < self.first_day:
            raise ValueError("last_day must not be before first_day")
        return self

    @property
    def unit(self) -> str:
        return f"yuan/{ACTIVITY_UNIT[self.carrier]}"

    def valid_on(self, day: dt.date) -> bool:
        return self.first_day <= day and (self.last_day is None or day <= self.last_day)

    def price_at(self, minute: int) -> tuple[str, Decimal]:
        """(band, price) at a local minute of the day; a flat tariff's band is 'flat'."""
        if self.price is not None:
            return "flat", self.price
        for b in self.bands:
            start, end = b.span
            if start <= minute < end:
                return b.band, b.price
        raise AssertionError("bands cover the day")  # the validator guarantees it

    def boundaries(self) -> list[int]:
        """Minutes of the day where the price can change: every period's start, midnight
        included (a bucket must not run on from one day's last period into the next day's
        first)."""
        return sorted({b.span[0] for b in self.bands})


# ---- storage ----

_COLUMNS = "id, scope, scope_id, carrier, first_day, last_day, price, bands, source"


def _tariff(row: tuple[Any, ...]) -> Tariff:
    return Tariff(
        id=row[0],
        scope=row[1],
        scope_id=row[2],
        carrier=row[3],
        first_day=row[4],
        last_day=row[5],
        price=row[6],
        bands=tuple(Band(**b) for b in row[7]),
        source=row[8],
    )


def load_tariffs(conn: psycopg.Connection[Any], site: SiteModel | None = None) -> list[Tariff]:
    """Every stored tariff, or those that may apply to `site`."""
    if site is None:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM energy_tariffs ORDER BY id").fetchall()
    else:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM energy_tariffs WHERE (scope = 'site' AND scope_id = %s)"
            " OR (scope = 'org' AND scope_id = ANY(%s)) OR (scope = 'region' AND scope_id = %s)"
            " ORDER BY id",
            (site.site.id, list(site.site.org), site.site.grid_region),
        ).fetchall()
    return [_tariff(r) for r in rows]


def add_tariff(conn: psycopg.Connection[Any], tariff: Tariff, *, added_by: str) -> Tariff:
    """Stores a tariff; one whose validity overlaps another of the same scope and carrier is
    refused (TariffError): end the old one first (a new price is a new row). The caller
    commits."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('energy_tariffs'))")
    far = dt.date.max
    clash = conn.execute(
        "SELECT id, first_day, last_day FROM energy_tariffs WHERE scope = %s AND scope_id = %s"
        " AND carrier = %s AND first_day <= %s AND coalesce(last_day, %s) >= %s",
        (
            tariff.scope,
            tariff.scope_id,
            tariff.carrier,
            tariff.last_day or far,
            far,
            tariff.first_day,
        ),
    ).fetchone()
    if clash is not None:
        ends = clash[2] or "open"
        raise TariffError(
            f"tariff {clash[0]} ({clash[1]}..{ends}) of {tariff.scope} {tariff.scope_id} "
            f"{tariff.carrier} overlaps this one: 与已有电价/价格有效期重叠"
        )
    row = conn.execute(
        "INSERT INTO energy_tariffs (scope, scope_id, carrier, first_day, last_day, price,"
        " bands, source, added_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            tariff.scope,
            tariff.scope_id,
            tariff.carrier,
            tariff.first_day,
            tariff.last_day,
            tariff.price,
            Jsonb([b.model_dump(mode="json") for b in tariff.bands]),
            tariff.source,
            added_by,
        ),
    ).fetchone()
    assert row is not None
    return tariff.model_copy(update={"id": row[0]})


def end_tariff(conn: psycopg.Connection[Any], tariff_id: int, last_day: dt.date) -> bool:
    """Ends an open tariff on `last_day` (before a new price takes over). False when there is
    no such open tariff or `last_day` is before its first day."""
    row = conn.execute(
        "UPDATE energy_tariffs SET last_day = %s WHERE id = %s AND last_day IS NULL"
        " AND first_day <= %s RETURNING id",
        (last_day, tariff_id, last_day),
    ).fetchone()
    return row is not None


def choose(tariffs: Iterable[Tariff], site: SiteModel, carrier: str, day: dt.date) -> Tariff | None:
    """The tariff of `carrier` at `site` on `day`: the site's, else the deepest organisation's
    of the site's org path, else the grid region's; None when none is in force."""
    org = site.site.org
    best: tuple[int, Tariff] | None = None
    for t in tariffs:
        if t.carrier != carrier or not t.valid_on(day):
            continue
        if t.scope == "site" and t.scope_id == site.site.id:
            rank = 1000
        elif t.scope == "org" and t.scope_id in org:
            rank = 100 + org.index(t.scope_id)
        elif t.scope == "region" and t.scope_id == site.site.grid_region:
            rank = 0
        else:
            continue
        if best is None or rank > best[0]:
            best = (rank, t)
    return None if best is None else best[1]


# ---- the cost of a report ----


@dataclass(slots=True)
class BandTotal:
    consumption: Decimal = ZERO
    cost: Decimal = ZERO


@dataclass(slots=True)
class Priced:
    """Consumption priced at the tariff: the estimate, per band, and what no tariff covers."""

    consumption: Decimal = ZERO
    estimate: Decimal = ZERO
    untariffed: Decimal = ZERO
    bands: dict[str, BandTotal] = field(default_factory=dict)

    def add(self, other: Priced) -> None:
        self.consumption += other.consumption
        self.estimate += other.estimate
        self.untariffed += other.untariffed
        for name, part in other.bands.items():
            mine = self.bands.setdefault(name, BandTotal())
            mine.consumption += part.consumption
            mine.cost += part.cost


@dataclass(slots=True)
class CarrierCost:
    carrier: str
    unit: str
    priced: Priced = field(default_factory=Priced)
    billed_cost: Decimal = ZERO  # costs of bills in the period (pro rata)
    bill_estimate: Decimal = ZERO  # the tariff estimate of the same consumption

    @property
    def estimated_cost(self) -> Decimal:
        """The part priced at the tariff (no bill's cost covers it)."""
        return self.priced.estimate - self.bill_estimate

    @property
    def cost(self) -> Decimal:
        return self.estimated_cost + self.billed_cost


@dataclass(slots=True)
class BillCost:
    line: BillLine
    cost: Decimal  # the bill's cost in the report's period (pro rata in time)
    estimate: Decimal  # tariff × the same consumption over the same time
    untariffed: Decimal  # consumption of that time no tariff prices

    @property
    def difference(self) -> Decimal:
        return self.cost - self.estimate

    @property
    def percent(self) -> Decimal | None:
        return None if self.estimate == ZERO else self.difference * 100 / self.estimate


@dataclass(slots=True)
class MonthCost:
    start: float
    end: float
    carrier: str
    estimate: Decimal = ZERO
    billed_cost: Decimal = ZERO
    bill_estimate: Decimal = ZERO

    @property
    def cost(self) -> Decimal:
        return self.estimate - self.bill_estimate + self.billed_cost

    @property
    def estimated(self) -> bool:
        return self.estimate - self.bill_estimate != ZERO


@dataclass(slots=True)
class CostReport:
    carriers: dict[str, CarrierCost]
    bills: list[BillCost]
    months: list[MonthCost]
    tariffs: list[Tariff]
    area_m2: Decimal | None
    occupants: int | None
    notes: list[Note]

    @property
    def total(self) -> Decimal:
        return sum((c.cost for c in self.carriers.values()), ZERO)

    @property
    def billed(self) -> Decimal:
        return sum((c.billed_cost for c in self.carriers.values()), ZERO)

    @property
    def estimated(self) -> Decimal:
        return sum((c.estimated_cost for c in self.carriers.values()), ZERO)

    def per(self, basis: Decimal | int | None) -> Decimal | None:
        if basis is None or basis == 0:
            return None
        return self.total / Decimal(basis)


class Pricer:
    """Prices buckets of a site's consumption: edges where the price may change, and the
    tariff and band of each bucket."""

    def __init__(self, site: SiteModel, tariffs: Sequence[Tariff], since: dt.datetime,
                 until: dt.datetime, month_edges: Sequence[float]) -> None:  # fmt: skip
        self.site = site
        self.tariffs = tariffs
        self.zone = site.zone()
        self.month_edges = list(month_edges)
        self.used: dict[int, Tariff] = {}
        edges = set(month_edges)
        lo, hi = since.timestamp(), until.timestamp()
        day = since.astimezone(self.zone).date()
        last = (until.astimezone(self.zone) - dt.timedelta(microseconds=1)).date()
        previous: tuple[int | None, ...] | None = None
        while day <= last:
            chosen = [choose(tariffs, site, c, day) for c in PRICED]
            key = tuple(t.id if t else None for t in chosen)
            midnight = dt.datetime.combine(day, dt.time(), self.zone)
            if previous is not None and key != previous:
                edges.add(midnight.timestamp())
            previous = key
            for t in chosen:
                for minute in t.boundaries() if t else ():
                    edges.add((midnight + dt.timedelta(minutes=minute)).timestamp())
            day += dt.timedelta(days=1)
        self.edges = sorted(e for e in edges if lo <= e <= hi)

    def clipped(self, start: float, end: float) -> list[float]:
        """The edges within [start, end], with start and end."""
        lo, hi = max(start, self.edges[0]), min(end, self.edges[-1])
        return [lo] + [e for e in self.edges if lo < e < hi] + [hi]

    def month(self, ts: float) -> int:
        return bisect.bisect_right(self.month_edges, ts) - 1

    def price(self, carrier: str, buckets: Iterable[BucketTotal],
              months: dict[tuple[int, str], MonthCost] | None = None) -> Priced:  # fmt: skip
        priced = Priced()
        for bucket in buckets:
            if bucket.value == ZERO:
                continue
            local = dt.datetime.fromtimestamp(bucket.start, self.zone)
            tariff = choose(self.tariffs, self.site, carrier, local.date())
            priced.consumption += bucket.value
            if tariff is None:
                priced.untariffed += bucket.value
                continue
            assert tariff.id is not None
            self.used[tariff.id] = tariff
            band, price = tariff.price_at(local.hour * 60 + local.minute)
            cost = bucket.value * price
            priced.estimate += cost
            part = priced.bands.setdefault(band, BandTotal())
            part.consumption += bucket.value
            part.cost += cost
            if months is not None:
                index = self.month(bucket.start)
                line = months.setdefault(
                    (index, carrier),
                    MonthCost(self.month_edges[index], self.month_edges[index + 1], carrier),
                )
                line.estimate += cost
        return priced


def cost_report(conn: psycopg.Connection[Any], site: SiteModel, report: CarbonReport) -> CostReport:
    """The operating cost of the report's scope and period, by carrier, month and band, with
    each bill's cost beside the tariff's estimate (module docstring)."""
    tariffs = load_tariffs(conn, site)
    pricer = Pricer(site, tariffs, report.since, report.until, _months(site, report))
    counted = [line.meter for line in report.meters if line.counted]
    priced_meters = [m for m in counted if m.carrier in PRICED]
    measured = measure(conn, site, priced_meters, pricer.edges) if priced_meters else {}
    carriers: dict[str, CarrierCost] = {}
    months: dict[tuple[int, str], MonthCost] = {}

    def carrier_cost(carrier: str) -> CarrierCost:
        return carriers.setdefault(carrier, CarrierCost(carrier, ACTIVITY_UNIT[carrier]))

    for meter in priced_meters:
        priced = pricer.price(meter.carrier, measured[meter.device].buckets, months)
        carrier_cost(meter.carrier).priced.add(priced)

    bills: list[BillCost] = []
    for line in report.bills:
        bill = line.bill
        if bill.carrier not in PRICED:
            continue
        start, end = bill.bounds(site)
        if line.counted:
            share = spread(pricer.edges, start, end, bill.amount)
            carrier_cost(bill.carrier).priced.add(pricer.price(bill.carrier, share, months))
        if bill.cost is None or (not line.counted and line.metered is None):
            continue  # no cost, or inside an enclosing meter's scope (neither counted nor compared)
        lo, hi = max(start, pricer.edges[0]), min(end, pricer.edges[-1])
        if hi <= lo:
            continue
        by_month: dict[tuple[int, str], MonthCost] = {}
        if line.counted:
            share = spread(pricer.edges, start, end, bill.amount)
            estimate = pricer.price(bill.carrier, share, by_month)
        else:
            compared = _meters(report, line.meters, bill.carrier)
            estimate = Priced()
            for result in measure(conn, site, compared, pricer.clipped(lo, hi)).values():
                estimate.add(pricer.price(bill.carrier, result.buckets, by_month))
        cost_shares = spread(pricer.month_edges, start, end, bill.cost)
        in_period = sum((b.value for b in cost_shares), ZERO)
        bills.append(BillCost(line, in_period, estimate.estimate, estimate.untariffed))
        total = carrier_cost(bill.carrier)
        total.billed_cost += in_period
        total.bill_estimate += estimate.estimate
        for index, piece in enumerate(cost_shares):
            if piece.value == ZERO:
                continue
            month = months.setdefault(
                (index, bill.carrier), MonthCost(piece.start, piece.end, bill.carrier)
            )
            month.billed_cost += piece.value
        # the estimate of the bill's consumption, month by month, leaves the estimated part
        for key, part in by_month.items():
            month = months.setdefault(key, MonthCost(part.start, part.end, bill.carrier))
            month.bill_estimate += part.estimate

    notes = []
    for c in carriers.values():
        if c.priced.untariffed:
            amount = f"{_plain(c.priced.untariffed)} {c.unit}"
            notes.append(
                Note(
                    f"{CARRIER_ZH[c.carrier]}：{amount} 无适用价格，未计入费用",
                    f"{c.carrier}: {amount} without a tariff in force are not priced",
                )
            )
    if not tariffs:
        notes.append(Note("未设置适用的能源价格", "no tariff applies to this site"))
    return CostReport(
        carriers=carriers,
        bills=bills,
        months=sorted(months.values(), key=lambda m: (m.start, m.carrier)),
        tariffs=sorted(pricer.used.values(), key=lambda t: t.id or 0),
        area_m2=report.area_m2,
        occupants=report.occupants,
        notes=notes,
    )


RETENTION_ZH = "价格时段的边界落在原始读数已按保留期删除、只剩小时汇总的时段内"


def cost_or_note(
    conn: psycopg.Connection[Any], site: SiteModel, report: CarbonReport
) -> CostReport | None:
    """The cost of the report, or None with a note in the report saying why it could not be
    made (a price boundary inside an hour only a register summary knows): the energy and carbon
    figures stand without it."""
    try:
        return cost_report(conn, site, report)
    except ReportError as exc:
        # The one expected cause has a Chinese explanation; any other keeps its own words.
        why = RETENTION_ZH if isinstance(exc, RetentionError) else str(exc)
        report.notes.append(Note(f"运行成本未计算：{why}", f"operating cost not computed: {exc}"))
        return None


def _months(site: SiteModel, report: CarbonReport) -> list[float]:
    from energy.accounting import bucket_edges

    try:
        return bucket_edges(report.since, report.until, "month", site.zone())
    except ValueError as exc:
        raise ReportError(str(exc)) from None


def _meters(report: CarbonReport, devices: Sequence[str], carrier: str) -> list[Meter]:
    return [
        line.meter
        for line in report.meters
        if line.meter.device in devices and line.meter.carrier == carrier
    ]


def _plain(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.001')):f}"


def yuan(value: Decimal | None) -> Decimal | None:
    """Money as shown: yuan with 2 decimals, half to even (the sums are of the exact values)."""
    return None if value is None else value.quantize(YUAN)
