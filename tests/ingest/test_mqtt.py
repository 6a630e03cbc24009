"""The MQTT boundary's pure parts: broker URLs and the bounded hand-off queue's `block` policy
(a full queue makes the producer wait, counted, and never drops)."""

from __future__ import annotations

import threading

import pytest

from ingest.mqtt import QUEUE_FULL_WAITS, IngressQueue, Message, MqttUrl


def message(n: int) -> Message:
    return Message("cw/hq/th-1/telemetry", b"{}", 0.0, (1, n, 1))


def test_mqtt_url_defaults_and_credentials():
    assert MqttUrl.parse("mqtt://127.0.0.1") == MqttUrl("127.0.0.1", 1883)
    url = MqttUrl.parse("mqtts://ingest:s%40cret@broker.example:8884?protocol=311")
    assert (url.host, url.port, url.username, url.password) == (
        "broker.example",
        8884,
        "ingest",
        "s@cret",
    )
    assert url.tls and url.protocol == "311"
    assert MqttUrl.parse("mqtts://broker.example").port == 8883


@pytest.mark.parametrize(
    "url", ["http://broker:1883", "mqtt://", "mqtt://broker?protocol=4", "broker:1883"]
)
def test_bad_mqtt_url_is_refused(url: str):
    with pytest.raises(ValueError):
        MqttUrl.parse(url)


def test_full_queue_blocks_the_producer_until_the_consumer_takes():
    queue = IngressQueue(2)
    stop = threading.Event()
    assert queue.put(message(1), stop) and queue.put(message(2), stop)
    waits_before = QUEUE_FULL_WAITS._value.get()
    done = threading.Event()
    producer = threading.Thread(target=lambda: queue.put(message(3), stop) and done.set())
    producer.start()
    assert not done.wait(0.3)  # blocked: nothing dropped, nothing overwritten
    assert QUEUE_FULL_WAITS._value.get() == waits_before + 1
    assert [m.token[1] for m in queue.get_many(10, 0.1)] == [1, 2]
    assert done.wait(5)
    producer.join()
    assert [m.token[1] for m in queue.get_many(10, 0.1)] == [3]


def test_a_blocked_producer_gives_up_only_when_stopping():
    queue = IngressQueue(1)
    stop = threading.Event()
    queue.put(message(1), stop)
    result: list[bool] = []
    producer = threading.Thread(target=lambda: result.append(queue.put(message(2), stop)))
    producer.start()
    stop.set()
    producer.join(5)
    assert result == [False]  # not acknowledged either: the broker redelivers it


def test_get_many_waits_for_the_first_and_takes_what_is_there():
    queue = IngressQueue(10)
    assert queue.get_many(5, 0.05) == []
    for n in range(7):
        queue.put(message(n), threading.Event())
    assert len(queue.get_many(5, 0.05)) == 5
    assert len(queue.get_many(5, 0.05)) == 2
