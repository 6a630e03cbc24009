"""The open run of every clause instance, as of each site's last checkpoint (issue 17).

An instance's compliance timeline is stored as intervals only when its status changes, so the
stretch in progress (an obligation overdue since last week, a room compliant since this
morning) is in no `compliance_intervals` row: it lives in the engine checkpoint. This table
holds it in a form the compliance figures can add up without decoding checkpoints: one row per
instance (clause version × subject) of each checkpoint part, replaced with the part by
`store.checkpoints.save_checkpoint` in the checkpoint's transaction. `since` is when the run
began; `known_until`, when set, is where a pending `for` / `clear_for` leaves the status
undecided (otherwise the run holds up to the checkpoint's watermark). Runs outside the schedule
are not kept. Times are the engine's epoch seconds (float8, like the watermark), written by
COPY; readers turn them into timestamps with `to_timestamp`, the very conversion that stored
the compliance intervals, so a run's start equals the start of the interval that closes it.

The rows of checkpoints saved before this migration are filled in from their parts here: a part
that does not change (a space whose obligation is overdue and quiet) may never be saved again.
"""

from __future__ import annotations

from typing import Any

import orjson
import psycopg

from store.checkpoints import save_open_runs

OPEN_RUNS = """
CREATE TABLE engine_open_runs (
    site           text NOT NULL,
    part           text NOT NULL,
    clause_id      text NOT NULL,
    clause_version integer NOT NULL,
    space          text NOT NULL,
    device         text NOT NULL,  -- '' for subjects that are a space
    status         text NOT NULL CHECK (status IN ('compliant', 'violating', 'not_assessable')),
    since          double precision NOT NULL,  -- epoch seconds
    known_until    double precision,
    PRIMARY KEY (site, part, clause_id, clause_version, space, device)
)
"""
BATCH = 500  # parts decoded per round trip while filling in


def upgrade(conn: psycopg.Connection[Any]) -> None:
    conn.execute(OPEN_RUNS)
    sites = [row[0] for row in conn.execute("SELECT site FROM engine_checkpoints ORDER BY site")]
    for site in sites:
        with conn.cursor(name="open_runs_fill") as cur:
            cur.execute("SELECT part, state FROM engine_checkpoint_parts WHERE site = %s", (site,))
            while rows := cur.fetchmany(BATCH):
                parts = {part: orjson.loads(state) for part, state in rows}
                save_open_runs(conn, site, parts, replaced=True)
