"""Migrations: from empty, from the previous version, re-runs, concurrent starts, failures."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import orjson
import psycopg
import pytest
from psycopg import sql

from store.errors import MigrationError
from store.migrate import applied_versions, discover, migrate, schema_version
from store.mode import storage_mode
from store.partitions import PARTITIONED_TABLES, partition_name
from store.pool import connect
from store.readings import query_readings
from store.rollups import refresh_rollups

pytestmark = pytest.mark.integration

CORE_TABLES = (
    "readings",
    "events",
    "dead_letters",
    "compliance_intervals",
    "engine_checkpoints",
    "engine_checkpoint_parts",
    "engine_open_runs",
    "late_readings",
    "readings_hourly",
    "readings_daily",
    "consumption_hourly",
    "consumption_daily",
    "rollup_dirty",
    "storage_mode",
)


def day_partitions(conn: psycopg.Connection[object], day: dt.date) -> None:
    """A day's partitions made the way the service made them before migration 0025 gave it
    functions for that (it connected as the tables' owner then)."""
    if storage_mode(conn) != "native":
        return
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    for table in PARTITIONED_TABLES:
        conn.execute(
            sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                sql.Identifier(partition_name(table, day)),
                sql.Identifier(table),
                sql.Literal(start),
                sql.Literal(start + dt.timedelta(days=1)),
            )
        )


def test_from_empty_applies_every_migration_once(empty_database_url: str) -> None:
    applied = migrate(empty_database_url)

    assert [m.version for m in applied] == [m.version for m in discover()]
    with connect(empty_database_url) as conn:
        for table in CORE_TABLES:
            row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
            assert row == (True,), table
        assert set(applied_versions(conn)) == {m.version for m in applied}
        assert schema_version(conn) == applied[-1].version
        assert storage_mode(conn) in ("native", "timescaledb")
    assert migrate(empty_database_url) == []


def test_from_previous_version_keeps_data_and_rolls_it_up(empty_database_url: str) -> None:
    # Version 1 is the core schema; 2 adds the rollups, which must pick up existing readings.
    assert [m.version for m in migrate(empty_database_url, target=1)] == [1]
    t0 = dt.datetime(2026, 7, 1, 10, tzinfo=dt.UTC)
    with connect(empty_database_url) as conn:
        day_partitions(conn, t0.date())
        conn.cursor().executemany(
            "INSERT INTO readings (site, device, metric, ts, value, received_at)"
            " VALUES ('s1', 'd1', 'temperature', %s, %s, now())",
            [(t0 + dt.timedelta(minutes=10 * i), 20.0 + i) for i in range(6)],
        )

    applied = migrate(empty_database_url)

    assert applied[0].version == 2
    with connect(empty_database_url) as conn:
        count = conn.execute("SELECT count(*) FROM readings").fetchone()
        assert count == (6,)
        refresh_rollups(conn)
        (point,) = query_readings(
            conn, "s1", "d1", "temperature", t0, t0 + dt.timedelta(hours=1), "1h"
        )
        assert (point.count, point.min, point.max, point.mean) == (6, 20.0, 25.0, 22.5)
        stored = conn.execute("SELECT value_count FROM readings_hourly").fetchall()
        assert stored == [(6,)]


def test_readings_key_takes_seq_over_stored_rows(empty_database_url: str) -> None:
    # Up to 0003 two seqs of one stamp collapsed; 0004 keeps both and still absorbs copies.
    migrate(empty_database_url, target=3)
    t0 = dt.datetime(2026, 7, 1, 10, tzinfo=dt.UTC)
    insert = (
        "INSERT INTO readings (site, device, metric, ts, value, seq, received_at)"
        " VALUES ('s1', 'd1', 'co2', %s, 600, %s, now()) ON CONFLICT DO NOTHING"
    )
    with connect(empty_database_url) as conn:
        day_partitions(conn, t0.date())
        conn.execute(insert, (t0, 1))
        conn.execute(insert, (t0 + dt.timedelta(minutes=1), None))

    assert [m.version for m in migrate(empty_database_url, target=4)] == [4]
    with connect(empty_database_url) as conn:
        for seq in (1, 2, 2):  # the stored row, another seq of its stamp, a redelivery
            conn.execute(insert, (t0, seq))
        conn.execute(insert, (t0 + dt.timedelta(minutes=1), None))
        stored = conn.execute("SELECT ts, seq FROM readings ORDER BY ts, seq").fetchall()
    assert stored == [(t0, 1), (t0, 2), (t0 + dt.timedelta(minutes=1), None)]


