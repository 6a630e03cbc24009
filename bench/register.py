"""Speed of the register: backtest throughput, search latency, report generation.

Run: .venv/bin/python bench/register.py [--database-url URL] [--days 7]

Uses a scratch database on the server (created and dropped), the bundled demo-hq site and
clauses. Stores `--days` of one-minute temperature and humidity readings from the site's ten
temperature sensors and hvac_mode/occupied from the rooms' controllers (cooling, occupied),
one compliance interval per sensor-hour, then measures:
- a backtest of a stricter temp.cooling.min (26 → 27 °C) beside the version in force:
  stored readings replayed per second (both engines together);
- register searches (Chinese and ASCII terms): milliseconds per query;
- the quarterly report of the period (statistics, HTML, CSV, stored): seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import time

import harness

from compliance.backtest import backtest
from compliance.register import RegisterQuery, search_register
from compliance.reports import generate_report
from config import BUNDLED_DIR
from config.files import load_config_dir
from store.batches import ReadingRow, write_readings
from store.migrate import migrate
from store.pool import connect
from store.registry import sync_clauses, sync_site

CONFIG = BUNDLED_DIR
START = dt.datetime(2026, 7, 6, tzinfo=dt.timezone(dt.timedelta(hours=8)))  # a Monday
QUERIES = ("室内温度", "甲醛", "hcho", "GB 50736", "cleaning", "空调 26")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--days", type=int, default=7)
    args = parser.parse_args()
    with harness.scratch_database(args.database_url, "cw_bench_register") as url:
        migrate(url)
        run(url, args.days)


def run(url: str, days: int) -> None:
    config = load_config_dir(CONFIG)
    site = config.sites["demo-hq"]
    sensors = [d for d in site.devices if "temperature" in d.metrics and "humidity" in d.metrics]
    # The rooms' air-conditioning controllers report cooling, so the gate of temp.cooling.min
    # holds and the clause judges every workday hour.
    controllers: dict[str, list[str]] = {}
    for device in site.devices:
        if "hvac_mode" in device.metrics:
            controllers.setdefault(device.space, []).append(device.id)
    with connect(url) as conn:
        sync_site(conn, site, "bench", now=START - dt.timedelta(days=30))
        sync_clauses(conn, config.clause_files.values(), "bench", now=START)
        conn.commit()
        t0 = START.timestamp()
        minutes = days * 1440
        for device_index, device in enumerate(sensors):
            rows = []
            for m in range(minutes):
                ts = t0 + 60 * m
                daily = math.sin(2 * math.pi * m / 1440)
                temperature = 25.8 + 1.2 * daily + 0.1 * device_index
                rows.append(
                    ReadingRow("demo-hq", device.id, "temperature", ts, temperature, 2 * m, ts)
                )
                rows.append(ReadingRow("demo-hq", device.id, "humidity", ts, 55.0, 2 * m + 1, ts))
                for ac in controllers.get(device.space, ()):
                    rows.append(ReadingRow("demo-hq", ac, "hvac_mode", ts, 1.0, 2 * m, ts))
                    rows.append(ReadingRow("demo-hq", ac, "occupied", ts, 1.0, 2 * m + 1, ts))
            write_readings(conn, rows)
            conn.execute(
                "INSERT INTO compliance_intervals (site, clause_id, clause_version, content_hash,"
                " space, device, start_ts, end_ts, status)"
                " SELECT 'demo-hq', 'temp.cooling.min', 1, 'h', %s, %s, s, s + interval '1 hour',"
                " CASE WHEN extract(hour FROM s) < 3 THEN 'violating' ELSE 'compliant' END"
                " FROM generate_series(%s::timestamptz, %s::timestamptz - interval '1 hour',"
                " interval '1 hour') AS s",
                (device.space, device.id, START, START + dt.timedelta(days=days)),
            )
        conn.commit()
        stored = conn.execute("SELECT count(*) FROM readings").fetchone()

        clause = next(
            c for f in config.clause_files.values() for c in f.clauses if c.id == "temp.cooling.min"
        )
        stricter = clause.model_copy(
            update={
                "version": clause.version + 1,
                "params": {
                    name: p.model_copy(update={"default": 27.0}) if name == "limit" else p
                    for name, p in clause.params.items()
                },
            }
        )
        began = time.perf_counter()
        result = backtest(conn, "demo-hq", stricter, START, START + dt.timedelta(days=days))
        seconds = time.perf_counter() - began
        print(
            f"backtest: {result.readings} readings ({stored[0] if stored else 0} stored)"
            f" in {seconds:.2f} s ="
            f" {result.readings / seconds:,.0f} readings/s through two engines;"
            f" candidate {result.candidate.alerts} alerts,"
            f" in force {result.in_force.alerts if result.in_force else '-'} alerts"
        )

        began = time.perf_counter()
        rounds = 20
        for _ in range(rounds):
            for q in QUERIES:
                search_register(conn, RegisterQuery(q=q), START.date())
        per_query = (time.perf_counter() - began) / (rounds * len(QUERIES)) * 1000
        print(f"search: {per_query:.1f} ms per query over {len(QUERIES)} terms")

        began = time.perf_counter()
        generate_report(conn, "demo-hq", "2026Q3", "bench", START + dt.timedelta(days=100))
        conn.commit()
        print(f"report 2026Q3: {time.perf_counter() - began:.2f} s")


if __name__ == "__main__":
    main()
