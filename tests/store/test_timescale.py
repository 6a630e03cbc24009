"""The TimescaleDB mode: hypertables, compression / retention / refresh policies, continuous
aggregates. Runs only when the test server (CLAUSEWATCH_TEST_DATABASE_URL) has the extension;
the other storage tests run in whichever mode the server gives, so they cover this mode too."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest

from store.batches import ReadingRow, write_readings
from store.migrate import migrate
from store.mode import FORCE_NATIVE_ENV, choose_mode, storage_mode, timescaledb_preloaded
from store.partitions import apply_retention, ensure_partitions
from store.pool import connect
from store.readings import consumption, query_readings
from store.roles import DEFAULT_OWNER_ROLE, as_role
from store.rollups import refresh_rollups
from store.timescale_jobs import run_due_timescale_jobs

pytestmark = [pytest.mark.integration, pytest.mark.timescale]

START = dt.datetime(2026, 7, 1, tzinfo=dt.UTC)


@pytest.fixture
def timescale_url(timescale_server: str, empty_database_url: str) -> str:
    migrate(empty_database_url)
    return empty_database_url


def retention_policies(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    """(table, drop_after) of every retention policy, one row per policy."""
    return [
        (str(table), str(drop_after))
        for table, drop_after in conn.execute(
            "SELECT hypertable_name, config->>'drop_after' FROM timescaledb_information.jobs"
            " WHERE proc_name = 'policy_retention' ORDER BY hypertable_name, job_id"
        )
    ]


def test_hypertables_policies_and_aggregates_exist(timescale_url: str) -> None:
    with connect(timescale_url) as conn:
        assert storage_mode(conn) == "timescaledb"
        hypertables = {
            name
            for (name,) in conn.execute(
                "SELECT hypertable_name FROM timescaledb_information.hypertables"
            )
        }
        assert {"readings", "events"} <= hypertables
        jobs = {
            (proc, name)
            for proc, name in conn.execute(
                "SELECT proc_name, hypertable_name FROM timescaledb_information.jobs"
            )
        }
        assert ("policy_compression", "readings") in jobs
        caggs = {
            name
            for (name,) in conn.execute(
                "SELECT view_name FROM timescaledb_information.continuous_aggregates"
            )
        }
        assert caggs == {"readings_hourly", "readings_daily"}
        refresh_jobs = conn.execute(
            "SELECT count(*) FROM timescaledb_information.jobs"
            " WHERE proc_name = 'policy_refresh_continuous_aggregate'"
        ).fetchone()
        assert refresh_jobs == (2,)
        # Chunks are made on insert: nothing to create ahead.
        assert ensure_partitions(conn, 7) == []


def test_aggregates_and_consumption_match_raw_rows(timescale_url: str) -> None:
    t = START.timestamp()
    rows = [
        ReadingRow("s1", "m1", "energy_kwh", t + 600 * i, 100.0 + i * 0.5, i, t) for i in range(30)
    ]
    with connect(timescale_url) as conn:
        assert write_readings(conn, rows) == 30
        assert write_readings(conn, rows) == 0
        refresh_rollups(conn)
    with connect(timescale_url, autocommit=True) as conn:
        # Materialise now instead of waiting for the policy (cannot run in a transaction).
        conn.execute("CALL refresh_continuous_aggregate('readings_hourly', NULL, NULL)")
        conn.execute("CALL refresh_continuous_aggregate('readings_daily', NULL, NULL)")
        until = START + dt.timedelta(days=1)
        hourly = query_readings(conn, "s1", "m1", "energy_kwh", START, until, "1h")
        assert [p.count for p in hourly] == [6, 6, 6, 6, 6]
        (daily,) = query_readings(conn, "s1", "m1", "energy_kwh", START, until, "1d")
        assert (daily.count, daily.min, daily.max) == (30, 100.0, 114.5)
        (total,) = consumption(conn, "s1", "m1", "energy_kwh", START, until, "1d")
        assert total.consumption == pytest.approx(14.5)


def test_retention_drops_old_chunks(timescale_url: str) -> None:
    old = (START - dt.timedelta(days=30)).timestamp()
    rows = [ReadingRow("s1", "d1", "temperature", old, 20.0, None, old)]
    with connect(timescale_url) as conn:
        write_readings(conn, rows)
        dropped = apply_retention(conn, 10, today=START.date())
        assert dropped
        remaining = conn.execute("SELECT count(*) FROM readings").fetchone()
        assert remaining == (0,)


def test_no_migration_freezes_the_retention_setting(
    timescale_server: str, empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 0001 used to read the setting as it ran and make policies of it that overruled every
    # later value: the policy is the service's now, set from the setting at run time.
    monkeypatch.setenv("CLAUSEWATCH_RETENTION_DAYS", "123")
    migrate(empty_database_url)
    with connect(empty_database_url) as conn:
        assert retention_policies(conn) == []


def test_applying_retention_sets_the_policy_to_the_days_given(timescale_url: str) -> None:
    def policy_jobs(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
        return conn.execute(
            "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'"
        ).fetchall()

    with connect(timescale_url) as conn:
        apply_retention(conn, 30, today=START.date())
        conn.commit()
        assert retention_policies(conn) == [("events", "30 days"), ("readings", "30 days")]
        # The setting changed: the policies follow it, one per table still.
        apply_retention(conn, 45, today=START.date())
        conn.commit()
        assert retention_policies(conn) == [("events", "45 days"), ("readings", "45 days")]
        # Unchanged: the policies are left alone (the same jobs).
        jobs = policy_jobs(conn)
        apply_retention(conn, 45, today=START.date())
        conn.commit()
        assert policy_jobs(conn) == jobs


def test_a_policy_frozen_by_the_old_migration_is_removed(
    timescale_server: str, empty_database_url: str
) -> None:
    migrate(empty_database_url, target=5)
    with connect(empty_database_url) as conn:
        for table in ("readings", "events"):  # what 0001 made before retention moved out
            conn.execute(
                "SELECT add_retention_policy(%s::regclass, drop_after => '400 days'::interval,"
                " if_not_exists => true)",
                (table,),
            )
        conn.commit()
    migrate(empty_database_url)
    with connect(empty_database_url) as conn:
        assert retention_policies(conn) == []


def store_and_materialise(url: str, rows: list[ReadingRow]) -> None:
    """Stores the rows and materialises both aggregates now (not in a transaction)."""
    with connect(url) as conn:
        write_readings(conn, rows)
        conn.commit()
    with connect(url, autocommit=True) as conn:
        conn.execute("CALL refresh_continuous_aggregate('readings_hourly', NULL, NULL)")
        conn.execute("CALL refresh_continuous_aggregate('readings_daily', NULL, NULL)")


def test_hourly_and_daily_statistics_equal_the_raw_rows_late_data_included(
    timescale_url: str,
) -> None:
    # Issue 17, defect 7: the continuous aggregate gave an old hour's figures until its policy
    # ran, and missed a late reading in an hour already materialised until the next refresh.
    now = dt.datetime.now(dt.UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)
    first = hour - dt.timedelta(hours=30)
    times = [first + dt.timedelta(minutes=20 * i) for i in range(30 * 3)]
    times.append(min(now, hour + dt.timedelta(seconds=1)))  # the current hour
    rows = [
        ReadingRow("s1", "t1", "temperature", t.timestamp(), 20.0 + (i % 7), None, t.timestamp())
        for i, t in enumerate(times)
    ]

    def raw_stats(conn: psycopg.Connection[Any], width: str) -> list[tuple[Any, ...]]:
        return [
            (b, int(n), round(float(total) / int(n), 9), float(lo), float(hi))
            for b, n, total, lo, hi in conn.execute(
                f"SELECT date_bin(INTERVAL '{width}', ts, '2000-01-03'::timestamptz) b,"
                " count(*), sum(value), min(value), max(value) FROM readings"
                " WHERE device = 't1' GROUP BY 1 ORDER BY 1"
            )
        ]

    def served(conn: psycopg.Connection[Any], bucket: str) -> list[tuple[Any, ...]]:
        since, until = first - dt.timedelta(days=1), now + dt.timedelta(hours=1)
        points = query_readings(conn, "s1", "t1", "temperature", since, until, bucket)
        return [(p.bucket, p.count, round(p.mean, 9), p.min, p.max) for p in points]  # type: ignore[union-attr]

    store_and_materialise(timescale_url, rows)
    with connect(timescale_url) as conn:
        late_at = first + dt.timedelta(hours=2, minutes=5)  # inside a materialised hour
        late = ReadingRow("s1", "t1", "temperature", late_at.timestamp(), 99.0, None, 0.0)
        write_readings(conn, [late])
        conn.commit()
        for bucket, width in (("1h", "1 hour"), ("1d", "1 day"), ("6h", "6 hours")):
            assert served(conn, bucket) == raw_stats(conn, width), bucket
        assert any(p[4] == 99.0 for p in served(conn, "1h"))
        # and after the rollup job and a refresh of the aggregates, still the raw rows
        refresh_rollups(conn)
        conn.commit()
    with connect(timescale_url, autocommit=True) as conn:
        conn.execute("CALL refresh_continuous_aggregate('readings_hourly', NULL, NULL)")
        for bucket, width in (("1h", "1 hour"), ("1d", "1 day")):
            assert served(conn, bucket) == raw_stats(conn, width), bucket


def test_statistics_before_the_retention_come_from_the_aggregates(timescale_url: str) -> None:
    old = START - dt.timedelta(days=30)
    rows = [
        ReadingRow(
            "s1", "t1", "temperature", (old + dt.timedelta(minutes=m)).timestamp(), m, None, 0
        )
        for m in range(0, 120, 10)
    ]
    store_and_materialise(timescale_url, rows)
    with connect(timescale_url) as conn:
        window = (old - dt.timedelta(days=1), old + dt.timedelta(days=1))
        before = query_readings(conn, "s1", "t1", "temperature", *window, "1h")
        assert [p.count for p in before] == [6, 6]  # type: ignore[union-attr]
    with connect(timescale_url) as conn:
        apply_retention(conn, 10, today=START.date())
        conn.commit()
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (0,)
        assert query_readings(conn, "s1", "t1", "temperature", *window, "1h") == before
        (day,) = query_readings(conn, "s1", "t1", "temperature", *window, "1d")
        assert day.count == 12  # type: ignore[union-attr]


def test_installed_but_not_preloaded_timescaledb_means_native_mode(
    pg_server_url: str, empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CREATE EXTENSION on such a server ends the session with a FATAL no savepoint catches:
    the mode is chosen before trying, and `db upgrade` completes in native mode."""
    with psycopg.connect(pg_server_url) as conn:
        available = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchone()
        preloaded = timescaledb_preloaded(conn)
    if available is None or preloaded:
        pytest.skip("needs a server with TimescaleDB installed but not preloaded")
    monkeypatch.delenv(FORCE_NATIVE_ENV, raising=False)
    with connect(empty_database_url) as conn:
        assert choose_mode(conn) == "native"
    migrate(empty_database_url)
    with connect(empty_database_url) as conn:
        assert storage_mode(conn) == "native"


