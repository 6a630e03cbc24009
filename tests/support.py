"""Helpers shared by test modules of several packages (fixtures stay in the conftest files)."""

from __future__ import annotations

import os
import re
import signal
import socket
import socketserver
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho
import psycopg
import pytest
import uvicorn

from api.serving import server_config
from clausewatch.embedded import free_port
from config import BUNDLED_DIR
from config.urls import MqttEndpoint, database_named
from ingest.mqtt import IngressQueue, make_client

if TYPE_CHECKING:
    from fastapi import FastAPI
    from playwright.sync_api import Browser
    from psycopg_pool import ConnectionPool

    from config.files import LoadedConfig
    from ingest.pipeline import Pipeline

CHROMIUM = Path("/usr/bin/chromium")
# Headless in a container on a shared machine: no sandbox, no GPU, none of the background
# traffic (updates, sync, first-run pages) a fresh profile would start.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def skip_without_chromium() -> None:
    """Skip the calling test when Debian's chromium is not installed."""
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")


@contextmanager
def launch_chromium() -> Iterator[Browser]:
    """Debian's Chromium driven by playwright (never `playwright install`); closed on leaving."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def answers(port: int) -> bool:
    """Whether something accepts TCP connections on this local port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_for(
    probe: Callable[[], Any],
    timeout: float = 20.0,
    what: str | Callable[[], str] | None = None,
) -> Any:
    """Poll `probe` until it returns something truthy and return that; past `timeout` seconds
    fail naming `what` (or what it returns, when the detail is only worth computing then)."""
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        if time.monotonic() > deadline:
            if what is None:
                raise AssertionError(f"condition not met within {timeout} s")
            detail = what() if callable(what) else what
            raise AssertionError(f"{detail}: not within {timeout} s")
        time.sleep(0.05)
    return value


def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    """All rows of one query, on a connection of its own."""
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


MOSQUITTO = "/usr/sbin/mosquitto"
BUNDLED_CONF = BUNDLED_DIR / "mosquitto.conf"


