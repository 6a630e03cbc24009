"""Versioned schema migrations.

Files in `store/migrations/` named `NNNN_name.sql` or `NNNN_name.py` are applied in
version order, each in its own transaction together with its row in `schema_migrations`, so a
failing migration leaves neither its changes nor its record. A `.py` migration defines
`upgrade(conn: psycopg.Connection) -> None`; a `.sql` migration is run as one script.

Several processes may start at once (service replicas, `clausewatch db upgrade` during a
deploy): a session-level advisory lock makes them take turns, and each applies only what the
others have not. Re-running is a no-op. Number ranges per area: docs/design.md.

After the migrations, every run brings ownership and privileges to the least-privilege state of
store/roles.py (the owner role owns everything, the service role holds exactly its rights). When
nothing is pending and that state is in place, a run changes nothing and needs no privilege:
the service's own login may call it at start.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from store.errors import MigrationError
from store.pool import connect
from store.roles import DatabaseRoles, ensure_least_privilege, ensure_roles

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(sql|py)$")
# Arbitrary constant shared by every clausewatch process: "the schema is being migrated".
ADVISORY_LOCK_KEY = 0x636C_6175_7365  # "clause"

SCHEMA_MIGRATIONS_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    path: Path

    def apply(self, conn: psycopg.Connection[Any]) -> None:
        """Runs the migration on `conn` inside the caller's transaction."""
        if self.path.suffix == ".sql":
            # No parameters: psycopg sends the script as one simple query, several statements.
            conn.execute(self.path.read_text(encoding="utf-8").encode())
            return
        spec = importlib.util.spec_from_file_location(
            f"clausewatch_migration_{self.version:04d}", self.path
        )
        if spec is None or spec.loader is None:
            raise MigrationError(f"{self.path}: cannot be loaded as a Python module")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        upgrade: Callable[[psycopg.Connection[Any]], None] | None = getattr(module, "upgrade", None)
        if upgrade is None:
            raise MigrationError(f"{self.path}: a Python migration must define upgrade(conn)")
        upgrade(conn)


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files in `directory`, in version order. Files that do not look like
    migrations (`__init__.py`, notes) are ignored; two files with one version are an error."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.iterdir()):
        match = FILE_NAME.match(path.name)
        if not match:
            continue
        version = int(match.group(1))
        if version in found:
            raise MigrationError(
                f"two migrations with version {version:04d}: {found[version].path.name} "
                f"and {path.name}"
            )
        found[version] = Migration(version, match.group(2), path)
    return [found[v] for v in sorted(found)]


def _has_schema_migrations(conn: psycopg.Connection[Any]) -> bool:
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    return bool(exists and exists[0])


def applied_versions(conn: psycopg.Connection[Any]) -> dict[int, str]:
    """Versions recorded in `schema_migrations` (empty when the table does not exist)."""
    if not _has_schema_migrations(conn):
        return {}
    rows = conn.execute("SELECT version, name FROM schema_migrations ORDER BY version")
    return {int(version): str(name) for version, name in rows}


def migrate(
    database_url: str,
    *,
    target: int | None = None,
    directory: Path = MIGRATIONS_DIR,
    roles: DatabaseRoles | None = None,
) -> list[Migration]:
    """Applies every pending migration up to `target` (all when None) and returns those it
    applied, in order, then `ensure_least_privilege` with `roles` (the default names when
    None) in a transaction of its own. Each migration commits on its own; when one fails its
    transaction is rolled back, the earlier ones stay applied, and the error propagates. Waits
    (without a timeout) for any other process migrating the same database.

    The login of `database_url` must be able to act for the owner role (a superuser, or a
    member of it) when anything is to change; roles are created when missing, which needs
    CREATEROLE. With a migration pending, `ensure_roles` also runs before the migrations (under
    TimescaleDB the owner role must log in before a migration adds a policy)."""
    migrations = discover(directory)
    applied: list[Migration] = []
    with connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        try:
            if not _has_schema_migrations(conn):
                conn.execute(SCHEMA_MIGRATIONS_DDL)
            done = applied_versions(conn)
            if any(
                m.version not in done and (target is None or m.version <= target)
                for m in migrations
            ):
                # Before the migrations too: under TimescaleDB a migration that adds a policy to
                # a hypertable the owner role already owns needs that role to log in.
                with conn.transaction():
                    ensure_roles(conn, roles or DatabaseRoles())
            for migration in migrations:
                if migration.version in done:
                    continue
                if target is not None and migration.version > target:
                    break
                with conn.transaction():
                    migration.apply(conn)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                applied.append(migration)
            with conn.transaction():
                ensure_least_privilege(conn, roles or DatabaseRoles())
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
    return applied


def schema_version(conn: psycopg.Connection[Any]) -> int | None:
    """The highest applied migration version, or None on an empty database."""
    versions = applied_versions(conn)
    return max(versions) if versions else None
