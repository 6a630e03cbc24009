"""Incremental refresh of the rollups (see migration 0002).

The reading writer marks every UTC hour it inserts into (`rollup_dirty`), in the transaction
of the insert. `refresh_rollups` takes those marks and recomputes only the marked hours, then
the days that contain them, so its cost follows what was written since the last refresh — late
readings included — not the size of the table.

A new reading also changes the consumption of the next bucket of its series (the first
reading after it now has a different predecessor), so each marked hour also marks the hour of
the first reading after its end.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import psycopg

from store.mode import storage_mode

# Serialises concurrent refreshes (two schedulers): both would recompute the same buckets.
REFRESH_LOCK_KEY = 0x726F_6C6C_7570  # "rollup"

PREPARE_HOURS = """
CREATE TEMP TABLE IF NOT EXISTS refresh_hours (
    site text COLLATE "C", device text COLLATE "C", metric text COLLATE "C",
    bucket timestamptz,
    PRIMARY KEY (site, device, metric, bucket)
) ON COMMIT DELETE ROWS;
TRUNCATE refresh_hours;
"""
TAKE_DIRTY = """
WITH taken AS (
    DELETE FROM rollup_dirty WHERE bucket < date_trunc('hour', %s::timestamptz, 'UTC')
    RETURNING site, device, metric, bucket
)
INSERT INTO refresh_hours SELECT site, device, metric, bucket FROM taken
"""
ADD_NEXT_HOURS = """
INSERT INTO refresh_hours
SELECT d.site, d.device, d.metric, date_trunc('hour', n.ts, 'UTC')
FROM refresh_hours d
CROSS JOIN LATERAL (
    SELECT r.ts FROM readings r
    WHERE r.site = d.site AND r.device = d.device AND r.metric = d.metric
      AND r.ts >= d.bucket + INTERVAL '1 hour'
    ORDER BY r.ts LIMIT 1
) n
ON CONFLICT DO NOTHING;
"""

HOURLY_STATS = """
DELETE FROM readings_hourly h USING refresh_hours d
WHERE h.site = d.site AND h.device = d.device AND h.metric = d.metric AND h.bucket = d.bucket;
INSERT INTO readings_hourly (site, device, metric, bucket,
                             value_count, value_sum, value_min, value_max)
SELECT d.site, d.device, d.metric, d.bucket, count(*), sum(r.value), min(r.value), max(r.value)
FROM refresh_hours d
JOIN readings r ON r.site = d.site AND r.device = d.device AND r.metric = d.metric
     AND r.ts >= d.bucket AND r.ts < d.bucket + INTERVAL '1 hour'
GROUP BY d.site, d.device, d.metric, d.bucket;
"""

# Each difference between successive readings belongs to the bucket of the later one; the
# predecessor of a bucket's first reading is the last reading before the bucket. A drop is a
# reset (meter replaced or rolled over): it counts in `resets`, never as negative consumption.
# Readings of one ts (a gateway's millisecond) follow each other in seq order.
HOURLY_CONSUMPTION = """
DELETE FROM consumption_hourly h USING refresh_hours d
WHERE h.site = d.site AND h.device = d.device AND h.metric = d.metric AND h.bucket = d.bucket;
INSERT INTO consumption_hourly (site, device, metric, bucket, consumption, resets)
SELECT d.site, d.device, d.metric, d.bucket,
       coalesce(sum(greatest(x.value - x.prev, 0)), 0),
       count(*) FILTER (WHERE x.value < x.prev)
FROM refresh_hours d
CROSS JOIN LATERAL (
    SELECT s.ts, s.value, lag(s.value) OVER (ORDER BY s.ts, s.seq) AS prev
    FROM (
        (SELECT r.ts, r.seq, r.value FROM readings r
         WHERE r.site = d.site AND r.device = d.device AND r.metric = d.metric
           AND r.ts < d.bucket
         ORDER BY r.ts DESC, r.seq DESC LIMIT 1)
        UNION ALL
        (SELECT r.ts, r.seq, r.value FROM readings r
         WHERE r.site = d.site AND r.device = d.device AND r.metric = d.metric
           AND r.ts >= d.bucket AND r.ts < d.bucket + INTERVAL '1 hour')
    ) s
) x
WHERE x.ts >= d.bucket
GROUP BY d.site, d.device, d.metric, d.bucket;
"""

# The register summary of each hour (table register_hours, migration 0010): what the energy
# reports need of an hour once its raw rows are dropped by retention. Instants are distinct
# (the first seq of an instant, as the reports read them); values become numeric through their
# shortest decimal text, so the sums equal the reports' Decimal arithmetic on the raw values.
# Only intervals longer than the floor are kept (the gaps of any meter whose max_gap is at
# least the floor).
SUMMARY_INTERVAL_FLOOR = 600  # seconds
SUMMARISE_DELETE = """
DELETE FROM register_hours h USING refresh_hours d
WHERE h.site = d.site AND h.device = d.device AND h.metric = d.metric AND h.bucket = d.bucket
"""
SUMMARISE_INSERT = f"""
INSERT INTO register_hours (site, device, metric, bucket, first_ts, first_value, last_ts,
                            last_value, readings, consumption, resets, long_intervals)
