"""Where the gateway's readings come from: a simulated sensor set, Modbus TCP registers, OPC UA
variable nodes or BACnet/IP objects.

A sampler returns the metric values of one device at one instant, or None when it could not
read (the failure is logged and counted; the gateway samples again at the next interval). A
value that cannot be read while others of the same device can (an unknown node id or object)
is logged and counted at every sample and left out; the others are published.

OPC UA (asyncua) and BACnet (bacpypes3) are asyncio libraries: each of their clients lives on
an event loop in a thread of its own, and the sampler's thread waits for one read at a time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import random
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from asyncua import ua
from asyncua.client.client import Client as OpcUaClient
from bacpypes3.apdu import ErrorRejectAbortNack
from bacpypes3.basetypes import PropertyIdentifier
from bacpypes3.ipv4.app import NormalApplication
from bacpypes3.local.device import DeviceObject
from bacpypes3.pdu import Address, IPv4Address
from bacpypes3.primitivedata import ObjectIdentifier
from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException

from edge.config import (
    AnySource,
    BacnetObject,
    BacnetSource,
    ModbusRegister,
    ModbusSource,
    OpcUaNode,
    OpcUaSource,
    Point,
    SimulatedSource,
)

T = TypeVar("T")

log = logging.getLogger("clausewatch.edge")


MAX_ERROR_CHARS = 300  # of a source's last error, as the status topic reports it


class Counted:
    """A sampler's failures: how many (reads that failed whole, and values left out of a read)
    and the last one's message, which the gateway reports on its status topic."""

    device: str

    def __init__(self) -> None:
        self.errors = 0
        self.last_error: str | None = None
        # Set by a subscribing source when it has changes to publish or lost its session (and
        # by the gateway at stop): the sampling loop waits on it between polls.
        self.wakeup = threading.Event()
        self.pushes = False  # publishes changes between polls (a subscription)

    def take_changes(self) -> tuple[dict[str, float], bool]:
        """Values the source pushed since the last call, and whether it lost its session and
        wants a read now (which opens a new one). Polling sources push nothing."""
        return {}, False

    def _failed(self, message: str) -> None:
        self.errors += 1
        self.last_error = message[:MAX_ERROR_CHARS]
        log.warning("%s", message)


def redacted(url: str) -> str:
    """`url` without a password it may carry (`opc.tcp://user:secret@host` → `user:***@host`):
    errors are logged and published on the status topic."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.partition(':')[0]}:***@{host}"


class SimulatedSampler(Counted):
    def __init__(self, source: SimulatedSource) -> None:
        super().__init__()
        self.source = source
        self.device = source.device
        self.interval = source.interval
        self._rng = random.Random(f"{source.seed}:{source.device}")
        self._registers = {
            name: spec.mean for name, spec in source.metrics.items() if spec.rate_per_h is not None
        }
        self._last: float | None = None

    def sample(self, now: float) -> dict[str, float] | None:
        elapsed_h = 0.0 if self._last is None else (now - self._last) / 3600
        self._last = now
        values: dict[str, float] = {}
        for name, spec in self.source.metrics.items():
            if spec.rate_per_h is not None:
                self._registers[name] += spec.rate_per_h * elapsed_h
                value = self._registers[name]
            else:
                wave = spec.amplitude * math.sin(2 * math.pi * now / spec.period)
                value = spec.mean + wave + self._rng.gauss(0.0, spec.noise)
            values[name] = round(value, spec.decimals)
        return values

    def close(self) -> None:
        pass


class ModbusSampler(Counted):
    """Reads holding or input registers over Modbus TCP; one request per configured value."""

    def __init__(self, source: ModbusSource) -> None:
        super().__init__()
        self.source = source
        self.device = source.device
        self.interval = source.interval
        self._client = ModbusTcpClient(
            source.host, port=source.port, timeout=source.timeout, retries=1
        )

    def sample(self, now: float) -> dict[str, float] | None:
        try:
            if not self._client.connected and not self._client.connect():  # type: ignore[no-untyped-call]
                raise ModbusException(f"cannot connect to {self.source.host}:{self.source.port}")
            return {register.metric: self._read(register) for register in self.source.registers}
        except (ModbusException, OSError) as exc:
            self._failed(f"modbus {self.device} ({self.source.host}): {exc}")
            self._client.close()  # type: ignore[no-untyped-call]  # reconnect at the next sample
            return None

    def _read(self, register: ModbusRegister) -> float:
        read = (
            self._client.read_holding_registers
            if register.table == "holding"
            else self._client.read_input_registers
        )
        response = read(register.address, count=register.words, device_id=self.source.unit)
        if response.isError():
            raise ModbusException(f"{register.table} register {register.address}: {response}")
        raw = self._client.convert_from_registers(
            response.registers,
            data_type=getattr(ModbusTcpClient.DATATYPE, register.type.upper()),
            word_order=register.word_order,
        )
        assert isinstance(raw, int | float)
        value = float(raw) * register.scale + register.offset
        if not math.isfinite(value):
            raise ModbusException(f"register {register.address} holds no finite number")
        return round(value, register.decimals) if register.decimals is not None else value

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]


class SourceError(Exception):
    """A read that failed for a reason the source explains (the message says which value)."""


def scaled(point: Point, raw: object, what: str) -> float:
    """A raw numeric or boolean value as the metric: raw × scale + offset, rounded."""
    if isinstance(raw, bool):
        raw = int(raw)
    if not isinstance(raw, int | float):
        raise SourceError(f"{what} holds {type(raw).__name__} {raw!r}, not a number")
    value = float(raw) * point.scale + point.offset
    if not math.isfinite(value):
        raise SourceError(f"{what} holds no finite number")
    return round(value, point.decimals) if point.decimals is not None else value


class LoopThread:
    """An asyncio event loop running in a daemon thread; `run` waits for one coroutine."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise SourceError(f"no answer within {timeout:g} s") from None

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()


