"""Parts the gateway tests own: a Mosquitto process of their own (so it can be stopped and
restarted without touching the shared broker), a Modbus TCP server, an OPC UA server, a BACnet/IP
device, and a subscriber whose persistent session outlives broker restarts."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterable, Iterator
from pathlib import Path
from typing import Any, Self, TypeVar

import orjson
import paho.mqtt.client as mqtt
import pytest
from asyncua import Server, ua
from bacpypes3.basetypes import EngineeringUnits
from bacpypes3.ipv4.app import NormalApplication
from bacpypes3.local.analog import AnalogInputObject, AnalogValueObject
from bacpypes3.local.binary import BinaryValueObject
from bacpypes3.local.device import DeviceObject
from bacpypes3.pdu import IPv4Address
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


class OpcUaServer(LoopHarness):
    """An asyncua server on 127.0.0.1 in a thread of its own, with the variables
    ns=<idx>;s=Room202.Temperature (°C), ...Humidity and ns=<idx>;s=Ahu1.Running (bool)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"opc.tcp://127.0.0.1:{self.port}/clausewatch-test/"
        super().__init__()
        self.server: Server | None = None
        self.ns = 0
        self.nodes: dict[str, object] = {}

    async def _start(self) -> None:
        server = Server()
        await server.init()
        server.set_endpoint(self.url)
        self.ns = await server.register_namespace("urn:clausewatch:test")
        room = await server.nodes.objects.add_object(self.ns, "Room202")
        for name, value in (("Temperature", 25.25), ("Humidity", 55.5)):
            node_id = ua.NodeId(f"Room202.{name}", self.ns)
            self.nodes[name] = await room.add_variable(node_id, name, value)
        running = ua.NodeId("Ahu1.Running", self.ns)
        self.nodes["Running"] = await room.add_variable(running, "Running", True)
        await server.start()
        self.server = server

    def start(self) -> None:
        self._run(self._start())
        wait_for(lambda: answers(self.port), 10, "opc ua server listening")

    def set(self, name: str, value: object) -> None:
        self._run(self.nodes[name].write_value(value))  # type: ignore[attr-defined]

    def stop(self) -> None:
        if self.server is not None:
            self._run(self.server.stop())
            self.server = None


@pytest.fixture
def opcua_server() -> Iterator[OpcUaServer]:
    with OpcUaServer() as server:
        yield server


def free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class BacnetDevice(LoopHarness):
    """A BACnet/IP device (instance 1001) on 127.0.0.2 in a thread of its own, with
    analog-input,1 (temperature, °C), analog-value,2 (humidity, %) and binary-value,3."""

    host = "127.0.0.2"
    instance = 1001

    def __init__(self) -> None:
        self.port = free_udp_port(self.host)
        self.address = f"{self.host}:{self.port}"
        super().__init__()
        self.app: NormalApplication | None = None
        # Made on the device's own loop (start): bacpypes3 objects schedule work on the current
        # event loop as they are built, and the main thread has none after an earlier test's
        # asyncio.run().
        self.objects: dict[str, Any] = {}

    def _make_objects(self) -> dict[str, Any]:
        return {
            "temperature": AnalogInputObject(
                objectIdentifier=("analog-input", 1), objectName="room-202-temp",
                presentValue=24.5, units=EngineeringUnits("degreesCelsius"), covIncrement=0.1,
            ),
            "humidity": AnalogValueObject(
                objectIdentifier=("analog-value", 2), objectName="room-202-rh",
                presentValue=51.0, units=EngineeringUnits("percentRelativeHumidity"),
                covIncrement=0.5,
            ),
            "occupied": BinaryValueObject(
                objectIdentifier=("binary-value", 3), objectName="room-201-occupied",
                presentValue="active",
            ),
        }  # fmt: skip

    def start(self) -> None:
        async def start() -> None:
            if not self.objects:
                self.objects = self._make_objects()
            device = DeviceObject(
                objectIdentifier=("device", self.instance), objectName="sim-ddc",
                vendorIdentifier=999,
            )  # fmt: skip
            self.app = NormalApplication(device, IPv4Address(self.address))
            for obj in self.objects.values():
                self.app.add_object(obj)

        self._run(start())

    def set(self, name: str, value: object) -> None:
        async def write() -> None:
            self.objects[name].presentValue = value

        self._run(write())

    def stop(self) -> None:
        async def stop() -> None:
            if self.app is not None:
                self.app.close()
                for obj in self.objects.values():  # free for the next application
                    obj._app = None
                self.app = None

        self._run(stop())


@pytest.fixture
def bacnet_device() -> Iterator[BacnetDevice]:
    with BacnetDevice() as device:
        yield device
