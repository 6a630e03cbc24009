"""The ingest pipeline: MQTT messages → decode → one engine per site → one transaction per flush.

One thread owns the engines (they are not thread-safe) and the batch. It takes messages from the
ingress queue, decodes them, feeds readings and events to their site's engine and collects the
rows to store. A flush (as soon as the ingress queue is empty, else every `flush_interval` or
`batch_rows` rows, whichever comes first) writes, in ONE transaction: the readings (COPY),
events, dead letters, the engines' compliance intervals and late readings, and whatever the
injected output sink writes (the alerts). A committer thread writes it while the pipeline thread
takes the next batch, which flushes once that commit is done, or, when it is full and holds only
readings, events and dead letters, at once beside it on a second connection (a busy worker is
paced by one backend's COPY; `MAX_COMMITS_IN_FLIGHT`): such rows are kept apart by their keys
whichever commits first, while outputs and device statuses are committed in the order they were
made. The engines' outputs of a flush are drained into it on the pipeline thread before it is
handed over. A fenced pipeline (the cluster mode) commits one flush at a time.

The MQTT messages of a flush are acknowledged as soon as it and every flush before it have
committed, in the order they came (MQTT 5, 4.6); messages that did not come
from the broker (HTTP ingest, ingest/direct.py) carry a receipt instead of an ack token, settled
at the same point (or as rejected or abandoned). Every message gets a receive
stamp, strictly increasing (the `received_at` of its rows), in the order the engines take them.

Checkpoints: every `checkpoint_interval`, and at least `CHECKPOINT_COST_FACTOR` times their cost
apart, right after a flush committed, the pipeline begins a checkpoint of each site that took
input: the engine state at that instant, only the parts changed since the previous checkpoint
(devices that took readings, instances whose time-driven state moved), and the stamp of the
last message it covers. Its parts are captured a slice at a time between batches
(`CAPTURE_SLICE_S`), so readings keep flowing, and the checkpoint writer thread
(ingest/checkpoint_writer.py) saves it. So:

- a crash loses nothing: the broker redelivers every message whose flush did not commit (none
  of them was acknowledged); the engines restart from the last saved checkpoint and replay the
  stored readings and events received after its stamp (store/replay.py), in stamp
  order, before taking new messages; the outputs of that replay were committed with those rows;
- a message committed but not yet acknowledged is delivered again: its rows are absorbed by the
  storage keys, the engine drops it as a duplicate (same device and seq, or device, metric and
  ts) or as late, and repeated outputs are absorbed too (compliance intervals and late readings
  by key; the service's sink, alerts/record.py, ignores an alert already raised with the same
  start or already resolved);
- a crash between two flushes committing side by side may leave the later one stored and the
  earlier not: the later one's rows are replayed, the earlier one's messages delivered again
  after them, and a reading among them older than the lateness is judged as late input
  (re-judged from the checkpoint history), as any reading arriving out of order is.

When PostgreSQL is unavailable the flush is retried with backoff while the batch is held; the
pipeline takes no new messages meanwhile, so the queue fills and the MQTT thread blocks
(back-pressure), and the broker keeps the rest.

Configuration while running: `request_configuration` (the service, when a clause revision is
published or rolled back or a site model synced) builds new engines in the caller's thread; the
pipeline thread hands each the state of the engine it replaces after a commit.

Time: with `clock="wall"` the scheduler calls `request_advance(time.time())` every second and the
pipeline thread applies it to every engine (obligations and stale data move with the wall clock).
With `clock="data"` (replays, accelerated simulations) each site's engine advances to the
newest event time seen for that site.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import orjson
import psycopg
from prometheus_client import Counter, Gauge, Histogram
from psycopg_pool import ConnectionPool

from ingest.checkpoint_writer import CheckpointJob, CheckpointWriter, Courtesy
from ingest.decode import (
    DeadLetter,
    Decoder,
    DeviceIndex,
    EventMessage,
    Reading,
    StatusMessage,
)
from ingest.mqtt import IngressQueue, Receipt, ReceivedMessage, Settled
from ingest.retry import MAX_REJECTED_ATTEMPTS, RETRY_MAX_S, RETRY_MIN_S
from rules.clause import ClauseVersion
from rules.engine import SiteEngine
from rules.rejudge import Rejudged, StoredInput, rejudge
from rules.site import SiteModel
from rules.verdicts import ComplianceInterval, LateReading, Output
from store import registry
from store.batches import (
    Batch,
    DeadLetterRow,
    EventRow,
    PartitionCache,
    StatusRow,
    late_waiting,
    mark_late_rejudged,
    reading_rows,
    replace_compliance_intervals,
    write_batch,
    write_compliance_intervals,
    write_dead_letters,
    write_device_status,
    write_late_readings,
)
from store.checkpoints import (
    Checkpoint,
    HistoryPolicy,
    collector_paused,
    drop_history_after,
    encode_part,
    history_before,
    history_oldest,
    load_checkpoint,
)
from store.replay import REPLAY_AFTER, StoredReading, last_stamp, stored_since

log = logging.getLogger(__name__)

Clock = Literal["wall", "data"]
AckFn = Callable[[list[tuple[int, int, int]]], None]
# Called last inside every write transaction of the pipeline (flushes with their messages'
# tokens, re-judgings and checkpoints with none): the cluster mode records its stream position
# there and raises when another worker took the partition over (store/cluster.py), so nothing
# a stalled old owner wrote commits. Its exception is not retried: the pipeline stops.
Fence = Callable[[psycopg.Connection[Any], Sequence[tuple[int, int, int]]], None]


class OutputSink(Protocol):
    """Takes one site's engine outputs of a flush, inside the flush's transaction, so what it
    writes commits or rolls back with the rows that caused it. The pipeline stores compliance
    intervals and late readings itself; the service passes `alerts.record.record_outputs`, which
    turns violations into alerts, so ingest does not depend on alert code."""

    def __call__(
        self, conn: psycopg.Connection[Any], site: SiteModel, outputs: Sequence[Output], /
    ) -> object: ...


class Corrector(Protocol):
    """Corrects one site's alerts after late input was re-judged (`rules.rejudge`), inside the
    transaction that replaces its compliance intervals: the service passes
    `alerts.record.correct_alerts`."""

    def __call__(
        self, conn: psycopg.Connection[Any], site: SiteModel, rejudged: Rejudged, /
    ) -> object: ...


class StatusSink(Protocol):
    """Takes one site's status messages of a flush (`{prefix}/{site}/{id}/status`), inside the
    flush's transaction, after they are stored and before the outputs go to the sink:
    the service passes `alerts.inhibition.source_status`, which resolves a gateway's outage
    alert when it is back online."""

    def __call__(
        self, conn: psycopg.Connection[Any], site: SiteModel, statuses: Sequence[StatusRow], /
    ) -> object: ...


VALUES_STORED = Counter("clausewatch_reading_values", "Metric values committed to PostgreSQL")
BATCHES = Counter("clausewatch_batches", "Transactions committed by the pipeline")
BATCHES_BESIDE = Counter(
    "clausewatch_batches_beside",
    "Flushes handed to a committer while the flush before them was still committing",
)
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
STATUS_MESSAGES = Counter("clausewatch_status_messages", "Device status messages", ["status"])

REJUDGED = Counter(
    "clausewatch_rejudged", "Re-judgings of a site after late input (issue 17)", ["outcome"]
)
REJUDGE_SECONDS = Histogram(
    "clausewatch_rejudge_seconds",
    "Time to re-judge a site after late input: load, replay, store, correct",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ENGINE_ERRORS = Counter(
    "clausewatch_engine_errors", "Readings or events the engine failed on (stored, not judged)"
)

# Flushes being committed at once, each on its own connection: one PostgreSQL backend COPYing
# the readings set the pace of a busy worker (BENCHMARKS.md, "End to end").
MAX_COMMITS_IN_FLIGHT = 2
# Capturing a checkpoint's parts (about 30 µs each) takes at most this long per turn of the loop,
# so a message never waits behind a whole checkpoint (0.1-0.2 s at 1,000 busy devices).
CAPTURE_SLICE_S = 0.004
CAPTURE_PARTS_PER_STEP = 16
# A checkpoint costs in proportion to the devices that took readings since the previous one: at
# 100,000 devices each reading may be its device's only one in a minute. Checkpoints are spaced
# at least this many times their last cost (capture plus save), so they take at most about a
# tenth of the time and the cost per reading stays flat as the site grows. Nothing waits for
# them but the length of the replay after a crash.
CHECKPOINT_INTERVAL_S = 5.0  # the spacing of checkpoints when they cost little
CHECKPOINT_COST_FACTOR = 10.0
# A last-done time is input only this far inside the maximum age: the decoder checks the age
# again against the receive time, a little later (docs/api.md "Last-done times").
LAST_DONE_AGE_MARGIN_S = 60.0
STAMP_US = 1e-6  # receive stamps are whole microseconds, as timestamptz stores them


@dataclass(frozen=True, slots=True)
class LastDoneDecision:
    """What the pipeline made of a last-done time given while it runs (`request_last_done`).

    `input`: inside the maximum age and not before judging began: the caller feeds it as an
    event of each type in `events` (judged in event time, re-judged when late); nothing was
    applied. `baseline`: applied to the running engine at once (`SiteEngine.apply_last_done`),
    changing `instances` obligation instances. `events` empty: no obligation of that space
    takes the task."""

    kind: Literal["input", "baseline"]
    events: frozenset[str]
    instances: int = 0


@dataclass(frozen=True, slots=True)
class _LastDoneRequest:
    site: str
    space: str
    task: str
    at: float
    future: concurrent.futures.Future[LastDoneDecision]


@dataclass
class _RestoreTiming:
    """What `Pipeline.start` spent restoring engines from checkpoints, and replaying."""

    restored: int = 0
    restore_s: float = 0.0
    restore_cpu_s: float = 0.0  # of the restoring thread: what load and other threads add is not
    replayed: int = 0
    replay_s: float = 0.0
    replay_cpu_s: float = 0.0


@dataclass
class _Pending:
    """Everything the next flush commits."""

    batch: Batch
    outputs: dict[str, list[Output]] = field(default_factory=dict)
    statuses: list[StatusRow] = field(default_factory=list)
    tokens: list[tuple[int, int, int]] = field(default_factory=list)
    receipts: list[Receipt] = field(default_factory=list)  # messages not from the broker
    touched_sites: set[str] = field(default_factory=set)
    oldest_received: float | None = None


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
        sink: OutputSink,
        standards: Mapping[str, str] | None = None,
        lateness: float = 5.0,
        batch_rows: int = 5000,
        flush_interval: float = 0.2,
        clock: Clock = "wall",
        checkpoint_interval: float = CHECKPOINT_INTERVAL_S,
        corrector: Corrector | None = None,
        on_status: StatusSink | None = None,
        history_every: float = 3600.0,
        max_age: float = 7 * 86400.0,
        rejudge_every: float = 5.0,
        fence: Fence | None = None,
    ) -> None:
        """Late input (older than `lateness`) is re-judged after the flush that stores it, from
        a copy of the site's checkpoint kept every `history_every` engine seconds for `max_age`
        (the ingest's maximum age); `corrector` then corrects the site's alerts. A site is
        re-judged at most once every `rejudge_every` seconds (wall): late input arriving
        meanwhile waits for the next, which takes it all at once."""
        self.pool = pool
        self.sites = dict(sites)
        self.clauses = tuple(clauses)
        self.standards = dict(standards or {})
        self.decoder = decoder
        self.inbox = inbox
        self.ack = ack
        self.sink = sink
        self.lateness = lateness
        self.max_age = max_age
        self.batch_rows = batch_rows
        self.flush_interval = flush_interval
        self.clock = clock
        self.checkpoint_interval = checkpoint_interval
        self.engines: dict[str, SiteEngine] = {}
        self._last_stamp_us = 0  # receive stamp of the last message taken
        self._dirty_sites: set[str] = set()
        self._last_checkpoint = time.monotonic()
        self._capture: CheckpointJob | None = None  # being captured
        self._capture_seconds = 0.0  # spent capturing the checkpoint in flight
        self._capture_began = 0.0  # wall time it began (logged with its window)
        self._capturing: set[str] = set()  # its sites whose parts are not all captured yet
        self.corrector = corrector
        self.on_status = on_status
        self.rejudge_every = rejudge_every
        self._late: dict[str, float] = {}  # site -> oldest late input not re-judged yet
        self._rejudged_at: dict[str, float] = {}  # site -> monotonic time of its last re-judge
        self.fence = fence
        self._courtesy = Courtesy()  # for the capture's slices
        self._writer = CheckpointWriter(
            pool,
            HistoryPolicy(history_every, max_age),
            lateness,
            fence=None if fence is None else lambda conn: fence(conn, ()),
        )
        # Each committer thread's own: what one transaction learnt of partitions and staging
        # tables must not be taken for true by a transaction beside it.
        self._partitions = threading.local()
        self._batch_ids = 0
        self._pending = self._new_pending()
        # The flushes being committed on the committer threads, oldest first (their messages
        # are acknowledged in this order), and whether the batch gathered meanwhile waits.
        self._committer = concurrent.futures.ThreadPoolExecutor(
            MAX_COMMITS_IN_FLIGHT, "ingest-commit"
        )
        self._in_flight: collections.deque[tuple[concurrent.futures.Future[bool], _Pending]] = (
            collections.deque()
        )
        self._deferred = False
        # A fenced pipeline (the cluster mode) records its stream position in each commit: one
        # committed ahead of a flush that then failed would let the next owner skip that flush.
        self._commits_in_flight = 1 if fence is not None else MAX_COMMITS_IN_FLIGHT
        self._advance_to: float | None = None
        self._hold_until = 0.0  # the last request_advance's, under _advance_lock
        self._advance_lock = threading.Lock()
        # A configuration changed while running (request_configuration): what was asked for
        # last, the engines built for it, and those not switched to yet (under _advance_lock).
        self._prepare_lock = threading.Lock()
        self._target_clauses = self.clauses
        self._target_sites: dict[str, SiteModel] = dict(self.sites)
        self._prepared: dict[str, tuple[SiteEngine, SiteModel]] = {}
        self._prepared_clauses = self.clauses
        self._stop = threading.Event()
        self._checkpoint_requested = threading.Event()
        self._last_done: list[_LastDoneRequest] = []  # guarded by _advance_lock
        self._thread: threading.Thread | None = None
        self.failure: BaseException | None = None  # set when the thread died of a bug

    # -- lifecycle --

    def start(self) -> None:
        """Restores every site's engine from its checkpoint and the input stored after it, and
        starts the pipeline thread."""
        timing = _RestoreTiming()
        with self.pool.connection() as conn:
            for site_id, site in self.sites.items():
                self.engines[site_id] = self._restore(conn, site, timing)
                # Late input committed before a stop or crash and not re-judged yet.
                waiting = late_waiting(conn, site_id)
                if waiting is not None:
                    self._late[site_id] = waiting
        self._writer.start()
        if self._dirty_sites:
            # A site without a usable checkpoint gets one before any message, after every row
            # stored so far: what it takes from now on can then be replayed after a crash.
            self._begin_checkpoint()
            self._capture_slice(float("inf"))
            self._writer.wait_idle(RETRY_MAX_S)
        self._thread = threading.Thread(target=self._run, name="ingest-pipeline", daemon=True)
        self._thread.start()
        if timing.restored:
            # A failover's cost, by step (bench/cluster.py reads it).
            log.info(
                "%d site engine(s) restored: checkpoints loaded and built in %.3f s (%.3f s "
                "CPU), %d stored inputs replayed in %.3f s (%.3f s CPU)",
                timing.restored,
                timing.restore_s,
                timing.restore_cpu_s,
                timing.replayed,
                timing.replay_s,
                timing.replay_cpu_s,
            )

    def stop(self, timeout: float = 30.0) -> None:
        """Stops taking messages, commits and acknowledges what was taken, and joins."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._committer.shutdown()
        self._writer.stop(timeout)

    def close(self) -> None:
        """After `stop`, for a pipeline dropped while its process goes on (a partition handed
        over): its engines let go of their state (`SiteEngine.close`). Restored engines are
        frozen out of the collector; left in their cycles they would never be freed. A pipeline
        whose thread is still running (`stop` timed out) keeps them: it may still use them."""
        if self._thread is not None and self._thread.is_alive():
            log.warning("pipeline still running after stop: its engines are left as they are")
            return
        with self._advance_lock:
            dropped = [*self.engines.values(), *(engine for engine, _ in self._prepared.values())]
            self.engines.clear()
            self._prepared.clear()
        for engine in dropped:
            engine.close()

    def request_advance(self, now: float, hold_until: float = 0.0) -> None:
        """Called by the scheduler (any thread): the engines move to `now` on the pipeline
        thread at its next turn (within `flush_interval`), each no further than its site's
        input until the wall time `hold_until` (`held_clock`). Ignored with the data clock."""
        with self._advance_lock:
            if self._advance_to is None or now > self._advance_to:
                self._advance_to = now
            self._hold_until = hold_until

    def request_configuration(
        self,
        clauses: Sequence[ClauseVersion] | None = None,
        sites: Mapping[str, SiteModel] | None = None,
    ) -> None:
        """Any thread: judge with `clauses` (a clause revision published or rolled back) and
        these sites' new models (a site workbook imported, a file synced) from now on; sites
        this pipeline does not own are ignored. The new engines are built here, in the calling
        thread (binding is most of the cost); after its next commit the pipeline thread gives
        each the state of the engine it replaces (`SiteEngine.resume`): devices, spaces and
        instances that stay keep their state, new ones start fresh, those gone are dropped, new
        devices are decoded. Raises `rules.engine.BindingError` (nothing changes) when a site
        cannot judge the new configuration."""
        with self._prepare_lock:
            target_clauses = self._target_clauses if clauses is None else tuple(clauses)
            changed = {
                site_id: model for site_id, model in (sites or {}).items() if site_id in self.sites
            }
            target_sites = {**self._target_sites, **changed}
            rebuilt = list(target_sites) if clauses is not None else list(changed)
            if not rebuilt:
                return
            with self.pool.connection() as conn:
                done = {
                    site_id: {
                        key: at.timestamp() for key, at in registry.last_done(conn, site_id).items()
                    }
                    for site_id in rebuilt
                }
            built = {
                site_id: (
                    SiteEngine(
                        target_sites[site_id],
                        target_clauses,
                        lateness=self.lateness,
                        standards=self.standards,
                        last_done=done[site_id],
                    ),
                    target_sites[site_id],
                )
                for site_id in rebuilt
            }
            self._target_clauses, self._target_sites = target_clauses, target_sites
            with self._advance_lock:
                for site_id in built.keys() & self._prepared.keys():
                    self._prepared[site_id][0].close()  # prepared, superseded before its switch
                self._prepared.update(built)
                self._prepared_clauses = target_clauses

    def request_last_done(
        self, site: str, space: str, task: str, at: float
    ) -> concurrent.futures.Future[LastDoneDecision]:
        """Any thread: `space` of `site` last met `task` (a clause id or an event type) at `at`
        (the registry changed while running). The pipeline thread decides between flushes,
        within `flush_interval`, and the future holds what it made of it (LastDoneDecision).
        Raises KeyError for a site this pipeline does not judge, RuntimeError when stopping
        (requests left at the stop fail with it too)."""
        if site not in self.sites:
            raise KeyError(site)
        if self._stop.is_set():
            raise RuntimeError("the ingest pipeline is stopping")
        future: concurrent.futures.Future[LastDoneDecision] = concurrent.futures.Future()
        with self._advance_lock:
            self._last_done.append(_LastDoneRequest(site, space, task, at, future))
        return future

    def request_checkpoint(self) -> None:
        """Any thread: begin a checkpoint after the next flush, whatever the spacing (before a
        planned restart, to keep its replay short; benchmarks, to start from a saved state).
        `checkpoint_pending` says when it is done."""
        self._checkpoint_requested.set()

    @property
    def checkpoint_pending(self) -> bool:
        """Any thread: a checkpoint is requested, being captured or saved, or was dropped and
        not retried yet. False once everything committed before the request is stored (at once
        when nothing changed since the last save)."""
        return (
            self._checkpoint_requested.is_set()
            or self._capture is not None
            or not self._writer.idle
            or self._writer.dropped_any
        )

    @property
    def checkpoints_saved(self) -> int:
        return self._writer.saved

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the loop --

    def _restore(
        self, conn: psycopg.Connection[Any], site: SiteModel, timing: _RestoreTiming
    ) -> SiteEngine:
        site_id = site.site.id
        started, started_cpu = time.perf_counter(), time.thread_time()
        checkpoint = load_checkpoint(conn, site_id)
        # Last-done times of the registry (site file or API): where a new obligation starts.
        done = {key: at.timestamp() for key, at in registry.last_done(conn, site_id).items()}
        if checkpoint is not None:
            try:
                engine = restore_engine(
                    site,
                    self.clauses,
                    {**checkpoint.state, "parts": checkpoint.parts},
                    lateness=self.lateness,
                    standards=self.standards,
                    last_done=done,
                )
            except (ValueError, KeyError, TypeError) as exc:
                log.error("checkpoint of %s unusable (%s); starting fresh", site_id, exc)
            else:
                restored, restored_cpu = time.perf_counter(), time.thread_time()
                timing.replayed += self._replay(conn, engine, checkpoint)
                timing.restored += 1
                timing.restore_s += restored - started
                timing.restore_cpu_s += restored_cpu - started_cpu
                timing.replay_s += time.perf_counter() - restored
                timing.replay_cpu_s += time.thread_time() - restored_cpu
                self._apply_baselines(engine, done)
                return engine
        self._dirty_sites.add(site_id)
        stored = last_stamp(conn, site_id)  # the input of an engine before this one
        if stored is not None:
            self._last_stamp_us = max(self._last_stamp_us, round(stored / STAMP_US))
        return SiteEngine(
            site, self.clauses, lateness=self.lateness, standards=self.standards, last_done=done
        )

    def _apply_baselines(self, engine: SiteEngine, done: Mapping[tuple[str, str], float]) -> None:
        """The registry's last-done times given after the state `engine` was restored from
        (a checkpoint saved before a baseline was applied, or a re-judge from an older copy)
        are applied again; one not later than an instance's last event changes nothing."""
        for (space, task), at in done.items():
            if engine.apply_last_done(space, task, at):
                self._pending.touched_sites.add(engine.site.site.id)
                self._dirty_sites.add(engine.site.site.id)

    def _replay(
        self, conn: psycopg.Connection[Any], engine: SiteEngine, checkpoint: Checkpoint
    ) -> int:
        """Feeds `engine` the readings and events stored after `checkpoint`'s stamp, and says
        how many. Their outputs were committed with them; the first flush records them again
        (absorbed)."""
        after = checkpoint.state.get(REPLAY_AFTER)
        if after is None:  # saved when messages were acknowledged only by checkpoints
            return 0
        site_id = checkpoint.site
        now = checkpoint.state.get("now")
        ts_floor = None if now is None else now - self.lateness
        replayed = 0
        last = after
        for stamp, item in stored_since(conn, site_id, after, ts_floor):
            last = stamp
            try:
                if isinstance(item, StoredReading):
                    engine.observe(item.device, item.ts, item.seq, item.metrics)
                else:
                    engine.observe_event(item)
            except Exception:  # as when it was first taken: stored, not judged
                _engine_error(site_id, item.device)
                continue
            if self.clock == "data":
                engine.advance(item.ts)
            replayed += 1
        # New stamps follow the replayed ones even if the wall clock went back meanwhile.
        self._last_stamp_us = max(self._last_stamp_us, round(last / STAMP_US))
        if replayed:
            log.info("%s: replayed %d stored inputs after its checkpoint", site_id, replayed)
            self._pending.touched_sites.add(site_id)
            self._dirty_sites.add(site_id)
        return replayed

    def _run(self) -> None:
        try:
            last_flush = time.monotonic()
            while True:
                stopping = self._stop.is_set()
                wait = max(0.0, self.flush_interval - (time.monotonic() - last_flush))
                if self._capture is not None:
                    wait = 0.0  # no message waiting: spend the time capturing the checkpoint
                messages = [] if stopping else self.inbox.get_many(self.batch_rows, wait)
                if messages:
                    self._take(messages)
                self._apply_clock()
                self._apply_last_done()
                pending = self._pending
                due = time.monotonic() - last_flush >= self.flush_interval
                # Nothing more waiting: commit now (the next batch gathers while this commits).
                drained = bool(messages) and self.inbox.qsize() == 0
                full = len(pending.batch) >= self.batch_rows
                if full or due or drained or stopping or self._deferred:
                    self._collect(only_done=True)
                    self._drain(pending)
                    # A second commit in flight for a full batch only: under load the batches
                    # stay full, and fewer commits cost less CPU than more of them.
                    room = not self._in_flight or (
                        full and len(self._in_flight) < self._commits_in_flight and _beside(pending)
                    )
                    if not room and (full or stopping or not messages):
                        # A full batch waits for the commits in flight, and so does one when
                        # nothing else arrives to take meanwhile.
                        self._collect()
                        room = True
                    self._deferred = not room
                    if not self._deferred:
                        self._flush()
                        last_flush = time.monotonic()
                        QUEUE_DEPTH.set(self.inbox.qsize())
                if stopping:
                    self._collect()
                    self._final_checkpoint()
                    self._refuse_last_done()
                    return
                self._capture_slice(CAPTURE_SLICE_S)
        except BaseException as exc:  # a bug: make it visible to the service, which exits
            self.failure = exc
            log.exception("ingest pipeline stopped by an unexpected error")
            raise

    def _take(self, messages: list[ReceivedMessage]) -> None:
        pending = self._pending
        batch = pending.batch
        decode = self.decoder.decode
        engines = self.engines
        if pending.oldest_received is None:
            pending.oldest_received = messages[0].received_at
        stamp_us = self._last_stamp_us
        take_token = pending.tokens.append
        add_reading = batch.add_reading
        touched = pending.touched_sites
        data_clock = self.clock == "data"
        for topic, payload, received_at, token, receipt in messages:
            if receipt is None:
                take_token(token)
            else:
                pending.receipts.append(receipt)
            # Strictly increasing in the order taken, whatever the wall clock does: the order of
            # a replay after a crash (see the module docstring).
            stamp_us += 1
            received_us = int(received_at / STAMP_US)
            if received_us > stamp_us:
                stamp_us = received_us
            items = decode(topic, payload, stamp_us * STAMP_US)
            if receipt is not None:
                receipt.decoded(items)
            for item in items:
                if isinstance(item, Reading):
                    # What _reading does, inline: this runs for every reading.
                    add_reading(item)
                    site, device, ts = item.site, item.device, item.ts
                    engine = engines[site]
                    try:
                        engine.observe(device, ts, item.seq, item.metrics)
                    except Exception:  # an engine bug must not stop ingestion; still stored
                        _engine_error(site, device)
                    touched.add(site)
                    if data_clock:
                        engine.advance(ts)
                elif isinstance(item, DeadLetter):
                    batch.dead_letters.append(
                        DeadLetterRow(
                            item.received_at,
                            item.topic,
                            item.payload,
                            item.reason,
                            item.detail,
                            item.truncated,
                        )
                    )
                elif isinstance(item, EventMessage):
                    self._event(item, engines[item.site], batch, pending)
                elif isinstance(item, StatusMessage):
                    STATUS_MESSAGES.labels("online" if item.online else "offline").inc()
                    pending.statuses.append(
                        StatusRow(
                            item.site, item.device, item.online, item.received_at, item.sources
                        )
                    )
        self._last_stamp_us = stamp_us

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
            now, self._advance_to, hold_until = self._advance_to, None, self._hold_until
        if now is None:
            return
        wall = time.time()
        for site_id, engine in self.engines.items():
            engine.advance(held_clock(now, engine_newest(engine), hold_until, wall))
            self._pending.touched_sites.add(site_id)

    def _apply_last_done(self) -> None:
        """The last-done times requested since the previous turn (`request_last_done`): input
        when inside the maximum age and not before the engine began judging, else a baseline
        applied to the engine now; its outputs go to the next flush."""
        with self._advance_lock:
            requests, self._last_done = self._last_done, []
        for request in requests:
            engine = self.engines[request.site]
            events = engine.last_done_events(request.space, request.task)
            now = engine_now(engine)
            judging = now > float("-inf")
            oldest_input = now - self.max_age + LAST_DONE_AGE_MARGIN_S
            if events and judging and request.at >= max(engine_start(engine), oldest_input):
                decision = LastDoneDecision("input", events)
            else:
                try:
                    changed = engine.apply_last_done(request.space, request.task, request.at)
                except Exception as exc:  # an engine bug must not stop ingestion
                    _engine_error(request.site, "last-done")
                    request.future.set_exception(exc)
                    continue
                self._pending.touched_sites.add(request.site)
                decision = LastDoneDecision("baseline", events, changed)
            request.future.set_result(decision)

    def _refuse_last_done(self) -> None:
        """At stop: the last-done times not taken any more (they count from the next start)."""
        with self._advance_lock:
            requests, self._last_done = self._last_done, []
        for request in requests:
            request.future.set_exception(RuntimeError("the ingest pipeline stopped"))

    def _drain(self, pending: _Pending) -> None:
        """The engines' outputs so far go to `pending`."""
        for site_id in pending.touched_sites:
            drained = self.engines[site_id].drain()
            if drained:
                pending.outputs.setdefault(site_id, []).extend(drained)

    def _flush(self) -> None:
        pending = self._pending
        self.decoder.report()
        self._drain(pending)
        # Time passing without data or verdicts changes nothing a restart would not redo.
        nothing_new = (
            not pending.tokens
            and not pending.receipts
            and not pending.outputs
            and not len(pending.batch)
            and not pending.statuses
        )
        if not nothing_new:
            # The committer thread writes it while this thread takes the next batch.
            self._pending = self._new_pending()
            before = self._in_flight[-1][0] if self._in_flight else None
            if before is not None:
                BATCHES_BESIDE.inc()
            self._in_flight.append(
                (self._committer.submit(self._commit_batch, pending, before), pending)
            )
        if self._sync_work_due(idle=nothing_new):
            # Everything taken so far committed first: then a new configuration may take over
            # (clause revisions, site models synced), late input may be re-judged, a
            # checkpoint may begin (it covers only committed input).
            self._collect()
            self._switch_configuration()
            self._rejudge_due()
            if self._checkpoint_due(idle=nothing_new):
                self._begin_checkpoint()

    def _sync_work_due(self, *, idle: bool) -> bool:
        """Something that must see every taken message committed is due: a configuration to
        switch to, late input to re-judge, a checkpoint to begin."""
        if self._prepared or self._checkpoint_due(idle=idle):
            return True
        now = time.monotonic()
        return any(self._rejudge_wanted(site_id, now) for site_id in self._late)

    def _commit_batch(
        self, pending: _Pending, before: concurrent.futures.Future[bool] | None
    ) -> bool:
        """On a committer thread: commits `pending` (with retries), then, once the flush
        `before` it is done, acknowledges its messages and settles its receipts; false when
        stopping made it give up. Acknowledgements keep the order the messages came in
        (MQTT 5, 4.6); one whose flush before gave up is left to the broker, which delivers
        it again (its rows are stored: the redelivery is absorbed)."""
        try:
            if not self._commit_with_retries(pending):
                return False
            if before is not None and not before.result():
                _settle(pending, "abandoned")
                return True
            self._acknowledge(pending.tokens)
            _settle(pending, "committed")
            if pending.oldest_received is not None:
                INGEST_LAG.set(max(0.0, time.time() - pending.oldest_received))
            VALUES_STORED.inc(pending.batch.values)
            BATCHES.inc()
            return True
        finally:
            self.inbox.wake()  # a batch deferred behind this commit may go now

    def _collect(self, *, only_done: bool = False) -> None:
        """Waits for the commits in flight (`only_done`: takes those done, oldest first, and
        waits for none) and takes what they change for this thread: the sites to checkpoint
        and the late input to re-judge. Re-raises a bug of a committer thread."""
        in_flight = self._in_flight
        while in_flight and (not only_done or in_flight[0][0].done()):
            committing, pending = in_flight.popleft()
            if not committing.result():
                continue
            self._dirty_sites |= pending.touched_sites
            for site_id, oldest in _late_by_site(pending.outputs).items():
                self._late[site_id] = min(oldest, self._late.get(site_id, oldest))

    def _commit_with_retries(self, pending: _Pending) -> bool:
        """Commits the batch, retrying with backoff while PostgreSQL is unavailable; false when
        stopping made it give up (the broker redelivers)."""
        delay = RETRY_MIN_S
        failures = 0
        while True:
            started = time.monotonic()
            try:
                self._commit(pending)
                break
            except psycopg.Error as exc:
                FLUSH_FAILURES.inc()
                self._partition_cache().clear()  # made in the rolled-back transaction: gone
                if self._stop.is_set():
                    log.error("flush failed while stopping (%s); the broker will redeliver", exc)
                    _settle(pending, "abandoned")
                    return False
                if not isinstance(exc, psycopg.OperationalError):
                    failures += 1
                    if failures >= MAX_REJECTED_ATTEMPTS:
                        self._reject(pending, exc)
                        break
                log.warning("flush failed (%s); retrying in %.1f s", exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, RETRY_MAX_S)
        FLUSH_SECONDS.observe(time.monotonic() - started)
        return True

    def _partition_cache(self) -> PartitionCache:
        """This committer thread's."""
        cache: PartitionCache | None = getattr(self._partitions, "cache", None)
        if cache is None:
            cache = self._partitions.cache = PartitionCache()
        return cache

    def _acknowledge(self, tokens: list[tuple[int, int, int]]) -> None:
        if not tokens:
            return
        try:
            self.ack(tokens)
        except Exception:  # the broker redelivers what was not acknowledged: log, go on
            log.exception("acknowledging %d messages failed", len(tokens))

    # -- checkpoints --

    def _checkpoint_due(self, *, idle: bool) -> bool:
        if self._capture is not None or not self._writer.idle:
            return False
        if not (self._dirty_sites or self._writer.dropped_any):
            self._checkpoint_requested.clear()  # what is stored is current: nothing to take
            return False
        elapsed = time.monotonic() - self._last_checkpoint
        spacing = max(
            self.checkpoint_interval,
            CHECKPOINT_COST_FACTOR * (self._capture_seconds + self._writer.last_save_seconds),
        )
        return (
            self._stop.is_set()
            or self._checkpoint_requested.is_set()
            or elapsed >= spacing
            # Idle: a checkpoint costs no throughput now, and it shortens a replay.
            or (idle and elapsed >= self.checkpoint_interval)
        )

    def _begin_checkpoint(self) -> None:
        # The job exists before the request and a dropped save are let go, so that
        # `checkpoint_pending`, read from other threads, stays true all along.
        self._capture = CheckpointJob({}, self._last_stamp_us * STAMP_US)
        self._checkpoint_requested.clear()
        if self._writer.take_dropped():
            # Those parts were never stored: this checkpoint takes every part of every site.
            self._dirty_sites = set(self.engines)
            for engine in self.engines.values():
                engine.checkpoint_lost()
        for site_id in self._dirty_sites:
            # Each part encoded as it is captured: the job holds bytes, not the parts' objects.
            self.engines[site_id].begin_checkpoint(functools.partial(encode_part, site_id))
        self._capture_seconds = 0.0
        self._capture_began = time.time()
        self._capturing = set(self._dirty_sites)
        self._dirty_sites = set()
        self._last_checkpoint = time.monotonic()

    def _capture_slice(self, budget: float) -> None:
        """Captures parts of the checkpoint begun for up to `budget` seconds; hands it to the
        writer once complete."""
        job = self._capture
        if job is None:
            return
        started = time.monotonic()
        deadline = started + budget
        try:
            for site_id in list(self._capturing):
                engine = self.engines[site_id]
                while True:
                    checkpoint = engine.capture(CAPTURE_PARTS_PER_STEP)
                    self._courtesy()  # the commit in flight gets the lock: Courtesy
                    if checkpoint is not None:
                        job.checkpoints[site_id] = checkpoint
                        self._capturing.discard(site_id)
                        break
                    if time.monotonic() >= deadline:
                        return
        finally:
            self._capture_seconds += time.monotonic() - started
        # Capture runs in slices between batches: the window spans them, the busy time is theirs.
        log.debug(
            "checkpoint captured: %d site(s), %d part(s), from %.6f for %.1f ms (%.1f ms busy)",
            len(job.checkpoints),
            sum(len(c["parts"]) for c in job.checkpoints.values()),
            self._capture_began,
            (time.time() - self._capture_began) * 1000,
            self._capture_seconds * 1000,
        )
        self._writer.submit(job)
        self._capture = None  # after the writer took it: `checkpoint_pending` has no gap

    def _final_checkpoint(self) -> None:
        """At stop: completes the checkpoint in flight, then one covering everything committed,
        and waits for the writer."""
        self._capture_slice(float("inf"))
        self._writer.wait_idle(RETRY_MAX_S)
        if self._writer.idle and self._dirty_sites:
            self._begin_checkpoint()
            self._capture_slice(float("inf"))
        self._writer.wait_idle(RETRY_MAX_S)

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
            for rows in (reading_rows(pending.batch.readings), pending.batch.events)
            for row in rows
        )
        with self.pool.connection() as conn, conn.transaction():
            write_dead_letters(conn, letters)
            write_device_status(conn, pending.statuses)
        _settle(pending, "rejected")

    def _commit(self, pending: _Pending) -> None:
        with self.pool.connection() as conn, conn.transaction():
            write_batch(conn, pending.batch, self._partition_cache())
            write_device_status(conn, pending.statuses)
            if self.on_status is not None:
                by_site: dict[str, list[StatusRow]] = {}
                for status in pending.statuses:
                    by_site.setdefault(status.site, []).append(status)
                for site_id, statuses in by_site.items():
                    if site_id in self.sites:
                        self.on_status(conn, self.sites[site_id], statuses)
            for site_id, outputs in pending.outputs.items():
                write_compliance_intervals(
                    conn, (o for o in outputs if isinstance(o, ComplianceInterval))
                )
                write_late_readings(conn, (o for o in outputs if isinstance(o, LateReading)))
                self.sink(conn, self.sites[site_id], outputs)
            if self.fence is not None:
                self.fence(conn, pending.tokens)

    # -- configuration changed while running --

    def _switch_configuration(self) -> None:
        with self._advance_lock:
            prepared, self._prepared = self._prepared, {}
            clauses = self._prepared_clauses
        if not prepared:
            return
        started = time.monotonic()
        # The checkpoint in flight holds the engines about to be replaced: finish and save it.
        self._capture_slice(float("inf"))
        self._writer.wait_idle(RETRY_MAX_S)
        for site_id, (engine, model) in prepared.items():
            replaced = self.engines[site_id]
            engine.resume(replaced.snapshot())
            self.engines[site_id] = engine
            replaced.close()  # frozen out of the collector: freed by reference counts alone
            self._dirty_sites.add(site_id)
            if model is not self.sites[site_id]:
                self.sites[site_id] = model
                self.decoder.index = DeviceIndex(
                    {**self.decoder.index.devices, **DeviceIndex.from_sites([model]).devices}
                )
        self.clauses = clauses
        log.info(
            "configuration changed: %d sites switched in %.2f s",
            len(prepared),
            time.monotonic() - started,
        )

    # -- late input --

    def _rejudge_wanted(self, site_id: str, now: float) -> bool:
        """Late input of `site_id` is waiting and may be re-judged now (at most once every
        `rejudge_every` seconds a site, at once when stopping)."""
        last = self._rejudged_at.get(site_id)
        return self._stop.is_set() or last is None or now - last >= self.rejudge_every

    def _rejudge_due(self) -> None:
        now = time.monotonic()
        for site_id in list(self._late):
            if self._rejudge_wanted(site_id, now):
                oldest = self._late.pop(site_id)
                self._rejudged_at[site_id] = now
                try:
                    self._rejudge(site_id, oldest)
                except psycopg.Error as exc:  # nothing changed: try again at the next turn
                    log.warning("%s: re-judging late input failed (%s); will retry", site_id, exc)
                    self._late[site_id] = min(oldest, self._late.get(site_id, oldest))
                    REJUDGED.labels("failed").inc()
                except Exception:  # a bug: the late input stays unjudged, ingestion goes on
                    log.exception("%s: re-judging late input failed", site_id)
                    REJUDGED.labels("failed").inc()

    def _rejudge(self, site_id: str, oldest: float) -> None:
        """Judges the late input of `site_id` (the oldest at event time `oldest`), committed
        by the flush just done: an engine restored from the newest kept checkpoint before it
        takes every input stored since, in event-time order (rules/rejudge.py); its intervals
        replace those stored from there on, the corrector corrects the alerts, and it takes the
        live engine's place. Input older than every kept checkpoint stays unjudged."""
        started = time.monotonic()
        # The checkpoint in flight holds the engine about to be replaced: finish and save it
        # first, so no copy of the old state is kept after the correction.
        self._capture_slice(float("inf"))
        self._writer.wait_idle(RETRY_MAX_S)
        engine = self.engines[site_id]
        site = self.sites[site_id]
        with self.pool.connection() as conn:
            historic = history_before(conn, site_id, oldest)
            if historic is None:
                # The input older than every kept copy cannot be judged; the rest can.
                log.warning(
                    "%s: late input at %.3f is older than every kept checkpoint: not judged",
                    site_id,
                    oldest,
                )
                REJUDGED.labels("too_old").inc()
                historic = history_oldest(conn, site_id)
            after = None if historic is None else historic.checkpoint.state.get(REPLAY_AFTER)
            if historic is None or after is None:
                with conn.transaction():
                    mark_late_rejudged(conn, site_id)
                return
            inputs: list[StoredInput] = [
                (item.device, item.ts, item.seq, item.metrics)
                if isinstance(item, StoredReading)
                else item
                for _, item in stored_since(conn, site_id, after, None)
            ]
            done = {key: at.timestamp() for key, at in registry.last_done(conn, site_id).items()}
        result = rejudge(
            site,
            self.clauses,
            # Decoded once and held: re-judging reads every part twice (to resume, and for the
            # runs it replaces), and the store decodes a part each time it is read.
            {**historic.checkpoint.state, "parts": dict(historic.checkpoint.parts)},
            inputs,
            engine_now(engine),
            lateness=self.lateness,
            standards=self.standards,
            last_done=done,
        )
        with self.pool.connection() as conn, conn.transaction():
            replace_compliance_intervals(conn, site_id, result.replace_from, result.intervals())
            write_late_readings(conn, result.late())
            if self.corrector is not None:
                self.corrector(conn, site, result)
            drop_history_after(conn, site_id, historic.id)
            mark_late_rejudged(conn, site_id)
            if self.fence is not None:
                self.fence(conn, ())
        # The stored parts are the old engine's: the next checkpoint replaces them whole.
        result.engine.checkpoint_lost()
        self._apply_baselines(result.engine, done)
        self.engines[site_id] = result.engine
        engine.close()  # frozen out of the collector: freed by reference counts alone
        self._dirty_sites.add(site_id)
        REJUDGED.labels("rejudged").inc()
        REJUDGE_SECONDS.observe(time.monotonic() - started)
        log.info(
            "%s: late input re-judged from %.3f (%d inputs replayed in %.2f s)",
            site_id,
            historic.horizon,
            len(inputs),
            time.monotonic() - started,
        )

    def _new_pending(self) -> _Pending:
        self._batch_ids += 1
        return _Pending(Batch(self._batch_ids))


