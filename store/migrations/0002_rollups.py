"""Hourly and daily rollups of readings.

`readings_hourly` / `readings_daily` hold count, sum, min and max per (site, device, metric,
UTC bucket): continuous aggregates under TimescaleDB, tables refreshed incrementally by
`store.rollups.refresh_rollups` in the native mode; same columns either way.
`consumption_hourly` / `consumption_daily` hold the consumption of registers (sum of positive
differences between successive readings, each difference counted in the bucket of its later
reading). That needs the previous reading across bucket edges — a window over the series,
which continuous aggregates do not allow — so these are tables refreshed by `refresh_rollups`
in both modes. `rollup_dirty` lists the hours written since the last refresh.
"""

from __future__ import annotations

from typing import Any

import psycopg

from store.mode import choose_mode

NATIVE_STATS = """
CREATE TABLE readings_{grain} (
    site        text COLLATE "C" NOT NULL,
    device      text COLLATE "C" NOT NULL,
    metric      text COLLATE "C" NOT NULL,
    bucket      timestamptz NOT NULL,
    value_count bigint NOT NULL,
    value_sum   double precision NOT NULL,
    value_min   double precision NOT NULL,
    value_max   double precision NOT NULL,
    PRIMARY KEY (site, device, metric, bucket)
)
"""

CAGG_STATS = """
CREATE MATERIALIZED VIEW readings_{grain}
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT site, device, metric, time_bucket(INTERVAL '{width}', ts) AS bucket,
       count(*) AS value_count, sum(value) AS value_sum,
       min(value) AS value_min, max(value) AS value_max
FROM readings
GROUP BY site, device, metric, time_bucket(INTERVAL '{width}', ts)
WITH NO DATA
"""

# Refresh windows reach back past the ingest's max age (7 days) so late rows still land in
# the materialisation; real-time aggregation (materialized_only = false) covers the newest.
CAGG_POLICIES = {
    "hourly": ("1 hour", "8 days", "1 hour", "30 minutes"),
    "daily": ("1 day", "9 days", "1 hour", "1 hour"),
}

CONSUMPTION = """
CREATE TABLE consumption_{grain} (
    site        text COLLATE "C" NOT NULL,
    device      text COLLATE "C" NOT NULL,
    metric      text COLLATE "C" NOT NULL,
    bucket      timestamptz NOT NULL,
    consumption double precision NOT NULL,
    resets      integer NOT NULL DEFAULT 0,  -- times the register went backwards
    PRIMARY KEY (site, device, metric, bucket)
)
"""

DIRTY = """
CREATE TABLE rollup_dirty (
    site   text COLLATE "C" NOT NULL,
    device text COLLATE "C" NOT NULL,
    metric text COLLATE "C" NOT NULL,
    bucket timestamptz NOT NULL,  -- UTC hour
    PRIMARY KEY (site, device, metric, bucket)
)
"""


def upgrade(conn: psycopg.Connection[Any]) -> None:
    row = conn.execute("SELECT mode FROM storage_mode").fetchone()
    mode = row[0] if row else choose_mode(conn)
    conn.execute(DIRTY)
    # Readings stored before this migration: mark their hours so the first refresh rolls
    # them up.
    conn.execute(
        "INSERT INTO rollup_dirty SELECT DISTINCT site, device, metric,"
        " date_trunc('hour', ts, 'UTC') FROM readings"
    )
    for grain in ("hourly", "daily"):
        conn.execute(CONSUMPTION.format(grain=grain))
        if mode == "native":
            conn.execute(NATIVE_STATS.format(grain=grain))
            conn.execute(f"CREATE INDEX readings_{grain}_bucket ON readings_{grain} (bucket)")
            continue
        width, start_offset, end_offset, every = CAGG_POLICIES[grain]
        conn.execute(CAGG_STATS.format(grain=grain, width=width))
        conn.execute(
            "SELECT add_continuous_aggregate_policy(%s::regclass, start_offset => %s::interval,"
            " end_offset => %s::interval, schedule_interval => %s::interval)",
            (f"readings_{grain}", start_offset, end_offset, every),
        )
