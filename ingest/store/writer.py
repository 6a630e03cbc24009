"""The batch writer: a bounded queue between the MQTT consumer and PostgreSQL.

Producers (the MQTT callback thread) `put` rows; one writer thread takes them in batches and
writes each batch in ONE transaction: readings by COPY, events, dead letters, then the
`on_flush(conn, batch)` hook (engine outputs, `record_outputs`, `save_checkpoint`), then
COMMIT. So what the hook records is never ahead of or behind the rows it covers.

Back-pressure policy `block`: when the queue holds `queue_capacity` rows, `put` blocks the
producer until the writer has made room (the MQTT client then stops acknowledging, and the
broker holds the rest). Time spent blocked is counted in `stats.blocked_s`. Nothing is dropped
and memory stays bounded.

Flush: when `batch_rows` rows are queued, or `flush_interval_s` after the oldest queued row
arrived, whichever comes first; `flush()` forces one and waits for it.

Failures: a lost connection or another operational error (server restart, network) rolls the
transaction back, keeps the batch, reconnects and retries with exponential backoff (capped at
`MAX_BACKOFF_S`) until it commits or the writer is closed; meanwhile the queue fills and
producers block. Any other database error (a bug or bad data) is retried `max_attempts` times;
then the batch's rows become dead letters (reason `store_rejected`, the row as JSON) in a
transaction of their own and the hook is not called for it (`stats.rejected_batches`).
The hook may run more than once for one batch (once per attempt): only the attempt that
commits counts. Compute in-memory work once per batch (`batch.scratch` survives retries).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg

from ingest.store.pool import connect
from ingest.store.writes import (
    Batch,
    DeadLetter,
    EventRow,
    PartitionCache,
    ReadingRow,
    StoreRow,
    write_batch,
    write_dead_letters,
)

log = logging.getLogger(__name__)

# Backoff after a lost connection: starts fast (a blip), caps low enough that ingestion resumes
# within seconds of the database coming back.
FIRST_BACKOFF_S = 0.05
MAX_BACKOFF_S = 5.0

FlushHook = Callable[[psycopg.Connection[Any], Batch], None]


class WriterClosed(RuntimeError):
    """`put` after `close`: the row was not accepted."""


@dataclass
class WriterStats:
    accepted: int = 0  # rows taken by put
    done: int = 0  # rows committed (written, deduplicated or dead-lettered)
    readings_new: int = 0
    events_new: int = 0
    dead_letters: int = 0
    batches: int = 0
    retries: int = 0
    rejected_batches: int = 0
    blocked_s: float = 0.0  # producer time spent waiting for room (back-pressure)
    last_flush_s: float = 0.0


class BatchWriter:
    """Writes rows put by producers in batches, on its own thread and connection.

    Use as a context manager, or call `start()` and `close()`. `close()` writes what is queued
    before returning (unless the database stays unreachable past its timeout).
    """

    def __init__(
        self,
        database_url: str,
        *,
        batch_rows: int = 5000,
        flush_interval_s: float = 0.2,
        queue_capacity: int = 50_000,
        on_flush: FlushHook | None = None,
        max_attempts: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if batch_rows <= 0 or queue_capacity <= 0 or flush_interval_s <= 0:
            raise ValueError("batch_rows, queue_capacity and flush_interval_s must be positive")
        self._url = database_url
        self.batch_rows = batch_rows
        self.flush_interval_s = flush_interval_s
        self.queue_capacity = queue_capacity
        self._on_flush = on_flush
        self._max_attempts = max_attempts
        self._clock = clock
        self._queue: collections.deque[StoreRow] = collections.deque()
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # producers wait here
        self._work = threading.Condition(self._lock)  # the writer waits here
        self._progress = threading.Condition(self._lock)  # flush() waits here
        self._oldest_at: float | None = None
        self._flush_requested = False
        self._closed = False
        self._stopped = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self._partitions = PartitionCache()
        self._next_batch_id = 1
        self._thread = threading.Thread(target=self._run, name="clausewatch-writer", daemon=True)
        self.stats = WriterStats()

    # producers ---------------------------------------------------------------------------

    def put(self, row: StoreRow, timeout: float | None = None) -> None:
        """Queues one row; blocks while the queue is full. Raises TimeoutError when `timeout`
        passes without room (the row is not queued) and WriterClosed after close()."""
        self.put_many((row,), timeout)

    def put_many(self, rows: Iterable[StoreRow], timeout: float | None = None) -> None:
        """Queues rows in order, blocking for room as needed (a list larger than the queue goes
        in as room appears). On TimeoutError the rows before the failing one are queued."""
        pending = list(rows)
        deadline = None if timeout is None else self._clock() + timeout
        with self._lock:
            while pending:
                if self._closed:
                    raise WriterClosed("the writer is closed")
                room = self.queue_capacity - len(self._queue)
                if room <= 0:
                    started = self._clock()
                    remaining = None if deadline is None else deadline - started
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError("the writer queue stayed full")
                    self._room.wait(remaining)
                    self.stats.blocked_s += self._clock() - started
                    continue
                was_empty = not self._queue
                if was_empty:
                    self._oldest_at = self._clock()
                taken, pending = pending[:room], pending[room:]
                self._queue.extend(taken)
                self.stats.accepted += len(taken)
                # Wake the writer only when its deadline starts or a batch is full: waking it
                # on every row would cost a context switch per row.
                if was_empty or len(self._queue) >= self.batch_rows:
                    self._work.notify()

    @property
    def queued(self) -> int:
        return len(self._queue)

    def flush(self, timeout: float | None = None) -> bool:
        """Writes everything queued so far and waits until it is committed. Returns False when
        `timeout` passed first."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._lock:
            target = self.stats.accepted
            self._flush_requested = True
            self._work.notify()
            while self.stats.done < target:
                if not self._thread.is_alive():
                    return False
                remaining = None if deadline is None else deadline - self._clock()
                if remaining is not None and remaining <= 0:
                    return False
                self._progress.wait(remaining if remaining is not None else 1.0)
        return True

    # lifecycle -----------------------------------------------------------------------------

    def start(self) -> BatchWriter:
        self._thread.start()
        return self

    def close(self, timeout: float | None = 30.0) -> None:
        """Stops accepting rows, writes what is queued, closes the connection."""
        with self._lock:
            self._closed = True
            self._work.notify()
            self._room.notify_all()
        if self._thread.ident is None:  # never started
            return
        self._thread.join(timeout)
        self._stopped.set()
        self._thread.join(1.0)
        if self._conn is not None and not self._thread.is_alive():
            self._conn.close()

    def __enter__(self) -> BatchWriter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # the writer thread ---------------------------------------------------------------------

    def _take(self) -> Batch | None:
        """Waits for a batch to be due and takes it; None when closed and empty."""
        with self._lock:
            while True:
                size = len(self._queue)
                if size >= self.batch_rows or (size and (self._closed or self._flush_requested)):
                    break
                if self._oldest_at is not None:
                    wait = self._oldest_at + self.flush_interval_s - self._clock()
                    if wait <= 0:
                        break
                elif self._closed:
                    return None
                else:
                    self._flush_requested = False
                    wait = None
                self._work.wait(wait)
            batch = Batch(self._next_batch_id)
            self._next_batch_id += 1
            take = min(size, self.batch_rows)
            popleft = self._queue.popleft
            add = batch.add
            for _ in range(take):
                add(popleft())
            # Rows still queued are at least as old as now: flush them without further delay.
            self._oldest_at = self._oldest_at if self._queue else None
            if not self._queue:
                self._flush_requested = False
            self._room.notify_all()
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                break
            self._write(batch)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            # Autocommit, so that `conn.transaction()` below is a real BEGIN ... COMMIT.
            self._conn = connect(self._url, autocommit=True)
            self._partitions.clear()
        return self._conn

    def _write(self, batch: Batch) -> None:
        backoff = FIRST_BACKOFF_S
        failures = 0
        while True:
            batch.attempt += 1
            started = time.perf_counter()
            try:
                conn = self._connection()
                with conn.transaction():
                    result = write_batch(conn, batch, self._partitions)
                    if self._on_flush is not None:
                        self._on_flush(conn, batch)
            except psycopg.OperationalError as exc:
                self._partitions.clear()
                self._drop_connection()
                log.warning("batch %d: database unreachable (%s); retrying", batch.id, exc)
            except Exception as exc:
                self._partitions.clear()
                failures += 1
                if failures >= self._max_attempts:
                    self._reject(batch, exc)
                    return
                log.warning("batch %d failed (%s); retrying", batch.id, exc)
            else:
                with self._lock:
                    stats = self.stats
                    stats.readings_new += result.readings_new
                    stats.events_new += result.events_new
                    stats.dead_letters += result.dead_letters
                    stats.batches += 1
                    stats.done += len(batch)
                    stats.last_flush_s = time.perf_counter() - started
                    self._progress.notify_all()
                return
            with self._lock:
                self.stats.retries += 1
            if self._stopped.wait(backoff):
                log.error("batch %d abandoned at shutdown: %d rows unwritten", batch.id, len(batch))
                return
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def _reject(self, batch: Batch, error: Exception) -> None:
        """Keeps a batch the database refuses as dead letters rather than losing it."""
        now = time.time()
        detail = f"{type(error).__name__}: {error}"[:2000]
        letters = list(batch.dead_letters)
        refused: list[ReadingRow | EventRow] = [*batch.readings, *batch.events]
        letters.extend(
            DeadLetter(
                now,
                f"store/{type(row).__name__}",
                orjson.dumps(row._asdict()),
                "store_rejected",
                detail,
            )
            for row in refused
        )
        log.error("batch %d rejected by the database (%s): kept as dead letters", batch.id, detail)
        backoff = FIRST_BACKOFF_S
        while True:
            try:
                conn = self._connection()
                with conn.transaction():
                    write_dead_letters(conn, letters)
                break
            except psycopg.Error as exc:
                self._drop_connection()
                log.warning("storing rejected batch %d failed (%s); retrying", batch.id, exc)
                if self._stopped.wait(backoff):
                    return
                backoff = min(backoff * 2, MAX_BACKOFF_S)
        with self._lock:
            self.stats.rejected_batches += 1
            self.stats.dead_letters += len(letters)
            self.stats.done += len(batch)
            self._progress.notify_all()