def compression_order(conn: psycopg.Connection[Any]) -> str | None:
    row = conn.execute(
        "SELECT orderby FROM timescaledb_information.hypertable_compression_settings"
        " WHERE hypertable = 'readings'::regclass"
    ).fetchone()
    return None if row is None else str(row[0])


def test_compressed_readings_are_ordered_by_the_key(timescale_url: str) -> None:
    """(ts, seq) inside a segment, the key's order: by ts alone TimescaleDB warned at every
    migration that seq should be used for ordering."""
    with connect(timescale_url) as conn:
        assert compression_order(conn) == "ts,seq"


def test_a_database_compressed_by_ts_alone_is_reordered_and_keeps_its_rows(
    timescale_server: str, empty_database_url: str
) -> None:
    migrate(empty_database_url, target=8)
    then = (START - dt.timedelta(days=30)).timestamp()
    with connect(empty_database_url) as conn:
        conn.execute("ALTER TABLE readings SET (timescaledb.compress_orderby = 'ts')")
        write_readings(
            conn,
            [ReadingRow("s", "d", "t", then, 20.0 + seq, seq, then) for seq in range(3)],
        )
        conn.execute("SELECT compress_chunk(c) FROM show_chunks('readings') c")
        conn.commit()
        assert compression_order(conn) == "ts"
    migrate(empty_database_url)
    with connect(empty_database_url) as conn:
        assert compression_order(conn) == "ts,seq"
        rows = conn.execute("SELECT seq, value FROM readings ORDER BY seq").fetchall()
        assert rows == [(0, 20.0), (1, 21.0), (2, 22.0)]


