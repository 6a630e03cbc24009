"""Native mode: partitions are created ahead and by writes, and retention drops old ones."""

from __future__ import annotations

import datetime as dt

import pytest

from store.batches import EventRow, PartitionCache, ReadingRow, write_events, write_readings
from store.mode import storage_mode
from store.partitions import apply_retention, ensure_partitions, existing_days
from store.pool import connect

pytestmark = pytest.mark.integration

TODAY = dt.date(2026, 7, 10)


def at(day: dt.date, hour: int = 12) -> float:
    return dt.datetime.combine(day, dt.time(hour), tzinfo=dt.UTC).timestamp()


@pytest.fixture
def native_url(store_url: str) -> str:
    with connect(store_url) as conn:
        if storage_mode(conn) != "native":
            pytest.skip("the database runs in TimescaleDB mode")
    return store_url


def test_partitions_are_created_ahead_once(native_url: str) -> None:
    with connect(native_url) as conn:
        created = ensure_partitions(conn, 3, today=TODAY)
        assert "readings_p20260710" in created
        assert "events_p20260713" in created
        assert len(created) == 8
        assert ensure_partitions(conn, 3, today=TODAY) == []
        assert existing_days(conn, "readings") == {TODAY + dt.timedelta(days=n) for n in range(4)}


def test_writes_create_the_partitions_of_their_days(native_url: str) -> None:
    # An edge backlog from days that were never created ahead still lands.
    days = [TODAY - dt.timedelta(days=n) for n in (0, 2, 5)]
    rows = [ReadingRow("s1", "d1", "temperature", at(d), 25.0, None, at(TODAY)) for d in days]
    event = EventRow("s1", "r1", at(days[2]), "patrol.done", None, None, 1, {}, at(TODAY))
    with connect(native_url) as conn:
        assert write_readings(conn, rows, PartitionCache()) == 3
        assert write_events(conn, [event], PartitionCache()) == 1
        assert existing_days(conn, "readings") == set(days)
        assert existing_days(conn, "events") == {days[2]}


def test_a_reading_rounded_into_the_next_day_finds_its_partition(native_url: str) -> None:
    edge = at(TODAY, 0) - 1e-7  # stored as TODAY 00:00:00.000000
    with connect(native_url) as conn:
        assert write_readings(conn, [ReadingRow("s1", "d1", "co2", edge, 1.0, None, edge)]) == 1
        stored = conn.execute("SELECT ts FROM readings").fetchone()
        assert stored == (dt.datetime.combine(TODAY, dt.time(), tzinfo=dt.UTC),)


def test_retention_drops_whole_old_days_only(native_url: str) -> None:
    days = [TODAY - dt.timedelta(days=n) for n in range(6)]
    rows = [
        ReadingRow("s1", "d1", "temperature", at(d, h), 25.0, None, at(TODAY))
        for d in days
        for h in (0, 23)
    ]
    with connect(native_url) as conn:
        write_readings(conn, rows)
        dropped = apply_retention(conn, 3, today=TODAY)
        # Older than 3 days before 07-10: 07-06 and 07-05 go, 07-07 (the cut-off day) stays.
        assert sorted(dropped) == ["readings_p20260705", "readings_p20260706"]
        remaining = conn.execute("SELECT min(ts), count(*) FROM readings").fetchone()
        assert remaining is not None
        assert remaining[0] == dt.datetime(2026, 7, 7, tzinfo=dt.UTC)
        assert remaining[1] == 8
        assert apply_retention(conn, 3, today=TODAY) == []
        with pytest.raises(ValueError):
            apply_retention(conn, 0)
