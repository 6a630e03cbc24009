"""TimescaleDB's policy jobs of clausewatch's tables, run from the service's scheduler.

TimescaleDB 2.28.3 on PostgreSQL 15.20 completes no background job: each one ends with
`cannot drop portal "" while it is being set up` and its work is rolled back, while the same
job run in a session (`CALL run_job(id)`) completes (docs/storage.md, Modes). So the service
runs the jobs of its hypertables and continuous aggregates (compression, aggregate refresh,
retention) itself when they are due. Where TimescaleDB's scheduler works it does the same
work; a job run twice finds nothing left to do (compressed chunks are skipped, a refresh
materialises only what was invalidated).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import psycopg

from store.mode import storage_mode

log = logging.getLogger(__name__)

# The hypertables and continuous aggregates the migrations create (0001, 0002).
TABLES = ("readings", "events", "readings_hourly", "readings_daily")


def run_due_timescale_jobs(
    conn: psycopg.Connection[Any],
    last_runs: dict[int, dt.datetime],
    *,
    now: dt.datetime | None = None,
) -> list[int]:
    """Runs each due job of clausewatch's tables with `CALL run_job`, returning the ids of those
    that completed. Due: neither TimescaleDB's scheduler nor this function (`last_runs`, the
    caller's record, updated here: `run_job` leaves TimescaleDB's statistics alone) completed
    it within its schedule interval. `conn` is in autocommit (an aggregate refresh cannot run in
    a transaction block, a compression commits per chunk) and acts as the owner role, which owns
    the jobs. A failing job is logged and the others still run. Nothing in the native mode."""
    if storage_mode(conn) != "timescaledb":
        return []
    now = now or dt.datetime.now(dt.UTC)
    jobs = conn.execute(
        "SELECT j.job_id, j.proc_name, j.hypertable_name, j.schedule_interval,"
        " CASE WHEN isfinite(s.last_successful_finish) THEN s.last_successful_finish END"
        " FROM timescaledb_information.jobs j"
        " LEFT JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id"
        " WHERE j.scheduled AND j.hypertable_schema = current_schema()"
        " AND j.hypertable_name = ANY(%s) ORDER BY j.job_id",
        (list(TABLES),),
    ).fetchall()
    done: list[int] = []
    for job_id, proc, table, interval, succeeded in jobs:
        last = max(filter(None, (succeeded, last_runs.get(job_id))), default=None)
        if last is not None and last + interval > now:
            continue
        try:
            conn.execute("CALL run_job(%s)", (job_id,))
        except psycopg.Error as exc:
            log.error("TimescaleDB job %s (%s of %s) failed: %s", job_id, proc, table, exc)
            continue
        last_runs[job_id] = now
        done.append(job_id)
    if done:
        log.info("TimescaleDB jobs run: %s", ", ".join(map(str, done)))
    return done
