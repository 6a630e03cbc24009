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

from asyncua.client.client import Client as OpcUaClient
from bacpypes3.apdu import ErrorRejectAbortNack
from bacpypes3.ipv4.app import NormalApplication
from bacpypes3.local.device import DeviceObject
from bacpypes3.pdu import Address, IPv4Address
from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException

from edge.config import (
    AnySource,
    BacnetSource,
    ModbusRegister,
    ModbusSource,
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
    The session is opened at the first sample and again after any failure."""

    def __init__(self, source: OpcUaSource) -> None:
        super().__init__()
        self.source = source
        self.device = source.device
        self.interval = source.interval
        self._loop = LoopThread(f"opcua-{source.device}")
        self._client: OpcUaClient | None = None

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
            await client.connect()
            self._client = client
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

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # the server may be gone already
                await client.disconnect()

    def close(self) -> None:
        with contextlib.suppress(SourceError):
            self._loop.run(self._disconnect(), self.source.timeout)
        self._loop.close()


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
        self._client = BacnetClient.acquire(source.local_address, source.local_device_instance)
        self._address = Address(
            source.address if ":" in source.address else f"{source.address}:47808"
        )
        self._checked = False

    def sample(self, now: float) -> dict[str, float] | None:
        try:
            timeout = self.source.timeout * (len(self.source.objects) + 1)
            return self._client.loop.run(self._read(), timeout)
        except (Exception, ErrorRejectAbortNack) as exc:  # counted, retried next interval
            self._checked = False
            self._failed(f"bacnet {self.device} ({self.source.address}): {exc!r}")
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
        return values or None

    def close(self) -> None:
        BacnetClient.release(self.source.local_address, self.source.local_device_instance)


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
