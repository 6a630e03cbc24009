"""Shape 5: data quality of one device. Stale (no reading for `stale_after`), stuck (the same
value for `stuck_for`), out of the physical range, a register going backwards.

The engine wakes these instances only when a watched metric's data quality may have changed
(a fault before or after a reading, or a reading after the value had expired), and by timers
(staleness, schedule). The metric slots themselves already turn such values unknown for every
clause that reads them (the engine sets their validity and stuck horizon from these clauses);
this instance raises the data-quality alert (kind "data_quality") while any monitored metric
has a fault. A value fault lasts until the metric's next good reading; staleness until any
reading of it.
"""

from __future__ import annotations

from typing import Any

from rules._instances import BoundClause, Instance
from rules._slots import (
    BACKWARDS,
    INF,
    NEG_INF,
    OUT_OF_RANGE,
    STUCK,
    MetricSlot,
    from_json,
    to_json,
)
from rules.clause import DataQualityCheck
from rules.verdicts import (
    Evidence,
    Status,
    Subject,
    ViolationEnded,
    ViolationStarted,
)

# One set object per combination of faults watched, shared by the instances (~200 bytes each).
_FAULT_SETS: dict[frozenset[str], frozenset[str]] = {}


def watched_faults(check: DataQualityCheck) -> frozenset[str]:
    """The faults a data-quality check reports, besides stale values."""
    faults = set()
    if check.out_of_range:
        faults.add(OUT_OF_RANGE)
    if check.stuck_for is not None:
        faults.add(STUCK)
    if check.register_backwards:
        faults.add(BACKWARDS)
    return _FAULT_SETS.setdefault(frozenset(faults), frozenset(faults))


class DataQuality(Instance):
    __slots__ = ("faults", "faulty_since", "params", "slots", "stale_after", "started")

    def __init__(
        self,
        bound: BoundClause,
        subject: Subject,
        uid: int,
        *,
        faults: frozenset[str],
        stale_after: float,
        slots: tuple[MetricSlot, ...],
        params: dict[str, float],
    ) -> None:
        """`faults` and `stale_after`: the check's (`watched_faults`, INF for none)."""
        super().__init__(bound, subject, uid)
        self.slots = slots
        self.stale_after = stale_after
        self.faults = faults
        self.params = params
        self.started = NEG_INF
        self.faulty_since = INF

    def wake(self, t: float) -> None:
        self.evaluate(t)

    def evaluate(self, t: float) -> None:
        t = max(t, self.t)
        if self.started == NEG_INF:
            self.started = t
        self.t = t
        problems = self.problems(t)
        if problems and self.faulty_since == INF:
            self.faulty_since = t
            slot = next(s for s in self.slots if s.metric == problems[0][1])
            evidence = (
                ()
                if slot.ts == NEG_INF
                else (Evidence(slot.ts, slot.metric, slot.value, slot.device),)
            )
            self.bound.out.append(
                ViolationStarted(
                    self.bound.ref,
                    self.subject,
                    "data_quality",
                    t,
                    t,
                    None if slot.ts == NEG_INF else slot.value,
                    None,
                    "; ".join(f"{fault}: {metric}" for fault, metric in problems),
                    dict(self.params),
                    evidence,
                )
            )
        elif not problems and self.faulty_since < INF:
            self.bound.out.append(
                ViolationEnded(
                    self.bound.ref, self.subject, "data_quality", self.faulty_since, t, None
                )
            )
            self.faulty_since = INF
        self.commit(t, self.status(t))
        self.plan(t)

    def problems(self, t: float) -> list[tuple[str, str]]:
        found = []
        for slot in self.slots:
            if slot.fault in self.faults:
                found.append((slot.fault, slot.metric))
            elif t >= max(slot.ts, self.started) + self.stale_after:
                found.append(("stale", slot.metric))
        return found

    def status(self, t: float) -> Status:
        if not self.inside(t):
            return "outside_schedule"
        return "violating" if self.faulty_since <= t else "compliant"

    def plan(self, t: float) -> None:
        due = self.seg_end
        for slot in self.slots:
            stale_at = max(slot.ts, self.started) + self.stale_after
            if t < stale_at < due:
                due = stale_at
        self.next_due = due
        self.schedule_timer()

    def state(self) -> dict[str, Any]:
        state = super().state()
        state["started"] = to_json(self.started)
        faulty_since = to_json(self.faulty_since)
        if faulty_since is not None:  # left out when not faulty (StateCheck.state: why)
            state["faulty_since"] = faulty_since
        return state

    def load(self, state: dict[str, Any]) -> None:
        super().load(state)
        self.started = from_json(state["started"], NEG_INF)
        self.faulty_since = from_json(state.get("faulty_since"), INF)
