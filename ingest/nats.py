"""Ingest from a NATS JetStream cluster's MQTT listener (issue 23, docs/cluster.md).

Devices publish MQTT 3.1.1 QoS 1 to any node; NATS acknowledges (PUBACK) once the message is
stored in its own stream `$MQTT_msgs`. The servers map each topic `{prefix}/{site}/{device}/
{kind}` to the subject `$CW.{prefix}.{partition}.{site}.{device}.{kind}` (`subject_mapping`),
where the partition is NATS's `partition(P, site)`: FNV-1a of the site id modulo P, the same
number `partition` computes here. The mapped subjects are outside `{prefix}.>`, so whatever a
device publishes under the prefix and the mapping does not take (a topic with more or fewer
levels) stays there, read by one more consumer (`MISFITS`) whose pipeline dead-letters it.
Each partition is read by one durable pull consumer of `$MQTT_msgs` filtered to its subjects,
named by the owner's epoch (`cw-p{partition}-e{epoch}`), each message acknowledged only after
the PostgreSQL commit that stored it.

`$MQTT_msgs` keeps messages by interest: a message no consumer filters for is dropped once
acknowledged to the device. So every partition always has a consumer: `ensure_consumers`
creates the missing ones, and a takeover creates the new owner's before deleting the old.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import threading
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamInfo

from ingest.mqtt import IngressQueue, ReceivedMessage

log = logging.getLogger(__name__)

STREAM = "$MQTT_msgs"
STORED_PREFIX = "$MQTT.msgs."
# The first token of the partitioned subjects: not a topic prefix a device would publish under
# (MQTT reserves topics starting with `$` for the server), and apart from `{prefix}.>`.
PARTITIONED = "$CW"
# The pseudo-partition of what is published under the prefix and not mapped (its consumer is
# `cw-misfits`; no epoch: a dead letter carries no engine state to fence).
MISFITS = -1
FETCH_BATCH = 500
FETCH_WAIT_S = 0.25
# Redelivery to the same consumer of what was delivered and not acknowledged: a delivery lost
# on its way (a node died) comes again after this; what a flush retried longer than this holds
# comes twice (absorbed).
ACK_WAIT_S = 10.0
PREVIOUS_EPOCHS = 8  # how far back a takeover looks for the previous owner's consumer
MAX_ACK_PENDING = 50_000
REQUEST_TIMEOUT_S = 10.0
RETRY_MIN_S = 0.1
STREAM_WATCH_S = 0.5
STUCK_S = 1.0  # no message fetched for this long: ask the consumer whether some are pending
# A replica of `$MQTT_msgs` not heard from for this long is lost (its node died or is cut off;
# NATS's raft peers beat every second).
REPLICA_LOST_S = 2.0
# After a failover, how long the engines' clocks move with each site's input rather than the
# wall clock (`ingest.pipeline.held_clock`): longer than the stalls, reconnections and re-sends
# measured in the fault tests (docs/cluster.md). A site silent longer is one whose devices are
# down, judged as without a failure.
HOLD_MAX_S = 60.0
RETRY_MAX_S = 2.0
# How long input after deliveries lost on their way waits for them (`DeliveryOrder`): they come
# again ACK_WAIT_S after they were sent, later if the consumer's leader is being elected.
GAP_WAIT_S = ACK_WAIT_S * 2
HAD_KEEP_S = ACK_WAIT_S * 3  # how long `DeliveryOrder` remembers a stream sequence it had

T = TypeVar("T")


def lost_replicas(info: StreamInfo) -> frozenset[str]:
    """The replicas of a stream (not its leader) offline or not heard from for REPLICA_LOST_S."""
    replicas = info.cluster.replicas if info.cluster is not None else None
    return frozenset(
        str(peer.name)
        for peer in replicas or ()
        if peer.offline or (peer.active or 0) / 1e9 > REPLICA_LOST_S
    )


def partition(partitions: int, site: str) -> int:
    """The partition of `site`: FNV-1a (32 bit) of its id modulo `partitions`, exactly what
    the NATS subject transform `{{partition(P, n)}}` computes for that token."""
    digest = 0x811C9DC5
    for byte in site.encode():
        digest = ((digest ^ byte) * 0x01000193) & 0xFFFFFFFF
    return digest % partitions


def subject_mapping(prefix: str, partitions: int) -> tuple[str, str]:
    """The server's `mappings` entry (source, destination) that puts the partition after the
    topic prefix, under PARTITIONED; every node of the cluster carries the same one."""
    return (
        f"{prefix}.*.*.*",
        f"{PARTITIONED}.{prefix}.{{{{partition({partitions},1)}}}}"
        ".{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}",
    )


def partition_filter(prefix: str, number: int) -> str:
    return f"{STORED_PREFIX}{PARTITIONED}.{prefix}.{number}.*.*.*"


def misfit_filters(prefix: str) -> list[str]:
    """Everything stored under the prefix itself: the topics the mapping did not take."""
    return [f"{STORED_PREFIX}{prefix}", f"{STORED_PREFIX}{prefix}.>"]


def consumer_name(number: int, epoch: int) -> str:
    return "cw-misfits" if number == MISFITS else f"cw-p{number}-e{epoch}"


def topic_of(subject: str) -> str:
    """The MQTT topic of a stored subject: `$MQTT.msgs.$CW.cw.3.site.dev.telemetry` →
    `cw/site/dev/telemetry`, `$MQTT.msgs.cw.a.b` → `cw/a/b`. Undoes NATS's conversion of a
    topic: a level `/` is an empty one, `//` inside a level a dot."""
    tokens = subject[len(STORED_PREFIX) :].split(".")
    if tokens[0] == PARTITIONED:
        tokens = [tokens[1], *tokens[3:]]
    return "/".join("" if token == "/" else token.replace("//", ".") for token in tokens)


class DeliveryOrder(Generic[T]):
    """Hands a consumer's deliveries over in stream order although some were lost on their way
    (a pull response with the node that carried it). The consumer numbers every delivery,
    each redelivery too (its consumer sequence), so a jump in those numbers tells how many
    were lost; the consumer delivers them again after the ack wait, and what came after them
    waits meanwhile (GAP_WAIT_S at most), so a site's newer input is not judged before its
    older and the older judged late. Not thread-safe: the feed's loop uses it."""

    def __init__(self) -> None:
        self.missing = 0  # deliveries lost and not delivered again yet
        self.lost = 0  # deliveries found lost, all told
        self.given_up = 0  # of those, how many did not come again within GAP_WAIT_S
        self._last = 0  # the highest consumer sequence seen (a new consumer's first is 1)
        self._deadline = 0.0
        self._reordered = False
        self._held: list[tuple[int, int, T]] = []  # (stream sequence, arrival, item)
        self._arrivals = 0
        # Stream sequences had in the last HAD_KEEP_S (by the wall time had): a redelivery of
        # one (acknowledged too late, or its acknowledgement lost) is no lost one coming.
        self._had: dict[int, float] = {}

    def take(self, deliveries: Sequence[tuple[int, int, int, T]], now: float) -> list[T]:
        """`deliveries`: (consumer sequence, stream sequence, times delivered, item) as they
        came, at wall time `now`. Returns the items to hand over now, in stream order."""
        for consumer_seq, stream_seq, delivered, item in deliveries:
            if consumer_seq > self._last + 1:
                self.missing += consumer_seq - self._last - 1
                self.lost += consumer_seq - self._last - 1
                self._deadline = now + GAP_WAIT_S
                self._reordered = True
            self._last = max(self._last, consumer_seq)
            if delivered > 1 and self.missing and stream_seq not in self._had:
                self.missing -= 1
            self._had.setdefault(stream_seq, now)
            self._held.append((stream_seq, self._arrivals, item))
            self._arrivals += 1
        while self._had and next(iter(self._had.values())) < now - HAD_KEEP_S:
            del self._had[next(iter(self._had))]
        if self.missing and now < self._deadline:
            return []
        self.given_up += self.missing
        self.missing = 0
        held, self._held = self._held, []
        if self._reordered:
            held.sort(key=lambda entry: (entry[0], entry[1]))
            self._reordered = False
        return [item for _, _, item in held]


