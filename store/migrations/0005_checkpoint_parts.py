"""Engine checkpoints in parts (engine snapshot format 3).

`engine_checkpoints` keeps the small header (clocks, pending events); this table holds one row
per device or space part, so a checkpoint rewrites only the parts changed since the previous one
instead of the whole engine. A part is the engine's JSON as bytes (orjson), not jsonb: nothing
queries inside it, and parsing megabytes of jsonb per second cost PostgreSQL more CPU than the
rest of the pipeline's writes. Parts of busy devices run to tens of kilobytes (rolling windows),
so they are compressed with lz4 where the server has it (PostgreSQL 14+ built with lz4), much
cheaper than the default pglz.

Checkpoints of the earlier whole-engine format are not understood by the new engine, which
starts fresh once (a half-elapsed duration then restarts; nothing stored is lost).
"""

from __future__ import annotations

from typing import Any

import psycopg

PARTS = """
CREATE TABLE engine_checkpoint_parts (
    site  text COLLATE "C" NOT NULL,
    part  text COLLATE "C" NOT NULL,
    state bytea NOT NULL,
    PRIMARY KEY (site, part)
)
"""


def upgrade(conn: psycopg.Connection[Any]) -> None:
    conn.execute(PARTS)
    if conn.info.server_version < 140000:
        return
    try:
        with conn.transaction():
            conn.execute(
                "ALTER TABLE engine_checkpoint_parts ALTER COLUMN state SET COMPRESSION lz4"
            )
    except psycopg.errors.FeatureNotSupported:
        pass  # a server built without lz4: the default compression
