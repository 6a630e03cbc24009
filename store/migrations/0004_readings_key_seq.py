"""The readings key takes `seq` (SPEC §2: with seq the key is (device, seq)).

Migration 0001 made readings unique on (site, device, metric, ts): two readings of one device
with different seqs stamped in the same millisecond (a loaded edge gateway) collapsed into one,
a lost reading. The key becomes (site, device, metric, ts, seq) with NULLS NOT DISTINCT, so:
- a redelivered payload (same ts, same seq, or no seq at all) still meets its stored row and
  `ON CONFLICT DO NOTHING` absorbs it;
- readings with different seqs and one ts are all kept.
The key keeps `ts`, as unique keys of partitioned tables and hypertables must. Broker-stamped
readings keep their seq-window check (store/batches.py); their ts differ anyway.

PostgreSQL before 15 has no NULLS NOT DISTINCT: there the key is an expression index on
coalesce(seq, -1) (seqs are never negative, SPEC §2), which `ON CONFLICT DO NOTHING` (no
conflict target) uses the same way.

TimescaleDB refuses a new unique index on a hypertable with compression enabled, so in that
mode the compression policy is removed, compressed chunks decompressed, compression switched
off, the key replaced, then compression and its policy set up again as in 0001 (the policy
recompresses the old chunks on its next runs), ordered by (ts, seq) inside a segment: the key's
order, for which TimescaleDB otherwise warns at every migration (0009 sets it where this
migration ran with the order by ts alone).
"""

from __future__ import annotations

from typing import Any

import psycopg

from store.mode import storage_mode

COMPRESS_AFTER = "8 days"  # as in 0001
KEY_NULLS_NOT_DISTINCT = (
    "CREATE UNIQUE INDEX readings_key ON readings (site, device, metric, ts, seq)"
    " NULLS NOT DISTINCT"
)
KEY_COALESCE = (
    "CREATE UNIQUE INDEX readings_key ON readings (site, device, metric, ts, coalesce(seq, -1))"
)


def _replace_key(conn: psycopg.Connection[Any]) -> None:
    conn.execute("DROP INDEX readings_key")
    nulls_not_distinct = conn.info.server_version >= 150000
    conn.execute(KEY_NULLS_NOT_DISTINCT if nulls_not_distinct else KEY_COALESCE)


def upgrade(conn: psycopg.Connection[Any]) -> None:
    if storage_mode(conn) == "native":
        _replace_key(conn)
        return
    conn.execute("SELECT remove_compression_policy('readings'::regclass, if_exists => true)")
    conn.execute("SELECT decompress_chunk(c, if_compressed => true) FROM show_chunks('readings') c")
    conn.execute("ALTER TABLE readings SET (timescaledb.compress = false)")
    _replace_key(conn)
    conn.execute(
        "ALTER TABLE readings SET (timescaledb.compress,"
        " timescaledb.compress_segmentby = 'site, device, metric',"
        " timescaledb.compress_orderby = 'ts, seq')"
    )
    conn.execute(
        "SELECT add_compression_policy('readings'::regclass, compress_after => %s::interval)",
        (COMPRESS_AFTER,),
    )