class OpcUaSampler(Counted):
    """Reads the configured variable nodes of one OPC UA server in one Read request per sample.
    The session is opened at the first sample and again after any failure.

    In `subscribe` mode the session also carries a subscription to the same nodes: its data
    changes are kept (the latest value per metric) and the loop woken to publish them; when
    the client's watchdog finds the session lost, the loop is woken to read at once, which
    opens a new session and subscribes again."""

    def __init__(self, source: OpcUaSource) -> None:
        super().__init__()
        self.source = source
        self.device = source.device
        self.interval = source.interval
        self.pushes = source.mode == "subscribe"
        self.subscribed = False
        self._loop = LoopThread(f"opcua-{source.device}")
        self._client: OpcUaClient | None = None
        self._changes: dict[str, float] = {}
        self._lost = False
        self._changes_lock = threading.Lock()

    def take_changes(self) -> tuple[dict[str, float], bool]:
        with self._changes_lock:
            changes, self._changes = self._changes, {}
            lost, self._lost = self._lost, False
        return changes, lost

    def sample(self, now: float) -> dict[str, float] | None:
        try:
            return self._loop.run(self._read(), self.source.timeout * 3)
        except Exception as exc:  # any failure of the library: counted, retried next interval
            self._failed(f"opcua {self.device} ({redacted(self.source.url)}): {exc!r}")
            with contextlib.suppress(SourceError):
                self._loop.run(self._disconnect(), self.source.timeout)
            return None

    async def _read(self) -> dict[str, float] | None:
        if self._client is None:
            client = OpcUaClient(self.source.url, timeout=self.source.timeout)
            if self.pushes:
                client.connection_lost_callback = self._connection_lost
            await client.connect()
            self._client = client
            if self.pushes:
                await self._subscribe(client)
        nodes = [self._client.get_node(point.node) for point in self.source.nodes]
        results = await self._client.read_attributes(nodes)
        values: dict[str, float] = {}
        for point, result in zip(self.source.nodes, results, strict=True):
            try:
                status = result.StatusCode
                if status is not None and not status.is_good():
                    raise SourceError(f"node {point.node}: {status.name}")
                raw = result.Value.Value if result.Value is not None else None
                values[point.metric] = scaled(point, raw, f"node {point.node}")
            except SourceError as exc:  # this value only: the others are still published
                self._failed(f"opcua {self.device} ({redacted(self.source.url)}): {exc}")
        return values or None

    async def _subscribe(self, client: OpcUaClient) -> None:
        points = {self._node_key(point.node): point for point in self.source.nodes}
        subscription = await client.create_subscription(
            self.source.publishing_interval * 1000, _DataChanges(self, points)
        )
        handles = await subscription.subscribe_data_change(
            [client.get_node(point.node) for point in self.source.nodes]
        )
        for point, handle in zip(self.source.nodes, handles, strict=True):
            if isinstance(handle, ua.StatusCode):  # this node only: the poll still reads it
                self._failed(
                    f"opcua {self.device} ({redacted(self.source.url)}): cannot subscribe to"
                    f" node {point.node}: {handle.name}"
                )
        self.subscribed = True

    @staticmethod
    def _node_key(node: str) -> str:
        return ua.NodeId.from_string(node).to_string()

    def _changed(self, metric: str, value: float) -> None:
        with self._changes_lock:
            self._changes[metric] = value
        self.wakeup.set()

    async def _connection_lost(self, exc: Exception) -> None:
        self.subscribed = False
        self._failed(f"opcua {self.device} ({redacted(self.source.url)}): session lost: {exc!r}")
        with self._changes_lock:
            self._lost = True
        self.wakeup.set()

    async def _disconnect(self) -> None:
        self.subscribed = False
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # the server may be gone already
                await client.disconnect()

    def close(self) -> None:
        with contextlib.suppress(SourceError):
            self._loop.run(self._disconnect(), self.source.timeout)
        self._loop.close()


