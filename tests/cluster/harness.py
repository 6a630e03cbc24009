"""Parts of the cluster tests: a configuration of many small sites, cluster workers as processes
the tests kill or stop, and gateways that publish QoS 1 to the cluster's MQTT listeners and
re-send whatever was not acknowledged when their node goes away."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import psycopg
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from clausewatch.embedded import free_port
from ingest.workers import die_with_parent
from tests.support import wait_for

FOR_S = 4.0  # the co2 clause's `for`


def site_document(site_id: str, devices: int) -> dict[str, Any]:
    return {
        "site": {"id": site_id, "name": f"Cluster test {site_id}", "timezone": "Asia/Shanghai"},
        "spaces": [{"id": "b1", "type": "building"}]
        + [{"id": f"r{i}", "type": "office", "parent": "b1"} for i in range(devices)],
        "devices": [
            {
                "id": f"d{i}",
                "space": f"r{i}",
                "metrics": {"co2": {"unit": "ppm", "range": [300, 10000]}},
            }
            for i in range(devices)
        ],
        "parties": [{"id": "ops", "name": "Operations"}],
        "assignments": [{"party": "ops", "space": "b1", "valid_from": "2020-01-01T00:00:00+08:00"}],
    }


CLAUSES = {
    "standard": {"code": "CLUSTER-TEST", "title": "Cluster test clauses", "edition": "1"},
    "clauses": [
        {
            "id": "co2.max",
            "version": 1,
            "effective_from": "2020-01-01",
            "number": "1",
            "title": "CO2 at most 1000 ppm",
            "domain": "indoor_air",
            "confidence": "A",
            "params": {"limit": {"default": 1000.0, "unit": "ppm"}},
            "check": {"kind": "threshold", "metric": "co2", "max": "$limit", "for": f"{FOR_S}s"},
        }
    ],
}


def write_config(folder: Path, sites: Sequence[str], devices: int) -> Path:
    (folder / "sites").mkdir(parents=True)
    (folder / "clauses").mkdir()
    for site_id in sites:
        document = site_document(site_id, devices)
        (folder / "sites" / f"{site_id}.yaml").write_text(yaml.safe_dump(document))
    (folder / "clauses" / "cluster-test.yaml").write_text(yaml.safe_dump(CLAUSES))
    return folder


def node_env(
    database_url: str, broker_url: str, config: Path, partitions: int, prefix: str, lease_s: float
) -> dict[str, str]:
    """The environment of a `clausewatch run --broker` process of these tests: its database,
    the NATS cluster, the configuration, P, the lease, and short flushes."""
    env = dict(os.environ)
    env.update(
        CLAUSEWATCH_DATABASE_URL=database_url,
        CLAUSEWATCH_BROKER_URL=broker_url,
        CLAUSEWATCH_CONFIG_DIR=str(config),
        CLAUSEWATCH_CLUSTER_PARTITIONS=str(partitions),
        CLAUSEWATCH_CLUSTER_LEASE_S=str(lease_s),
        CLAUSEWATCH_FLUSH_INTERVAL_S="0.1",
        CLAUSEWATCH_TOPIC_PREFIX=prefix,
    )
    return env


def query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


class Worker:
    """`clausewatch run --broker ...` as a process of its own, its API on a port of its own
    (`api_url`); its log in `log`."""

    def __init__(self, env: dict[str, str], log: Path, args: Sequence[str] = ()) -> None:
        self.args = list(args)
        self.http_port = free_port()
        self.env = {**env, "CLAUSEWATCH_HTTP_PORT": str(self.http_port)}
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "clausewatch", "run", *self.args],
                env=self.env,
                stdout=log,
                stderr=log,
                preexec_fn=die_with_parent,  # no stray worker when the test process is killed
            )

    def wait_running(self, timeout: float = 120) -> None:
        wait_for(
            lambda: " running: " in self.text() or not self.alive,
            timeout,
            "worker start",
        )
        assert self.alive, self.text()[-3000:]

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def signal(self, number: int) -> None:
        os.kill(self.pid, number)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            with_stopped = self.process
            os.kill(with_stopped.pid, signal.SIGCONT)
            with_stopped.send_signal(signal.SIGTERM)
            try:
                with_stopped.wait(60)
            except subprocess.TimeoutExpired:
                with_stopped.kill()
                with_stopped.wait()


class Gateway:
    """Publishes readings of its devices QoS 1 (MQTT 3.1.1) to one node at a time; when the
    connection drops it connects to the next node and re-sends everything not acknowledged.
    `acked` holds the (site, device, seq) of every reading a PUBACK confirmed."""

    def __init__(
        self, ports: Sequence[int], devices: Sequence[tuple[str, str]], co2: Callable[[str], float]
    ) -> None:
        self.ports = list(ports)
        self.devices = list(devices)
        self.co2 = co2
        self.acked: set[tuple[str, str, int]] = set()
        self.sent = 0
        self.resent = 0
        self.reconnects = 0
        self._port_index = 0
        self._lock = threading.Lock()
        self._unacked: dict[tuple[str, str, int], tuple[str, bytes]] = {}
        self._mids: dict[int, tuple[str, str, int]] = {}
        self._early: set[int] = set()  # PUBACKs that came before their mid was recorded
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: paho.Client | None = None
        self.name = f"gw-{uuid.uuid4().hex[:8]}"

    def _connect(self) -> None:
        old, self._client = self._client, None
        if old is not None:
            old.loop_stop()  # returns at once: its thread does not reconnect by itself
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.name,
            protocol=MQTTProtocolVersion.MQTTv311,
            clean_session=True,
            # This gateway reconnects itself, to the next node: paho's own loop would retry
            # the dead one with backoff, and loop_stop() would wait for it.
            reconnect_on_failure=False,
        )
        client.max_inflight_messages_set(2000)
        client.max_queued_messages_set(0)
        client.on_publish = self._on_publish
        client.on_disconnect = self._on_disconnect
        client.on_connect = self._on_connect
        self._connected.clear()
        with self._lock:
            self._mids.clear()
            self._early.clear()
        port = self.ports[self._port_index % len(self.ports)]
        self._port_index += 1
        try:
            client.connect("127.0.0.1", port, keepalive=5)
        except OSError:
            return
        self._client = client
        client.loop_start()

    def _on_connect(self, *_args: Any) -> None:
        self._connected.set()

    def _on_disconnect(self, *_args: Any) -> None:
        self._connected.clear()

    def _on_publish(self, _client: Any, _userdata: Any, mid: int, *_rest: Any) -> None:
        with self._lock:
            key = self._mids.pop(mid, None)
            if key is None:
                self._early.add(mid)
            else:
                self._acked(key)

    def _acked(self, key: tuple[str, str, int]) -> None:
        if self._unacked.pop(key, None) is not None:
            self.acked.add(key)

    def _publish(self, key: tuple[str, str, int], topic: str, payload: bytes) -> None:
        # Not under our lock: paho calls on_publish holding its own (a lock-order deadlock).
        assert self._client is not None
        mid = self._client.publish(topic, payload, qos=1).mid
        with self._lock:
            if mid in self._early:
                self._early.discard(mid)
                self._acked(key)
            else:
                self._mids[mid] = key

    def _ensure_connected(self) -> None:
        while not self._connected.is_set() and not self._stop.is_set():
            self._connect()
            if self._connected.wait(3):
                self.reconnects += 1
                with self._lock:
                    pending = list(self._unacked.items())
                for key, (topic, payload) in pending:
                    self._publish(key, topic, payload)
                    self.resent += 1

    def start(self, rate: float, prefix: str = "cw") -> None:
        def run() -> None:
            # Connected before the first publish: a publish before the CONNACK would find the
            # gateway "disconnected" and move it on to the next node.
            self._ensure_connected()
            self.reconnects = 0
            started = time.monotonic()
            seq = 0
            while not self._stop.is_set():
                if not self._connected.is_set():
                    self._ensure_connected()
                    continue
                ahead = started + self.sent / rate - time.monotonic()
                if ahead > 0:
                    self._stop.wait(ahead)
                site, device = self.devices[self.sent % len(self.devices)]
                if self.sent % len(self.devices) == 0:
                    seq += 1
                key = (site, device, seq)
                body = {
                    "ts": int(time.time() * 1000),
                    "seq": seq,
                    "metrics": {"co2": self.co2(f"{site}/{device}")},
                }
                topic = f"{prefix}/{site}/{device}/telemetry"
                payload = orjson.dumps(body)
                with self._lock:
                    self._unacked[key] = (topic, payload)
                self._publish(key, topic, payload)
                self.sent += 1

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()

    def stop_sending(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def settle(self, timeout: float = 60) -> None:
        """Waits until everything sent is acknowledged, reconnecting (and so re-sending) when
        the connection is lost meanwhile."""
        self._stop.clear()

        def settled() -> bool:
            if not self._connected.is_set():
                self._ensure_connected()
            return not self._unacked

        try:
            wait_for(settled, timeout, lambda: f"{self.unacked} readings acknowledged")
        finally:
            self._stop.set()

    @property
    def unacked(self) -> int:
        return len(self._unacked)

    def close(self) -> None:
        self.stop_sending()
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
