"""Time partitions of `readings` and `events` in the native mode: one partition per UTC day,
named `<table>_pYYYYMMDD`, covering [day 00:00 UTC, next day 00:00 UTC).

There is no default partition: rows outside every partition would otherwise pile up there and
block creating the partition later. Instead the scheduler creates partitions ahead
(`ensure_partitions`) and the writer creates the days of each batch it has not seen
(`ensure_days`), so a backlog from an edge gateway still lands. Under TimescaleDB these calls
do nothing (chunks are created on insert) except `apply_retention`, which makes the retention
policies follow the days it is given (`ensure_retention_policy`) and drops chunks.

The tables that are not partitioned by day and would otherwise only grow, `dead_letters` and
`device_status`, are trimmed row by row (`delete_expired_rows`) by the same retention job.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql

from store.mode import storage_mode
from store.rollups import refresh_rollups

log = logging.getLogger(__name__)

PARTITIONED_TABLES = ("readings", "events")
PARTITION_NAME = re.compile(r"^(readings|events)_p(\d{8})$")


def partition_name(table: str, day: dt.date) -> str:
    return f"{table}_p{day:%Y%m%d}"


# Two writers (ingest workers) creating the same day would both pass IF NOT EXISTS and one
# would fail on the catalog's unique index: creators take turns on this transaction lock (taken
# inside `cw_create_partition`, migration 0025).
PARTITION_LOCK_KEY = 0x63770001


def _create_day(conn: psycopg.Connection[Any], table: str, day: dt.date) -> None:
    # The service owns no table, so it may not create partitions itself: the owner role's
    # function does (store/roles.py).
    conn.execute("SELECT cw_create_partition(%s, %s)", (table, day))


def existing_days(conn: psycopg.Connection[Any], table: str) -> set[dt.date]:
    """Days that have a partition of `table`."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = %s::regclass",
        (table,),
    )
    days: set[dt.date] = set()
    for (name,) in rows:
        match = PARTITION_NAME.match(name)
        if match:
            days.add(dt.datetime.strptime(match.group(2), "%Y%m%d").date())
    return days


def ensure_days(
    conn: psycopg.Connection[Any], table: str, days: Iterable[dt.date], known: set[dt.date]
) -> None:
    """Creates the partitions of `days` missing from `known` (the caller's cache, updated here).
    Runs in the caller's transaction; no commit. Native mode only."""
    for day in sorted(set(days) - known):
        _create_day(conn, table, day)
        known.add(day)


def ensure_partitions(
    conn: psycopg.Connection[Any], ahead: int = 7, *, today: dt.date | None = None
) -> list[str]:
    """Creates the partitions from `today` (UTC) through `ahead` days later for every
    partitioned table, returning the names created. No commit: the caller owns the
    transaction. Does nothing under TimescaleDB."""
    if storage_mode(conn) != "native":
        return []
    today = today or dt.datetime.now(dt.UTC).date()
    wanted = [today + dt.timedelta(days=n) for n in range(ahead + 1)]
    created: list[str] = []
    for table in PARTITIONED_TABLES:
        have = existing_days(conn, table)
        for day in wanted:
            if day not in have:
                _create_day(conn, table, day)
                created.append(partition_name(table, day))
    return created


# Two processes setting the retention policies at once (service replicas starting together)
# would both find a policy missing and both add it: they take turns on this transaction lock.
RETENTION_LOCK_KEY = 0x63770002


def ensure_retention_policy(conn: psycopg.Connection[Any], days: int) -> list[str]:
    """TimescaleDB: makes the retention policy of `readings` and `events` drop chunks older
    than `days` days, adding a missing policy and replacing one with another interval (the
    setting changed since it was made). Returns the tables whose policy was added or replaced.
    Does nothing in the native mode, which has no policies (`apply_retention` drops the
    partitions itself). No migration makes these policies: the days are a setting, read by
    the service at run time. No commit."""
    if days <= 0:
        raise ValueError("retention must be at least one day")
    if storage_mode(conn) != "timescaledb":
        return []
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (RETENTION_LOCK_KEY,))
    drop_after = f"{days} days"
    changed: list[str] = []
    for table in PARTITIONED_TABLES:
        policies = conn.execute(
            "SELECT (j.config->>'drop_after')::interval IS NOT DISTINCT FROM %s::interval"
            " FROM timescaledb_information.jobs j"
            " JOIN pg_class c ON c.relname = j.hypertable_name"
            " JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = j.hypertable_schema"
            " WHERE j.proc_name = 'policy_retention' AND c.oid = %s::regclass",
            (drop_after, table),
        ).fetchall()
        if policies == [(True,)]:
            continue
        # As the hypertable's owner (migration 0025): the service owns no table.
        conn.execute("SELECT cw_set_retention_policy(%s, %s::interval)", (table, drop_after))
        changed.append(table)
    if changed:
        log.info("retention policy of %s set to %s", ", ".join(changed), drop_after)
    return changed


