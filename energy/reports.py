"""Energy and carbon reports for a site or one of its spaces (a building) over a period.

Everything is computed from stored readings and events each time (no cached totals), with
`Decimal` arithmetic, so a report can be reproduced exactly and names every factor it used.
Rounding happens once, when a figure is presented (`present`), half to even: activity, kgce and
kg CO2 to 3 decimals, t CO2 to 6, intensities to 4, percentages to 2.

Which meters count: for the site, every meter without a parent meter; for a space, every meter
in the space's subtree whose parent meter is not also in that subtree (sub-meters are inside
their parent, never added twice). Sub-meter imbalance: parent − Σ children, absolute and in %
of the parent.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import psycopg
from pydantic import ValidationError

from config import BUNDLED_DIR
from energy.accounting import (
    ZERO,
    Bucket,
    BucketTotal,
    Interval,
    MeterConsumption,
    Reset,
    Sample,
    Summary,
    SummaryCut,
    bucket_edges,
    meter_consumption,
    spread,
    to_decimal,
)
from energy.bills import KINDS, Bill, load_bills
from energy.factors import (
    ACTIVITY_UNIT,
    ALL_IN,
    DEFAULT_SERIES,
    KGCE_PER_UNIT,
    KGCE_SOURCE,
    RESIDUAL,
    SCOPE,
    UNIT_SCALE,
    EmissionFactor,
    FactorChoice,
    FactorError,
    choose_factor,
    load_factors,
)
from energy.notes import NONE, Note
from rules.clause import ClauseVersion, Selector
from rules.holidays import CalendarNote, site_calendar_notes
from rules.site import SiteModel, Space
from store import registry
from store.partitions import raw_horizon
from store.rollups import SUMMARY_INTERVAL_FLOOR

FUELS = ("gasoline", "diesel")
# Report periods must lie within these years (the data years factors may have, with room).
FIRST_YEAR, LAST_YEAR = 1990, 2100
# What a missing holiday schedule affects, said beside it in a report.
CALENDAR_AFFECTS = Note(
    "能耗与碳排放数据不受影响，按工作日安排的条款依此规则判断",
    "the energy and carbon figures do not depend on working days; quota and other clauses"
    " scheduled on working days are judged there by this rule",
)


class ReportError(ValueError):
    """The report cannot be made as asked (unknown space, bad period, no usable factor)."""


class RetentionError(ReportError):
    """The report needs readings that raw retention removed and no summary keeps (HTTP 409)."""


# ---- the meters of a site ----


@dataclass(frozen=True, slots=True)
class Meter:
    device: str
    space: str
    metric: str
    carrier: str
    unit: str  # the report unit of the carrier
    scale: Decimal  # register unit -> report unit
    parent: str | None
    max_gap: float


def site_meters(site: SiteModel) -> list[Meter]:
    """Every cumulative register with a carrier, in the site model's order."""
    meters = []
    for device in site.devices:
        for metric, spec in device.metrics.items():
            if not spec.cumulative or spec.carrier is None:
                continue
            unit = ACTIVITY_UNIT[spec.carrier]
            scale = UNIT_SCALE.get((spec.unit, unit))
            if scale is None:
                raise ReportError(
                    f"meter {device.id}.{metric}: unit {spec.unit!r} cannot be converted to "
                    f"{unit} for {spec.carrier}"
                )
            meters.append(
                Meter(
                    device.id,
                    device.space,
                    metric,
                    spec.carrier,
                    unit,
                    scale,
                    device.parent,
                    spec.max_gap,
                )
            )
    return meters


def subtree(site: SiteModel, space: str | None) -> set[str]:
    """Ids of `space` and everything under it (every space for None)."""
    if space is None:
        return {s.id for s in site.spaces}
    try:
        site.space(space)
    except KeyError:
        raise ReportError(f"site {site.site.id} has no space {space!r}") from None
    return {s.id for s in site.spaces if space in site.ancestors(s.id)}


def counted_meters(site: SiteModel, meters: Sequence[Meter], space: str | None) -> list[Meter]:
    """The meters whose sum is the consumption of `space` (or the site) without double counting."""
    inside = subtree(site, space)
    in_scope = {m.device for m in meters if m.space in inside}
    return [
        m for m in meters if m.space in inside and (m.parent is None or m.parent not in in_scope)
    ]


def parse_moment(text: str, site: SiteModel) -> dt.datetime:
    """A date (local midnight at the site) or an ISO datetime with an offset."""
    try:
        if len(text) == 10:
            moment = dt.datetime.combine(dt.date.fromisoformat(text), dt.time(), site.zone())
        else:
            moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ReportError(f"{text!r} is neither a date (2026-07-01) nor an ISO datetime") from None
    if moment.tzinfo is None:
        raise ReportError(f"{text!r} needs a UTC offset, for example {text}+08:00")
    if not FIRST_YEAR <= moment.year <= LAST_YEAR:
        raise ReportError(f"{text!r}: reports cover the years {FIRST_YEAR} to {LAST_YEAR}")
    return moment


def parse_end(text: str, site: SiteModel) -> dt.datetime:
    """The end of a period as the command line gives it (`--to`): a date is the last day
    included, so the period ends at the next local midnight; an ISO datetime with an offset is
    the instant it ends."""
    moment = parse_moment(text, site)
    if len(text) == 10:
        following = dt.date.fromisoformat(text) + dt.timedelta(days=1)
        moment = dt.datetime.combine(following, dt.time(), site.zone())
    return moment


