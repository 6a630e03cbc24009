"""Throughput and memory of the pure rules engine (rules.engine.SiteEngine).

Run: .venv/bin/python bench/engine.py [--devices 1000] [--minutes 30] [--subjects 100000]

Site: N rooms (offices and meeting rooms, Asia/Shanghai, cn holidays, cooling season), each with
one sensor reporting temperature, humidity and co2 every minute, and one HVAC controller
reporting hvac_mode / occupied / window_open every 10 minutes. Clauses: the bundled set in
config/bundled/clauses (every shape; versions included). Time: a July workday from 09:00, so
the office-hours schedules, gates and `for` durations are live, with some rooms too cold (26 °C
clause violations) and some too humid. All of the run is inside office hours (the
worst case: no clause is skipped as outside its schedule).

Figures printed (CPU time of the observe/advance loop, warm-up excluded, lateness 60 s so the
reorder buffer is exercised):
- office hours: every clause live (in season, in office hours, HVAC cooling), the worst case;
- a whole workday: the same site and clauses from 00:00 to 24:00, where clauses outside their
  schedules are skipped;
- a naive baseline in the same run: no precomputed routing, every reading scans every bound
  clause instance of the site for the ones judging its device or space;
- peak memory (tracemalloc) of building an engine judging --subjects subjects (the devices and
  spaces that clauses are bound to; about three per room, each judged by several clauses) and
  giving every device one reading;
- the same office-hours run on a small site (--small-site rooms, repeated so as many values are
  fed): the engine's work per reading is the same, so the gap between the two figures is what
  a large working set (instances, slots, windows of thousands of devices) costs in memory
  traffic on this machine;
- a reference loop (ns per `x += i` iteration) to compare machines: this one is shared.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import math
import os
import platform
import random
import statistics
import time
import tracemalloc
from typing import Any

from config import BUNDLED_DIR
from config.files import load_config_dir
from rules.clause import ClauseVersion
from rules.engine import SiteEngine
from rules.holidays import use_official_calendar
from rules.site import SiteModel

CONFIG = BUNDLED_DIR
ZONE = dt.timezone(dt.timedelta(hours=8))
START = dt.datetime(2025, 7, 1, 9, 0, tzinfo=ZONE).timestamp()  # a Tuesday, cooling season


def build_site(rooms: int) -> SiteModel:
    spaces: list[dict[str, Any]] = [{"id": "b1", "type": "building", "area_m2": 50000}]
    devices: list[dict[str, Any]] = []
    floors = max(1, rooms // 50)
    for f in range(floors):
        spaces.append({"id": f"f{f}", "type": "floor", "parent": "b1"})
    for r in range(rooms):
        room = f"r{r}"
        kind = "meeting" if r % 10 == 0 else "office"
        spaces.append({"id": room, "type": kind, "parent": f"f{r % floors}", "area_m2": 40})
        devices.append(
            {
                "id": f"s{r}",
                "space": room,
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
                "space": room,
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
    devices.append(
        {
            "id": "main-meter",
            "space": "b1",
            "metrics": {
                "energy_kwh": {"unit": "kWh", "cumulative": True, "carrier": "electricity"}
            },
        }
    )
    return SiteModel.model_validate(
        {
            "site": {
                "id": "bench",
                "name": "bench",
                "timezone": "Asia/Shanghai",
                "seasons": {
                    "cooling": {"from": "06-01", "to": "09-30"},
                    "heating": {"from": "11-15", "to": "03-15"},
                },
            },
            "spaces": spaces,
            "devices": devices,
        }
    )


def bundled_clauses() -> tuple[list[ClauseVersion], dict[str, str]]:
    loaded = load_config_dir(CONFIG)
    if loaded.calendar is not None:  # working days as the service judges them
        use_official_calendar(loaded.calendar)
    standards = {cid: std.code for cid, std in loaded.standards().items()}
    return loaded.clause_versions(), standards


Stream = list[tuple[str, float, int, dict[str, float]]]


def readings(rooms: int, start: float, steps: int, step: float, seed: int = 7) -> Stream:
    """Every `step` seconds one reading per sensor (jittered within 20 s, arriving shuffled by
    up to 15 s: within the lateness) and every ~10 minutes the HVAC state of each room; about
    10 % of rooms run too cold, 5 % too humid. The third item is the step number."""
    rng = random.Random(seed)
    out: Stream = []
    cold = {r for r in range(rooms) if r % 10 == 3}
    humid = {r for r in range(rooms) if r % 20 == 7}
    hvac_every = max(1, round(600 / step))
    for index in range(steps):
        base = start + index * step
        batch = []
        for r in range(rooms):
            ts = base + rng.random() * 20.0
            temperature = (24.8 if r in cold else 26.4) + rng.gauss(0, 0.3)
            humidity = (75.0 if r in humid else 55.0) + rng.gauss(0, 2)
            co2 = 600.0 + rng.random() * 500
            values = {"temperature": temperature, "humidity": humidity, "co2": co2}
            batch.append((f"s{r}", ts, index, values))
            if index % hvac_every == 0:
                hvac = {"hvac_mode": 1.0, "occupied": 1.0, "window_open": 0.0}
                batch.append((f"h{r}", ts, index, hvac))
        batch.sort(key=lambda item: item[1] + rng.random() * 15.0)
        out.extend(batch)
    return out


def run(
    engine: SiteEngine, stream: Stream, start: float, step: float, warmup_steps: int = 2
) -> tuple[float, int]:
    """CPU seconds to observe the stream (advancing the clock every step, as the service's
    scheduler does) and the sensor metric values fed, excluding the first `warmup_steps`
    (instances starting, schedule segments being computed). The loop is kept minimal so the
    figure is the engine's, not the harness's."""
    by_step: dict[int, list[tuple[str, float, int, dict[str, float]]]] = {}
    for item in stream:
        by_step.setdefault(item[2], []).append(item)
    values = sum(3 for device, _, index, _ in stream if device[0] == "s" and index >= warmup_steps)
    observe, advance = engine.observe, engine.advance
    started = 0.0
    for index in sorted(by_step):
        if index == warmup_steps:
            gc.collect()
            started = time.process_time()
        advance(start + index * step)
        engine.drain()
        for device, ts, seq, metrics in by_step[index]:
            observe(device, ts, seq, metrics)
    advance(start + (max(by_step) + 2) * step)
    engine.drain()
    return time.process_time() - started, values


class NaiveEngine(SiteEngine):
    """The baseline: no precomputed routing. For every reading, every bound clause instance of
    the site is looked at and those judging this device (or its space) are evaluated."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for device in self._devices.values():
            device.metric_count = -1  # never take the precomputed listener list

    def _listeners_of(self, state: Any, metrics: Any) -> list[Any]:
        return [
            instance
            for instance in self._instances
            if instance.subject.device == state.id or instance.subject.space == state.space
        ]


