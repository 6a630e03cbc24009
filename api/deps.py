"""Request-scoped dependencies: the app's connection pool and one connection per request.

The pool lives on `app.state.pool` (opened by the app's lifespan, see api/app.py); nothing
here opens connections at import time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import psycopg
from fastapi import Depends, Request
from psycopg_pool import ConnectionPool


def get_pool(request: Request) -> ConnectionPool:
    pool: ConnectionPool = request.app.state.pool
    return pool


Pool = Annotated[ConnectionPool, Depends(get_pool)]


def get_conn(pool: Pool) -> Iterator[psycopg.Connection]:
    """A pooled connection for this request. Routes that write call `conn.commit()` themselves
    before answering, so a reported success is a committed one; anything uncommitted when the
    request ends is rolled back with the connection's return to the pool on error, or committed
    by the pool's context on success (reads only)."""
    with pool.connection() as conn:
        yield conn


DbConn = Annotated[psycopg.Connection, Depends(get_conn)]
