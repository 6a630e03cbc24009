"""Least privilege: migrations make the owner role own the schema; the service acts as a role that
appends to the ledger but can neither change it nor switch its protection off (issue 18).

The refusals are asked of the connection the service itself makes (`Service.database_url`), with
one superuser URL given, as in the demo and the tests, and of a login of the service role's own,
as in production."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from clausewatch.service import Service
from clausewatch.settings import Settings
from config.files import LoadedConfig
from store import ledger
from store.errors import MigrationError
from store.migrate import migrate
from store.mode import storage_mode
from store.partitions import apply_retention, ensure_partitions, existing_days
from store.pool import connect
from store.roles import (
    DEFAULT_OWNER_ROLE,
    DEFAULT_SERVICE_ROLE,
    DatabaseRoles,
    as_role,
    plan_privileges,
)
from tests.support import throwaway_database

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 7, 1, tzinfo=dt.UTC)

# Each would let whoever holds the service's connection rewrite history unseen.
REFUSED = {
    "update the ledger": "UPDATE ledger SET payload = '{}'",
    "delete from the ledger": "DELETE FROM ledger",
    "truncate the ledger": "TRUNCATE ledger",
    "disable its triggers": "ALTER TABLE ledger DISABLE TRIGGER ALL",
    "disable its append-only trigger": "ALTER TABLE ledger DISABLE TRIGGER ledger_append_only",
    "drop its trigger": "DROP TRIGGER ledger_append_only ON ledger",
    "replace its trigger function": "CREATE OR REPLACE FUNCTION cw_ledger_append_only()"
    " RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
    "skip triggers for the session": "SET session_replication_role = replica",
    "take the ledger over": f"ALTER TABLE ledger OWNER TO {DEFAULT_SERVICE_ROLE}",
    "drop the ledger": "DROP TABLE ledger",
    "rewrite the timeline": "UPDATE alert_timeline SET note = 'fine'",
    "delete from the timeline": "DELETE FROM alert_timeline",
    "remove anchors": "DELETE FROM ledger_anchors",
    "rewrite the schema history": "DELETE FROM schema_migrations",
    "create tables": "CREATE TABLE shadow (x int)",
}


# With a login of its own the service cannot become anyone else either. (With one superuser URL
# it can: docs/storage.md, "Roles", says what that mode is for.)
ESCAPES = {
    "become the owner": f"SET ROLE {DEFAULT_OWNER_ROLE}",
    "become a superuser": "SET ROLE postgres",
    "change the session's user": "SET SESSION AUTHORIZATION postgres",
}


@pytest.fixture(scope="module")
def migrated(pg_server_url: str) -> Iterator[str]:
    """A migrated database with one ledger entry, as the superuser that ran the migrations."""
    with throwaway_database(pg_server_url, "cw_roles") as url:
        migrate(url)
        with connect(url) as conn:
            ledger.append(conn, [ledger.Entry("test.step", "thing:1", {"n": 1})], T0)
        yield url


def service_url(url: str) -> str:
    """What the service connects with when it is given the one (superuser) URL `url`."""
    settings = Settings(database_url=url, mqtt_url="mqtt://127.0.0.1:1")
    return Service(settings, LoadedConfig(sites={}, clause_files={})).database_url


@pytest.mark.parametrize("statement", REFUSED.values(), ids=REFUSED.keys())
def test_the_service_connection_is_refused_what_would_change_history(
    migrated: str, statement: str
) -> None:
    with (
        connect(service_url(migrated), autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(statement)
    with connect(migrated) as conn:
        assert ledger.verify(conn).ok


def test_the_service_connection_appends_to_the_ledger_and_verifies_it(migrated: str) -> None:
    with connect(service_url(migrated)) as conn:
        (user,) = conn.execute("SELECT current_user").fetchone() or (None,)
        assert user == DEFAULT_SERVICE_ROLE
        (seq,) = ledger.append(conn, [ledger.Entry("test.step", "thing:2", {"n": 2})], T0)
        conn.commit()
        verdict = ledger.verify(conn)
    assert verdict.ok and verdict.tip_seq == seq


def test_the_owner_role_owns_every_table_sequence_and_function(migrated: str) -> None:
    with connect(migrated) as conn:
        others = conn.execute(
            "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c"
            " WHERE c.relnamespace = 'public'::regnamespace"
            " AND c.relkind IN ('r', 'p', 'S', 'v', 'm')"
            " AND pg_get_userbyid(c.relowner) <> %s"
            " UNION ALL SELECT p.proname, pg_get_userbyid(p.proowner) FROM pg_proc p"
            " WHERE p.pronamespace = 'public'::regnamespace AND pg_get_userbyid(p.proowner) <> %s"
            " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')",
            (DEFAULT_OWNER_ROLE, DEFAULT_OWNER_ROLE),
        ).fetchall()
        assert others == []
        assert plan_privileges(conn, Settings().database_roles()) == []
        flags = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles"
            " WHERE rolname = %s",
            (DEFAULT_SERVICE_ROLE,),
        ).fetchone()
        assert flags == (False, False, False, False)


def test_the_service_connection_keeps_day_partitions_through_the_owners_functions(
    migrated: str,
) -> None:
    with connect(migrated) as conn:
        if storage_mode(conn) != "native":
            pytest.skip("TimescaleDB makes its chunks itself")
    day = dt.date(2020, 1, 1)
    with connect(service_url(migrated)) as conn:
        created = ensure_partitions(conn, 1, today=day)
        assert set(created) >= {"readings_p20200101", "events_p20200102"}
        conn.commit()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(
                "CREATE TABLE readings_p20200103 PARTITION OF readings FOR VALUES"
                " FROM ('2020-01-03') TO ('2020-01-04')"
            )
        conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT cw_drop_partition('ledger', '2020-01-01')")
        conn.rollback()
        apply_retention(conn, 30, today=day + dt.timedelta(days=60))
        conn.commit()
        assert not {day, day + dt.timedelta(days=1)} & existing_days(conn, "readings")


def test_a_login_of_the_service_role_cannot_step_out_of_it(migrated: str) -> None:
    """Production: the service logs in as a role of its own, a member of the service role.
    `SET ROLE NONE` then leads back to that login, which holds nothing more."""
    login = f"cw_test_login_{uuid.uuid4().hex[:10]}"
    parts = urlsplit(migrated)
    login_url = urlunsplit(parts._replace(netloc=f"{login}@{parts.hostname}:{parts.port}"))
    with connect(migrated, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {login} LOGIN IN ROLE {DEFAULT_SERVICE_ROLE}")
    try:
        with connect(login_url, autocommit=True) as conn:
            ledger.append(conn, [ledger.Entry("test.step", "thing:3", {"n": 3})], T0)
            for statement in ESCAPES.values():
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)
            conn.execute("SET ROLE NONE")  # back to the login: no more than the service role
            for statement in REFUSED.values():
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)
    finally:
        with connect(migrated, autocommit=True) as admin:
            admin.execute(f"DROP ROLE {login}")
    with connect(migrated) as conn:
        assert ledger.verify(conn).ok


def test_the_service_login_may_start_on_a_current_schema_without_any_privilege(
    migrated: str,
) -> None:
    """Nothing pending and everything in place: migrate changes nothing, so the service may run
    it with its own login (`clausewatch db upgrade` ran with the owner's at deploy)."""
    assert migrate(service_url(migrated)) == []


def test_migrations_and_the_service_may_use_two_urls(migrated: str) -> None:
    settings = Settings(
        database_url=service_url(migrated),
        migration_database_url=migrated,
        mqtt_url="mqtt://127.0.0.1:1",
    )
    service = Service(settings, LoadedConfig(sites={}, clause_files={}))
    assert service.migration_url == migrated
    with connect(service.database_url) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (DEFAULT_SERVICE_ROLE,)


def test_with_a_migration_pending_the_service_login_is_refused(pg_server_url: str) -> None:
    with throwaway_database(pg_server_url, "cw_roles") as url:
        migrate(url, target=24)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            migrate(service_url(url))


def deployer(server_url: str, suffix: str) -> tuple[str, str, str]:
    """The name of a deployment login, of a database it is to own, and that login's URL for it
    (neither made here)."""
    login = f"cw_test_deployer_{suffix}"
    database = f"{login}_db"
    parts = urlsplit(server_url)
    login_url = urlunsplit(
        parts._replace(netloc=f"{login}@{parts.hostname}:{parts.port}", path=f"/{database}")
    )
    return login, database, login_url


def test_a_login_that_is_a_member_of_the_owner_role_may_run_the_migrations(
    pg_server_url: str, migrated: str, timescale_server_status: str | None
) -> None:
    """No superuser needed to deploy: the database's owner, a member of the owner role (the
    roles made beforehand, here by the `migrated` fixture), migrates and hands everything over."""
    login, database, login_url = deployer(pg_server_url, uuid.uuid4().hex[:10])
    parts = urlsplit(pg_server_url)
    with psycopg.connect(pg_server_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {login} LOGIN IN ROLE {DEFAULT_OWNER_ROLE}")
        admin.execute(f"CREATE DATABASE {database} OWNER {login}")
    try:
        pending = True
        if timescale_server_status is None:
            # Handing hypertables over hands their chunks over too, in TimescaleDB's schema,
            # where only the administrator can let the owner role create.
            with pytest.raises(MigrationError, match="GRANT CREATE ON SCHEMA _timescaledb_int"):
                migrate(login_url)
            admin_url = urlunsplit(parts._replace(path=f"/{database}"))
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(
                    f"GRANT CREATE ON SCHEMA _timescaledb_internal TO {DEFAULT_OWNER_ROLE}"
                )
            pending = False  # the migrations are in: only the hand-over was refused
        assert bool(migrate(login_url)) == pending
        with connect(login_url) as conn:
            row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            assert row.fetchone() == (False,)
            assert plan_privileges(conn, Settings().database_roles()) == []
        superuser_url = urlunsplit(parts._replace(path=f"/{database}"))
        with connect(service_url(superuser_url), autocommit=True) as conn:
            ledger.append(conn, [ledger.Entry("test.step", "thing:1", {})], T0)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("ALTER TABLE ledger DISABLE TRIGGER ALL")
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            admin.execute(f"DROP ROLE IF EXISTS {login}")


@contextmanager
def own_roles_and_database(server_url: str) -> Iterator[tuple[DatabaseRoles, str]]:
    """Role names of the test's own (the shared ones are cluster-wide and used by other tests at
    the same time) and the URL of an empty database; drops the database, then the roles."""
    suffix = uuid.uuid4().hex[:10]
    roles = DatabaseRoles(owner=f"cw_test_owner_{suffix}", service=f"cw_test_service_{suffix}")
    database = f"cw_roles_own_{suffix}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {database}")
    try:
        yield roles, urlunsplit(urlsplit(server_url)._replace(path=f"/{database}"))
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            for role in (roles.owner, roles.service):
                admin.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.mark.timescale
def test_under_timescaledb_an_owner_role_that_cannot_log_in_is_given_login_without_password(
    timescale_server: str,
) -> None:
    """TimescaleDB runs retention, compression and aggregate refresh as the hypertable's owner in
    a background worker, which needs a role that can log in."""
    with own_roles_and_database(timescale_server) as (roles, url):
        with psycopg.connect(timescale_server, autocommit=True) as admin:
            admin.execute(f"CREATE ROLE {roles.owner} NOLOGIN")
        migrate(url, roles=roles)
        with connect(url) as conn:
            row = conn.execute(
                "SELECT rolcanlogin, rolpassword IS NULL FROM pg_authid WHERE rolname = %s",
                (roles.owner,),
            ).fetchone()
            assert row == (True, True)
            assert plan_privileges(conn, roles) == []
        with connect(as_role(url, roles.service), autocommit=True) as conn:
            conn.execute("SELECT cw_set_retention_policy('readings', '30 days')")
            for statement in REFUSED.values():
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)
        # Idempotent: the second run finds everything in place.
        assert migrate(url, roles=roles) == []