def restore_engine(
    site: SiteModel,
    clauses: Sequence[ClauseVersion],
    snapshot: Mapping[str, Any],
    *,
    lateness: float,
    standards: Mapping[str, str] | None = None,
    last_done: Mapping[tuple[str, str], float] | None = None,
) -> SiteEngine:
    """`SiteEngine.restore` with the cyclic garbage collector paused
    (`store.checkpoints.collector_paused`: collections were about half of a 10,000-device
    build)."""
    with collector_paused():
        return SiteEngine.restore(
            site, clauses, snapshot, lateness=lateness, standards=standards, last_done=last_done
        )


def engine_now(engine: SiteEngine) -> float:
    """The time an engine has been advanced to (its latest `advance`)."""
    now: float = engine._now
    return now


def engine_newest(engine: SiteEngine) -> float:
    """The newest event time of any input an engine has taken (-inf before the first)."""
    newest: float = max(engine._max_ts, engine._max_event_ts)
    return newest


def held_clock(now: float, newest: float, hold_until: float, wall: float) -> float:
    """How far the wall clock `now` moves a site's engine whose newest input is at event time
    `newest`: while the wall time `wall` is before `hold_until`, no further than that input.
    After a failover (a broker node or a worker died) a site's input can lag the wall clock by
    more than the lateness: publishes stall while the broker elects leaders, clients
    reconnect and send again what was not acknowledged, a loaded survivor catches up. Moved
    by its own input meanwhile, a site sending goes on as before and one stalled or silent
    waits, so what it sends late is not judged late."""
    if wall >= hold_until:
        return now
    return min(now, newest)


