"""Nothing lost, nothing doubled: the gateway against a Mosquitto of the test's own that is stopped
mid-stream, and a gateway process killed with SIGKILL while it holds a buffer. Every reading is
found exactly once at a subscriber, and in PostgreSQL through the real ingest service."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from clausewatch.configfiles import LoadedConfig
from clausewatch.service.runtime import Service, ServiceOptions
from clausewatch.settings import Settings
from edge.config import GatewayConfig
from edge.gateway import Gateway
from simulators.scenario import load_site

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SITE = load_site(ROOT / "clausewatch" / "config" / "sites" / "demo-hq.yaml")


OwnBroker = Any  # tests/edge/conftest.py: OwnBroker, Subscriber (fixtures hand them out)


def wait_until(probe: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def gateway_config(broker: OwnBroker, prefix: str, buffer: Path) -> dict[str, object]:
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
        ],
    }  # fmt: skip


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
) -> None:
    subscriber = subscriber_factory(own_broker.url, f"{topic_prefix}/#", persistent=True)
    service = start_service(fresh_database_url, own_broker, topic_prefix)
    gateway = Gateway(
        GatewayConfig.model_validate(
            gateway_config(own_broker, topic_prefix, tmp_path / "b.sqlite")
        )
    )
    try:
        gateway.start()
        assert subscriber.wait_for(lambda: len(subscriber.readings) >= 50, timeout=10)
        own_broker.stop()
        # The gateway keeps sampling into its buffer while the broker is away.
        wait_until(lambda: gateway.stats()["buffered"] >= 200, 15, "readings buffered offline")
        assert not gateway.stats()["connected"]
        own_broker.start()
        wait_until(lambda: gateway.stats()["connected"], 20, "gateway reconnected")
        resumed_from = gateway.stats()["sampled"]
        # It drains the backlog while new readings keep arriving.
        assert subscriber.wait_for(lambda: len(subscriber.seqs("th-201")) > resumed_from * 0.7, 20)
    finally:
        gateway.stop()
    sampled = {device: gateway.buffer.last_seq(device) for device in ("th-201", "em-3f")}
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
            wait_until(
                lambda d=device, n=last: len(stored(fresh_database_url, d)) >= n, 30, "stored"
            )
            assert stored(fresh_database_url, device) == list(range(1, last + 1))
        assert gateway.stats()["dropped"] == 0
    finally:
        service.stop()


def test_sigkill_with_a_full_buffer_then_restart_delivers_each_reading_once(
    tmp_path: Path,
    own_broker: OwnBroker,
    topic_prefix: str,
    fresh_database_url: str,
    subscriber_factory: Callable[..., Any],
) -> None:
    buffer = tmp_path / "b.sqlite"
    config = tmp_path / "gw.yaml"
    config.write_text(yaml.safe_dump(gateway_config(own_broker, topic_prefix, buffer)))
    command = [sys.executable, "-m", "clausewatch.cli", "edge", "run", str(config)]
    own_broker.stop()  # the gateway can only buffer

    def buffered() -> tuple[int, int]:
        try:
            with closing(sqlite3.connect(buffer)) as conn:
                (count,) = conn.execute("SELECT count(*) FROM readings").fetchone()
                (last,) = conn.execute(
                    "SELECT coalesce(max(last_seq), 0) FROM sequences WHERE device = 'th-201'"
                ).fetchone()
        except sqlite3.OperationalError:  # the gateway has not created its tables yet
            return 0, 0
        return count, last

    first = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: buffer.exists() and buffered()[0] >= 150, 30, "a buffer to kill")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    held, last_before_kill = buffered()
    assert held >= 150

    own_broker.start()
    subscriber = subscriber_factory(own_broker.url, f"{topic_prefix}/#", persistent=True)
    service = start_service(fresh_database_url, own_broker, topic_prefix)
    second = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        # The backlog arrives, and new readings continue the seq where the killed run stopped.
        assert subscriber.wait_for(
            lambda: max(subscriber.seqs("th-201"), default=0) > last_before_kill + 20, 30
        )
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(20) == 0
    try:
        remaining, last = buffered()
        assert remaining == 0  # a clean stop drains the buffer
        seqs = subscriber.seqs("th-201")
        assert subscriber.wait_for(lambda: len(subscriber.seqs("th-201")) >= last, 10)
        seqs = subscriber.seqs("th-201")
        assert sorted(seqs) == list(range(1, last + 1))  # each exactly once: nothing was in flight
        wait_until(
            lambda: len(stored(fresh_database_url, "th-201")) >= last,
            60,
            f"stored (have {len(stored(fresh_database_url, 'th-201'))} of {last}; missing "
            f"{sorted(set(range(1, last + 1)) - set(stored(fresh_database_url, 'th-201')))[:20]})",
        )
        assert stored(fresh_database_url, "th-201") == list(range(1, last + 1))
    finally:
        service.stop()
