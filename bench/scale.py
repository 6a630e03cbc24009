"""Scale: cost per reading and memory of the ingest pipeline as the devices grow 1k → 10k → 100k.

Run: .venv/bin/python bench/scale.py [--devices 1000 10000 100000] [--messages 30000]
     [--profile FILE]

Each size runs in a process of its own (clean memory figures): one bench site with that many
devices (half room sensors with temperature, humidity and co2, half HVAC controllers) and the
bundled clause set; the real `ingest.pipeline.Pipeline` (decode → engine → one transaction per
flush with COPY, alerts and the engine checkpoint) on a scratch database, fed from its ingress
queue directly (no broker: this isolates the pipeline's own cost), with the garbage collector set
as the service sets it, and what building left free given back as it does
(`clausewatch.service.settle_after_build`). First every device reports
once (the state of all devices is live) and a checkpoint of them all is saved (timed apart),
then `--messages` readings round-robin are timed. After the pipeline stops (its final
checkpoint saved), the site's state is restored as a restarting service restores it (load the
checkpoint: its header, and its parts as stored; build the engine and resume it, each part
decoded as it is taken, `ingest.pipeline.restore_engine`; under one pause of the collector
whose objects are frozen, as `Service.start` does), timed by step: failover time is restore
time.

Figures per size: µs of wall time and of this process's CPU per reading (3 metric values), their
ratio to the smallest size (flat = 1.0), values/s, and the resident memory the engine state adds
(RSS after the warm-up minus before building the site), per device, and the high-water mark
once the checkpoint of every device was saved (the state plus that checkpoint in flight); the
restore's seconds, wall and this process's CPU (on a loaded machine the CPU figure is the one
to compare; the server's share of the load is not in it), and how much of that CPU the kernel
spent (faulting in the new engine's pages: its cost per page varies with the host).
`--profile FILE` writes a cProfile of the timed phase of the largest size.
"""

from __future__ import annotations

import argparse
import cProfile
import multiprocessing as mp
import os
import resource
import time
from typing import Any

import harness
import orjson

