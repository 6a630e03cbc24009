"""End-to-end throughput: MQTT → decode → engine (full bundled clause set) → PostgreSQL, against
the references a user would measure it against, fed by the same publisher in the same run: the
broker's own C client (mosquitto_sub) and Node-RED's threshold flow; and the bare paho
subscriber the service is built on.

Run: .venv/bin/python bench/e2e.py [--messages 120000] [--workers 1 2] [--rounds 1]
[--against DIR] (the first run installs Node-RED from the npm registry into bench/.node-red,
about a minute). `--against DIR`: another checkout with its own .venv (main, for a change's
paired A/B rounds): each pipeline run of this tree is followed by the same run of that one, in
the same round against the same references.

Setup (all on 127.0.0.1, created and removed by the run): Mosquitto with the bundled
mosquitto.conf on a free port; a scratch database on the local PostgreSQL; two bench sites of 250
rooms each (1,000 devices: a sensor with temperature, humidity and co2 and an HVAC controller per
room) with the bundled clauses; `clausewatch run --workers N` as a subprocess with the data's
clock and no lateness: each reading moves its site's time on, so the engine judges it as it is
taken, before the flush that commits it, and a row committed is a reading judged. (Until the
sixteenth session the service ran on the wall clock with 60 s of lateness, so that a backlog
was not set aside as late; but then no reading of a run was judged before the run ended, 60 s
after its publish: the figures measured decoding, buffering and committing only.)

The publisher is its own process: QoS 1, at most 2,000 unacknowledged, 3 metrics per message,
as fast as it can; it speaks MQTT 5 over a plain socket with pre-encoded packets
(bench/harness.py), so it outruns both the service and the bare subscriber and the broker queues
the difference (the bundled mosquitto.conf bounds that queue by 1 GiB, not by a message count,
so nothing is dropped). Its readings' ts is the wall clock as each is sent, so a site's
readings come in order and none is late with no lateness.

Figures:
- mosquitto_sub: messages/s at which the C client (QoS 1, MQTT 5, payloads read and dropped)
  received everything, first publish → its exit after the last message: the broker's limit;
- Node-RED: messages/s at which its flow (mqtt in, QoS 1, JSON → a function judging three
  thresholds and counting; nothing stored) handled everything, first publish → the N-th
  message (the flow stamps the time): what a user would build instead;
- ceiling: messages/s at which the bare subscriber (QoS 1, MQTT 5, counting only) received
  everything the publisher sent, first publish → last arrival;
- pipeline, per worker count: metric values/s committed to PostgreSQL (rows counted in the
  database), first publish → every row committed; the ratio to the ceiling (in values/s), the
  late readings (0: every value was judged, as it was taken) and the alerts the run raised;
- the service processes' CPU seconds for those values (values per CPU second): on a shared,
  loaded machine the wall-clock rates follow the load, this figure much less.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import harness
import psycopg

SITES = {"bench-a": 250, "bench-b": 250}
METRICS_PER_MESSAGE = 3


@contextlib.contextmanager
def checkout(root: Path | None) -> Iterator[None]:
    """The service of the checkout at `root` (its .venv, its sources) meanwhile; None: this
    one."""
    if root is None:
        yield
        return
    python, here = harness.PYTHON, Path.cwd()
    harness.PYTHON = str(root / ".venv" / "bin" / "python")
    os.chdir(root)  # `python -m clausewatch` imports from the working directory first
    try:
        yield
    finally:
        harness.PYTHON = python
        os.chdir(here)


def pipeline_rate(
    url: str, config: Path, plan: dict[str, object], workers: int, root: Path | None = None
) -> dict[str, float]:
    """Values/s committed by `clausewatch run --workers N` (of the checkout at `root`, else
    this one) for the plan's messages."""
    with harness.scratch_database() as database, checkout(root):
        service = harness.ServiceProcess(
            database, url, config, workers=workers, lateness=0.0, clock="data"
        )
        try:
            service.wait_ready()
            expected = int(plan["messages"]) * METRICS_PER_MESSAGE  # type: ignore[call-overload]
            cpu_before = service.cpu_seconds()
            publisher, published = harness.run_publisher(url, plan)
            started, _, _ = published.get(timeout=300)
            count = 0
            lasts = harness.last_readings(plan)
            with psycopg.connect(database, autocommit=True) as conn:

                def last_committed() -> bool:
                    return all(
                        conn.execute(
                            "SELECT EXISTS (SELECT FROM readings"
                            " WHERE site = %s AND device = %s AND seq = %s)",
                            last,
                        ).fetchone()
                        == (True,)
                        for last in lasts
                    )

                def all_committed() -> bool:
                    nonlocal count
                    count = conn.execute("SELECT count(*) FROM readings").fetchone()[0]  # type: ignore[index]
                    return count >= expected

                # Each site's last message first (an index lookup), then every row counted
                # once: counting every 0.1 s took CPU from the service it measured.
                harness.wait_until(last_committed, 300, "every site's last reading", step=0.02)
                finished = time.time()
                if not all_committed():  # a site committed out of order: count until done
                    harness.wait_until(all_committed, 300, "every reading committed", step=0.1)
                    finished = time.time()
            cpu = service.cpu_seconds() - cpu_before
            publisher.join(10)
            late = harness.scalar(database, "SELECT count(*) FROM late_readings")
            alerts = harness.scalar(database, "SELECT count(*) FROM alerts")
            dead = harness.scalar(database, "SELECT count(*) FROM dead_letters")
            stored = harness.stored_counts(database)
        finally:
            service.stop()
    return {
        "values_per_s": count / (finished - started),
        "values_per_cpu_s": count / cpu,
        "late": late,
        "alerts": alerts,
        "dead_letters": dead,
        # Every message the publisher had acknowledged stored, once.
        "unstored": int(plan["messages"]) - stored["messages"],  # type: ignore[call-overload]
        "doubles": stored["doubles"] + stored["alerts_doubled"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=120_000, help="readings per run")
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds of every run")
    parser.add_argument(
        "--against", type=Path, help="a checkout whose service runs after this one's (A/B)"
    )
    args = parser.parse_args()
    trees: list[tuple[str, Path | None]] = [("clausewatch", None)]
    if args.against is not None:
        trees.append((f"clausewatch at {args.against}", args.against.resolve()))
    plan: dict[str, object] = {"messages": args.messages, "inflight": 2000, "sites": SITES}
    print(f"machine: {harness.machine()}")
    print(
        f"workload: {args.messages:,} readings x {METRICS_PER_MESSAGE} metrics, "
        f"{2 * sum(SITES.values()):,} devices in {len(SITES)} sites, QoS 1"
    )
    with tempfile.TemporaryDirectory(prefix="cw-bench-") as tmp:
        folder = Path(tmp)
        (folder / "broker").mkdir()
        config = harness.write_config(folder / "config", SITES)
        with harness.own_mosquitto(folder / "broker") as url:
            for round_ in range(1, args.rounds + 1):
                print(f"round {round_}:")
                c_msgs = harness.mosquitto_sub_rate(url, plan)
                red_msgs = harness.node_red_rate(url, plan, folder)
                ceiling_msgs, publisher_msgs = harness.ceiling(url, plan)
                print(f"  mosquitto_sub (C client, counting): {c_msgs:,.0f} msg/s = 1.00")
                print(
                    f"  Node-RED {harness.NODE_RED_VERSION} threshold flow: {red_msgs:,.0f} msg/s"
                    f" = {red_msgs / c_msgs:.2f} of mosquitto_sub"
                )
                print(
                    f"  bare paho subscriber: {ceiling_msgs:,.0f} msg/s = "
                    f"{ceiling_msgs / c_msgs:.2f} (publisher {publisher_msgs:,.0f} msg/s)"
                )
                for workers in args.workers:
                    for name, root in trees:
                        figures = pipeline_rate(url, config, plan, workers, root)
                        msgs = figures["values_per_s"] / METRICS_PER_MESSAGE
                        print(
                            f"  {name}, {workers} worker(s): {msgs:,.0f} msg/s "
                            f"({figures['values_per_s']:,.0f} values/s committed) = "
                            f"{msgs / c_msgs:.2f} of mosquitto_sub, {msgs / red_msgs:.2f}x "
                            f"Node-RED, {msgs / ceiling_msgs:.2f} of paho; late readings "
                            f"{figures['late']}, alerts {figures['alerts']}, dead letters "
                            f"{figures['dead_letters']}, acknowledged - stored "
                            f"{figures['unstored']}, doubles {figures['doubles']}"
                        )
                        print(
                            f"    service CPU: {figures['values_per_cpu_s']:,.0f} values per "
                            f"CPU second (PostgreSQL's own CPU not included)"
                        )
                print(f"  load after the round: {harness.machine()}")


if __name__ == "__main__":
    main()
