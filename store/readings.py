"""Reading queries for the API and the energy reports: raw readings, bucketed statistics
(count, mean, min, max) and register consumption, the same in both storage modes.

Buckets are whole: a bucketed query returns every bucket overlapping [since, until), aligned
on a grid that starts 2000-01-03 00:00 UTC (a Monday, so `1w` buckets are ISO weeks; `1d`
buckets are UTC days). Buckets that are whole hours are served from the hourly rollup, whole
days from the daily rollup; hours written since the last `refresh_rollups` are computed from
the raw rows instead, so a result never lags the data. Smaller buckets come from raw rows.

Consumption of a register is the sum of the positive differences between successive readings,
each difference counted in the bucket of its later reading (the first reading of a range takes
its predecessor from before the range). A drop is a reset: never negative consumption,
counted in `resets`.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import psycopg

from store.mode import storage_mode
from store.partitions import raw_horizon

GRID_ORIGIN = dt.datetime(2000, 1, 3, tzinfo=dt.UTC)
BUCKET_PATTERN = re.compile(r"^([1-9][0-9]{0,5})(s|m|h|d|w)$")
UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
HOUR_S = 3600
DAY_S = 86400
# Raw queries stop here: a caller asking for years of raw rows gets an error, not an OOM.
MAX_RAW_ROWS = 200_000
MAX_BUCKETS = 100_000
MINUS_INFINITY = dt.datetime.min.replace(tzinfo=dt.UTC)


class QueryError(ValueError):
    """A query that cannot be answered as asked (bad bucket, range too large)."""


@dataclass(frozen=True, slots=True)
class RawPoint:
    ts: dt.datetime
    value: float
    seq: int | None


@dataclass(frozen=True, slots=True)
class BucketPoint:
    bucket: dt.datetime  # start of the bucket, UTC
    count: int
    mean: float
    min: float
    max: float


@dataclass(frozen=True, slots=True)
class ConsumptionPoint:
    bucket: dt.datetime  # start of the bucket (`since` when unbucketed)
    consumption: float
    resets: int


def parse_bucket(bucket: str) -> int:
    """`15m`, `1h`, `1d`, `1w` ... to seconds; QueryError when malformed."""
    match = BUCKET_PATTERN.match(bucket)
    if not match:
        raise QueryError(f"bucket {bucket!r}: expected a number and s, m, h, d or w, e.g. 1h")
    return int(match.group(1)) * UNIT_S[match.group(2)]


def _grid(since: dt.datetime, until: dt.datetime, width: int) -> tuple[dt.datetime, dt.datetime]:
    if since.tzinfo is None or until.tzinfo is None:
        raise QueryError("since and until need a UTC offset")
    if until <= since:
        raise QueryError("until must be after since")
    start = (since - GRID_ORIGIN).total_seconds()
    end = (until - GRID_ORIGIN).total_seconds()
    lo = math.floor(start / width) * width
    hi = math.ceil(end / width) * width
    if (hi - lo) / width > MAX_BUCKETS:
        raise QueryError(f"more than {MAX_BUCKETS} buckets: use a wider bucket")
    try:
        return GRID_ORIGIN + dt.timedelta(seconds=lo), GRID_ORIGIN + dt.timedelta(seconds=hi)
    except OverflowError as exc:
        raise QueryError("the buckets reach past the supported dates (years 1-9999)") from exc


SERIES = "site = %(site)s AND device = %(device)s AND metric = %(metric)s"
PENDING_HOURS = f"""
SELECT bucket FROM rollup_dirty
WHERE {SERIES} AND bucket >= %(lo)s AND bucket < %(hi)s
"""
PENDING_DAYS = f"""
SELECT DISTINCT date_trunc('day', bucket, 'UTC') FROM rollup_dirty
WHERE {SERIES} AND bucket >= %(lo)s AND bucket < %(hi)s
"""

STATS_COLUMNS = "value_count, value_sum, value_min, value_max"
STATS_COMBINE = "sum(value_count), sum(value_sum), min(value_min), max(value_max)"
RAW_STATS = "count(*), sum(value), min(value), max(value)"

# Hourly statistics, current: rollup rows of clean hours, raw rows for hours still marked.
FRESH_HOURLY_STATS = f"""
SELECT bucket, {STATS_COLUMNS} FROM readings_hourly
WHERE {SERIES} AND bucket >= %(lo)s AND bucket < %(hi)s AND bucket NOT IN ({PENDING_HOURS})
UNION ALL
SELECT date_trunc('hour', ts, 'UTC'), {RAW_STATS} FROM readings
WHERE {SERIES} AND ts >= %(lo)s AND ts < %(hi)s
  AND date_trunc('hour', ts, 'UTC') IN ({PENDING_HOURS})