def apply_retention(
    conn: psycopg.Connection[Any], days: int, *, today: dt.date | None = None
) -> list[str]:
    """Drops the data older than `days` days before `today` (UTC): whole partitions whose
    last instant is before the cut-off (native), or chunks via `drop_chunks` (TimescaleDB,
    after setting its retention policies to `days` with `ensure_retention_policy`, so they
    follow a changed setting). Returns the dropped partition names (native) or chunk names.
    No commit. Rollups are kept: they are the long-term history. The closed hours not yet
    rolled up are rolled up first (their register summaries are all the reports will have), and
    the cut-off is recorded (`raw_retention.retained_from`, read by `raw_horizon`)."""
    if days <= 0:
        raise ValueError("retention must be at least one day")
    today = today or dt.datetime.now(dt.UTC).date()
    cutoff = today - dt.timedelta(days=days)
    refresh_rollups(conn)
    conn.execute(
        "UPDATE raw_retention SET retained_from = greatest(retained_from, %s::timestamptz)",
        (dt.datetime.combine(cutoff, dt.time(), tzinfo=dt.UTC),),
    )
    if storage_mode(conn) == "timescaledb":
        ensure_retention_policy(conn, days)
        cutoff_ts = dt.datetime.combine(cutoff, dt.time(), tzinfo=dt.UTC)
        dropped: list[str] = []
        for table in PARTITIONED_TABLES:
            rows = conn.execute("SELECT cw_drop_chunks(%s, %s)", (table, cutoff_ts))
            dropped.extend(str(name) for (name,) in rows)
        return dropped
    dropped = []
    for table in PARTITIONED_TABLES:
        for day in sorted(existing_days(conn, table)):
            if day < cutoff:
                conn.execute("SELECT cw_drop_partition(%s, %s)", (table, day))
                dropped.append(partition_name(table, day))
    return dropped


def raw_horizon(conn: psycopg.Connection[Any]) -> tuple[dt.datetime | None, dt.datetime | None]:
    """(retained_from, summarised_from): raw readings are complete from `retained_from` on (None:
    nothing was dropped), and the register summaries (`register_hours`) from the hour
    `summarised_from` on (None: from the start). Under TimescaleDB the retention policy may drop
    chunks between two runs of `apply_retention`: `retained_from` is then at least the start of
    the UTC day after now minus the policy's `drop_after` (chunks are whole UTC days)."""
    row = conn.execute("SELECT retained_from, summarised_from FROM raw_retention").fetchone()
    retained, summarised = row if row else (None, None)
    if storage_mode(conn) == "timescaledb":
        policy = conn.execute(
            "SELECT max(date_trunc('day', now() - (j.config->>'drop_after')::interval, 'UTC')"
            " + INTERVAL '1 day') FROM timescaledb_information.jobs j"
            " WHERE j.proc_name = 'policy_retention' AND j.hypertable_name = 'readings'"
        ).fetchone()
        if policy and policy[0] is not None:
            retained = policy[0] if retained is None else max(retained, policy[0])
    return retained, summarised


# Rows deleted per transaction by `delete_expired_rows`: a flood of malformed messages can leave
# millions of dead letters, and one huge DELETE would hold its locks and WAL for minutes.
DELETE_BATCH = 10_000


def delete_expired_rows(
    conn: psycopg.Connection[Any],
    *,
    dead_letter_days: int,
    device_status_days: int,
    now: dt.datetime | None = None,
    batch: int = DELETE_BATCH,
) -> dict[str, int]:
    """Deletes dead letters received more than `dead_letter_days` before `now` and the device
    statuses (the latest per gateway or device) not updated for more than `device_status_days`
    (a gateway gone for that long is decommissioned, not offline). Commits after every `batch`
    rows, so a long backlog never becomes one long transaction. Returns the rows deleted per
    table."""
    if dead_letter_days <= 0 or device_status_days <= 0:
        raise ValueError("retention must be at least one day")
    now = now or dt.datetime.now(dt.UTC)
    deleted: dict[str, int] = {}
    for table, key, days in (
        ("dead_letters", ("id",), dead_letter_days),
        ("device_status", ("site", "device"), device_status_days),
    ):
        cutoff = now - dt.timedelta(days=days)
        statement = sql.SQL(
            "DELETE FROM {table} WHERE ({key}) IN"
            " (SELECT {key} FROM {table} WHERE received_at < %s LIMIT %s)"
        ).format(table=sql.Identifier(table), key=sql.SQL(", ").join(map(sql.Identifier, key)))
        total = 0
        while True:
            count = conn.execute(statement, (cutoff, batch)).rowcount
            conn.commit()
            total += count
            if count < batch:
                break
        deleted[table] = total
        if total:
            log.info("retention: deleted %d row(s) of %s older than %d days", total, table, days)
    return deleted