def test_open_runs_are_filled_in_from_checkpoints_saved_before(empty_database_url: str) -> None:
    # 0007 adds engine_open_runs; a part saved before it may never be saved again (a quiet
    # space whose obligation is overdue), so its open runs are read from the stored parts.
    migrate(empty_database_url, target=6)
    overdue = {
        "t": 1_776_000_000.0,
        "run_status": "violating",
        "run_start": 1_775_970_000.0,
        "started": 1_767_196_800.0,
        "last_event": 1_775_883_600.0,
    }
    pending = {"t": 1.0, "run_status": "compliant", "run_start": 0.5, "pending_since": 0.75}
    parts = {
        "space:wc1": {"instances": {"wc.clean|1|wc1|": overdue}, "space_slots": {}},
        "device:th-1": {"instances": {"t.max|2|o1|th-1": pending}},
    }
    with connect(empty_database_url) as conn:
        conn.execute(
            "INSERT INTO engine_checkpoints (site, state, watermark) VALUES ('s1', '{}', 2.0)"
        )
        for name, part in parts.items():
            conn.execute(
                "INSERT INTO engine_checkpoint_parts (site, part, state) VALUES ('s1', %s, %s)",
                (name, orjson.dumps(part)),
            )

    assert [m.version for m in migrate(empty_database_url, target=7)] == [7]
    with connect(empty_database_url) as conn:
        rows = conn.execute(
            "SELECT part, clause_id, clause_version, space, device, status,"
            " since, known_until"
            " FROM engine_open_runs WHERE site = 's1' ORDER BY part"
        ).fetchall()
    assert rows == [
        ("device:th-1", "t.max", 2, "o1", "th-1", "compliant", 0.5, 0.75),
        ("space:wc1", "wc.clean", 1, "wc1", "", "violating", 1_775_970_000.0, None),
    ]


def test_concurrent_starts_apply_each_migration_once(empty_database_url: str) -> None:
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append([m.version for m in migrate(empty_database_url)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert not errors
    every = sorted(v for applied in results for v in applied)
    assert every == [m.version for m in discover()]


def test_a_failing_migration_leaves_no_trace_and_stops(
    empty_database_url: str, tmp_path: Path
) -> None:
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE first_table (id int);")
    (tmp_path / "0002_broken.sql").write_text(
        "CREATE TABLE half_done (id int); SELECT no_such_function();"
    )
    (tmp_path / "0003_later.sql").write_text("CREATE TABLE later_table (id int);")
    (tmp_path / "notes.txt").write_text("not a migration")

    with pytest.raises(Exception, match="no_such_function"):
        migrate(empty_database_url, directory=tmp_path)

    with connect(empty_database_url) as conn:
        assert applied_versions(conn) == {1: "first"}
        exists = conn.execute(
            "SELECT to_regclass('first_table') IS NOT NULL, to_regclass('half_done') IS NULL,"
            " to_regclass('later_table') IS NULL"
        ).fetchone()
        assert exists == (True, True, True)


def test_python_migrations_and_duplicate_versions(tmp_path: Path) -> None:
    (tmp_path / "0007_a.sql").write_text("SELECT 1;")
    (tmp_path / "0007_b.py").write_text("def upgrade(conn):\n    pass\n")
    with pytest.raises(MigrationError, match="two migrations with version 0007"):
        discover(tmp_path)
