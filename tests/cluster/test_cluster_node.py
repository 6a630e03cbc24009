"""A cluster node is a whole service (issue 23): its API streams alerts whichever worker
committed them, the periodic jobs run on the one node holding their lease and move on when it
dies, clause revisions published while the workers run change their judgements (in partitions
owned then and taken later), and whatever a device gets NATS to accept under the prefix that is
not a known site's topic ends up a dead letter. Real nats-server (3 nodes), real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import signal
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from api.tokens import create_token
from api.users import create_user
from clausewatch.cli import main
from ingest.nats import partition
from store.cluster import jobs_runner
from tests.api.conftest import read_events
from tests.cluster.conftest import PARTITIONS, PREFIX
from tests.cluster.harness import Worker, node_env, query, write_config
from tests.cluster.natscluster import NatsCluster
from tests.support import auth, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SITES = [f"site-{i}" for i in range(8)]
LEASE_S = 2.0
ZONE = ZoneInfo("Asia/Shanghai")


@dataclass
class Nodes:
    nats: NatsCluster
    database_url: str
    folder: Path
    workers: list[Worker] = field(default_factory=list)

    def __post_init__(self) -> None:
        config = write_config(self.folder / "config", SITES, 2)
        self.env = node_env(
            self.database_url, self.nats.broker_url, config, PARTITIONS, PREFIX, LEASE_S
        )

    def start(self, count: int, args: Sequence[str] = ()) -> list[Worker]:
        started = []
        for _ in range(count):
            worker = Worker(self.env, self.folder / f"worker-{len(self.workers)}.log", args)
            worker.start()
            self.workers.append(worker)
            started.append(worker)
        for worker in started:
            worker.wait_running()
        return started

    def owner_of(self, site: str) -> Worker:
        number = partition(PARTITIONS, site)
        sql = "SELECT owner FROM cluster_partitions WHERE partition = %s"
        [(owner,)] = query(self.database_url, sql, (number,))
        return next(w for w in self.workers if w.alive and f"-{w.pid}-" in (owner or ""))

    def wait_shared(self, workers: Sequence[Worker]) -> None:
        """Every partition owned by one of `workers`, each holding some."""

        def shared() -> bool:
            rows = query(self.database_url, "SELECT owner FROM cluster_partitions")
            owners = [owner for (owner,) in rows]
            if len(owners) != PARTITIONS or None in owners:
                return False
            pids = [w.pid for w in workers]
            held = {pid: sum(f"-{pid}-" in o for o in owners) for pid in pids}
            return sum(held.values()) == PARTITIONS and all(held.values())

        wait_for(shared, 60, f"{len(workers)} workers sharing the partitions")

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()


@pytest.fixture
def nodes(nats_cluster: NatsCluster, fresh_database_url: str, tmp_path: Path) -> Iterator[Nodes]:
    run = Nodes(nats_cluster, fresh_database_url, tmp_path)
    try:
        yield run
    finally:
        run.close()


class Device:
    """An MQTT 3.1.1 client of one NATS node, publishing QoS 1 and telling what came back; a
    new connection after the server closed one."""

    def __init__(self, port: int, username: str | None = None, password: str = "") -> None:
        self.port = port
        self.login = (username, password)
        self.client = self._connect()

    def _connect(self) -> paho.Client:
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"dev-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=False,
        )
        username, password = self.login
        if username is not None:
            client.username_pw_set(username, password)
        self.acked: set[int] = set()
        self.disconnected = False
        client.on_publish = lambda _c, _u, mid, *_r: self.acked.add(mid)
        client.on_disconnect = self._on_disconnect
        client.connect("127.0.0.1", self.port, keepalive=10)
        client.loop_start()
        wait_for(client.is_connected, 10, "an MQTT connection")
        return client

    def _on_disconnect(self, *_args: Any) -> None:
        self.disconnected = True

    def publish(self, topic: str, payload: bytes, wait_s: float = 5.0) -> str:
        """ "acked", or "disconnected" (no PUBACK: the server closed the connection)."""
        if self.disconnected:
            self.client.loop_stop()
            self.client = self._connect()
        mid = self.client.publish(topic, payload, qos=1).mid
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if mid in self.acked:
                return "acked"
            if self.disconnected:
                return "disconnected"
            time.sleep(0.02)
        return "no answer"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def reading(seq: int, co2: float, at: float | None = None) -> bytes:
    ts = int((time.time() if at is None else at) * 1000)
    return orjson.dumps({"ts": ts, "seq": seq, "metrics": {"co2": co2}})


def test_any_node_streams_an_alert_committed_by_another_worker(nodes: Nodes) -> None:
    first, second = nodes.start(2)
    nodes.wait_shared([first, second])
    site = SITES[0]
    judge = nodes.owner_of(site)
    viewer = second if judge is first else first
    with psycopg.connect(nodes.database_url) as conn:
        token, _ = create_token(conn, "viewer", (site,), "cluster stream")
    device = Device(nodes.nats.mqtt_ports[1])
    try:
        url = f"{viewer.api_url}/api/v1/stream"
        with httpx.stream("GET", url, headers=auth(token), timeout=httpx.Timeout(20.0)) as answer:
            assert answer.status_code == 200
            lines = answer.iter_lines()
            read_events(lines, 1, kinds=("hello",))
            # Above the 1000 ppm limit for longer than the clause's `for` (4 s).
            start = time.time() - 10
            for seq in range(1, 8):
                topic = f"{PREFIX}/{site}/d0/telemetry"
                assert device.publish(topic, reading(seq, 2500.0, start + seq)) == "acked"
            (event,) = read_events(lines, 1, deadline_s=30)
    finally:
        device.close()
    body = orjson.loads(event.data)
    assert (body["alert"]["site"], body["action"]) == (site, "raised")
    # Committed by the other worker: the stream's node holds none of this site's partition.
    assert judge is not viewer and nodes.owner_of(site) is judge


def jobs_runner_among(url: str, workers: list[Worker]) -> Worker | None:
    """The worker holding the periodic jobs' lease now, if one of `workers` does."""
    with psycopg.connect(url) as conn:
        name = jobs_runner(conn)
    return next((w for w in workers if name and f"-{w.pid}-" in name), None)