def time_indexes(conn: psycopg.Connection[Any], table: str) -> list[tuple[str, str]]:
    """(access method, key) of every index of `table` on `ts` alone."""
    return [
        (str(method), str(key))
        for method, key in conn.execute(
            "SELECT am.amname, pg_get_indexdef(i.indexrelid, 1, true) FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam"
            " WHERE i.indrelid = %s::regclass AND i.indnatts = 1"
            " AND pg_get_indexdef(i.indexrelid, 1, true) = 'ts'",
            (table,),
        )
    ]


def test_readings_are_indexed_by_time_with_brin_in_every_chunk(timescale_url: str) -> None:
    """A B-tree on ts (create_hypertable's default) cost every insert a third index; scans by
    time alone (the aggregates' refresh) find the same pages through BRIN."""
    then = START.timestamp()
    with connect(timescale_url) as conn:
        write_readings(conn, [ReadingRow("s", "d", "t", then, 20.0, 1, then)])
        (chunk,) = conn.execute("SELECT c::text FROM show_chunks('readings') c").fetchone() or ()
        assert time_indexes(conn, "readings") == [("brin", "ts")]
        assert time_indexes(conn, chunk) == [("brin", "ts")]


def test_a_database_with_the_btree_time_index_gets_brin_and_keeps_its_rows(
    timescale_server: str, empty_database_url: str
) -> None:
    migrate(empty_database_url, target=17)
    old, recent = (START - dt.timedelta(days=30)).timestamp(), START.timestamp()
    with connect(empty_database_url) as conn:
        write_readings(
            conn,
            [ReadingRow("s", "d", "t", ts, 20.0, seq, ts) for seq, ts in enumerate([old, recent])],
        )
        conn.execute(
            "SELECT compress_chunk(c) FROM show_chunks('readings', older_than => %s) c",
            (START - dt.timedelta(days=10),),
        )
        conn.commit()
        assert time_indexes(conn, "readings") == [("btree", "ts")]
    migrate(empty_database_url)
    with connect(empty_database_url) as conn:
        assert time_indexes(conn, "readings") == [("brin", "ts")]
        rows = conn.execute(
            "SELECT seq FROM readings WHERE ts >= %s ORDER BY ts", (START - dt.timedelta(days=31),)
        ).fetchall()
        assert rows == [(0,), (1,)]