class _DataChanges:
    """asyncua's callback handler of one sampler's subscription (called on its loop)."""

    def __init__(self, sampler: OpcUaSampler, points: dict[str, OpcUaNode]) -> None:
        self._sampler = sampler
        self._points = points

    def datachange_notification(self, node: Any, val: object, data: object) -> None:
        point = self._points.get(node.nodeid.to_string())
        if point is None:
            return
        try:
            self._sampler._changed(point.metric, scaled(point, val, f"node {point.node}"))
        except SourceError as exc:
            self._sampler._failed(f"opcua {self._sampler.device}: {exc}")


class BacnetClient:
    """One BACnet/IP application (the gateway's own device) per local address, shared by the
    BACnet sources that use that address, on its own event loop."""

    _shared: dict[tuple[str, int], tuple[BacnetClient, int]] = {}
    _lock = threading.Lock()

    def __init__(self, local_address: str, instance: int) -> None:
        self.loop = LoopThread(f"bacnet-{local_address}")

        async def make() -> NormalApplication:
            device = DeviceObject(
                objectIdentifier=("device", instance),
                objectName=f"clausewatch-edge-{instance}",
                vendorIdentifier=999,  # "unassigned" vendor id, for a client that only reads
            )
            return NormalApplication(device, IPv4Address(local_address))

        self.app = self.loop.run(make(), 10)

    @classmethod
    def acquire(cls, local_address: str, instance: int) -> BacnetClient:
        with cls._lock:
            key = (local_address, instance)
            client, users = cls._shared.get(key) or (cls(local_address, instance), 0)
            cls._shared[key] = (client, users + 1)
            return client

    @classmethod
    def release(cls, local_address: str, instance: int) -> None:
        with cls._lock:
            key = (local_address, instance)
            client, users = cls._shared[key]
            if users > 1:
                cls._shared[key] = (client, users - 1)
                return
            del cls._shared[key]

        async def close() -> None:
            client.app.close()

        client.loop.run(close(), 5)
        client.loop.close()


