"""Storage benchmark: metric values per second written through the storage layer
(`write_readings`: one inline INSERT up to 64 rows, else binary COPY with the dedupe fallback)
against two per-row INSERT ... ON CONFLICT DO NOTHING baselines, at 1, 10 and 100 rows per batch
(one transaction per batch) and at the default batching (the pipeline's end to end figures
are bench/e2e.py's). The baselines:
- naive (the issue's baseline, which the 20x target is measured against): one INSERT per
  value, each its own transaction (autocommit), as a naive ingest would write; batch size does
  not change it, so it is measured again beside each batch size (the same load);
- per-row in batched transactions: the same INSERT, all values of a batch in one transaction,
  the strongest per-row form.

Runs against a fresh database it creates on the given server and drops afterwards:

    .venv/bin/python bench/storage.py [--server-url postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import time
from collections.abc import Callable

import harness

from clausewatch.settings import Settings
from store.batches import PartitionCache, ReadingRow, write_readings
from store.migrate import migrate
from store.partitions import ensure_partitions
from store.pool import connect

METRICS = ("temperature", "humidity", "co2", "pm10", "illuminance")
NAIVE_INSERT = (
    "INSERT INTO readings (site, device, metric, ts, value, seq, received_at, broker_stamped)"
    " VALUES (%s, %s, %s, to_timestamp(%s), %s, %s, to_timestamp(%s), %s)"
    " ON CONFLICT DO NOTHING"
)


class Source:
    """Distinct readings: devices report all metrics each second, like a busy site."""

    def __init__(self, devices: int = 200) -> None:
        self.devices = [f"dev-{i:04d}" for i in range(devices)]
        self.t0 = time.time() - 3600
        self.tick = 0

    def take(self, n: int) -> list[ReadingRow]:
        rows: list[ReadingRow] = []
        while len(rows) < n:
            ts = self.t0 + self.tick * 0.001
            now = ts + 0.5
            for device in self.devices:
                for metric in METRICS:
                    rows.append(ReadingRow("bench", device, metric, ts, 21.5, self.tick, now))
            self.tick += 1
        return rows[:n]


def timed(run: Callable[[], int]) -> tuple[int, float]:
    started = time.perf_counter()
    rows = run()
    return rows, time.perf_counter() - started


def naive_autocommit(url: str, source: Source, total: int) -> tuple[int, float]:
    rows = source.take(total)
    with connect(url, autocommit=True) as conn:

        def run() -> int:
            for row in rows:
                conn.execute(NAIVE_INSERT, row)
            return len(rows)

        return timed(run)


def per_row_batched(url: str, source: Source, batch: int, total: int) -> tuple[int, float]:
    batches = [source.take(batch) for _ in range(max(1, total // batch))]
    with connect(url, autocommit=True) as conn:

        def run() -> int:
            for rows in batches:
                with conn.transaction():
                    for row in rows:
                        conn.execute(NAIVE_INSERT, row)
            return sum(len(b) for b in batches)

        return timed(run)


def copy(url: str, source: Source, batch: int, total: int) -> tuple[int, float]:
    batches = [source.take(batch) for _ in range(max(1, total // batch))]
    cache = PartitionCache()
    with connect(url, autocommit=True) as conn:
        with conn.transaction():
            write_readings(conn, source.take(1), cache)  # partitions and staging exist

        def run() -> int:
            written = 0
            for rows in batches:
                with conn.transaction():
                    written += write_readings(conn, rows, cache)
            return written

        return timed(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--server-url",
        default=os.environ.get(
            "CLAUSEWATCH_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the row counts")
    args = parser.parse_args()
    settings = Settings()
    scale = args.scale

    with harness.scratch_database(args.server_url, "cw_bench") as url:
        migrate(url)
        source = Source()
        with connect(url) as conn:
            # The per-row baseline needs the day partitions the COPY path creates itself.
            start_day = dt.datetime.fromtimestamp(source.t0, dt.UTC).date()
            ensure_partitions(conn, 2, today=start_day)
            row = conn.execute("SHOW server_version").fetchone()
        print(f"PostgreSQL {row[0] if row else '?'}, Python {platform.python_version()},")
        print(f"{platform.machine()} {os.cpu_count()} cores, {platform.platform()}")
        print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        print()
        print(
            "| rows per batch | naive INSERT, autocommit per value, values/s"
            " | per-row INSERT, batched transaction, values/s | storage layer values/s"
            " | storage / naive | storage / batched per-row |"
        )
        print("|---:|---:|---:|---:|---:|---:|")
        for batch, autocommit_rows, batched_rows, copy_rows in (
            (1, 2_000, 2_000, 5_000),
            (10, 2_000, 5_000, 20_000),
            (100, 2_000, 10_000, 100_000),
            (settings.batch_rows, 2_000, 20_000, 300_000),
        ):
            a_rows, a_s = naive_autocommit(url, source, int(autocommit_rows * scale))
            b_rows, b_s = per_row_batched(url, source, batch, int(batched_rows * scale))
            c_rows, c_s = copy(url, source, batch, int(copy_rows * scale))
            label = f"{batch:,} (default)" if batch == settings.batch_rows else str(batch)
            naive_rate, batched_rate, copy_rate = a_rows / a_s, b_rows / b_s, c_rows / c_s
            print(
                f"| {label} | {naive_rate:,.0f} | {batched_rate:,.0f} | {copy_rate:,.0f}"
                f" | {copy_rate / naive_rate:.1f}× | {copy_rate / batched_rate:.1f}× |"
            )
        print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
