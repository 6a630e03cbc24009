"""`clausewatch broker files` at work: the files it writes from a small configuration (two sites,
an edge gateway file) run a real Mosquitto started here on free ports, and what each login may do
is tried the way an attacker on the building network would: anonymously, as a device speaking
for another device or another site, as the service publishing, as a gateway leaving its site.
"Never reaches the service" is shown without waiting for nothing: the forbidden messages go
first, then one the login may send, and a broker delivers one client's QoS 1 messages to a
subscriber in order, so once the allowed one is in, a forwarded forbidden one would be too."""

from __future__ import annotations

import csv
import datetime as dt
import shutil
import stat
import textwrap
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
import yaml

from clausewatch.cli import main
from clausewatch.embedded import free_port
from clausewatch.service import Service, ServiceOptions
from clausewatch.settings import Settings
from config import BUNDLED_DIR
from config.files import load_config_dir
from edge.config import load_gateway_config
from edge.gateway import Gateway
from ingest.mqtt import IngressQueue, MqttSubscriber, ReceivedMessage
from simulators.publish import Publisher, PublishError
from tests.support import (
    MOSQUITTO,
    Client,
    Mosquitto,
    OwnBroker,
    make_test_pki,
    mqtt_clients,
    rows,
    run_as_root_line,
    wait_for,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="needs Mosquitto"),
]

PREFIX = "cw"
METRICS = {"temperature": {"unit": "°C", "range": [-20, 60]}}


def site(site_id: str, devices: list[str]) -> dict[str, Any]:
    return {
        "site": {"id": site_id, "name": site_id, "timezone": "Asia/Shanghai"},
        "spaces": [{"id": "b1", "type": "building"}],
        "devices": [{"id": d, "space": "b1", "metrics": METRICS} for d in devices],
    }


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """Sites `north` (th-1, th-2) and `south` (th-1), and north's gateway `gw-n` in edge/."""
    folder = tmp_path / "config"
    for sub in ("sites", "clauses", "edge"):
        (folder / sub).mkdir(parents=True)
    for site_id, devices in (("north", ["th-1", "th-2"]), ("south", ["th-1"])):
        (folder / "sites" / f"{site_id}.yaml").write_text(
            yaml.safe_dump(site(site_id, devices), allow_unicode=True)
        )
    (folder / "edge" / "gw-n.yaml").write_text(
        textwrap.dedent("""\
            site: north
            gateway: gw-n
            site_file: ../sites/north.yaml
            broker: {url: "mqtt://127.0.0.1:1883", prefix: cw}
            buffer: {path: gw-n.sqlite}
            sources:
              - {kind: simulated, device: th-1, metrics: {temperature: {mean: 22}}}
            """)
    )
    return folder


def broker_files(config_dir: Path, out: Path, *extra: str) -> dict[str, str]:
    """Runs the command; username -> password from the credentials.csv it wrote."""
    code = main(["broker", "files", "--config-dir", str(config_dir), "--out", str(out), *extra])
    assert code == 0
    with (out / "credentials.csv").open(newline="") as file:
        return {row["username"]: row["password"] for row in csv.DictReader(file)}


@dataclass
class Broker:
    folder: Path
    port: int
    passwords: dict[str, str]
    tls_port: int = 0

    def url(self, username: str | None, password: str | None = None, *, v311: bool = False) -> str:
        login = ""
        if username is not None:
            secret = self.passwords[username] if password is None else password
            login = f"{quote(username, safe='')}:{secret}@"
        return f"mqtt://{login}127.0.0.1:{self.port}" + ("?protocol=311" if v311 else "")

    def tls_url(self, username: str, password: str | None = None) -> str:
        secret = self.passwords[username] if password is None else password
        login = f"{quote(username, safe='')}:{secret}"
        return f"mqtts://{login}@127.0.0.1:{self.tls_port}?ca={self.folder}/pki/ca.pem"


def start_generated(folder: Path, config_dir: Path, *extra: str) -> Iterator[Broker]:
    """Writes the files into `folder`/out with free ports and starts Mosquitto on them."""
    port = free_port()
    out = folder / "out"
    passwords = broker_files(
        config_dir, out, "--port", str(port), "--persistence-dir", str(folder), *extra
    )
    conf = out / "mosquitto.conf"
    conf.write_text(conf.read_text() + run_as_root_line())
    broker = Broker(folder, port, passwords)
    ports = [port]
    if "--tls-port" in extra:
        broker.tls_port = int(extra[extra.index("--tls-port") + 1])
        ports.append(broker.tls_port)
    mosquitto = Mosquitto(conf, ports, folder / "mosquitto.log")
    mosquitto.start()
    try:
        yield broker
    finally:
        mosquitto.stop()


