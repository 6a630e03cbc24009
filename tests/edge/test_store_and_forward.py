"""Nothing lost, nothing doubled: the gateway against a Mosquitto of the test's own that is stopped
mid-stream, and a gateway process killed with SIGKILL while it holds a buffer. Every reading is
found exactly once at a subscriber, and in PostgreSQL through the real ingest service."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from clausewatch.service import Service, ServiceOptions
from clausewatch.settings import Settings
from config import BUNDLED_DIR
from config.files import LoadedConfig, load_site
from edge.config import GatewayConfig
from edge.gateway import Gateway
from tests.edge.conftest import BacnetDevice, ModbusServer, OpcUaServer, free_udp_port
from tests.support import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SITE = load_site(BUNDLED_DIR / "sites" / "demo-hq.yaml")


OwnBroker = Any  # tests/edge/conftest.py: OwnBroker, Subscriber (fixtures hand them out)


def gateway_config(
    broker: OwnBroker, prefix: str, buffer: Path, more_sources: tuple[object, ...] = ()
) -> dict[str, object]:
    return {
        "site": "demo-hq",
        "gateway": "gw-test",
        "broker": {"url": broker.url, "prefix": prefix},
        "buffer": {"path": str(buffer)},
        "batch": {"size": 25, "interval": "0.1s"},
        "stats_interval": "1s",
        "sources": [
            {"kind": "simulated", "device": "th-201", "interval": "0.02s",
             "metrics": {"temperature": {"mean": 22, "noise": 0.2}}},
            {"kind": "simulated", "device": "em-3f", "interval": "0.05s",
             "metrics": {"energy_kwh": {"mean": 1000, "rate_per_h": 36000}}},
            *more_sources,
        ],
    }  # fmt: skip


def field_bus_sources(
    opcua: OpcUaServer, bacnet: BacnetDevice, modbus: ModbusServer
) -> tuple[object, ...]:
    """th-202 from the OPC UA server (subscribed), th-203 from the BACnet device (COV) and
    th-301 from the Modbus server, each read every 50 ms."""
    modbus.holding[7] = 231  # 23.1 °C
    return (
        {"kind": "opcua", "device": "th-202", "url": opcua.url, "interval": "0.05s",
         "mode": "subscribe", "publishing_interval": "0.02s",
         "nodes": [{"metric": "temperature", "node": f"ns={opcua.ns};s=Room202.Temperature"}]},
        {"kind": "bacnet_ip", "device": "th-203", "address": bacnet.address,
         "device_instance": bacnet.instance, "interval": "0.05s", "mode": "cov",
         "local_address": f"127.0.0.3:{free_udp_port('127.0.0.3')}",
         "objects": [{"metric": "temperature", "object": "analog-input,1"}]},
        {"kind": "modbus_tcp", "device": "th-301", "host": "127.0.0.1", "port": modbus.port,
         "interval": "0.05s",
         "registers": [{"metric": "temperature", "address": 7, "type": "int16", "scale": 0.1,
                        "decimals": 1}]},
    )  # fmt: skip


def start_service(database_url: str, broker: OwnBroker, prefix: str) -> Service:
    settings = Settings(
        database_url=database_url,
        mqtt_url=broker.url,
        topic_prefix=prefix,
        mqtt_client_id=f"cw-test-{uuid.uuid4().hex[:8]}",
        flush_interval_s=0.05,
    )
    service = Service(
        settings,
        LoadedConfig(sites={"demo-hq": SITE}),
        ServiceOptions(clock="data", serve_api=False),
    )
    service.start()
    return service


def stored(database_url: str, device: str) -> list[int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT seq FROM readings WHERE site = 'demo-hq' AND device = %s ORDER BY seq",
            (device,),
        ).fetchall()
    return [seq for (seq,) in rows]


def test_a_broker_outage_loses_and_doubles_nothing(
    tmp_path: Path,
    own_broker: OwnBroker,
    topic_prefix: str,
    fresh_database_url: str,
    subscriber_factory: Callable[..., Any],
    opcua_server: OpcUaServer,
    bacnet_device: BacnetDevice,
    modbus_server: ModbusServer,
) -> None:
    """Every source kind in one gateway: simulated, OPC UA (subscribed), BACnet/IP (COV) and
    Modbus TCP."""
    subscriber = subscriber_factory(own_broker.url, f"{topic_prefix}/#", persistent=True)
    service = start_service(fresh_database_url, own_broker, topic_prefix)
    sources = field_bus_sources(opcua_server, bacnet_device, modbus_server)
    gateway = Gateway(
        GatewayConfig.model_validate(
            gateway_config(own_broker, topic_prefix, tmp_path / "b.sqlite", sources)
        )
    )
    try:
        gateway.start()
        assert subscriber.wait_for(lambda: len(subscriber.readings) >= 50, timeout=10)
        own_broker.stop()
        # The gateway keeps sampling into its buffer while the broker is away.
        wait_for(lambda: gateway.stats()["buffered"] >= 200, 15, "readings buffered offline")
        assert not gateway.stats()["connected"]
        own_broker.start()
        wait_for(lambda: gateway.stats()["connected"], 20, "gateway reconnected")
        resumed_from = gateway.stats()["sampled"]
        # It drains the backlog while new readings keep arriving.
        assert subscriber.wait_for(lambda: len(subscriber.seqs("th-201")) > resumed_from * 0.7, 20)
    finally:
        gateway.stop()
    devices = ("th-201", "em-3f", "th-202", "th-203", "th-301")
    sampled = {device: gateway.buffer.last_seq(device) for device in devices}
    assert min(sampled.values()) >= 50  # the field-bus sources too
    try:
        for device, last in sampled.items():
            assert subscriber.wait_for(
                lambda d=device, n=last: set(subscriber.seqs(d)) >= set(range(1, n + 1)), 20
            )
            seqs = subscriber.seqs(device)
            assert sorted(set(seqs)) == list(range(1, last + 1)), f"{device}: lost readings"
            first_copies = list(dict.fromkeys(seqs))
            assert first_copies == sorted(first_copies), f"{device}: drained out of order"
            # In PostgreSQL: each reading exactly once (redelivered batches are deduplicated).
            wait_for(lambda d=device, n=last: len(stored(fresh_database_url, d)) >= n, 90, "stored")
            assert stored(fresh_database_url, device) == list(range(1, last + 1))
        assert gateway.stats()["dropped"] == 0
    finally:
        service.stop()


class GatewayProcess:
    """`clausewatch edge run` as a process of its own, and a look into its SQLite buffer."""

    def __init__(
        self, tmp_path: Path, broker: OwnBroker, prefix: str, more_sources: tuple[object, ...] = ()
    ) -> None:
        self.buffer = tmp_path / "b.sqlite"
        config = tmp_path / "gw.yaml"
        text = yaml.safe_dump(gateway_config(broker, prefix, self.buffer, more_sources))
        config.write_text(text, encoding="utf-8")
        self.command = [sys.executable, "-m", "clausewatch", "edge", "run", str(config)]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, cwd=ROOT, stderr=subprocess.DEVNULL)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(20)

    def buffered(self, device: str = "th-201") -> tuple[int, int]:
        """(rows held, last seq of `device`)."""
        try:
            with closing(sqlite3.connect(self.buffer)) as conn:
                (count,) = conn.execute("SELECT count(*) FROM readings").fetchone()
                (last,) = conn.execute(
                    "SELECT coalesce(max(last_seq), 0) FROM sequences WHERE device = ?", (device,)
                ).fetchone()
        except sqlite3.OperationalError:  # the gateway has not created its tables yet
            return 0, 0
        return count, last


def assert_each_reading_once_in_postgresql(
    database_url: str, last: int, device: str = "th-201"
) -> None:
    def missing() -> str:
        have = stored(database_url, device)
        gone = sorted(set(range(1, last + 1)) - set(have))
        with psycopg.connect(database_url) as conn:
            letters = conn.execute(
                "SELECT reason, count(*) FROM dead_letters GROUP BY reason"
            ).fetchall()
            late = conn.execute("SELECT device, ts FROM late_readings ORDER BY ts").fetchall()
        return f"stored {len(have)} of {last}, missing {gone[:20]}, {letters}, late: {late}"

    wait_for(lambda: len(stored(database_url, device)) >= last, 120, missing)
    assert stored(database_url, device) == list(range(1, last + 1))


def test_sigkill_with_a_full_buffer_then_restart_delivers_each_reading_once(
    tmp_path: Path,
    own_broker: OwnBroker,
    topic_prefix: str,
    fresh_database_url: str,
    subscriber_factory: Callable[..., Any],
    opcua_server: OpcUaServer,
    bacnet_device: BacnetDevice,
    modbus_server: ModbusServer,
) -> None:
    """Every source kind: simulated, OPC UA subscribed (th-202), BACnet/IP with COV (th-203)
    and Modbus TCP (th-301)."""
    sources = field_bus_sources(opcua_server, bacnet_device, modbus_server)
    gateway = GatewayProcess(tmp_path, own_broker, topic_prefix, sources)
    own_broker.stop()  # the gateway can only buffer
    gateway.start()
    try:
        wait_for(lambda: gateway.buffered()[0] >= 150, 30, "a buffer to kill")
    finally:
        gateway.kill()
    held, last_before_kill = gateway.buffered()
    assert held >= 150
    field_bus = ("th-202", "th-203", "th-301")
    killed_at = {device: gateway.buffered(device)[1] for device in field_bus}

    own_broker.start()
    subscriber = subscriber_factory(own_broker.url, f"{topic_prefix}/#", persistent=True)
    service = start_service(fresh_database_url, own_broker, topic_prefix)
    gateway.start()
    try:
        # The backlog arrives, and new readings continue the seq where the killed run stopped.
        assert subscriber.wait_for(
            lambda: max(subscriber.seqs("th-201"), default=0) > last_before_kill + 20, 30
        )
    finally:
        assert gateway.terminate() == 0
    try:
        remaining, last = gateway.buffered()
        assert remaining == 0  # a clean stop drains the buffer
        assert subscriber.wait_for(lambda: len(subscriber.seqs("th-201")) >= last, 10)
        seqs = subscriber.seqs("th-201")
        assert sorted(seqs) == list(range(1, last + 1))  # each exactly once: nothing was in flight
        assert_each_reading_once_in_postgresql(fresh_database_url, last)
        for device in field_bus:
            last = gateway.buffered(device)[1]
            assert last > killed_at[device] > 0, device  # read in both runs
            assert sorted(subscriber.seqs(device)) == list(range(1, last + 1)), device
            assert_each_reading_once_in_postgresql(fresh_database_url, last, device)
    finally:
        service.stop()


def test_sigkill_while_draining_resends_in_order_and_postgresql_keeps_each_once(
    tmp_path: Path,
    own_broker: OwnBroker,
    topic_prefix: str,
    fresh_database_url: str,
    subscriber_factory: Callable[..., Any],
) -> None:
    """Killed with batches in flight: they are sent again after the restart (at least once at the
    broker), in order per device, and the service stores each reading exactly once."""
    # The subscriber's and the service's sessions exist before the outage, so the broker keeps
    # for them whatever arrives after it restarts, whoever reconnects first.
    subscriber = subscriber_factory(own_broker.url, f"{topic_prefix}/#", persistent=True)
    service = start_service(fresh_database_url, own_broker, topic_prefix)
    gateway = GatewayProcess(tmp_path, own_broker, topic_prefix)
    own_broker.stop()
    gateway.start()
    try:
        wait_for(lambda: gateway.buffered()[0] >= 400, 30, "a backlog")
        own_broker.start()
        # Kill it in the middle of draining the backlog.
        wait_for(lambda: len(subscriber.seqs("th-201")) >= 50, 30, "draining started")
    finally:
        gateway.kill()
    try:
        gateway.start()
        _, last_before_restart = gateway.buffered()
        assert subscriber.wait_for(
            lambda: max(subscriber.seqs("th-201"), default=0) > last_before_restart + 20, 30
        )
        assert gateway.terminate() == 0
        remaining, last = gateway.buffered()
        assert remaining == 0
        assert subscriber.wait_for(
            lambda: set(subscriber.seqs("th-201")) >= set(range(1, last + 1)), 10
        )

        # The resent batch is the device's oldest, so nothing arrives behind newer readings:
        # each reading is stored once, none lands among the late readings.
        assert_each_reading_once_in_postgresql(fresh_database_url, last)
    finally:
        service.stop()
