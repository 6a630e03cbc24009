"""The MQTT boundary: a paho-mqtt 2.x subscriber handing messages to the pipeline.

- QoS 1 and a persistent session (MQTT 5: clean_start False with a session expiry; MQTT 3.1.1:
  clean_session False), so the broker keeps what arrives while the service is down. MQTT 5 by
  default for its Receive Maximum: with 3.1.1 the broker's own in-flight limit applies
  (Mosquitto's default is 20), and acks come only after a checkpoint.
- Manual acknowledgement: nothing is PUBACKed on receipt; the pipeline calls `ack()` after the
  batch holding the messages is committed. A crash before the commit leaves the messages
  unacknowledged, and the broker redelivers them to the persistent session; the storage dedupe
  keys absorb the copies. Acks of a connection that has since dropped are skipped: the broker
  redelivers those messages on the new connection anyway, and their old packet ids may be
  reused there.
- One network thread of our own (not paho's `loop_start`, which costs a select() and three or
  more recv() per message and a send() per ack): per wake-up it reads the socket in 64 KiB
  chunks, decodes the PUBLISH packets itself and hands every other packet to paho, which keeps
  the session, keepalive and callbacks; the PUBACKs of all the ack batches handed over since
  the last wake-up go out in one send().
- The network thread never runs pipeline work: it only copies each message into an immutable
  `ReceivedMessage` and puts those of one socket read on a bounded queue at once (one lock and
  wake-up per read, not per message). The policy when the queue is full is `block`
  (back-pressure): the thread stops reading the socket, the broker stops sending once its
  in-flight window is used, and nothing is dropped. Each wait is counted.
- Reconnects with exponential backoff, 1 s up to 30 s (as paho's own loop did).
- paho types never leave this module.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import Counter, Gauge

from config.urls import MqttEndpoint

if TYPE_CHECKING:
    from ingest.decode import Decoded

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
RECONNECT_MIN_S = 1.0  # backoff after a lost connection or failed attempt, doubling up to
RECONNECT_MAX_S = 30.0
# The network thread wakes at least this often to keep the connection alive (PINGREQ).
SELECT_TIMEOUT_S = 1.0
# One recv() takes up to RECV_BYTES (about 500 readings); a turn reads at most
# READ_CHUNKS_PER_TURN of them before writing the acks handed over and servicing keepalive.
RECV_BYTES = 65536
READ_CHUNKS_PER_TURN = 16
STOP_TIMEOUT_S = 10.0  # writing the last acks and DISCONNECT at stop
PUBLISH_QOS0_OR_1 = 0x30  # fixed header & 0xF4: packet type PUBLISH, QoS bit 2 clear
PUBACK_HEADER = b"\x40\x02"  # PUBACK, remaining length 2 (the packet id; v5: reason Success)
PINGREQ = b"\xc0\x00"
PINGRESP = 0xD0  # fixed header byte
INCOMPLETE, MALFORMED = -1, -2  # what _variable_int returns instead of a value
# Calling a named tuple class runs its __new__, a Python function: a frame per message on the
# network thread. tuple.__new__ given every field makes the same named tuple in C.
_new_tuple = tuple.__new__


def make_client(
    url: MqttEndpoint | str,
    client_id: str,
    *,
    manual_ack: bool = False,
    client_class: type[paho.Client] = paho.Client,
) -> paho.Client:
    """A paho client configured from `url` (protocol; credentials and TLS by
    `MqttEndpoint.configure`, as every client of the project), not yet connected. Tests
    publish with it too."""
    target = MqttEndpoint.parse(url) if isinstance(url, str) else url
    client = client_class(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5
        if target.protocol == "5"
        else MQTTProtocolVersion.MQTTv311,
        clean_session=None if target.protocol == "5" else False,
        manual_ack=manual_ack,
    )
    target.configure(client)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client


Settled = Literal["committed", "rejected", "abandoned"]


class Receipt(Protocol):
    """How a message that did not come from the broker (HTTP ingest, ingest/direct.py) learns
    its fate: the pipeline thread calls `decoded` with what the message decoded to when it takes
    it, then `settled` once: "committed" when the flush holding it committed, "rejected" when the
    database refused that flush and its rows were kept as dead letters, "abandoned" when the
    pipeline stopped before committing it."""

    def decoded(self, items: Sequence[Decoded], /) -> None: ...

    def settled(self, outcome: Settled, /) -> None: ...


# The token of a message with a receipt: it is never acknowledged to a broker.
NO_TOKEN = (-1, 0, 0)


class ReceivedMessage(NamedTuple):
    """One received message. `token` is what `ack()` needs; opaque to everyone else. A message
    with a `receipt` is settled through it instead (its token is NO_TOKEN). A named tuple: one
    is made per message on the network thread, and a frozen dataclass costs twice as much to
    make."""

    topic: str
    payload: bytes
    received_at: float  # wall clock, epoch seconds
    token: tuple[int, int, int]  # (connection generation, mid, qos)
    receipt: Receipt | None = None


class IngressQueue:
    """Bounded hand-off from the network thread to the pipeline, in chunks: the network thread
    puts every message of one socket read at once (`put_many`), the pipeline takes up to a
    batch at once (`get_many`), so the cost of the hand-off (a lock, a wake-up) is paid per
    chunk, not per message. Policy `block`: a producer that finds the queue holding `capacity`
    messages waits (back-pressure), counted in QUEUE_FULL_WAITS; nothing is dropped."""

    policy = "block"

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._chunks: deque[list[ReceivedMessage]] = deque()
        self._size = 0
        lock = threading.Lock()
        self._not_empty = threading.Condition(lock)
        self._not_full = threading.Condition(lock)

    def put(self, message: ReceivedMessage, stop: threading.Event) -> bool:
        """Queues `message`, waiting while full; returns False only if `stop` is set first."""
        return self.put_many([message], stop)

    def put_many(self, messages: list[ReceivedMessage], stop: threading.Event) -> bool:
        """Queues `messages` in order after everything queued, as much as fits at a time,
        waiting while the queue is full; returns False only if `stop` is set first (then the
        rest is not queued). The list becomes the queue's."""
        with self._not_full:
            waited = False
            while messages:
                room = self.capacity - self._size
                if room <= 0:
                    if not waited:
                        QUEUE_FULL_WAITS.inc()
                        waited = True
                    if stop.is_set():
                        return False
                    self._not_full.wait(0.5)
                    continue
                if len(messages) > room:
                    chunk, messages = messages[:room], messages[room:]
                else:
                    chunk, messages = messages, []
                self._chunks.append(chunk)
                self._size += len(chunk)
                self._not_empty.notify()
        return True

    def offer(self, message: ReceivedMessage) -> bool:
        """Queues `message` if there is room now; False when full (the caller refuses it: HTTP
        ingest answers 503 rather than wait)."""
        with self._not_full:
            if self._size >= self.capacity:
                return False
            self._chunks.append([message])
            self._size += 1
            self._not_empty.notify()
        return True

    def get_many(self, limit: int, timeout: float) -> list[ReceivedMessage]:
        """Up to `limit` messages: waits at most `timeout` for the first (or a `wake`), then
        takes what is already there without waiting."""
        with self._not_empty:
            if not self._size:
                self._not_empty.wait(timeout)
                if not self._size:
                    return []
            chunks = self._chunks
            batch = chunks.popleft()
            while len(batch) < limit and chunks:
                batch += chunks.popleft()
            if len(batch) > limit:
                chunks.appendleft(batch[limit:])
                del batch[limit:]
            self._size -= len(batch)
            self._not_full.notify()
        return batch

    def wake(self) -> None:
        """Ends a `get_many` waiting now (it returns what is there, perhaps nothing)."""
        with self._not_empty:
            self._not_empty.notify()

    def qsize(self) -> int:
        return self._size


