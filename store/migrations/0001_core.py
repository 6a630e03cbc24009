"""Core tables: readings, events, dead letters, compliance intervals, late readings, engine
checkpoints, and the storage mode. Readings and events are hypertables when TimescaleDB can
be created, else range-partitioned by `ts` into UTC days (see store/partitions.py)."""

from __future__ import annotations

from typing import Any

import psycopg

from store.mode import choose_mode

# Readings older than the ingest's max age (7 days by default) are dead letters, so chunks
# past 8 days only take redelivered duplicates: compress them then.
COMPRESS_AFTER = "8 days"

READINGS = """
CREATE TABLE readings (
    site           text COLLATE "C" NOT NULL,
    device         text COLLATE "C" NOT NULL,
    metric         text COLLATE "C" NOT NULL,
    ts             timestamptz NOT NULL,
    value          double precision NOT NULL,
    seq            bigint,
    received_at    timestamptz NOT NULL,
    broker_stamped boolean NOT NULL DEFAULT false
) {partitioning}
"""
# Ids are ASCII by the SPEC's pattern: the "C" collation compares them bytewise, which keeps the
# unique index (checked on every insert) and the rollup joins cheap. Equality with text columns
# of other tables works as usual; to ORDER BY across tables, name a collation.
# The dedupe key of a reading without seq (SPEC §2), and of every redelivered payload that
# carries its own ts. It includes ts, as unique keys of partitioned tables and hypertables must.
READINGS_INDEXES = """
CREATE UNIQUE INDEX readings_key ON readings (site, device, metric, ts);
-- Broker-stamped readings get a new ts on redelivery: their seq is the only stable key.
CREATE INDEX readings_broker_seq ON readings (site, device, seq)
    WHERE broker_stamped AND seq IS NOT NULL;
"""

EVENTS = """
CREATE TABLE events (
    site        text COLLATE "C" NOT NULL,
    device      text COLLATE "C" NOT NULL,
    ts          timestamptz NOT NULL,
    seq         bigint,
    type        text NOT NULL,
    space       text,
    actor       text,
    attrs       jsonb NOT NULL DEFAULT '{{}}',
    received_at timestamptz NOT NULL
) {partitioning}
"""
EVENTS_INDEXES = """
CREATE UNIQUE INDEX events_key ON events (site, device, type, ts);
CREATE INDEX events_space ON events (site, space, type, ts);
"""

ORDINARY = """
CREATE TABLE storage_mode (
    only_row   boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    mode       text NOT NULL CHECK (mode IN ('timescaledb', 'native')),
    chosen_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE dead_letters (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL,
    topic       text NOT NULL,
    payload     bytea NOT NULL,
    truncated   boolean NOT NULL DEFAULT false,
    reason      text NOT NULL,
    detail      text NOT NULL DEFAULT ''
);
CREATE INDEX dead_letters_received ON dead_letters (received_at);
CREATE INDEX dead_letters_reason ON dead_letters (reason, received_at);

CREATE TABLE compliance_intervals (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site           text NOT NULL,
    clause_id      text NOT NULL,
    clause_version integer NOT NULL,
    content_hash   text NOT NULL,
    space          text NOT NULL,
    device         text NOT NULL DEFAULT '',  -- '' for subjects that are a space
    start_ts       timestamptz NOT NULL,
    end_ts         timestamptz NOT NULL,
    status         text NOT NULL CHECK (status IN
                       ('compliant', 'violating', 'not_assessable', 'outside_schedule')),
    CHECK (end_ts >= start_ts)
);
-- Intervals of one subject never overlap, so the start identifies one: a replayed batch is
-- absorbed by ON CONFLICT DO NOTHING.
CREATE UNIQUE INDEX compliance_intervals_key
    ON compliance_intervals (site, clause_id, clause_version, space, device, start_ts);
CREATE INDEX compliance_intervals_site_time ON compliance_intervals (site, start_ts);
CREATE INDEX compliance_intervals_space ON compliance_intervals (site, space, start_ts);
CREATE INDEX compliance_intervals_clause ON compliance_intervals (clause_id, start_ts);

CREATE TABLE late_readings (
    site        text NOT NULL,
    device      text NOT NULL,
    metric      text NOT NULL,
    ts          timestamptz NOT NULL,
    detected_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site, device, metric, ts)
);

CREATE TABLE engine_checkpoints (
    site      text PRIMARY KEY,
    state     jsonb NOT NULL,
    watermark double precision,  -- engine time, epoch seconds
    saved_at  timestamptz NOT NULL DEFAULT now()
);
"""


def upgrade(conn: psycopg.Connection[Any]) -> None:
    mode = choose_mode(conn)
    conn.execute(ORDINARY)
    conn.execute("INSERT INTO storage_mode (mode) VALUES (%s)", (mode,))
    if mode == "native":
        conn.execute(READINGS.format(partitioning="PARTITION BY RANGE (ts)"))
        conn.execute(EVENTS.format(partitioning="PARTITION BY RANGE (ts)"))
        conn.execute(READINGS_INDEXES)
        conn.execute(EVENTS_INDEXES)
        return
    conn.execute(READINGS.format(partitioning=""))
    conn.execute(EVENTS.format(partitioning=""))
    conn.execute("SELECT create_hypertable('readings', by_range('ts', INTERVAL '1 day'))")
    conn.execute("SELECT create_hypertable('events', by_range('ts', INTERVAL '7 days'))")
    conn.execute(READINGS_INDEXES)
    conn.execute(EVENTS_INDEXES)
    conn.execute(
        "ALTER TABLE readings SET (timescaledb.compress,"
        " timescaledb.compress_segmentby = 'site, device, metric',"
        " timescaledb.compress_orderby = 'ts')"
    )
    conn.execute(
        "SELECT add_compression_policy('readings', compress_after => %s::interval)",
        (COMPRESS_AFTER,),
    )
    # No retention policy here: its days are a setting (CLAUSEWATCH_RETENTION_DAYS), read at
    # run time by the service (store/partitions.py, `ensure_retention_policy`). A policy made
    # here would freeze the value of the day the migration ran and overrule later changes.
