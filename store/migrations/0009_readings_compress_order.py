"""Compressed readings are ordered by (ts, seq) inside each (site, device, metric) segment.

Migration 0004 put `seq` into the readings key but left the compression order at `ts` alone,
and TimescaleDB warned at every migration that `seq` should be used for ordering (a key lookup
in a compressed chunk, as `ON CONFLICT` makes, then cannot use the order to skip rows). 0004
now sets the order itself; this migration sets it on databases that ran the old 0004. Chunks
compressed already keep their order until the policy recompresses them (TimescaleDB applies a
changed order to later compressions). Nothing to do in native mode.
"""

from __future__ import annotations

from typing import Any

import psycopg

from store.mode import storage_mode

ORDER = "ts,seq"  # as timescaledb_information lists it


def upgrade(conn: psycopg.Connection[Any]) -> None:
    if storage_mode(conn) == "native":
        return
    row = conn.execute(
        "SELECT orderby FROM timescaledb_information.hypertable_compression_settings"
        " WHERE hypertable = 'readings'::regclass"
    ).fetchone()
    if row is not None and row[0] == ORDER:
        return
    conn.execute("ALTER TABLE readings SET (timescaledb.compress_orderby = 'ts, seq')")
