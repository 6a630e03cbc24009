"""Parts the end-to-end benchmarks share: a Mosquitto of their own (the bundled mosquitto.conf on
a free port), a scratch database, a bench configuration directory (generated sites + the bundled
clauses), the service as a subprocess (`clausewatch run`), a QoS 1 publisher with a bound on
unacknowledged messages, and a bare paho subscriber that only counts (the ceiling).

The publisher speaks MQTT itself over a plain socket and sends hundreds of pre-encoded PUBLISH
packets per send(), reading the PUBACKs in bulk: about 2 µs of CPU per message, so it is never
what limits a run (paho's publish() cost about 40 µs a message and capped the end-to-end
figures at the publisher's 11k-22k msg/s).

Site time: the bench sites use the fixed-offset zone in which it is now mid-morning, with the
cooling season around today and every room occupied and cooling, so the schedules, gates and
`for` durations of the whole bundled clause set are live (the worst case: nothing is skipped as
outside its schedule). Readings carry the wall clock as their ts.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import os
import platform
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import psycopg
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from config import BUNDLED_DIR
from config.urls import MqttEndpoint, database_named

ROOT = Path(__file__).resolve().parent.parent
CONFIG = BUNDLED_DIR
PYTHON = str(ROOT / ".venv" / "bin" / "python")
MOSQUITTO = "/usr/sbin/mosquitto"
SERVER_URL = os.environ.get(
    "CLAUSEWATCH_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PREFIX = "cw"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(probe: Callable[[], object], timeout: float, what: str, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout} s")
        time.sleep(step)


def machine() -> str:
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"nproc {os.cpu_count()}, memory {pages / 2**30:.0f} GiB, load {load}, "
        f"Python {platform.python_version()}, {platform.machine()}"
    )


# -- broker and database --


@contextmanager
def own_mosquitto(folder: Path) -> Iterator[str]:
    """The bundled mosquitto.conf (raised queue limits, persistence) on a free port."""
    port = free_port()
    text = (CONFIG / "mosquitto.conf").read_text()
    text = text.replace("listener 1883 127.0.0.1", f"listener {port} 127.0.0.1")
    text = text.replace(
        "persistence_location /var/lib/mosquitto/", f"persistence_location {folder}/"
    )
    if os.geteuid() == 0:
        text += "\nuser root\n"
    conf = folder / "mosquitto.conf"
    conf.write_text(text)
    with (folder / "mosquitto.log").open("ab") as log:
        process = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=log)
    try:
        wait_until(lambda: _answers(port), 10, "mosquitto listening")
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@contextmanager
def scratch_database(server_url: str = SERVER_URL, prefix: str = "cw_bench_svc") -> Iterator[str]:
    """An empty database `prefix_<random>` on the server for one bench run, dropped after."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_named(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def scalar(url: str, query: str) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(query).fetchone()
    return row[0] if row else None


def stored_counts(url: str) -> dict[str, int]:
    """What a run stored: `messages` (distinct readings: site, device, seq), `values` (rows),
    `doubles` (rows beyond one per site, device, metric, seq) and `alerts_doubled` (alerts
    raised more than once for the same device, clause and start)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT (site, device, seq)), count(*),"
            " count(*) - count(DISTINCT (site, device, metric, seq)) FROM readings"
        ).fetchone()
        doubled = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM alerts"
            " GROUP BY site, device, clause_id, started_at HAVING count(*) > 1) d"
        ).fetchone()
    assert row is not None and doubled is not None
    messages, values, doubles = row
    return {
        "messages": messages,
        "values": values,
        "doubles": doubles,
        "alerts_doubled": doubled[0],
    }


# -- configuration --


def office_hours_zone() -> tuple[str, dt.date]:
    """An IANA fixed-offset zone in which it is about 10:00 now, and today's date there."""
    now = dt.datetime.now(dt.UTC)
    offset = (10 - now.hour + 12) % 24 - 12  # -12..+11
    zone = "Etc/UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"
    return zone, (now + dt.timedelta(hours=offset)).date()


