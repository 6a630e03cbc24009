"""The MQTT boundary's pure parts: the bounded hand-off queue's `block` policy (a full queue
makes the producer wait, counted, and never drops). Broker URLs: tests/config/test_urls.py."""

from __future__ import annotations

import threading
import time

from ingest.mqtt import QUEUE_FULL_WAITS, IngressQueue, ReceivedMessage


def message(n: int) -> ReceivedMessage:
    return ReceivedMessage("cw/hq/th-1/telemetry", b"{}", 0.0, (1, n, 1))


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


def test_a_chunk_goes_in_as_far_as_there_is_room_in_order():
    # The network thread hands over a whole socket read at once; the queue still holds at most
    # its capacity, and the rest of the chunk waits behind what was taken.
    queue = IngressQueue(4)
    stop = threading.Event()
    assert queue.put(message(0), stop)
    done = threading.Event()
    chunk = [message(n) for n in range(1, 8)]
    producer = threading.Thread(target=lambda: queue.put_many(chunk, stop) and done.set())
    producer.start()
    assert not done.wait(0.3)
    assert queue.qsize() == 4
    taken = [m.token[1] for m in queue.get_many(3, 0.1)]
    while len(taken) < 8:
        taken += [m.token[1] for m in queue.get_many(10, 1.0)]
        assert queue.qsize() <= 4
    assert done.wait(5)
    producer.join()
    assert taken == list(range(8))


def test_wake_ends_a_waiting_get_many():
    queue = IngressQueue(10)
    waker = threading.Timer(0.05, queue.wake)
    waker.start()
    started = time.monotonic()
    assert queue.get_many(5, 10.0) == []
    assert time.monotonic() - started < 5.0
    waker.join()
