"""Parts the fault tests control: a Mosquitto of their own (the bundled mosquitto.conf with its
raised queue limits and persistence, on a free port), `clausewatch run` as a process they can
kill, a small site with a clause whose `for` duration is a few seconds, and a QoS 1 publisher
that records every reading the broker accepted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import psycopg
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from config.urls import MqttEndpoint
from tests.support import OwnBroker, free_port, wait_for

PREFIX = "cw"
SITE_ID = "fault-hq"
SENSORS = 10
FOR_S = 6.0  # the co2 clause's minimum duration

SITE = {
    "site": {"id": SITE_ID, "name": "Fault test office", "timezone": "Asia/Shanghai"},
    "spaces": [{"id": "b1", "type": "building"}]
    + [{"id": f"r{i}", "type": "office", "parent": "b1"} for i in range(SENSORS)],
    "devices": [
        {
            "id": f"s{i}",
            "space": f"r{i}",
            "metrics": {
                "temperature": {"unit": "°C", "range": [-20, 60]},
                "humidity": {"unit": "%", "range": [0, 100]},
                "co2": {"unit": "ppm", "range": [300, 10000]},
            },
        }
        for i in range(SENSORS)
    ],
    "parties": [{"id": "ops", "name": "Operations"}],
    "assignments": [{"party": "ops", "space": "b1", "valid_from": "2020-01-01T00:00:00+08:00"}],
}

CLAUSES = {
    "standard": {"code": "FAULT-TEST", "title": "Fault test clauses", "edition": "1"},
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


def query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[OwnBroker]:
    folder = tmp_path / "broker"
    folder.mkdir()
    broker = OwnBroker(folder)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "config"
    (folder / "sites").mkdir(parents=True)
    (folder / "clauses").mkdir()
    (folder / "sites" / f"{SITE_ID}.yaml").write_text(yaml.safe_dump(SITE, allow_unicode=True))
    (folder / "clauses" / "fault-test.yaml").write_text(yaml.safe_dump(CLAUSES, allow_unicode=True))
    return folder


class ServiceProcess:
    """`clausewatch run` in a process of its own: same client id on every start (one persistent
    session), wall clock, lateness 1 s, flushes every 50 ms. Its log goes to `log`."""

    def __init__(self, database_url: str, mqtt_url: str, config_dir: Path, log: Path) -> None:
        self.env = dict(os.environ)
        self.env.update(
            CLAUSEWATCH_DATABASE_URL=database_url,
            CLAUSEWATCH_MQTT_URL=mqtt_url,
            CLAUSEWATCH_CONFIG_DIR=str(config_dir),
            CLAUSEWATCH_MQTT_CLIENT_ID=f"fault-{uuid.uuid4().hex[:8]}",
            CLAUSEWATCH_LATENESS_S="1",
            CLAUSEWATCH_FLUSH_INTERVAL_S="0.05",
            CLAUSEWATCH_HTTP_PORT=str(free_port()),
        )
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "clausewatch", "run"],
                env=self.env,
                stdout=log,
                stderr=log,
            )
        wait_for(
            lambda: (
                "clausewatch running" in self.log.read_text() or self.process.poll() is not None
            ),  # type: ignore[union-attr]
            60,
            "service start",
        )
        assert self.process.poll() is None, self.log.read_text()[-3000:]

    def starts(self) -> int:
        return self.log.read_text().count("clausewatch running")

    def kill(self) -> None:
        """SIGKILL: no flush, no ack, no clean disconnect."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def rss_kib(self) -> int:
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(
            next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]
        )


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    made: list[ServiceProcess] = []

    def make(database_url: str, mqtt_url: str, config_dir: Path) -> ServiceProcess:
        made.append(ServiceProcess(database_url, mqtt_url, config_dir, tmp_path / "service.log"))
        return made[-1]

    yield make
    for service in made:
        service.stop()


class Publisher:
    """QoS 1 publisher on its own thread. `accepted` holds (device, seq, ts_ms, co2) of every
    reading the broker acknowledged (PUBACK)."""

    def __init__(self, mqtt_url: str) -> None:
        broker = MqttEndpoint.parse(mqtt_url)
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"fault-pub-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.max_inflight_messages_set(1000)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.accepted: list[tuple[str, int, int, float]] = []
        self._pending: list[tuple[Any, tuple[str, int, int, float]]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.seq = 0

    def send(
        self, device: str, ts_ms: int, metrics: dict[str, float], kind: str = "telemetry"
    ) -> None:
        self.seq += 1
        body = {"ts": ts_ms, "seq": self.seq, "metrics": metrics}
        info = self.client.publish(f"{PREFIX}/{SITE_ID}/{device}/{kind}", orjson.dumps(body), qos=1)
        self._pending.append((info, (device, self.seq, ts_ms, metrics.get("co2", 0.0))))

    def send_raw(self, device: str, payload: bytes) -> Any:
        return self.client.publish(f"{PREFIX}/{SITE_ID}/{device}/telemetry", payload, qos=1)

    def stream(self, rate: float, co2_of: Callable[[str], float]) -> None:
        """Every sensor in turn at `rate` messages/s until `stop_stream()`."""

        def run() -> None:
            started = time.monotonic()
            sent = 0
            while not self._stop.is_set():
                ahead = started + sent / rate - time.monotonic()
                if ahead > 0:
                    self._stop.wait(ahead)
                device = f"s{sent % SENSORS}"
                self.send(
                    device,
                    int(time.time() * 1000),
                    {"temperature": 24.0, "humidity": 50.0, "co2": co2_of(device)},
                )
                sent += 1

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop_stream(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def settle(self, timeout: float = 30) -> list[tuple[str, int, int, float]]:
        """Waits for every PUBACK; returns what the broker accepted."""
        for info, reading in self._pending:
            info.wait_for_publish(timeout)
            if info.is_published():
                self.accepted.append(reading)
        self._pending = []
        return self.accepted

    def close(self) -> None:
        self.stop_stream()
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher_factory() -> Iterator[Callable[[str], Publisher]]:
    made: list[Publisher] = []

    def make(mqtt_url: str) -> Publisher:
        made.append(Publisher(mqtt_url))
        return made[-1]

    yield make
    for publisher in made:
        publisher.close()
