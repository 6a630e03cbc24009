"""Runs the service benchmarks one after another and prints each figure with its ratio:
end-to-end throughput against the bare-subscriber ceiling with 1 and 2 workers (bench/e2e.py),
alert latency at 1,000 and 5,000 msg/s (bench/latency.py), and cost per reading and memory as
devices grow 1k → 10k (bench/scale.py; 100k on its own, see below). Each step takes about two
minutes or less; everything runs on 127.0.0.1 with its own broker and scratch databases.

Run: .venv/bin/python bench/run_all.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
STEPS = (
    ["e2e.py", "--messages", "120000", "--workers", "1", "2"],
    ["latency.py", "--rates", "1000", "5000", "--seconds", "15"],
    # 100,000 devices take about seven minutes (building the site and its state): run
    # `bench/scale.py --devices 1000 10000 100000` on its own for that figure.
    ["scale.py", "--devices", "1000", "10000", "--messages", "60000"],
)


def main() -> int:
    failed = 0
    for script, *args in STEPS:
        print(f"\n== {script} {' '.join(args)}", flush=True)
        failed |= subprocess.run(
            [sys.executable, str(HERE / script), *args], check=False
        ).returncode
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