def test_periodic_jobs_run_on_one_node_and_move_when_it_dies(nodes: Nodes) -> None:
    url = nodes.database_url
    expired = "INSERT INTO dead_letters (received_at, topic, payload, reason, detail)" + (
        " VALUES (now() - interval '60 days', 'cw/old', '', 'bad_topic', 'expired')"
    )
    with psycopg.connect(url) as conn:
        conn.execute(expired)
    workers = nodes.start(2)

    def runner() -> Worker | None:
        return jobs_runner_among(url, workers)

    first = wait_for(runner, 30, "a node running the periodic jobs")
    # It ran them (retention deleted the expired dead letter); the other runs none.
    wait_for(lambda: query(url, "SELECT count(*) FROM dead_letters")[0][0] == 0, 30, "retention")
    other = next(w for w in workers if w is not first)
    assert "this node runs the periodic jobs" in first.text()
    assert "this node runs the periodic jobs" not in other.text()

    with psycopg.connect(url) as conn:
        conn.execute(expired)
    killed_at = time.monotonic()
    first.kill()
    assert wait_for(runner, 30, "the periodic jobs taken over") is other
    wait_for(
        lambda: query(url, "SELECT count(*) FROM dead_letters")[0][0] == 0,
        30,
        "retention run by the new runner",
    )
    took = time.monotonic() - killed_at
    print(f"periodic jobs taken over and retention run {took:.2f} s after kill -9")
    assert "this node runs the periodic jobs" in other.text()
    assert took < 10


def test_a_stalled_jobs_runner_loses_the_lease_and_stops_when_it_wakes(
    nodes: Nodes,
) -> None:
    url = nodes.database_url
    workers = nodes.start(2)

    def runner() -> Worker | None:
        return jobs_runner_among(url, workers)

    first = wait_for(runner, 30, "a node running the periodic jobs")
    other = next(w for w in workers if w is not first)
    first.signal(signal.SIGSTOP)
    try:
        # PostgreSQL closes the stalled node's idle lease connection after the lease (2 s).
        wait_for(lambda: runner() is other, 30, "the periodic jobs taken over")
        nodes.wait_shared([other])  # its partitions' lease connection is gone too
    finally:
        first.signal(signal.SIGCONT)
    # Awake, it finds its connections gone: its partitions' lease too, so it stops (exit 3);
    # the jobs stay with the other node.
    wait_for(lambda: not first.alive, 60, "the stalled node stopping")
    assert first.process is not None and first.process.returncode == 3
    assert runner() is other
    assert "this node runs the periodic jobs" in other.text()


