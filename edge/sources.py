"""Where the gateway's readings come from: a simulated sensor set, or Modbus TCP registers.

A sampler returns the metric values of one device at one instant, or None when it could not
read (the failure is logged and counted; the gateway samples again at the next interval).
"""

from __future__ import annotations

import logging
import math
import random

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException

from edge.config import ModbusRegister, ModbusSource, SimulatedSource

log = logging.getLogger("clausewatch.edge")


class SimulatedSampler:
    def __init__(self, source: SimulatedSource) -> None:
        self.source = source
        self.device = source.device
        self.interval = source.interval
        self.errors = 0
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


class ModbusSampler:
    """Reads holding or input registers over Modbus TCP; one request per configured value."""

    def __init__(self, source: ModbusSource) -> None:
        self.source = source
        self.device = source.device
        self.interval = source.interval
        self.errors = 0
        self._client = ModbusTcpClient(
            source.host, port=source.port, timeout=source.timeout, retries=1
        )

    def sample(self, now: float) -> dict[str, float] | None:
        try:
            if not self._client.connected and not self._client.connect():  # type: ignore[no-untyped-call]
                raise ModbusException(f"cannot connect to {self.source.host}:{self.source.port}")
            return {register.metric: self._read(register) for register in self.source.registers}
        except (ModbusException, OSError) as exc:
            self.errors += 1
            log.warning("modbus %s (%s): %s", self.device, self.source.host, exc)
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


Sampler = SimulatedSampler | ModbusSampler


def sampler_for(source: SimulatedSource | ModbusSource) -> Sampler:
    if isinstance(source, SimulatedSource):
        return SimulatedSampler(source)
    return ModbusSampler(source)
