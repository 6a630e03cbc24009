"""Throughput and memory of the pure rules engine (rules.engine.SiteEngine).

Run: .venv/bin/python bench/engine.py [--devices 1000] [--minutes 60] [--subjects 100000]

Site: N rooms (offices and meeting rooms, Asia/Shanghai, cn holidays, cooling season), each with
one sensor reporting temperature, humidity and co2 every minute, and one HVAC controller
reporting hvac_mode / occupied / window_open every 10 minutes. Clauses: the bundled set in
clausewatch/config/clauses (every shape; versions included). Time: a July workday from 09:00, so
the office-hours schedules, gates and `for` durations are live, with some rooms too cold (26 °C
clause violations) and some too humid. All of the run is inside office hours (the
worst case: no clause is skipped as outside its schedule).

Figures printed:
- metric values evaluated per second (sensor values released into evaluation / CPU seconds of the
  observe loop), with lateness 60 s so the reorder buffers are exercised;
- the same for a naive baseline in the same run: every reading judged against every bound clause
  instance of the site (no routing), otherwise the same engine;
- peak memory (tracemalloc) of an engine with --subjects sensor devices after one reading each.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import platform
import random
import time
import tracemalloc
from pathlib import Path
from typing import Any

from clausewatch.configfiles import load_config_dir
from rules.clause import ClauseVersion
from rules.engine import SiteEngine
from rules.site import SiteModel

CONFIG = Path(__file__).resolve().parent.parent / "clausewatch" / "config"
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
    standards = {cid: std.code for cid, std in loaded.standards().items()}
    return loaded.clause_versions(), standards


def readings(
    rooms: int, minutes: int, seed: int = 7
) -> list[tuple[str, float, int, dict[str, float]]]:
    """Sensor readings each minute (jittered, slightly shuffled within 30 s) plus HVAC states
    every 10 minutes; about 10 % of rooms run too cold, 5 % too humid."""
    rng = random.Random(seed)
    out: list[tuple[str, float, int, dict[str, float]]] = []
    cold = {r for r in range(rooms) if r % 10 == 3}
    humid = {r for r in range(rooms) if r % 20 == 7}
    for minute in range(minutes):
        base = START + minute * 60.0
        batch = []
        for r in range(rooms):
            ts = base + rng.random() * 20.0
            temperature = (24.8 if r in cold else 26.4) + rng.gauss(0, 0.3)
            humidity = (75.0 if r in humid else 55.0) + rng.gauss(0, 2)
            co2 = 600.0 + rng.random() * 500
            batch.append(
                (
                    f"s{r}",
                    ts,
                    minute,
                    {"temperature": temperature, "humidity": humidity, "co2": co2},
                )
            )
            if minute % 10 == 0:
                batch.append(
                    (f"h{r}", ts, minute, {"hvac_mode": 1.0, "occupied": 1.0, "window_open": 0.0})
                )
        # Arrival order differs from event order by up to ~20 s (within the lateness).
        batch.sort(key=lambda item: item[1] + rng.random() * 15.0)
        out.extend(batch)
    return out


def run(
    engine: SiteEngine,
    stream: list[tuple[str, float, int, dict[str, float]]],
    warmup_minutes: int = 2,
) -> tuple[float, int]:
    """CPU seconds to observe the stream (advancing the clock each simulated minute, as the
    service's scheduler does) and the sensor metric values fed, excluding the first
    `warmup_minutes` (instances starting, schedule segments being computed)."""
    values = 0
    last_minute = -1
    started = 0.0
    for device, ts, seq, metrics in stream:
        if seq != last_minute:
            last_minute = seq
            engine.advance(START + seq * 60.0)
            engine.drain()
            if seq == warmup_minutes:
                gc.collect()
                started = time.process_time()
        engine.observe(device, ts, seq, metrics)
        if device[0] == "s" and seq >= warmup_minutes:
            values += 3
    engine.advance(START + (last_minute + 2) * 60.0)
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


def peak_memory(subjects: int, clauses: list[ClauseVersion], standards: dict[str, str]) -> float:
    site = build_site(subjects)
    tracemalloc.start()
    engine = SiteEngine(site, clauses, lateness=60.0, standards=standards)
    for r in range(subjects):
        engine.observe(
            f"s{r}", START + r % 60, 0, {"temperature": 25.0, "humidity": 50.0, "co2": 700.0}
        )
    engine.advance(START + 120)
    engine.drain()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000, help="sensor devices (3 metrics each)")
    parser.add_argument("--minutes", type=int, default=60, help="simulated minutes of readings")
    parser.add_argument("--naive-minutes", type=int, default=5, help="minutes for the baseline")
    parser.add_argument("--subjects", type=int, default=100_000, help="sensors for the memory run")
    args = parser.parse_args()

    clauses, standards = bundled_clauses()
    site = build_site(args.devices)
    stream = readings(args.devices, args.minutes)

    engine = SiteEngine(site, clauses, lateness=60.0, standards=standards)
    instances = len(engine._instances)
    seconds, values = run(engine, stream)
    rate = values / seconds

    naive_stream = readings(args.devices, args.naive_minutes)
    naive = NaiveEngine(site, clauses, lateness=60.0, standards=standards)
    naive_seconds, naive_values = run(naive, naive_stream)
    naive_rate = naive_values / naive_seconds

    print(
        f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}"
    )
    print(f"clause versions: {len(clauses)}; bound instances: {instances}")
    print(f"routed engine: {values:,} metric values in {seconds:.2f} s CPU = {rate:,.0f} values/s")
    print(
        f"naive baseline: {naive_values:,} metric values in {naive_seconds:.2f} s CPU = "
        f"{naive_rate:,.0f} values/s; routed/naive = {rate / naive_rate:.1f}x"
    )
    if args.subjects:
        peak = peak_memory(args.subjects, clauses, standards)
        print(f"peak memory at {args.subjects:,} sensor subjects: {peak:,.0f} MiB (tracemalloc)")


if __name__ == "__main__":
    main()
