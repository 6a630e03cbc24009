"""Connections and pools.

Every connection the storage layer opens runs with the session time zone UTC, so that
`date_trunc` and casts between timestamps and dates never depend on a server's local setting.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

# A stalled server must not hang the service forever; long enough for a loaded 2-core machine.
CONNECT_TIMEOUT_S = 10
# Set at connection start: no statement, so no transaction is left open by it.
SESSION_OPTIONS = "-c TimeZone=UTC"


def session_options(database_url: str) -> str:
    """The URL's own `options` (such as the role of store.roles.as_role) followed by ours."""
    given = conninfo_to_dict(database_url).get("options")
    return f"{given} {SESSION_OPTIONS}" if given else SESSION_OPTIONS


def connect(database_url: str, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    """A new connection with the session time zone set to UTC. The caller closes it (use it as
    a context manager: it commits on normal exit and rolls back on an exception)."""
    return psycopg.connect(
        database_url,
        autocommit=autocommit,
        connect_timeout=CONNECT_TIMEOUT_S,
        options=session_options(database_url),
    )


def make_pool(
    database_url: str, *, min_size: int = 1, max_size: int = 4, name: str = "clausewatch"
) -> ConnectionPool[Any]:
    """A long-lived pool whose connections use UTC. Use it as a context manager (`with
    make_pool(url) as pool:`) so it is closed; `pool.connection()` commits on normal exit and
    rolls back on an exception."""
    return ConnectionPool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        name=name,
        kwargs={"connect_timeout": CONNECT_TIMEOUT_S, "options": session_options(database_url)},
        open=True,
    )


def ping(conn: psycopg.Connection[Any]) -> None:
    """A round trip to the server (liveness); raises psycopg.Error when it does not answer."""
    conn.execute("SELECT 1")
