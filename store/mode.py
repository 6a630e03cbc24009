"""Which storage mode a database runs in: `timescaledb` (hypertables, compression and
retention policies, continuous aggregates) or `native` (declarative range partitions and rollup
tables maintained by `refresh_rollups`). Chosen once, by migration 0001, and recorded in
`storage_mode` so every later migration, query and `clausewatch db info` agrees."""

from __future__ import annotations

import os
from typing import Any, Literal

import psycopg

from store.errors import ModeError

Mode = Literal["timescaledb", "native"]
# Forces the native mode even where TimescaleDB is available (tests of the native path on a
# TimescaleDB server; operators who do not want the extension).
FORCE_NATIVE_ENV = "CLAUSEWATCH_STORAGE_NATIVE"

_cache: dict[str, Mode] = {}


def choose_mode(conn: psycopg.Connection[Any]) -> Mode:
    """`timescaledb` when the extension is installed and the server preloads it, then created
    (`CREATE EXTENSION IF NOT EXISTS` inside a savepoint); `native` otherwise. Runs in the
    caller's transaction.

    The preload is checked before the extension is created, not inferred from a failure:
    TimescaleDB installed but missing from `shared_preload_libraries` answers `CREATE
    EXTENSION` with a FATAL that ends the session, which no savepoint catches."""
    if os.environ.get(FORCE_NATIVE_ENV, "").lower() in {"1", "true", "yes"}:
        return "native"
    available = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    if not available or not timescaledb_preloaded(conn):
        return "native"
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.Error:
        return "native"
    return "timescaledb"


def timescaledb_preloaded(conn: psycopg.Connection[Any]) -> bool:
    """Whether the server loaded TimescaleDB's loader at start (`shared_preload_libraries`).

    Read from the setting the loader registers, not from `shared_preload_libraries` itself,
    which only superusers and members of pg_read_all_settings may read: a migration login is
    neither. A value for it in postgresql.conf without the loader stays a placeholder, which
    pg_settings does not list."""
    row = conn.execute(
        "SELECT 1 FROM pg_settings"
        " WHERE name = 'timescaledb.max_background_workers' AND vartype = 'integer'"
    ).fetchone()
    return row is not None


def storage_mode(conn: psycopg.Connection[Any]) -> Mode:
    """The recorded mode of the database behind `conn` (cached per database and server)."""
    info = conn.info
    key = f"{info.host}:{info.port}/{info.dbname}"
    mode = _cache.get(key)
    if mode is None:
        exists = conn.execute("SELECT to_regclass('storage_mode') IS NOT NULL").fetchone()
        row = None
        if exists and exists[0]:
            row = conn.execute("SELECT mode FROM storage_mode").fetchone()
        if row is None:
            raise ModeError("no storage mode recorded: run `clausewatch db upgrade` first")
        mode = "timescaledb" if row[0] == "timescaledb" else "native"
        _cache[key] = mode
    return mode
