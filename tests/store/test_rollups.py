"""Rollups equal a direct aggregate over the raw rows, after each incremental refresh and
before it (queries compute marked hours from raw rows)."""

from __future__ import annotations

import datetime as dt
import itertools
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import astuple

import psycopg
import pytest

from store.batches import ReadingRow, write_readings
from store.pool import connect
from store.readings import QueryError, consumption, query_readings
from store.rollups import refresh_rollups

pytestmark = pytest.mark.integration

START = dt.datetime(2026, 7, 1, 0, tzinfo=dt.UTC)
SINCE = START - dt.timedelta(days=1)
UNTIL = START + dt.timedelta(days=4)


def series(seed: int, hours: int = 60) -> list[ReadingRow]:
    """A temperature sensor and an energy register (with a reset) every ~7 minutes."""
    rng = random.Random(seed)
    rows: list[ReadingRow] = []
    register = 1000.0
    t = START.timestamp()
    end = t + hours * 3600
    while t < end:
        rows.append(ReadingRow("s1", "d1", "temperature", t, rng.uniform(18, 30), None, t))
        register += rng.uniform(0, 3)
        if rng.random() < 0.01:
            register = rng.uniform(0, 5)  # meter replaced
        rows.append(ReadingRow("s1", "m1", "energy_kwh", t, round(register, 3), None, t))
        t += rng.uniform(300, 540)
    return rows


def direct_stats(conn: psycopg.Connection, unit: str) -> dict[tuple, tuple]:
    rows = conn.execute(
        "SELECT site, device, metric, date_trunc(%s, ts, 'UTC'),"
        " count(*), sum(value), min(value), max(value) FROM readings GROUP BY 1, 2, 3, 4",
        (unit,),
    )
    return {r[:4]: (r[4], round(r[5], 6), r[6], r[7]) for r in rows}


def rolled_stats(conn: psycopg.Connection, table: str) -> dict[tuple, tuple]:
    rows = conn.execute(
        f"SELECT site, device, metric, bucket, value_count, value_sum, value_min, value_max"
        f" FROM {table}"
    )
    return {r[:4]: (r[4], round(r[5], 6), r[6], r[7]) for r in rows}


def reference_consumption(rows: list[ReadingRow], width_s: int) -> dict[float, float]:
    """Sum of positive differences per bucket of the later reading, in plain Python."""
    ordered = sorted((r.ts, r.value) for r in rows if r.metric == "energy_kwh")
    out: dict[float, float] = defaultdict(float)
    for (_, before), (ts, value) in itertools.pairwise(ordered):
        out[ts - ts % width_s] += max(value - before, 0.0)
    return out


def rolled_consumption(conn: psycopg.Connection, table: str) -> dict[float, float]:
    rows = conn.execute(f"SELECT bucket, consumption FROM {table} WHERE device = 'm1'")
    return {b.timestamp(): c for b, c in rows}


def rounded(points: Sequence[object]) -> list[tuple[object, ...]]:
    """Points as tuples with floats rounded: sums in another order differ in the last bits."""
    return [
        tuple(round(v, 6) if isinstance(v, float) else v for v in astuple(p))  # type: ignore[call-overload]
        for p in points
    ]


def assert_rollups_match(conn: psycopg.Connection, rows: list[ReadingRow]) -> None:
    assert rolled_stats(conn, "readings_hourly") == direct_stats(conn, "hour")
    assert rolled_stats(conn, "readings_daily") == direct_stats(conn, "day")
    for table, width in (("consumption_hourly", 3600), ("consumption_daily", 86400)):
        expected = reference_consumption(rows, width)
        got = rolled_consumption(conn, table)
        # The first reading has no predecessor: its bucket may hold only zero consumption.
        assert {k for k, v in got.items() if v} == {k for k, v in expected.items() if v}
        for bucket, value in expected.items():
            assert got[bucket] == pytest.approx(value, abs=1e-6)


