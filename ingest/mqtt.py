"""The MQTT boundary: a paho-mqtt 2.x subscriber handing messages to the pipeline.

- QoS 1 and a persistent session (MQTT 5: clean_start False with a session expiry; MQTT 3.1.1:
  clean_session False), so the broker keeps what arrives while the service is down.
- Manual acknowledgement: paho does not PUBACK on receipt; the pipeline calls `ack()` after the
  batch holding the messages is committed. A crash before the commit leaves the messages
  unacknowledged, and the broker redelivers them to the persistent session; the storage dedupe
  keys absorb the copies. Acks of a connection that has since dropped are skipped: the broker
  redelivers those messages on the new connection anyway, and their old packet ids may be
  reused there.
- paho's network thread must never run pipeline work: `on_message` only copies the message into
  a frozen `Message` and puts it on a bounded queue. The policy when the queue is full is
  `block` (back-pressure): paho stops reading the socket, the broker stops sending once its
  in-flight window is used, and nothing is dropped. Each wait is counted.
- Reconnects with exponential backoff (paho's own, 1 s up to 30 s).
- paho types never leave this module.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

QUEUE_FULL_WAITS = Counter(
    "clausewatch_ingest_queue_full_waits",
    "Times the MQTT thread waited on a full ingest queue (back-pressure, nothing dropped)",
)
RECEIVED = Counter("clausewatch_mqtt_messages_received", "MQTT messages received")
CONNECTED = Gauge("clausewatch_mqtt_connected", "1 while the ingest client is connected")

SESSION_EXPIRY_S = 7 * 86400  # the broker keeps our session (and queued messages) this long
# MQTT 5 Receive Maximum: how many unacknowledged QoS 1 messages the broker may send us. Acks
# come after commit, so the window must hold a full batch plus the one being filled.
RECEIVE_MAXIMUM = 65535
KEEPALIVE_S = 30


@dataclass(frozen=True, slots=True)
class MqttUrl:
    """`mqtt://[user[:password]@]host[:port][?protocol=5|311]` (`mqtts://` for TLS)."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False
    protocol: str = "5"  # "5" or "311": amqtt (the embedded broker) speaks 3.1.1 only

    @classmethod
    def parse(cls, url: str) -> MqttUrl:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp"):
            raise ValueError(f"MQTT URL must start with mqtt:// or mqtts://, got {url!r}")
        if not parts.hostname:
            raise ValueError(f"MQTT URL has no host: {url!r}")
        tls = parts.scheme == "mqtts"
        protocol = parse_qs(parts.query).get("protocol", ["5"])[0]
        if protocol not in ("5", "311"):
            raise ValueError(f"protocol must be 5 or 311, got {protocol!r}")
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
            protocol=protocol,
        )

    @property
    def paho_protocol(self) -> MQTTProtocolVersion:
        return MQTTProtocolVersion.MQTTv5 if self.protocol == "5" else MQTTProtocolVersion.MQTTv311


def make_client(url: MqttUrl | str, client_id: str, *, manual_ack: bool = False) -> paho.Client:
    """A paho client configured from `url` (credentials, TLS, protocol), not yet connected.
    Publishers (simulators, edge, tests) use it too, so every client logs in the same way."""
    target = MqttUrl.parse(url) if isinstance(url, str) else url
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=target.paho_protocol,
        clean_session=None if target.protocol == "5" else False,
        manual_ack=manual_ack,
    )
    if target.username is not None:
        client.username_pw_set(target.username, target.password)
    if target.tls:
        client.tls_set()
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client


@dataclass(frozen=True, slots=True)
class Message:
    """One received message. `token` is what `ack()` needs; opaque to everyone else."""

    topic: str
    payload: bytes
    received_at: float  # wall clock, epoch seconds
    token: tuple[int, int, int]  # (connection generation, mid, qos)


