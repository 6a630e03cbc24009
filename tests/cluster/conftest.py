"""Fixtures of the cluster mode's tests: a 3-node NATS JetStream cluster of the pinned
nats-server (tests/cluster/natscluster.py), started for a test and torn down after it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.natscluster import NatsCluster

PREFIX = "cw"
PARTITIONS = 8


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    cluster = NatsCluster(tmp_path / "nats", PREFIX, PARTITIONS)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
