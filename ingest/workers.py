"""Scale-out on one machine: `clausewatch run --workers N` runs N ingest processes (SPEC §1).

Each worker owns whole sites: it subscribes `{prefix}/{site}/+/+` for its sites only, in a
persistent session of its own (client id `{mqtt_client_id}-w{index}`), and holds those sites'
engines, so all state of one subject lives in one process and one writer serves each site.
PostgreSQL is the shared store. Worker 0 also serves the API and runs the periodic database
jobs; every worker ticks its own engines' clock.

Sites are dealt to workers by device count (largest first, to the least loaded worker), so the
assignment depends only on the loaded site models: a restart with the same files and the same N
gives every worker the same sites, and its persistent session the messages it missed. Changing
N moves sites between sessions: stop the service cleanly first (a clean stop acknowledges
everything taken), since messages queued for an old session are not handed over.

With several workers a topic of an unknown site matches no worker's filter, so it is not
dead-lettered (with one worker, `{prefix}/#` catches it).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence

from rules.site import SiteModel

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 60.0
_PR_SET_PDEATHSIG = 1


def partition_sites(sites: Mapping[str, SiteModel], workers: int) -> list[tuple[str, ...]]:
    """The site ids each of `workers` processes owns; disjoint, covering, deterministic."""
    if workers < 1:
        raise ValueError("workers must be at least 1")
    if workers > max(1, len(sites)):
        raise ValueError(f"{workers} workers for {len(sites)} site(s): a worker owns whole sites")
    loads = [0] * workers
    owned: list[list[str]] = [[] for _ in range(workers)]
    for site_id in sorted(sites, key=lambda s: (-len(sites[s].devices), s)):
        target = min(range(workers), key=lambda i: (loads[i], i))
        owned[target].append(site_id)
        loads[target] += max(1, len(sites[site_id].devices))
    return [tuple(sorted(ids)) for ids in owned]


def die_with_parent() -> None:
    """Linux: SIGTERM this process when its supervisor dies (even by SIGKILL), so no worker
    keeps a session alive behind a dead supervisor. A no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def supervise(
    worker_commands: Sequence[Sequence[str]], env: Mapping[str, str] | None = None
) -> int:
    """Starts one process per command (with `env` as its environment when given: the database
    and broker URLs travel there, never on a command line) and waits. SIGINT/SIGTERM stop
    every worker cleanly (SIGTERM, then wait); a worker that exits on its own stops the others
    and the supervisor exits 1, so a process manager restarts the whole set with the same
    partition."""
    stop = threading.Event()

    def handler(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    processes = [
        subprocess.Popen(list(command), env=None if env is None else dict(env))
        for command in worker_commands
    ]
    failed = False
    try:
        while not stop.wait(0.5):
            exited = [p for p in processes if p.poll() is not None]
            if exited:
                log.error(
                    "worker pid %d exited with %s; stopping the others",
                    exited[0].pid,
                    exited[0].returncode,
                )
                failed = True
                break
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.error("worker pid %d did not stop in time; killing it", process.pid)
                process.kill()
                process.wait()
    return 1 if failed else 0