def judged_subjects(engine: SiteEngine) -> int:
    return len({subject for _, subject in engine.bindings()})


def peak_memory(
    subjects: int, clauses: list[ClauseVersion], standards: dict[str, str]
) -> tuple[float, int, int, int]:
    """Peak traced memory (MiB) of building an engine judging about `subjects` subjects (devices
    and spaces with a clause bound to them) and feeding every device one reading; also the
    subject, clause x subject instance and device counts."""
    # Subjects grow linearly with rooms (devices) plus a few site-wide spaces: fit both.
    at_10, at_20 = (
        judged_subjects(SiteEngine(build_site(n), clauses, lateness=60.0)) for n in (10, 20)
    )
    per_room = (at_20 - at_10) / 10
    rooms = max(1, math.ceil((subjects - (at_10 - 10 * per_room)) / per_room))
    site = build_site(rooms)
    gc.collect()
    tracemalloc.start()
    engine = SiteEngine(site, clauses, lateness=60.0, standards=standards)
    for r in range(rooms):
        sensor = {"temperature": 25.0, "humidity": 50.0, "co2": 700.0}
        engine.observe(f"s{r}", START + r % 60, 0, sensor)
        engine.observe(f"h{r}", START + r % 60, 0, {"hvac_mode": 1.0, "occupied": 1.0})
    engine.advance(START + 120)
    engine.drain()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20, judged_subjects(engine), len(engine.bindings()), len(site.devices)


def reference_loop_ns() -> float:
    """A machine-speed yardstick: CPython 3.11 on an idle modern core does this in ~25-35 ns."""
    best = math.inf
    for _ in range(3):
        started = time.process_time()
        x = 0
        for i in range(2_000_000):
            x += i
        best = min(best, (time.process_time() - started) / 2_000_000 * 1e9)
    return best


