"""Durable register summaries that outlive raw retention (issue 17).

Raw readings older than CLAUSEWATCH_RETENTION_DAYS are dropped; the energy and carbon reports
need registers across years. `register_hours` keeps, per (site, device, metric, UTC hour) with
readings, what the reports need of that hour to give the very figures they gave from the raw
rows: the first and last reading, the number of distinct instants, the sum of increases
between successive readings inside the hour (numeric, from the values' shortest decimal text,
as energy/accounting.py reads them), the resets inside the hour and the intervals inside it
longer than `store.rollups.SUMMARY_INTERVAL_FLOOR`. The rollup job maintains it from the dirty
hours (late readings included); retention never drops it.

`raw_retention` is one row: `retained_from` (raw readings are complete from this instant on;
NULL while nothing was dropped) and `summarised_from` (`register_hours` is complete from this
hour on; NULL: from the start). Readings stored before this migration are summarised here; the
earliest of them bounds both, since anything older may have been dropped by retention already.
"""

from __future__ import annotations

from typing import Any

import psycopg

from store.rollups import PREPARE_HOURS, SUMMARISE_DELETE, SUMMARISE_INSERT

REGISTER_HOURS = """
CREATE TABLE register_hours (
    site           text COLLATE "C" NOT NULL,
    device         text COLLATE "C" NOT NULL,
    metric         text COLLATE "C" NOT NULL,
    bucket         timestamptz NOT NULL,  -- UTC hour
    first_ts       timestamptz NOT NULL,
    first_value    double precision NOT NULL,
    last_ts        timestamptz NOT NULL,
    last_value     double precision NOT NULL,
    readings       integer NOT NULL,        -- distinct instants
    consumption    numeric NOT NULL,        -- sum of increases between successive readings
    resets         jsonb NOT NULL DEFAULT '[]',  -- [[prev epoch, epoch, before, after], ...]
    long_intervals jsonb NOT NULL DEFAULT '[]',  -- [[epoch, epoch], ...] above the floor
    PRIMARY KEY (site, device, metric, bucket)
)
"""

RAW_RETENTION = """
CREATE TABLE raw_retention (
    only_row        boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    retained_from   timestamptz,
    summarised_from timestamptz
)
"""


def upgrade(conn: psycopg.Connection[Any]) -> None:
    conn.execute(REGISTER_HOURS)
    conn.execute(RAW_RETENTION)
    conn.execute(
        "INSERT INTO raw_retention SELECT true, h, h"
        " FROM (SELECT date_trunc('hour', min(ts), 'UTC') AS h FROM readings) m"
    )
    conn.execute(PREPARE_HOURS)
    conn.execute(
        "INSERT INTO refresh_hours SELECT DISTINCT site, device, metric,"
        " date_trunc('hour', ts, 'UTC') FROM readings"
    )
    conn.execute(SUMMARISE_DELETE)
    conn.execute(SUMMARISE_INSERT)