WARM_UP_SLICE = 2_000


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(devices: int, messages: int, profile: str | None, out: Any) -> None:
    from alerts.record import record_outputs
    from clausewatch.service import settle_after_build, sync_registry
    from config.files import load_config_dir
    from ingest.decode import Decoder, DeviceIndex, Limits
    from ingest.mqtt import IngressQueue, ReceivedMessage
    from ingest.pipeline import CHECKPOINT_INTERVAL_S, Pipeline, restore_engine
    from rules.site import SiteModel
    from store.checkpoints import collector_paused, load_checkpoint
    from store.migrate import migrate
    from store.partitions import ensure_partitions
    from store.pool import make_pool

    bundled = load_config_dir(harness.CONFIG)
    before = rss_mib()
    site = SiteModel.model_validate(harness.site_dict("scale", devices // 2))
    bundled.sites = {"scale": site}
    acked = [0]

    def ack(tokens: list[tuple[int, int, int]]) -> None:
        acked[0] += len(tokens)

    with harness.scratch_database() as database:
        migrate(database)
        sync_registry(database, bundled)
        with make_pool(database, min_size=2, max_size=4) as pool:
            with pool.connection() as conn:
                ensure_partitions(conn)
            inbox = IngressQueue(50_000)
            pipeline = Pipeline(
                pool,
                bundled.sites,
                bundled.clause_versions(),
                Decoder(DeviceIndex.from_sites([site]), harness.PREFIX, Limits()),
                inbox,
                ack,
                sink=record_outputs,
                standards={cid: std.code for cid, std in bundled.standards().items()},
                lateness=0.0,
                clock="wall",
                # The warm-up takes no checkpoint of its own: the one timed below is of every
                # device (a periodic one could have saved some, or all, of them first).
                checkpoint_interval=3600,
            )
            pipeline.start()
            # The collector as the service sets it once its engines are built: no automatic
            # full collections (each scans the whole state), young ones every 200,000
            # allocations. Without it, collections were ~40 % of the CPU per reading. And the
            # C heap's free memory, left by building, given back to the system as it does.
            settle_after_build()
            stop = mp.Event()

            def build(count: int, first_round: int, first: int = 0) -> list[ReceivedMessage]:
                rooms = devices // 2
                built = []
                for i in range(first, first + count):
                    room, kind = divmod(i, 2) if first_round == 0 else (i % rooms, 0)
                    round_ = first_round + (i // rooms if first_round else 0)
                    now = time.time()
                    if kind:
                        topic = f"{harness.PREFIX}/scale/h{room % rooms}/telemetry"
                        body = {"hvac_mode": 1, "occupied": 1, "window_open": 0}
                    else:
                        topic = f"{harness.PREFIX}/scale/s{room % rooms}/telemetry"
                        body = {"temperature": 26.4 + (i % 7) * 0.1,
                                "humidity": 55.0 + i % 5, "co2": 600.0 + i % 300}  # fmt: skip
                    payload = orjson.dumps({"ts": int(now * 1000), "seq": round_, "metrics": body})
                    built.append(ReceivedMessage(topic, payload, now, (1, i, 1)))
                return built

            def feed(built: list[ReceivedMessage]) -> None:
                for message in built:
                    inbox.put(message, stop)

            def wait_acked(total: int) -> None:
                # No clock ticks: with lateness 0 each reading is judged as it comes, and a tick
                # past a queued reading's ts would set it aside as late instead.
                harness.wait_until(lambda: acked[0] >= total, 600, "pipeline caught up", 0.02)

            # Every device once: the whole state is live. A slice at a time, each taken before
            # the next is queued, as a site's devices report spread over a minute: queued all
            # at once, the bench's own messages (~3.5 KiB a device, freed once taken) stayed
            # in the process's resident memory, which the state figure below counts.
            for first in range(0, devices, WARM_UP_SLICE):
                feed(build(min(WARM_UP_SLICE, devices - first), 0, first))
                wait_acked(min(first + WARM_UP_SLICE, devices))
            warm_rss = rss_mib()
            # Start timing from a saved state: the checkpoint of every device the warm-up
            # touched is timed on its own (in steady state checkpoints are spaced to ten times
            # their cost, so they add at most a tenth to the cost per reading).
            checkpoint0 = time.perf_counter()
            pipeline.request_checkpoint()
            harness.wait_until(
                lambda: not pipeline.checkpoint_pending, 600, "warm-up checkpoint", 0.02
            )
            checkpoint_s = time.perf_counter() - checkpoint0
            # The high-water mark: the live state plus a checkpoint of every device in flight.
            peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            pipeline.checkpoint_interval = CHECKPOINT_INTERVAL_S  # the service's, from now on
            timed = build(messages, 1)
            profiler = cProfile.Profile() if profile else None
            cpu0, wall0 = time.process_time(), time.perf_counter()
            if profiler:
                profiler.enable()
            feed(timed)
            wait_acked(devices + messages)
            if profiler:
                profiler.disable()
                profiler.dump_stats(profile)  # type: ignore[arg-type]
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            pipeline.stop()
            # As `Service.start` restores: under one pause whose objects are then frozen (the
            # pause's first step, a collection of this process's garbage so far, not timed).
            with collector_paused(keep=True):
                with pool.connection() as conn:
                    load0, load_cpu0 = time.perf_counter(), time.process_time()
                    kernel0 = resource.getrusage(resource.RUSAGE_SELF).ru_stime
                    stored = load_checkpoint(conn, "scale")
                assert stored is not None
                build0, build_cpu0 = time.perf_counter(), time.process_time()
                restore_engine(
                    site, bundled.clause_versions(), {**stored.state, "parts": stored.parts},
                    lateness=0.0,
                )  # fmt: skip
            restored, restored_cpu = time.perf_counter(), time.process_time()
            kernel = resource.getrusage(resource.RUSAGE_SELF).ru_stime - kernel0
    out.put(
        {
            "devices": devices,
            "wall_us": wall / messages * 1e6,
            "cpu_us": cpu / messages * 1e6,
            "values_per_s": messages * 3 / wall,
            "state_mib": warm_rss - before,
            "peak_mib": peak_rss - before,
            "checkpoint_s": checkpoint_s,
            "restore_s": (build0 - load0, restored - build0),
            "restore_cpu_s": (build_cpu0 - load_cpu0, restored_cpu - build_cpu0),
            "restore_kernel_s": kernel,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--profile", help="cProfile output of the largest size's timed phase")
    args = parser.parse_args()
    print(f"machine: {harness.machine()}")
    ctx = mp.get_context("spawn")
    base: dict[str, float] | None = None
    for devices in args.devices:
        out = ctx.Queue()
        profile = args.profile if devices == max(args.devices) else None
        process = ctx.Process(target=measure, args=(devices, args.messages, profile, out))
        process.start()
        figures = out.get(timeout=900)
        process.join(30)
        base = base or figures
        wall, cpu = figures["wall_us"], figures["cpu_us"]
        state, peak = figures["state_mib"], figures["peak_mib"]
        load, build = figures["restore_s"]
        load_cpu, build_cpu = figures["restore_cpu_s"]
        print(
            f"{devices:>7,} devices: {wall:6.1f} µs wall/reading (x{wall / base['wall_us']:.2f}),"
            f" {cpu:6.1f} µs CPU/reading (x{cpu / base['cpu_us']:.2f}),"
            f" {figures['values_per_s']:,.0f} values/s,"
            f" state {state:,.0f} MiB ({state * 1024 / devices:.1f} KiB/device),"
            f" peak with its checkpoint {peak:,.0f} MiB ({peak * 1024 / devices:.1f} KiB/device),"
            f" checkpoint of every device {figures['checkpoint_s']:.2f} s,"
            f" restore {load + build:.2f} s (load {load:.2f}, build and resume {build:.2f});"
            f" its CPU {load_cpu + build_cpu:.2f} s ({load_cpu:.2f} + {build_cpu:.2f};"
            f" {figures['restore_kernel_s']:.2f} of it in the kernel, mostly page faults)"
        )
        print(f"         load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
