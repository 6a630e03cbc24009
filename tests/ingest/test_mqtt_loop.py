"""The subscriber's network thread against the real broker: delivery in order (small and large
payloads, so packets straddle the 64 KiB reads), acks that stick across sessions, reconnection
when the session is taken over, and a prompt stop."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from config.urls import MqttEndpoint
from ingest.mqtt import (
    INCOMPLETE,
    MALFORMED,
    QUEUE_FULL_WAITS,
    SESSION_EXPIRY_S,
    IngressQueue,
    MqttSubscriber,
    ReceivedMessage,
    _variable_int,
    make_client,
)
from tests.support import wait_for

pytestmark = pytest.mark.integration

Subscribe = Callable[..., tuple[MqttSubscriber, IngressQueue]]


@pytest.fixture
def subscribe(mqtt_url: str, topic_prefix: str) -> Iterator[Subscribe]:
    """subscribe(client_id, protocol="5", capacity=50_000): a started subscriber of this test's
    prefix, connected; stopped at the end of the test."""
    started: list[MqttSubscriber] = []

    def start(
        client_id: str, protocol: str = "5", capacity: int = 50_000
    ) -> tuple[MqttSubscriber, IngressQueue]:
        inbox = IngressQueue(capacity)
        url = f"{mqtt_url}{'&' if '?' in mqtt_url else '?'}protocol={protocol}"
        subscriber = MqttSubscriber(url, client_id, [f"{topic_prefix}/#"], inbox)
        started.append(subscriber)
        subscriber.start()
        assert subscriber.wait_connected(10)
        return subscriber, inbox

    yield start
    for subscriber in started:
        subscriber.stop()


@pytest.fixture
def publisher(mqtt_url: str) -> Iterator[paho.Client]:
    target = MqttEndpoint.parse(mqtt_url)
    client = make_client(mqtt_url, f"pub-{uuid.uuid4().hex[:8]}")
    client.max_inflight_messages_set(1000)
    client.connect(target.host, target.port)
    client.loop_start()
    yield client
    client.loop_stop()
    client.disconnect()


def publish_all(client: paho.Client, messages: list[tuple[str, bytes]]) -> None:
    infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(30)


def take(inbox: IngressQueue, count: int, timeout: float = 30) -> list[ReceivedMessage]:
    """Exactly `count` messages, polled with a deadline."""
    taken: list[ReceivedMessage] = []
    deadline = time.monotonic() + timeout
    while len(taken) < count:
        assert time.monotonic() < deadline, f"{len(taken)} of {count} messages arrived"
        taken += inbox.get_many(count - len(taken), 0.1)
    return taken


def client_id() -> str:
    return f"cw-loop-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("protocol", ["5", "311"])
def test_many_messages_arrive_whole_and_in_order_per_topic(
    subscribe: Subscribe, publisher: paho.Client, topic_prefix: str, protocol: str
):
    subscriber, inbox = subscribe(client_id(), protocol)
    # Mostly small readings; every 100th is 100 KiB, larger than one read of the socket.
    messages = [
        (
            f"{topic_prefix}/d{n % 3}/telemetry",
            b"%d:" % n + (b"x" * 100_000 if n % 100 == 99 else b"reading"),
        )
        for n in range(600)
    ]
    sender = threading.Thread(target=publish_all, args=(publisher, messages))
    sender.start()
    received: list[ReceivedMessage] = []
    # With 3.1.1 the broker's own in-flight limit applies (Mosquitto's default: 20), so ack as
    # the pipeline would, batch by batch.
    while len(received) < len(messages):
        batch = take(inbox, 1)
        batch += inbox.get_many(1000, 0)
        received += batch
        subscriber.ack([m.token for m in batch])
    sender.join(30)
    assert [(m.topic, m.payload) for m in received if m.topic.endswith("d0/telemetry")] == [
        message for message in messages if message[0].endswith("d0/telemetry")
    ]
    assert sorted((m.topic, m.payload) for m in received) == sorted(messages)
    assert all(m.token[2] == 1 for m in received)


def test_acked_messages_are_not_redelivered_to_the_next_session(
    subscribe: Subscribe, publisher: paho.Client, topic_prefix: str
):
    name = client_id()
    subscriber, inbox = subscribe(name)
    topic = f"{topic_prefix}/d1/telemetry"
    publish_all(publisher, [(topic, b"%d" % n) for n in range(20)])
    first = take(inbox, 20)
    subscriber.ack([m.token for m in first[:10]])
    subscriber.stop()  # writes the acks handed over, then disconnects

    _, inbox = subscribe(name)
    publish_all(publisher, [(topic, b"marker")])
    # In order on one connection: the broker resends what is in flight before the marker.
    again = take(inbox, 11)
    assert [m.payload for m in again] == [b"%d" % n for n in range(10, 20)] + [b"marker"]
    assert inbox.get_many(10, 0) == []


def test_reconnects_and_receives_again_after_its_session_is_taken_over(
    subscribe: Subscribe, publisher: paho.Client, mqtt_url: str, topic_prefix: str
):
    name = client_id()
    subscriber, inbox = subscribe(name)
    topic = f"{topic_prefix}/d2/telemetry"
    publish_all(publisher, [(topic, b"before")])
    (before,) = take(inbox, 1)

    # Another client with the same id takes the session over (the broker drops ours), leaves
    # the message unacknowledged and goes away, keeping the session.
    target = MqttEndpoint.parse(mqtt_url)
    intruder = make_client(mqtt_url, name, manual_ack=True)
    if target.protocol == "5":
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
        intruder.connect(target.host, target.port, clean_start=False, properties=properties)
    else:
        intruder.connect(target.host, target.port)  # clean_session False: make_client
    wait_for(lambda: intruder.loop(0.05) == paho.MQTT_ERR_SUCCESS and intruder.is_connected(), 10)
    intruder.disconnect()

    # Our subscriber reconnects (after its 1 s backoff) and gets the message again, under a
    # token of the new connection; the old token's ack is skipped, the new one's is sent.
    (redelivered,) = take(inbox, 1, timeout=20)
    assert redelivered.payload == b"before" and redelivered.token[0] > before.token[0]
    subscriber.ack([before.token, redelivered.token])
    publish_all(publisher, [(topic, b"after")])
    (after,) = take(inbox, 1)
    assert after.payload == b"after"
    subscriber.ack([after.token])
    subscriber.stop()

    _, inbox = subscribe(name)
    publish_all(publisher, [(topic, b"marker")])
    assert [m.payload for m in take(inbox, 1)] == [b"marker"]


def test_stop_is_prompt_even_while_blocked_on_a_full_inbox(
    subscribe: Subscribe, publisher: paho.Client, topic_prefix: str
):
    subscriber, _ = subscribe(client_id(), capacity=1)
    waits_before = QUEUE_FULL_WAITS._value.get()
    publish_all(publisher, [(f"{topic_prefix}/d3/telemetry", b"%d" % n) for n in range(5)])
    wait_for(lambda: QUEUE_FULL_WAITS._value.get() > waits_before, 10, "the inbox filled up")
    started = time.monotonic()
    subscriber.stop()
    assert time.monotonic() - started < 2.0


def test_stop_is_prompt_while_the_broker_is_unreachable():
    # A port nothing listens on: the thread is in its reconnect backoff.
    inbox = IngressQueue(10)
    subscriber = MqttSubscriber("mqtt://127.0.0.1:9", client_id(), ["cw/#"], inbox)
    subscriber.start()
    assert not subscriber.wait_connected(0.2)
    started = time.monotonic()
    subscriber.stop()
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        (b"\x00", (0, 1)),
        (b"\x7f", (127, 1)),
        (b"\x80\x01", (128, 2)),
        (b"\xff\xff\xff\x7f", (268_435_455, 4)),  # the largest MQTT allows
        (b"\x80\x80", (INCOMPLETE, 2)),  # the rest has not arrived yet
        (b"\x80\x80\x80\x80\x01", (MALFORMED, 4)),  # a fifth byte
    ],
)
def test_variable_byte_integers_decode_or_say_why_not(
    encoded: bytes, expected: tuple[int, int]
) -> None:
    assert _variable_int(b"\x30" + encoded, 1, 1 + len(encoded)) == (expected[0], expected[1] + 1)
