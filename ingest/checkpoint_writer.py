"""Saves engine checkpoints on their own thread, so the pipeline thread never waits for one.

The pipeline begins a checkpoint right after a flush has committed (so every output of the
messages it covers is stored), captures its parts a slice at a time between batches (see
`SiteEngine.begin_checkpoint`), and hands the complete checkpoint to this writer: every site's
header and changed parts, and the receive stamp of the last message it covers (replay after a
crash starts there). The writer saves it in one transaction, retrying with backoff while
PostgreSQL is unavailable. One checkpoint is in flight at a time. Nothing waits for it: until it
is saved, the previous one and the stored input after it hold the same state.

A checkpoint the database keeps refusing for another reason (a bug, data it cannot hold) is
dropped after `MAX_REJECTED_ATTEMPTS`; the pipeline begins the next one at once and makes it
whole (`take_dropped` tells it), since the parts of the dropped one were never stored.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from prometheus_client import Counter, Histogram
from psycopg_pool import ConnectionPool

from ingest.retry import MAX_REJECTED_ATTEMPTS, RETRY_MAX_S, RETRY_MIN_S
from rules.rejudge import horizon
from store.checkpoints import HistoryPolicy, keep_history, save_checkpoint
from store.replay import REPLAY_AFTER

log = logging.getLogger(__name__)

CHECKPOINT_SECONDS = Histogram(
    "clausewatch_checkpoint_seconds",
    "Time to save one checkpoint (send and commit every site's changed parts, encoded as captured)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CHECKPOINT_FAILURES = Counter("clausewatch_checkpoint_failures", "Checkpoint saves rolled back")


class Courtesy:
    """Called often by a thread doing long pure-Python work, hands the interpreter lock to the
    other threads for `pause` seconds after each `every` seconds of that work. Without it a
    thread waiting on a socket (the commit of a batch) gets the lock back only when the
    interpreter's switch interval (5 ms) forces it, up to 5 ms per round trip, and a commit has
    a dozen. A sleep hands the lock over where `sleep(0)` often takes it straight back
    (measured: p95 of three round trips beside a busy thread 39.5 ms, 7.7 with sleep(0), 3.7
    with this; BENCHMARKS.md, "Alert latency", for the service)."""

    __slots__ = ("_clock", "_last", "_sleep", "every", "pause")

    def __init__(
        self,
        every: float = 0.001,
        pause: float = 0.0001,
        *,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.every = every
        self.pause = pause
        self._clock = clock
        self._sleep = sleep
        self._last = clock()

    def __call__(self) -> None:
        if self._clock() - self._last >= self.every:
            self._sleep(self.pause)
            self._last = self._clock()


@dataclass
class CheckpointJob:
    checkpoints: dict[str, dict[str, Any]]  # site -> engine checkpoint (header and "parts")
    replay_after: float  # receive stamp of the last message it covers


class CheckpointWriter:
    """Owns one thread between `start()` and `stop()`; `submit` only when `idle`."""

    def __init__(
        self,
        pool: ConnectionPool[Any],
        history: HistoryPolicy | None = None,
        lateness: float = 0.0,
        fence: Callable[[psycopg.Connection[Any]], object] | None = None,
    ) -> None:
        """`history`: copies of the stored checkpoints kept for judging late input (issue 17;
        `lateness`, the engines', places each copy in event time). `fence`: runs last in each
        save's transaction (ingest/pipeline.py, `Fence`)."""
        self.pool = pool
        self.history = history
        self.lateness = lateness
        self.fence = fence
        self._jobs: queue.SimpleQueue[CheckpointJob | None] = queue.SimpleQueue()
        self._idle = threading.Event()
        self._idle.set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # A checkpoint was dropped since the pipeline last looked (see module docstring).
        self.dropped_any = False
        self.last_save_seconds = 0.0  # how long saving the last checkpoint took
        self.saved = 0  # checkpoints saved so far
        # Site -> part -> digest of its open runs as committed (store.checkpoints.save_open_runs):
        # unchanged runs are not written again. Only this writer writes a site's runs while its
        # engine lives; a new engine's first checkpoint is whole and starts the site's afresh.
        self._stored_runs: dict[str, dict[str, int]] = {}
        self._courtesy = Courtesy()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="checkpoint-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Saves the checkpoint in flight (giving up on it if PostgreSQL is unavailable) and
        joins."""
        self._stopping.set()
        self._jobs.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def idle(self) -> bool:
        return self._idle.is_set()

    def wait_idle(self, timeout: float) -> bool:
        return self._idle.wait(timeout)

    def submit(self, job: CheckpointJob) -> None:
        if not self._idle.is_set():
            raise RuntimeError("a checkpoint is already being saved")
        self._idle.clear()
        self._jobs.put(job)

    def take_dropped(self) -> bool:
        """Whether a checkpoint was dropped since the last call. Call only when `idle` (the
        writer sets the flag before it becomes idle)."""
        dropped, self.dropped_any = self.dropped_any, False
        return dropped

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                if not self._save(job):
                    self.dropped_any = True
            finally:
                # Let go of it before the next wait: held until the next job came, its parts
                # stayed in memory between checkpoints (0.4 KiB a device, issue 24).
                job = None
                self._idle.set()

    def _save(self, job: CheckpointJob) -> bool:
        delay = RETRY_MIN_S
        refused = 0
        while True:
            started = time.monotonic()
            started_at = time.time()
            started_cpu = time.thread_time()
            written: dict[str, dict[str, int]] = {}
            try:
                with self.pool.connection() as conn, conn.transaction():
                    for site, checkpoint in job.checkpoints.items():
                        header = {k: v for k, v in checkpoint.items() if k != "parts"}
                        header[REPLAY_AFTER] = job.replay_after
                        written[site] = save_checkpoint(
                            conn,
                            site,
                            header,
                            header["clock"],
                            parts=checkpoint["parts"],
                            replace_parts=header["full"],
                            stored_runs=self._stored_runs.get(site),
                            pause=self._courtesy,
                        )
                        if self.history is not None:
                            keep_history(conn, site, horizon(header, self.lateness), self.history)
                    if self.fence is not None:
                        self.fence(conn)
                for site, digests in written.items():
                    if job.checkpoints[site]["full"]:
                        self._stored_runs[site] = digests
                    else:
                        self._stored_runs.setdefault(site, {}).update(digests)
                self.last_save_seconds = time.monotonic() - started
                self.saved += 1
                CHECKPOINT_SECONDS.observe(self.last_save_seconds)
                # Epoch seconds in the message: bench/latency.py matches probes to this window.
                log.debug(
                    "checkpoint saved: %d site(s), %d part(s), from %.6f for %.1f ms"
                    " (%.1f ms on this thread's CPU)",
                    len(job.checkpoints),
                    sum(len(c["parts"]) for c in job.checkpoints.values()),
                    started_at,
                    self.last_save_seconds * 1000,
                    (time.thread_time() - started_cpu) * 1000,
                )
                return True
            except psycopg.Error as exc:
                CHECKPOINT_FAILURES.inc()
                if not isinstance(exc, psycopg.OperationalError):
                    refused += 1
                    if refused >= MAX_REJECTED_ATTEMPTS:
                        log.error("checkpoint refused by the database (%s); dropped", exc)
                        return False
                if self._stopping.is_set():
                    log.error("checkpoint not saved at stop (%s); the restart replays more", exc)
                    return False
                log.warning("checkpoint failed (%s); retrying in %.1f s", exc, delay)
                self._stopping.wait(delay)
                delay = min(delay * 2, RETRY_MAX_S)