def default_period(
    site: SiteModel, now: dt.datetime, months: int
) -> tuple[dt.datetime, dt.datetime]:
    """The `months` local calendar months up to and including the one containing `now`."""
    local = now.astimezone(site.zone())
    year, month = local.year, local.month + 1
    if month == 13:
        year, month = year + 1, 1
    until = dt.datetime(year, month, 1, tzinfo=site.zone())
    index = year * 12 + month - 1 - months
    since = dt.datetime(index // 12, index % 12 + 1, 1, tzinfo=site.zone())
    return since, until


def load_site_model(
    conn: psycopg.Connection[Any], site_id: str, config_dir: Path | None = None
) -> SiteModel:
    """The site model the service runs with: the one synced into `sites` (registry), else the
    site file in `config_dir` (the bundled configuration when None). Raises ReportError."""
    if registry.sites_table_exists(conn):
        try:
            stored = registry.site_model(conn, site_id)
        except ValidationError as exc:
            raise ReportError(f"the stored model of site {site_id!r} is invalid: {exc}") from None
        if stored is not None:
            return stored
    from config.documents import ConfigError
    from config.files import load_config_dir

    directory = config_dir or BUNDLED_DIR
    try:
        sites = load_config_dir(directory).sites
    except ConfigError as exc:
        raise ReportError(f"configuration {directory} has errors: {exc}") from exc
    if site_id not in sites:
        raise ReportError(f"unknown site {site_id!r}")
    return sites[site_id]


# ---- reading storage ----


def load_samples(
    conn: psycopg.Connection[Any],
    site: str,
    meter: Meter,
    since: dt.datetime,
    until: dt.datetime,
) -> list[Sample]:
    """Readings of the meter inside [since, until] plus the nearest one on each side, so the
    period's edges can be measured. Values are converted to the report unit."""
    rows = conn.execute(
        """
        (SELECT ts, value FROM readings
          WHERE site = %(site)s AND device = %(device)s AND metric = %(metric)s AND ts < %(since)s
          ORDER BY ts DESC, seq LIMIT 1)
        UNION ALL
        (SELECT ts, value FROM readings
          WHERE site = %(site)s AND device = %(device)s AND metric = %(metric)s
            AND ts >= %(since)s AND ts <= %(until)s ORDER BY ts, seq)
        UNION ALL
        (SELECT ts, value FROM readings
          WHERE site = %(site)s AND device = %(device)s AND metric = %(metric)s AND ts > %(until)s
          ORDER BY ts, seq LIMIT 1)
        """,
        {
            "site": site,
            "device": meter.device,
            "metric": meter.metric,
            "since": since,
            "until": until,
        },
    ).fetchall()
    return [Sample(ts.timestamp(), to_decimal(value) * meter.scale) for ts, value in rows]


RETENTION_HELP = (
    "raw readings older than the retention (CLAUSEWATCH_RETENTION_DAYS) are dropped; reports"
    " before that read the hourly register summaries"
)

_SERIES = "site = %(site)s AND device = %(device)s AND metric = %(metric)s"
_SUMMARY_COLUMNS = (
    "first_ts, first_value, last_ts, last_value, readings, consumption, resets, long_intervals"
)


def _summary(meter: Meter, row: tuple[Any, ...]) -> Sample | Summary:
    first_ts, first_value, last_ts, last_value, readings, consumed, resets, intervals = row
    first = Sample(first_ts.timestamp(), to_decimal(first_value) * meter.scale)
    if readings == 1:
        return first
    return Summary(
        first,
        Sample(last_ts.timestamp(), to_decimal(last_value) * meter.scale),
        readings,
        consumed * meter.scale,
        tuple(
            Reset(
                float(a),
                float(b),
                to_decimal(float(before)) * meter.scale,
                to_decimal(float(after)) * meter.scale,
            )
            for a, b, before, after in resets
        ),
        tuple(Interval(float(a), float(b)) for a, b in intervals),
        SUMMARY_INTERVAL_FLOOR,
    )


def load_register(
    conn: psycopg.Connection[Any],
    site: str,
    meter: Meter,
    since: dt.datetime,
    until: dt.datetime,
    horizon: tuple[dt.datetime | None, dt.datetime | None],
) -> list[Sample | Summary]:
    """The meter's register over [since, until] with a neighbour on each side, as
    `load_samples`, where the raw readings are kept (from `horizon[0]`, store.partitions.
    raw_horizon), and from the hourly register summaries before that. Raises RetentionError
    when the period reaches before the summaries (`horizon[1]`) into dropped raw readings."""
    retained, summarised = horizon
    if retained is None:
        return list(load_samples(conn, site, meter, since, until))
    if since < retained and summarised is not None and since < summarised:
        raise RetentionError(
            f"meter {meter.device}.{meter.metric}: the readings before "
            f"{min(retained, summarised).isoformat()} are gone ({RETENTION_HELP}, and these were "
            "dropped before they were summarised): no figure can be given for a period from "
            f"{since.isoformat()}"
        )
    params = {
        "site": site,
        "device": meter.device,
        "metric": meter.metric,
        "since": since,
        "until": until,
        "retained": retained,
    }
    items: list[Sample | Summary] = []
    raw = conn.execute(
        f"""
        (SELECT ts, value FROM readings WHERE {_SERIES} AND ts >= %(retained)s AND ts < %(since)s
          ORDER BY ts DESC, seq LIMIT 1)
        UNION ALL
        (SELECT ts, value FROM readings WHERE {_SERIES}
            AND ts >= greatest(%(since)s, %(retained)s) AND ts <= %(until)s ORDER BY ts, seq)
        UNION ALL
        (SELECT ts, value FROM readings WHERE {_SERIES} AND ts >= %(retained)s
            AND ts > %(until)s ORDER BY ts, seq LIMIT 1)
        """,
        params,
    ).fetchall()
    items.extend(Sample(ts.timestamp(), to_decimal(value) * meter.scale) for ts, value in raw)
    if since < retained:
        rows = conn.execute(
            f"SELECT {_SUMMARY_COLUMNS} FROM register_hours WHERE {_SERIES}"
            " AND bucket >= date_trunc('hour', %(since)s::timestamptz, 'UTC')"
            " AND bucket < %(until)s AND bucket < %(retained)s ORDER BY bucket",
            params,
        ).fetchall()
        items.extend(_summary(meter, row) for row in rows)
    if not any(s.ts < since.timestamp() for s in items if isinstance(s, Sample)):
        before = conn.execute(
            f"SELECT last_ts, last_value FROM register_hours WHERE {_SERIES}"
            " AND bucket < least(date_trunc('hour', %(since)s::timestamptz, 'UTC'), %(retained)s)"
            " ORDER BY bucket DESC LIMIT 1",
            params,
        ).fetchone()
        if before is not None:
            items.append(Sample(before[0].timestamp(), to_decimal(before[1]) * meter.scale))
    if until < retained:
        after = conn.execute(
            f"SELECT first_ts, first_value FROM register_hours WHERE {_SERIES}"
            " AND bucket >= %(until)s AND bucket < %(retained)s ORDER BY bucket LIMIT 1",
            params,
        ).fetchone()
        if after is not None:
            items = [s for s in items if not (isinstance(s, Sample) and s.ts > until.timestamp())]
            items.append(Sample(after[0].timestamp(), to_decimal(after[1]) * meter.scale))
    return items


def measure(
    conn: psycopg.Connection[Any], site: SiteModel, meters: Iterable[Meter], edges: Sequence[float]
) -> dict[str, MeterConsumption]:
    """Each meter's consumption per bucket of `edges`: raw readings where they are kept, the
    register summaries before (RetentionError when neither has them, or an edge falls inside
    an hour only a summary knows)."""
    since = dt.datetime.fromtimestamp(edges[0], dt.UTC)
    until = dt.datetime.fromtimestamp(edges[-1], dt.UTC)
    horizon = raw_horizon(conn)
    measured = {}
    for m in meters:
        items = load_register(conn, site.site.id, m, since, until, horizon)
        try:
            measured[m.device] = meter_consumption(items, edges, m.max_gap)
        except SummaryCut as cut:
            hour = dt.datetime.fromtimestamp(cut.summary.first.ts, dt.UTC)
            raise RetentionError(
                f"meter {m.device}.{m.metric}: a bucket or period edge falls inside the hour of "
                f"{hour:%Y-%m-%d %H}:00 UTC, whose raw readings are gone ({RETENTION_HELP}, "
                "which keep whole hours): use edges on whole hours"
            ) from None
    return measured


@dataclass(frozen=True, slots=True)
class Refuel:
    ts: float
    device: str
    fuel: str
    kg: Decimal | None  # None: no mass, and litres without a stated density: not counted
    raw: dict[str, object]
    litres_at: Decimal | None = None  # the site's stated density when kg came from litres


def _number(value: object) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return to_decimal(value)


def load_refuels(
    conn: psycopg.Connection[Any],
    site: SiteModel,
    space: str | None,
    since: dt.datetime,
    until: dt.datetime,
) -> list[Refuel]:
    """Refuel events of the period (attrs: fuel gasoline|diesel, and kg, or litres converted
    with the site's stated density from `fuel_densities`). Events in the subtree of `space`
    when given (by the event's space, else the device's)."""
    inside = subtree(site, space)
    device_space = {d.id: d.space for d in site.devices}
    densities = dict(
        conn.execute(
            "SELECT fuel, kg_per_l FROM fuel_densities WHERE site = %s", (site.site.id,)
        ).fetchall()
    )
    rows = conn.execute(
        "SELECT ts, device, space, attrs FROM events WHERE site = %s AND type = 'refuel'"
        " AND ts >= %s AND ts < %s ORDER BY ts",
        (site.site.id, since, until),
    ).fetchall()
    refuels = []
    for ts, device, event_space, stored_attrs in rows:
        attrs = stored_attrs if isinstance(stored_attrs, dict) else {}
        where = event_space or device_space.get(device)
        if space is not None and where not in inside:
            continue
        fuel = str(attrs.get("fuel", ""))
        mass = _number(attrs.get("kg"))
        litres = _number(attrs.get("litres"))
        density = densities.get(fuel)
        if mass is None and litres is not None and density is not None:
            refuels.append(
                Refuel(ts.timestamp(), device, fuel, litres * density, dict(attrs), density)
            )
        else:
            refuels.append(Refuel(ts.timestamp(), device, fuel, mass, dict(attrs)))
    return refuels


@dataclass(frozen=True, slots=True)
class GreenPower:
    first_day: dt.date
    last_day: dt.date
    kwh: Decimal
    instrument: str
    reference: str

    def kwh_within(self, first: dt.date, last: dt.date) -> Decimal:
        """The record's kWh spread evenly over its days, for the days in [first, last]."""
        overlap = (min(last, self.last_day) - max(first, self.first_day)).days + 1
        if overlap <= 0:
            return ZERO
        return self.kwh * overlap / ((self.last_day - self.first_day).days + 1)


def load_green_power(
    conn: psycopg.Connection[Any], site: str, first: dt.date, last: dt.date
) -> list[GreenPower]:
    rows = conn.execute(
        "SELECT first_day, last_day, kwh, instrument, reference FROM green_power"
        " WHERE site = %s AND first_day <= %s AND last_day >= %s ORDER BY first_day",
        (site, last, first),
    ).fetchall()
    return [GreenPower(*row) for row in rows]


def carrier_series(conn: psycopg.Connection[Any], site: SiteModel) -> dict[str, tuple[str, str]]:
    """(series, region) per carrier: electricity from the site model, the others from
    site_energy_settings or the defaults."""
    chosen = {c: (s, "national") for c, s in DEFAULT_SERIES.items()}
    rows = conn.execute(
        "SELECT carrier, series, region FROM site_energy_settings WHERE site = %s",
        (site.site.id,),
    ).fetchall()
    chosen.update({carrier: (series, region) for carrier, series, region in rows})
    chosen["electricity"] = (site.site.emission_series, site.site.grid_region)
    return chosen


# ---- intensity references (quota and five-year targets) ----


@dataclass(frozen=True, slots=True)
class Baseline:
    year: int
    kgce_per_m2: Decimal | None
    kgce_per_person: Decimal | None
    kgco2_per_m2: Decimal | None
    water_m3_per_person: Decimal | None
    source: str


# 十四五公共机构节约能源资源工作规划 (2021): national 2020 baselines and 2025 reductions (A/B).
NATIONAL_2020 = Baseline(
    2020,
    Decimal("18.48"),
    Decimal("329.56"),
    None,
    Decimal("21.53"),
    "十四五公共机构节约能源资源工作规划 (2021), national 2020 figures",
)
FIVE_YEAR_CUTS = {
    "kgce_per_m2": Decimal("0.05"),
    "kgce_per_person": Decimal("0.06"),
    "kgco2_per_m2": Decimal("0.07"),
    "water_m3_per_person": Decimal("0.06"),
}
# DB37/T 2672-2019 example quota (Shandong, party and government organs, city level and below,
# zone A), per m2 and year: constraint / baseline / guide values (confidence B-).
QUOTA_CODE = "DB37/T 2672-2019"  # compared only for sites bound to one of its quota clauses
QUOTA_STANDARD = "DB37/T 2672-2019 (Shandong example, 党政机关 市级以下, zone A; confidence B-)"
QUOTA_NON_HEATING_KGCE = (Decimal("20.0"), Decimal("11.9"), Decimal("6.5"))
QUOTA_ELECTRICITY_KWH = (Decimal("67.4"), Decimal("39.5"), Decimal("20"))
QUOTA_LEVELS = (("约束值", "constraint"), ("基准值", "baseline"), ("引导值", "guide"))
# Names of carriers and bill kinds inside Chinese notes.
CARRIER_ZH = {
    "electricity": "电力",
    "natural_gas": "天然气",
    "heat": "热力",
    "gasoline": "汽油",
    "diesel": "柴油",
    "water": "水",
}
KIND_ZH = {"billed": "账单", "manual": "手工/估计值"}


def selects(site: SiteModel, selector: Selector, device: str, spaces: dict[str, Space]) -> bool:
    """The engine's selection rule (rules/engine.py): device lists, then the space's type, tags
    and subtree, with exemptions first."""
    if selector.devices and device not in selector.devices:
        return False
    if device in selector.exempt.devices:
        return False
    space = spaces[next(d.space for d in site.devices if d.id == device)]
    exempt = selector.exempt
    lineage = site.ancestors(space.id)
    if space.type in exempt.space_types or set(space.tags) & set(exempt.tags):
        return False
    if set(lineage) & set(exempt.spaces):
        return False
    if selector.space_types and space.type not in selector.space_types:
        return False
    if selector.tags and not set(space.tags) & set(selector.tags):
        return False
    return not (selector.spaces and not set(lineage) & set(selector.spaces))


def bound_quota_standards(conn: psycopg.Connection[Any], site: SiteModel) -> set[str]:
    """Codes of the standards with a stored quota clause that applies to a meter of `site`:
    what the site is bound to (empty when the clause table is absent)."""
    exists = conn.execute("SELECT to_regclass('clause_versions') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return set()
    rows = conn.execute(
        "SELECT DISTINCT standard_code, config FROM clause_versions"
        " WHERE config->'check'->>'kind' = 'quota'"
    ).fetchall()
    meters = site_meters(site)
    spaces = {s.id: s for s in site.spaces}
    found = set()
    for code, config in rows:
        clause = ClauseVersion.model_validate(config)
        metric = getattr(clause.check, "metric", None)
        if any(
            m.metric == metric and selects(site, clause.applies_to, m.device, spaces)
            for m in meters
        ):
            found.add(code)
    return found


def load_baseline(conn: psycopg.Connection[Any], site: str) -> Baseline:
    """The site's own baseline row (the latest year), else the national 2020 figures."""
    row = conn.execute(
        "SELECT year, kgce_per_m2, kgce_per_person, kgco2_per_m2, water_m3_per_person"
        " FROM site_energy_baselines WHERE site = %s ORDER BY year DESC LIMIT 1",
        (site,),
    ).fetchone()
    if row is None:
        return NATIONAL_2020
    year, per_m2, per_person, co2_per_m2, water = row
    return Baseline(
        year,
        per_m2 if per_m2 is not None else NATIONAL_2020.kgce_per_m2,
        per_person if per_person is not None else NATIONAL_2020.kgce_per_person,
        co2_per_m2,
        water if water is not None else NATIONAL_2020.water_m3_per_person,
        f"site baseline {year} (national 2020 figures where the site has none)",
    )


# ---- bills and manual entries (energy/bills.py) ----

# How a counted bill is flagged wherever a figure includes it.
KIND_NOTE = {
    "billed": Note("计入账单值", "billed value counted"),
    "manual": Note("计入手工/估计值", "manual (estimated) value counted"),
}


@dataclass(slots=True)
class BillLine:
    """A bill or manual entry of the period, and how the report uses it: `counted` in the
    totals (no meter of its carrier measures its scope: `share` is its part of each report
    bucket, pro rata in time), else compared with the meters that measure that scope over the
    bill's own period (`metered`: their sum; `difference` = metered − bill)."""

    bill: Bill
    unit: str
    counted: bool
    meters: tuple[str, ...]
    metered: MeterConsumption | None
    share: list[BucketTotal]
    reason: Note

    @property
    def in_period(self) -> Decimal:
        return sum((b.value for b in self.share), ZERO)

    @property
    def difference(self) -> Decimal | None:
        return None if self.metered is None else self.metered.total - self.bill.amount

    @property
    def percent(self) -> Decimal | None:
        if self.difference is None or self.bill.amount == ZERO:
            return None
        return self.difference * 100 / self.bill.amount


def bill_lines(
    conn: psycopg.Connection[Any],
    site: SiteModel,
    meters: Sequence[Meter],
    space: str | None,
    edges: Sequence[float],
) -> list[BillLine]:
    """The current bills of the site (or whose space lies in `space`) that meet the period of
    `edges`, each counted or compared (BillLine)."""
    zone = site.zone()
    first = dt.datetime.fromtimestamp(edges[0], zone).date()
    last = (dt.datetime.fromtimestamp(edges[-1], zone) - dt.timedelta(microseconds=1)).date()
    inside = subtree(site, space)
    lines = []
    for bill in load_bills(conn, site.site.id, first, last):
        if space is not None and (bill.space is None or bill.space not in inside):
            continue
        start, end = bill.bounds(site)
        unit = ACTIVITY_UNIT[bill.carrier]
        if bill.device is not None:
            compared = [m for m in meters if m.device == bill.device and m.carrier == bill.carrier]
        else:
            compared = [
                m for m in counted_meters(site, meters, bill.space) if m.carrier == bill.carrier
            ]
        if compared:
            measured = measure(conn, site, compared, [start, end])
            total = MeterConsumption(buckets=[BucketTotal(start, end)])
            for result in measured.values():
                total.buckets[0].value += result.total
                total.buckets[0].estimated += result.estimated
                total.missing.extend(result.missing)
                total.resets.extend(result.resets)
                total.gaps.extend(result.gaps)
                total.readings += result.readings
            names = tuple(m.device for m in compared)
            listed = ", ".join(names)
            reason = Note(
                f"与计量表 {listed} 对照，以表计为准",
                f"compared with meter {listed}; the meters count",
            )
            lines.append(BillLine(bill, unit, False, names, total, [], reason))
            continue
        lineage = set(site.ancestors(bill.space)) if bill.space is not None else set()
        enclosing = [m.device for m in meters if m.carrier == bill.carrier and m.space in lineage]
        if enclosing:
            listed = ", ".join(enclosing)
            reason = Note(
                f"位于计量表 {listed} 的计量范围内（上级空间）：不计入，不对照",
                f"inside the scope of meter {listed} (an enclosing space): "
                "not counted, not compared",
            )
            lines.append(BillLine(bill, unit, False, (), None, [], reason))
            continue
        reason = Note(
            f"此处无计量表计量{CARRIER_ZH[bill.carrier]}：按{KIND_ZH[bill.kind]}计入",
            f"no meter measures {bill.carrier} here: counted as {bill.kind}",
        )
        lines.append(
            BillLine(bill, unit, True, (), None, spread(edges, start, end, bill.amount), reason)
        )
    return lines


# ---- the report ----


@dataclass(slots=True)
class CarrierTotal:
    carrier: str
    unit: str
    consumption: Decimal = ZERO
    estimated: Decimal = ZERO
    kgce: Decimal = ZERO
    location_kgco2: Decimal = ZERO
    market_kgco2: Decimal | None = None
    # the parts of `consumption` and `location_kgco2` from bills (billed) and manual entries
    billed: Decimal = ZERO
    manual: Decimal = ZERO
    billed_kgco2: Decimal = ZERO
    manual_kgco2: Decimal = ZERO

    def flag(self, kind: str, amount: Decimal, kgco2: Decimal = ZERO) -> None:
        """Adds to the part that came from bills (`billed`) or manual entries."""
        if kind == "billed":
            self.billed += amount
            self.billed_kgco2 += kgco2
        else:
            self.manual += amount
            self.manual_kgco2 += kgco2


@dataclass(slots=True)
class MeterLine:
    meter: Meter
    counted: bool  # part of the scope's total (not a sub-meter of a counted meter)
    result: MeterConsumption


@dataclass(frozen=True, slots=True)
class Imbalance:
    parent: str
    children: tuple[str, ...]
    carrier: str
    unit: str
    parent_value: Decimal
    children_value: Decimal

    @property
    def difference(self) -> Decimal:
        return self.parent_value - self.children_value

    @property
    def percent(self) -> Decimal | None:
        if self.parent_value == ZERO:
            return None
        return self.difference * 100 / self.parent_value


@dataclass(frozen=True, slots=True)
class Comparison:
    name: Note
    unit: str
    actual: Decimal | None  # annualised intensity of the period
    limit: Decimal | None
    status: str  # within | exceeds | not_assessable
    source: str
    note: Note = NONE


@dataclass(slots=True)
class MonthLine:
    start: float
    end: float
    carrier: str
    consumption: Decimal
    estimated: Decimal
    kgce: Decimal
    billed: Decimal = ZERO
    manual: Decimal = ZERO


@dataclass(slots=True)
class CarbonReport:
    site: str
    space: str | None
    since: dt.datetime
    until: dt.datetime
    timezone: str
    area_m2: Decimal | None
    occupants: int | None
    carriers: dict[str, CarrierTotal]
    meters: list[MeterLine]
    imbalances: list[Imbalance]
    factors: list[tuple[str, FactorChoice]]  # (purpose, choice): location / market / scope1
    green_kwh: Decimal | None
    green_records: list[GreenPower]
    refuels: list[Refuel]
    months: list[MonthLine]
    comparisons: list[Comparison]
    notes: list[Note]
    holiday_calendar: list[CalendarNote]
    bills: list[BillLine] = field(default_factory=list)

    @property
    def days(self) -> Decimal:
        return Decimal(repr((self.until - self.since).total_seconds())) / 86400

    @property
    def kgce(self) -> Decimal:
        return sum((c.kgce for c in self.carriers.values()), ZERO)

    def scope_kgco2(self, scope: int, *, market: bool = False) -> Decimal | None:
        total = ZERO
        for carrier in self.carriers.values():
            if SCOPE.get(carrier.carrier) != scope:
                continue
            if market and scope == 2:
                if carrier.market_kgco2 is None:
                    return None
                total += carrier.market_kgco2
            else:
                total += carrier.location_kgco2
        return total

    def per(self, value: Decimal | None, basis: Decimal | int | None) -> Decimal | None:
        if value is None or basis is None or basis == 0:
            return None
        return value / Decimal(basis)

    @property
    def location_kgco2(self) -> Decimal:
        return (self.scope_kgco2(1) or ZERO) + (self.scope_kgco2(2) or ZERO)

    @property
    def water_m3(self) -> Decimal | None:
        water = self.carriers.get("water")
        return water.consumption if water else None


def carbon_report(
    conn: psycopg.Connection[Any],
    site: SiteModel,
    since: dt.datetime,
    until: dt.datetime,
    *,
    space: str | None = None,
    today: dt.date | None = None,
) -> CarbonReport:
    """The full energy and carbon report of the site (or `space`) for [since, until), made on
    `today` (default: today at the site; it says whether the coming year has a holiday
    schedule)."""
    zone = site.zone()
    month_edges = _edges(since, until, "month", site)
    meters = site_meters(site)
    counted = counted_meters(site, meters, space)
    inside = subtree(site, space)
    shown = [m for m in meters if m.space in inside]
    measured = measure(conn, site, shown, month_edges)
    counted_ids = {m.device for m in counted}
    notes: list[Note] = []

    carriers: dict[str, CarrierTotal] = {}
    months: dict[tuple[float, str], MonthLine] = {}
    # consumption per (carrier, local calendar year), the unit factors are chosen by
    by_year: dict[tuple[str, int], Decimal] = defaultdict(lambda: ZERO)
    for meter in counted:
        result = measured[meter.device]
        total = carriers.setdefault(meter.carrier, CarrierTotal(meter.carrier, meter.unit))
        for bucket in result.buckets:
            total.consumption += bucket.value
            total.estimated += bucket.estimated
            year = dt.datetime.fromtimestamp(bucket.start, zone).year
            by_year[(meter.carrier, year)] += bucket.value
            line = months.setdefault(
                (bucket.start, meter.carrier),
                MonthLine(bucket.start, bucket.end, meter.carrier, ZERO, ZERO, ZERO),
            )
            line.consumption += bucket.value
            line.estimated += bucket.estimated

    # Bills and manual entries where no meter measures their carrier: counted, and flagged.
    bills = bill_lines(conn, site, meters, space, month_edges)
    by_kind: dict[tuple[str, int, str], Decimal] = defaultdict(lambda: ZERO)
    for bill_line in bills:
        bill = bill_line.bill
        if not bill_line.counted:
            continue
        total = carriers.setdefault(bill.carrier, CarrierTotal(bill.carrier, bill_line.unit))
        for bucket in bill_line.share:
            total.consumption += bucket.value
            total.estimated += bucket.estimated
            total.flag(bill.kind, bucket.value)
            year = dt.datetime.fromtimestamp(bucket.start, zone).year
            by_year[(bill.carrier, year)] += bucket.value
            by_kind[(bill.carrier, year, bill.kind)] += bucket.value
            line = months.setdefault(
                (bucket.start, bill.carrier),
                MonthLine(bucket.start, bucket.end, bill.carrier, ZERO, ZERO, ZERO),
            )
            line.consumption += bucket.value
            line.estimated += bucket.estimated
            if bill.kind == "billed":
                line.billed += bucket.value
            else:
                line.manual += bucket.value
        where = bill.device or bill.space
        billed, in_period = present(bill.amount), present(bill_line.in_period)
        notes.append(
            Note(
                f"{KIND_NOTE[bill.kind].zh}：{CARRIER_ZH[bill.carrier]} {where or '全站'} "
                f"{bill.first_day}..{bill.last_day} {billed} {bill_line.unit}，"
                f"本期计入 {in_period}（无计量表计量）",
                f"{KIND_NOTE[bill.kind].en}: {bill.carrier} {where or 'the site'} "
                f"{bill.first_day}..{bill.last_day} {billed} {bill_line.unit}, {in_period} in "
                "the period (no meter measures it)",
            )
        )

    refuels = load_refuels(conn, site, space, since, until)
    for refuel in refuels:
        when = dt.datetime.fromtimestamp(refuel.ts, zone).isoformat()
        if refuel.fuel not in FUELS or refuel.kg is None:
            notes.append(
                Note(
                    f"{refuel.device} 于 {when} 的加油事件没有以 kg 计的汽油或柴油质量，也没有"
                    f"升数及站点声明的密度（{refuel.raw}）：不计入",
                    f"refuel event of {refuel.device} at {when} has no fuel gasoline|diesel "
                    f"with a mass in kg, or litres and a density the site stated ({refuel.raw});"
                    " not counted",
                )
            )
            continue
        if refuel.litres_at is not None:
            notes.append(
                Note(
                    f"{refuel.device} 于 {when} 的加油事件：升数按站点声明的"
                    f"{CARRIER_ZH[refuel.fuel]}密度 {refuel.litres_at} kg/L 换算",
                    f"refuel event of {refuel.device} at {when}: litres converted with the "
                    f"site's stated {refuel.fuel} density {refuel.litres_at} kg/L",
                )
            )
        total = carriers.setdefault(refuel.fuel, CarrierTotal(refuel.fuel, "kg"))
        total.consumption += refuel.kg
        year = dt.datetime.fromtimestamp(refuel.ts, zone).year
        by_year[(refuel.fuel, year)] += refuel.kg
        month_start = max(e for e in month_edges[:-1] if e <= refuel.ts)
        month_end = month_edges[month_edges.index(month_start) + 1]
        line = months.setdefault(
            (month_start, refuel.fuel),
            MonthLine(month_start, month_end, refuel.fuel, ZERO, ZERO, ZERO),
        )
        line.consumption += refuel.kg

    for carrier, coefficient in KGCE_PER_UNIT.items():
        if carrier in carriers:
            carriers[carrier].kgce = carriers[carrier].consumption * coefficient
    for line in months.values():
        line.kgce = line.consumption * KGCE_PER_UNIT.get(line.carrier, ZERO)

    # Emissions: each (carrier, year) with the factor of that year.
    factors = load_factors(conn)
    series = carrier_series(conn, site)
    used: list[tuple[str, FactorChoice]] = []
    location_by_year: dict[int, FactorChoice] = {}
    for (carrier, year), amount in sorted(by_year.items()):
        if carrier not in SCOPE:
            continue  # water: no emissions
        name, region = series[carrier]
        try:
            choice = choose_factor(
                factors,
                carrier=carrier,
                series=name,
                region=region,
                year=year,
                variant=ALL_IN if carrier == "electricity" else None,
            )
        except FactorError as exc:
            raise ReportError(f"{carrier} {year}: {exc}") from exc
        used.append(("location" if SCOPE[carrier] == 2 else "scope1", choice))
        carriers[carrier].location_kgco2 += amount * choice.factor.kg_per_unit
        for kind in KINDS:
            part = by_kind.get((carrier, year, kind), ZERO)
            carriers[carrier].flag(kind, ZERO, part * choice.factor.kg_per_unit)
        if carrier == "electricity":
            location_by_year[year] = choice

    green_kwh: Decimal | None = None
    green_records: list[GreenPower] = []
    if "electricity" in carriers:
        local_since = since.astimezone(zone)
        last_day = (until.astimezone(zone) - dt.timedelta(microseconds=1)).date()
        green_records = load_green_power(conn, site.site.id, local_since.date(), last_day)
        if green_records and space is not None:
            notes.append(
                Note(
                    "绿电记录按全站计：基于市场的范围二排放只对全站报告",
                    "green-power records are site-wide: market-based scope 2 is reported for "
                    "the whole site only",
                )
            )
        elif green_records:
            green_kwh, market = _market_based(
                by_year,
                location_by_year,
                factors,
                green_records,
                local_since.date(),
                last_day,
                used,
                notes,
            )
            carriers["electricity"].market_kgco2 = market
    if "heat" in carriers:
        carriers["heat"].market_kgco2 = carriers["heat"].location_kgco2

    report = CarbonReport(
        site=site.site.id,
        space=space,
        since=since,
        until=until,
        timezone=site.site.timezone,
        area_m2=None,
        occupants=None,
        carriers=carriers,
        meters=[MeterLine(m, m.device in counted_ids, measured[m.device]) for m in shown],
        imbalances=imbalances(shown, measured),
        factors=used,
        green_kwh=green_kwh,
        green_records=green_records,
        refuels=refuels,
        months=sorted(months.values(), key=lambda m: (m.start, m.carrier)),
        comparisons=[],
        notes=notes,
        holiday_calendar=calendar_notes(site, since, until, today),
        bills=bills,
    )
    for note in report.holiday_calendar:
        notes.append(
            Note(
                f"节假日安排：{note.message_zh}；{CALENDAR_AFFECTS.zh}",
                f"holiday calendar: {note.message}; {CALENDAR_AFFECTS.en}",
            )
        )
    report.area_m2, report.occupants = area_and_occupants(site, space)
    if report.area_m2 is None:
        notes.append(
            Note(
                "无建筑面积：单位面积强度无法评估",
                "no floor area: per-m2 intensities are not assessable",
            )
        )
    if report.occupants is None:
        notes.append(
            Note(
                "无用能人数：人均强度无法评估",
                "no occupants: per-person intensities are not assessable",
            )
        )
    for meter_line in report.meters:
        result = meter_line.result
        device = meter_line.meter.device
        if result.resets:
            count = len(result.resets)
            notes.append(
                Note(
                    f"计量表 {device}：读数归零 {count} 次",
                    f"meter {device}: {count} register reset(s)",
                )
            )
        if result.missing:
            hours = present(Decimal(repr(result.missing_seconds)) / 3600, 2)
            notes.append(
                Note(
                    f"计量表 {device}：{hours} 小时无数据",
                    f"meter {device}: {hours} h without data",
                )
            )
    bound = bound_quota_standards(conn, site)
    if QUOTA_CODE not in bound:
        notes.append(
            Note(
                f"无定额对比：本站点的计量表未适用 {QUOTA_CODE} 定额条款",
                f"no quota comparison: no {QUOTA_CODE} quota clause applies to this site's meters",
            )
        )
    report.comparisons = compare(report, load_baseline(conn, site.site.id), bound)
    return report


def calendar_notes(
    site: SiteModel, since: dt.datetime, until: dt.datetime, today: dt.date | None = None
) -> list[CalendarNote]:
    """The days of [since, until) (and the coming year, from `today`, default today at the
    site) that have no State Council holiday schedule, for a site whose working days follow
    them."""
    zone = site.zone()
    last = (until.astimezone(zone) - dt.timedelta(microseconds=1)).date()
    return site_calendar_notes(
        site.site.holidays.kind,
        since.astimezone(zone).date(),
        last,
        today or dt.datetime.now(zone).date(),
    )


def _edges(since: dt.datetime, until: dt.datetime, bucket: Bucket, site: SiteModel) -> list[float]:
    try:
        return bucket_edges(since, until, bucket, site.zone())
    except ValueError as exc:
        raise ReportError(str(exc)) from None


def _market_based(
    by_year: dict[tuple[str, int], Decimal],
    location_by_year: dict[int, FactorChoice],
    factors: Sequence[EmissionFactor],
    records: Sequence[GreenPower],
    first: dt.date,
    last: dt.date,
    used: list[tuple[str, FactorChoice]],
    notes: list[Note],
) -> tuple[Decimal, Decimal]:
    """Green kWh at zero, the rest at the residual-mix factor of the same series, region and
    data year as the location-based one (else that location-based factor, said so)."""
    green_total = ZERO
    market = ZERO
    for year, location in sorted(location_by_year.items()):
        year_first = max(first, dt.date(year, 1, 1))
        year_last = min(last, dt.date(year, 12, 31))
        green = sum((r.kwh_within(year_first, year_last) for r in records), ZERO)
        consumed = by_year[("electricity", year)]
        if green > consumed:
            notes.append(
                Note(
                    f"{year} 年：绿电 {present(green)} kWh 超过用电量（{present(consumed)} kWh），"
                    "超出部分不结转",
                    f"{year}: green power {present(green)} kWh exceeds the electricity consumed "
                    f"({present(consumed)} kWh); the surplus is not carried over",
                )
            )
            green = consumed
        green_total += green
        factor = location.factor
        residual = [
            f
            for f in factors
            if (f.carrier, f.series, f.region, f.data_year, f.variant)
            == ("electricity", factor.series, factor.region, factor.data_year, RESIDUAL)
        ]
        if residual:
            choice = FactorChoice(
                residual[0],
                year,
                Note("非绿电部分按剩余组合因子", "residual mix for the non-green kWh"),
            )
        else:
            where = f"{factor.region} {factor.data_year}"
            choice = FactorChoice(
                factor,
                year,
                Note(
                    f"{factor.series} 无 {where} 的剩余组合因子：非绿电部分按基于位置的因子计",
                    f"{factor.series} has no residual-mix factor for {where}; the location-based "
                    "factor applies to the non-green kWh",
                ),
            )
        used.append(("market", choice))
        market += (consumed - green) * choice.factor.kg_per_unit
    return green_total, market


def imbalances(meters: Sequence[Meter], measured: dict[str, MeterConsumption]) -> list[Imbalance]:
    """For each measured meter with measured sub-meters: parent − Σ children."""
    found = []
    for parent in meters:
        children = [m for m in meters if m.parent == parent.device and m.device in measured]
        if not children or parent.device not in measured:
            continue
        found.append(
            Imbalance(
                parent.device,
                tuple(c.device for c in children),
                parent.carrier,
                parent.unit,
                measured[parent.device].total,
                sum((measured[c.device].total for c in children), ZERO),
            )
        )
    return found


def area_and_occupants(site: SiteModel, space: str | None) -> tuple[Decimal | None, int | None]:
    if space is not None:
        chosen = [site.space(space)]
    else:
        chosen = [s for s in site.spaces if s.parent is None]
    areas = [s.area_m2 for s in chosen]
    people = [s.occupants for s in chosen]
    area = None if any(a is None for a in areas) else sum((to_decimal(a) for a in areas if a), ZERO)
    occupants = None if any(p is None for p in people) else sum(p for p in people if p)
    return area, occupants


def annualise(report: CarbonReport, value: Decimal | None) -> Decimal | None:
    """value × 365 ÷ days of the period: a period figure on the scale of an annual quota."""
    if value is None:
        return None
    return value * 365 / report.days


def compare(
    report: CarbonReport, baseline: Baseline, bound: Collection[str] = ()
) -> list[Comparison]:
    """The period's annualised intensities against the five-year targets, and against the
    quota example when the site is bound to its standard (`bound`: standard codes)."""
    per_m2 = annualise(report, report.per(report.kgce, report.area_m2))
    per_person = annualise(report, report.per(report.kgce, report.occupants))
    non_heating = report.kgce - (report.carriers["heat"].kgce if "heat" in report.carriers else 0)
    non_heating_per_m2 = annualise(report, report.per(non_heating, report.area_m2))
    electricity = report.carriers.get("electricity")
    kwh_per_m2 = annualise(
        report, report.per(electricity.consumption if electricity else ZERO, report.area_m2)
    )
    co2_per_m2 = annualise(report, report.per(report.location_kgco2, report.area_m2))
    water_per_person = annualise(report, report.per(report.water_m3, report.occupants))
    rows: list[Comparison] = []
    names = QUOTA_LEVELS if QUOTA_CODE in bound else ()
    for (zh, en), limit in zip(names, QUOTA_NON_HEATING_KGCE[: len(names)], strict=True):
        rows.append(
            _judge(
                Note(f"定额 非采暖能耗（{zh}）", f"quota non-heating energy ({en})"),
                "kgce/(m2·a)",
                non_heating_per_m2,
                limit,
                QUOTA_STANDARD,
            )
        )
    for (zh, en), limit in zip(names, QUOTA_ELECTRICITY_KWH[: len(names)], strict=True):
        rows.append(
            _judge(
                Note(f"定额 电耗（{zh}）", f"quota electricity ({en})"),
                "kWh/(m2·a)",
                kwh_per_m2,
                limit,
                QUOTA_STANDARD,
            )
        )
    targets = (
        (Note("单位面积能耗", "energy per m2"), "kgce/(m2·a)", per_m2, "kgce_per_m2"),
        (Note("人均能耗", "energy per person"), "kgce/(person·a)", per_person, "kgce_per_person"),
        (Note("单位面积碳排放", "CO2 per m2"), "kgCO2/(m2·a)", co2_per_m2, "kgco2_per_m2"),
        (
            Note("人均用水量", "water per person"),
            "m3/(person·a)",
            water_per_person,
            "water_m3_per_person",
        ),
    )
    for label, unit, actual, key in targets:
        base: Decimal | None = getattr(baseline, key)
        cut = FIVE_YEAR_CUTS[key]
        target = base * (1 - cut) if base is not None else None
        if base is not None:
            percent = f"{cut * 100:.0f} %"
            note = Note(
                f"较 {baseline.year} 年（{base} {unit}）下降 {percent}",
                f"−{percent} vs {baseline.year} ({base} {unit})",
            )
        else:
            note = Note(
                "需要本站点自己的基准值（表 site_energy_baselines）",
                "needs the site's own baseline (table site_energy_baselines)",
            )
        name = Note(
            f"“十四五”目标 {label.zh}（2025 年）", f"14th five-year target {label.en} (2025)"
        )
        rows.append(_judge(name, unit, actual, target, baseline.source, note))
    return rows


def _judge(
    name: Note,
    unit: str,
    actual: Decimal | None,
    limit: Decimal | None,
    source: str,
    note: Note = NONE,
) -> Comparison:
    if actual is None or limit is None:
        return Comparison(name, unit, actual, limit, "not_assessable", source, note)
    status = "exceeds" if actual > limit else "within"
    return Comparison(name, unit, actual, limit, status, source, note)


# ---- the energy series (chart and /energy) ----


@dataclass(slots=True)
class SeriesPoint:
    start: float
    end: float
    key: str  # meter device, space id or carrier
    carrier: str
    unit: str
    value: Decimal
    estimated: Decimal
    billed: Decimal = ZERO  # the parts of `value` from bills and manual entries
    manual: Decimal = ZERO


Series = tuple[list[SeriesPoint], list["MeterLine"], list["Imbalance"], list[BillLine]]


def energy_series(
    conn: psycopg.Connection[Any],
    site: SiteModel,
    since: dt.datetime,
    until: dt.datetime,
    bucket: Bucket,
    *,
    space: str | None = None,
    by: str = "carrier",
) -> Series:
    """Consumption per bucket, grouped `by` carrier (the scope's total), meter, or space (each
    child space of `space`, or each building of the site); bills and manual entries no meter
    measures are added (flagged `billed` / `manual`; by meter under their device, else
    `<kind>:<space or site>`), the others listed with their meters' figure beside them."""
    edges = _edges(since, until, bucket, site)
    meters = site_meters(site)
    inside = subtree(site, space)
    shown = [m for m in meters if m.space in inside]
    measured = measure(conn, site, shown, edges)
    groups: dict[str, list[Meter]]
    if by == "meter":
        groups = {m.device: [m] for m in shown}
    elif by == "space":
        children = [s.id for s in site.spaces if s.parent == space]
        groups = {child: counted_meters(site, meters, child) for child in children}
    elif by == "carrier":
        groups = {"total": counted_meters(site, meters, space)}
    else:
        raise ReportError("by must be carrier, meter or space")
    points: dict[tuple[str, str, int], SeriesPoint] = {}
    for key, members in groups.items():
        for meter in members:
            for index, b in enumerate(measured[meter.device].buckets):
                name = meter.carrier if by == "carrier" else key
                point = points.setdefault(
                    (name, meter.carrier, index),
                    SeriesPoint(b.start, b.end, name, meter.carrier, meter.unit, ZERO, ZERO),
                )
                point.value += b.value
                point.estimated += b.estimated
    bills = bill_lines(conn, site, meters, space, edges)
    for line in bills:
        bill = line.bill
        if not line.counted:
            continue
        group = _bill_key(site, bill, by, space)
        if group is None:
            continue
        for index, b in enumerate(line.share):
            point = points.setdefault(
                (group, bill.carrier, index),
                SeriesPoint(b.start, b.end, group, bill.carrier, line.unit, ZERO, ZERO),
            )
            point.value += b.value
            point.estimated += b.estimated
            if bill.kind == "billed":
                point.billed += b.value
            else:
                point.manual += b.value
    counted = {c.device for c in counted_meters(site, meters, space)}
    lines = [MeterLine(m, m.device in counted, measured[m.device]) for m in shown]
    ordered = sorted(points.values(), key=lambda p: (p.start, p.key, p.carrier))
    return ordered, lines, imbalances(shown, measured), bills


def _bill_key(site: SiteModel, bill: Bill, by: str, space: str | None) -> str | None:
    """The series a counted bill adds to (None: none of the groups, a site-wide bill by
    space)."""
    if by == "carrier":
        return bill.carrier
    if by == "meter":
        return bill.device or f"{bill.kind}:{bill.space or site.site.id}"
    if bill.space is None:
        return None
    lineage = site.ancestors(bill.space)
    return next((s.id for s in site.spaces if s.parent == space and s.id in lineage), None)


# ---- presentation ----


def present(value: Decimal | None, places: int = 3) -> str:
    """A decimal rounded half to even to `places`, as text ('' for None)."""
    if value is None:
        return ""
    return str(value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN))


def factor_label(purpose: str, choice: FactorChoice) -> str:
    f = choice.factor
    text = (
        f"{purpose} {f.carrier} {choice.year}: {f.series} {f.region} {f.data_year} "
        f"{f.value} {f.unit} ({f.variant}; {f.instrument}; confidence {f.confidence})"
    )
    return f"{text} — {choice.note.en}" if choice.note else text


KGCE_NOTE = Note(
    f"按 {KGCE_SOURCE} 折标准煤："
    + "，".join(f"{CARRIER_ZH[c]} {v} kgce/{ACTIVITY_UNIT[c]}" for c, v in KGCE_PER_UNIT.items()),
    f"standard coal by {KGCE_SOURCE}: "
    + ", ".join(f"{c} {v} kgce/{ACTIVITY_UNIT[c]}" for c, v in KGCE_PER_UNIT.items()),
)