class BacnetSampler(Counted):
    """Reads the present value of each configured object with ReadProperty. Before the first
    read (and after a failure) it reads the device object `device,<instance>` at the address,
    so a different device answering there is an error, not a source of wrong values."""

    def __init__(self, source: BacnetSource) -> None:
        super().__init__()
        self.source = source
        self.device = source.device
        self.interval = source.interval
        self.pushes = source.mode == "cov"
        self._client = BacnetClient.acquire(source.local_address, source.local_device_instance)
        self._address = Address(
            source.address if ":" in source.address else f"{source.address}:47808"
        )
        self._checked = False
        # cov mode: one watching task per object, on the client's loop.
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._watching: set[str] = set()
        self._changes: dict[str, float] = {}
        self._lost = False
        self._changes_lock = threading.Lock()

    @property
    def subscribed(self) -> bool:
        """Every object has a live COV subscription (cov mode)."""
        return len(self._watching) == len(self.source.objects)

    def take_changes(self) -> tuple[dict[str, float], bool]:
        with self._changes_lock:
            changes, self._changes = self._changes, {}
            lost, self._lost = self._lost, False
        return changes, lost

    def sample(self, now: float) -> dict[str, float] | None:
        try:
            timeout = self.source.timeout * (len(self.source.objects) + 1)
            return self._client.loop.run(self._read(), timeout)
        except (Exception, ErrorRejectAbortNack) as exc:  # counted, retried next interval
            self._checked = False
            self._failed(f"bacnet {self.device} ({self.source.address}): {exc!r}")
            with contextlib.suppress(SourceError):
                self._client.loop.run(self._stop_watching(), self.source.timeout)
            return None

    async def _read_property(self, objid: str, prop: str) -> object:
        return await asyncio.wait_for(
            self._client.app.read_property(self._address, objid, prop), self.source.timeout
        )

    async def _read(self) -> dict[str, float] | None:
        if not self._checked:
            instance = f"device,{self.source.device_instance}"
            try:
                await self._read_property(instance, "object-name")
            except ErrorRejectAbortNack as exc:
                raise SourceError(f"{instance} is not at {self.source.address}: {exc}") from exc
            self._checked = True
        values: dict[str, float] = {}
        for point in self.source.objects:
            try:
                try:
                    raw = await self._read_property(point.object, "present-value")
                except ErrorRejectAbortNack as exc:  # the device answered: this object only
                    raise SourceError(f"{point.object}: {exc}") from exc
                values[point.metric] = scaled(point, _bacnet_number(raw), point.object)
            except SourceError as exc:
                self._failed(f"bacnet {self.device} ({self.source.address}): {exc}")
        if self.pushes:
            for point in self.source.objects:
                if point.object not in self._watchers:
                    self._watchers[point.object] = asyncio.create_task(self._watch(point))
        return values or None

    async def _watch(self, point: BacnetObject) -> None:
        """Subscribes to one object's changes and renews the subscription every half lifetime
        (bacpypes3's own renewal is cancelled: its failures would go unseen)."""
        lifetime = max(2, int(self.source.cov_lifetime))
        renew_every = lifetime / 2
        where = f"bacnet {self.device} ({self.source.address})"
        try:
            context = self._client.app.change_of_value(
                self._address, ObjectIdentifier(point.object), None, False, lifetime
            )
            async with context as subscription:
                self._watching.add(point.object)
                while True:
                    _cancel_renewal(subscription)
                    try:
                        name, raw = await asyncio.wait_for(subscription.get_value(), renew_every)
                    except TimeoutError:
                        await asyncio.wait_for(
                            subscription.refresh_subscription(), self.source.timeout
                        )
                        continue
                    if name != PropertyIdentifier.presentValue:
                        continue  # status flags come in the same notification
                    try:
                        value = scaled(point, _bacnet_number(raw), point.object)
                    except SourceError as exc:
                        self._failed(f"{where}: {exc}")
                        continue
                    with self._changes_lock:
                        self._changes[point.metric] = value
                    self.wakeup.set()
        except asyncio.CancelledError:
            raise
        except (Exception, ErrorRejectAbortNack) as exc:  # gone, or no COV for this object
            self._failed(f"{where}: COV of {point.object} ended: {exc!r}")
            with self._changes_lock:
                self._lost = True
            self.wakeup.set()
        finally:
            self._watching.discard(point.object)
            if self._watchers.get(point.object) is asyncio.current_task():
                del self._watchers[point.object]

    async def _stop_watching(self) -> None:
        watchers = list(self._watchers.values())
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)

    def close(self) -> None:
        with contextlib.suppress(SourceError):
            self._client.loop.run(self._stop_watching(), self.source.timeout)
        BacnetClient.release(self.source.local_address, self.source.local_device_instance)


def _cancel_renewal(subscription: Any) -> None:
    handle = subscription.refresh_subscription_handle
    if handle is not None:
        handle.cancel()
        subscription.refresh_subscription_handle = None


def _bacnet_number(raw: object) -> object:
    """Real and Unsigned present values are numbers already; BinaryPV (an enumeration) is its
    integer, 1 for active."""
    if isinstance(raw, int | float):
        return raw
    try:
        return int(raw)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return raw


Sampler = SimulatedSampler | ModbusSampler | OpcUaSampler | BacnetSampler


def sampler_for(source: AnySource) -> Sampler:
    if isinstance(source, SimulatedSource):
        return SimulatedSampler(source)
    if isinstance(source, OpcUaSource):
        return OpcUaSampler(source)
    if isinstance(source, BacnetSource):
        return BacnetSampler(source)
    return ModbusSampler(source)
