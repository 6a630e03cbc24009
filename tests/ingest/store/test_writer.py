"""The batch writer: flush by size and by delay, back-pressure without loss, one transaction
with the hook, retry after a lost connection, rejected batches kept as dead letters."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from ingest.store.checkpoints import load_checkpoint, save_checkpoint
from ingest.store.pool import connect
from ingest.store.writer import BatchWriter, WriterClosed
from ingest.store.writes import Batch, DeadLetter, ReadingRow

pytestmark = pytest.mark.integration

T0 = 1_782_900_000.0  # 2026-07-01 10:00 UTC


def rows(n: int, device: str = "d1", start: int = 0) -> list[ReadingRow]:
    return [
        ReadingRow("s1", device, "temperature", T0 + i, 20.0 + i % 7, i, T0 + i)
        for i in range(start, start + n)
    ]


def count(url: str, table: str = "readings") -> int:
    with connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0]) if row else 0


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        time.sleep(0.01)


def test_a_full_batch_flushes_at_once_and_a_partial_one_after_the_interval(
    store_url: str,
) -> None:
    with BatchWriter(store_url, batch_rows=100, flush_interval_s=0.05) as writer:
        writer.put_many(rows(100))
        wait_until(lambda: writer.stats.done == 100)
        started = time.monotonic()
        writer.put(rows(1, start=500)[0])
        wait_until(lambda: writer.stats.done == 101)
        # Written by the interval alone (no flush call), within a generous bound.
        assert time.monotonic() - started < 2.0
    assert count(store_url) == 101
    assert writer.stats.readings_new == 101


def test_a_full_queue_blocks_the_producer_and_loses_nothing(store_url: str) -> None:
    release = threading.Event()

    def slow_hook(conn: psycopg.Connection[Any], batch: Batch) -> None:
        release.wait(10)

    writer = BatchWriter(
        store_url, batch_rows=50, flush_interval_s=0.01, queue_capacity=100, on_flush=slow_hook
    ).start()
    producer_done = threading.Event()

    def produce() -> None:
        writer.put_many(rows(400))
        producer_done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        # The writer holds one batch of 50 in its hook; the queue fills to capacity and stays.
        wait_until(lambda: writer.stats.accepted == 150 and writer.queued == 100)
        assert not producer_done.is_set()
        with pytest.raises(TimeoutError):
            writer.put(rows(1, start=1000)[0], timeout=0.05)
    finally:
        release.set()
        producer.join(10)
    assert producer_done.is_set()
    assert writer.flush(timeout=10)
    writer.close()
    assert count(store_url) == 400
    assert writer.stats.blocked_s > 0
    with pytest.raises(WriterClosed):
        writer.put(rows(1)[0])


def test_the_hook_commits_with_the_batch(store_url: str) -> None:
    def checkpoint(conn: psycopg.Connection[Any], batch: Batch) -> None:
        last = max(r.ts for r in batch.readings)
        save_checkpoint(conn, "s1", {"rows": len(batch.readings)}, last)

    with BatchWriter(store_url, batch_rows=10, on_flush=checkpoint) as writer:
        writer.put_many(rows(10))
        assert writer.flush(timeout=10)
    with connect(store_url) as conn:
        saved = load_checkpoint(conn, "s1")
    assert saved is not None
    assert saved.watermark == T0 + 9
    assert count(store_url) == 10


def test_a_lost_connection_is_retried_and_the_batch_kept(store_url: str) -> None:
    killed = threading.Event()

    def kill_once(conn: psycopg.Connection[Any], batch: Batch) -> None:
        # The server drops the writer's session mid-transaction, as in a restart.
        if not killed.is_set():
            killed.set()
            with connect(store_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))

    with BatchWriter(store_url, batch_rows=20, on_flush=kill_once) as writer:
        writer.put_many(rows(20))
        assert writer.flush(timeout=20)
    assert killed.is_set()
    assert writer.stats.retries >= 1
    assert count(store_url) == 20


def test_a_batch_the_database_refuses_becomes_dead_letters(store_url: str) -> None:
    def broken(conn: psycopg.Connection[Any], batch: Batch) -> None:
        conn.execute("SELECT 1 / 0")

    letter = DeadLetter(T0, "cw/s1/d1/telemetry", b"{", "malformed_json")
    with BatchWriter(store_url, batch_rows=10, on_flush=broken, max_attempts=2) as writer:
        writer.put_many([*rows(3), letter])
        assert writer.flush(timeout=20)
    assert writer.stats.rejected_batches == 1
    assert count(store_url) == 0
    with connect(store_url) as conn:
        reasons = conn.execute(
            "SELECT reason, count(*) FROM dead_letters GROUP BY reason ORDER BY reason"
        ).fetchall()
    assert reasons == [("malformed_json", 1), ("store_rejected", 3)]
