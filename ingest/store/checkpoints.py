"""Engine checkpoints: one per site, the engine's `snapshot()` and its watermark.

Save the checkpoint in the same transaction as the readings it covers (the writer's `on_flush`
hook runs inside that transaction): after a crash the stored state then matches the stored
data exactly, neither ahead of it nor behind.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg


@dataclass(frozen=True, slots=True)
class Checkpoint:
    site: str
    state: dict[str, Any]
    watermark: float | None  # engine time, epoch seconds
    saved_at: dt.datetime


def save_checkpoint(
    conn: psycopg.Connection[Any], site: str, state: dict[str, Any], watermark: float | None
) -> None:
    """Replaces the checkpoint of `site`. `state` must be JSON-serialisable (orjson). No
    commit: it becomes visible when the caller's transaction commits, and a rollback keeps the
    previous checkpoint."""
    conn.execute(
        "INSERT INTO engine_checkpoints (site, state, watermark, saved_at)"
        " VALUES (%s, %s::jsonb, %s, now())"
        " ON CONFLICT (site) DO UPDATE SET state = excluded.state,"
        " watermark = excluded.watermark, saved_at = excluded.saved_at",
        (site, orjson.dumps(state).decode(), watermark),
    )


def load_checkpoint(conn: psycopg.Connection[Any], site: str) -> Checkpoint | None:
    """The last committed checkpoint of `site`, or None when it never had one."""
    row = conn.execute(
        "SELECT state::text, watermark, saved_at FROM engine_checkpoints WHERE site = %s",
        (site,),
    ).fetchone()
    if row is None:
        return None
    return Checkpoint(site, orjson.loads(row[0]), row[1], row[2])
