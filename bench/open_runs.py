"""What the open-run table (migration 0007) adds to a checkpoint save, and what counting open runs
costs a compliance report.

Run: .venv/bin/python bench/open_runs.py [--rooms 500] [--repeat 15]

One bench site of `rooms` rooms (a sensor and an HVAC controller each: 1,000 devices at 500
rooms) judged by the bundled clause set in the engine (no pipeline): every device reports once,
then a checkpoint of every part is taken. On a scratch database it times `save_checkpoint` as
the checkpoint writer calls it, each save in a transaction of its own and committed, with the
open runs (`store.checkpoints.save_open_runs`) and without them (the function replaced by a
no-op), the two alternating `--repeat` times, each after a VACUUM of the two tables (as
autovacuum keeps them between checkpoints; a whole checkpoint leaves every row dead); medians:

- a whole checkpoint (`replace_parts=True`: every part, the site's rows replaced);
- every device part changed (`replace_parts=False`: the steady state when every device took a
  reading since the previous checkpoint);
- a tenth of the parts changed;
- every device part changed, their runs as the previous save stored them and known to the
  saver (`stored_runs`, as the checkpoint writer keeps them: only changed runs are written);

and `compliance_report` of the site over 7 days (open runs only, no intervals stored).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import harness


def median_ms(repeat: int, run: Callable[[], Any]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()

    from compliance.rates import compliance_report
    from config.files import load_config_dir
    from rules.engine import SiteEngine
    from rules.site import SiteModel
    from store import checkpoints
    from store.checkpoints import save_checkpoint
    from store.migrate import migrate
    from store.pool import connect
    from store.registry import sync_clauses, sync_site

    real = checkpoints.save_open_runs

    def skip(*args: Any, **kwargs: Any) -> dict[str, int]:
        return {}

    bundled = load_config_dir(harness.CONFIG)
    site = SiteModel.model_validate(harness.site_dict("bench", args.rooms))
    bundled.sites = {"bench": site}
    engine = SiteEngine(site, bundled.clause_versions(), lateness=0.0)
    now = time.time()
    engine.advance(now - 60)
    for r in range(args.rooms):
        engine.observe(f"h{r}", now - 30, 1, {"hvac_mode": 1, "occupied": 1, "window_open": 0})
        engine.observe(
            f"s{r}", now - 30, 1, {"temperature": 26.4, "humidity": 55.0, "co2": 600.0 + r % 300}
        )
    engine.advance(now)
    engine.drain()
    checkpoint = engine.snapshot_changes()
    header = {k: v for k, v in checkpoint.items() if k != "parts"}
    parts: dict[str, Any] = checkpoint["parts"]
    devices = sum(1 for name in parts if name.startswith("device:"))

    devices_only = {name: part for name, part in parts.items() if name.startswith("device:")}
    tenth = dict(list(parts.items())[: max(1, len(parts) // 10)])
    cases = {
        "whole checkpoint": (parts, True),
        "every device part": (devices_only, False),
        "a tenth of the parts": (tenth, False),
        "every device, runs known": (devices_only, False),
    }

    with harness.scratch_database() as database:
        migrate(database)
        with connect(database) as conn:
            sync_site(conn, site, "bench")
            sync_clauses(conn, bundled.clause_files.values(), "bench")
            conn.commit()

            def vacuum() -> None:
                """The dead rows of the previous save gone, as autovacuum keeps them between
                checkpoints seconds apart (not timed)."""
                with connect(database, autocommit=True) as admin:
                    admin.execute("VACUUM engine_open_runs, engine_checkpoint_parts")

            known: dict[str, int] = {}

            def save(chosen: dict[str, Any], replace: bool, stored: dict[str, int] | None) -> None:
                known.update(
                    save_checkpoint(
                        conn,
                        "bench",
                        header,
                        now,
                        parts=chosen,
                        replace_parts=replace,
                        stored_runs=stored,
                    )
                )
                conn.commit()

            save(parts, True, None)  # warm: staging table, plans
            row = conn.execute("SELECT count(*) FROM engine_open_runs").fetchone()
            runs = row[0] if row else 0
            timed: dict[str, dict[bool, list[float]]] = {
                name: {True: [], False: []} for name in cases
            }
            for _ in range(args.repeat):
                for name, (chosen, replace) in cases.items():
                    for with_runs in (True, False):
                        checkpoints.save_open_runs = real if with_runs else skip
                        vacuum()
                        started = time.perf_counter()
                        save(chosen, replace, known if name.endswith("known") else None)
                        timed[name][with_runs].append((time.perf_counter() - started) * 1000)
            checkpoints.save_open_runs = real
            save(parts, True, None)
            until = dt.datetime.fromtimestamp(now + 3600, dt.UTC)
            since = until - dt.timedelta(days=7)
            report_ms = median_ms(
                args.repeat, lambda: compliance_report(conn, ["bench"], since, until, until)
            )
            conn.rollback()
    print(
        f"{devices} devices, {len(parts)} parts, {runs} open runs; medians of {args.repeat}"
        f" (load {os.getloadavg()[0]:.1f}), ms:"
    )
    print(f"  {'save_checkpoint of':34} {'with':>8} {'without':>8} {'added':>8}")
    for name, (chosen, _) in cases.items():
        with_, without = (statistics.median(timed[name][flag]) for flag in (True, False))
        label = f"{name} ({len(chosen)})"
        print(f"  {label:34} {with_:8.1f} {without:8.1f} {with_ - without:8.1f}")
    print(f"  compliance_report over 7 days: {report_ms:.1f}")


if __name__ == "__main__":
    main()
