"""Speed of the site workbook (issue 21): a generated site of 5,000 rooms and 10,000 devices
(bench/harness.py `site_dict`: a sensor and an HVAC controller per room, three metrics each),
with 100 parties and 300 assignments, exported and imported as .xlsx and as a zip of CSV files.

Run: .venv/bin/python bench/site_import.py [--rooms 5000] [--server-url URL]

Measures, each once (wall seconds and the process's CPU seconds):
- export (`write_workbook`) to .xlsx and to .zip;
- read (`read_workbook`, bounded, read-only openpyxl) of each;
- the dry run (`plan_import`: rows to model, the diff against the configured site, the site
  file validated with the bundled clause files as the service loads them): first with no site
  configured (all added), then of the unchanged workbook (a no-op), then with 500 rooms changed;
- apply (`apply_import`: the site file written atomically) and the registry sync
  (`store.registry.sync_site`, into a scratch database) of the first import and of the change.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import harness

from config import BUNDLED_DIR
from config.sitebook import SHEETS_BY_KEY, WorkbookRows
from config.sitefiles import apply_import, plan_import, read_workbook, write_workbook
from rules.site import SiteModel
from store.migrate import migrate
from store.pool import connect
from store.registry import sync_site

T = TypeVar("T")


def timed(label: str, action: Callable[[], T]) -> T:
    wall, cpu = time.perf_counter(), time.process_time()
    result = action()
    print(
        f"| {label} | {time.perf_counter() - wall:.2f} | {time.process_time() - cpu:.2f} |",
        flush=True,
    )
    return result


def bench_model(rooms: int) -> SiteModel:
    data = harness.site_dict("bench", rooms)
    data["parties"] = [
        {"id": f"p{i}", "name": f"责任人 {i}", "contacts": {"phone": f"+86-531-0000-{i:04d}"}}
        for i in range(100)
    ]
    floors = [s["id"] for s in data["spaces"] if s["type"] == "floor"]
    data["assignments"] = [
        {
            "party": f"p{i % 100}",
            "space": floors[i % len(floors)],
            "domain": ("*", "indoor_climate", "indoor_air")[i % 3],
            "level": i // 100,
            "valid_from": "2026-01-01T00:00:00+08:00",
        }
        for i in range(300)
    ]
    return SiteModel.model_validate(data)


def with_changed_rooms(book: WorkbookRows, count: int) -> WorkbookRows:
    """The workbook with the area of `count` rooms changed."""
    area = "area_m2"
    rows = [(n, dict(cells)) for n, cells in book.sheets["spaces"]]
    changed = 0
    for _, cells in rows:
        if changed < count and str(cells.get("id", "")).startswith("r"):
            cells[area] = 41
            changed += 1
    assert area in [c.key for c in SHEETS_BY_KEY["spaces"].columns]
    return WorkbookRows({**book.sheets, "spaces": rows}, list(book.problems))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rooms", type=int, default=5000)
    parser.add_argument("--server-url", default=harness.SERVER_URL)
    args = parser.parse_args()
    model = bench_model(args.rooms)
    print(
        f"{len(model.spaces)} spaces, {len(model.devices)} devices, "
        f"{sum(len(d.metrics) for d in model.devices)} metrics, {len(model.parties)} parties, "
        f"{len(model.assignments)} assignments; nproc {os.cpu_count()}, "
        f"load {os.getloadavg()[0]:.1f}"
    )
    print("| step | wall s | CPU s |\n|---|---:|---:|")
    with (
        tempfile.TemporaryDirectory() as scratch,
        harness.scratch_database(args.server_url, "cw_bench_import") as url,
    ):
        migrate(url)
        folder = Path(scratch)
        config = folder / "config"
        shutil.copytree(BUNDLED_DIR / "clauses", config / "clauses")
        (config / "sites").mkdir()
        xlsx, csvzip = folder / "bench.xlsx", folder / "bench.zip"
        timed("export .xlsx", lambda: write_workbook(model, xlsx))
        timed("export .zip of CSV", lambda: write_workbook(model, csvzip))
        print(f"| (sizes: .xlsx {xlsx.stat().st_size:,} B, .zip {csvzip.stat().st_size:,} B) | | |")
        book = timed("read .xlsx", lambda: read_workbook(xlsx))
        timed("read .zip of CSV", lambda: read_workbook(csvzip))
        plan = timed("dry run, new site (all added)", lambda: plan_import(book, config, "b"))
        timed("apply: write the site file", lambda: apply_import(plan))
        with connect(url) as conn:
            timed("registry sync, new site", lambda: sync_site(conn, plan.model, "bench"))
            conn.commit()
        again = timed("dry run, unchanged (no-op)", lambda: plan_import(book, config, "b"))
        assert again.diff.empty
        changed = with_changed_rooms(book, 500)
        plan = timed("dry run, 500 rooms changed", lambda: plan_import(changed, config, "b"))
        assert len(plan.diff.kinds["space"].changed) == 500
        timed("apply: write the site file", lambda: apply_import(plan))
        with connect(url) as conn:
            timed("registry sync, 500 rooms changed", lambda: sync_site(conn, plan.model, "b"))
            conn.commit()


if __name__ == "__main__":
    main()
