"""Publishing to the broker at QoS 1 with a bound on unacknowledged messages.

paho accepts publishes without limit and fails once 65,535 message ids are in flight, so the
publisher takes a permit per message and gives it back when the broker acknowledges (PUBACK).
A full window makes `publish` wait: back-pressure instead of loss.
"""

from __future__ import annotations

import threading
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from config.urls import MqttEndpoint

DEFAULT_MAX_IN_FLIGHT = 1000  # far below paho's 65,535 ids; enough to keep a local broker busy


class PublishError(RuntimeError):
    """The broker could not be reached or did not acknowledge in time."""


class Publisher:
    """A connected paho client publishing at QoS 1 with at most `max_in_flight` unacknowledged
    messages. Use as a context manager: leaving waits for every acknowledgement."""

    def __init__(
        self,
        mqtt_url: str,
        *,
        client_id: str | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        connect_timeout: float = 10.0,
    ) -> None:
        self.broker = MqttEndpoint.parse(mqtt_url)
        self.max_in_flight = max_in_flight
        self.connect_timeout = connect_timeout
        self._permits = threading.BoundedSemaphore(max_in_flight)
        self._connected = threading.Event()
        self.published = 0
        self.acknowledged = 0
        self._acks = threading.Condition()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"cw-sim-{uuid.uuid4().hex[:8]}",
            # Whatever the URL's protocol= (the subscriber's) says: every broker speaks 3.1.1,
            # the embedded one (amqtt) nothing else.
            protocol=mqtt.MQTTv311,
        )
        self._client.max_inflight_messages_set(max_in_flight)
        self._client.max_queued_messages_set(0)
        self.broker.configure(self._client)  # credentials and TLS, as every client of ours
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: object,
        reason: object,
        properties: object,
    ) -> None:
        if not getattr(reason, "is_failure", False):
            self._connected.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: object,
        reason: object,
        properties: object,
    ) -> None:
        self._connected.clear()  # paho reconnects by itself and resends what is in flight

    def _on_publish(
        self, client: mqtt.Client, userdata: object, mid: int, reason: object, properties: object
    ) -> None:
        with self._acks:
            self.acknowledged += 1
            self._acks.notify_all()
        self._permits.release()

    def __enter__(self) -> Publisher:
        self._client.connect_async(self.broker.host, self.broker.port, keepalive=30)
        self._client.loop_start()
        if not self._connected.wait(self.connect_timeout):
            self._client.loop_stop()
            raise PublishError(
                f"no connection to {self.broker.host}:{self.broker.port} "
                f"within {self.connect_timeout:.0f}s"
            )
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            if exc_info[0] is None:
                self.flush(timeout=30.0)
        finally:
            self._client.disconnect()
            self._client.loop_stop()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Hands one message to paho at QoS 1; waits while the in-flight window is full."""
        while not self._permits.acquire(timeout=1.0):
            if not self._client.is_connected() and not self._connected.wait(self.connect_timeout):
                raise PublishError("the broker went away and did not come back")
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            self._permits.release()
            raise PublishError(f"paho refused to publish on {topic}: {mqtt.error_string(info.rc)}")
        self.published += 1

    def flush(self, timeout: float) -> None:
        """Waits until the broker acknowledged everything published so far."""
        with self._acks:
            if not self._acks.wait_for(lambda: self.acknowledged >= self.published, timeout):
                raise PublishError(
                    f"{self.published - self.acknowledged} message(s) unacknowledged after "
                    f"{timeout:.0f}s"
                )
