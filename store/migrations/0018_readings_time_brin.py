"""Under TimescaleDB, readings' time index is a BRIN index instead of a B-tree.

`create_hypertable` (0001) adds a B-tree on `ts DESC` that the native partitions never had: a
third index every reading is inserted into, which made the storage layer's writes cost 10–30%
more backend CPU than in native mode (docs/storage.md, "Writing"). Only scans by time alone
use it (the continuous aggregates' refresh, at most a few hours of a chunk), and readings come
in close to time order, so a BRIN index on `ts` finds the same pages for them at a fraction of
the insert cost and size. `autosummarize` summarises a filled page range without waiting for
a vacuum. The build reads the chunks not yet compressed (about the last 8 days of readings;
writes to readings wait for it); compressed chunks hold no rows in their own table. Nothing to
do in native mode.
"""

from __future__ import annotations

from typing import Any

import psycopg

from store.mode import storage_mode


def upgrade(conn: psycopg.Connection[Any]) -> None:
    if storage_mode(conn) == "native":
        return
    conn.execute("DROP INDEX IF EXISTS readings_ts_idx")
    conn.execute(
        "CREATE INDEX IF NOT EXISTS readings_ts_brin ON readings USING brin (ts)"
        " WITH (autosummarize = on)"
    )
