"""What one late reading costs at a 1,000-room site (issue 17, defect 3).

The pipeline re-judges a site from the newest kept copy of its checkpoint before the late
timestamp (at most `history_every`, 1 h by default, of engine time back) with every input
stored since. This measures the engine's part: the size of one kept copy (the parts, orjson),
restoring an engine from it, and replaying the input since in event-time order (rules/rejudge),
for a copy 10 minutes and 60 minutes before the late reading. Readings every 60 s per sensor,
the HVAC state every 10 minutes (bench/engine.py's stream). The database's part (reading the
copy and the input, replacing the intervals) is measured with `--pipeline`: the same stream
through a real Pipeline on a scratch database (clock "data"), then one late reading, timed
from its flush to the swapped engine (`clausewatch_rejudge_seconds`).

    .venv/bin/python -m bench.late_input [--pipeline]
"""

from __future__ import annotations

import sys
import threading
import time

import orjson

from bench.engine import CONFIG, build_site, bundled_clauses, readings
from bench.harness import scalar, scratch_database
from clausewatch.service import sync_registry
from config.files import LoadedConfig, load_config_dir
from ingest.decode import Decoder, DeviceIndex
from ingest.mqtt import IngressQueue, ReceivedMessage
from ingest.pipeline import REJUDGE_SECONDS, Pipeline
from rules.engine import SiteEngine
from rules.rejudge import StoredInput, rejudge
from store.migrate import migrate
from store.pool import make_pool

ROOMS = 1000
STEP = 60.0
LATENESS = 60.0  # as bench/engine.py: its stream arrives shuffled by up to 15 s
START = 1_719_792_000.0 + 10 * 3600  # 2024-07-01 10:00 Asia/Shanghai: office hours


def main() -> None:
    site = build_site(ROOMS)
    clauses, standards = bundled_clauses()
    for minutes in (10, 60):
        steps = minutes + 3
        stream = readings(ROOMS, START, steps, STEP)
        engine = SiteEngine(site, clauses, lateness=LATENESS, standards=standards)
        copy: dict[str, object] = {}
        taken: list[StoredInput] = []
        for device, ts, step, metrics in stream:
            if step == 2 and not copy:  # a copy of the site after two minutes of data
                engine.advance(START + 2 * STEP)
                copy = engine.snapshot()
            engine.observe(device, ts, step, metrics)
            if copy:
                taken.append((device, ts, step, metrics))
        size = len(orjson.dumps(copy))
        now = START + (steps + 1) * STEP
        engine.advance(now)
        engine.drain()
        late_ts = START + 2 * STEP + 30.0
        taken.append(("s3", late_ts, 10**9, {"temperature": 20.0}))
        started = time.process_time()
        stored = orjson.loads(orjson.dumps(copy))
        loaded = time.process_time()
        result = rejudge(site, clauses, stored, taken, now, lateness=LATENESS, standards=standards)
        done = time.process_time()
        print(
            f"{ROOMS} rooms, copy {minutes} min before: copy {size / 1e6:.1f} MB,"
            f" decode {loaded - started:.2f} s, restore+replay of {len(taken)} inputs"
            f" {done - loaded:.2f} s CPU, {len(result.outputs)} outputs"
        )


def through_pipeline(minutes: int = 60) -> None:
    site = build_site(ROOMS)
    clauses, standards = bundled_clauses()
    loaded = load_config_dir(CONFIG)
    config = LoadedConfig(sites={"bench": site}, clause_files=loaded.clause_files)
    stream = readings(ROOMS, START, minutes + 3, STEP)
    with scratch_database(prefix="cw_bench_late") as url:
        migrate(url)
        sync_registry(url, config)
        pool = make_pool(url)
        inbox = IngressQueue(10_000)
        acked = [0]

        def ack(tokens: list[tuple[int, int, int]]) -> None:
            acked[0] += len(tokens)

        pipeline = Pipeline(
            pool,
            config.sites,
            clauses,
            Decoder(DeviceIndex.from_sites([site]), "cw"),
            inbox,
            ack,
            sink=lambda conn, model, outputs: None,
            standards=standards,
            lateness=LATENESS,
            clock="data",
        )
        pipeline.start()
        stop = threading.Event()
        for token, (device, ts, step, metrics) in enumerate(stream, 1):
            body = {"ts": int(ts * 1000), "seq": step, "metrics": metrics}
            topic = f"cw/bench/{device}/telemetry"
            inbox.put(ReceivedMessage(topic, orjson.dumps(body), ts + 1, (1, token, 1)), stop)
        while acked[0] < len(stream):
            time.sleep(0.1)
        stored = scalar(url, "SELECT count(*) FROM readings")
        copies = scalar(url, "SELECT count(*) FROM engine_checkpoint_history")
        size = scalar(url, "SELECT pg_total_relation_size('engine_checkpoint_history_parts')")
        before = REJUDGE_SECONDS._sum.get()
        # Just after the oldest copy: (nearly) all the stored input is replayed.
        late_ts = scalar(url, "SELECT min(horizon) FROM engine_checkpoint_history") + 1.0
        body = {"ts": int(late_ts * 1000), "seq": 10**9, "metrics": {"temperature": 20.0}}
        received = START + (minutes + 3) * STEP + 2
        late = ReceivedMessage("cw/bench/s3/telemetry", orjson.dumps(body), received, (1, 0, 1))
        inbox.put(late, stop)
        while REJUDGE_SECONDS._sum.get() == before:
            time.sleep(0.05)
        cost = REJUDGE_SECONDS._sum.get() - before
        pipeline.stop()
        pool.close()
        print(
            f"pipeline, {ROOMS} rooms, {stored} metric values stored over {minutes + 3} min,"
            f" {copies} kept copies ({size / 1e6:.1f} MB on disk): one late reading"
            f" {(received - late_ts) / 60:.1f} min late re-judged in {cost:.2f} s"
            " (load, replay, store, swap)"
        )


if __name__ == "__main__":
    if "--pipeline" in sys.argv:
        through_pipeline()
    else:
        main()
