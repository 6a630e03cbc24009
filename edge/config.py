"""The gateway's configuration file (YAML, validated strictly; unknown keys are errors).

Example (config/bundled/edge/demo-gateway.yaml):

    site: demo-hq
    gateway: gw-b1                      # device id of the gateway itself: its status topic
    site_file: ../sites/demo-hq.yaml    # optional: check devices and metrics against the site
    broker: {url: "mqtt://127.0.0.1:1883", prefix: cw}   # or mqtts://...?ca=ca.pem (TLS)
    buffer: {path: /var/lib/clausewatch/edge-gw-b1.sqlite, cap: 1000000}
    batch: {size: 100, interval: 1s}
    sources:
      - kind: modbus_tcp
        device: em-main
        host: 192.168.1.50
        port: 502
        unit: 1
        interval: 30s
        registers:
          - {metric: energy_kwh, table: holding, address: 0, type: uint32, scale: 0.01}
      - kind: simulated
        device: th-201
        interval: 1m
        metrics:
          temperature: {mean: 22, amplitude: 2, noise: 0.1, decimals: 1}
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, Field, field_validator, model_validator

from config.documents import ConfigError, located_problems, read_yaml, validate_document
from config.files import load_site
from config.urls import MqttEndpoint
from rules.durations import Duration
from rules.site import Id, MetricName, SiteModel, Strict


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be longer than zero")
    return value


PositiveDuration = Annotated[Duration, AfterValidator(_positive)]


class BrokerConfig(Strict):
    # mqtt:// or mqtts:// with TLS options, as CLAUSEWATCH_MQTT_URL (config/urls.py); relative
    # ca/cert/key paths are relative to the file's folder.
    url: str = "mqtt://127.0.0.1:1883"
    prefix: Id = "cw"
    client_id: str | None = None  # default: clausewatch-edge-<site>-<gateway>
    keepalive: int = Field(default=30, ge=5, le=3600)

    @field_validator("url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        MqttEndpoint.parse(value)
        return value

    def endpoint(self) -> MqttEndpoint:
        """The broker and how to log in to it."""
        return MqttEndpoint.parse(self.url)


class BufferConfig(Strict):
    path: Path
    # Most readings kept while the broker is unreachable; past it the oldest are dropped
    # (counted and reported). A million readings is a few hundred MB of SQLite.
    cap: int = Field(default=1_000_000, ge=1)


class BatchConfig(Strict):
    size: int = Field(default=100, ge=1, le=10_000)  # readings per MQTT message at most
    interval: PositiveDuration = 1.0  # a partly filled batch waits at most this long
    max_in_flight: int = Field(default=20, ge=1, le=1000)  # batches unacknowledged at once


class SimulatedMetric(Strict):
    """A value that follows a sine around `mean` (period `period`) plus noise; with
    `rate_per_h`, a cumulative register growing by that much per hour instead."""

    mean: float = 0.0
    amplitude: float = 0.0
    period: PositiveDuration = 86400.0
    noise: float = Field(default=0.0, ge=0)
    rate_per_h: float | None = Field(default=None, ge=0)
    decimals: int = Field(default=2, ge=0, le=6)


class SimulatedSource(Strict):
    kind: Literal["simulated"]
    device: Id
    interval: PositiveDuration = 60.0
    metrics: dict[MetricName, SimulatedMetric] = Field(min_length=1)
    seed: int = 0


class Point(Strict):
    """How one metric is read: the source's raw value × scale + offset, rounded to `decimals`.
    `unit`, when given, must be the site model's unit of the metric (checked with site_file):
    it records what the field device reports, so a meter read in Wh where the site says kWh is
    caught at load time rather than stored 1000 times too large."""

    metric: MetricName
    unit: str | None = None
    scale: float = 1.0
    offset: float = 0.0
    decimals: int | None = Field(default=None, ge=0, le=9)


class ModbusRegister(Point):
    """One value from holding or input registers: raw × scale + offset."""

    table: Literal["holding", "input"] = "holding"
    address: int = Field(ge=0, le=65535)
    type: Literal["int16", "uint16", "int32", "uint32", "float32"] = "uint16"
    word_order: Literal["big", "little"] = "big"

    @property
    def words(self) -> int:
        return 1 if self.type in ("int16", "uint16") else 2


class ModbusSource(Strict):
    kind: Literal["modbus_tcp"]
    device: Id
    host: str
    port: int = Field(default=502, ge=1, le=65535)
    unit: int = Field(default=1, ge=0, le=255)  # Modbus unit (slave) id
    interval: PositiveDuration = 10.0
    timeout: PositiveDuration = 3.0
    registers: tuple[ModbusRegister, ...] = Field(min_length=1)


class OpcUaNode(Point):
    """One variable node by its node id in the OPC UA string form (`ns=2;s=Room201.Temp`,
    `ns=3;i=1042`); numeric and boolean values (true is 1)."""

    node: str = Field(min_length=1)

    @field_validator("node")
    @classmethod
    def _node_id(cls, value: str) -> str:
        if not re.fullmatch(r"(ns=\d+;)?[isgb]=.+", value):
            raise ValueError(
                f"{value!r} is not an OPC UA node id (ns=<index>;i=<number> or ns=<index>;s=<name>)"
            )
        return value


class OpcUaSource(Strict):
    kind: Literal["opcua"]
    device: Id
    url: str = Field(pattern=r"^opc\.tcp://[^/\s]+(/\S*)?$")  # opc.tcp://host:4840/path
    # `poll`: one Read of every node each interval. `subscribe`: the same poll (it keeps
    # unchanging values arriving, so the stale-data rules stay quiet, and proves the session
    # alive), plus a subscription whose data changes are published as they come, within
    # `publishing_interval`.
    mode: Literal["poll", "subscribe"] = "poll"
    interval: PositiveDuration = 10.0
    publishing_interval: PositiveDuration = 1.0
    timeout: PositiveDuration = 5.0
    nodes: tuple[OpcUaNode, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _publishing_inside_the_poll(self) -> OpcUaSource:
        if self.mode == "subscribe" and self.publishing_interval >= self.interval:
            raise ValueError(
                "publishing_interval must be shorter than interval (the poll): a change would"
                " otherwise wait longer than the next read"
            )
        return self


BACNET_OBJECT_TYPES = (
    "analog-input", "analog-output", "analog-value",
    "binary-input", "binary-output", "binary-value",
)  # fmt: skip


class BacnetObject(Point):
    """The present value of one analog or binary object, `analog-input,3`; binary values read
    as 1 (active) or 0 (inactive)."""

    object: str

    @field_validator("object")
    @classmethod
    def _object_id(cls, value: str) -> str:
        match = re.fullmatch(r"([a-z-]+),(\d+)", value)
        if match is None or match[1] not in BACNET_OBJECT_TYPES:
            raise ValueError(
                f"{value!r} is not an analog or binary object (TYPE,INSTANCE with TYPE one of "
                f"{', '.join(BACNET_OBJECT_TYPES)})"
            )
        if int(match[2]) >= 1 << 22:
            raise ValueError(f"{value!r}: an object instance is below 4194304")
        return value


HOST_PORT = r"^\d{1,3}(\.\d{1,3}){3}(/\d{1,2})?(:\d{1,5})?$"


class BacnetSource(Strict):
    kind: Literal["bacnet_ip"]
    device: Id
    # The BACnet device: its IPv4 address (port 47808 unless given) and its device instance,
    # which the gateway checks by reading the device object before it trusts the address.
    address: str = Field(pattern=HOST_PORT)
    device_instance: int = Field(ge=0, lt=4194303)
    # The gateway's own BACnet/IP address (its interface, /prefix for broadcasts, port) and its
    # device instance there; sources with the same local_address share one BACnet client.
    local_address: str = Field(default="0.0.0.0:47808", pattern=HOST_PORT)
    local_device_instance: int = Field(default=4194302, ge=0, lt=4194303)
    # `poll`: ReadProperty of every object each interval. `cov`: the same poll (unchanging
    # values keep arriving, so the stale-data rules stay quiet), plus SubscribeCOV per object
    # (unconfirmed notifications, published as they come), renewed every half `cov_lifetime`;
    # a renewal without an answer means the device is gone, and the next read subscribes again.
    mode: Literal["poll", "cov"] = "poll"
    interval: PositiveDuration = 30.0
    cov_lifetime: PositiveDuration = 300.0
    timeout: PositiveDuration = 3.0
    objects: tuple[BacnetObject, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _cov_lifetime_in_whole_seconds(self) -> BacnetSource:
        if self.mode == "cov" and not 2 <= self.cov_lifetime <= 86400:
            raise ValueError("cov_lifetime must lie between 2 s and 1 day")
        return self


Source = Annotated[
    SimulatedSource | ModbusSource | OpcUaSource | BacnetSource, Field(discriminator="kind")
]
AnySource = SimulatedSource | ModbusSource | OpcUaSource | BacnetSource


def points(source: AnySource) -> tuple[Point, ...]:
    """The mapped values of a field-bus source (none for a simulated one)."""
    if isinstance(source, ModbusSource):
        return source.registers
    if isinstance(source, OpcUaSource):
        return source.nodes
    if isinstance(source, BacnetSource):
        return source.objects
    return ()


def metric_names(source: AnySource) -> list[str]:
    if isinstance(source, SimulatedSource):
        return list(source.metrics)
    return [point.metric for point in points(source)]


class GatewayConfig(Strict):
    site: Id
    gateway: Id
    site_file: Path | None = None
    timezone: str = "UTC"  # offset written in `ts`; the site's zone when site_file is given
    broker: BrokerConfig = BrokerConfig()
    buffer: BufferConfig
    batch: BatchConfig = BatchConfig()
    sources: tuple[Source, ...] = Field(min_length=1)
    stats_interval: PositiveDuration = 60.0  # how often the gateway logs its counters
    # How often the gateway publishes its sources' health on its status topic (retained).
    status_interval: PositiveDuration = 30.0

    @model_validator(mode="after")
    def _distinct_metrics(self) -> GatewayConfig:
        seen: set[tuple[str, str]] = set()
        for i, source in enumerate(self.sources):
            for name in metric_names(source):
                if (source.device, name) in seen:
                    raise ValueError(
                        f"sources[{i}]: metric {name!r} of device {source.device!r} has two sources"
                    )
                seen.add((source.device, name))
        return self

    def problems_against(self, site: SiteModel) -> list[str]:
        problems: list[str] = []
        if site.site.id != self.site:
            problems.append(f"site: gateway is for {self.site!r}, site model is {site.site.id!r}")
        devices = {d.id: d for d in site.devices}
        for i, source in enumerate(self.sources):
            device = devices.get(source.device)
            if device is None:
                problems.append(f"sources[{i}].device: unknown device {source.device!r}")
                continue
            if device.gateway is not None and self.gateway not in site.sources_of(device.id):
                # Inhibition reads this: an outage of this gateway must cover what it forwards.
                problems.append(
                    f"sources[{i}].device: the site model puts {device.id!r} behind "
                    f"{device.gateway!r} (devices[].gateway), not this gateway {self.gateway!r}"
                )
            for name in metric_names(source):
                if name not in device.metrics:
                    problems.append(
                        f"sources[{i}]: device {source.device!r} has no metric {name!r}"
                    )
            field = {ModbusSource: "registers", OpcUaSource: "nodes", BacnetSource: "objects"}
            for j, point in enumerate(points(source)):
                spec = device.metrics.get(point.metric)
                if spec is not None and point.unit is not None and point.unit != spec.unit:
                    problems.append(
                        f"sources[{i}].{field[type(source)]}[{j}].unit: {point.unit!r} is not "
                        f"the site model's unit of {source.device}.{point.metric} ({spec.unit!r})"
                    )
        return problems


def load_gateway_config(path: Path) -> tuple[GatewayConfig, SiteModel | None]:
    """The configuration in `path` and its site model (when `site_file` is set), both read by
    the strict loader (config.documents). Relative paths in the file (site_file, buffer.path,
    the broker URL's ca/cert/key) are relative to the file's folder. Raises ConfigError
    naming the file, the path inside it and the line of every problem."""
    doc = read_yaml(path)
    config = validate_document(path, doc, GatewayConfig)
    base = path.resolve().parent
    buffer = config.buffer.model_copy(update={"path": base / config.buffer.path})
    broker = config.broker.model_copy(
        update={"url": config.broker.endpoint().relative_to(base).url()}
    )
    config = config.model_copy(update={"buffer": buffer, "broker": broker})
    site = None
    if config.site_file is not None:
        site = load_site(base / config.site_file)
        problems = config.problems_against(site)
        if problems:
            raise ConfigError(located_problems(path, doc, problems))
        config = config.model_copy(update={"timezone": site.site.timezone})
    try:
        ZoneInfo(config.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        message = f"timezone: unknown zone {config.timezone!r}"
        raise ConfigError(located_problems(path, doc, [message])) from exc
    return config, site
