"""The ingest pipeline: MQTT messages → decode → one engine per site → one transaction per flush.

One thread owns the engines (they are not thread-safe) and the batch. It takes messages from the
ingress queue, decodes them, feeds readings and events to their site's engine and collects the
rows to store. A flush (every `flush_interval` or `batch_rows` rows, whichever comes first)
writes, in ONE transaction: the readings (COPY), events, dead letters, the engines' compliance
intervals and late readings and the alerts (`record_outputs`). Every `checkpoint_interval`, or
`CHECKPOINT_COST_FACTOR` times as long as the last checkpoint took if that is longer (or after
`max_unacked` messages), that transaction also saves each changed site's engine checkpoint
(only the parts that changed since the previous one: devices that took readings, instances
whose time-driven state moved), and only after such a commit are the MQTT messages taken since
the previous checkpoint acknowledged. So:

- a crash loses nothing: the broker redelivers every message taken since the last checkpoint
  (none of them was acknowledged) and the engines restart from that checkpoint;
- readings and events of redelivered messages already stored are absorbed by the storage keys;
  the engines judge them again from the checkpoint and emit the same outputs, which the stores
  absorb too (compliance intervals and late readings by key, `record_outputs` ignores an alert
  already raised with the same start or already resolved).

When PostgreSQL is unavailable the flush is retried with backoff while the batch is held; the
pipeline takes no new messages meanwhile, so the queue fills and the MQTT thread blocks
(back-pressure), and the broker keeps the rest.

Time: with `clock="wall"` the scheduler calls `request_advance(time.time())` every second and the
pipeline thread applies it to every engine (obligations and stale data move with the wall clock).
With `clock="data"` (replays, accelerated simulations) each site's engine advances to the
newest event time seen for that site.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
import psycopg
from prometheus_client import Counter, Gauge, Histogram
from psycopg_pool import ConnectionPool

from clausewatch.alerts.record import record_outputs
from ingest.decode import DeadLetter, Decoder, EventMessage, Reading, StatusMessage
from ingest.mqtt import IngressQueue, Message
from ingest.store.checkpoints import load_checkpoint, save_checkpoint
from ingest.store.writes import (
    Batch,
    EventRow,
    PartitionCache,
    ReadingRow,
    StatusRow,
    write_batch,
    write_compliance_intervals,
    write_dead_letters,
    write_device_status,
    write_late_readings,
)
from ingest.store.writes import DeadLetter as DeadLetterRow
from rules.clause import ClauseVersion
from rules.engine import SiteEngine
from rules.site import SiteModel
from rules.verdicts import ComplianceInterval, LateReading, Output

log = logging.getLogger(__name__)

Clock = Literal["wall", "data"]
AckFn = Callable[[list[tuple[int, int, int]]], None]

VALUES_STORED = Counter("clausewatch_reading_values", "Metric values committed to PostgreSQL")
BATCHES = Counter("clausewatch_batches", "Transactions committed by the pipeline")
FLUSH_FAILURES = Counter("clausewatch_flush_failures", "Flushes rolled back and retried")
FLUSH_SECONDS = Histogram(
    "clausewatch_flush_seconds",
    "Time of one flush transaction",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
QUEUE_DEPTH = Gauge("clausewatch_ingest_queue_depth", "Messages waiting for the pipeline")
INGEST_LAG = Gauge(
    "clausewatch_ingest_lag_seconds", "Commit time minus receive time of the oldest message"
)
ALERTS_RAISED = Counter(
    "clausewatch_alerts_raised", "Alerts raised, reopened or resolved", ["action"]
)
STATUS_MESSAGES = Counter("clausewatch_status_messages", "Device status messages", ["status"])

ENGINE_ERRORS = Counter(
    "clausewatch_engine_errors", "Readings or events the engine failed on (stored, not judged)"
)

RETRY_MIN_S = 0.5
RETRY_MAX_S = 30.0
# A checkpoint costs time in proportion to the devices changed since the previous one (the first
# after a start: the whole engine): checkpoints are spaced so that they take at most about a
# tenth of the pipeline's time.
CHECKPOINT_COST_FACTOR = 10.0
# A batch the database refuses (not merely unreachable) this many times becomes dead letters.
MAX_REJECTED_ATTEMPTS = 3


@dataclass
class _Pending:
    """Everything the next flush commits."""

    batch: Batch
    outputs: dict[str, list[Output]] = field(default_factory=dict)
    statuses: list[StatusRow] = field(default_factory=list)
    tokens: list[tuple[int, int, int]] = field(default_factory=list)
    touched_sites: set[str] = field(default_factory=set)
    oldest_received: float | None = None
    values: int = 0


class Pipeline:
    """Runs on its own thread between `start()` and `stop()`. See the module docstring."""

    def __init__(
        self,
        pool: ConnectionPool[Any],
        sites: Mapping[str, SiteModel],
        clauses: Sequence[ClauseVersion],
        decoder: Decoder,
        inbox: IngressQueue,
        ack: AckFn,
        *,
        standards: Mapping[str, str] | None = None,
        lateness: float = 5.0,
        batch_rows: int = 5000,
        flush_interval: float = 0.2,
        clock: Clock = "wall",
        checkpoint_interval: float = 1.0,
        max_unacked: int = 50_000,
    ) -> None:
        self.pool = pool
        self.sites = dict(sites)
        self.clauses = tuple(clauses)
        self.standards = dict(standards or {})
        self.decoder = decoder
        self.inbox = inbox
        self.ack = ack
        self.lateness = lateness
        self.batch_rows = batch_rows
        self.flush_interval = flush_interval
        self.clock = clock
        self.checkpoint_interval = checkpoint_interval
        # Below the subscriber's in-flight window (MQTT 5 Receive Maximum 65,535) by more than a
        # batch, so waiting for the next checkpoint never stalls delivery.
        self.max_unacked = max_unacked
        self._checkpoint_cost = 0.0  # seconds the last checkpoint's snapshots and saves took
        self.engines: dict[str, SiteEngine] = {}
        # Committed but not yet covered by a checkpoint: their acks wait for it.
        self._unacked: list[tuple[int, int, int]] = []
        self._dirty_sites: set[str] = set()
        self._last_checkpoint = time.monotonic()
        self._partitions = PartitionCache()
        self._batch_ids = 0
        self._pending = self._new_pending()
        self._advance_to: float | None = None
        self._advance_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failure: BaseException | None = None  # set when the thread died of a bug

    # -- lifecycle --

    def start(self) -> None:
        """Restores every site's engine from its checkpoint and starts the pipeline thread."""
        with self.pool.connection() as conn:
            for site_id, site in self.sites.items():
                self.engines[site_id] = self._restore(conn, site)
        self._thread = threading.Thread(target=self._run, name="ingest-pipeline", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stops taking messages, commits and acknowledges what was taken, and joins."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def request_advance(self, now: float) -> None:
        """Called by the scheduler (any thread): the engines move to `now` on the pipeline
        thread at its next turn (within `flush_interval`). Ignored with the data clock."""
        with self._advance_lock:
            if self._advance_to is None or now > self._advance_to:
                self._advance_to = now

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the loop --

    def _restore(self, conn: psycopg.Connection[Any], site: SiteModel) -> SiteEngine:
        checkpoint = load_checkpoint(conn, site.site.id)
        if checkpoint is not None:
            try:
                return SiteEngine.restore(
                    site,
                    self.clauses,
                    {**checkpoint.state, "parts": checkpoint.parts},
                    lateness=self.lateness,
                    standards=self.standards,
                )
            except (ValueError, KeyError, TypeError) as exc:
                log.error("checkpoint of %s unusable (%s); starting fresh", site.site.id, exc)
        return SiteEngine(site, self.clauses, lateness=self.lateness, standards=self.standards)

    def _run(self) -> None:
        try:
            last_flush = time.monotonic()
            while True:
                stopping = self._stop.is_set()
                wait = max(0.0, self.flush_interval - (time.monotonic() - last_flush))
                messages = [] if stopping else self.inbox.get_many(self.batch_rows, wait)
                if messages:
                    self._take(messages)
                self._apply_clock()
                pending = self._pending
                due = time.monotonic() - last_flush >= self.flush_interval
                if len(pending.batch) >= self.batch_rows or due or stopping:
                    self._flush()
                    last_flush = time.monotonic()
                    QUEUE_DEPTH.set(self.inbox.qsize())
                if stopping:
                    return
        except BaseException as exc:  # a bug: make it visible to the service, which exits
            self.failure = exc
            log.exception("ingest pipeline stopped by an unexpected error")
            raise

    def _take(self, messages: list[Message]) -> None:
        pending = self._pending
        batch = pending.batch
        decode = self.decoder.decode
        engines = self.engines
        if pending.oldest_received is None:
            pending.oldest_received = messages[0].received_at
        for message in messages:
            pending.tokens.append(message.token)
            for item in decode(message.topic, message.payload, message.received_at):
                if isinstance(item, Reading):
                    self._reading(item, engines[item.site], batch, pending)
                elif isinstance(item, DeadLetter):
                    batch.dead_letters.append(
                        DeadLetterRow(
                            item.received_at, item.topic, item.payload, item.reason, item.detail
                        )
                    )
                elif isinstance(item, EventMessage):
                    self._event(item, engines[item.site], batch, pending)
                elif isinstance(item, StatusMessage):
                    STATUS_MESSAGES.labels("online" if item.online else "offline").inc()
                    pending.statuses.append(
                        StatusRow(item.site, item.device, item.online, item.received_at)
                    )

    def _reading(
        self, reading: Reading, engine: SiteEngine, batch: Batch, pending: _Pending
    ) -> None:
        site, device, ts, seq = reading.site, reading.device, reading.ts, reading.seq
        append = batch.readings.append
        for metric, value in reading.metrics.items():
            append(
                ReadingRow(
                    site,
                    device,
                    metric,
                    ts,
                    value,
                    seq,
                    reading.received_at,
                    reading.broker_stamped,
                )
            )
        pending.values += len(reading.metrics)
        try:
            engine.observe(device, ts, seq, reading.metrics)
        except Exception:  # an engine bug must not stop ingestion; the reading is still stored
            _engine_error(reading.site, device)
        pending.touched_sites.add(site)
        if self.clock == "data":
            engine.advance(ts)

    def _event(
        self, message: EventMessage, engine: SiteEngine, batch: Batch, pending: _Pending
    ) -> None:
        event = message.event
        batch.events.append(
            EventRow(
                message.site,
                event.device,
                event.ts,
                event.type,
                event.space,
                event.actor,
                event.seq,
                event.attrs,
                message.received_at,
            )
        )
        try:
            engine.observe_event(event)
        except Exception:
            _engine_error(message.site, event.device)
        pending.touched_sites.add(message.site)
        if self.clock == "data":
            engine.advance(event.ts)

    def _apply_clock(self) -> None:
        if self.clock != "wall":
            return
        with self._advance_lock:
            now, self._advance_to = self._advance_to, None
        if now is None:
            return
        for site_id, engine in self.engines.items():
            engine.advance(now)
            self._pending.touched_sites.add(site_id)

    def _flush(self) -> None:
        pending = self._pending
        for site_id in pending.touched_sites:
            drained = self.engines[site_id].drain()
            if drained:
                pending.outputs.setdefault(site_id, []).extend(drained)
        # Time passing without data or verdicts changes nothing a restart would not redo.
        nothing_new = (
            not pending.tokens
            and not pending.outputs
            and not len(pending.batch)
            and not pending.statuses
        )
        elapsed = time.monotonic() - self._last_checkpoint
        checkpoint = (
            self._stop.is_set()
            or elapsed
            >= max(self.checkpoint_interval, CHECKPOINT_COST_FACTOR * self._checkpoint_cost)
            # Idle: a checkpoint costs no throughput now, and the acks need not wait.
            or (nothing_new and elapsed >= self.checkpoint_interval)
            or len(self._unacked) + len(pending.tokens) >= self.max_unacked
        )
        if nothing_new and not (checkpoint and self._unacked):
            return
        self._dirty_sites |= pending.touched_sites
        delay = RETRY_MIN_S
        failures = 0
        while True:
            started = time.monotonic()
            try:
                self._commit(pending, checkpoint)
                break
            except psycopg.Error as exc:
                FLUSH_FAILURES.inc()
                self._partitions.clear()  # partitions made in the rolled-back transaction are gone
                if self._stop.is_set():
                    log.error("flush failed while stopping (%s); the broker will redeliver", exc)
                    self._pending = self._new_pending()
                    return
                if not isinstance(exc, psycopg.OperationalError):
                    failures += 1
                    if failures >= MAX_REJECTED_ATTEMPTS:
                        self._reject(pending, exc)
                        checkpoint = True
                        break
                log.warning("flush failed (%s); retrying in %.1f s", exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, RETRY_MAX_S)
        FLUSH_SECONDS.observe(time.monotonic() - started)
        self._unacked.extend(pending.tokens)
        if checkpoint:
            self._checkpoint_saved()
        if pending.oldest_received is not None:
            INGEST_LAG.set(max(0.0, time.time() - pending.oldest_received))
        VALUES_STORED.inc(pending.values)
        BATCHES.inc()
        self._pending = self._new_pending()

    def _reject(self, pending: _Pending, error: Exception) -> None:
        """The database refuses this batch for a reason other than being unreachable (a bug or
        data it cannot hold): keep its rows as dead letters rather than lose them or stall
        ingestion forever. Its engine outputs are logged and dropped."""
        detail = f"{type(error).__name__}: {error}"[:2000]
        log.error(
            "batch %d rejected by the database (%s); %d outputs dropped, rows kept as dead letters",
            pending.batch.id,
            detail,
            sum(len(o) for o in pending.outputs.values()),
        )
        now = time.time()
        letters = list(pending.batch.dead_letters)
        letters.extend(
            DeadLetterRow(
                now,
                f"store/{type(row).__name__}",
                orjson.dumps(row._asdict()),
                "store_rejected",
                detail,
            )
            for rows in (pending.batch.readings, pending.batch.events)
            for row in rows
        )
        with self.pool.connection() as conn, conn.transaction():
            write_dead_letters(conn, letters)
            write_device_status(conn, pending.statuses)
            self._save_checkpoints(conn)

    def _commit(self, pending: _Pending, checkpoint: bool) -> None:
        pending.batch.attempt += 1
        with self.pool.connection() as conn, conn.transaction():
            write_batch(conn, pending.batch, self._partitions)
            write_device_status(conn, pending.statuses)
            for site_id, outputs in pending.outputs.items():
                write_compliance_intervals(
                    conn, (o for o in outputs if isinstance(o, ComplianceInterval))
                )
                write_late_readings(conn, (o for o in outputs if isinstance(o, LateReading)))
                result = record_outputs(conn, self.sites[site_id], outputs)
                ALERTS_RAISED.labels("raised").inc(result.raised)
                ALERTS_RAISED.labels("reopened").inc(result.reopened)
                ALERTS_RAISED.labels("resolved").inc(result.resolved)
            if checkpoint:
                started = time.monotonic()
                self._save_checkpoints(conn)
                self._checkpoint_cost = time.monotonic() - started

    def _save_checkpoints(self, conn: psycopg.Connection[Any]) -> None:
        """The changed parts of every engine that took input since the last checkpoint. The
        engines forget their changes only once the transaction commits (`_checkpoint_saved`),
        so a retried flush saves them again."""
        for site_id in self._dirty_sites:
            changes = self.engines[site_id].snapshot_changes()
            parts = changes.pop("parts")
            save_checkpoint(
                conn,
                site_id,
                changes,
                changes["clock"],
                parts=parts,
                replace_parts=changes["full"],
            )

    def _checkpoint_saved(self) -> None:
        for site_id in self._dirty_sites:
            self.engines[site_id].changes_saved()
        self.ack(self._unacked)
        self._unacked = []
        self._dirty_sites = set()
        self._last_checkpoint = time.monotonic()

    def _new_pending(self) -> _Pending:
        self._batch_ids += 1
        return _Pending(Batch(self._batch_ids))


def _engine_error(site: str, device: str) -> None:
    """Counts an engine failure; logs the traceback of the 1st, 2nd, 4th, 8th... so a repeating
    bug is visible without flooding the log."""
    ENGINE_ERRORS.inc()
    count = int(ENGINE_ERRORS._value.get())
    if count & (count - 1) == 0:
        log.exception("engine failed on input from %s/%s (failure #%d)", site, device, count)
