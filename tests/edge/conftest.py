"""Parts the gateway tests own: a Mosquitto process of their own (so it can be stopped and
restarted without touching the shared broker), a Modbus TCP server, and a subscriber whose
persistent session outlives broker restarts."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterable, Iterator
from pathlib import Path
from typing import Any, Self, TypeVar

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from clausewatch.embedded import free_port
from config.urls import MqttEndpoint
from edge.sources import LoopThread
from tests.support import OwnBroker, answers, wait_for


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[OwnBroker]:
    broker = OwnBroker(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class Subscriber:
    """Records every reading (device, seq) delivered under a topic filter. Persistent session
    (clean_session False) and automatic reconnection: what the broker queued for it while it
    was away arrives after it reconnects."""

    def __init__(self, url: str, topic_filter: str, *, persistent: bool = True) -> None:
        broker = MqttEndpoint.parse(url)
        self.readings: list[tuple[str, int]] = []
        self.values: list[tuple[str, dict[str, float]]] = []
        self.stamps: list[tuple[str, str]] = []  # (device, ts) of every reading
        self.batches = 0
        self.statuses: list[tuple[str, bytes, bool]] = []
        self._changed = threading.Condition()
        subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"edge-test-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv311,
            clean_session=not persistent,
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)

        def on_connect(client: mqtt.Client, userdata: object, flags: object, *_: object) -> None:
            client.subscribe(topic_filter, qos=1)

        def on_subscribe(*_: object) -> None:
            subscribed.set()

        def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
            with self._changed:
                device, channel = msg.topic.split("/")[-2:]
                if channel == "status":
                    self.statuses.append((device, msg.payload, bool(msg.retain)))
                else:
                    self.batches += 1
                    for reading in orjson.loads(msg.payload):
                        self.readings.append((device, reading["seq"]))
                        self.values.append((device, reading["metrics"]))
                        self.stamps.append((device, reading["ts"]))
                self._changed.notify_all()

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert subscribed.wait(10), "the test subscriber could not subscribe"

    def wait_for(self, condition: Callable[[], bool], timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(condition, timeout)

    def seqs(self, device: str) -> list[int]:
        with self._changed:
            return [seq for name, seq in self.readings if name == device]

    def check_once_in_order(self, devices: Iterable[str], started: float, ended: float) -> None:
        """Each device's seqs are 1, 2, 3... (every reading once, in order) and every `ts` is
        in UTC (the gateway's default zone) between `started` and `ended` (epoch seconds)."""
        for device in devices:
            seqs = self.seqs(device)
            assert seqs == list(range(1, len(seqs) + 1)), device
        for _, stamp in self.stamps:
            when = dt.datetime.fromisoformat(stamp)
            assert when.utcoffset() == dt.timedelta(0), stamp
            assert started - 0.01 <= when.timestamp() <= ended, stamp

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscriber_factory() -> Iterator[Callable[..., Subscriber]]:
    made: list[Subscriber] = []

    def make(url: str, topic_filter: str, *, persistent: bool = False) -> Subscriber:
        made.append(Subscriber(url, topic_filter, persistent=persistent))
        return made[-1]

    yield make
    for subscriber in made:
        subscriber.close()


class ModbusServer:
    """A pymodbus TCP server on 127.0.0.1 in a thread of its own. `holding` and `input` map
    register addresses to 16-bit words; reads see their current values."""

    def __init__(self) -> None:
        self.port = free_port()
        self.holding: dict[int, int] = {}
        self.input: dict[int, int] = {}
        self.reads = 0

        async def serve_current_values(
            function_code: int, start_address: int, address: int, count: int,
            current_registers: list[int], set_values: object,
        ) -> None:  # fmt: skip
            table = {3: self.holding, 4: self.input}.get(function_code, {})
            for i in range(len(current_registers)):
                current_registers[i] = table.get(start_address + i, 0)
            self.reads += 1

        def block(kind: DataType) -> list[SimData]:
            return [SimData(0, count=64, datatype=kind)]

        self.device = SimDevice(
            id=1,
            simdata=(block(DataType.BITS), block(DataType.BITS),
                     block(DataType.REGISTERS), block(DataType.REGISTERS)),
            action=serve_current_values,
        )  # fmt: skip
        self.loop = asyncio.new_event_loop()
        self.server: ModbusTcpServer | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._serve(),))

    async def _serve(self) -> None:
        self.server = ModbusTcpServer(self.device, address=("127.0.0.1", self.port))
        await self.server.serve_forever()

    def start(self) -> None:
        self.thread.start()
        wait_for(lambda: answers(self.port), 10, "modbus server listening")

    def stop(self) -> None:
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.shutdown(), self.loop).result(10)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def modbus_server() -> Iterator[ModbusServer]:
    server = ModbusServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


T = TypeVar("T")


class LoopHarness:
    """A server of an asyncio library (asyncua, bacpypes3) run by a test on an event loop of its
    own, the gateway's LoopThread; `with` starts it and at the end stops it and its loop.
    Subclasses define start() and stop() (which may be called again mid-test)."""

    def __init__(self) -> None:
        self.loop = LoopThread(f"test-{type(self).__name__}")

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run(coro, 20)

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.loop.close()