class Mosquitto:
    """`/usr/sbin/mosquitto -c conf` as a child process, its output in `log`; `start()` waits
    until every port in `ports` accepts connections (failing with the log), `stop()` sends
    SIGTERM (Mosquitto saves its persistence file and exits)."""

    def __init__(self, conf: Path, ports: Sequence[int], log: Path) -> None:
        self.conf = conf
        self.ports = tuple(ports)
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log
            )
        wait_for(
            lambda: all(answers(port) for port in self.ports),
            10,
            lambda: "mosquitto listening: " + self.log.read_text(errors="replace"),
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(10)
        self.process = None


def run_as_root_line() -> str:
    """What a test's Mosquitto configuration needs when the tests run as root: Mosquitto would
    otherwise switch to the `mosquitto` user, who cannot read the test's files (mode 0600)."""
    return "\nuser root\n" if os.geteuid() == 0 else ""


class OwnBroker(Mosquitto):
    """Mosquitto with the bundled configuration (its queue limits and persistence) on a free
    port, persistence in `folder`: a broker a test may stop and restart without touching the
    shared one. `message_size_limit`, when given, replaces the bundled one (0: none)."""

    def __init__(self, folder: Path, *, message_size_limit: int | None = None) -> None:
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        text = BUNDLED_CONF.read_text()
        text = text.replace("listener 1883 127.0.0.1", f"listener {self.port} 127.0.0.1")
        text = text.replace(
            "persistence_location /var/lib/mosquitto/", f"persistence_location {folder}/"
        )
        if message_size_limit is not None:
            text = re.sub(
                r"(?m)^message_size_limit \d+$", f"message_size_limit {message_size_limit}", text
            )
        conf = folder / "mosquitto.conf"
        conf.write_text(text + run_as_root_line())
        super().__init__(conf, [self.port], folder / "mosquitto.log")


# A test certificate authority, made with the `openssl` command (EC P-256 keys, valid 2 days).
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
SERVER_EXTENSIONS = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
CLIENT_EXTENSIONS = "extendedKeyUsage=clientAuth\n"


def openssl(folder: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)


def make_test_ca(folder: Path) -> None:
    """`ca.pem` and `ca.key` in `folder`: a CA for one test."""
    openssl(folder, "req", "-x509", *EC_KEY, "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "2", "-subj", "/CN=clausewatch test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip


def issue_certificate(folder: Path, name: str, extensions: str) -> None:
    """`name`.pem and `name`.key in `folder`, signed by its test CA (`make_test_ca`)."""
    (folder / f"{name}.ext").write_text(extensions)
    openssl(folder, "req", *EC_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}")  # fmt: skip
    openssl(folder, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", f"{name}.pem",
            "-extfile", f"{name}.ext")  # fmt: skip


def make_test_pki(folder: Path) -> None:
    """A test CA (`ca.pem`) with a server certificate for 127.0.0.1 and localhost
    (`server.pem`, `server.key`) and a client certificate (`client.pem`, `client.key`)."""
    make_test_ca(folder)
    issue_certificate(folder, "server", SERVER_EXTENSIONS)
    issue_certificate(folder, "client", CLIENT_EXTENSIONS)


@contextmanager
def throwaway_database(server_url: str, prefix: str, template: str | None = None) -> Iterator[str]:
    """Create a database named `prefix_<random>` on the server (empty, or a copy of
    `template`), give its URL, and drop it (forcing out leftover connections) on leaving."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{copy}')
    try:
        yield database_named(server_url, name)
    finally:  # a failing test leaves no database behind
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def serve_app(app: FastAPI, thread_name: str) -> Iterator[str]:
    """The app served by uvicorn on a free local port in a daemon thread (real HTTP, for
    streams and browsers), with the service's limits (api/serving.py); gives its base URL and
    shuts the server down on leaving."""
    port = free_port()
    server = uvicorn.Server(server_config(app, "127.0.0.1", port))
    thread = threading.Thread(target=server.run, name=thread_name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:  # polled with a deadline: uvicorn has no start event
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@contextmanager
def serve_http(server: socketserver.BaseServer) -> Iterator[None]:
    """Runs `server` (an http.server receiver of a test) in a daemon thread while inside; shuts
    it down and closes its socket on leaving."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def auth(token: str) -> dict[str, str]:
    """Request headers carrying an API token."""
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def mqtt_publisher(mqtt_url: str) -> Iterator[Callable[[str, bytes], None]]:
    """A client connected to the broker; the function it gives publishes a payload at QoS 1 and
    returns once the broker has acknowledged it. Disconnects on leaving."""
    target = MqttEndpoint.parse(mqtt_url)
    client = make_client(mqtt_url, f"pub-{uuid.uuid4().hex[:8]}")
    client.connect(target.host, target.port)
    client.loop_start()

    def send(topic: str, payload: bytes) -> None:
        client.publish(topic, payload, qos=1).wait_for_publish(10)

    try:
        yield send
    finally:
        client.loop_stop()
        client.disconnect()


@dataclass
class Client:
    """A paho client that records its CONNACK, its PUBACKs' reason codes (MQTT 5), whether the
    broker closed the connection, and what it receives. Connected (and subscribed) when
    `connect` returns it, unless `refused` says why not; never reconnects."""

    client: paho.Client
    ready: threading.Event = field(default_factory=threading.Event)
    closed: threading.Event = field(default_factory=threading.Event)
    refused: str | None = None
    acks: dict[int, int] = field(default_factory=dict)
    received: list[tuple[str, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, topic: str, payload: bytes = b"{}") -> int:
        """Publishes at QoS 1; the PUBACK's reason code (0 or 16 success, 135 not authorized;
        always 0 under MQTT 3.1.1)."""
        info = self.client.publish(topic, payload, qos=1)
        return int(wait_for(lambda: self.acks.get(info.mid), 10, f"PUBACK of {topic}")) - 1

    def topics(self) -> list[str]:
        with self.lock:
            return [topic for topic, _ in self.received]


@contextmanager
def mqtt_clients() -> Iterator[Callable[..., Client]]:
    """`connect(url, subscribe=None)` connects a `Client` (and subscribes it at QoS 1); every
    client connected is disconnected on leaving."""
    clients: list[paho.Client] = []

    def connect(url: str, subscribe: str | None = None) -> Client:
        client = make_client(url, f"t-{uuid.uuid4().hex[:8]}")
        state = Client(client)

        def on_connect(c: Any, u: Any, flags: Any, reason: Any, props: Any) -> None:
            if reason.is_failure:
                state.refused = str(reason)
            elif subscribe is not None:
                c.subscribe(subscribe, qos=1)
            else:
                state.ready.set()

        def on_subscribe(c: Any, u: Any, mid: int, reasons: Any, props: Any) -> None:
            assert not any(r.is_failure for r in reasons), reasons
            state.ready.set()

        def on_publish(c: Any, u: Any, mid: int, reason: Any, props: Any) -> None:
            state.acks[mid] = int(reason.value) + 1  # + 1: 0 would read as "not yet"

        def on_disconnect(c: Any, u: Any, flags: Any, reason: Any, props: Any) -> None:
            state.closed.set()
            c.disconnect()  # no reconnecting: a test client's connection is tried once

        def on_message(c: Any, u: Any, message: paho.MQTTMessage) -> None:
            with state.lock:
                state.received.append((message.topic, message.payload))

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_publish = on_publish
        client.on_disconnect = on_disconnect
        client.on_message = on_message
        target = MqttEndpoint.parse(url)
        client.connect(target.host, target.port)
        client.loop_start()
        clients.append(client)
        wait_for(lambda: state.ready.is_set() or state.refused, 10, f"CONNACK for {url}")
        return state

    yield connect
    for client in clients:
        client.disconnect()
        client.loop_stop()


def config_pipeline(
    pool: ConnectionPool[Any],
    config: LoadedConfig,
    inbox: IngressQueue,
    ack: Callable[[list[tuple[int, int, int]]], None] = lambda tokens: None,
    **options: Any,
) -> Pipeline:
    """A pipeline (not started) over every site and clause version of `config`, topics under
    "cw", its outputs recorded as the service records them; `options` as `Pipeline` takes
    them."""
    from alerts.record import record_outputs
    from ingest.decode import Decoder, DeviceIndex
    from ingest.pipeline import Pipeline

    decoder = Decoder(DeviceIndex.from_sites(config.sites.values()), "cw")
    return Pipeline(
        pool, config.sites, config.clause_versions(), decoder, inbox, ack,
        sink=record_outputs, **options,
    )  # fmt: skip
