"""Retention policies are the service's, not the schema's.

Migration 0001 used to read CLAUSEWATCH_RETENTION_DAYS while it ran and make TimescaleDB
retention policies of it for `readings` and `events`: the value of that day was frozen, and a
later change of the setting was silently overruled by the policy. 0001 no longer makes them;
this removes those it made in databases migrated before. The service sets the policies from the
setting at start and daily (store/partitions.py, `ensure_retention_policy`, called by
`apply_retention`), replacing them when the setting changes. Native mode: nothing to do (the
retention job drops partitions with the days it is given).
"""

from __future__ import annotations

from typing import Any

import psycopg

from store.mode import storage_mode


def upgrade(conn: psycopg.Connection[Any]) -> None:
    if storage_mode(conn) != "timescaledb":
        return
    for table in ("readings", "events"):
        conn.execute("SELECT remove_retention_policy(%s::regclass, if_exists => true)", (table,))
