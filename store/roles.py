"""Least privilege in PostgreSQL: who owns the schema and what the service may do with it.

Two roles, cluster-wide, created when missing (NOLOGIN; under TimescaleDB the owner role can log
in, without a password, because TimescaleDB runs its policy jobs as the hypertable's owner):

- the owner role (`clausewatch_owner`) owns every table, view, sequence and function of the
  schema. Migrations run as a login that can act for it (a superuser, or a member of it); after
  each run `ensure_least_privilege` hands whatever the migrations created over to it.
- the service role (`clausewatch_service`) is what the service acts as. It owns nothing, is
  not a superuser and is not a member of the owner role, so `ALTER TABLE`, `DISABLE TRIGGER`,
  `DROP`, `TRUNCATE` and `SET session_replication_role` are refused to it. It may read and
  write the tables it maintains, but only read and append (`SELECT`, `INSERT`) where rows are
  history (`APPEND_ONLY_TABLES`: the ledger, its anchors, the alert timeline), and only read
  `schema_migrations`. The one piece of DDL the service needs at run time, day partitions of
  readings and events, goes through SECURITY DEFINER functions owned by the owner role
  (migration 0025) that do exactly that and nothing else.

`as_role(url, role)` gives a connection string whose sessions act as a role (`-c role=...` at
connection start): with a single superuser URL (the demo, the tests) the service connects with
it and acts as the service role from the first statement. docs/storage.md, "Roles", says what
that does and does not protect against, and how production gives the service a login of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from store.errors import MigrationError

DEFAULT_OWNER_ROLE = "clausewatch_owner"
DEFAULT_SERVICE_ROLE = "clausewatch_service"
ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# Rows that are history: the service appends and reads, never changes or removes.
APPEND_ONLY_TABLES = frozenset({"ledger", "ledger_anchors", "alert_timeline"})
# The service reads these only.
READ_ONLY_TABLES = frozenset({"schema_migrations"})
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")
SEQUENCE_PRIVILEGES = ("SELECT", "USAGE")


@dataclass(frozen=True, slots=True)
class DatabaseRoles:
    """The names of the two roles (settings `CLAUSEWATCH_DATABASE_OWNER_ROLE` and
    `CLAUSEWATCH_DATABASE_SERVICE_ROLE`)."""

    owner: str = DEFAULT_OWNER_ROLE
    service: str = DEFAULT_SERVICE_ROLE

    def __post_init__(self) -> None:
        for name in (self.owner, self.service):
            if not ROLE_NAME.match(name):
                raise ValueError(f"{name!r} is not a role name ([a-z_][a-z0-9_]*, 63 at most)")
        if self.owner == self.service:
            raise ValueError("the owner role and the service role must be two roles")


def as_role(database_url: str, role: str) -> str:
    """A connection string for the database of `database_url` whose sessions act as `role`
    from the start (`options=-c role=...`, kept with any options already given). The login
    must be `role` itself, a member of it, or a superuser. The result is a libpq key=value
    string: it carries the URL's password, so log it only redacted."""
    if not ROLE_NAME.match(role):
        raise ValueError(f"{role!r} is not a role name")
    params = conninfo_to_dict(database_url)
    options = str(params.get("options") or "")
    options = re.sub(r"(^|\s)-c\s*role=\S+", " ", options).strip()
    params["options"] = f"{options} -c role={role}".strip()
    return make_conninfo("", **params)


def expected_table_privileges(table: str) -> tuple[str, ...]:
    if table in READ_ONLY_TABLES:
        return ("SELECT",)
    if table in APPEND_ONLY_TABLES:
        return ("SELECT", "INSERT")
    return TABLE_PRIVILEGES


def ensure_roles(conn: psycopg.Connection[Any], roles: DatabaseRoles) -> list[str]:
    """Creates the roles that do not exist yet and returns their names; checks that the service
    role cannot step around its privileges (superuser, BYPASSRLS, member of the owner role),
    raising MigrationError if it can. Safe against another database of the same cluster creating
    or changing the same role at the same moment.

    Both are created NOLOGIN, except the owner role in a database with TimescaleDB: TimescaleDB
    runs retention, compression and aggregate refresh as the hypertable's owner in a background
    worker, which it refuses to start for a role that cannot log in. There the owner role is
    created with LOGIN (and no password), and an existing NOLOGIN owner role is given LOGIN
    (needs a superuser or CREATEROLE; MigrationError otherwise)."""
    timescale = _has_timescaledb(conn)
    created: list[str] = []
    for name in (roles.owner, roles.service):
        if _role_exists(conn, name):
            continue
        login = "LOGIN" if timescale and name == roles.owner else "NOLOGIN"
        try:
            with conn.transaction():
                conn.execute(
                    sql.SQL("CREATE ROLE {} {}").format(sql.Identifier(name), sql.SQL(login))
                )
            created.append(name)
        except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
            pass  # made meanwhile by a migration of another database on this server
    if timescale:
        _let_log_in(conn, roles.owner)
    row = conn.execute(
        "SELECT rolsuper, rolbypassrls, pg_has_role(%s, %s, 'MEMBER') FROM pg_roles"
        " WHERE rolname = %s",
        (roles.service, roles.owner, roles.service),
    ).fetchone()
    assert row is not None
    if any(row):
        raise MigrationError(
            f"the service role {roles.service} must not be a superuser, bypass row security or "
            f"be a member of the owner role {roles.owner}: it could then change the ledger"
        )
    return created


