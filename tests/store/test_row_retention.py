"""Retention of the tables that are not partitioned by day: dead letters older than their
retention are deleted, and so are device statuses not updated for longer than theirs."""

from __future__ import annotations

import datetime as dt

import pytest

from store.partitions import delete_expired_rows
from store.pool import connect

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 7, 10, 12, tzinfo=dt.UTC)


def test_old_dead_letters_and_stale_statuses_are_deleted(store_url: str) -> None:
    with connect(store_url) as conn:
        for days in (0, 29, 31, 90):
            conn.execute(
                "INSERT INTO dead_letters (received_at, topic, payload, reason)"
                " VALUES (%s, %s, '\\x00', 'malformed_json')",
                (NOW - dt.timedelta(days=days), f"cw/s1/d{days}/telemetry"),
            )
        for device, days in (("gw-now", 0), ("gw-year", 399), ("gw-gone", 401)):
            conn.execute(
                "INSERT INTO device_status (site, device, online, received_at)"
                " VALUES ('s1', %s, false, %s)",
                (device, NOW - dt.timedelta(days=days)),
            )
        conn.commit()
        deleted = delete_expired_rows(
            conn, dead_letter_days=30, device_status_days=400, now=NOW, batch=1
        )
        assert deleted == {"dead_letters": 2, "device_status": 1}
        topics = conn.execute("SELECT topic FROM dead_letters ORDER BY topic").fetchall()
        assert topics == [("cw/s1/d0/telemetry",), ("cw/s1/d29/telemetry",)]
        devices = conn.execute("SELECT device FROM device_status ORDER BY device").fetchall()
        assert devices == [("gw-now",), ("gw-year",)]
        assert delete_expired_rows(conn, dead_letter_days=30, device_status_days=400, now=NOW) == {
            "dead_letters": 0,
            "device_status": 0,
        }


def test_retention_needs_at_least_a_day(store_url: str) -> None:
    with connect(store_url) as conn, pytest.raises(ValueError):
        delete_expired_rows(conn, dead_letter_days=0, device_status_days=400, now=NOW)
