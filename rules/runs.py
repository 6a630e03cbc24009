"""Open runs: the stretch each clause instance is in at the instant of an engine snapshot, read
from the snapshot's parts (`SiteEngine.snapshot`, `capture`).

Every instance keeps a run-length timeline (rules/_instances.py): `run_status` since
`run_start`, written out as a `ComplianceInterval` only when the status changes. So the stretch
in progress is in no stored interval: a compliance figure, a clause test or a backtest reads it
from here. While a `for` (`pending_since`) or a `clear_for` (`clear_since`) is running, the
status from that time on depends on how it ends: the run is known only up to there
(`known_until`); otherwise it holds up to the snapshot's clock.

Parts map instance keys `clause|version|space|device` (device '' for a space subject) to their
states. Pure: used by config (clause tests), compliance (backtests) and store (the open-run
table written with each checkpoint).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple


# A named tuple, not a frozen dataclass: a checkpoint makes one per started instance (a few per
# device), and a frozen dataclass's `__init__` (a `object.__setattr__` per field) was a sixth
# of capturing a part.
class OpenRun(NamedTuple):
    clause_id: str
    version: int
    space: str
    device: str  # '' for a space subject
    status: str
    start: float  # epoch seconds
    known_until: float | None  # a pending for / clear_for began here; None: up to the clock


def open_runs(instances: Mapping[str, Mapping[str, Any]]) -> Iterator[OpenRun]:
    """The open run of every started instance among `instances` (a part's "instances")."""
    for key, state in instances.items():
        status, start = state.get("run_status"), state.get("run_start")
        if status is None or start is None:
            continue  # not started
        fields = key.split("|")
        if len(fields) != 4 or not fields[1].isdigit():
            continue
        # Kinds without these fields never leave a stretch undecided; infinity is stored null.
        pending, clear = state.get("pending_since"), state.get("clear_since")
        if pending is None:
            known_until = clear
        else:
            known_until = pending if clear is None else min(pending, clear)
        yield OpenRun(
            fields[0],
            int(fields[1]),
            fields[2],
            fields[3],
            status,
            float(start),
            None if known_until is None else float(known_until),
        )