def _can_log_in(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
    return bool(row and row[0])


def _let_log_in(conn: psycopg.Connection[Any], owner: str) -> None:
    """Gives the owner role LOGIN when it has not got it (TimescaleDB's background jobs)."""
    if _can_log_in(conn, owner):
        return
    try:
        with conn.transaction():
            conn.execute(sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(owner)))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise MigrationError(
            f"the owner role {owner} cannot log in, and TimescaleDB runs retention, compression"
            " and aggregate refresh as the hypertable's owner in a background worker, which"
            " needs a role that can log in. This login may not change the role (that needs a"
            f" superuser or CREATEROLE): an administrator runs `ALTER ROLE {owner} LOGIN` (no"
            " password: see docs/storage.md, Roles), or migrate as a superuser"
        ) from exc
    except psycopg.errors.InternalError_:
        # "tuple concurrently updated": another database's migration changed the role first.
        if not _can_log_in(conn, owner):
            raise


def _has_timescaledb(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    return row is not None


def _role_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone() is not None


# Objects of the current schema that are not part of an extension.
_NOT_EXTENSION_MEMBER = (
    "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = {catalog}::regclass"
    " AND d.objid = {oid} AND d.deptype = 'e')"
)
_RELATIONS = (
    "SELECT c.oid, c.relname, c.relkind, c.relispartition, pg_get_userbyid(c.relowner),"
    " ARRAY(SELECT a.privilege_type FROM aclexplode(c.relacl) a"
    "       WHERE a.grantee = to_regrole(%s) ORDER BY 1),"
    # A sequence that belongs to a column (serial, identity) follows its table's owner.
    " c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d"
    "         WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.objsubid = 0"
    "         AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))"
    " FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace"
    " AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND "
    + _NOT_EXTENSION_MEMBER.format(catalog="'pg_class'", oid="c.oid")
    + " ORDER BY c.relname"
)
_FUNCTIONS = (
    "SELECT p.oid::regprocedure::text, pg_get_userbyid(p.proowner), p.prosecdef,"
    " EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = to_regrole(%s)"
    "         AND a.privilege_type = 'EXECUTE'),"
    # No ACL means the default: PUBLIC may execute.
    " p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0"
    "         AND a.privilege_type = 'EXECUTE')"
    " FROM pg_proc p WHERE p.pronamespace = current_schema()::regnamespace"
    " AND p.prokind IN ('f', 'p') AND "
    + _NOT_EXTENSION_MEMBER.format(catalog="'pg_proc'", oid="p.oid")
    + " ORDER BY 1"
)
_ALTER_OWNER = {
    "r": "ALTER TABLE {} OWNER TO {}",
    "p": "ALTER TABLE {} OWNER TO {}",
    "f": "ALTER FOREIGN TABLE {} OWNER TO {}",
    "v": "ALTER VIEW {} OWNER TO {}",
    "m": "ALTER MATERIALIZED VIEW {} OWNER TO {}",
    "S": "ALTER SEQUENCE {} OWNER TO {}",
}


def _continuous_aggregates(conn: psycopg.Connection[Any]) -> set[str]:
    """Names of the TimescaleDB continuous aggregates of the current schema (none without the
    extension)."""
    if not _has_timescaledb(conn):
        return set()
    return {
        str(name)
        for (name,) in conn.execute(
            "SELECT view_name FROM timescaledb_information.continuous_aggregates"
            " WHERE view_schema = current_schema()"
        )
    }


def _chunk_schemas_closed_to_owner(
    conn: psycopg.Connection[Any], roles: DatabaseRoles
) -> list[str]:
    """The schemas of TimescaleDB's chunks (and of its internal hypertables) where the owner
    role may not create, when a hypertable or continuous aggregate of the current schema is
    still to be handed over to it and the login is not a superuser: `ALTER TABLE ... OWNER`
    carries on to every chunk, and PostgreSQL lets a non-superuser give a table only to a role
    that may create in the table's schema. Empty when nothing stands in the way."""
    if not _has_timescaledb(conn):
        return []
    row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    if row and row[0]:
        return []
    pending = conn.execute(
        "SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_schema ="
        " current_schema() AND hypertable_name::text IN (SELECT c.relname FROM pg_class c"
        "   WHERE c.relnamespace = current_schema()::regnamespace"
        "   AND pg_get_userbyid(c.relowner) <> %s)"
        " UNION ALL SELECT 1 FROM timescaledb_information.continuous_aggregates"
        " WHERE view_schema = current_schema() AND view_owner::text <> %s",
        (roles.owner, roles.owner),
    ).fetchone()
    if pending is None:
        return []
    return [
        str(name)
        for (name,) in conn.execute(
            "SELECT DISTINCT associated_schema_name::text FROM _timescaledb_catalog.hypertable"
            " WHERE NOT has_schema_privilege(%s, associated_schema_name::text, 'CREATE')"
            " ORDER BY 1",
            (roles.owner,),
        )
    ]


def plan_privileges(conn: psycopg.Connection[Any], roles: DatabaseRoles) -> list[sql.Composed]:
    """The statements that would bring the current schema to the least-privilege state: every
    object owned by the owner role, the service role holding exactly its privileges. Empty
    when everything is in place (read-only: any role may ask)."""
    owner = sql.Identifier(roles.owner)
    service = sql.Identifier(roles.service)
    plan: list[sql.Composed] = []
    schema_row = conn.execute(
        "SELECT current_schema(), has_schema_privilege(%s, current_schema(), 'CREATE'),"
        " has_schema_privilege(%s, current_schema(), 'USAGE')",
        (roles.owner, roles.service),
    ).fetchone()
    assert schema_row is not None
    schema = sql.Identifier(schema_row[0])
    if not schema_row[1]:
        # The owner creates day partitions (through its functions) in this schema.
        plan.append(sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(schema, owner))
    if not schema_row[2]:
        plan.append(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, service))

    rows = conn.execute(_RELATIONS, (roles.service,)).fetchall()
    caggs = _continuous_aggregates(conn)
    for _, name, kind, is_partition, relowner, granted, follows_column in rows:
        target = sql.Identifier(name)
        if relowner != roles.owner and not follows_column:
            # A TimescaleDB continuous aggregate is a view that ALTER VIEW may not change.
            statement = _ALTER_OWNER["m" if name in caggs else kind]
            plan.append(sql.SQL(statement).format(target, owner))
        if is_partition:
            continue  # reached through its parent only
        wanted = SEQUENCE_PRIVILEGES if kind == "S" else expected_table_privileges(name)
        if sorted(granted) != sorted(wanted):
            plan.append(sql.SQL("REVOKE ALL ON {} FROM {}").format(target, service))
            plan.append(
                sql.SQL("GRANT {} ON {} TO {}").format(
                    sql.SQL(", ").join(sql.SQL(p) for p in wanted), target, service
                )
            )

    for signature, proowner, definer, service_may, public_may in conn.execute(
        _FUNCTIONS, (roles.service,)
    ):
        routine = sql.SQL(signature)  # regprocedure text: already quoted and qualified
        if proowner != roles.owner:
            plan.append(sql.SQL("ALTER ROUTINE {} OWNER TO {}").format(routine, owner))
        if not definer:
            continue  # runs with the caller's rights: nothing to guard
        if public_may:
            plan.append(sql.SQL("REVOKE EXECUTE ON ROUTINE {} FROM PUBLIC").format(routine))
        if not service_may:
            plan.append(sql.SQL("GRANT EXECUTE ON ROUTINE {} TO {}").format(routine, service))
    return plan


def ensure_least_privilege(conn: psycopg.Connection[Any], roles: DatabaseRoles) -> list[str]:
    """Creates missing roles, then applies `plan_privileges`; returns what it did, in words.
    Runs in the caller's transaction (no commit). With everything in place it changes nothing
    and needs no privilege, so the service's own login may call it."""
    done = [f"created role {name}" for name in ensure_roles(conn, roles)]
    closed = _chunk_schemas_closed_to_owner(conn, roles)
    if closed:
        grants = "; ".join(f"GRANT CREATE ON SCHEMA {name} TO {roles.owner}" for name in closed)
        raise MigrationError(
            "handing TimescaleDB's hypertables and continuous aggregates over to the owner role"
            f" {roles.owner} hands over their chunks too, in {', '.join(closed)}; a login that"
            f" is not a superuser may do that only where {roles.owner} may create. An"
            f" administrator runs `{grants}` in this database (after `CREATE EXTENSION"
            " timescaledb`), or migrate as a superuser"
        )
    for statement in plan_privileges(conn, roles):
        conn.execute(statement)
        done.append(statement.as_string(conn))
    return done