def test_rollups_equal_direct_aggregates_after_incremental_refreshes(store_url: str) -> None:
    rows = series(1)
    late_rows = [r for i, r in enumerate(rows) if i % 9 == 0]
    on_time = [r for i, r in enumerate(rows) if i % 9 != 0]
    with connect(store_url) as conn:
        write_readings(conn, on_time)
        first = refresh_rollups(conn)
        assert first.hours >= 60 * 2
        assert_rollups_match(conn, on_time)

        # Late rows into old hours, including ones that change the next bucket's consumption.
        write_readings(conn, late_rows)
        second = refresh_rollups(conn)
        assert 0 < second.hours < first.hours + len(late_rows)
        assert_rollups_match(conn, rows)

        assert refresh_rollups(conn).hours == 0


def test_queries_are_current_before_and_after_a_refresh(store_url: str) -> None:
    rows = series(2, hours=30)
    with connect(store_url) as conn:
        write_readings(conn, rows[: len(rows) // 2])
        refresh_rollups(conn)
        write_readings(conn, rows[len(rows) // 2 :])  # marked, not yet rolled up
        before = {
            b: query_readings(conn, "s1", "d1", "temperature", SINCE, UNTIL, b)
            for b in ("1h", "2h", "1d", "1w", "15m")
        }
        energy_before = {
            b: consumption(conn, "s1", "m1", "energy_kwh", SINCE, UNTIL, b)
            for b in ("1h", "1d", "20m")
        }
        refresh_rollups(conn)
        for bucket, points in before.items():
            after = query_readings(conn, "s1", "d1", "temperature", SINCE, UNTIL, bucket)
            assert rounded(after) == rounded(points)
        for bucket, energy in energy_before.items():
            after = consumption(conn, "s1", "m1", "energy_kwh", SINCE, UNTIL, bucket)
            assert rounded(after) == rounded(energy)

        hourly = before["1h"]
        temps = [r.value for r in rows if r.metric == "temperature"]
        assert sum(p.count for p in hourly) == len(temps)
        assert max(p.max for p in hourly) == max(temps)
        daily = before["1d"]
        assert [p.bucket for p in daily] == [START, START + dt.timedelta(days=1)]
        assert sum(p.count for p in before["1w"]) == len(temps)

        expected = reference_consumption(rows, 3600)
        got = {p.bucket.timestamp(): p.consumption for p in energy_before["1h"]}
        for bucket, value in expected.items():
            assert got[bucket] == pytest.approx(value)
        (total,) = consumption(conn, "s1", "m1", "energy_kwh", SINCE, UNTIL)
        assert total.consumption == pytest.approx(sum(expected.values()))
        assert total.consumption == pytest.approx(sum(p.consumption for p in energy_before["1d"]))


def test_register_resets_never_count_negative(store_url: str) -> None:
    t = START.timestamp()
    values = [100.0, 101.5, 103.0, 2.0, 4.5]  # replaced after the third reading
    rows = [
        ReadingRow("s1", "m2", "energy_kwh", t + 600 * i, v, None, t) for i, v in enumerate(values)
    ]
    with connect(store_url) as conn:
        write_readings(conn, rows)
        refresh_rollups(conn)
        (point,) = consumption(
            conn, "s1", "m2", "energy_kwh", START, START + dt.timedelta(hours=1), "1h"
        )
        assert point.consumption == pytest.approx(1.5 + 1.5 + 2.5)
        assert point.resets == 1


def test_readings_of_one_stamp_follow_each_other_in_seq_order(store_url: str) -> None:
    # A gateway stamped seqs 2 and 3 in one millisecond; stored out of order on purpose.
    t = START.timestamp()
    rows = [
        ReadingRow("s1", "m3", "energy_kwh", t, 100.0, 1, t),
        ReadingRow("s1", "m3", "energy_kwh", t + 60, 102.0, 3, t),
        ReadingRow("s1", "m3", "energy_kwh", t + 60, 101.0, 2, t),
    ]
    hour = (START, START + dt.timedelta(hours=1))
    with connect(store_url) as conn:
        for row in rows:
            write_readings(conn, [row])
        # Heap order (seq 3 first), not the key's: the order must come from the queries.
        conn.execute("SET enable_indexscan = off")
        conn.execute("SET enable_bitmapscan = off")
        (raw_point,) = consumption(conn, "s1", "m3", "energy_kwh", *hour)
        refresh_rollups(conn, now=hour[1] + dt.timedelta(hours=1))
        (rolled,) = consumption(conn, "s1", "m3", "energy_kwh", *hour, "1h")
        raw = query_readings(conn, "s1", "m3", "energy_kwh", *hour)
    for point in (raw_point, rolled):
        assert (point.consumption, point.resets) == (pytest.approx(2.0), 0)
    assert [p.seq for p in raw] == [1, 2, 3]


def test_raw_queries_and_bad_input(store_url: str) -> None:
    rows = series(3, hours=2)
    with connect(store_url) as conn:
        write_readings(conn, rows)
        raw = query_readings(conn, "s1", "d1", "temperature", START, UNTIL)
        assert [p.value for p in raw] == [r.value for r in rows if r.metric == "temperature"]
        assert raw[0].ts == START
        for bad in ("1x", "0h", "h", "1.5h"):
            with pytest.raises(QueryError):
                query_readings(conn, "s1", "d1", "temperature", START, UNTIL, bad)
        with pytest.raises(QueryError):
            query_readings(conn, "s1", "d1", "temperature", UNTIL, START, "1h")
        with pytest.raises(QueryError):
            query_readings(conn, "s1", "d1", "temperature", START.replace(tzinfo=None), UNTIL)
        with pytest.raises(QueryError, match="supported dates"):
            far = dt.datetime(9999, 12, 31, tzinfo=dt.UTC)
            query_readings(conn, "s1", "d1", "temperature", far - dt.timedelta(days=1), far, "1w")
        with pytest.raises(QueryError, match="buckets"):
            query_readings(
                conn, "s1", "d1", "temperature", SINCE, UNTIL + dt.timedelta(days=999), "1m"
            )


def test_a_reading_rounded_into_the_next_hour_is_rolled_up_there(store_url: str) -> None:
    edge = (START + dt.timedelta(hours=1)).timestamp() - 1e-7  # stored as 01:00:00.000000
    with connect(store_url) as conn:
        write_readings(conn, [ReadingRow("s1", "d9", "co2", edge, 700.0, None, edge)])
        refresh_rollups(conn)
        assert rolled_stats(conn, "readings_hourly") == direct_stats(conn, "hour")


def test_the_open_hour_stays_marked_and_is_served_from_raw_rows(store_url: str) -> None:
    rows = series(4, hours=5)
    now = START + dt.timedelta(hours=2, minutes=30)
    with connect(store_url) as conn:
        write_readings(conn, rows)
        refresh_rollups(conn, now=now)
        # consumption_hourly is a refreshed table in both modes (readings_hourly is a
        # continuous aggregate under TimescaleDB).
        rolled = {b for (b,) in conn.execute("SELECT DISTINCT bucket FROM consumption_hourly")}
        # Hours 0 and 1, and hour 2 because it holds the reading after hour 1 (its
        # consumption depends on hour 1); hours 3 and 4 wait.
        assert rolled == {START + dt.timedelta(hours=h) for h in (0, 1, 2)}
        still_marked = conn.execute("SELECT min(bucket) FROM rollup_dirty").fetchone()
        assert still_marked == (START + dt.timedelta(hours=2),)
        points = query_readings(conn, "s1", "d1", "temperature", START, UNTIL, "1h")
        direct = direct_stats(conn, "hour")
        assert [(p.bucket, p.count) for p in points] == sorted(
            (key[3], value[0]) for key, value in direct.items() if key[1] == "d1"
        )
