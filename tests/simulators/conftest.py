"""A real paho subscriber that records what reaches the broker under a topic prefix."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from config.urls import MqttEndpoint
from tests.support import OwnBroker


class Collector:
    def __init__(self, mqtt_url: str, topic_filter: str) -> None:
        self.received: list[tuple[str, bytes, float]] = []  # topic, payload, receive time
        self._changed = threading.Condition()
        subscribed = threading.Event()
        address = MqttEndpoint.parse(mqtt_url)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}"
        )

        def on_connect(client: mqtt.Client, *_: object) -> None:
            client.subscribe(topic_filter, qos=1)

        def on_subscribe(*_: object) -> None:
            subscribed.set()

        def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
            with self._changed:
                self.received.append((message.topic, message.payload, time.time()))
                self._changed.notify_all()

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect(address.host, address.port)
        self.client.loop_start()
        assert subscribed.wait(10), "the test subscriber could not subscribe"

    def wait_for(
        self, condition: Callable[[list[tuple[str, bytes, float]]], bool], timeout: float
    ) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: condition(self.received), timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="session")
def mqtt_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The simulator tests flood a broker with thousands of messages faster than a subscriber
    takes them: a default Mosquitto drops past 1,000 queued messages per client (SPEC §7), so
    these tests run against a broker of their own with the bundled configuration."""
    broker = OwnBroker(tmp_path_factory.mktemp("simulator-broker"))
    broker.start()
    try:
        yield broker.url
    finally:
        broker.stop()


@pytest.fixture
def collector(mqtt_url: str, topic_prefix: str) -> Iterator[Collector]:
    subscriber = Collector(mqtt_url, f"{topic_prefix}/#")
    yield subscriber
    subscriber.close()