def test_a_revision_published_while_workers_run_changes_their_judgements(
    nodes: Nodes, capsys: pytest.CaptureFixture[str]
) -> None:
    nodes.env["CLAUSEWATCH_MAX_FUTURE_SKEW_S"] = str(3 * 86400)
    nodes.env["CLAUSEWATCH_LATENESS_S"] = "0"
    first, second = nodes.start(2, ("--clock", "data"))
    nodes.wait_shared([first, second])
    url = nodes.database_url
    with psycopg.connect(url) as conn:
        create_user(conn, "zhang", "admin", "correct horse battery", display_name="张工")
        create_user(conn, "li", "admin", "correct horse battery", display_name="李处长")
        conn.commit()
    effective = dt.datetime.now(ZONE).date() + dt.timedelta(days=1)
    midnight = dt.datetime.combine(effective, dt.time(), ZONE)
    for args in (
        ["clause", "propose", "--clause", "co2.max", "--set", "params.limit.default=800",
         "--reason", "800 ppm from tomorrow", "--backtest-days", "1", "--user", "zhang"],
    ):  # fmt: skip
        assert main([*args, "--database-url", url]) == 0
    revision = capsys.readouterr().out.split()[0].lstrip("#")
    assert main(["clause", "approve", revision, "--user", "li", "--database-url", url]) == 0
    publish = ["clause", "publish", revision, "--effective-from", effective.isoformat()]
    assert main([*publish, "--user", "li", "--database-url", url]) == 0
    for worker in (first, second):
        wait_for(
            lambda w=worker: "configuration changed: the clause set" in w.text(),
            30,
            "each worker handed the revision",
        )
    # The partitions of one worker are taken later by the other, with the revised clause.
    second.kill()
    nodes.wait_shared([first])

    device = Device(nodes.nats.mqtt_ports[0])
    try:
        # 900 ppm: within 1000 before the effective day, above 800 from it on.
        for site in SITES:
            for seq, minute in enumerate(range(-30, 30, 5), start=1):
                at = (midnight + dt.timedelta(minutes=minute)).timestamp()
                assert device.publish(f"{PREFIX}/{site}/d1/telemetry", reading(seq, 900.0, at))
    finally:
        device.close()
    alerts = wait_for(
        lambda: (
            found
            if len(found := query(url, "SELECT site, clause_version, started_at FROM alerts"))
            == len(SITES)
            else None
        ),
        60,
        "an alert per site",
    )
    assert sorted(alerts) == [(site, 2, midnight) for site in SITES]


# What NATS 2.15 refuses from an MQTT client: whitespace in a topic (no PUBACK, the connection
# closed: "character not supported for MQTT topics").
REFUSED = [f"{PREFIX}/site 0/d0/telemetry", f"{PREFIX}/site-0/d0/tele\tmetry"]
# What it accepts under the prefix that is no known site's topic: dead letters, as in the
# single-node mode (ingest/topics.py, ingest/decode.py).
DEAD = {
    f"{PREFIX}": "bad_topic",
    f"{PREFIX}/site-0": "bad_topic",
    f"{PREFIX}/site-0/d0": "bad_topic",
    f"{PREFIX}/site-0/d0/telemetry/extra": "bad_topic",
    f"{PREFIX}/3/site-0/d0/telemetry": "bad_topic",  # the shape of a partitioned subject
    f"{PREFIX}/site-0/d0/sideways": "bad_topic",
    f"{PREFIX}/site-0/d0/": "bad_topic",  # an empty level: NATS's token `/`
    f"{PREFIX}/site-0/d0/telemetry/": "bad_topic",
    f"{PREFIX}/site-0/d*/telemetry": "bad_id",  # NATS's wildcards, inside a level
    f"{PREFIX}/site-0/d>/telemetry": "bad_id",
    f"{PREFIX}/site.0/d0/telemetry": "bad_id",
    f"{PREFIX}//d0/telemetry": "bad_id",
    f"{PREFIX}/Site-0/d0/telemetry": "bad_id",
    f"{PREFIX}/nowhere/d0/telemetry": "unknown_site",
    f"{PREFIX}/site-1/d9/telemetry": "unknown_device",
}


def test_every_malformed_or_unknown_topic_nats_accepts_is_a_dead_letter(nodes: Nodes) -> None:
    # Two workers: the dead letters do not depend on which one holds what.
    first, second = nodes.start(2)
    nodes.wait_shared([first, second])
    device = Device(nodes.nats.mqtt_ports[2])
    try:
        for topic in REFUSED:
            assert device.publish(topic, reading(1, 500.0)) == "disconnected", topic
        for topic in DEAD:
            assert device.publish(topic, reading(1, 500.0)) == "acked", topic
    finally:
        device.close()
    url = nodes.database_url
    wait_for(
        lambda: query(url, "SELECT count(*) FROM dead_letters")[0][0] >= len(DEAD),
        30,
        f"{len(DEAD)} dead letters",
    )
    stored = dict(query(url, "SELECT topic, reason FROM dead_letters"))
    assert stored == DEAD
    assert query(url, "SELECT count(*) FROM readings") == [(0,)]
