"""What a device's engine state and checkpoint part grow to after many readings.

Run: .venv/bin/python bench/long_run.py [--rooms 200] [--readings 600]

bench/scale.py measures the state after at most a few dozen readings a device (its messages are
spread over every device). A service runs for months: what a device keeps of its past (its
recent dedupe keys, its rolling-aggregate windows) is then at its largest. The pure engine
(rules.engine.SiteEngine, no pipeline), the bench site of `rooms` rooms (a sensor and an HVAC
controller each) judged by the bundled clauses, every device reporting once a minute with a
sequence number. Printed, after 5 readings a device and again after `--readings` more:

- the engine's memory per device (tracemalloc, the difference between the two points);
- a checkpoint part's size per device (orjson bytes of `snapshot()`'s parts);
- the time to capture every part (`snapshot()`, median of 7, tracemalloc stopped), the work the
  pipeline thread does for a checkpoint of every device that changed.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
import tracemalloc

import harness
import orjson

START = 1_796_600_000.0  # epoch seconds: the readings' first event time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=200)
    parser.add_argument("--readings", type=int, default=600)
    args = parser.parse_args()

    from config.files import load_config_dir
    from rules.engine import SiteEngine
    from rules.site import SiteModel

    bundled = load_config_dir(harness.CONFIG)
    site = SiteModel.model_validate(harness.site_dict("bench", args.rooms))
    engine = SiteEngine(site, bundled.clause_versions(), lateness=0.0)
    engine.advance(START)
    devices = 2 * args.rooms

    def feed(count: int, first: int) -> None:
        for k in range(first, first + count):
            ts = START + k * 60
            for r in range(args.rooms):
                engine.observe(f"h{r}", ts, k, {"hvac_mode": 1, "occupied": 1, "window_open": 0})
                engine.observe(
                    f"s{r}",
                    ts,
                    k,
                    {"temperature": 26.4, "humidity": 55.0, "co2": 600.0 + (r + k) % 300},
                )
            engine.advance(ts)
            engine.drain()

    def part_bytes() -> float:
        parts = engine.snapshot()["parts"]
        return sum(len(orjson.dumps(part)) for part in parts.values()) / devices

    feed(5, 0)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    bytes_before = part_bytes()
    feed(args.readings, 5)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    bytes_after = part_bytes()
    gc.collect()
    times = []
    for _ in range(7):
        started = time.perf_counter()
        parts = len(engine.snapshot()["parts"])
        times.append((time.perf_counter() - started) * 1000)
    print(
        f"{args.rooms} rooms, {devices} devices, {args.readings} more readings a device"
        f" (load {os.getloadavg()[0]:.1f}):"
    )
    print(f"  state grown by {grown / devices / 1024:.1f} KiB a device")
    print(f"  checkpoint part {bytes_before:,.0f} -> {bytes_after:,.0f} bytes a device")
    print(f"  capture of every part ({parts}): {statistics.median(times):.1f} ms (median of 7)")


if __name__ == "__main__":
    main()