def engine_start(engine: SiteEngine) -> float:
    """The time from which an engine judges (its first final time, or its first input)."""
    start: float = engine._start
    return start


def _beside(pending: _Pending) -> bool:
    """Whether `pending` may commit beside the flush before it: only readings, events and dead
    letters, which their keys keep apart, whatever the order the two commit in. Outputs and
    device statuses are written in the order they were made."""
    return not pending.outputs and not pending.statuses


def _settle(pending: _Pending, outcome: Settled) -> None:
    """Tells the receipts of `pending` (messages not from the broker) what became of them."""
    receipts, pending.receipts = pending.receipts, []
    for receipt in receipts:
        try:
            receipt.settled(outcome)
        except Exception:  # a receipt's bug must not stop ingestion
            log.exception("settling a receipt failed")


def _late_by_site(outputs: Mapping[str, Sequence[Output]]) -> dict[str, float]:
    """Per site, the event time of the oldest input its engine set aside as late."""
    late: dict[str, float] = {}
    for site_id, found in outputs.items():
        times = [o.ts for o in found if isinstance(o, LateReading)]
        if times:
            late[site_id] = min(times)
    return late


def _engine_error(site: str, device: str) -> None:
    """Counts an engine failure; logs the traceback of the 1st, 2nd, 4th, 8th... so a repeating
    bug is visible without flooding the log."""
    ENGINE_ERRORS.inc()
    count = int(ENGINE_ERRORS._value.get())
    if count & (count - 1) == 0:
        log.exception("engine failed on input from %s/%s (failure #%d)", site, device, count)