def measure(
    site: SiteModel,
    clauses: list[ClauseVersion],
    standards: dict[str, str],
    stream: Stream,
    start: float,
    step: float,
    engine_class: type[SiteEngine] = SiteEngine,
) -> tuple[float, int, int]:
    engine = engine_class(site, clauses, lateness=60.0, standards=standards)
    seconds, values = run(engine, stream, start, step)
    return values / seconds, values, len(engine.bindings())


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000, help="sensor devices (3 metrics each)")
    parser.add_argument("--minutes", type=int, default=30, help="office-hours minutes to replay")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each scenario")
    parser.add_argument("--naive-minutes", type=int, default=4, help="minutes for the baseline")
    parser.add_argument(
        "--small-site", type=int, default=100, help="rooms of the small-site comparison (0: skip)"
    )
    parser.add_argument(
        "--subjects", type=int, default=100_000, help="judged devices and spaces, memory run"
    )
    args = parser.parse_args()

    clauses, standards = bundled_clauses()
    site = build_site(args.devices)
    print(
        f"machine: {platform.machine()} x {os.cpu_count()} cores (shared), load average "
        f"{os.getloadavg()[0]:.1f}; Python {platform.python_version()}"
    )

    office = readings(args.devices, START, args.minutes, 60.0)
    day_start = START - 9 * 3600  # 00:00 local
    day = readings(args.devices, day_start, 288, 300.0)
    office_rates, day_rates = [], []
    for _ in range(args.repeat):  # the machine is shared: report the spread, not one draw
        rate, values, instances = measure(site, clauses, standards, office, START, 60.0)
        office_rates.append(rate)
        day_rate, day_values, _ = measure(site, clauses, standards, day, day_start, 300.0)
        day_rates.append(day_rate)
    rate = statistics.median(office_rates)
    print(f"clause versions: {len(clauses)}; bound instances: {instances}")
    print(f"reference loop: {reference_loop_ns():.0f} ns per `x += i` iteration")
    print(
        f"office hours (every clause live, 1 reading/min): {values:,} metric values; "
        f"values/s median {rate:,.0f}, best {max(office_rates):,.0f} of {args.repeat}"
    )
    print(
        f"a whole workday (00:00-24:00, 1 reading/5 min): {day_values:,} metric values; "
        f"values/s median {statistics.median(day_rates):,.0f}, best {max(day_rates):,.0f}"
    )

    naive_stream = readings(args.devices, START, args.naive_minutes, 60.0)
    naive_rate, naive_values, _ = measure(
        site, clauses, standards, naive_stream, START, 60.0, NaiveEngine
    )
    print(
        f"naive baseline (office hours): {naive_values:,} metric values, {naive_rate:,.0f} "
        f"values/s; routed/naive = {rate / naive_rate:.0f}x"
    )
    if args.small_site:
        small = build_site(args.small_site)
        small_stream = readings(args.small_site, START, args.minutes, 60.0)
        runs = max(1, args.devices // args.small_site)
        small_rates = []
        for _ in range(args.repeat):
            seconds, small_values = 0.0, 0
            for _ in range(runs):
                engine = SiteEngine(small, clauses, lateness=60.0, standards=standards)
                run_seconds, run_values = run(engine, small_stream, START, 60.0)
                seconds, small_values = seconds + run_seconds, small_values + run_values
            small_rates.append(small_values / seconds)
        print(
            f"same office hours on a {args.small_site}-room site ({runs} runs): values/s median "
            f"{statistics.median(small_rates):,.0f}, best {max(small_rates):,.0f} "
            f"({statistics.median(small_rates) / rate:.1f}x the {args.devices:,}-room median)"
        )
    if args.subjects:
        peak, judged, bound, devices = peak_memory(args.subjects, clauses, standards)
        print(
            f"peak memory at {judged:,} subjects ({devices:,} devices; {bound:,} clause x "
            f"subject instances): {peak:,.0f} MiB (tracemalloc), "
            f"{peak * 2**20 / judged:,.0f} bytes per subject, {peak * 2**20 / bound:,.0f} per "
            "instance"
        )


if __name__ == "__main__":
    main()
