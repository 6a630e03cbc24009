"""Ingest from a NATS JetStream cluster's MQTT listener (issue 23, docs/cluster.md).

Devices publish MQTT 3.1.1 QoS 1 to any node; NATS acknowledges (PUBACK) once the message is
stored in its own stream `$MQTT_msgs`. The servers map each topic `{prefix}/{site}/{device}/
{kind}` to the subject `{prefix}.{partition}.{site}.{device}.{kind}` (`subject_mapping`), where
the partition is NATS's `partition(P, site)`: FNV-1a of the site id modulo P, the same number
`partition` computes here. Each partition is read by one durable pull consumer of `$MQTT_msgs`
filtered to its subjects, named by the owner's epoch (`cw-p{partition}-e{epoch}`), acknowledged
(AckAll) only after the PostgreSQL commit that stored what it delivered.

`$MQTT_msgs` keeps messages by interest: a message no consumer filters for is dropped once
acknowledged to the device. So every partition always has a consumer: `ensure_consumers`
creates the missing ones, and a takeover creates the new owner's before deleting the old.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from ingest.mqtt import IngressQueue, ReceivedMessage

log = logging.getLogger(__name__)

STREAM = "$MQTT_msgs"
STORED_PREFIX = "$MQTT.msgs."
FETCH_BATCH = 500
FETCH_WAIT_S = 0.25
# Redelivery to the same consumer of what was delivered and not acknowledged: longer than a
# flush retried while PostgreSQL is briefly away; a takeover does not wait for it.
ACK_WAIT_S = 120.0
MAX_ACK_PENDING = 50_000
REQUEST_TIMEOUT_S = 10.0

T = TypeVar("T")


def partition(partitions: int, site: str) -> int:
    """The partition of `site`: FNV-1a (32 bit) of its id modulo `partitions`, exactly what
    the NATS subject transform `{{partition(P, n)}}` computes for that token."""
    digest = 0x811C9DC5
    for byte in site.encode():
        digest = ((digest ^ byte) * 0x01000193) & 0xFFFFFFFF
    return digest % partitions


def subject_mapping(prefix: str, partitions: int) -> tuple[str, str]:
    """The server's `mappings` entry (source, destination) that puts the partition after the
    topic prefix; every node of the cluster carries the same one."""
    return (
        f"{prefix}.*.*.*",
        f"{prefix}.{{{{partition({partitions},1)}}}}"
        ".{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}",
    )


def partition_filter(prefix: str, number: int) -> str:
    return f"{STORED_PREFIX}{prefix}.{number}.*.*.*"


def consumer_name(number: int, epoch: int) -> str:
    return f"cw-p{number}-e{epoch}"


def topic_of(subject: str) -> str:
    """The MQTT topic of a stored subject: `$MQTT.msgs.cw.3.site.dev.telemetry` →
    `cw/site/dev/telemetry` (ids hold no dots: ingest/topics.py)."""
    tokens = subject[len(STORED_PREFIX) :].split(".")
    return "/".join([tokens[0], *tokens[2:]])


@dataclass
class PartitionFeed:
    """One partition's consumer while this worker owns it: what it delivered and has not
    acknowledged yet (stream sequence → reply subject), and whether it has caught up."""

    number: int
    epoch: int
    inbox: IngressQueue
    stop: threading.Event = field(default_factory=threading.Event)
    caught_up: threading.Event = field(default_factory=threading.Event)
    failed: BaseException | None = None
    _replies: dict[int, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _task: asyncio.Task[None] | None = None

    def last_sequence(self, tokens: Sequence[tuple[int, int, int]]) -> int | None:
        """The highest stream sequence among a flush's tokens (None without any)."""
        return max((seq for _, seq, _ in tokens), default=None)


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

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        self._call(self._connect(), timeout)

    def close(self) -> None:
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

    def ensure_consumers(self, partitions: int) -> int:
        """Gives every partition without a consumer one that starts at the stream's beginning
        (epoch 0), so nothing published is dropped before a worker takes it. Returns how many
        it created."""
        return self._call(self._ensure_consumers(partitions), REQUEST_TIMEOUT_S * 3)

    async def _ensure_consumers(self, partitions: int) -> int:
        names = await self._consumer_names()
        created = 0
        for number in range(partitions):
            if not any(name.startswith(f"cw-p{number}-e") for name in names):
                await self._add_consumer(number, 0, 0)
                created += 1
        return created

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
        await self.js.add_consumer(
            STREAM,
            ConsumerConfig(
                durable_name=consumer_name(number, epoch),
                filter_subject=partition_filter(self.prefix, number),
                ack_policy=AckPolicy.ALL,
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
        name = consumer_name(feed.number, feed.epoch)
        names = await self._consumer_names()
        if name not in names:
            await self._add_consumer(feed.number, feed.epoch, after_seq)
        for old in names:
            if old.startswith(f"cw-p{feed.number}-e") and old != name:
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await self.js.delete_consumer(STREAM, old)
        subscription = await self.js.pull_subscribe_bind(durable=name, stream=STREAM)
        feed._task = self._loop.create_task(self._pull(feed, subscription))

    async def _pull(
        self, feed: PartitionFeed, subscription: JetStreamContext.PullSubscription
    ) -> None:
        try:
            while not feed.stop.is_set():
                try:
                    messages = await subscription.fetch(FETCH_BATCH, timeout=FETCH_WAIT_S)
                except (nats.errors.TimeoutError, TimeoutError):  # nothing waiting
                    feed.caught_up.set()
                    continue
                if len(messages) < FETCH_BATCH:
                    feed.caught_up.set()
                received = self._received(feed, messages)
                await self._loop.run_in_executor(None, self._hand_over, feed, received)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the worker sees it and stops: the next owner goes on
            feed.failed = exc
            log.exception("partition %d: reading its consumer failed", feed.number)
        finally:
            await subscription.unsubscribe()

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
        """After the commit of a flush holding `tokens`: acknowledges the highest sequence,
        which (AckAll) acknowledges every one before it. Any thread; does not wait."""
        last = feed.last_sequence(tokens)
        if last is None:
            return
        with feed._lock:
            reply = feed._replies.get(last)
            for seq in [s for s in feed._replies if s <= last]:
                del feed._replies[seq]
        if reply is not None and self._nc is not None:
            asyncio.run_coroutine_threadsafe(self._nc.publish(reply, b"+ACK"), self._loop)

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