class _FedClient(paho.Client):
    """A paho client that reads packets from `feed` instead of its socket.

    The subscriber's network thread reads the socket in large chunks and decodes PUBLISH packets
    itself; every other packet (CONNACK, SUBACK, PINGRESP, DISCONNECT) it hands to paho, whole,
    through `feed` and one `loop_read()`, so paho keeps the session state, keepalive and
    callbacks. `_sock_recv` is paho's single read primitive (paho 2.x); paho calls it only from
    `loop_read`, which the thread calls only with a complete packet in `feed` or `feed_closed`
    set (then paho sees end-of-stream and runs its own connection-lost path)."""

    feed = b""
    feed_closed = False

    def _sock_recv(self, bufsize: int) -> bytes:
        if not self.feed:
            if self.feed_closed:
                return b""
            raise BlockingIOError
        chunk, self.feed = self.feed[:bufsize], self.feed[bufsize:]
        return chunk


class MqttSubscriber:
    """Subscribes `filters` at QoS 1 in a persistent session and feeds `inbox`.

    `start()` returns at once; connection, reconnects and all socket I/O run on the subscriber's
    own network thread (paho's external-loop API: `socket()`, `loop_read()`, `loop_write()`,
    `want_write()`, `loop_misc()`). `wait_connected(timeout)` tells whether the first
    subscription is in place. Per wake-up the thread reads everything the socket holds (up to
    `READ_CHUNKS_PER_TURN` chunks) and writes the PUBACKs of every `ack()` batch handed to it
    since the last turn in one `send()`.
    """

    def __init__(
        self,
        url: str,
        client_id: str,
        filters: Sequence[str],
        inbox: IngressQueue,
    ) -> None:
        self.url = MqttEndpoint.parse(url)
        self.filters = tuple(filters)
        self.inbox = inbox
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._generation = 0  # connections so far; read and written on the network thread only
        self._connected_once = False  # since the last reconnect attempt: resets the backoff
        self._acks: deque[list[tuple[int, int, int]]] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._received = b""  # bytes read from the socket, not yet a complete packet
        self._taken: list[ReceivedMessage] = []  # messages of the current read, not handed over
        self._unsent = bytearray()  # PUBACKs not yet taken by the socket
        self._pongs = 0  # PINGRESPs received (the barrier at stop waits for one)
        self._v5 = self.url.protocol == "5"
        self._thread: threading.Thread | None = None
        client = make_client(self.url, client_id, manual_ack=True, client_class=_FedClient)
        assert isinstance(client, _FedClient)
        self._client = client
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        # With a register-write callback paho only queues what it sends; the network thread
        # writes it (`loop_write`), never the thread that called `subscribe()` or `ack()`.
        self._client.on_socket_register_write = _nothing_to_do

    def start(self) -> None:
        if self._v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho
            properties.SessionExpiryInterval = SESSION_EXPIRY_S
            properties.ReceiveMaximum = RECEIVE_MAXIMUM
            self._client.connect_async(
                self.url.host, self.url.port, KEEPALIVE_S, clean_start=False, properties=properties
            )
        else:
            self._client.connect_async(self.url.host, self.url.port, KEEPALIVE_S)
        self._thread = threading.Thread(target=self._run, name="mqtt-network", daemon=True)
        self._thread.start()

    def wait_connected(self, timeout: float) -> bool:
        return self._subscribed.wait(timeout)

    def ack(self, tokens: Iterable[tuple[int, int, int]]) -> None:
        """PUBACKs the messages of `tokens` (after their batch is committed), in order. Hands the
        batch to the network thread, which writes it with the next turn's writes."""
        self._acks.append(list(tokens))
        self._wake()

    def stop(self) -> None:
        """Writes the acks handed over so far and disconnects cleanly. Unacknowledged messages
        stay with the broker's session."""
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
        CONNECTED.set(0)

    # -- the network thread --

    def _wake(self) -> None:
        # A full pipe holds earlier wake-ups (the thread will wake); a closed one, a stopped
        # subscriber.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _run(self) -> None:
        try:
            self._connect_and_serve()
        except BaseException:  # a bug: make it visible (ingestion stops, messages stay queued)
            log.exception("MQTT network thread stopped by an unexpected error")
            raise
        finally:
            self._wake_r.close()
            self._wake_w.close()

    def _connect_and_serve(self) -> None:
        delay = RECONNECT_MIN_S
        first = True
        while not self._stop.is_set():
            if not first:
                # Back off after a lost connection or a failed attempt, as paho's own loop does.
                if self._connected_once:
                    delay = RECONNECT_MIN_S
                self._stop.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
                if self._stop.is_set():
                    break
            first = False
            self._connected_once = False
            self._received = b""
            self._taken = []
            self._unsent.clear()
            self._client.feed, self._client.feed_closed = b"", False
            try:
                self._client.reconnect()
            except OSError as exc:
                log.warning("MQTT connect to %s:%s failed: %s", self.url.host, self.url.port, exc)
                continue
            self._serve()

    def _serve(self) -> None:
        """Runs one connection until it is lost or the subscriber stops."""
        client = self._client
        more_to_read = False
        while True:
            sock = client.socket()
            if sock is None:
                return
            if self._stop.is_set():
                self._disconnect(sock)
                return
            writing = [sock] if self._unsent or client.want_write() else []
            timeout = 0.0 if more_to_read else SELECT_TIMEOUT_S
            try:
                readable, _, _ = select.select([sock, self._wake_r], writing, [], timeout)
            except (OSError, ValueError):  # closed under us
                self._lose_connection()
                return
            if self._wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    self._wake_r.recv(4096)
            if sock in readable or more_to_read:
                more_to_read = self._read(sock)
                if client.socket() is not sock:
                    return
            self._queue_acks()
            if not self._write(sock):
                return
            if client.loop_misc() != paho.MQTT_ERR_SUCCESS or client.socket() is not sock:
                return

    def _read(self, sock: Any) -> bool:
        """Reads and handles what the socket holds, up to READ_CHUNKS_PER_TURN chunks; true when
        that limit stopped it (more may be waiting: the next turn does not wait in select)."""
        for _ in range(READ_CHUNKS_PER_TURN):
            try:
                data = sock.recv(RECV_BYTES)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return False
            except OSError as exc:
                log.warning("MQTT read failed: %s", exc)
                self._lose_connection()
                return False
            if not data:
                self._lose_connection()
                return False
            self._received = self._received + data if self._received else data
            # One receive time for the messages of one read: they arrived together.
            handled = self._handle_packets(time.time())
            if not self._hand_over() or not handled or self._client.socket() is not sock:
                return False
        return True

    def _handle_packets(self, received_at: float) -> bool:
        """Handles every complete packet in `_received`: PUBLISH at QoS 0 or 1 here (collected
        in `_taken` for `_hand_over`), anything else by paho. False when paho dropped the
        connection."""
        buf = self._received
        end_of_data = len(buf)
        pos = 0
        taken = self._taken
        before = len(taken)
        generation = self._generation
        v5 = self._v5
        try:
            while pos + 1 < end_of_data:
                header = buf[pos]
                length = buf[pos + 1]
                if length < 0x80:  # most packets: a one-byte remaining length
                    i = pos + 2
                else:
                    length, i = _variable_int(buf, pos + 1, end_of_data)
                    if length == INCOMPLETE:
                        return True
                    if length == MALFORMED:
                        log.error("MQTT packet with a malformed length; dropping the connection")
                        self._lose_connection()
                        return False
                end = i + length
                if end > end_of_data:
                    return True
                if header & 0xF4 == PUBLISH_QOS0_OR_1:
                    message = _publish(buf, header, i, end, v5, received_at, generation)
                    if message is not None:
                        taken.append(message)
                        pos = end
                        continue
                if header == PINGRESP:
                    self._pongs += 1
                # Not ours (or malformed: paho refuses it and drops the connection). What was
                # taken before it goes first, in the order received.
                RECEIVED.inc(len(taken) - before)
                if not self._hand_over() or not self._paho_packet(buf[pos:end]):
                    return False
                taken = self._taken
                before = len(taken)
                generation = self._generation  # a CONNACK given to paho starts a new one
                pos = end
            return True
        finally:
            self._received = buf[pos:]
            if len(self._taken) > before:
                RECEIVED.inc(len(self._taken) - before)

    def _hand_over(self) -> bool:
        """Puts the messages taken so far on the inbox in one chunk; blocks while the inbox is
        full (back-pressure: the socket is not read meanwhile, so the broker stops once our
        in-flight window is used). False when stopping made it give up: those messages stay
        unacknowledged, and the broker sends them again."""
        taken = self._taken
        if not taken:
            return True
        self._taken = []
        return self.inbox.put_many(taken, self._stop)

    def _paho_packet(self, packet: bytes) -> bool:
        client = self._client
        client.feed = packet
        rc = client.loop_read()
        client.feed = b""
        return rc == paho.MQTT_ERR_SUCCESS and client.socket() is not None

    def _lose_connection(self) -> None:
        """Lets paho see end-of-stream, so it closes the socket and runs `on_disconnect`."""
        client = self._client
        if client.socket() is not None:
            client.feed, client.feed_closed = b"", True
            client.loop_read()

    def _queue_acks(self) -> None:
        """Turns the ack batches handed over into PUBACK packets. Acks of an earlier connection
        are skipped: the broker redelivers those messages on this one, and their old packet
        ids may be reused here."""
        generation = self._generation
        while self._acks:
            packets = []
            for token_generation, mid, qos in self._acks.popleft():
                if token_generation != generation:
                    continue
                if qos == 1:
                    packets.append(PUBACK_HEADER + mid.to_bytes(2, "big"))
                elif qos == 2:
                    self._client.ack(mid, qos)  # PUBCOMP: paho holds the QoS 2 state
            self._unsent += b"".join(packets)

    def _write(self, sock: Any) -> bool:
        """Writes the PUBACKs, then what paho queued (CONNECT, SUBSCRIBE, PINGREQ). False when
        the connection is lost."""
        client = self._client
        if self._unsent:
            try:
                sent = sock.send(self._unsent)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return True
            except OSError as exc:
                log.warning("MQTT write failed: %s", exc)
                self._lose_connection()
                return False
            del self._unsent[:sent]
        return (
            bool(self._unsent)
            or not client.want_write()
            or (client.loop_write() == paho.MQTT_ERR_SUCCESS and client.socket() is sock)
        )

    def _disconnect(self, sock: Any) -> None:
        """At stop, within STOP_TIMEOUT_S: the acks handed over, then a PINGREQ, and DISCONNECT
        once its PINGRESP shows the broker has processed every ack before it (otherwise a
        restart that takes the session over at once can overtake acks still unread in the
        broker's buffer of this connection, and they are lost: the messages come again)."""
        self._queue_acks()
        self._unsent += PINGREQ
        pongs = self._pongs
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while self._pongs == pongs and time.monotonic() < deadline:
            if not self._write(sock):
                return
            writing = [sock] if self._unsent else []
            remaining = max(0.0, deadline - time.monotonic())
            readable, _, _ = select.select([sock], writing, [], remaining)
            if readable:
                self._read(sock)  # what arrives meanwhile is not acknowledged: it comes again
                if self._client.socket() is not sock:
                    return
        client = self._client
        client.disconnect()
        while client.want_write() and client.socket() is sock and time.monotonic() < deadline:
            if client.loop_write() != paho.MQTT_ERR_SUCCESS:
                return
            if client.want_write():
                _wait_writable(sock, deadline)

    # -- paho callbacks (on the network thread, from loop_read/loop_write/loop_misc) --

    def _on_connect(
        self, client: paho.Client, _userdata: Any, flags: Any, reason: Any, _props: Any
    ) -> None:
        if reason.is_failure:
            log.warning("MQTT connect to %s:%s refused: %s", self.url.host, self.url.port, reason)
            return
        self._generation += 1
        self._connected_once = True
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
        """A PUBLISH the network thread left to paho (QoS 2: never sent to a QoS 1
        subscription, kept so nothing is dropped unseen)."""
        RECEIVED.inc()
        topic = bytes(message._topic).decode("utf-8", "replace")
        token = (self._generation, message.mid, message.qos)
        message_in = ReceivedMessage(topic, bytes(message.payload), time.time(), token)
        self.inbox.put(message_in, self._stop)


