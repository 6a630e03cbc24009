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

`--paired URL URL ...` compares servers instead (say native PostgreSQL and TimescaleDB): only the
storage layer at the default batching, in rounds that alternate between the servers, reporting
per server the median values/s and the backend's CPU per value (read from /proc, so only for a
server on this machine): wall figures swing with the machine's load, the backend's CPU much less.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import harness

from clausewatch.settings import Settings
from config.urls import redact_url
from store.batches import PartitionCache, ReadingRow, write_readings
from store.migrate import migrate
from store.mode import storage_mode
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


def backend_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) a server process has used; None when it is not on this
    machine."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def paired(server_urls: list[str], batch: int, values: int, rounds: int) -> None:
    """The storage layer on each server in turn, `rounds` times, `values` per round."""
    source = Source()
    rates: dict[str, list[float]] = {url: [] for url in server_urls}
    cpus: dict[str, list[float]] = {url: [] for url in server_urls}
    with ExitStack() as stack:
        targets = []
        for server_url in server_urls:
            url = stack.enter_context(harness.scratch_database(server_url, "cw_bench"))
            migrate(url)
            conn = stack.enter_context(connect(url, autocommit=True))
            cache = PartitionCache()
            with conn.transaction():
                write_readings(conn, source.take(1), cache)  # partitions and staging exist
            targets.append((server_url, conn, cache, storage_mode(conn)))
        print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        for turn in range(rounds):
            for server_url, conn, cache, _ in targets[:: 1 if turn % 2 == 0 else -1]:
                batches = [source.take(batch) for _ in range(max(1, values // batch))]
                pid = conn.info.backend_pid
                cpu_before, started = backend_cpu(pid), time.perf_counter()
                written = 0
                for rows in batches:
                    with conn.transaction():
                        written += write_readings(conn, rows, cache)
                elapsed, cpu_after = time.perf_counter() - started, backend_cpu(pid)
                rates[server_url].append(written / elapsed)
                if cpu_before is not None and cpu_after is not None:
                    cpus[server_url].append((cpu_after - cpu_before) / written * 1e6)
        print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
        print()
        print(
            f"| server | mode | values/s, median of {rounds} | range"
            " | backend CPU µs per value, median | range |"
        )
        print("|---|---|---:|---|---:|---|")
        for server_url, _, _, mode in targets:
            rate, cpu = rates[server_url], cpus[server_url]
            cpu_text = (
                f"{statistics.median(cpu):.2f} | {min(cpu):.2f}–{max(cpu):.2f}" if cpu else "– | –"
            )
            print(
                f"| {redact_url(server_url)} | {mode} | {statistics.median(rate):,.0f}"
                f" | {min(rate):,.0f}–{max(rate):,.0f} | {cpu_text} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--server-url",
        default=os.environ.get(
            "CLAUSEWATCH_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the row counts")
    parser.add_argument(
        "--paired", nargs="+", metavar="SERVER_URL", help="compare these servers (see above)"
    )
    parser.add_argument("--rounds", type=int, default=7, help="rounds per server (--paired)")
    args = parser.parse_args()
    settings = Settings()
    scale = args.scale
    if args.paired:
        paired(args.paired, settings.batch_rows, int(100_000 * scale), args.rounds)
        return

    with harness.scratch_database(args.server_url, "cw_bench") as url:
        migrate(url)
        source = Source()
        with connect(url) as conn:
            # The per-row baseline needs the day partitions the COPY path creates itself.
            start_day = dt.datetime.fromtimestamp(source.t0, dt.UTC).date()
            ensure_partitions(conn, 2, today=start_day)
            row = conn.execute("SHOW server_version").fetchone()
            mode = storage_mode(conn)
        version = row[0] if row else "?"
        print(f"PostgreSQL {version} ({mode} mode), Python {platform.python_version()},")
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