class IngressQueue:
    """Bounded hand-off from paho's thread to the pipeline. Policy `block`: a full queue makes
    the producer wait (back-pressure), counted in QUEUE_FULL_WAITS; nothing is dropped."""

    policy = "block"

    def __init__(self, capacity: int) -> None:
        self._queue: queue.Queue[Message] = queue.Queue(maxsize=capacity)

    def put(self, message: Message, stop: threading.Event) -> bool:
        """Queues `message`, waiting while full; returns False only if `stop` is set first."""
        try:
            self._queue.put_nowait(message)
            return True
        except queue.Full:
            QUEUE_FULL_WAITS.inc()
        while not stop.is_set():
            try:
                self._queue.put(message, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def get_many(self, limit: int, timeout: float) -> list[Message]:
        """Up to `limit` messages: waits at most `timeout` for the first, then takes what is
        already there without waiting."""
        try:
            first = self._queue.get(timeout=timeout)
        except queue.Empty:
            return []
        batch = [first]
        get = self._queue.get_nowait
        try:
            while len(batch) < limit:
                batch.append(get())
        except queue.Empty:
            pass
        return batch

    def qsize(self) -> int:
        return self._queue.qsize()


class MqttSubscriber:
    """Subscribes `filters` at QoS 1 in a persistent session and feeds `inbox`.

    `start()` returns at once (connection and reconnects run on paho's thread);
    `wait_connected(timeout)` tells whether the first subscription is in place.
    """

    def __init__(
        self,
        url: str,
        client_id: str,
        filters: Sequence[str],
        inbox: IngressQueue,
    ) -> None:
        self.url = MqttUrl.parse(url)
        self.filters = tuple(filters)
        self.inbox = inbox
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._generation = 0
        self._lock = threading.Lock()
        self._client = make_client(self.url, client_id, manual_ack=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def start(self) -> None:
        properties = None
        if self.url.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho
            properties.SessionExpiryInterval = SESSION_EXPIRY_S
            properties.ReceiveMaximum = RECEIVE_MAXIMUM
            self._client.connect_async(
                self.url.host, self.url.port, KEEPALIVE_S, clean_start=False, properties=properties
            )
        else:
            self._client.connect_async(self.url.host, self.url.port, KEEPALIVE_S)
        self._client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        return self._subscribed.wait(timeout)

    def ack(self, tokens: Iterable[tuple[int, int, int]]) -> None:
        """PUBACKs the messages of `tokens` (after their batch is committed), in order."""
        with self._lock:
            generation = self._generation
        ack = self._client.ack
        for token_generation, mid, qos in tokens:
            if token_generation == generation and qos > 0:
                ack(mid, qos)

    def stop(self) -> None:
        """Disconnects cleanly. Unacknowledged messages stay with the broker's session."""
        self._stop.set()
        self._client.disconnect()
        self._client.loop_stop()
        CONNECTED.set(0)

    # -- paho callbacks (paho's network thread) --

    def _on_connect(
        self, client: paho.Client, _userdata: Any, flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            log.warning("MQTT connect to %s:%s refused: %s", self.url.host, self.url.port, reason)
            return
        with self._lock:
            self._generation += 1
        CONNECTED.set(1)
        log.info(
            "MQTT connected to %s:%s (session present: %s)",
            self.url.host,
            self.url.port,
            getattr(flags, "session_present", None),
        )
        client.subscribe([(topic_filter, 1) for topic_filter in self.filters])

    def _on_subscribe(
        self, _client: paho.Client, _userdata: Any, _mid: int, reasons: Any, _props: Any
    ) -> None:
        failures = [r for r in reasons if r.is_failure]
        if failures:
            log.error("MQTT subscription refused: %s", failures)
            return
        self._subscribed.set()

    def _on_disconnect(
        self, _client: paho.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        CONNECTED.set(0)
        if not self._stop.is_set():
            log.warning("MQTT disconnected (%s); reconnecting with backoff", reason)

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        RECEIVED.inc()
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = bytes(message._topic).decode("utf-8", "replace")  # decode reports bad_topic
        payload = message.payload
        if not isinstance(payload, bytes):  # paho hands received payloads over as bytes
            payload = bytes(payload)
        item = Message(
            topic,
            payload,
            time.time(),
            (self._generation, message.mid, message.qos),
        )
        self.inbox.put(item, self._stop)
