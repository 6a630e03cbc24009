"""One worker of the cluster mode (`clausewatch run --broker nats://...`, docs/cluster.md).

A worker takes partitions (ingest/nats.py: sites hashed onto a fixed number) through PostgreSQL
(store/cluster.py) until it holds its share, ceil(partitions / live workers), hands partitions
over one at a time while it holds more (a worker joined), and runs one
ingest pipeline per partition it holds: the pipeline of the single-node service, restricted to
the partition's sites, fed by the partition's consumer of `$MQTT_msgs`, acknowledging only
after its commits, which carry the partition's stream position and fail once its epoch moved.

Taking a partition: its advisory lock, a new epoch, the engines restored from their checkpoints
and the input stored after them replayed (Pipeline.start), then a new consumer from the stream
sequence after the committed one. A worker that loses its lease (stalled past it), or whose
commit is fenced, stops: whatever it took and did not commit is the next owner's.

The worker is the ingest of a cluster node's service (clausewatch/service.py, `Ingest`): the
service brings up the schema, the registry, the API and the periodic jobs, and hands the worker
the clause revisions and site models published while it runs (`request_configuration`). The
owner of partition 0 also reads what NATS stored under the prefix without mapping it (topics
with more or fewer levels, `ingest.nats.MISFITS`) into a pipeline of no sites: dead letters.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import nats.errors
import psycopg
from psycopg_pool import ConnectionPool

from alerts.inhibition import source_status
from alerts.record import correct_alerts, record_outputs
from clausewatch.service import WALL_CLOCK_GRACE_S
from clausewatch.settings import Settings
from config.files import LoadedConfig
from ingest.decode import Decoder, DeviceIndex, Limits
from ingest.mqtt import IngressQueue
from ingest.nats import HOLD_MAX_S, MISFITS, NatsLink, PartitionFeed, partition
from ingest.pipeline import Clock, Fence, Pipeline
from rules.clause import ClauseVersion
from rules.engine import BindingError
from rules.site import SiteModel
from store.cluster import (
    Claim,
    Fenced,
    LeaseConnection,
    commit_position,
    init_partitions,
    never_taken,
    with_session_timeouts,
    worker_id,
)
from store.partitions import ensure_partitions
from store.pool import connect, make_pool
from store.roles import as_role

log = logging.getLogger(__name__)

STREAM_WAIT_S = 60.0
PRUNE_EVERY_S = 10.0


def broker_servers(broker_url: str) -> list[str]:
    """`nats://a:4222,nats://b:4222` (or `nats://a:4222,b:4222`) → one URL per server."""
    servers = [part.strip() for part in broker_url.split(",") if part.strip()]
    return [s if s.startswith("nats://") else f"nats://{s}" for s in servers]


def sites_of(sites: Mapping[str, SiteModel], partitions: int, number: int) -> dict[str, SiteModel]:
    return {sid: model for sid, model in sites.items() if partition(partitions, sid) == number}


@dataclass
class _Owned:
    claim: Claim
    pipeline: Pipeline
    feed: PartitionFeed | None = None


class ClusterWorker:
    """Not restartable: make a new one."""

    def __init__(self, settings: Settings, config: LoadedConfig, clock: Clock = "wall") -> None:
        if not settings.database_url or not settings.broker_url:
            raise ValueError("a cluster worker needs CLAUSEWATCH_DATABASE_URL and a nats:// broker")
        self.settings = settings
        self.config = config
        self.clock = clock
        self.database_url: str = as_role(settings.database_url, settings.database_roles().service)
        self.partitions = settings.cluster_partitions
        self.lease_s = settings.cluster_lease_s
        self.owner = worker_id()
        self.owned: dict[int, _Owned] = {}
        self.misfits: _Owned | None = None  # with partition 0
        self._failover_hold_until = 0.0  # see _take
        self.failure: str | None = None
        self.pool: ConnectionPool[Any] | None = None
        self.link: NatsLink | None = None
        self.lease: LeaseConnection | None = None
        # What a partition taken now is judged with: revisions published while running change
        # them (`request_configuration`), under this lock with the pipelines of owned ones.
        self._clauses: Sequence[ClauseVersion] = ()
        self._sites: dict[str, SiteModel] = dict(config.sites)
        self._configuration = threading.Lock()
        self._stop = threading.Event()
        self._stop_heartbeat = threading.Event()  # only once the partitions are released
        self._thread: threading.Thread | None = None
        self._heartbeat_thread: threading.Thread | None = None
        self._pruned_at = time.monotonic()

    def start(self, clauses: Sequence[ClauseVersion]) -> None:
        """After the service migrated the schema and synced the registry (`clauses`: what it
        holds now)."""
        with connect(self.database_url) as conn:
            init_partitions(conn, self.partitions)
        self._clauses = clauses
        # A transaction of a stalled worker must not hold a partition's row past its lease.
        url = with_session_timeouts(self.database_url, idle_in_transaction_s=self.lease_s)
        self.pool = make_pool(url, min_size=2, max_size=6, name=f"cluster-{self.owner}")
        with self.pool.connection() as conn:
            ensure_partitions(conn)
        assert self.settings.broker_url is not None
        self.link = NatsLink(broker_servers(self.settings.broker_url), self.settings.topic_prefix)
        self.link.start()
        self.link.wait_stream(STREAM_WAIT_S)
        with connect(self.database_url) as conn:
            self.link.ensure_consumers(never_taken(conn))
        self.link.watch_stream()
        self.lease = LeaseConnection(self.database_url, self.owner, self.lease_s)
        self._thread = threading.Thread(target=self._manage, name="cluster", daemon=True)
        self._thread.start()
        # Apart from the manager: taking a partition (restore, replay) may outlast the lease.
        self._heartbeat_thread = threading.Thread(
            target=self._heartbeat, name="cluster-heartbeat", daemon=True
        )
        self._heartbeat_thread.start()

    @property
    def healthy(self) -> bool:
        return self.failure is None

    def request_configuration(
        self, clauses: Sequence[ClauseVersion] | None, sites: Mapping[str, SiteModel]
    ) -> None:
        """Any thread: judge with `clauses` (a revision published or rolled back) and these
        sites' new models from now on, in the partitions owned now and those taken later.
        Raises `rules.engine.BindingError` when a site cannot judge them: the partitions whose
        sites can switch, the others and those taken later keep what they had."""
        with self._configuration:
            failed: BindingError | None = None
            for owned in list(self.owned.values()):
                try:
                    owned.pipeline.request_configuration(clauses, sites)
                except BindingError as exc:  # that partition keeps its set; the others switch
                    failed = failed or exc
            if failed is not None:
                raise failed  # and partitions taken later keep the old set: they bind
            if clauses is not None:
                self._clauses = clauses
            self._sites.update(sites)

    def stop(self) -> None:
        """Stops reading, commits and acknowledges what was taken, releases the partitions."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        for number in sorted(self.owned):
            self._release(number)
        self._close_misfits()
        self._stop_heartbeat.set()
        if self._heartbeat_thread is not None:
            self._heartbeat_thread.join(30)
        if self.lease is not None:
            self.lease.close()
        if self.link is not None:
            self.link.close()
        if self.pool is not None:
            self.pool.close()

    # -- the manager thread --

    def _heartbeat(self) -> None:
        lease = self.lease
        assert lease is not None
        while self.failure is None and not self._stop_heartbeat.wait(self.lease_s / 6):
            try:
                lease.heartbeat()
            except psycopg.Error as exc:
                # The lease connection is gone (PostgreSQL restarted, or it closed ours after
                # a stall): our locks went with it, so another worker may own our partitions.
                self._fail(f"the lease connection failed: {exc}")

    def _manage(self) -> None:
        step = self.lease_s / 6
        next_claim = time.monotonic()
        while self.failure is None and not self._stop.wait(min(step, 0.25)):
            try:
                if time.monotonic() >= next_claim:
                    next_claim = time.monotonic() + step
                    self._balance()
                self._tick()
                self._check()
            except Fenced as exc:
                self._fail(str(exc))
            except psycopg.Error as exc:
                self._fail(f"the lease connection failed: {exc}")
            except Exception as exc:  # a bug: stop rather than hold partitions without work
                log.exception("the cluster manager failed")
                self._fail(f"the cluster manager failed: {exc!r}")

    def _fail(self, why: str) -> None:
        log.error("worker %s stops: %s", self.owner, why)
        self.failure = why

    def _balance(self) -> None:
        lease = self.lease
        assert lease is not None and self.link is not None
        if time.monotonic() - self._pruned_at > PRUNE_EVERY_S:
            self._pruned_at = time.monotonic()
            for number, owned in list(self.owned.items()):
                try:
                    stray = self.link.prune(number, owned.claim.epoch)
                except (nats.errors.Error, TimeoutError, OSError):
                    break  # JetStream busy electing: at a later turn
                for name in stray:
                    log.warning("partition %d: deleted the stray consumer %s", number, name)
        share = math.ceil(self.partitions / lease.live_workers(self.lease_s))
        if len(self.owned) > share:
            # A worker joined: hand one partition over per turn (its last commit, then its lock).
            self._release(max(self.owned))
            return
        if len(self.owned) == share:
            return
        for number in lease.unowned():
            if len(self.owned) >= share or self._stop.is_set():
                return
            claim = lease.try_claim(number)
            if claim is not None:
                self._take(claim)

    def _pipeline(
        self, sites: Mapping[str, SiteModel], inbox: IngressQueue, ack: Any, fence: Fence | None
    ) -> Pipeline:
        settings = self.settings
        decoder = Decoder(
            DeviceIndex.from_sites(sites.values()),
            settings.topic_prefix,
            Limits(
                max_payload_bytes=settings.max_payload_bytes,
                max_future_skew_s=settings.max_future_skew_s,
                max_age_s=settings.max_age_s,
            ),
        )
        assert self.pool is not None
        return Pipeline(
            self.pool,
            sites,
            self._clauses,
            decoder,
            inbox,
            ack,
            sink=record_outputs,
            corrector=correct_alerts,
            on_status=source_status,
            standards={cid: std.code for cid, std in self.config.standards().items()},
            lateness=settings.lateness_s,
            max_age=settings.max_age_s,
            batch_rows=settings.batch_rows,
            flush_interval=settings.flush_interval_s,
            clock=self.clock,
            fence=fence,
        )

    def _take(self, claim: Claim) -> None:
        started = time.monotonic()
        inbox = IngressQueue(self.settings.queue_capacity)
        owned: _Owned

        def ack(tokens: list[tuple[int, int, int]]) -> None:
            if owned.feed is not None and self.link is not None:
                self.link.ack(owned.feed, tokens)

        def fence(conn: psycopg.Connection[Any], tokens: Sequence[tuple[int, int, int]]) -> None:
            last = max((seq for _, seq, _ in tokens), default=None)
            commit_position(conn, claim.partition, claim.epoch, last)

        assert self.link is not None
        # Under the configuration lock: a revision published meanwhile reaches this pipeline.
        with self._configuration:
            sites = sites_of(self._sites, self.partitions, claim.partition)
            pipeline = self._pipeline(sites, inbox, ack, fence)
            owned = _Owned(claim, pipeline)
            if claim.failed_over:
                # Its owner failed: we and the broker beside us, loaded with the takeover's
                # work, can lag the wall clock for seconds; our engines move with their input
                # meanwhile.
                self._failover_hold_until = time.time() + HOLD_MAX_S
            self.owned[claim.partition] = owned
            pipeline.start()  # restores every site's engine and replays what was stored after it
        restored = time.monotonic()
        try:
            owned.feed = self.link.open(claim.partition, claim.epoch, claim.stream_seq, inbox)
            if claim.partition == 0:
                self._open_misfits()
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            # JetStream unavailable for now (a leader being elected): give the partition back,
            # it is taken again at a later turn, by us or another worker.
            log.warning("partition %d: its consumer could not be made (%r)", claim.partition, exc)
            self._release(claim.partition)
            return
        log.info(
            "partition %d taken at epoch %d (%d sites) from stream sequence %d in %.2f s"
            " (engines restored in %.2f s)",
            claim.partition,
            claim.epoch,
            len(sites),
            claim.stream_seq + 1,
            time.monotonic() - started,
            restored - started,
        )

    def _open_misfits(self) -> None:
        """The pipeline of no sites for what is stored under the prefix unmapped: it
        dead-letters every message (bad_topic, bad_id), acknowledged after the commit. One
        shared durable consumer, no epoch: a stalled former reader that wakes may store a dead
        letter twice, never lose one."""
        inbox = IngressQueue(self.settings.queue_capacity)
        misfits: _Owned

        def ack(tokens: list[tuple[int, int, int]]) -> None:
            if misfits.feed is not None and self.link is not None:
                self.link.ack(misfits.feed, tokens)

        pipeline = self._pipeline({}, inbox, ack, None)
        misfits = _Owned(Claim(MISFITS, 0, 0), pipeline)
        pipeline.start()
        self.misfits = misfits
        assert self.link is not None
        misfits.feed = self.link.open(MISFITS, 0, 0, inbox)

    def _close_misfits(self) -> None:
        misfits, self.misfits = self.misfits, None
        if misfits is None:
            return
        if misfits.feed is not None and self.link is not None:
            self.link.close_feed(misfits.feed)
        misfits.pipeline.stop()

    def _tick(self) -> None:
        """The wall clock moves a partition's engines no further than the last time its consumer
        had nothing pending (`PartitionFeed.caught_up_at`): what waited in the stream during a
        takeover or a consumer's leader election is not judged late by a clock that ran on.
        For a while after a failover, a node's (`NatsLink.hold_until`) or a worker's whose
        partitions we took, each engine moves no further than its site's input
        (`held_clock`)."""
        if self.clock != "wall" or self.link is None:
            return
        now = time.time()
        for owned in self.owned.values():
            if owned.feed is not None and owned.feed.caught_up_at > 0:
                owned.pipeline.request_advance(
                    min(now, owned.feed.caught_up_at) - WALL_CLOCK_GRACE_S,
                    max(self.link.hold_until, self._failover_hold_until),
                )

    def _check(self) -> None:
        owned_now = list(self.owned.items())
        if self.misfits is not None:
            owned_now.append((MISFITS, self.misfits))
        for number, owned in owned_now:
            failure = owned.pipeline.failure
            if isinstance(failure, Fenced):
                raise failure
            if failure is not None or not owned.pipeline.alive:
                self._fail(f"partition {number}: the pipeline stopped ({failure!r})")
                return
            if owned.feed is not None and owned.feed.failed is not None:
                self._fail(f"partition {number}: its consumer failed ({owned.feed.failed!r})")
                return

    def _release(self, number: int) -> None:
        if number == 0:
            self._close_misfits()
        owned = self.owned.pop(number)
        if owned.feed is not None and self.link is not None:
            self.link.close_feed(owned.feed)
        owned.pipeline.stop()
        owned.pipeline.close()
        if self.failure is None and self.lease is not None:
            try:
                self.lease.release(owned.claim)
            except psycopg.Error as exc:
                log.warning("partition %d: release failed (%s); the lock goes with us", number, exc)