GROUP BY 1
"""
FRESH_DAILY_STATS = f"""
SELECT bucket, {STATS_COLUMNS} FROM readings_daily
WHERE {SERIES} AND bucket >= %(lo)s AND bucket < %(hi)s AND bucket NOT IN ({PENDING_DAYS})
UNION ALL
SELECT date_trunc('day', h.bucket, 'UTC'), {STATS_COMBINE}
FROM ({FRESH_HOURLY_STATS}) h
WHERE date_trunc('day', h.bucket, 'UTC') IN ({PENDING_DAYS})
GROUP BY 1
"""
# Under TimescaleDB a continuous aggregate is stale for a late reading in an hour it has
# materialised until its policy refreshes that hour again (and its real-time part covers only
# the buckets after the materialisation), so statistics come from the raw rows wherever they
# are kept, and from the aggregate only before `retained` (store.partitions.raw_horizon, a UTC
# midnight; no late reading reaches that far back): every result equals the raw rows.
CAGG_STATS = f"""
SELECT date_trunc('{{unit}}', ts, 'UTC') AS bucket, count(*) AS value_count,
       sum(value) AS value_sum, min(value) AS value_min, max(value) AS value_max FROM readings
WHERE {SERIES} AND ts >= greatest(%(lo)s, %(retained)s) AND ts < %(hi)s
GROUP BY 1
UNION ALL
SELECT bucket, {STATS_COLUMNS} FROM readings_{{grain}}
WHERE {SERIES} AND bucket >= %(lo)s AND bucket < least(%(hi)s, %(retained)s)
"""

# Consumption of the given buckets from raw rows (differences to the bucket of the later
# reading; the first reading's predecessor is the last one before %(lo)s). Readings of one ts
# follow each other in seq order, as in the rollups.
RAW_CONSUMPTION = f"""
SELECT {{bucket_expr}} AS bucket,
       coalesce(sum(greatest(x.value - x.prev, 0)), 0) AS consumption,
       count(*) FILTER (WHERE x.value < x.prev) AS resets
