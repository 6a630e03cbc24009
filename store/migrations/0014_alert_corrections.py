"""Late input re-judged (issue 17): an alert that in-order judging would not have raised, or
whose span changed, is corrected, never deleted: a `corrected` timeline row (with its ledger
entry, `alert.corrected`) records the state and end it was given, and why.

The alert tables come with 0020, after this number: a database made before this migration has
them and gets the wider check here; a new one gets it from 0020 itself.
"""

from __future__ import annotations

from typing import Any

import psycopg

ACTIONS = (
    "'raised', 'escalated', 'acknowledged', 'resolved', 'reopened', 'closed', 'notified',"
    " 'corrected'"
)


def upgrade(conn: psycopg.Connection[Any]) -> None:
    row = conn.execute("SELECT to_regclass('alert_timeline') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return
    conn.execute("ALTER TABLE alert_timeline DROP CONSTRAINT alert_timeline_action_check")
    conn.execute(
        "ALTER TABLE alert_timeline ADD CONSTRAINT alert_timeline_action_check"
        f" CHECK (action IN ({ACTIONS}))"
    )