@pytest.fixture
def broker(tmp_path: Path, config_dir: Path) -> Iterator[Broker]:
    yield from start_generated(tmp_path, config_dir)


@pytest.fixture
def connect() -> Iterator[Callable[..., Client]]:
    with mqtt_clients() as connect:
        yield connect


def forbidden(
    connect: Callable[..., Client], url: str, topic: str, payload: bytes = b"{}"
) -> int | None:
    """One publish the broker must not take, from a connection of its own; the PUBACK's reason
    code, or None without one. Mosquitto 2.0 (2.0.11) closes the connection after a forbidden
    or oversized publish, after a PUBACK `Not authorized` (135) to an MQTT 5 client that
    published outside its rights: this waits for that close, so the broker is done with it."""
    client = connect(url)
    assert client.refused is None, client.refused
    mid = client.client.publish(topic, payload, qos=1).mid
    wait_for(client.closed.is_set, 10, f"the broker closing the connection after {topic}")
    ack = client.acks.get(mid)
    return None if ack is None else ack - 1


def test_anonymous_clients_and_wrong_passwords_are_refused(
    broker: Broker, connect: Callable[..., Client]
) -> None:
    for url in (
        broker.url(None),
        broker.url(None, v311=True),
        broker.url("north/th-1", "not-its-password"),
        broker.url("north/th-9", "no-such-device"),
    ):
        assert connect(url).refused in ("Not authorized", "Bad user name or password"), url
    assert connect(broker.url("north/th-1")).refused is None


def test_a_device_reaches_the_service_on_its_own_topics_only(
    broker: Broker, connect: Callable[..., Client]
) -> None:
    service = connect(broker.url("clausewatch"), subscribe="cw/#")
    device_url = broker.url("north/th-1")
    for topic in ("cw/north/th-2/telemetry", "cw/south/th-1/telemetry", "cw/north/gw-n/status"):
        assert forbidden(connect, device_url, topic) == 135  # not authorized, and closed
    device = connect(device_url)
    own = ["cw/north/th-1/event", "cw/north/th-1/status", "cw/north/th-1/telemetry"]
    assert [device.publish(topic) for topic in own] == [0, 0, 0]
    wait_for(lambda: len(service.topics()) == 3, 10, "the device's messages")
    assert service.topics() == own
    assert not device.closed.is_set()


def test_a_device_reads_nothing(broker: Broker, connect: Callable[..., Client]) -> None:
    """Mosquitto grants the subscription and checks read rights at delivery. A message
    forwarded to the device would reach it before the PUBACK of its own later publish."""
    service = connect(broker.url("clausewatch"), subscribe="cw/#")
    device = connect(broker.url("north/th-1"), subscribe="cw/#")
    connect(broker.url("north/th-2")).publish("cw/north/th-2/telemetry")
    wait_for(service.topics, 10, "the other device's reading")
    device.publish("cw/north/th-1/telemetry")
    assert device.topics() == []


def test_the_service_login_cannot_publish(broker: Broker, connect: Callable[..., Client]) -> None:
    watcher = connect(broker.url("clausewatch"), subscribe="cw/#")
    assert forbidden(connect, broker.url("clausewatch"), "cw/north/th-1/telemetry") == 135
    assert forbidden(connect, broker.url("clausewatch"), "elsewhere") == 135
    device = connect(broker.url("south/th-1"))
    assert device.publish("cw/south/th-1/telemetry") == 0
    wait_for(watcher.topics, 10, "the device's reading")
    assert watcher.topics() == ["cw/south/th-1/telemetry"]


def test_a_gateway_publishes_for_the_devices_of_its_site_only(
    broker: Broker, connect: Callable[..., Client]
) -> None:
    service = connect(broker.url("clausewatch"), subscribe="cw/#")
    gateway_url = broker.url("north/gw-n", v311=True)  # the edge gateway speaks MQTT 3.1.1
    for topic in ("cw/south/th-1/telemetry", "cw/north/th-3/telemetry", "cw/south/gw-n/status"):
        forbidden(connect, gateway_url, topic)  # 3.1.1 has no reason code: acked, then closed
    gateway = connect(gateway_url)
    allowed = ["cw/north/gw-n/status", "cw/north/th-2/telemetry", "cw/north/th-1/event"]
    for topic in allowed:
        gateway.publish(topic)
    wait_for(lambda: len(service.topics()) == 3, 10, "the gateway's messages")
    assert service.topics() == allowed