def _publish(
    buf: bytes, header: int, start: int, end: int, v5: bool, received_at: float, generation: int
) -> ReceivedMessage | None:
    """The PUBLISH in `buf[start:end]` (after its fixed header) as a message; None if it does
    not parse as one (paho then takes it)."""
    if end - start < 2:
        return None
    topic_end = start + 2 + ((buf[start] << 8) | buf[start + 1])
    if topic_end == start + 2 or topic_end > end:  # empty (a v5 topic alias) or malformed
        return None
    qos = (header >> 1) & 0x03
    body = topic_end
    mid = 0
    if qos:
        if body + 2 > end:
            return None
        mid = (buf[body] << 8) | buf[body + 1]
        body += 2
    if v5:
        # Properties: their length in bytes, then the properties, which we do not use.
        properties, body = _variable_int(buf, body, end)
        if properties < 0:
            return None
        body += properties
    if body > end:
        return None
    # Invalid UTF-8 is replaced: the decoder reports such a topic as bad_topic.
    topic = buf[start + 2 : topic_end].decode("utf-8", "replace")
    return _new_tuple(
        ReceivedMessage, (topic, buf[body:end], received_at, (generation, mid, qos), None)
    )


def _variable_int(buf: bytes, start: int, end: int) -> tuple[int, int]:
    """MQTT's variable byte integer at `buf[start:end]` (1-4 bytes, 7 bits each, least
    significant first) and the index after it; INCOMPLETE when `end` cuts it short, MALFORMED
    when a fifth byte would be needed."""
    value = 0
    shift = 0
    i = start
    while i < end:
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if byte < 0x80:
            return value, i
        shift += 7
        if shift == 28:
            return MALFORMED, i
    return INCOMPLETE, i


def _wait_writable(sock: Any, deadline: float) -> None:
    select.select([], [sock], [], max(0.0, deadline - time.monotonic()))


def _nothing_to_do(*_args: object) -> None:
    """paho's register-write callback: the network thread checks `want_write()` each turn."""