@pytest.mark.timescale
def test_under_timescaledb_a_login_that_may_not_let_the_owner_log_in_gets_a_clear_error(
    timescale_server: str,
) -> None:
    pg_server_url = timescale_server
    suffix = uuid.uuid4().hex[:10]
    roles = DatabaseRoles(owner=f"cw_test_owner_{suffix}", service=f"cw_test_service_{suffix}")
    login, database, login_url = deployer(pg_server_url, suffix)
    with psycopg.connect(pg_server_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {roles.owner} NOLOGIN")
        admin.execute(f"CREATE ROLE {roles.service} NOLOGIN")
        admin.execute(f"CREATE ROLE {login} LOGIN IN ROLE {roles.owner}")
        admin.execute(f"CREATE DATABASE {database} OWNER {login}")
    try:
        with pytest.raises(MigrationError, match=f"ALTER ROLE {roles.owner} LOGIN"):
            migrate(login_url, target=1, roles=roles)
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            for role in (login, roles.owner, roles.service):
                admin.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.mark.timescale
def test_under_timescaledb_the_owner_may_log_in_before_pending_migrations_add_policies(
    timescale_server: str,
) -> None:
    """A deployment made while the owner role was NOLOGIN: its next upgrade adds policies to
    hypertables the owner role already owns, so the role must log in before the migrations."""
    with own_roles_and_database(timescale_server) as (roles, url):
        migrate(url, target=3, roles=roles)  # readings is the owner role's from here on
        with psycopg.connect(timescale_server, autocommit=True) as admin:
            admin.execute(f"ALTER ROLE {roles.owner} NOLOGIN")
        assert migrate(url, roles=roles)  # 0004 adds a compression policy to readings
        with connect(url) as conn:
            assert plan_privileges(conn, roles) == []
