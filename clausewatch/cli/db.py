"""`clausewatch db upgrade` and `clausewatch db info` (see clausewatch/cli.py).

`db upgrade` runs as the migration login: --database-url, else CLAUSEWATCH_MIGRATION_DATABASE_URL,
else CLAUSEWATCH_DATABASE_URL. Every run also puts ownership and the service role's privileges in
place (store/roles.py), so it is also how a change of the role settings is applied."""

from __future__ import annotations

import argparse
import sys

import psycopg
from psycopg import sql

from clausewatch.cli import Commands
from clausewatch.cli.common import database_argument, database_url, url_arguments
from clausewatch.settings import Settings
from store.errors import MigrationError
from store.migrate import applied_versions, discover, migrate
from store.mode import storage_mode
from store.pool import connect
from store.roles import plan_privileges

# Tables whose row counts `db info` shows (those that exist).
COUNTED_TABLES = (
    "readings",
    "events",
    "dead_letters",
    "compliance_intervals",
    "late_readings",
    "engine_checkpoints",
    "readings_hourly",
    "readings_daily",
    "consumption_hourly",
    "consumption_daily",
    "alerts",
    "ledger",
)


def upgrade(args: argparse.Namespace) -> int:
    settings = Settings()
    given = args.database_url or args.database_url_file
    if not given and settings.migration_database_url:
        args.database_url = settings.migration_database_url
    url = database_url(args)
    try:
        applied = migrate(url, roles=settings.database_roles())
    except (psycopg.Error, MigrationError) as exc:
        print(f"migration failed: {exc}", file=sys.stderr)
        return 1
    for migration in applied:
        print(f"applied {migration.version:04d} {migration.name}")
    if not applied:
        print("schema is up to date")
    return 0


def info(args: argparse.Namespace) -> int:
    url = database_url(args)
    try:
        with connect(url) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            print(f"postgresql:     {row[0] if row else '?'}")
            versions = applied_versions(conn)
            known = {m.version for m in discover()}
            if not versions:
                print("schema version: none (run `clausewatch db upgrade`)")
                return 0
            pending = sorted(known - set(versions))
            print(f"schema version: {max(versions):04d} ({len(versions)} migrations applied)")
            if pending:
                print("pending:        " + ", ".join(f"{v:04d}" for v in pending))
            mode = storage_mode(conn)
            ext = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
            ).fetchone()
            label = f"timescaledb {ext[0]}" if mode == "timescaledb" and ext else "native"
            print(f"storage mode:   {label}")
            roles = Settings().database_roles()
            pending_grants = len(plan_privileges(conn, roles))
            print(
                f"roles:          owner {roles.owner}, service {roles.service}: "
                + (
                    "in place"
                    if not pending_grants
                    else f"{pending_grants} changes pending (run `clausewatch db upgrade`)"
                )
            )
            print("rows:")
            for table in COUNTED_TABLES:
                exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
                if exists and exists[0]:
                    count = conn.execute(
                        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
                    ).fetchone()
                    print(f"  {table:<22} {count[0] if count else 0}")
    except psycopg.Error as exc:
        print(f"cannot read the database: {exc}", file=sys.stderr)
        return 1
    return 0


def register(commands: Commands) -> None:
    upgrade_parser = commands.add(
        "db upgrade",
        "apply pending schema migrations and put the roles' ownership and privileges in place",
    )
    url_arguments(
        upgrade_parser,
        "database",
        "the migration login's PostgreSQL URL (default: CLAUSEWATCH_MIGRATION_DATABASE_URL, "
        "else CLAUSEWATCH_DATABASE_URL, or their _FILE)",
    )
    upgrade_parser.set_defaults(func=upgrade)
    info_parser = commands.add(
        "db info",
        "show PostgreSQL version, storage mode, schema version, roles, row counts",
    )
    database_argument(info_parser)
    info_parser.set_defaults(func=info)
