"""Clause instances: one clause version judged for one subject, as a small state machine.

Every instance keeps a run-length compliance timeline: `run_status` since `run_start`, closed
into a `ComplianceInterval` only when the status changes. While a `for` duration or a
`clear_for` duration is pending nothing is committed, because the status of the pending stretch
depends on how it ends; when it resolves, the stretch is committed from its true start.

Instances are woken by readings (`evaluate`) and by time (`advance_to`): `next_due` is the next
time at which the instance's raw state or a pending duration can change without any reading
(schedule boundary, a value expiring, `for` elapsing). The engine keeps a heap on it
(`TimerHeap`).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Final

from rules._conditions import Evaluator, Leaf
from rules._slots import INF, NEG_INF, MetricSlot, from_json, to_json
from rules.schedule import CompiledSchedule
from rules.verdicts import (
    ClauseRef,
    ComplianceInterval,
    Evidence,
    Output,
    Status,
    Subject,
    ViolationEnded,
    ViolationStarted,
)

# Raw state of a condition at an instant.
PASS: Final = 0
FAIL: Final = 1
UNKNOWN: Final = 2
OUTSIDE: Final = 3
_STATUS_OF: Final[tuple[Status, ...]] = (
    "compliant",
    "violating",
    "not_assessable",
    "outside_schedule",
)
EVIDENCE_KEPT: Final = 10
# A gate `metric == state` (or !=) is read straight from its slot (`gate_slot`), not by a
# compiled function.
SIMPLE_GATE_OPS: Final = ("==", "!=")


class DueFloor:
    """A lower bound on the timer dues (`heap_due`, never above `next_due`) of a group of
    instances: the instances a device's readings wake. A reading at or before it has no
    time-driven change of theirs to catch up first, so the engine skips looking at each one
    (at 1,000 rooms every instance looked at is a cache miss). Lowered by every timer push of
    a member; raised only by the engine after a scan of all members."""

    __slots__ = ("due_floor",)

    def __init__(self) -> None:
        self.due_floor = NEG_INF


class _ReadForEveryReading:
    """The fields read when a reading wakes an instance, in a class of their own: CPython lays
    out `__slots__` base class first (each class's names sorted), so these share the first
    three cache lines of every instance instead of being spread over all six. At 1,000 rooms
    each line of an instance read per reading is a cache miss. The state-check fields among
    them (gate..., held, last_raw, slot, value_of, violating) are set by the kinds that use
    them; a threshold's limits are in its shared `CheckTerms`."""

    __slots__ = (
        "gate",
        "gate_equal",
        "gate_slot",
        "gate_value",
        "heap_due",
        "held",
        "last_raw",
        "next_due",
        "quiet_until",
        "seg_end",
        "seg_inside",
        "seg_start",
        "slot",
        "t",
        "value_of",
        "violating",
    )


class BoundClause:
    """What every instance of one clause version bound to a site shares: the clause's reference
    and compiled schedule, the engine's outputs and its timers. One object: each instance
    holding the four was 32 bytes of it (issue 24)."""

    __slots__ = ("key_prefix", "out", "ref", "schedule", "timers")

    def __init__(
        self, ref: ClauseRef, schedule: CompiledSchedule, out: list[Output], timers: TimerHeap
    ) -> None:
        self.ref = ref
        self.key_prefix = f"{ref.clause_id}|{ref.version}|"  # of its instances' keys
        self.schedule = schedule
        self.out = out
        self.timers = timers


class Instance(_ReadForEveryReading):
    """What all instances share: identity, schedule cache, timeline, timer registration."""

    __slots__ = (
        "bound",
        "closed_end",
        "closed_status",
        "floors",
        "heap_pos",
        "part",
        "run_start",
        "run_status",
        "subject",
        "uid",
    )

    def __init__(self, bound: BoundClause, subject: Subject, uid: int) -> None:
        self.bound = bound
        self.subject = subject
        self.uid = uid
        self.t = NEG_INF  # event time up to which this instance has been judged
        self.run_status: Status | None = None
        self.run_start = NEG_INF
        # When the last interval this instance closed ended, and its status: while it is not
        # drained it may be taken back (`commit`). Not the interval itself: kept, it outlived
        # its drain (3 a device, 0.26 KiB).
        self.closed_end = NEG_INF
        self.closed_status: Status | None = None
        self.seg_start = INF
        self.seg_end = NEG_INF
        self.seg_inside = False
        self.next_due = NEG_INF  # -inf: not started; the first advance() starts it
        # Due time of this instance's timer-heap entry (INF: none), and its place in the heap
        # (-1: none). An entry only ever moves earlier; a later due waits for it to come.
        self.heap_due = INF
        self.heap_pos = -1
        # Readings before this time cannot change anything (outside the schedule, or a
        # data-quality check with nothing wrong): the engine skips evaluate() for them.
        self.quiet_until = NEG_INF
        # Of the devices whose readings wake this instance; a tuple: one object, not two.
        self.floors: tuple[DueFloor, ...] = ()
        self.part = ""  # the snapshot part holding its state (set by the engine)

    @property
    def key(self) -> str:
        """Names the instance in snapshots: clause|version|space|device. Derived, not kept: a
        string per instance was ~80 bytes of every device's memory."""
        return self.bound.key_prefix + subject_key(self.subject)

    # ---- shared machinery ----

    def inside(self, t: float) -> bool:
        if self.seg_start <= t < self.seg_end:
            return self.seg_inside
        self.seg_start, self.seg_end, self.seg_inside = self.bound.schedule.segment_at(t)
        return self.seg_inside

    def commit(self, t: float, status: Status) -> None:
        """The timeline has `status` from `t` on (t never goes back)."""
        current = self.run_status
        if current == status:
            return
        if t == self.run_start:
            # The current run has no length: inputs of one instant applied one after another
            # (a gate, then the value it gates). Back to the status of the run closed at this
            # instant, that run goes on unbroken, if its interval is not drained yet.
            if self.closed_end == t and self.closed_status == status:
                closed = self._take_back(t)
                if closed is not None:
                    self.run_status, self.run_start = status, closed.start
                    self.closed_end = NEG_INF
                    return
        elif current is not None:
            self.bound.out.append(
                ComplianceInterval(self.bound.ref, self.subject, self.run_start, t, current)
            )
            self.closed_end = t
            self.closed_status = current
        self.run_status = status
        self.run_start = t

    def _take_back(self, end: float) -> ComplianceInterval | None:
        """This instance's interval ending at `end`, taken out of the outputs not drained yet;
        None if it is gone."""
        out = self.bound.out
        ref = self.bound.ref
        subject = self.subject
        for index in range(len(out) - 1, -1, -1):
            output = out[index]
            if (
                isinstance(output, ComplianceInterval)
                and output.end == end
                and output.clause is ref
                and output.subject is subject
            ):
                del out[index]
                return output
        return None

    def schedule_timer(self) -> None:
        if self.next_due < self.heap_due:
            self.push_timer(self.next_due)

    def push_timer(self, due: float) -> None:
        """A timer-heap entry at `due` (earlier than `heap_due`)."""
        self.bound.timers.push(self, due)
        for floor in self.floors:
            if due < floor.due_floor:
                floor.due_floor = due

    def catch_up(self, t: float) -> None:
        """Process every time-driven change strictly before `t`."""
        if self.t == NEG_INF:
            return  # not started: the reading at `t` starts it
        while self.next_due < t:
            self.wake(max(self.next_due, self.t))

    def advance_to(self, t: float) -> None:
        """Process every time-driven change up to and including `t`."""
        if self.next_due == NEG_INF:
            self.wake(t)
        while self.next_due <= t:
            self.wake(max(self.next_due, self.t))

    def wake(self, t: float) -> None:
        """Time alone has reached `t` (a due timer, or the first advance)."""
        raise NotImplementedError

    def evaluate(self, t: float) -> None:
        """A reading this instance listens to was released at `t`."""
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        return {
            "t": to_json(self.t),
            "run_status": self.run_status,
            "run_start": to_json(self.run_start),
        }

    def load(self, state: dict[str, Any]) -> None:
        self.t = from_json(state["t"], NEG_INF)
        self.run_status = state["run_status"]
        self.run_start = from_json(state["run_start"], NEG_INF)
        self.next_due = self.t if self.t > NEG_INF else NEG_INF


def subject_key(subject: Subject) -> str:
    """The part of an instance's key (`Instance.key`) that names its subject."""
    return f"{subject.space}|{subject.device or ''}"


class TimerHeap:
    """The instances waiting for a time-driven change, a binary min-heap by (`heap_due`, `uid`)
    holding each instance at most once (at `heap_pos`): an earlier due moves its entry up in
    place. A heap of (due, uid, instance) tuples, superseded entries skipped as they came up,
    held about 1.5 entries an instance at about 130 bytes each (tuple, float and int), a
    tenth of a device's state."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[Instance] = []

    def push(self, instance: Instance, due: float) -> None:
        """`instance` due at `due`, earlier than its `heap_due`: added, or moved up."""
        instance.heap_due = due
        position = instance.heap_pos
        if position < 0:
            position = len(self.items)
            self.items.append(instance)
        self._sift_up(instance, position)

    def pop(self) -> Instance:
        """Takes the entry due first out of the heap (`heap_due` is left to the caller)."""
        items = self.items
        first = items[0]
        last = items.pop()
        if last is not first:
            self._sift_down(last, 0)
        first.heap_pos = -1
        return first

    def fill(self, instances: list[Instance]) -> None:
        """The heap made of `instances` at their `heap_due` at once (replacing its entries)."""
        self.clear()
        items = self.items
        items.extend(instances)
        for position, instance in enumerate(items):
            instance.heap_pos = position
        for position in range(len(items) // 2 - 1, -1, -1):
            self._sift_down(items[position], position)

    def clear(self) -> None:
        for instance in self.items:
            instance.heap_pos = -1
        self.items.clear()

    def _sift_up(self, instance: Instance, position: int) -> None:
        items = self.items
        due = instance.heap_due
        uid = instance.uid
        while position > 0:
            above = (position - 1) >> 1
            parent = items[above]
            if parent.heap_due < due or (parent.heap_due == due and parent.uid < uid):
                break
            items[position] = parent
            parent.heap_pos = position
            position = above
        items[position] = instance
        instance.heap_pos = position

    def _sift_down(self, instance: Instance, position: int) -> None:
        items = self.items
        end = len(items)
        due = instance.heap_due
        uid = instance.uid
        child = 2 * position + 1
        while child < end:
            first = items[child]
            right = child + 1
            if right < end:
                other = items[right]
                if other.heap_due < first.heap_due or (
                    other.heap_due == first.heap_due and other.uid < first.uid
                ):
                    child = right
                    first = other
            if due < first.heap_due or (due == first.heap_due and uid < first.uid):
                break
            items[position] = first
            first.heap_pos = position
            position = child
            child = 2 * position + 1
        items[position] = instance
        instance.heap_pos = position


class CheckTerms:
    """What the instances of a state check over one kind of subject share: how long a failure
    lasts before it is a violation (`for_`), how long and by how much a violation must pass to
    end (`clear_for`, `margin`), the parameters recorded with a violation and the unit of its
    value; for a threshold, the limits with the tolerance applied (`low`, `high`). One object
    for all of them (the engine shares equal ones): held by each instance they were 56 to 72
    bytes of it (issue 24)."""

    __slots__ = ("clear_for", "for_", "high", "low", "margin", "params", "unit")

    def __init__(
        self,
        *,
        for_: float,
        clear_for: float,
        margin: float,
        params: dict[str, float],
        unit: str | None,
        low: float = NEG_INF,
        high: float = INF,
    ) -> None:
        self.for_ = for_
        self.clear_for = clear_for
        self.margin = margin
        self.params = params
        self.unit = unit
        self.low = low
        self.high = high


class StateCheck(Instance):
    """Shapes 1 and 2: a condition on the subject's metrics that must keep passing, with a
    minimum duration before a violation starts and hysteresis for its end."""

    __slots__ = (
        "clear_since",
        "evidence",
        "leaves",
        "passes",
        "pending_since",
        "started_at",
        "terms",
        "watched",
        "worst",
        "worst_excess",
    )

    def __init__(
        self,
        bound: BoundClause,
        subject: Subject,
        uid: int,
        *,
        passes: Evaluator,
        leaves: tuple[Leaf, ...],
        gate: Evaluator | None,
        simple_gate: Leaf | None = None,
        terms: CheckTerms,
        watched: tuple[MetricSlot, ...],
    ) -> None:
        """`watched`: the distinct slots `leaves` read (their expiry is a timer)."""
        super().__init__(bound, subject, uid)
        self.terms = terms
        self.passes = passes
        self.leaves = leaves
        self.gate = gate
        # A gate of the common form `metric == state` (or !=) is read straight from its slot.
        self.gate_slot: MetricSlot | None = None
        self.gate_value = math.nan
        self.gate_equal = True
        if simple_gate is not None and simple_gate.op in SIMPLE_GATE_OPS:
            self.gate_slot = simple_gate.slot
            self.gate_value = simple_gate.limit
            self.gate_equal = simple_gate.op == "=="
        self.watched = watched  # the engine shares equal tuples
        self.violating = False
        self.last_raw = -1  # raw state at the last evaluation; apply() is idempotent on it
        self.pending_since = INF  # a failing stretch waiting for `for`
        self.clear_since = INF  # a passing stretch waiting for `clear_for`
        self.started_at = INF
        self.worst: float | None = None
        self.worst_excess = NEG_INF
        # Made at the first failure: most instances never fail, and an empty deque is ~600
        # bytes (a fifth of a device's memory when every instance had one).
        # Plain tuples (ts, metric, value, device), made Evidence when a violation starts: a
        # failing reading of a pending violation kept one, and building the dataclass was 5 %
        # of the pipeline's thread in the end-to-end bench (issue 24).
        self.evidence: deque[tuple[float, str, float, str]] | None = None
        # A violation confirmed at the instant it began (no `for`), or ended at the instant of
        # the input being judged, is held until time moves past that instant: another reading
        # at the same instant (another device's, or another metric's) may still undo it. A
        # violation of zero length is no violation, and a gate reading must not end a violation
        # that the value of the same instant keeps (inside the clear margin).
        self.held: ViolationStarted | ViolationEnded | None = None

    def raw(self, t: float) -> int:
        if not (self.seg_start <= t < self.seg_end):
            self.seg_start, self.seg_end, self.seg_inside = self.bound.schedule.segment_at(t)
        if not self.seg_inside:
            return OUTSIDE
        gate_slot = self.gate_slot
        if gate_slot is not None:
            if t >= gate_slot.until:
                return UNKNOWN
            if (gate_slot.value == self.gate_value) is not self.gate_equal:
                return OUTSIDE
        elif self.gate is not None:
            open_ = self.gate(t, 0.0)
            if open_ is None:
                return UNKNOWN
            if not open_:
                return OUTSIDE
        result = self.passes(t, self.terms.margin if self.violating else 0.0)
        if result is None:
            return UNKNOWN
        return PASS if result else FAIL

    def evaluate(self, t: float) -> None:
        """A reading of one of this instance's metrics was taken at `t`. What raw() and plan()
        do is inlined: this runs for nearly every reading of its device."""
        if t < self.t:
            t = self.t
        self.t = t
        if self.held is not None:
            self.settle_held(t)
        if self.next_due <= t:
            self.timers_due(t)
        if not (self.seg_start <= t < self.seg_end):
            self.seg_start, self.seg_end, self.seg_inside = self.bound.schedule.segment_at(t)
        raw = -1  # not judged yet
        if not self.seg_inside:
            raw = OUTSIDE
        elif self.gate_slot is not None:
            gate_slot = self.gate_slot
            if t >= gate_slot.until:
                raw = UNKNOWN
            elif (gate_slot.value == self.gate_value) is not self.gate_equal:
                raw = OUTSIDE
        elif self.gate is not None:
            open_ = self.gate(t, 0.0)
            if open_ is None:
                raw = UNKNOWN
            elif not open_:
                raw = OUTSIDE
        if raw < 0:
            result = self.passes(t, self.terms.margin if self.violating else 0.0)
            raw = UNKNOWN if result is None else PASS if result else FAIL
        if raw == FAIL:
            self.note_failure(t)
        if raw != self.last_raw:
            self.apply(t, raw)
            self.last_raw = raw
        due = self.seg_end
        if self.seg_inside:  # outside the schedule nothing changes before it ends
            for slot in self.watched:
                until = slot.until
                if t < until < due:
                    due = until
        if self.pending_since < INF and self.pending_since + self.terms.for_ < due:
            due = self.pending_since + self.terms.for_
        if self.clear_since < INF and self.clear_since + self.terms.clear_for < due:
            due = self.clear_since + self.terms.clear_for
        if self.held is not None:  # wake just after the instant to release it
            due = min(due, math.nextafter(_instant(self.held), INF))
        if due <= t:  # cannot happen with consistent inputs; never spin
            due = INF
        self.next_due = due
        self.quiet_until = self.seg_end if not self.seg_inside else NEG_INF
        if due < self.heap_due:
            self.push_timer(due)

    def wake(self, t: float) -> None:
        self.t = t
        if self.held is not None:
            self.settle_held(t)
        self.timers_due(t)
        raw = self.raw(t)
        self.apply(t, raw)
        self.last_raw = raw
        self.plan(t)

    def plan(self, t: float) -> None:
        due = self.seg_end
        if self.seg_inside:  # outside the schedule nothing changes before it ends
            for slot in self.watched:
                until = slot.until
                if t < until < due:
                    due = until
        if self.pending_since < INF and self.pending_since + self.terms.for_ < due:
            due = self.pending_since + self.terms.for_
        if self.clear_since < INF and self.clear_since + self.terms.clear_for < due:
            due = self.clear_since + self.terms.clear_for
        if self.held is not None:  # wake just after the instant to release it
            due = min(due, math.nextafter(_instant(self.held), INF))
        if due <= t:  # cannot happen with consistent inputs; never spin
            due = INF
        self.next_due = due
        self.quiet_until = self.seg_end if not self.seg_inside else NEG_INF
        if due < self.heap_due:
            self.push_timer(due)

    def timers_due(self, t: float) -> None:
        if self.pending_since + self.terms.for_ <= t:
            self.confirm(self.pending_since + self.terms.for_)
        elif self.clear_since + self.terms.clear_for <= t:
            self.end(self.clear_since)

    def apply(self, t: float, raw: int) -> None:
        if self.violating:
            if raw == FAIL:
                self.clear_since = INF
            elif raw == PASS:
                if self.clear_since == INF:
                    self.clear_since = t
                    if self.terms.clear_for <= 0:
                        self.end(t)
            else:
                self.end(self.clear_since if self.clear_since < t else t)
                self.commit(t, _STATUS_OF[raw])
            return
        if raw == FAIL:
            if self.pending_since == INF:
                self.pending_since = t
                if self.terms.for_ <= 0:
                    self.confirm(t)
            return
        if self.pending_since < INF:
            self.commit(self.pending_since, "compliant")  # shorter than `for`: compliant
            self.pending_since = INF
            self.evidence = None
            self.worst = None
            self.worst_excess = NEG_INF
        self.commit(t, _STATUS_OF[raw])

    def note_failure(self, t: float) -> None:
        """Keep the readings behind a failure as evidence, and the worst value."""
        primary = self.leaves[0].metric
        for leaf in self.leaves:
            value = leaf.current(t)
            if value is None:
                continue
            excess = leaf.excess(value)
            # Only the primary metric's values compete for the worst: they share its unit.
            if leaf.metric == primary and excess > self.worst_excess:
                self.worst_excess = excess
                self.worst = value
            if not self.violating:
                slot = leaf.slot
                self.keep_evidence(slot.ts, leaf.metric, value, slot.device)

    def confirm(self, at: float) -> None:
        start = self.pending_since
        self.violating = True
        self.started_at = start
        self.pending_since = INF
        self.clear_since = INF
        self.commit(start, "violating")
        started = ViolationStarted(
            self.bound.ref,
            self.subject,
            "violation",
            start,
            at,
            self.worst,
            self.terms.unit,
            self.reason(),
            dict(self.terms.params),
            () if self.evidence is None else tuple(Evidence(*kept) for kept in self.evidence),
            self.leaves[0].metric,
        )
        if at == start:
            self.held = started
        else:
            self.bound.out.append(started)
        self.evidence = None

    def keep_evidence(self, ts: float, metric: str, value: float, device: str) -> None:
        kept = self.evidence
        if kept is None:
            kept = self.evidence = deque(maxlen=EVIDENCE_KEPT)
        kept.append((ts, metric, value, device))

    def release_held(self, t: float) -> None:
        held = self.held
        if held is not None and t > _instant(held):
            self.bound.out.append(held)
            self.held = None

    def settle_held(self, t: float) -> None:
        """Time has moved past a held violation: it happened. Or more input arrived for the
        same instant: judge that instant again from before the violation."""
        held = self.held
        assert held is not None
        if t > _instant(held):
            self.bound.out.append(held)
            self.held = None
            return
        self.held = None
        if isinstance(held, ViolationEnded):
            # Judge the instant again from before the end: violating, the margin applying.
            self.violating = True
            self.started_at = held.started_at
            self.worst = held.worst_value
            worst = held.worst_value
            self.worst_excess = NEG_INF if worst is None else self.leaves[0].excess(worst)
            self.pending_since = INF
            self.clear_since = INF
            self.last_raw = -1
            self.commit(t, "violating")  # takes back the interval that ended at t
            return
        self.violating = False
        self.started_at = INF
        self.pending_since = INF
        self.clear_since = INF
        self.last_raw = -1  # forces apply(): the timeline at t is decided again

    def end(self, at: float) -> None:
        self.violating = False
        self.clear_since = INF
        if isinstance(self.held, ViolationStarted) and at == self.held.started_at:
            self.held = None  # began and ended at one instant: nothing happened
        else:
            self.release_held(at)
            ended = ViolationEnded(
                self.bound.ref, self.subject, "violation", self.started_at, at, self.worst
            )
            if at == self.t:  # input of this instant may still follow and keep it going
                self.held = ended
            else:
                self.bound.out.append(ended)
        self.commit(at, "compliant")
        self.started_at = INF
        self.worst = None
        self.worst_excess = NEG_INF

    def reason(self) -> str:
        parts = [f"{leaf.metric} {leaf.op} {leaf.limit:g}" for leaf in self.leaves]
        return "condition failed: " + ", ".join(parts)

    def state(self) -> dict[str, Any]:
        """What differs from a fresh instance: a field at its default (null, false, empty) is
        left out, as most are (no violation, nothing pending). Every instance's state is held
        by a checkpoint being captured and stored in the parts: a third of the bytes."""
        state = super().state()
        if self.violating:
            state["violating"] = True
        for name, value in (
            ("pending_since", to_json(self.pending_since)),
            ("clear_since", to_json(self.clear_since)),
            ("started_at", to_json(self.started_at)),
            ("worst", self.worst),
            ("worst_excess", to_json(self.worst_excess)),
        ):
            if value is not None:
                state[name] = value
        if self.evidence:
            state["evidence"] = [list(kept) for kept in self.evidence]
        if self.held is not None:
            state["held"] = _held_json(self.held)
        return state

    def load(self, state: dict[str, Any]) -> None:
        """Takes a state of `state()`, or of the snapshots that listed every field."""
        super().load(state)
        self.violating = bool(state.get("violating", False))
        self.last_raw = -1
        self.pending_since = from_json(state.get("pending_since"), INF)
        self.clear_since = from_json(state.get("clear_since"), INF)
        self.started_at = from_json(state.get("started_at"), INF)
        self.worst = state.get("worst")
        self.worst_excess = from_json(state.get("worst_excess"), NEG_INF)
        self.evidence = None
        for ts, metric, value, device in state.get("evidence", ()):
            self.keep_evidence(ts, metric, value, device)
        held = state.get("held")
        self.held = None if held is None else _held_from_json(held, self.bound.ref, self.subject)


class ThresholdCheck(StateCheck):
    """Shape 1 on the hot path: one metric within [low, high] (limits with tolerance applied).

    `evaluate` inlines what `StateCheck` does through method calls (schedule cache, gate,
    comparison, timer planning): it runs for nearly every reading, so each call saved counts.
    A gate of the common form `metric == state` (or !=) is read straight from its slot."""

    __slots__ = ("replan_always",)  # the others are among _ReadForEveryReading's

    # The whole signature spelled out: a compiled (mypyc) class cannot forward *args and
    # **kwargs to its base's __init__.
    def __init__(
        self,
        bound: BoundClause,
        subject: Subject,
        uid: int,
        *,
        passes: Evaluator,
        leaves: tuple[Leaf, ...],
        gate: Evaluator | None,
        simple_gate: Leaf | None = None,
        terms: CheckTerms,
        watched: tuple[MetricSlot, ...],
    ) -> None:
        super().__init__(
            bound,
            subject,
            uid,
            passes=passes,
            leaves=leaves,
            gate=gate,
            simple_gate=simple_gate,
            terms=terms,
            watched=watched,
        )
        leaf = self.leaves[0]
        self.slot: MetricSlot = leaf.slot
        self.value_of = leaf.aggregate
        # Set by the engine when a slot read here can expire earlier after a new good reading
        # (a space slot fed by devices with different validity): no skipping the re-plan then.
        self.replan_always = False

    def evaluate(self, t: float) -> None:
        if t < self.t:
            t = self.t
        self.t = t
        if self.held is not None:
            self.settle_held(t)
        timers_were_due = self.next_due <= t
        if timers_were_due:
            self.timers_due(t)
        raw = self.raw(t)
        if raw == FAIL:
            self.note_failure(t)
        if raw == self.last_raw and not timers_were_due and not self.replan_always:
            # Nothing changed: the planned wake-up is no later than the true next change
            # (values only expire later after a new good reading; a fault changes `raw`), and
            # waking early costs one idle re-evaluation. Skipping the re-plan saves time here.
            return
        if raw != self.last_raw:
            self.apply(t, raw)
            self.last_raw = raw
        # plan(), inlined
        due = self.seg_end
        if self.seg_inside:  # outside the schedule nothing changes before it ends
            until = self.slot.until
            if t < until < due:
                due = until
            gate_slot = self.gate_slot
            if gate_slot is not None:
                until = gate_slot.until
                if t < until < due:
                    due = until
            elif self.gate is not None:
                for slot in self.watched:
                    until = slot.until
                    if t < until < due:
                        due = until
        if self.pending_since < INF and self.pending_since + self.terms.for_ < due:
            due = self.pending_since + self.terms.for_
        if self.clear_since < INF and self.clear_since + self.terms.clear_for < due:
            due = self.clear_since + self.terms.clear_for
        if self.held is not None:  # wake just after the instant to release it
            due = min(due, math.nextafter(_instant(self.held), INF))
        self.next_due = due
        self.quiet_until = NEG_INF if self.seg_inside else self.seg_end
        if due < self.heap_due:
            self.push_timer(due)

    def raw(self, t: float) -> int:
        if not (self.seg_start <= t < self.seg_end):
            self.seg_start, self.seg_end, self.seg_inside = self.bound.schedule.segment_at(t)
        if not self.seg_inside:
            return OUTSIDE
        gate_slot = self.gate_slot
        if gate_slot is not None:
            if t >= gate_slot.until:
                return UNKNOWN
            if (gate_slot.value == self.gate_value) is not self.gate_equal:
                return OUTSIDE
        elif self.gate is not None:
            open_ = self.gate(t, 0.0)
            if open_ is None:
                return UNKNOWN
            if not open_:
                return OUTSIDE
        slot = self.slot
        if t >= slot.until:
            return UNKNOWN
        value = slot.value if self.value_of is None else self.value_of.current
        terms = self.terms
        if self.violating:
            margin = terms.margin
            if value < terms.low + margin or value > terms.high - margin:
                return FAIL
            return PASS
        if value < terms.low or value > terms.high:
            return FAIL
        return PASS

    def plan(self, t: float) -> None:
        due = self.seg_end
        if self.seg_inside:
            for slot in self.watched:
                until = slot.until
                if t < until < due:
                    due = until
        if self.pending_since < INF and self.pending_since + self.terms.for_ < due:
            due = self.pending_since + self.terms.for_
        if self.clear_since < INF and self.clear_since + self.terms.clear_for < due:
            due = self.clear_since + self.terms.clear_for
        if self.held is not None:  # wake just after the instant to release it
            due = min(due, math.nextafter(_instant(self.held), INF))
        self.next_due = due
        self.quiet_until = NEG_INF if self.seg_inside else self.seg_end
        if due < self.heap_due:
            self.push_timer(due)

    def note_failure(self, t: float) -> None:
        slot = self.slot
        value = slot.value if self.value_of is None else self.value_of.current
        excess = max(self.terms.low - value, value - self.terms.high)
        if excess > self.worst_excess:
            self.worst_excess = excess
            self.worst = value
        if not self.violating:
            self.keep_evidence(slot.ts, slot.metric, value, slot.device)

    def reason(self) -> str:
        leaf = self.leaves[0]
        what = leaf.metric if leaf.aggregate is None else f"{leaf.aggregate.fn}({leaf.metric})"
        limits = []
        if self.terms.low > NEG_INF:
            limits.append(f">= {self.terms.low:g}")
        if self.terms.high < INF:
            limits.append(f"<= {self.terms.high:g}")
        return f"{what} outside limits ({' and '.join(limits)}, tolerance included)"


def _instant(held: ViolationStarted | ViolationEnded) -> float:
    """The instant a held start or end waits to be past."""
    return held.ended_at if isinstance(held, ViolationEnded) else held.started_at


def _held_json(held: ViolationStarted | ViolationEnded) -> dict[str, Any]:
    if isinstance(held, ViolationEnded):
        return {
            "started_at": held.started_at,
            "ended_at": held.ended_at,
            "worst_value": held.worst_value,
        }
    return {
        "started_at": held.started_at,
        "confirmed_at": held.confirmed_at,
        "worst_value": held.worst_value,
        "unit": held.unit,
        "reason": held.reason,
        "params": held.params,
        "evidence": [[e.ts, e.metric, e.value, e.device] for e in held.evidence],
        "metric": held.metric,
    }


def _held_from_json(
    raw: dict[str, Any], ref: ClauseRef, subject: Subject
) -> ViolationStarted | ViolationEnded:
    if "ended_at" in raw:
        return ViolationEnded(
            ref,
            subject,
            "violation",
            float(raw["started_at"]),
            float(raw["ended_at"]),
            raw["worst_value"],
        )
    return ViolationStarted(
        ref,
        subject,
        "violation",
        float(raw["started_at"]),
        float(raw["confirmed_at"]),
        raw["worst_value"],
        raw["unit"],
        str(raw["reason"]),
        dict(raw["params"]),
        tuple(Evidence(ts, metric, value, device) for ts, metric, value, device in raw["evidence"]),
        raw.get("metric"),
    )
