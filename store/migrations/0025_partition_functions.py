"""Least privilege (issue 18): the DDL the service needs at run time, as functions.

The service acts as a role that owns no table (store/roles.py), so it may not create or drop
partitions itself: `CREATE TABLE ... PARTITION OF readings` needs the owner of `readings`. These
SECURITY DEFINER functions run as their owner (the owner role, once `migrate` has handed them
over) and do exactly one thing each, for `readings` and `events` only:

- `cw_create_partition(table, day)`: the UTC day partition `<table>_pYYYYMMDD` (native mode);
- `cw_drop_partition(table, day)`: drops that partition when it exists (retention);
- `cw_set_retention_policy(table, drop_after)`, `cw_drop_chunks(table, older_than)`: the
  TimescaleDB retention calls, which also need the hypertable's owner.

Each runs with a fixed search path (this schema, then pg_temp), so a temporary table of the
caller's cannot stand in for `readings`. EXECUTE is revoked from PUBLIC here; `migrate` grants it
to the service role.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

FUNCTIONS = """
CREATE FUNCTION cw_partitioned_table(tbl text) RETURNS regclass
LANGUAGE plpgsql STABLE SET search_path = {path} AS $$
BEGIN
    IF tbl NOT IN ('readings', 'events') THEN
        RAISE EXCEPTION 'only readings and events have time partitions, not %', tbl
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN format('%I.%I', {schema}, tbl)::regclass;
END $$;

CREATE FUNCTION cw_create_partition(tbl text, day date) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {path} AS $$
DECLARE
    parent regclass := cw_partitioned_table(tbl);
    name text := tbl || '_p' || to_char(day, 'YYYYMMDD');
BEGIN
    -- Writers creating the same day take turns (store/partitions.py PARTITION_LOCK_KEY).
    PERFORM pg_advisory_xact_lock(1668743169);
    IF to_regclass(format('%I.%I', {schema}, name)) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                   {schema}, name, parent,
                   day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
    RETURN true;
END $$;

CREATE FUNCTION cw_drop_partition(tbl text, day date) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {path} AS $$
DECLARE
    parent regclass := cw_partitioned_table(tbl);
    part regclass := to_regclass(
        format('%I.%I', {schema}, tbl || '_p' || to_char(day, 'YYYYMMDD')));
BEGIN
    IF part IS NULL OR NOT EXISTS (
        SELECT 1 FROM pg_inherits WHERE inhrelid = part AND inhparent = parent
    ) THEN
        RETURN false;
    END IF;
    EXECUTE format('DROP TABLE %s', part);
    RETURN true;
END $$;

CREATE FUNCTION cw_set_retention_policy(tbl text, drop_after interval) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {path} AS $$
DECLARE
    hypertable regclass := cw_partitioned_table(tbl);
BEGIN
    PERFORM remove_retention_policy(hypertable, if_exists => true);
    PERFORM add_retention_policy(hypertable, drop_after => drop_after);
END $$;

CREATE FUNCTION cw_drop_chunks(tbl text, older_than timestamptz) RETURNS SETOF text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {path} AS $$
BEGIN
    RETURN QUERY SELECT c::text FROM drop_chunks(cw_partitioned_table(tbl),
                                                 older_than => older_than) AS c;
END $$;

REVOKE EXECUTE ON FUNCTION cw_create_partition(text, date), cw_drop_partition(text, date),
    cw_set_retention_policy(text, interval), cw_drop_chunks(text, timestamptz) FROM PUBLIC;
"""


def upgrade(conn: psycopg.Connection[Any]) -> None:
    row = conn.execute("SELECT current_schema()").fetchone()
    assert row is not None and row[0]
    schema = str(row[0])
    # TimescaleDB's functions live in the schema its extension was created in.
    extension = conn.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
        " WHERE e.extname = 'timescaledb'"
    ).fetchone()
    path = [schema] + ([str(extension[0])] if extension and extension[0] != schema else [])
    conn.execute(
        sql.SQL(FUNCTIONS).format(
            path=sql.SQL(", ").join([*map(sql.Identifier, path), sql.Identifier("pg_temp")]),
            schema=sql.Literal(schema),
        )
    )
