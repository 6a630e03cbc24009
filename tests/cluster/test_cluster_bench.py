"""bench/cluster.py (BENCHMARKS.md, "Cluster mode") runs, tiny (`--smoke`): every reference, the
cluster's throughput with one worker, the single-node figures and a kill -9 takeover, each
run's correctness checks passing (it exits 1 otherwise). Its figures mean nothing at this size.

It starts two NATS clusters, workers and a single-node service: one to two minutes, so it runs
with the cluster's fault matrix (CLAUSEWATCH_CLUSTER_FAULTS=1), not in the default suite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("CLAUSEWATCH_CLUSTER_FAULTS") != "1",
        reason="the cluster's long rounds: CLAUSEWATCH_CLUSTER_FAULTS=1",
    ),
]

ROOT = Path(__file__).resolve().parents[2]


def test_the_cluster_benchmark_runs_tiny(pg_server_url: str) -> None:
    if not (Path("/usr/sbin/mosquitto").exists() and shutil.which("mosquitto_sub")):
        pytest.skip("the benchmark's references need Mosquitto and mosquitto_sub")
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "cluster.py"), "--smoke"],
        env={**os.environ, "CLAUSEWATCH_BENCH_DATABASE_URL": pg_server_url},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    shown = done.stdout + done.stderr[-3000:]
    assert done.returncode == 0, shown
    for line in (
        "bare nats-py consumer of $MQTT_msgs",
        "mosquitto_sub via NATS's MQTT listener",
        "clausewatch cluster, 1 worker(s)",
        "single node: clausewatch run, 1 worker",
        "takeover (the last partition's first commit)",
    ):
        assert line in done.stdout, shown
    assert "FAILED" not in done.stdout, shown