FROM (
    SELECT s.ts, s.value, lag(s.value) OVER (ORDER BY s.ts, s.seq) AS prev
    FROM (
        (SELECT ts, seq, value FROM readings WHERE {SERIES} AND ts < %(lo)s
         ORDER BY ts DESC, seq DESC LIMIT 1)
        UNION ALL
        (SELECT ts, seq, value FROM readings WHERE {SERIES} AND ts >= %(lo)s AND ts < %(hi)s)
    ) s
) x
WHERE x.ts >= %(lo)s {{extra}}
GROUP BY 1
"""
FRESH_HOURLY_CONSUMPTION = f"""
SELECT bucket, consumption, resets FROM consumption_hourly
WHERE {SERIES} AND bucket >= %(lo)s AND bucket < %(hi)s AND bucket NOT IN ({PENDING_HOURS})
UNION ALL
{
    RAW_CONSUMPTION.format(
        bucket_expr="date_trunc('hour', x.ts, 'UTC')",
        extra=f"AND date_trunc('hour', x.ts, 'UTC') IN ({PENDING_HOURS})",
    )
}
"""
FRESH_DAILY_CONSUMPTION = f"""
SELECT bucket, consumption, resets FROM consumption_daily
WHERE {SERIES} AND bucket >= %(lo)s AND bucket < %(hi)s AND bucket NOT IN ({PENDING_DAYS})
UNION ALL
SELECT date_trunc('day', h.bucket, 'UTC'), sum(h.consumption), sum(h.resets)
FROM ({FRESH_HOURLY_CONSUMPTION}) h
WHERE date_trunc('day', h.bucket, 'UTC') IN ({PENDING_DAYS})
GROUP BY 1
"""


def _binned(source: str, width: int, grain: int, combine: str, columns: str) -> str:
    """Groups a per-grain source into buckets of `width` seconds (a multiple of the grain)."""
    if width == grain:
        return f"SELECT bucket, {columns} FROM ({source}) f ORDER BY bucket"
    return (
        f"SELECT date_bin(make_interval(secs => {width}), f.bucket, %(origin)s) AS b, {combine}"
        f" FROM ({source}) f GROUP BY b ORDER BY b"
    )


def _params(
    site: str, device: str, metric: str, lo: dt.datetime, hi: dt.datetime
) -> dict[str, Any]:
    return {
        "site": site,
        "device": device,
        "metric": metric,
        "lo": lo,
        "hi": hi,
        "origin": GRID_ORIGIN,
    }


def query_readings(
    conn: psycopg.Connection[Any],
    site: str,
    device: str,
    metric: str,
    since: dt.datetime,
    until: dt.datetime,
    bucket: str | None = None,
) -> list[RawPoint] | list[BucketPoint]:
    """Raw readings in [since, until) in time order (bucket None; at most MAX_RAW_ROWS, else
    QueryError), or one BucketPoint per non-empty bucket overlapping [since, until)."""
    if bucket is None:
        if since.tzinfo is None or until.tzinfo is None:
            raise QueryError("since and until need a UTC offset")
        rows = conn.execute(
            f"SELECT ts, value, seq FROM readings WHERE {SERIES}"
            " AND ts >= %(lo)s AND ts < %(hi)s ORDER BY ts, seq LIMIT %(limit)s",
            {**_params(site, device, metric, since, until), "limit": MAX_RAW_ROWS + 1},
        ).fetchall()
        if len(rows) > MAX_RAW_ROWS:
            raise QueryError(f"more than {MAX_RAW_ROWS} readings: ask for buckets")
        return [RawPoint(ts, value, seq) for ts, value, seq in rows]

    width = parse_bucket(bucket)
    lo, hi = _grid(since, until, width)
    native = storage_mode(conn) == "native"
    grain: Literal["daily", "hourly"] | None
    if width % DAY_S == 0:
        grain = "daily"
    elif width % HOUR_S == 0:
        grain = "hourly"
    else:
        grain = None
    if grain is None:
        sql = (
            f"SELECT date_bin(make_interval(secs => {width}), ts, %(origin)s) AS b, {RAW_STATS}"
            f" FROM readings WHERE {SERIES} AND ts >= %(lo)s AND ts < %(hi)s"
            " GROUP BY b ORDER BY b"
        )
    else:
        if not native:
            source = CAGG_STATS.format(grain=grain, unit="day" if grain == "daily" else "hour")
        elif grain == "daily":
            source = FRESH_DAILY_STATS
        else:
            source = FRESH_HOURLY_STATS
        grain_s = DAY_S if grain == "daily" else HOUR_S
        sql = _binned(source, width, grain_s, STATS_COMBINE, STATS_COLUMNS)
    params = _params(site, device, metric, lo, hi)
    if not native:
        params["retained"] = raw_horizon(conn)[0] or MINUS_INFINITY
    rows = conn.execute(sql, params).fetchall()
    return [
        BucketPoint(b, int(count), float(total) / int(count), float(low), float(high))
        for b, count, total, low, high in rows
        if count
    ]


def consumption(
    conn: psycopg.Connection[Any],
    site: str,
    device: str,
    metric: str,
    since: dt.datetime,
    until: dt.datetime,
    bucket: str | None = None,
) -> list[ConsumptionPoint]:
    """Consumption of a register: one point for exactly [since, until) when `bucket` is None
    (from raw rows), else one per bucket overlapping [since, until) that holds readings."""
    if bucket is None:
        if since.tzinfo is None or until.tzinfo is None:
            raise QueryError("since and until need a UTC offset")
        if until <= since:
            raise QueryError("until must be after since")
        sql = RAW_CONSUMPTION.format(bucket_expr="%(lo)s::timestamptz", extra="")
        row = conn.execute(sql, _params(site, device, metric, since, until)).fetchone()
        if row is None:
            return [ConsumptionPoint(since, 0.0, 0)]
        return [ConsumptionPoint(since, float(row[1]), int(row[2]))]

    width = parse_bucket(bucket)
    lo, hi = _grid(since, until, width)
    if width % DAY_S == 0:
        sql = _binned(
            FRESH_DAILY_CONSUMPTION,
            width,
            DAY_S,
            "sum(consumption), sum(resets)",
            "consumption, resets",
        )
    elif width % HOUR_S == 0:
        sql = _binned(
            FRESH_HOURLY_CONSUMPTION,
            width,
            HOUR_S,
            "sum(consumption), sum(resets)",
            "consumption, resets",
        )
    else:
        bucket_expr = f"date_bin(make_interval(secs => {width}), x.ts, %(origin)s)"
        sql = RAW_CONSUMPTION.format(bucket_expr=bucket_expr, extra="") + " ORDER BY 1"
    rows = conn.execute(sql, _params(site, device, metric, lo, hi)).fetchall()
    return [ConsumptionPoint(b, float(c), int(r)) for b, c, r in rows]
