"""Quota clauses (check kind `quota`) as the energy page shows them: consumption of the current
period so far against the budget, the pro-rated budget to date, a linear forecast to the period
end, and the cumulative curve (the burn-down).

The figures are recomputed here from stored readings with the same clause config the engine
judges (same budget, period and forecast threshold) and the register arithmetic of
`accounting`, so the page and the CSV agree with the energy report to the last digit. The
engine's alerts stay the authority on breaches; this is the officer's view of where a budget
stands.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg

from energy.accounting import ZERO, Bucket, MeterConsumption, bucket_edges, meter_consumption
from energy.reports import Meter, load_samples, selects, site_meters
from rules.clause import ClauseVersion, QuotaCheck
from rules.site import SiteModel, Space


@dataclass(slots=True)
class QuotaStatus:
    clause_id: str
    version: int
    title: str
    device: str
    space: str
    metric: str
    unit: str
    period: str
    period_start: dt.datetime
    period_end: dt.datetime
    budget: Decimal | None
    consumed: Decimal
    estimated: Decimal
    budget_to_date: Decimal | None
    forecast: Decimal | None
    elapsed_share: Decimal
    status: str  # ok | forecast_overrun | breach | not_assessable
    reason: str
    missing_hours: Decimal  # period time so far without readings: consumed is a lower bound
    curve: list[tuple[dt.datetime, Decimal]]  # cumulative consumption at each bucket end


def load_quota_clauses(conn: psycopg.Connection[Any]) -> list[ClauseVersion]:
    """Quota clause versions stored by the clause sync (empty when that table is absent)."""
    exists = conn.execute("SELECT to_regclass('clause_versions') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return []
    rows = conn.execute(
        "SELECT config FROM clause_versions WHERE config->'check'->>'kind' = 'quota'"
        " ORDER BY clause_id, version"
    ).fetchall()
    return [ClauseVersion.model_validate(row[0]) for row in rows]


def period_bounds(at: dt.datetime, period: str, site: SiteModel) -> tuple[dt.datetime, dt.datetime]:
    """The local calendar period containing `at`: [start, end)."""
    local = at.astimezone(site.zone())
    day = local.date()
    if period == "day":
        first = day
        following = day + dt.timedelta(days=1)
    elif period == "week":
        first = day - dt.timedelta(days=day.weekday())
        following = first + dt.timedelta(days=7)
    elif period == "month":
        first = day.replace(day=1)
        following = (first + dt.timedelta(days=32)).replace(day=1)
    elif period == "quarter":
        first = dt.date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)
        following = (first + dt.timedelta(days=95)).replace(day=1)
    elif period == "year":
        first = dt.date(day.year, 1, 1)
        following = dt.date(day.year + 1, 1, 1)
    else:
        raise ValueError(f"unknown period {period!r}")
    zone = site.zone()
    return (
        dt.datetime.combine(first, dt.time(), tzinfo=zone),
        dt.datetime.combine(following, dt.time(), tzinfo=zone),
    )


def quota_statuses(
    conn: psycopg.Connection[Any],
    site: SiteModel,
    clauses: Sequence[ClauseVersion],
    at: dt.datetime,
    *,
    space: str | None = None,
) -> list[QuotaStatus]:
    """Every quota clause in force on `at` × every meter it applies to (in `space`'s subtree)."""
    meters = {(m.device, m.metric): m for m in site_meters(site)}
    spaces = {s.id: s for s in site.spaces}
    statuses = []
    local_day = at.astimezone(site.zone()).date()
    for clause in clauses:
        check = clause.check
        if not isinstance(check, QuotaCheck) or not clause.in_force_on(local_day):
            continue
        for device in site.devices:
            meter = meters.get((device.id, check.metric))
            if meter is None or not selects(site, clause.applies_to, device.id, spaces):
                continue
            if space is not None and space not in site.ancestors(device.space):
                continue
            statuses.append(_status(conn, site, clause, check, meter, spaces[device.space], at))
    return statuses


def _status(
    conn: psycopg.Connection[Any],
    site: SiteModel,
    clause: ClauseVersion,
    check: QuotaCheck,
    meter: Meter,
    space: Space,
    at: dt.datetime,
) -> QuotaStatus:
    start, end = period_bounds(at, check.period, site)
    grain: Bucket = "hour" if check.period == "day" else "day"
    consumed = estimated = missing = ZERO
    curve: list[tuple[dt.datetime, Decimal]] = []
    if at > start:
        result = _consumption(conn, site, meter, start, min(at, end), grain)
        for bucket in result.buckets:
            consumed += bucket.value / meter.scale  # the budget is in the register's unit
            curve.append((dt.datetime.fromtimestamp(bucket.end, site.zone()), consumed))
        estimated = result.estimated / meter.scale
        missing = Decimal(repr(result.missing_seconds)) / 3600
    params = clause.resolve_params(site.site.id, space.type)
    budget, reason = _budget(check, params, space)
    elapsed = Decimal(repr(max(0.0, min(at.timestamp(), end.timestamp()) - start.timestamp())))
    share = elapsed / Decimal(repr(end.timestamp() - start.timestamp()))
    to_date = budget * share if budget is not None else None
    forecast = consumed / share if share > 0 else None
    if budget is None:
        status = "not_assessable"
    elif consumed > budget:
        status, reason = "breach", f"consumed {consumed} > budget {budget}"
    elif (
        forecast is not None and share >= Decimal(repr(check.forecast_after)) and forecast > budget
    ):
        status, reason = "forecast_overrun", f"forecast {forecast:.3f} > budget {budget}"
    else:
        status = "ok"
    return QuotaStatus(
        clause.id,
        clause.version,
        clause.title,
        meter.device,
        space.id,
        meter.metric,
        meter.unit,
        check.period,
        start,
        end,
        budget,
        consumed,
        estimated,
        to_date,
        forecast,
        share,
        status,
        reason,
        missing,
        curve,
    )


def _consumption(
    conn: psycopg.Connection[Any],
    site: SiteModel,
    meter: Meter,
    since: dt.datetime,
    until: dt.datetime,
    grain: Bucket,
) -> MeterConsumption:
    """The meter's consumption per `grain` bucket of [since, until) (report unit: divide by
    `meter.scale` for the register's), resets and gaps as energy.accounting handles them."""
    edges = bucket_edges(since, until, grain, site.zone())
    samples = load_samples(conn, site.site.id, meter, since, until)
    return meter_consumption(samples, edges, meter.max_gap)


# The buckets an alert's evidence shows a period in: a bar each, a few dozen at most.
EVIDENCE_BUCKET: dict[str, Bucket] = {
    "day": "hour",
    "week": "day",
    "month": "day",
    "quarter": "day",
    "year": "month",
}


@dataclass(frozen=True, slots=True)
class EvidenceBucket:
    start: dt.datetime
    end: dt.datetime
    value: Decimal  # consumption in the bucket, in QuotaEvidence.unit
    cumulative: Decimal  # since the period's start, through this bucket
    estimated: bool  # part of `value` was spread in proportion to time (accounting)


@dataclass(slots=True)
class QuotaEvidence:
    """What a quota alert is about, as the clause judges it: consumption of the meter's
    register per bucket of the alert's period (not the register's reading), per m² of the
    floor area the budget was judged with when the budget is per m², and the budget in the
    same unit."""

    device: str
    metric: str
    register_unit: str
    unit: str  # the register's unit, or that unit per m²
    area_m2: Decimal | None  # the divisor when the budget is per m²
    period: str
    bucket: Bucket
    period_start: dt.datetime
    period_end: dt.datetime
    limit: Decimal  # the period's budget in `unit`
    buckets: list[EvidenceBucket]
    resets: list[dt.datetime]  # the register went backwards (nothing counted across)
    gaps: list[tuple[dt.datetime, dt.datetime]]  # longer than max_gap: spread over time
    missing_hours: Decimal  # time shown without readings: nothing invented


def quota_evidence(
    conn: psycopg.Connection[Any],
    site: SiteModel,
    clause: ClauseVersion,
    device: str,
    params: dict[str, float],
    started_at: dt.datetime,
    until: dt.datetime,
) -> QuotaEvidence | None:
    """The evidence of a quota alert of `clause` on `device`'s register that started at
    `started_at` (judged with `params`, the alert's): its period from the start up to
    `until` (the period's end at most). None when the clause is not a quota or the device
    has no such meter in the site model."""
    check = clause.check
    if not isinstance(check, QuotaCheck):
        return None
    meter = next(
        (m for m in site_meters(site) if m.device == device and m.metric == check.metric), None
    )
    spaces = {s.id: s for s in site.spaces}
    if meter is None or meter.space not in spaces:
        return None
    space = spaces[meter.space]
    spec = next(d for d in site.devices if d.id == device).metrics[check.metric]
    values = {**clause.resolve_params(site.site.id, space.type), **params}
    start, end = period_bounds(started_at, check.period, site)
    grain = EVIDENCE_BUCKET[check.period]
    area: Decimal | None = None
    if check.budget_per_m2 is not None:
        judged = values.get("area_m2", space.area_m2)  # the area the engine judged with
        if judged is None:
            return None
        area = Decimal(repr(judged))
        limit = _value(check.budget_per_m2, values)
    else:
        assert check.budget is not None  # the model requires one of the two
        limit = _value(check.budget, values)
    divisor = meter.scale * (area if area is not None else Decimal(1))
    shown_until = min(until, end)
    buckets: list[EvidenceBucket] = []
    resets: list[dt.datetime] = []
    gaps: list[tuple[dt.datetime, dt.datetime]] = []
    missing = ZERO
    if shown_until > start:
        result = _consumption(conn, site, meter, start, shown_until, grain)
        cumulative = ZERO
        for bucket in result.buckets:
            value = bucket.value / divisor
            cumulative += value
            buckets.append(
                EvidenceBucket(
                    dt.datetime.fromtimestamp(bucket.start, dt.UTC),
                    dt.datetime.fromtimestamp(bucket.end, dt.UTC),
                    value,
                    cumulative,
                    bucket.is_estimated,
                )
            )
        resets = [dt.datetime.fromtimestamp(r.ts, dt.UTC) for r in result.resets]
        gaps = [
            (dt.datetime.fromtimestamp(g.start, dt.UTC), dt.datetime.fromtimestamp(g.end, dt.UTC))
            for g in result.gaps
        ]
        missing = Decimal(repr(result.missing_seconds)) / 3600
    return QuotaEvidence(
        device=device,
        metric=check.metric,
        register_unit=spec.unit,
        unit=f"{spec.unit}/m²" if area is not None else spec.unit,
        area_m2=area,
        period=check.period,
        bucket=grain,
        period_start=start,
        period_end=end,
        limit=limit,
        buckets=buckets,
        resets=resets,
        gaps=gaps,
        missing_hours=missing,
    )


def _budget(
    check: QuotaCheck, params: dict[str, float], space: Space
) -> tuple[Decimal | None, str]:
    if check.budget is not None:
        return _value(check.budget, params), ""
    assert check.budget_per_m2 is not None  # the model requires one of the two
    if space.area_m2 is None:
        return None, f"space {space.id} has no floor area for a per-m2 budget"
    return _value(check.budget_per_m2, params) * Decimal(repr(space.area_m2)), ""


def _value(value: float | str, params: dict[str, float]) -> Decimal:
    if isinstance(value, str):
        return Decimal(repr(params[value.removeprefix("$")]))
    return Decimal(repr(value))