def test_due_jobs_run_as_the_owner_once_per_interval_and_a_second_run_changes_nothing(
    timescale_url: str,
) -> None:
    now = dt.datetime.now(dt.UTC)
    hour = now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=2)
    times = [now - dt.timedelta(days=10)] + [hour + dt.timedelta(minutes=m) for m in (0, 20)]
    with connect(timescale_url) as conn:
        write_readings(
            conn,
            [ReadingRow("s", "d", "t", t.timestamp(), 20.0, i, 0.0) for i, t in enumerate(times)],
        )
        conn.commit()
        ((schema, table),) = conn.execute(
            "SELECT materialization_hypertable_schema, materialization_hypertable_name FROM"
            " timescaledb_information.continuous_aggregates WHERE view_name = 'readings_hourly'"
        ).fetchall()
        jobs = dict(
            conn.execute(
                "SELECT job_id, proc_name FROM timescaledb_information.jobs"
                " WHERE hypertable_name IN ('readings', 'readings_hourly', 'readings_daily')"
            ).fetchall()
        )

    def state() -> tuple[list[Any], list[Any], int]:
        with connect(timescale_url) as conn:
            chunks = conn.execute(
                "SELECT range_start, is_compressed FROM timescaledb_information.chunks"
                " WHERE hypertable_name = 'readings' ORDER BY 1"
            ).fetchall()
            hourly = conn.execute(
                f'SELECT bucket, value_count FROM "{schema}"."{table}" ORDER BY 1'
            ).fetchall()
            readings = conn.execute("SELECT count(*) FROM readings").fetchone()
            assert readings is not None
            return chunks, hourly, int(readings[0])

    last_runs: dict[int, dt.datetime] = {}
    owner_url = as_role(timescale_url, DEFAULT_OWNER_ROLE)
    with connect(owner_url, autocommit=True) as conn:
        assert sorted(run_due_timescale_jobs(conn, last_runs, now=now)) == sorted(jobs)
        after = state()
        chunks, hourly, count = after
        assert [c for _, c in chunks] == [True, False]
        assert (hour, 2) in hourly
        assert count == 3
        # Not due again within the shortest schedule interval (30 minutes).
        assert run_due_timescale_jobs(conn, last_runs, now=now + dt.timedelta(minutes=29)) == []
        # Past every interval all run again, and find nothing left to do.
        later = now + dt.timedelta(days=1)
        assert sorted(run_due_timescale_jobs(conn, last_runs, now=later)) == sorted(jobs)
        assert state() == after


def test_no_timescaledb_jobs_in_the_native_mode(
    pg_server_url: str, empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FORCE_NATIVE_ENV, "1")
    migrate(empty_database_url)
    with connect(empty_database_url, autocommit=True) as conn:
        assert storage_mode(conn) == "native"
        assert run_due_timescale_jobs(conn, {}) == []


def test_a_failing_job_is_logged_and_the_others_still_run(
    timescale_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with connect(timescale_url) as conn:
        ((compression,),) = conn.execute(
            'SELECT alter_job(job_id, config => config || \'{"compress_after": "banana"}\')'
            " FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression'"
        ).fetchall()
        refreshes = sorted(
            job_id
            for (job_id,) in conn.execute(
                "SELECT job_id FROM timescaledb_information.jobs"
                " WHERE proc_name = 'policy_refresh_continuous_aggregate'"
            )
        )
        conn.commit()
    compression_id = int(compression[0])
    last_runs: dict[int, dt.datetime] = {}
    with connect(as_role(timescale_url, DEFAULT_OWNER_ROLE), autocommit=True) as conn:
        assert sorted(run_due_timescale_jobs(conn, last_runs)) == refreshes
    assert compression_id not in last_runs  # tried again at the next turn
    assert f"TimescaleDB job {compression_id} (policy_compression of readings) failed" in (
        caplog.text
    )
    assert "banana" in caplog.text