SELECT d.site, d.device, d.metric, d.bucket,
       min(x.ts), (array_agg(x.value ORDER BY x.ts))[1],
       max(x.ts), (array_agg(x.value ORDER BY x.ts DESC))[1],
       count(*),
       coalesce(sum(x.num - x.prev_num) FILTER (WHERE x.num > x.prev_num), 0),
       coalesce(jsonb_agg(jsonb_build_array(extract(epoch FROM x.prev_ts), extract(epoch FROM x.ts),
                                            x.prev_value::text, x.value::text) ORDER BY x.ts)
                FILTER (WHERE x.num < x.prev_num), '[]'),
       coalesce(jsonb_agg(jsonb_build_array(extract(epoch FROM x.prev_ts), extract(epoch FROM x.ts))
                          ORDER BY x.ts)
                FILTER (WHERE x.ts - x.prev_ts > INTERVAL '{SUMMARY_INTERVAL_FLOOR} seconds'), '[]')
FROM refresh_hours d
CROSS JOIN LATERAL (
    SELECT y.ts, y.value, y.value::text::numeric AS num,
           lag(y.ts) OVER w AS prev_ts, lag(y.value) OVER w AS prev_value,
           lag(y.value::text::numeric) OVER w AS prev_num
    FROM (SELECT DISTINCT ON (r.ts) r.ts, r.value FROM readings r
          WHERE r.site = d.site AND r.device = d.device AND r.metric = d.metric
            AND r.ts >= d.bucket AND r.ts < d.bucket + INTERVAL '1 hour'
          ORDER BY r.ts, r.seq) y
    WINDOW w AS (ORDER BY y.ts)
) x
GROUP BY d.site, d.device, d.metric, d.bucket
"""

REFRESH_DAYS = """
CREATE TEMP TABLE IF NOT EXISTS refresh_days (
    site text COLLATE "C", device text COLLATE "C", metric text COLLATE "C",
    bucket timestamptz,
    PRIMARY KEY (site, device, metric, bucket)
) ON COMMIT DELETE ROWS;
TRUNCATE refresh_days;
INSERT INTO refresh_days
SELECT DISTINCT site, device, metric, date_trunc('day', bucket, 'UTC') FROM refresh_hours;
"""

DAILY_STATS = """
DELETE FROM readings_daily h USING refresh_days d
WHERE h.site = d.site AND h.device = d.device AND h.metric = d.metric AND h.bucket = d.bucket;
INSERT INTO readings_daily (site, device, metric, bucket,
                            value_count, value_sum, value_min, value_max)
SELECT d.site, d.device, d.metric, d.bucket, sum(h.value_count), sum(h.value_sum),
       min(h.value_min), max(h.value_max)
FROM refresh_days d
JOIN readings_hourly h ON h.site = d.site AND h.device = d.device AND h.metric = d.metric
     AND h.bucket >= d.bucket AND h.bucket < d.bucket + INTERVAL '1 day'
GROUP BY d.site, d.device, d.metric, d.bucket;
"""

DAILY_CONSUMPTION = """
DELETE FROM consumption_daily h USING refresh_days d
WHERE h.site = d.site AND h.device = d.device AND h.metric = d.metric AND h.bucket = d.bucket;
INSERT INTO consumption_daily (site, device, metric, bucket, consumption, resets)
SELECT d.site, d.device, d.metric, d.bucket, sum(h.consumption), sum(h.resets)
FROM refresh_days d
JOIN consumption_hourly h ON h.site = d.site AND h.device = d.device AND h.metric = d.metric
     AND h.bucket >= d.bucket AND h.bucket < d.bucket + INTERVAL '1 day'
GROUP BY d.site, d.device, d.metric, d.bucket;
"""


@dataclass(frozen=True, slots=True)
class RefreshResult:
    hours: int  # (series, hour) buckets recomputed
    days: int  # (series, day) buckets recomputed


def refresh_rollups(
    conn: psycopg.Connection[Any], *, now: dt.datetime | None = None
) -> RefreshResult:
    """Recomputes the hourly and daily rollups of every closed hour (before the hour of `now`,
    default the wall clock) written since the last refresh. The current hour stays marked
    until it closes — queries compute marked hours from raw rows — so a busy hour is rolled
    up about once, not at every refresh. Runs in the caller's transaction and does not commit:
    on rollback the marks come back and the next refresh does the work. Waits for a concurrent
    refresh to finish. Under TimescaleDB only the consumption tables and the register summaries
    are refreshed here; the continuous aggregates refresh by their policies."""
    native = storage_mode(conn) == "native"
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (REFRESH_LOCK_KEY,))
    conn.execute(PREPARE_HOURS)
    conn.execute(TAKE_DIRTY, (now or dt.datetime.now(dt.UTC),))
    conn.execute(ADD_NEXT_HOURS)
    hours_row = conn.execute("SELECT count(*) FROM refresh_hours").fetchone()
    hours = int(hours_row[0]) if hours_row else 0
    if hours == 0:
        return RefreshResult(0, 0)
    if native:
        conn.execute(HOURLY_STATS)
    conn.execute(HOURLY_CONSUMPTION)
    conn.execute(SUMMARISE_DELETE)
    conn.execute(SUMMARISE_INSERT)
    conn.execute(REFRESH_DAYS)
    if native:
        conn.execute(DAILY_STATS)
    conn.execute(DAILY_CONSUMPTION)
    days_row = conn.execute("SELECT count(*) FROM refresh_days").fetchone()
    return RefreshResult(hours, int(days_row[0]) if days_row else 0)