def site_dict(site_id: str, rooms: int, probes: int = 0) -> dict[str, Any]:
    """A building of `rooms` rooms (offices, every 10th a meeting room), each with a sensor
    (temperature, humidity, co2) and an HVAC controller (hvac_mode, occupied, window_open);
    `probes` co2 sensors p0, p1, ... in a lab room of their own (the latency probes)."""
    zone, today = office_hours_zone()

    def mmdd(days: int) -> str:
        return (today + dt.timedelta(days=days)).strftime("%m-%d")

    floors = max(1, rooms // 40)
    spaces: list[dict[str, Any]] = [{"id": "b1", "type": "building", "area_m2": 50000}]
    spaces += [{"id": f"f{f}", "type": "floor", "parent": "b1"} for f in range(floors)]
    devices: list[dict[str, Any]] = []
    for r in range(rooms):
        kind = "meeting" if r % 10 == 0 else "office"
        spaces.append({"id": f"r{r}", "type": kind, "parent": f"f{r % floors}", "area_m2": 40})
        devices.append(
            {
                "id": f"s{r}",
                "space": f"r{r}",
                "metrics": {
                    "temperature": {"unit": "°C", "range": [-20, 60]},
                    "humidity": {"unit": "%", "range": [0, 100]},
                    "co2": {"unit": "ppm", "range": [300, 10000]},
                },
            }
        )
        devices.append(
            {
                "id": f"h{r}",
                "space": f"r{r}",
                "metrics": {
                    "hvac_mode": {
                        "unit": "state",
                        "states": {"off": 0, "cooling": 1, "heating": 2, "fan": 3},
                    },
                    "occupied": {"unit": "bool"},
                    "window_open": {"unit": "bool"},
                },
            }
        )
    if probes:
        spaces.append({"id": "probe-lab", "type": "lab", "parent": "b1", "area_m2": 40})
        devices += [
            {
                "id": f"p{i}",
                "space": "probe-lab",
                "metrics": {"co2": {"unit": "ppm", "range": [300, 10000]}},
            }
            for i in range(probes)
        ]
    return {
        "site": {
            "id": site_id,
            "name": f"bench {site_id}",
            "timezone": zone,
            "holidays": {"kind": "weekends", "extra_workdays": [today.isoformat()]},
            "seasons": {
                "cooling": {"from": mmdd(-60), "to": mmdd(60)},
                "heating": {"from": mmdd(120), "to": mmdd(180)},
            },
        },
        "spaces": spaces,
        "devices": devices,
    }


def write_config(
    folder: Path,
    sites: dict[str, int],
    extra_clauses: dict[str, Any] | None = None,
    probes: int = 0,
) -> Path:
    """sites/ (generated; the first site gets the probes) and clauses/ (the bundled set, plus
    `extra_clauses` as one file)."""
    (folder / "sites").mkdir(parents=True)
    for index, (site_id, rooms) in enumerate(sites.items()):
        model = site_dict(site_id, rooms, probes if index == 0 else 0)
        (folder / "sites" / f"{site_id}.yaml").write_text(
            yaml.safe_dump(model, allow_unicode=True, sort_keys=False)
        )
    shutil.copytree(CONFIG / "clauses", folder / "clauses")
    if extra_clauses is not None:
        (folder / "clauses" / "bench-extra.yaml").write_text(
            yaml.safe_dump(extra_clauses, allow_unicode=True, sort_keys=False)
        )
    return folder


# -- the service --


class ServiceProcess:
    """`clausewatch run` as a subprocess; `ready` once every worker logged that it runs."""

    def __init__(
        self,
        database_url: str,
        mqtt_url: str,
        config_dir: Path,
        *,
        workers: int = 1,
        lateness: float = 60.0,
        clock: str = "wall",
        http_port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.workers = workers
        self.http_port = http_port or free_port()
        environment = dict(os.environ)
        environment.update(
            CLAUSEWATCH_DATABASE_URL=database_url,
            CLAUSEWATCH_MQTT_URL=mqtt_url,
            CLAUSEWATCH_CONFIG_DIR=str(config_dir),
            CLAUSEWATCH_LATENESS_S=str(lateness),
            CLAUSEWATCH_HTTP_PORT=str(self.http_port),
            CLAUSEWATCH_MQTT_CLIENT_ID=f"bench-{uuid.uuid4().hex[:6]}",
        )
        environment.update(env or {})
        command = [
            PYTHON,
            "-m",
            "clausewatch",
            "run",
            "--workers",
            str(workers),
            "--clock",
            clock,
        ]
        self.process = subprocess.Popen(command, env=environment, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip())

    def wait_ready(self, timeout: float = 90) -> None:
        marker = "clausewatch running" if self.workers == 1 else "running: sites"
        wait_until(
            lambda: (
                sum(marker in line for line in self.lines) >= self.workers
                or self.process.poll() is not None
            ),
            timeout,
            "service start",
        )
        if self.process.poll() is not None:
            raise RuntimeError("service exited:\n" + "\n".join(self.lines[-30:]))

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of the service and its worker processes so far."""
        return cpu_seconds([self.process.pid, *_children(self.process.pid)])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def cpu_seconds(pids: Iterable[int]) -> float:
    """CPU time (user + system) of these processes so far (those gone count nothing)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(child) for child in task.read_text().split()]
    return found


# -- publisher and bare subscriber (own processes, so they never share the GIL) --

# The publisher speaks MQTT 5 over a plain socket, as the paho publisher it replaced did. With
# 3.1.1 (simpler: no properties) latency.py's publish → committed p50 was 0.8 ms higher at 1,000
# msg/s (5.9-6.2 against 5.1 ms, three paired runs; cause not found), so 5 keeps those figures
# comparable with the earlier ones.
PUBLISH_BATCH = 512  # messages per send() when not paced: about 60 KB
ACK_PATIENCE_S = 60.0  # no PUBACK for this long while waiting for one: the broker is stuck
_PACKET_IDS = [n.to_bytes(2, "big") for n in range(65536)]
# Packet id and an empty property list: what follows the topic in each PUBLISH.
_PUBLISH_IDS = [packet_id + b"\x00" for packet_id in _PACKET_IDS]
# The broker acknowledges QoS 1 messages in the order it received them (MQTT 5 §4.6), with these
# 4 bytes when the reason code is 0 ("success", the only one the bench expects), so the PUBACKs
# of messages n, n+1, ... are a slice of this (packet ids 1..65535, twice for the wrap).
_PUBACKS = b"".join(b"\x40\x02" + _PACKET_IDS[n] for n in range(1, 65536)) * 2


def _variable_byte_integer(value: int) -> bytes:
    """MQTT's length encoding: 7 bits a byte, least significant first, high bit = more."""
    out = bytearray()
    while True:
        value, digit = value >> 7, value & 0x7F
        out.append(digit | 0x80 if value else digit)
        if not value:
            return bytes(out)


# QoS 1 PUBLISH fixed headers by remaining length; the bench's packets are far below 16 KiB.
_PUBLISH_HEADERS = [b"\x32" + _variable_byte_integer(n) for n in range(16384)]


def _mqtt_string(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def _broker(url: str) -> tuple[str, int]:
    broker = MqttEndpoint.parse(url)
    if broker.tls or broker.username is not None:
        raise ValueError(f"{broker.redacted()}: the bench's clients speak plain MQTT, no login")
    return broker.host, broker.port


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise RuntimeError("the broker closed the connection")
        data += chunk
    return data


def _connect(url: str, client_id: str, protocol: int = 5) -> tuple[socket.socket, int]:
    """A clean session without keepalive (the publisher never idles long), MQTT 5 (`protocol`
    5) or 3.1.1 (4: NATS's MQTT listener has no 5), and the broker's Receive Maximum (3.1.1
    has none)."""
    sock = socket.create_connection(_broker(url))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    properties = b"\x00" if protocol == 5 else b""
    connect = bytes([protocol, 0x02, 0x00, 0x00]) + properties
    body = _mqtt_string("MQTT") + connect + _mqtt_string(client_id)
    sock.sendall(b"\x10" + _variable_byte_integer(len(body)) + body)
    head = _recv_exactly(sock, 2)
    if head[0] != 0x20 or head[1] & 0x80:  # a CONNACK is far below 128 bytes
        raise RuntimeError(f"expected a CONNACK, got {head.hex()}")
    connack = _recv_exactly(sock, head[1])
    if connack[1] != 0:
        raise RuntimeError(f"CONNACK reason code {connack[1]:#x}")
    if protocol != 5:
        return sock, 65535
    received = Properties(PacketTypes.CONNACK)
    received.unpack(connack[2:])
    return sock, getattr(received, "ReceiveMaximum", 65535)


def publish_stream(url: str, plan: dict[str, Any], result: Any) -> None:
    """Publishes `plan["messages"]` readings round-robin over the sensors of the plan's sites
    (HVAC controllers every tenth round), QoS 1, at most `plan["inflight"]` unacknowledged, at
    `plan["rate"]` messages/s when given (each message sent when due), else as fast as the window
    allows (PUBLISH_BATCH encoded messages per send()). `plan["probe_every"]`: every n-th message
    is a probe (a co2 violation on a fresh probe device), sent at once and last in its send(),
    whose publish time is recorded. `plan["protocol"]`: 5 (MQTT 5, the default) or 4 (3.1.1);
    `plan["first_round"]`: the seq of the first round (a later stream of the same devices goes
    on from there, so no reading repeats an earlier one's key).
    Puts (first publish time, last PUBACK time, probe times) on `result`."""
    total = plan["messages"]
    protocol = plan.get("protocol", 5)
    sock, receive_maximum = _connect(url, f"bench-pub-{uuid.uuid4().hex[:6]}", protocol)
    # After the packet id: MQTT 5's empty property list, nothing in 3.1.1.
    publish_ids = _PUBLISH_IDS if protocol == 5 else _PACKET_IDS
    first_round = plan.get("first_round", 0)
    inflight = min(plan["inflight"], receive_maximum)
    if inflight >= 65535:
        raise ValueError("inflight must leave packet ids unique among unacknowledged messages")
    devices = [(site, r) for site, rooms in plan["sites"].items() for r in range(rooms)]
    sensor_topics = [_mqtt_string(f"{PREFIX}/{site}/s{r}/telemetry") for site, r in devices]
    hvac_topics = [_mqtt_string(f"{PREFIX}/{site}/h{r}/telemetry") for site, r in devices]
    rate = plan.get("rate")
    probe_every = plan.get("probe_every") or 0
    probes: list[tuple[str, float]] = []
    sent = acked = 0
    unread = b""  # the start of a PUBACK cut by the previous read

    def take_acks() -> None:
        nonlocal acked, unread
        try:
            data = unread + sock.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        if len(data) == len(unread):
            raise RuntimeError("the broker closed the connection")
        whole = len(data) - len(data) % 4
        at = acked % 65535 * 4
        if data[:whole] != _PUBACKS[at : at + whole]:
            # A reason code (0x10: nobody subscribes to the topic) or an id out of order.
            raise RuntimeError(f"unexpected PUBACKs from message {acked}: {data[:16].hex()}…")
        acked += whole // 4
        unread = data[whole:]

    started = time.time()
    while acked < total:
        due = min(total, int((time.time() - started) * rate) + 1 if rate else sent + PUBLISH_BATCH)
        end = min(due, acked + inflight)
        if sent < end:
            parts: list[bytes] = []
            probe = ""
            for i in range(sent, end):
                device = i % len(devices)
                round_ = first_round + i // len(devices)
                now_ms = int(time.time() * 1000)
                if probe_every and i % probe_every == probe_every // 2:  # never the last message
                    # A probe: the next probe device's first reading, over the zero-duration limit.
                    probe = f"p{len(probes)}"
                    body = orjson.dumps({"ts": now_ms, "seq": 1, "metrics": {"co2": 4000.0}})
                    topic = _mqtt_string(f"{PREFIX}/{plan['probe_site']}/{probe}/telemetry")
                elif round_ % 10 == 0 and i % 2:
                    body = orjson.dumps(
                        {
                            "ts": now_ms,
                            "seq": round_,
                            "metrics": {"hvac_mode": 1, "occupied": 1, "window_open": 0},
                        }
                    )
                    topic = hvac_topics[device]
                else:
                    cold = devices[device][1] % 10 == 3
                    body = orjson.dumps(
                        {
                            "ts": now_ms,
                            "seq": round_,
                            "metrics": {
                                "temperature": 24.8 if cold else 26.4 + (i % 7) * 0.1,
                                "humidity": 55.0 + (i % 5),
                                "co2": 600.0 + (i % 300),
                            },
                        }
                    )
                    topic = sensor_topics[device]
                parts += (
                    _PUBLISH_HEADERS[len(topic) + len(publish_ids[0]) + len(body)],
                    topic,
                    publish_ids[i % 65535 + 1],
                    body,
                )
                sent = i + 1
                if probe:
                    probes.append((probe, time.time()))
                    break
            sock.sendall(b"".join(parts))
            take_acks()
        elif rate and sent < total and sent < acked + inflight:
            # Paced, the next message not yet due: its acks are read after each send.
            time.sleep(max(0.0, started + sent / rate - time.time()))
        elif select.select([sock], [], [], ACK_PATIENCE_S)[0]:
            take_acks()
        else:
            raise RuntimeError(f"no PUBACK for {ACK_PATIENCE_S} s ({acked} of {sent} acknowledged)")
    last_ack = time.time()
    sock.sendall(b"\xe0\x00")  # DISCONNECT
    sock.close()
    result.put((started, last_ack, probes))


def last_readings(plan: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(site, device, seq) of the last message `publish_stream` sends to each site of `plan`
    (which has no probes): a cheap sign that a site's stream is committed, for a service that
    commits a site's messages in the order it took them (a count of every row, polled, cost
    PostgreSQL up to half a core of the two the run shares)."""
    if plan.get("probe_every"):
        raise ValueError("a plan with probes has no fixed last reading")
    devices = [(site, r) for site, rooms in plan["sites"].items() for r in range(rooms)]
    last: dict[str, tuple[str, str, int]] = {}
    for i in range(plan["messages"] - 1, -1, -1):
        site, r = devices[i % len(devices)]
        if site not in last:
            round_ = plan.get("first_round", 0) + i // len(devices)
            hvac = round_ % 10 == 0 and i % 2
            last[site] = (site, f"h{r}" if hvac else f"s{r}", round_)
        if len(last) == len(plan["sites"]):
            break
    return list(last.values())


def count_stream(url: str, topic_filter: str, expected: int, ready: Any, result: Any) -> None:
    """The ceiling: a paho subscriber (QoS 1, MQTT 5, Receive Maximum 65535, as the service's)
    that only counts. Puts the time the `expected`-th message arrived on `result`."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-sub-{uuid.uuid4().hex[:6]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    seen = [0]
    done = threading.Event()

    def on_message(*_: object) -> None:
        seen[0] += 1
        if seen[0] >= expected:
            done.set()

    client.on_message = on_message
    client.on_subscribe = lambda *_: ready.set()
    properties = Properties(PacketTypes.CONNECT)
    properties.ReceiveMaximum = 65535
    client.connect(*_broker(url), properties=properties)
    client.subscribe(topic_filter, qos=1)
    client.loop_start()
    done.wait(300)
    result.put(time.time())
    client.disconnect()
    client.loop_stop()


def run_publisher(url: str, plan: dict[str, Any]) -> tuple[mp.Process, Any]:
    ctx = mp.get_context("spawn")
    result = ctx.Queue()
    process = ctx.Process(target=publish_stream, args=(url, plan, result), daemon=True)
    process.start()
    return process, result


def ceiling(url: str, plan: dict[str, Any]) -> tuple[float, float]:
    """(messages/s, publisher messages/s) of the bare subscriber with this publisher."""
    ctx = mp.get_context("spawn")
    ready, got = ctx.Event(), ctx.Queue()
    counter = ctx.Process(
        target=count_stream, args=(url, f"{PREFIX}/#", plan["messages"], ready, got), daemon=True
    )
    counter.start()
    if not ready.wait(30):
        raise RuntimeError("the bare subscriber did not subscribe")
    publisher, published = run_publisher(url, plan)
    started, last_ack, _ = published.get(timeout=300)
    arrived = got.get(timeout=300)
    publisher.join(10)
    counter.join(10)
    return plan["messages"] / (arrived - started), plan["messages"] / (last_ack - started)


# ---- references a user would measure the service against ----

READY_TOPIC = "bench/ready"  # retained: a reference has subscribed once it has this message
DONE_TOPIC = "bench/done"  # Node-RED's flow publishes the epoch ms of its N-th message here
UP_TOPIC = "bench/up"  # ... and here once it holds the retained ready message
NODE_RED_VERSION = "4.1.8"  # pinned: a reference that moves under the figures misleads
NODE_RED_DIR = ROOT / "bench" / ".node-red"  # npm install target (gitignored)


def _publish_once(url: str, topic: str, payload: bytes, retain: bool) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-ctl-{uuid.uuid4().hex[:6]}")
    client.connect(*_broker(url))
    client.loop_start()
    client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def mosquitto_sub_rate(url: str, plan: dict[str, Any], topics: str = f"{PREFIX}/#") -> float:
    """Messages/s of the C client (`mosquitto_sub`, QoS 1, MQTT 5 or the plan's protocol,
    payloads to a pipe that is read and dropped) for the plan's messages on `topics`, first
    publish → the process exits after the last one (`-C`). It subscribes to the retained ready
    message too, so its first line says it is subscribed before the publisher starts."""
    _publish_once(url, READY_TOPIC, b"ready", retain=True)
    host, port = _broker(url)
    version = "mqttv5" if plan.get("protocol", 5) == 5 else "mqttv311"
    command = [
        "mosquitto_sub", "-h", host, "-p", str(port), "-V", version, "-q", "1",
        "-t", topics, "-t", READY_TOPIC, "-C", str(plan["messages"] + 1),
        "-i", f"bench-c-{uuid.uuid4().hex[:6]}",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    try:
        if process.stdout.readline().strip() != b"ready":
            raise RuntimeError("mosquitto_sub did not subscribe")
        drain = threading.Thread(target=_discard, args=(process.stdout,), daemon=True)
        drain.start()
        publisher, published = run_publisher(url, plan)
        started, _, _ = published.get(timeout=300)
        process.wait(300)
        finished = time.time()
        publisher.join(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    return plan["messages"] / (finished - started)


def _discard(stream: Any) -> None:
    while stream.read(1 << 16):
        pass


def install_node_red() -> Path:
    """Node-RED from the npm registry into bench/.node-red (once); its start script."""
    script = NODE_RED_DIR / "node_modules" / "node-red" / "red.js"
    if not script.exists():
        NODE_RED_DIR.mkdir(parents=True, exist_ok=True)
        print(f"installing node-red@{NODE_RED_VERSION} from the npm registry ...", flush=True)
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--omit=dev", "--prefix",
             str(NODE_RED_DIR), f"node-red@{NODE_RED_VERSION}"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    return script


def node_red_flow(url: str, expected: int) -> list[dict[str, Any]]:
    """mqtt in (QoS 1, JSON parsed) → a threshold function over the three metrics (what a user
    would build to judge 'not below 26 °C while cooling', 'co2 ≤ 1000 ppm'), counting; at the
    N-th reading it publishes the time on bench/done. Nothing is stored."""
    host, port = _broker(url)
    threshold = f"""
if (msg.topic === "{READY_TOPIC}") {{ return [null, {{topic: "{UP_TOPIC}", payload: "up"}}]; }}
const s = context.get("s");
const m = msg.payload.metrics || {{}};
if (m.temperature !== undefined && m.temperature < 26) s.violations += 1;
if (m.co2 !== undefined && m.co2 > 1000) s.violations += 1;
if (m.humidity !== undefined && (m.humidity < 30 || m.humidity > 70)) s.violations += 1;
s.seen += 1;
if (s.seen === {expected}) {{
  return [null, {{topic: "{DONE_TOPIC}", payload: String(Date.now())}}];
}}
return null;
"""
    return [
        {"id": "tab", "type": "tab", "label": "bench"},
        {"id": "broker", "type": "mqtt-broker", "broker": host, "port": str(port),
         "clientid": f"bench-nr-{uuid.uuid4().hex[:6]}", "protocolVersion": "5",
         "keepalive": "60", "cleansession": True, "autoConnect": True},
        {"id": "in", "type": "mqtt in", "z": "tab", "topic": f"{PREFIX}/#", "qos": "1",
         "datatype": "json", "broker": "broker", "nl": False, "rap": False, "inputs": 0,
         "wires": [["threshold"]]},
        {"id": "ready", "type": "mqtt in", "z": "tab", "topic": READY_TOPIC, "qos": "1",
         "datatype": "utf8", "broker": "broker", "nl": False, "rap": False, "inputs": 0,
         "wires": [["threshold"]]},
        # The state is one object in the node's memory context, fetched once a message and
        # changed in place: the cheapest a function node keeps state.
        {"id": "threshold", "type": "function", "z": "tab", "func": threshold, "outputs": 2,
         "initialize": 'context.set("s", {seen: 0, violations: 0});',
         "wires": [[], ["out"]]},
        {"id": "out", "type": "mqtt out", "z": "tab", "topic": "", "qos": "1",
         "retain": "false", "broker": "broker", "wires": []},
    ]  # fmt: skip


def node_red_rate(url: str, plan: dict[str, Any], folder: Path) -> float:
    """Messages/s of Node-RED's threshold flow for the plan's messages, first publish → the
    flow's N-th message (the time it stamps on bench/done)."""
    script = install_node_red()
    user_dir = folder / "node-red"
    user_dir.mkdir(exist_ok=True)
    (user_dir / "flows.json").write_bytes(orjson.dumps(node_red_flow(url, plan["messages"])))
    port = free_port()
    (user_dir / "settings.js").write_text(
        f"module.exports = {{uiPort: {port}, uiHost: '127.0.0.1', flowFile: 'flows.json',"
        " logging: {console: {level: 'warn'}}, editorTheme: {tours: false}};\n"
    )
    ctx = mp.get_context("spawn")
    watching, up, done = ctx.Event(), ctx.Event(), ctx.Queue()
    watcher = ctx.Process(target=_watch_node_red, args=(url, watching, up, done), daemon=True)
    watcher.start()
    if not watching.wait(30):
        raise RuntimeError("the bench/done watcher did not subscribe")
    _publish_once(url, READY_TOPIC, b"ready", retain=True)
    with (folder / "node-red.log").open("ab") as log:
        process = subprocess.Popen(
            ["node", str(script), "--userDir", str(user_dir), "--settings",
             str(user_dir / "settings.js")],
            stdout=log, stderr=log,
        )  # fmt: skip
    try:
        if not up.wait(120):
            raise RuntimeError(f"node-red's flow did not subscribe (see {folder}/node-red.log)")
        publisher, published = run_publisher(url, plan)
        started, _, _ = published.get(timeout=300)
        finished = done.get(timeout=300)
        publisher.join(10)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)
        watcher.kill()
    return plan["messages"] / (finished - started)


def _watch_node_red(url: str, watching: Any, up: Any, done: Any) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-w-{uuid.uuid4().hex[:6]}")

    def on_message(_client: object, _userdata: object, message: Any) -> None:
        if message.topic == UP_TOPIC:
            up.set()
        else:
            done.put(int(message.payload) / 1000)

    client.on_message = on_message
    client.on_subscribe = lambda *_: watching.set()
    client.connect(*_broker(url))
    client.subscribe([(UP_TOPIC, 1), (DONE_TOPIC, 1)])
    client.loop_forever()
