"""Engine checkpoints: one per site, a header and parts, with the engine's watermark.

The header (`engine_checkpoints.state`) is replaced on every save; parts
(`engine_checkpoint_parts`, one row per part name) are replaced one by one, so saving the parts
changed since the previous checkpoint costs in proportion to the change, not to the site.
`replace_parts` drops every part saved before (an engine that started afresh).

With the parts, the open run of every clause instance in them (`rules.runs`: status, since when,
and up to when it is decided) replaces that part's rows of `engine_open_runs`, in the same
transaction: the stretch each instance is in at the checkpoint's watermark, which no stored
compliance interval holds yet and which the compliance figures count (compliance/rates.py)
without decoding checkpoints. Runs outside the schedule are left out (they never count).

Save the checkpoint in the same transaction as the readings it covers (the writer's `on_flush`
hook runs inside that transaction): after a crash the stored state then matches the stored
data exactly, neither ahead of it nor behind.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg

from rules.runs import open_runs

# Parts go through a staging table by COPY, then one upsert: a few thousand changed devices
# per checkpoint cost one round trip, not one per part. The staging column compresses as the
# parts table's (lz4 where the server has it) and the upsert moves values still compressed: a
# staging column of its own would compress them with pglz, kept as is by the upsert, which
# took 2.7 times as long (1,000 parts of 17 KB: 360 ms instead of 130 ms).
PARTS_STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS engine_checkpoint_parts_staging (
    LIKE engine_checkpoint_parts {including}
) ON COMMIT DELETE ROWS
"""
PARTS_UPSERT = """
INSERT INTO engine_checkpoint_parts (site, part, state)
SELECT site, part, state FROM engine_checkpoint_parts_staging
ON CONFLICT (site, part) DO UPDATE SET state = excluded.state
"""
# One statement for every open run of the saved parts (arrays, one round trip); to_timestamp as
# in store.writes.write_compliance_intervals, so a run's start equals the stored start of the
# interval that later closes it.
OPEN_RUNS_INSERT = """
INSERT INTO engine_open_runs
    (site, part, clause_id, clause_version, space, device, status, since, known_until)
SELECT %s, part, clause_id, clause_version, space, device, status, to_timestamp(since),
       to_timestamp(known_until)
FROM unnest(%s::text[], %s::text[], %s::int4[], %s::text[], %s::text[], %s::text[], %s::float8[],
            %s::float8[]) AS u(part, clause_id, clause_version, space, device, status, since,
                               known_until)
"""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    site: str
    state: dict[str, Any]
    watermark: float | None  # engine time, epoch seconds
    saved_at: dt.datetime
    parts: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(
    conn: psycopg.Connection[Any],
    site: str,
    state: Mapping[str, Any],
    watermark: float | None,
    *,
    parts: Mapping[str, Any] | None = None,
    replace_parts: bool = False,
) -> None:
    """Replaces the checkpoint header of `site` and the given `parts` (all of them with
    `replace_parts`). Everything must be JSON-serialisable (orjson). No commit: it becomes
    visible when the caller's transaction commits, and a rollback keeps the previous
    checkpoint."""
    conn.execute(
        "INSERT INTO engine_checkpoints (site, state, watermark, saved_at)"
        " VALUES (%s, %s::jsonb, %s, now())"
        " ON CONFLICT (site) DO UPDATE SET state = excluded.state,"
        " watermark = excluded.watermark, saved_at = excluded.saved_at",
        (site, orjson.dumps(state).decode(), watermark),
    )
    if replace_parts:
        conn.execute("DELETE FROM engine_checkpoint_parts WHERE site = %s", (site,))
        conn.execute("DELETE FROM engine_open_runs WHERE site = %s", (site,))
    if not parts:
        return
    save_open_runs(conn, site, parts, replaced=replace_parts)
    with conn.cursor() as cur:
        # Per column compression methods came with PostgreSQL 14.
        compression = conn.info.server_version >= 140000
        cur.execute(
            PARTS_STAGING_DDL.format(including="INCLUDING COMPRESSION" if compression else "")
        )
        with cur.copy(
            "COPY engine_checkpoint_parts_staging (site, part, state) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["text", "text", "bytea"])
            dumps = orjson.dumps
            for name, part in parts.items():
                copy.write_row((site, name, dumps(part)))
        cur.execute(PARTS_UPSERT)
        # Emptied now, not at commit: the next site saved in this transaction stages its own.
        cur.execute("DELETE FROM engine_checkpoint_parts_staging")


def save_open_runs(
    conn: psycopg.Connection[Any], site: str, parts: Mapping[str, Any], *, replaced: bool = False
) -> int:
    """Replaces the open runs of `parts` (engine checkpoint parts: device and space states with
    their "instances"); `replaced`: the site's rows are gone already. Returns the rows written.
    No commit."""
    if not replaced:
        conn.execute(
            "DELETE FROM engine_open_runs WHERE site = %s AND part = ANY(%s)", (site, list(parts))
        )
    columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [], [])
    names, clauses, versions, spaces, devices, statuses, starts, known = columns
    for name, part in parts.items():
        for run in open_runs(part.get("instances") or {}):
            if run.status == "outside_schedule":
                continue
            names.append(name)
            clauses.append(run.clause_id)
            versions.append(run.version)
            spaces.append(run.space)
            devices.append(run.device)
            statuses.append(run.status)
            starts.append(run.start)
            known.append(run.known_until)
    if names:
        conn.execute(OPEN_RUNS_INSERT, (site, *columns))
    return len(names)


def load_checkpoint(conn: psycopg.Connection[Any], site: str) -> Checkpoint | None:
    """The last committed checkpoint of `site` (header and every part), or None when it never
    had one."""
    row = conn.execute(
        "SELECT state::text, watermark, saved_at FROM engine_checkpoints WHERE site = %s",
        (site,),
    ).fetchone()
    if row is None:
        return None
    parts = {
        name: orjson.loads(state)
        for name, state in conn.execute(
            "SELECT part, state FROM engine_checkpoint_parts WHERE site = %s", (site,)
        )
    }
    return Checkpoint(site, orjson.loads(row[0]), row[1], row[2], parts)
