"""Device identity on NATS (docs/cluster.md): `clausewatch broker files` writes nats-auth.conf
beside Mosquitto's files, the 3 servers include it, the worker logs in as the service, and a
device may publish its own topics only: NATS drops a publish into another device's or another
site's topic (it still acknowledges it: the PUBACK of NATS 2.15 says nothing) and logs a
publish violation, so nothing of it is stored; a wrong password gets no connection, nor does the
nodes' login on the MQTT listener."""

from __future__ import annotations

import csv
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from clausewatch.cli import main
from ingest.nats import PARTITIONED, partition
from tests.cluster.conftest import PARTITIONS, PREFIX
from tests.cluster.harness import Worker, query, write_config
from tests.cluster.natscluster import NatsCluster
from tests.cluster.test_cluster_node import Device
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SITES = ["site-0", "site-1"]


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[NatsCluster, dict[str, str], Path]]:
    config = write_config(tmp_path / "config", SITES, 2)
    out = tmp_path / "broker"
    args = ["broker", "files", "--config-dir", str(config), "--out", str(out)]
    assert main([*args, "--prefix", PREFIX, "--partitions", str(PARTITIONS)]) == 0
    with (out / "credentials.csv").open(newline="") as file:
        passwords = {row["username"]: row["password"] for row in csv.DictReader(file)}
    authorization = (out / "nats-auth.conf").read_text()
    cluster = NatsCluster(
        tmp_path / "nats",
        PREFIX,
        PARTITIONS,
        authorization=authorization,
        login=("clausewatch", passwords["clausewatch"]),
        mqtt_login=("site-1/d1", passwords["site-1/d1"]),
    )
    try:
        cluster.start()
        yield cluster, passwords, config
    finally:
        cluster.stop()


def refused(port: int, username: str, password: str) -> bool:
    """Whether the server answers this login's CONNECT with a refusal."""
    answered = threading.Event()
    codes: list[bool] = []
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv311)
    client.username_pw_set(username, password)

    def on_connect(_c: object, _u: object, _f: object, code: paho.ReasonCode, *_r: object) -> None:
        codes.append(code.is_failure)
        answered.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        answered.wait(10)
    finally:
        client.loop_stop()
    return codes == [True]


def test_a_device_publishes_its_own_topics_only(
    secured: tuple[NatsCluster, dict[str, str], Path], fresh_database_url: str, tmp_path: Path
) -> None:
    cluster, passwords, config = secured
    env = dict(os.environ)
    env.update(
        CLAUSEWATCH_DATABASE_URL=fresh_database_url,
        CLAUSEWATCH_BROKER_URL=cluster.broker_url,  # the service's login
        CLAUSEWATCH_CONFIG_DIR=str(config),
        CLAUSEWATCH_CLUSTER_PARTITIONS=str(PARTITIONS),
        CLAUSEWATCH_CLUSTER_LEASE_S="2",
        CLAUSEWATCH_FLUSH_INTERVAL_S="0.1",
        CLAUSEWATCH_TOPIC_PREFIX=PREFIX,
    )
    worker = Worker(env, tmp_path / "worker.log")
    worker.start()
    try:
        worker.wait_running()
        port = cluster.mqtt_ports[1]
        assert refused(port, "site-0/d0", "not its password")
        # The nodes' login is for NATS connections only (allowed_connection_types).
        assert refused(port, "clausewatch", passwords["clausewatch"])
        device = Device(port, "site-0/d0", passwords["site-0/d0"])
        body = orjson.dumps({"seq": 1, "metrics": {"co2": 500.0}})
        try:
            # Another device of its site, another site: acknowledged, and dropped by NATS.
            for topic in (f"{PREFIX}/site-0/d1/telemetry", f"{PREFIX}/site-1/d0/telemetry"):
                assert device.publish(topic, body) == "acked"
            assert device.publish(f"{PREFIX}/site-0/d0/telemetry", body) == "acked"
            assert device.publish(f"{PREFIX}/site-0/d0/telemetry/extra", body) == "acked"
        finally:
            device.close()
        url = fresh_database_url
        wait_for(lambda: query(url, "SELECT site, device FROM readings"), 30, "its reading")
        wait_for(lambda: query(url, "SELECT topic FROM dead_letters"), 30, "its dead letter")
        # Both came after the refused ones: had those been stored, they would be there too.
        assert query(url, "SELECT site, device FROM readings") == [("site-0", "d0")]
        assert query(url, "SELECT topic FROM dead_letters") == [
            (f"{PREFIX}/site-0/d0/telemetry/extra",)
        ]
    finally:
        worker.stop()
    node = cluster.nodes[1]
    log = (node.folder / "nats.log").read_text()
    for site, device_id in (("site-0", "d1"), ("site-1", "d0")):
        number = partition(PARTITIONS, site)
        subject = f"{PARTITIONED}.{PREFIX}.{number}.{site}.{device_id}.telemetry"
        assert f'Publish Violation - Subject "{subject}"' in log, subject