def test_rerunning_keeps_every_password_until_it_is_rotated(
    tmp_path: Path, config_dir: Path
) -> None:
    out = tmp_path / "out"
    first = broker_files(config_dir, out)
    assert sorted(first) == ["clausewatch", "north/gw-n", "north/th-1", "north/th-2", "south/th-1"]
    for name in ("mosquitto.conf", "passwords", "acl", "credentials.csv"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600, name
    with (out / "credentials.csv").open(newline="") as file:
        kinds = {(row["kind"], row["site"], row["id"]) for row in csv.DictReader(file)}
    assert ("gateway", "north", "gw-n") in kinds and ("service", "", "clausewatch") in kinds
    hashes = (out / "passwords").read_text()

    assert broker_files(config_dir, out) == first
    assert (out / "passwords").read_text() != hashes  # hashed again, with fresh salts
    one = broker_files(config_dir, out, "--rotate", "south/th-1")
    assert {u for u in first if first[u] != one[u]} == {"south/th-1"}
    every = broker_files(config_dir, out, "--rotate")
    assert all(every[u] != one[u] for u in first)


def test_a_login_that_does_not_exist_cannot_be_rotated(
    tmp_path: Path, config_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["broker", "files", "--config-dir", str(config_dir), "--out", str(tmp_path / "o"),
         "--rotate", "north/th-9"]
    )  # fmt: skip
    assert code == 2
    assert "no such login: north/th-9" in capsys.readouterr().err


def test_without_mosquitto_passwd_the_hashes_are_written_in_a_format_mosquitto_reads(
    tmp_path: Path,
    config_dir: Path,
    connect: Callable[..., Client],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no mosquitto_passwd to be found
    for broker in start_generated(tmp_path, config_dir):
        assert (tmp_path / "out" / "passwords").read_text().startswith("clausewatch:$7$101$")
        assert connect(broker.url("north/th-2")).refused is None
        assert connect(broker.url("clausewatch")).refused is None
        assert connect(broker.url("clausewatch", "wrong")).refused is not None


def test_the_shipped_size_limit_is_the_services_and_the_broker_keeps_larger_payloads_out(
    tmp_path: Path, connect: Callable[..., Client]
) -> None:
    limit = Settings.model_fields["max_payload_bytes"].default
    assert f"\nmessage_size_limit {limit}\n" in (BUNDLED_DIR / "mosquitto.conf").read_text()
    broker = OwnBroker(tmp_path)
    broker.start()
    try:
        watcher = connect(broker.url, subscribe="cw/#")
        forbidden(connect, broker.url, "cw/s/big/telemetry", b"x" * (limit + 1))
        connect(broker.url).publish("cw/s/fits/telemetry", b"x" * limit)
        wait_for(watcher.topics, 10, "the payload within the limit")
        assert watcher.topics() == ["cw/s/fits/telemetry"]
    finally:
        broker.stop()


def test_the_service_stores_only_what_devices_may_say(
    broker: Broker, config_dir: Path, connect: Callable[..., Client], fresh_database_url: str
) -> None:
    settings = Settings(
        database_url=fresh_database_url,
        mqtt_url=broker.url("clausewatch"),
        topic_prefix=PREFIX,
        mqtt_client_id=f"cw-test-{uuid.uuid4().hex[:8]}",
        lateness_s=0,
        flush_interval_s=0.05,
    )
    service = Service(
        settings, load_config_dir(config_dir), ServiceOptions(clock="data", serve_api=False)
    )
    service.start()
    try:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)

        def reading(seq: int, value: float) -> bytes:
            ts = int((now + dt.timedelta(seconds=seq)).timestamp() * 1000)
            return orjson.dumps({"ts": ts, "seq": seq, "metrics": {"temperature": value}})

        assert connect(broker.url(None)).refused is not None  # no anonymous forgery
        url = broker.url("north/th-1")
        forbidden(connect, url, "cw/north/th-2/telemetry", reading(1, 99.0))  # another device
        forbidden(connect, url, "cw/south/th-1/telemetry", reading(2, 99.0))  # another site
        cleaned = b'{"type": "cleaning.completed", "space": "b1"}'
        forbidden(connect, url, "cw/north/th-2/event", cleaned)
        forbidden(connect, url, "cw/north/gw-n/status", b"online")  # a gateway's status
        connect(url).publish("cw/north/th-1/telemetry", reading(3, 24.5))
        wait_for(
            lambda: rows(fresh_database_url, "SELECT count(*) FROM readings")[0][0] == 1,
            20,
            "the device's own reading",
        )
        stored = rows(fresh_database_url, "SELECT site, device, value FROM readings")
        assert stored == [("north", "th-1", 24.5)]
        assert rows(fresh_database_url, "SELECT count(*) FROM events") == [(0,)]
        assert rows(fresh_database_url, "SELECT count(*) FROM dead_letters") == [(0,)]
        assert rows(fresh_database_url, "SELECT count(*) FROM device_status") == [(0,)]
    finally:
        service.stop()


pki = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


@pytest.fixture
def tls_broker(tmp_path: Path, config_dir: Path) -> Iterator[Broker]:
    (tmp_path / "pki").mkdir()
    make_test_pki(tmp_path / "pki")
    yield from start_generated(
        tmp_path,
        config_dir,
        "--tls-cert", str(tmp_path / "pki" / "server.pem"),
        "--tls-key", str(tmp_path / "pki" / "server.key"),
        "--tls-port", str(free_port()),
        "--tls-bind", "127.0.0.1",
    )  # fmt: skip


@pki
def test_over_tls_the_service_the_edge_gateway_and_the_simulator_log_in(
    tls_broker: Broker, tmp_path: Path
) -> None:
    inbox = IngressQueue(1000)
    subscriber = MqttSubscriber(
        tls_broker.tls_url("clausewatch"), f"cw-tls-{uuid.uuid4().hex[:8]}", ["cw/#"], inbox
    )
    subscriber.start()
    received: list[ReceivedMessage] = []

    def arrived(topic: str) -> bool:
        batch = inbox.get_many(1000, timeout=0.1)
        subscriber.ack([message.token for message in batch])
        received.extend(batch)
        return any(message.topic == topic for message in received)

    try:
        assert subscriber.wait_connected(10), "the service did not log in over TLS"
        # The simulator's publisher, as the device it stands in for.
        with Publisher(tls_broker.tls_url("south/th-1"), connect_timeout=10) as publisher:
            publisher.publish("cw/south/th-1/telemetry", b'{"metrics": {"temperature": 21}}')
        wait_for(lambda: arrived("cw/south/th-1/telemetry"), 10, "the simulator's reading")
        # A wrong password over TLS is refused like on the plain listener.
        with (
            pytest.raises(PublishError, match="no connection"),
            Publisher(tls_broker.tls_url("south/th-1", "wrong"), connect_timeout=2),
        ):
            pass
        # The edge gateway, its login in the URL of its file.
        gateway_file = tmp_path / "gw.yaml"
        gateway_file.write_text(
            textwrap.dedent(f"""\
                site: north
                gateway: gw-n
                broker: {{url: "{tls_broker.tls_url("north/gw-n")}", prefix: cw}}
                buffer: {{path: gw.sqlite}}
                batch: {{size: 1, interval: 0.05s}}
                sources:
                  - {{kind: simulated, device: th-2, interval: 0.05s,
                      metrics: {{temperature: {{mean: 22}}}}}}
                """)
        )  # fmt: skip
        config, _ = load_gateway_config(gateway_file)
        gateway = Gateway(config)
        gateway.start()
        try:
            wait_for(lambda: arrived("cw/north/th-2/telemetry"), 10, "the gateway's reading")
        finally:
            gateway.stop(drain_timeout=1)
    finally:
        subscriber.stop()
    assert "cw/north/gw-n/status" in {message.topic for message in received}


@pki
def test_with_a_client_ca_a_tls_client_needs_a_certificate_and_its_password(
    tmp_path: Path, config_dir: Path
) -> None:
    folder = tmp_path / "pki"
    folder.mkdir()
    make_test_pki(folder)
    for broker in start_generated(
        tmp_path,
        config_dir,
        "--tls-cert", str(folder / "server.pem"),
        "--tls-key", str(folder / "server.key"),
        "--tls-ca", str(folder / "ca.pem"),
        "--tls-port", str(free_port()),
        "--tls-bind", "127.0.0.1",
    ):  # fmt: skip
        certificate = f"&cert={folder}/client.pem&key={folder}/client.key"
        url = broker.tls_url("south/th-1")
        with Publisher(url + certificate, connect_timeout=10) as publisher:
            publisher.publish("cw/south/th-1/telemetry", b"{}")
        for refused in (url, broker.tls_url("south/th-1", "wrong") + certificate):
            with (
                pytest.raises(PublishError, match="no connection"),
                Publisher(refused, connect_timeout=2),
            ):
                pass
