"""The pinned nats-server as the cluster mode uses it: 3 nodes, the MQTT streams replicated on
all of them, and the servers' subject mapping putting each site in the partition
`ingest.nats.partition` computes (the workers filter their consumers by it)."""

from __future__ import annotations

import asyncio
import subprocess

import nats
import paho.mqtt.client as paho
import pytest
from nats.js.api import AckPolicy, ConsumerConfig
from paho.mqtt.enums import CallbackAPIVersion

from ingest.mqtt import IngressQueue
from ingest.nats import PARTITIONED, STORED_PREFIX, STREAM, NatsLink, partition, topic_of
from ingest.nats_auth import publish_subjects
from tests.cluster.conftest import PARTITIONS, PREFIX
from tests.cluster.natscluster import NatsCluster, nats_server_binary

pytestmark = pytest.mark.integration


def test_the_pinned_server_is_2_11_or_newer() -> None:
    """Debian's 2.9 grows its MQTT stream without bound (issue 23): never run on it."""
    version = subprocess.run(
        [nats_server_binary(), "--version"], capture_output=True, text=True, check=True
    ).stdout
    major, minor = (int(part) for part in version.split(": v")[1].split(".")[:2])
    assert (major, minor) >= (2, 11), version


def test_partition_is_the_fnv1a_hash_nats_uses() -> None:
    # FNV-1a 32's published test vectors; NATS takes the hash modulo P.
    assert partition(2**32, "a") == 0xE40C292C
    assert partition(2**32, "foobar") == 0xBF9CF968
    assert [partition(8, s) for s in ("site-a", "site-b")] == [0, 1]
    assert all(0 <= partition(64, f"s{i}") < 64 for i in range(1000))
    assert len({partition(8, f"s{i}") for i in range(100)}) == 8


def test_three_nodes_replicate_the_mqtt_stream_and_map_sites_to_partitions(
    nats_cluster: NatsCluster,
) -> None:
    info = nats_cluster.stream_info()
    assert info.config.num_replicas == 3
    assert info.cluster.leader in {node.name for node in nats_cluster.nodes}
    assert len(info.cluster.replicas) == 2

    sites = [f"site-{i}" for i in range(20)]

    async def read_back() -> list[str]:
        nc = await nats.connect(nats_cluster.nodes[1].url)
        js = nc.jetstream()
        # $MQTT_msgs keeps messages by interest: the consumer must exist before the publishes.
        await js.add_consumer(
            STREAM,
            ConsumerConfig(
                durable_name="probe",
                filter_subject=f"{STORED_PREFIX}{PARTITIONED}.{PREFIX}.>",
                ack_policy=AckPolicy.ALL,
            ),
        )
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="probe-gw")
        client.connect("127.0.0.1", nats_cluster.nodes[2].mqtt_port)
        client.loop_start()
        for site in sites:
            client.publish(f"{PREFIX}/{site}/d1/telemetry", b"{}", qos=1).wait_for_publish(10)
        client.disconnect()
        client.loop_stop()
        subscription = await js.pull_subscribe_bind(durable="probe", stream=STREAM)
        messages = await subscription.fetch(len(sites), timeout=10)
        await nc.close()
        return [message.subject for message in messages]

    subjects = asyncio.run(read_back())
    assert len(subjects) == len(sites)
    for subject in subjects:
        mapped, prefix, number, site, device, kind = subject[len(STORED_PREFIX) :].split(".")
        assert (mapped, prefix, device, kind) == (PARTITIONED, PREFIX, "d1", "telemetry")
        assert int(number) == partition(PARTITIONS, site), subject
        assert topic_of(subject) == f"{PREFIX}/{site}/d1/telemetry"


def test_topic_of_undoes_the_mapping_and_natss_topic_conversion() -> None:
    stored = f"{STORED_PREFIX}{PARTITIONED}.{PREFIX}.3"
    assert topic_of(f"{stored}.site-a.d1.telemetry") == f"{PREFIX}/site-a/d1/telemetry"
    assert topic_of(f"{stored}.a//b.d1.telemetry") == f"{PREFIX}/a.b/d1/telemetry"
    assert topic_of(f"{stored}./.d1.telemetry") == f"{PREFIX}//d1/telemetry"
    assert topic_of(f"{STORED_PREFIX}{PREFIX}") == PREFIX
    assert topic_of(f"{STORED_PREFIX}{PREFIX}.3.a.b.c") == f"{PREFIX}/3/a/b/c"
    assert topic_of(f"{STORED_PREFIX}{PREFIX}.a.b.c./") == f"{PREFIX}/a/b/c/"


def test_nats_permissions_name_the_partitioned_subjects_of_a_device() -> None:
    number = partition(PARTITIONS, "site-a")
    assert publish_subjects(f"{PREFIX}/site-a/d1/#", PARTITIONS) == [
        f"{PREFIX}.site-a.d1",
        f"{PARTITIONED}.{PREFIX}.{number}.site-a.d1.*",
        f"{PREFIX}.site-a.d1.*.>",
    ]
    assert publish_subjects(f"{PREFIX}/site-a/gw/status", PARTITIONS) == [
        f"{PARTITIONED}.{PREFIX}.{number}.site-a.gw.status"
    ]
    with pytest.raises(ValueError, match="no NATS permission"):
        publish_subjects(f"{PREFIX}/+/d1/#", PARTITIONS)


def test_pruning_deletes_older_epochs_consumers_never_a_newer_owners(
    nats_cluster: NatsCluster,
) -> None:
    # A worker stalled past its lease wakes up and prunes its partitions before it learns
    # they were taken: a newer owner's consumer must survive it (deleted, its partition's
    # messages would go unread, and with interest retention be dropped).
    link = NatsLink([node.url for node in nats_cluster.nodes], PREFIX)
    link.start()
    try:
        link.wait_stream(30)
        assert link.ensure_consumers([0]) == 2  # cw-p0-e1 and cw-misfits
        inbox = IngressQueue(10)
        newer = link.open(0, 3, 0, inbox)  # the new owner, epoch 3: deletes epoch 1's
        link.close_feed(newer)
        older = link.open(0, 2, 0, inbox)  # the stalled one's own consumer, epoch 2
        link.close_feed(older)
        assert link.prune(0, 2) == []
        assert set(link.consumer_lags()) == {"cw-p0-e2", "cw-p0-e3"}
        assert link.prune(0, 3) == ["cw-p0-e2"]
        assert set(link.consumer_lags()) == {"cw-p0-e3"}
    finally:
        link.close()