@dataclass(eq=False)
class PartitionFeed:
    """One partition's consumer while this worker owns it: what it delivered and has not
    acknowledged yet (stream sequence → reply subject), and whether it has caught up."""

    number: int
    epoch: int
    inbox: IngressQueue
    stop: threading.Event = field(default_factory=threading.Event)
    # Wall time the consumer was last seen with nothing pending behind what was fetched: the
    # partition's engines' clock does not pass it (a takeover's backlog, a consumer's leader
    # being elected), so what waited is not judged late.
    caught_up_at: float = 0.0
    failed: BaseException | None = None
    _replies: dict[int, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _task: asyncio.Task[None] | None = None
    _order: DeliveryOrder[ReceivedMessage] = field(default_factory=DeliveryOrder)


class NatsLink:
    """The worker's one connection to the cluster, on an asyncio loop of its own thread; the
    other threads call it through the blocking methods below."""

    def __init__(self, servers: Sequence[str], prefix: str) -> None:
        self.servers = list(servers)
        self.prefix = prefix
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="nats", daemon=True)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        # The replicas last seen lost, and until when a node failure holds the engines'
        # clocks to their sites' input (`hold_until`).
        self._lost: frozenset[str] = frozenset()
        self.hold_until = 0.0
        self._watch: asyncio.Task[None] | None = None

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        self._call(self._connect(), timeout)

    def watch_stream(self) -> None:
        """Asks `$MQTT_msgs` for its info every STREAM_WATCH_S: a node failure shows as the
        stream not answering (its leader died: publishes wait unstored, then fail and are sent
        again) or as a replica lost (a node died: its MQTT clients reconnect to another and
        send again what it did not acknowledge; others' publishes stalled for seconds while
        leaders were elected). From then until HOLD_MAX_S after the stream answers whole
        again (`hold_until`), the engines' clocks move with each site's input, not the wall
        clock (`ingest.pipeline.held_clock`)."""
        self._watch = asyncio.run_coroutine_threadsafe(self._watch_stream(), self._loop).result(
            REQUEST_TIMEOUT_S
        )

    async def _watch_stream(self) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(self._watching())

    async def _watching(self) -> None:
        answered = True
        while True:
            try:
                info = await asyncio.wait_for(self.js.stream_info(STREAM), STREAM_WATCH_S * 4)
            except (nats.errors.Error, TimeoutError, OSError):
                if answered:
                    log.warning("stream %s does not answer: the engines' clock waits", STREAM)
                answered = False
                self.hold_until = math.inf
            else:
                now = time.time()
                lost = lost_replicas(info)
                if not answered or lost - self._lost:
                    log.warning(
                        "stream %s answers, replicas lost: %s; for %.0f s the engines' clocks"
                        " move with each site's input",
                        STREAM,
                        sorted(lost) or "none",
                        HOLD_MAX_S,
                    )
                    self.hold_until = now + HOLD_MAX_S
                answered = True
                self._lost = lost
            await asyncio.sleep(STREAM_WATCH_S)

    def close(self) -> None:
        if self._watch is not None:
            self._call(_cancel(self._watch), REQUEST_TIMEOUT_S)
        if self._nc is not None:
            self._call(self._nc.close(), REQUEST_TIMEOUT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(REQUEST_TIMEOUT_S)

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _connect(self) -> None:
        self._nc = await nats.connect(
            servers=self.servers,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,
            connect_timeout=2,
            name="clausewatch",
        )
        self._js = self._nc.jetstream(timeout=REQUEST_TIMEOUT_S)

    @property
    def js(self) -> JetStreamContext:
        assert self._js is not None, "start() first"
        return self._js

    # -- consumers --

    def wait_stream(self, timeout: float) -> None:
        """Waits until `$MQTT_msgs` exists (NATS creates it when the first MQTT client of the
        account connects); raises TimeoutError."""
        self._call(self._wait_stream(timeout), timeout + REQUEST_TIMEOUT_S)

    async def _wait_stream(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                await self.js.stream_info(STREAM)
                return
            except (nats.js.errors.NotFoundError, nats.errors.TimeoutError):
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"no stream {STREAM}: has an MQTT client connected?"
                    ) from None
                await asyncio.sleep(0.2)

    def ensure_consumers(self, never_taken: Sequence[int]) -> int:
        """Gives each partition never taken yet (epoch 0 in PostgreSQL) the consumer its first
        owner will read, from the stream's beginning, so nothing published is dropped before a
        worker takes it; and MISFITS its one consumer. Creating it again is a no-op (same name,
        same configuration). Returns how many it made."""
        return self._call(self._ensure_consumers(never_taken), REQUEST_TIMEOUT_S * 3)

    async def _ensure_consumers(self, never_taken: Sequence[int]) -> int:
        names = await self._consumer_names()
        created = 0
        for number in [MISFITS, *never_taken]:
            if consumer_name(number, 1) not in names:
                await self._add_consumer(number, 1, 0)
                created += 1
        return created

    def prune(self, number: int, epoch: int) -> list[str]:
        """Deletes consumers of partition `number` of epochs before `epoch` (left by a takeover
        that failed half-way): each would hold every message of the partition. Never a later
        epoch's: that is a newer owner's (we were taken over and do not know it yet)."""
        return self._call(self._prune(number, epoch), REQUEST_TIMEOUT_S * 3)

    async def _prune(self, number: int, epoch: int) -> list[str]:
        prefix = f"cw-p{number}-e"
        stale = [
            name
            for name in await self._consumer_names()
            if name.startswith(prefix) and name[len(prefix) :].isdigit()
            if int(name[len(prefix) :]) < epoch
        ]
        for name in stale:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await self.js.delete_consumer(STREAM, name)
        return stale

    async def _consumer_names(self) -> list[str]:
        return [
            str(info.name) for info in await self.js.consumers_info(STREAM) if info.name is not None
        ]

    async def _add_consumer(self, number: int, epoch: int, after_seq: int) -> None:
        start = (
            {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": after_seq + 1}
            if after_seq > 0
            else {"deliver_policy": DeliverPolicy.ALL}
        )
        subjects = (
            {"filter_subjects": misfit_filters(self.prefix)}
            if number == MISFITS
            else {"filter_subject": partition_filter(self.prefix, number)}
        )
        await self.js.add_consumer(
            STREAM,
            ConsumerConfig(
                durable_name=consumer_name(number, epoch),
                **subjects,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=ACK_WAIT_S,
                max_ack_pending=MAX_ACK_PENDING,
                max_deliver=-1,
                **start,
            ),
        )

    def lag(self, number: int, epoch: int) -> int | None:
        """Messages of the partition's current consumer not delivered yet (None: no such one)."""
        return self._call(self._lag(number, epoch), REQUEST_TIMEOUT_S)

    async def _lag(self, number: int, epoch: int) -> int | None:
        try:
            info = await self.js.consumer_info(STREAM, consumer_name(number, epoch))
        except nats.js.errors.NotFoundError:
            return None
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    def consumer_lags(self) -> dict[str, int]:
        """Every consumer of `$MQTT_msgs` named as ours, with what it has not had acknowledged."""
        return self._call(self._consumer_lags(), REQUEST_TIMEOUT_S)

    async def _consumer_lags(self) -> dict[str, int]:
        return {
            str(info.name): int(info.num_pending or 0) + int(info.num_ack_pending or 0)
            for info in await self.js.consumers_info(STREAM)
            if info.name is not None and info.name.startswith("cw-p")
        }

    # -- feeds --

    def open(self, number: int, epoch: int, after_seq: int, inbox: IngressQueue) -> PartitionFeed:
        """Takes over partition `number` at `epoch`: a consumer from the stream sequence after
        `after_seq` (the last one committed), then the previous owners' consumers are deleted;
        its messages go to `inbox` until `close`."""
        feed = PartitionFeed(number, epoch, inbox)
        self._call(self._open(feed, after_seq), REQUEST_TIMEOUT_S * 3)
        return feed

    async def _open(self, feed: PartitionFeed, after_seq: int) -> None:
        # A delivery lost on its way (the worker's node died) is delivered again only after
        # the ack wait, and may lie below the committed position: the new consumer starts
        # after the previous one's ack floor when that is lower (what comes twice is
        # absorbed by the storage keys and the engines).
        previous = None
        for epoch in range(feed.epoch - 1, max(0, feed.epoch - PREVIOUS_EPOCHS), -1):
            try:
                info = await self.js.consumer_info(STREAM, consumer_name(feed.number, epoch))
            except nats.js.errors.NotFoundError:
                continue
            previous = epoch
            if info.ack_floor is not None and info.ack_floor.stream_seq is not None:
                after_seq = min(after_seq, int(info.ack_floor.stream_seq))
            break
        # Made again with the same configuration (the first owner's, made by
        # ensure_consumers) it is the same consumer; the previous owner's goes after it.
        await self._add_consumer(feed.number, feed.epoch, after_seq)
        if previous is not None:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await self.js.delete_consumer(STREAM, consumer_name(feed.number, previous))
        feed._task = self._loop.create_task(self._pull(feed))

    async def _pull(self, feed: PartitionFeed) -> None:
        """Fetches until stopped. A subscription that stops getting messages while the consumer
        has some pending (seen after its leader moved to another node) is bound anew."""
        name = consumer_name(feed.number, feed.epoch)
        retry = RETRY_MIN_S
        try:
            while not feed.stop.is_set():
                try:
                    subscription = await self.js.pull_subscribe_bind(durable=name, stream=STREAM)
                except nats.js.errors.NotFoundError:
                    raise  # the consumer is gone: a new owner deleted it
                except (nats.errors.Error, TimeoutError, OSError) as exc:
                    log.warning("partition %d: binding failed (%r); retrying", feed.number, exc)
                    await asyncio.sleep(retry)
                    retry = min(retry * 2, RETRY_MAX_S)
                    continue
                try:
                    await self._fetch_until_stuck(feed, name, subscription)
                finally:
                    with contextlib.suppress(Exception):
                        await subscription.unsubscribe()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the worker sees it and stops: the next owner goes on
            feed.failed = exc
            log.exception("partition %d: reading its consumer failed", feed.number)

    async def _fetch_until_stuck(
        self, feed: PartitionFeed, name: str, subscription: JetStreamContext.PullSubscription
    ) -> None:
        retry = RETRY_MIN_S
        idle_since = time.monotonic()
        while not feed.stop.is_set():
            try:
                messages = await subscription.fetch(FETCH_BATCH, timeout=FETCH_WAIT_S)
            except (nats.errors.TimeoutError, TimeoutError):  # nothing came
                messages = []
            except nats.js.errors.NotFoundError:
                raise
            except (nats.errors.Error, OSError) as exc:
                # A node went away or a leader is being elected: the consumer keeps our place,
                # so wait and fetch again.
                log.warning("partition %d: fetch failed (%r); retrying", feed.number, exc)
                await asyncio.sleep(retry)
                retry = min(retry * 2, RETRY_MAX_S)
                continue
            if not messages:
                if feed._order.missing:  # their wait may end without anything coming
                    await self._hand_over_ready(feed, [])
                if time.monotonic() - idle_since < STUCK_S:
                    continue
                idle_since = time.monotonic()
                asked_at = time.time()
                if await self._pending(feed, name) == 0:
                    if not feed._order.missing:
                        feed.caught_up_at = asked_at
                    continue
                log.warning(
                    "partition %d: messages pending but none fetched; rebinding", feed.number
                )
                return
            retry = RETRY_MIN_S
            idle_since = time.monotonic()
            caught_up_at = time.time()
            await self._hand_over_ready(feed, messages)
            # Caught up when nothing is left behind the last one delivered, nor lost before it.
            if messages[-1].metadata.num_pending == 0 and not feed._order.missing:
                feed.caught_up_at = caught_up_at

    async def _hand_over_ready(self, feed: PartitionFeed, messages: list[Msg]) -> None:
        received = self._received(feed, messages)
        if feed.number == MISFITS:
            # Dead letters judge nothing, so their order does not matter; and their consumer
            # is shared, so its numbering jumps over what another reader took.
            if received:
                await self._loop.run_in_executor(None, self._hand_over, feed, received)
            return
        deliveries = [
            (m.metadata.sequence.consumer, m.metadata.sequence.stream, m.metadata.num_delivered, r)
            for m, r in zip(messages, received, strict=True)
        ]
        order = feed._order
        lost, given_up = order.lost, order.given_up
        ready = order.take(deliveries, time.time())
        if order.lost > lost:
            log.warning(
                "partition %d: %d deliveries lost on their way; what follows waits for them",
                feed.number,
                order.lost - lost,
            )
        if order.given_up > given_up:
            log.warning(
                "partition %d: %d lost deliveries did not come again within %.0f s",
                feed.number,
                order.given_up - given_up,
                GAP_WAIT_S,
            )
        if ready:
            await self._loop.run_in_executor(None, self._hand_over, feed, ready)

    async def _pending(self, feed: PartitionFeed, name: str) -> int | None:
        """Messages the consumer has not delivered yet, or delivered without our having them
        (lost on their way: they come again after the ack wait); None when it cannot tell."""
        try:
            info = await self.js.consumer_info(STREAM, name)
        except nats.js.errors.NotFoundError:
            raise
        except (nats.errors.Error, TimeoutError, OSError):
            return None
        with feed._lock:
            ours = len(feed._replies)
        # Lost ones known (feed._order.missing) come again after the ack wait: not stuck.
        ours += feed._order.missing
        return int(info.num_pending or 0) + max(0, int(info.num_ack_pending or 0) - ours)

    def _received(self, feed: PartitionFeed, messages: list[Msg]) -> list[ReceivedMessage]:
        now = time.time()
        received: list[ReceivedMessage] = []
        with feed._lock:
            for message in messages:
                seq = message.metadata.sequence.stream
                feed._replies[seq] = message.reply
                received.append(
                    ReceivedMessage(
                        topic_of(message.subject), message.data, now, (feed.epoch, seq, 1)
                    )
                )
        return received

    @staticmethod
    def _hand_over(feed: PartitionFeed, received: list[ReceivedMessage]) -> None:
        for message in received:
            if not feed.inbox.put(message, feed.stop):
                return

    def ack(self, feed: PartitionFeed, tokens: Sequence[tuple[int, int, int]]) -> None:
        """After the commit of a flush holding `tokens`: acknowledges each of them (explicit
        acks: an AckAll past a delivery lost on its way would acknowledge it unstored). Any
        thread; does not wait."""
        with feed._lock:
            replies = [r for r in (feed._replies.pop(seq, None) for _, seq, _ in tokens) if r]
        if replies and self._nc is not None:
            asyncio.run_coroutine_threadsafe(self._acknowledge(replies), self._loop)

    async def _acknowledge(self, replies: list[str]) -> None:
        assert self._nc is not None
        for reply in replies:
            await self._nc.publish(reply, b"+ACK")

    def close_feed(self, feed: PartitionFeed) -> None:
        """Stops reading (the consumer stays: the next owner replaces it)."""
        feed.stop.set()
        task = feed._task
        if task is not None:
            future: concurrent.futures.Future[None] = asyncio.run_coroutine_threadsafe(
                _cancel(task), self._loop
            )
            future.result(REQUEST_TIMEOUT_S)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
