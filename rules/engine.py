"""The streaming rules engine of one site: readings and events in, verdicts out, in event time.

`SiteEngine` follows docs/design.md ("Engine interface"). At construction every clause version is
bound to its subjects (selectors x devices x metrics) and the routing (device, metric) -> clause
instances is precomputed, so `observe` does dictionary lookups and a few float comparisons per
instance. Time-driven changes (values expiring, schedule boundaries, `for` elapsing, obligations
falling due, quota periods ending) sit on a timer heap that `advance(now)` and readings
drain.

Ordering: one reorder buffer per site releases readings in event-time order across devices (so
a gate read from another device of the space is judged in order) once
`ts <= max(site max ts, advance time) - lateness`. A reading behind one already released (of
any device: judging it would break that order), or behind the time `advance` has made final
(`advance time - lateness`), is a `LateReading`: kept by the caller and judged by re-judging
the site from an earlier snapshot (rules/rejudge.py). Duplicates (same device and seq, or same
device, metric and ts) change nothing.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from mypy_extensions import mypyc_attr

from rules import _slots
from rules._conditions import (
    Compiled,
    Evaluator,
    Leaf,
    SlotFor,
    ValueFor,
    compiled_condition,
    condition_leaves,
    evaluator,
)
from rules._data_quality import DataQuality, watched_faults
from rules._dedupe import MEMORY, DedupeKeys
from rules._instances import (
    SIMPLE_GATE_OPS,
    BoundClause,
    CheckTerms,
    DueFloor,
    Instance,
    StateCheck,
    ThresholdCheck,
    TimerHeap,
    subject_key,
)
from rules._obligations import Obligation
from rules._quotas import Quota
from rules._slots import INF, NEG_INF, MetricSlot, from_json, to_json
from rules.clause import (
    AllOf,
    AnyOf,
    ClauseVersion,
    Comparison,
    Condition,
    ConditionCheck,
    DataQualityCheck,
    ObligationCheck,
    QuotaCheck,
    Selector,
)
from rules.clause import (
    ThresholdCheck as ThresholdConfig,
)
from rules.schedule import CompiledSchedule
from rules.site import Device, MetricSpec, SiteModel
from rules.verdicts import (
    ClauseRef,
    Event,
    LateReading,
    Output,
    RegisterReset,
    Subject,
)

# What a checkpoint holds of a part instead of its state (`begin_checkpoint`): name, state.
PartEncoder = Callable[[str, dict[str, Any]], object]

# Dedupe keys of a site's events remembered (cleanings, inspections: few, any device; a device's
# readings: `rules._dedupe.MEMORY`).
_EVENT_DEDUPE_MEMORY: Final = 4096
SNAPSHOT_FORMAT: Final = 3


class _DeviceState(DueFloor):
    """A device's slots, dedupe keys and the instances its readings wake (`due_floor`: a
    lower bound on their timer dues)."""

    __slots__ = (
        "all_listeners",
        "all_metrics",
        "buffered",
        "fault_listeners",
        "id",
        "keys",
        "max_ts",
        "metric_count",
        "part",
        "released_ts",
        "slots",
        "space",
        "taken",
        "timed_listeners",
        "touches",
    )

    def __init__(
        self, device: str, space: str, slots: dict[str, MetricSlot], all_metrics: frozenset[str]
    ) -> None:
        super().__init__()
        self.id = device
        self.space = space
        self.part = _device_part(device)
        # Snapshot parts a released reading of this device may change (set after binding), and
        # whether it took a reading since the last checkpoint began: a flag here is cheaper
        # per reading than adding `touches` to the engine's set of changed parts.
        self.touches: tuple[str, ...] = ()
        self.taken = False
        self.slots = slots
        self.metric_count = len(slots)
        # Its metrics' names (shared by the devices with the same ones): the dedupe key of a
        # reading of every metric, instead of holding on to the reading's own dictionary.
        self.all_metrics = all_metrics
        # The instances its readings wake (a reading of some metrics: those of their slots,
        # `MetricSlot.listeners`). Tuples, not lists: a tuple holds its items in the object
        # itself, one object fewer to read for each reading (at 1,000 rooms each is a miss).
        self.all_listeners: tuple[Instance, ...] = ()
        # Data-quality instances: woken only when a slot's fault or staleness changes.
        self.fault_listeners: tuple[Instance, ...] = ()
        self.timed_listeners: tuple[Instance, ...] = ()  # both: caught up before a reading
        self.max_ts = NEG_INF
        self.released_ts = NEG_INF
        self.keys = DedupeKeys()  # of its recent readings
        # This device's readings in the site's reorder buffer, by arrival stamp (for its part);
        # None when there are none: an empty dictionary is 64 bytes, one emptied 0.2 KiB.
        self.buffered: dict[int, tuple[float, Mapping[str, float]]] | None = None


# A device's slots: metric, how long a value holds, range low and high, cumulative, stuck after.
_SlotSettings = tuple[tuple[str, float, float, float, bool, float], ...]
# A device as binding reads it: the model, its id, its space, its metrics.
_DeviceRow = tuple[Device, str, str, dict[str, MetricSpec]]


class _StatePlan:
    """How a state check binds to one kind of device (`SiteEngine._state_plan`)."""

    def __init__(
        self,
        *,
        leaves: tuple[tuple[str, bool, str | None, float, str, float, int], ...],
        passes: Compiled | None,
        gate: Compiled | None,
        gate_at: int,
        simple_gate: bool,
        watched_at: tuple[int, ...],
        terms: CheckTerms,
        threshold: bool,
    ) -> None:
        # Its comparisons in the order the conditions read them: metric, whether the device's
        # own slot (else its space's), aggregate function and window (None, NaN: the value),
        # operator, limit, and a number for all of these (`SiteEngine._leaf_specs`).
        self.leaves = leaves
        self.passes = passes  # the pass condition's body (None: a threshold, judged in raw())
        self.gate = gate  # the gate's body (None: no gate, or one read from its slot)
        self.gate_at = gate_at  # the gate's first comparison
        self.simple_gate = simple_gate
        self.watched_at = watched_at  # the comparisons whose slots the instance watches
        self.terms = terms
        self.threshold = threshold


class BindingError(ValueError):
    """A clause cannot be bound to the site (unknown season, unresolvable named state...)."""


# Compiled by mypyc (setup.py), a class may be subclassed by interpreted code only when it says
# so: bench/engine.py's naive baseline replaces how a reading finds its listeners.
@mypyc_attr(allow_interpreted_subclasses=True)
class SiteEngine:
    """One site's clauses judged over its devices' readings and events. Not thread-safe: one
    owner calls it (an ingest worker owns whole sites)."""

    def __init__(
        self,
        site: SiteModel,
        clauses: Sequence[ClauseVersion],
        *,
        lateness: float,
        standards: Mapping[str, str] | None = None,
        last_done: Mapping[tuple[str, str], float] | None = None,
    ) -> None:
        """`standards` maps clause id to its standard code (from the clause file) for
        `ClauseRef.standard`; absent ids get "". `last_done` maps (space, clause id or task)
        to when the space last met that obligation (the registry's, set in the site file or
        through the API); where it has none, the site model's `last_done` counts."""
        if lateness < 0:
            raise ValueError("lateness cannot be negative")
        self.site = site
        self.clauses = tuple(clauses)
        self.lateness = float(lateness)
        self._site_id = site.site.id
        self._out: list[Output] = []
        self._timers = TimerHeap()
        self._next_uid = 0
        self._stamp = itertools.count()
        self._now = NEG_INF  # latest advance() time
        self._clock = NEG_INF  # time made final by advance(): now - lateness
        # When judging starts for instances no reading has started: the first advance's final
        # time, or the site's first input when that is later (see advance()).
        self._start = NEG_INF
        # The site's reorder buffer: (ts, arrival stamp, device, metrics); stamps are unique,
        # so device states are never compared.
        self._buffer: list[tuple[float, int, _DeviceState, Mapping[str, float]]] = []
        self._max_ts = NEG_INF
        self._events: list[tuple[float, int, Event]] = []
        self._max_event_ts = NEG_INF
        # The newest event time released to evaluation, any device: a reading behind it would be
        # judged out of order (a gate read across devices), so it is late.
        self._released_ts = NEG_INF
        self._released_event_ts = NEG_INF  # the same for events
        # Dedupe keys of recent events -> their event time (pruned like readings' keys).
        self._seen_events: dict[tuple[str, float, str, int | None], float] = {}
        self._spaces = {s.id: s for s in site.spaces}
        # Space slot -> the device slots that feed it (for routing readings to its readers).
        self._feeders: dict[int, list[MetricSlot]] = {}
        self._instances: list[Instance] = []
        self._by_part: dict[str, list[Instance]] = {}  # while binding (`_add`)
        self._devices: dict[str, _DeviceState] = {}
        self._space_slots: dict[tuple[str, str], MetricSlot] = {}
        # Binding-time memos (emptied after binding): devices by selector, parameters by
        # (clause, space type).
        self._selections: dict[Selector, list[_DeviceRow]] = {}
        self._space_selections: dict[Selector, frozenset[str]] = {}
        self._lineages: dict[str, frozenset[str]] = {}
        # The site's spaces and devices with the attributes selectors read, read once: an
        # attribute of a pydantic model costs ~0.4 k instructions (its __getattr__ hook), and
        # read for each selector they were ~8 % of a build.
        self._space_rows = [(space.id, space.type, space.tags) for space in site.spaces]
        self._device_rows = [(d, d.id, d.space, d.metrics) for d in site.devices]
        self._space_types = {space_id: space_type for space_id, space_type, _ in self._space_rows}
        # Spaces by kind (type and tags): each kind's first space, and each space's kind.
        kind_numbers: dict[tuple[str, tuple[str, ...]], int] = {}
        self._space_kinds: list[tuple[str, str, tuple[str, ...]]] = []
        self._space_kind_of: list[tuple[str, int]] = []
        for space_id, space_type, tags in self._space_rows:
            number = kind_numbers.get((space_type, tags))
            if number is None:
                number = kind_numbers[(space_type, tags)] = len(self._space_kinds)
                self._space_kinds.append((space_id, space_type, tags))
            self._space_kind_of.append((space_id, number))
        self._devices_in_space: dict[str, list[_DeviceRow]] = {}
        for row in self._device_rows:
            self._devices_in_space.setdefault(row[2], []).append(row)
        self._resolved: dict[tuple[int, str], dict[str, float]] = {}
        # A state check's limits and recorded parameters by (clause, space type), and the terms
        # its instances share by their values.
        self._limits: dict[tuple[int, str], tuple[float, float, dict[str, Any]]] = {}
        self._terms: dict[tuple[Any, ...], CheckTerms] = {}
        # Conditions compiled, by node (self.clauses holds them) and sharing of their leaves.
        self._compiled: dict[tuple[int, tuple[int, ...]], Compiled] = {}
        slot_kind = self._slot_kinds(clauses)
        # Constants (limits, ranges, validity) by their exact bits: see _shared.
        self._constants: dict[float | str, float] = {}
        # Immutable things many instances hold alike, one object each: subjects by (space,
        # device), recorded parameters by their items (see _shared_params).
        self._subjects: dict[str, Subject] = {}  # of devices, by device
        self._space_subjects: dict[str, Subject] = {}  # of spaces themselves, by space
        self._params: dict[tuple[tuple[str, Any], ...], dict[str, Any]] = {}
        # Leaves by (comparison, owner: device or space), and the comparisons numbered.
        self._leaves: dict[tuple[int, str], Leaf] = {}
        self._leaf_specs: dict[tuple[Any, ...], int] = {}
        # How state checks bind, by (clause, space type, the device's metrics).
        self._plans: dict[tuple[int, str, int], _StatePlan] = {}
        metric_sets: dict[frozenset[str], frozenset[str]] = {}
        for _, device_id, space_id, metrics in self._device_rows:
            slots = {}
            for metric, valid_for, low, high, cumulative, stuck in slot_kind(device_id, metrics):
                slot = MetricSlot(
                    device_id,
                    metric,
                    valid_for=valid_for,
                    low=low,
                    high=high,
                    cumulative=cumulative,
                )
                slot.stuck_for = stuck
                slots[metric] = slot
            names = frozenset(slots)
            shared = metric_sets.setdefault(names, names)
            self._devices[device_id] = _DeviceState(device_id, space_id, slots, shared)
        # Obligation instances by (space, event type); events go to them.
        self._obligations: dict[tuple[str, str], list[Obligation]] = {}
        self._last_done: Mapping[tuple[str, str], float] = last_done or {}
        for clause in clauses:
            self._bind(clause, (standards or {}).get(clause.id, ""))
        self._leaves.clear()
        self._leaf_specs.clear()
        self._plans.clear()
        self._params.clear()
        self._selections.clear()
        self._space_selections.clear()
        self._lineages.clear()
        self._space_rows.clear()
        self._space_kinds.clear()
        self._space_kind_of.clear()
        self._device_rows.clear()
        self._space_types.clear()
        self._resolved.clear()
        self._limits.clear()
        self._terms.clear()
        self._compiled.clear()
        self._subjects.clear()
        self._space_subjects.clear()
        self._devices_in_space.clear()
        for device_state in self._devices.values():
            found: dict[int, Instance] = {}
            for slot in device_state.slots.values():
                for instance in slot.listeners:
                    found.setdefault(instance.uid, instance)
            device_state.all_listeners = tuple(found.values())
            device_state.timed_listeners = device_state.all_listeners + device_state.fault_listeners
            for instance in device_state.timed_listeners:
                instance.floors += (device_state,)
        # Equal tuples of floors and of watched slots are one object each (most instances of
        # a device have the same ones).
        alike: dict[tuple[int, ...], Any] = {}
        for instance in self._instances:
            floors = instance.floors
            instance.floors = alike.setdefault(tuple([id(floor) for floor in floors]), floors)
            if isinstance(instance, StateCheck):
                watched = instance.watched
                instance.watched = alike.setdefault(tuple([id(slot) for slot in watched]), watched)
        # Space slots whose feeding devices hold their values for different times (max_gap,
        # stale): a new good value can make them expire sooner than the value before.
        falling = {
            key
            for key, feeders in self._feeders.items()
            if len({feeder.valid_for for feeder in feeders}) > 1
        }
        for instance in self._instances:
            instance.heap_due = NEG_INF
            if falling and isinstance(instance, ThresholdCheck):
                read = (instance.slot, instance.gate_slot, *instance.watched)
                instance.replan_always = any(id(slot) in falling for slot in read)
        self._feeders.clear()
        # One heap made of them all, not a push per instance.
        self._timers.fill(self._instances)
        self._index_parts()

    # ---- the interface ----

    def observe(
        self, device: str, ts: float, seq: int | None, metrics: Mapping[str, float]
    ) -> None:
        """Take one reading of `device` at event time `ts`."""
        state = self._devices.get(device)
        if state is None:
            raise KeyError(f"device {device!r} is not in site {self._site_id}")
        keys = state.keys
        if seq is not None and keys.has_seq(seq):
            return
        if self._capturing:
            self._capture_before_change((state.part,))
        state.taken = True
        every = state.all_metrics
        seen = keys.seen_at(ts, every)
        if seen is None:
            # Seen at ts: every metric of the device, or only the reading's (its keys, no copy).
            full = len(metrics) == len(every) and metrics.keys() == every
            keys.add_time(ts, None if full else metrics)
        else:
            fresh = {m: v for m, v in metrics.items() if m not in seen}
            if not fresh:
                return
            widened = {*seen, *fresh}
            keys.widen(ts, widened, len(widened) == len(every))
            metrics = fresh
        if seq is not None:
            keys.add_seq(seq, ts)
        if len(keys) > MEMORY:
            # An older duplicate is then reported as a late reading: stored by the caller,
            # never judged.
            keys.forget_older_half()
        if ts < self._released_ts or ts < self._clock:
            for metric in metrics:
                self._out.append(LateReading(self._site_id, device, ts, metric))
            return
        buffer = self._buffer
        if self.lateness == 0.0 and not buffer:
            if ts > self._max_ts:
                self._max_ts = ts  # the header's horizon (rules/rejudge.py) reads it
            self._release(state, ts, metrics)
            return
        stamp = next(self._stamp)
        heapq.heappush(buffer, (ts, stamp, state, metrics))
        if state.buffered is None:
            state.buffered = {}
        state.buffered[stamp] = (ts, metrics)
        if ts > state.max_ts:
            state.max_ts = ts
            if ts > self._max_ts:
                self._max_ts = ts
        horizon = (self._max_ts if self._max_ts > self._now else self._now) - self.lateness
        while buffer and buffer[0][0] <= horizon:
            released_ts, stamp, owner, released = heapq.heappop(buffer)
            self._release(owner, released_ts, released, stamp)

    def observe_event(self, event: Event) -> None:
        """Take one event (cleaning.completed, inspection.done...) at its event time."""
        key = (event.device, event.ts, event.type, event.seq)
        if key in self._seen_events:
            return
        self._seen_events[key] = event.ts
        if len(self._seen_events) > _EVENT_DEDUPE_MEMORY:
            cutoff = sorted(self._seen_events.values())[len(self._seen_events) // 2]
            self._seen_events = {k: ts for k, ts in self._seen_events.items() if ts >= cutoff}
        if event.ts < self._clock or event.ts < self._released_event_ts:
            # Behind time made final, or behind an event already applied: judging it now would
            # apply events out of order.
            self._out.append(LateReading(self._site_id, event.device, event.ts, event.type))
            return
        heapq.heappush(self._events, (event.ts, next(self._stamp), event))
        if event.ts > self._max_event_ts:
            self._max_event_ts = event.ts
        self._release_events(max(self._max_event_ts, self._now) - self.lateness)

    def apply_last_done(self, space: str, task: str, at: float) -> int:
        """A last-done time of `space` for `task` (a clause id, or the event type it expects)
        given while judging, as a baseline, not as input: each obligation instance of that
        space and task brought to the engine's final time takes it
        (`Obligation.take_baseline`). Returns how many instances it changed (a time not later
        than an instance's last event changes nothing)."""
        changed = 0
        for (where, event_type), instances in self._obligations.items():
            if where != space:
                continue
            for instance in instances:
                if task not in (event_type, instance.bound.ref.clause_id):
                    continue
                part = instance.part
                if self._capturing:
                    self._capture_before_change((part,))
                self._changed.add(part)
                instance.catch_up(self._clock)
                if instance.take_baseline(at, self._clock):
                    changed += 1
        return changed

    def last_done_events(self, space: str, task: str) -> frozenset[str]:
        """The event types of the obligations of `space` that a last-done time of `task` (a
        clause id, or the event type it expects) counts for: empty when none is bound."""
        return frozenset(
            event_type
            for (where, event_type), instances in self._obligations.items()
            if where == space
            and any(task in (event_type, instance.bound.ref.clause_id) for instance in instances)
        )

    def advance(self, now: float) -> None:
        """Time has passed to `now` (event-time seconds): release buffered readings and events
        and run every time-driven change up to `now - lateness`, which becomes final."""
        if now <= self._now:
            return
        clock = now - self.lateness
        if self._now == NEG_INF:
            # Judging starts at this first final time, or at the first input still waiting
            # when that is later: with the data's clock the first advance comes with the
            # first reading, and the lateness before it has no data to judge.
            first = self._buffer[0][0] if self._buffer else INF
            if self._events and self._events[0][0] < first:
                first = self._events[0][0]
            self._start = first if clock < first < INF else clock
        self._now = now
        self._release_buffered(max(self._max_ts, now) - self.lateness)
        self._release_events(max(self._max_event_ts, now) - self.lateness)
        self._clock = max(self._clock, clock)
        timers = self._timers
        waiting = timers.items
        while waiting and waiting[0].heap_due <= clock:
            instance = timers.pop()
            instance.heap_due = INF
            if instance.next_due == NEG_INF and self._start > clock:
                instance.next_due = self._start  # not started: starts then (or at a reading)
            elif instance.next_due <= clock:
                part = instance.part
                if self._capturing:
                    self._capture_before_change((part,))
                self._changed.add(part)
                instance.advance_to(clock)
            if instance.next_due < instance.heap_due:
                instance.push_timer(instance.next_due)

    def bindings(self) -> list[tuple[ClauseRef, Subject]]:
        """Every clause version x subject this engine judges (for coverage: which clauses are
        bound to live data sources)."""
        return [(instance.bound.ref, instance.subject) for instance in self._instances]

    def drain(self) -> list[Output]:
        """Outputs since the last drain, in the order they were produced."""
        out = self._out[:]  # instances hold the list itself: empty it, never replace it
        self._out.clear()
        return out

    def close(self) -> None:
        """Lets go of this engine's state (it was replaced): breaks the cycles between its
        instances, device states and timers, so that reference counting frees them. A service
        freezes its state out of the collector (`gc.freeze`): a replaced engine left cyclic
        would never be freed. The engine takes no input afterwards."""
        self._timers.clear()
        for state in self._devices.values():
            for slot in state.slots.values():
                slot.listeners = ()
            state.fault_listeners = ()
            state.all_listeners = state.timed_listeners = ()
        for instance in self._instances:
            instance.floors = ()
        self._instances.clear()

    # ---- release and evaluation ----

    def _release_buffered(self, horizon: float) -> None:
        buffer = self._buffer
        while buffer and buffer[0][0] <= horizon:
            ts, stamp, state, metrics = heapq.heappop(buffer)
            self._release(state, ts, metrics, stamp)

    def _release(
        self,
        state: _DeviceState,
        ts: float,
        metrics: Mapping[str, float],
        stamp: int | None = None,
    ) -> None:
        """Judges a reading; `stamp` is its reorder-buffer stamp when it was buffered."""
        if self._capturing:
            self._capture_before_change(state.touches)
        state.taken = True
        if stamp is not None:
            buffered = state.buffered
            assert buffered is not None
            del buffered[stamp]
            if not buffered:
                state.buffered = None
        state.released_ts = ts
        if ts > self._released_ts:
            self._released_ts = ts
        # Time-driven changes before ts first, judged on the values as they were.
        listeners: Sequence[Instance]
        if len(metrics) == state.metric_count:
            listeners = state.all_listeners
            if ts > state.due_floor:
                lowest = INF
                for instance in state.timed_listeners:
                    if instance.next_due < ts:
                        instance.catch_up(ts)
                    if instance.heap_due < lowest:
                        lowest = instance.heap_due
                state.due_floor = lowest
        else:
            woken = self._listeners_of(state, metrics)
            listeners = woken
            for instance in (*woken, *state.fault_listeners):
                if instance.next_due < ts:
                    instance.catch_up(ts)
        slots = state.slots
        quality_changed = False
        for metric, value in metrics.items():
            slot = slots.get(metric)
            if slot is not None and slot.update(ts, value):
                quality_changed = True  # a fault, or a recovery: data quality may have moved
                if slot.fault == _slots.BACKWARDS:
                    self._out.append(
                        RegisterReset(self._site_id, state.id, metric, ts, slot.reset_from, value)
                    )
        if quality_changed:
            for instance in state.fault_listeners:
                instance.evaluate(ts)
        for instance in listeners:
            if instance.quiet_until <= ts:
                instance.evaluate(ts)

    def _listeners_of(self, state: _DeviceState, metrics: Iterable[str]) -> list[Instance]:
        found: dict[int, Instance] = {}
        slots = state.slots
        for metric in metrics:
            slot = slots.get(metric)
            if slot is not None:
                for instance in slot.listeners:
                    found[instance.uid] = instance
        return list(found.values())

    def _release_events(self, horizon: float) -> None:
        events = self._events
        while events and events[0][0] <= horizon:
            ts, _, event = heapq.heappop(events)
            if ts > self._released_event_ts:
                self._released_event_ts = ts
            self._apply_event(event)

    def _apply_event(self, event: Event) -> None:
        space = event.space
        if space is None:
            device = self._devices.get(event.device)
            space = device.space if device is not None else None
        if space is None:
            return
        for instance in self._obligations.get((space, event.type), ()):
            part = instance.part
            if self._capturing:
                self._capture_before_change((part,))
            self._changed.add(part)
            instance.catch_up(event.ts)
            instance.evaluate_event(event)

    # ---- binding clauses to subjects ----

    def _slot_kinds(
        self, clauses: Sequence[ClauseVersion]
    ) -> Callable[[str, dict[str, MetricSpec]], _SlotSettings]:
        """For a device (id, metrics), its slots' settings (`_SlotSettings`). A data-quality
        clause that selects the device makes a value stale or stuck sooner: such faults make
        the metric unknown for every clause that reads it. Worked out once per kind of device
        (the data-quality clauses selecting it, its metrics), not per device: binding at
        100,000 devices is restore time."""
        checks: list[tuple[DataQualityCheck, frozenset[str]]] = []
        for clause in clauses:
            check = clause.check
            if isinstance(check, DataQualityCheck):
                chosen = self._selected_devices(clause.applies_to)
                checks.append((check, frozenset(row[1] for row in chosen)))
        kinds: dict[tuple[tuple[int, ...], int], tuple[Any, ...]] = {}

        def kind_of(device_id: str, metrics: dict[str, MetricSpec]) -> _SlotSettings:
            which = tuple([i for i, (_, chosen) in enumerate(checks) if device_id in chosen])
            key = (which, id(metrics))
            found = kinds.get(key)
            if found is None:
                found = kinds[key] = self._slot_settings(metrics, [checks[i][0] for i in which])
            return found

        return kind_of

    def _slot_settings(
        self, metrics: Mapping[str, MetricSpec], checks: Sequence[DataQualityCheck]
    ) -> _SlotSettings:
        settings = []
        for metric, spec in metrics.items():
            stale, stuck = INF, INF
            for check in checks:
                if check.metrics and metric not in check.metrics:
                    continue
                if check.stale_after is not None:
                    stale = min(stale, check.stale_after)
                if check.stuck_for is not None:
                    stuck = min(stuck, check.stuck_for)
            low, high = spec.range if spec.range is not None else (NEG_INF, INF)
            settings.append(
                (
                    metric,
                    self._shared(min(spec.max_gap, stale)),
                    self._shared(low),
                    self._shared(high),
                    spec.cumulative,
                    self._shared(stuck),
                )
            )
        return tuple(settings)

    def _spaces_selected(self, selector: Selector) -> frozenset[str]:
        """The ids of the spaces `selector` selects (its devices aside), worked out once per
        distinct selector (clauses share them). A selector that names no spaces reads a
        space's type and tags alone: spaces alike in those are matched once (a large site has
        thousands of rooms and a few kinds of them)."""
        chosen = self._space_selections.get(selector)
        if chosen is not None:
            return chosen
        selected = []
        if not selector.spaces and not selector.exempt.spaces:
            # Each kind (type and tags) matched once, by its first space.
            inside = [
                selector.selects_space(space_type, tags, self._lineage(space_id))
                for space_id, space_type, tags in self._space_kinds
            ]
            for space_id, kind in self._space_kind_of:
                if inside[kind]:
                    selected.append(space_id)
        else:
            for space_id, space_type, tags in self._space_rows:
                if selector.selects_space(space_type, tags, self._lineage(space_id)):
                    selected.append(space_id)
        chosen = self._space_selections[selector] = frozenset(selected)
        return chosen

    def _lineage(self, space: str) -> frozenset[str]:
        """`space` and its ancestors (for selectors that name spaces), made once per space."""
        lineage = self._lineages.get(space)
        if lineage is None:
            lineage = self._lineages[space] = frozenset(self.site.ancestors(space))
        return lineage

    def _selected_devices(self, selector: Selector) -> list[_DeviceRow]:
        """The devices `selector` selects, worked out once per distinct selector."""
        chosen = self._selections.get(selector)
        if chosen is not None:
            return chosen
        spaces = self._spaces_selected(selector)
        named, exempt = selector.devices, selector.exempt.devices
        if not named and not exempt and len(spaces) == len(self._space_rows):
            chosen = list(self._device_rows)  # every device (a copy: the rows are emptied)
            self._selections[selector] = chosen
            return chosen
        chosen = [
            row
            for row in self._device_rows
            if row[2] in spaces
            and (not named or row[1] in named)
            and (not exempt or row[1] not in exempt)
        ]
        self._selections[selector] = chosen
        return chosen

    def _resolve_params(self, clause: ClauseVersion, space_type: str) -> dict[str, float]:
        """`clause.resolve_params` for this site and `space_type`, resolved once per clause and
        space type; a copy, which the caller may extend."""
        key = (id(clause), space_type)
        params = self._resolved.get(key)
        if params is None:
            params = self._resolved[key] = clause.resolve_params(self._site_id, space_type)
        return dict(params)

    def _bind(self, clause: ClauseVersion, standard: str) -> None:
        ref = ClauseRef(
            clause_id=clause.id,
            version=clause.version,
            content_hash=clause.content_hash(),
            standard=standard,
            number=clause.number,
            title=clause.title,
            domain=clause.domain,
            severity=clause.severity,
            key=clause.key,
        )
        try:
            schedule = CompiledSchedule(
                clause.schedule, self.site, clause.effective_from, clause.effective_to
            )
        except ValueError as exc:
            raise BindingError(f"clause {clause.id} v{clause.version}: {exc}") from exc
        bound = BoundClause(ref, schedule, self._out, self._timers)
        check = clause.check
        if isinstance(check, ThresholdConfig | ConditionCheck):
            primary = check.metric if isinstance(check, ThresholdConfig) else _first_metric(check)
            for row in self._selected_devices(clause.applies_to):
                if primary in row[3]:
                    self._bind_state_check(clause, bound, row)
        elif isinstance(check, ObligationCheck):
            self._bind_obligation(clause, bound, check)
        elif isinstance(check, QuotaCheck):
            self._bind_quota(clause, bound, check)
        else:
            self._bind_data_quality(clause, bound, check)

    def _slot_for(self, device: Device) -> SlotFor:
        own = self._devices[device.id].slots  # one per metric of the device

        def slot_for(metric: str) -> MetricSlot:
            slot = own.get(metric)
            return slot if slot is not None else self._space_slot(device.space, metric)

        return slot_for

    def _space_slot(self, space: str, metric: str) -> MetricSlot:
        """The latest value of `metric` from any device of `space`."""
        key = (space, metric)
        slot = self._space_slots.get(key)
        if slot is None:
            slot = self._space_slots[key] = MetricSlot(f"{space}:*", metric, valid_for=INF)
            feeders = self._feeders[id(slot)] = []
            for _, other, _, metrics in self._devices_in_space.get(space, ()):
                if metric in metrics:
                    feeder = self._devices[other].slots[metric]
                    feeder.forward += (slot,)
                    feeders.append(feeder)
        return slot

    def _shared(self, value: float) -> float:
        """One float object per distinct constant across the site's slots and instances. Each
        reading compares against limits and ranges: a few shared objects stay in the CPU cache,
        where a copy per device or instance would be a cache miss each (at 1,000 rooms)."""
        value = float(value)
        return self._constants.setdefault(_exact(value), value)

    def _value_for(
        self, device: Device, params: Mapping[str, float], clause: ClauseVersion
    ) -> ValueFor:
        def value_for(metric: str, value: float | str) -> float:
            if isinstance(value, int | float):
                return self._shared(value)
            if value.startswith("$"):
                return self._shared(params[value[1:]])
            # Lazily: building a tuple of every device per call made binding quadratic.
            for candidate in itertools.chain((device,), self.site.devices):
                spec = candidate.metrics.get(metric)
                if spec is not None and value in spec.states:
                    return self._shared(spec.states[value])
            raise BindingError(
                f"clause {clause.id} v{clause.version}: {metric} has no named state {value!r}"
            )

        return value_for

    def _shared_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """One dictionary per distinct set of recorded parameters (instances only read theirs,
        and copy it into what they output): a dictionary per instance was ~1 KiB a device."""
        items = tuple(params.items())
        try:
            return self._params.setdefault(items, params)
        except TypeError:  # an unhashable value: kept as it is
            return params

    def _new_uid(self) -> int:
        uid = self._next_uid
        self._next_uid = uid + 1
        return uid

    def _add(self, instance: Instance, part: str) -> None:
        """`instance`, judging a subject whose state is in snapshot part `part` (the device's
        own part string: one object per part, not one per instance)."""
        instance.part = part
        self._instances.append(instance)
        instances = self._by_part.get(part)
        if instances is None:
            self._by_part[part] = [instance]
        else:
            instances.append(instance)

    def _route(self, instance: Instance, slots: tuple[MetricSlot, ...]) -> None:
        """Readings that change any of `slots` (distinct) wake `instance`. Called once per
        instance: where it was added to a slot's listeners already (a slot of its own that
        also feeds a space slot it reads), it is the last of them."""
        for slot in slots:
            feeders = self._feeders.get(id(slot))  # of a space slot: its devices' slots
            if feeders is None:
                listeners = slot.listeners
                if not listeners or listeners[-1] is not instance:
                    slot.listeners = (*listeners, instance)
            else:
                for owner in feeders:
                    listeners = owner.listeners
                    if not listeners or listeners[-1] is not instance:
                        owner.listeners = (*listeners, instance)

    def _subject(self, space: str, device: str | None) -> Subject:
        """The subject of the instances judging `device` of `space` (the space itself when
        None): one object for all of them. Instances are made by calling their class with its
        arguments spelled out: a call through a variable class and a keyword dictionary parsed
        its arguments twice, about a tenth of a build."""
        subjects = self._space_subjects if device is None else self._subjects
        key = space if device is None else device
        subject = subjects.get(key)
        if subject is None:
            subject = subjects[key] = Subject(self._site_id, space, device)
        return subject

    def _bind_state_check(self, clause: ClauseVersion, bound: BoundClause, row: _DeviceRow) -> None:
        device, device_id, space_id, metrics = row
        # One plan per kind of device (space type, metrics): what its instance reads and
        # compares is worked out once, not walked from the clause's models for each device.
        plan_key = (id(clause), self._space_types[space_id], id(metrics))
        plan = self._plans.get(plan_key)
        if plan is None:
            plan = self._plans[plan_key] = self._state_plan(clause, device)
        state = self._devices[device_id]
        own = state.slots
        leaves: list[Leaf] = []
        leaf_memo = self._leaves
        for metric, is_own, fn, window, op, limit, spec in plan.leaves:
            # Equal leaves (a gate, a threshold's metric) are one object across the device's
            # instances, and a space's across its devices: the compiled conditions read slots
            # and limits, not leaves.
            key = (spec, device_id if is_own else space_id)
            leaf = leaf_memo.get(key)
            if leaf is None:
                slot = own[metric] if is_own else self._space_slot(space_id, metric)
                aggregate = None if fn is None else slot.aggregate(fn, window)
                leaf = leaf_memo[key] = Leaf(metric, slot, aggregate, op, limit)
            leaves.append(leaf)
        gate_at = plan.gate_at
        passes: Evaluator = _never if plan.passes is None else evaluator(plan.passes, leaves)
        gate = None if plan.gate is None else evaluator(plan.gate, leaves[gate_at:])
        simple_gate = leaves[gate_at] if plan.simple_gate else None
        subject = self._subject(space_id, device_id)
        watched = tuple([leaves[i].slot for i in plan.watched_at])
        instance: StateCheck
        # Each class called by name: through a variable class the call parses its keywords,
        # 7 % more per build (paired rounds), so the two calls stay spelled out.
        if plan.threshold:
            instance = ThresholdCheck(
                bound,
                subject,
                self._new_uid(),
                passes=passes,
                leaves=tuple(leaves),
                gate=gate,
                simple_gate=simple_gate,
                terms=plan.terms,
                watched=watched,
            )
        else:
            instance = StateCheck(
                bound,
                subject,
                self._new_uid(),
                passes=passes,
                leaves=tuple(leaves),
                gate=gate,
                simple_gate=simple_gate,
                terms=plan.terms,
                watched=watched,
            )
        self._add(instance, state.part)
        self._route(instance, watched)

    def _state_plan(self, clause: ClauseVersion, device: Device) -> _StatePlan:
        """How a state check binds to `device` and every device like it (same space type and
        metrics): its comparisons (metric, the device's own slot or its space's, aggregate,
        operator, limit), the bodies of its pass and gate conditions, its terms."""
        # Each attribute of the clause's (pydantic) models read once: a read costs ~0.4 k
        # instructions (the models' __getattr__ hook).
        check = clause.check
        assert isinstance(check, ThresholdConfig | ConditionCheck)
        when = check.when
        space_type = self._spaces[device.space].type
        params = self._resolve_params(clause, space_type)
        slot_for = self._slot_for(device)
        value_for = self._value_for(device, params, clause)
        leaves: list[Leaf] = []
        low, high = NEG_INF, INF  # a condition's limits are in its compiled function
        limits_key = (id(clause), space_type)
        limits = self._limits.get(limits_key)
        passes: Compiled | None = None
        if isinstance(check, ThresholdConfig):
            metric = check.metric
            slot = slot_for(metric)
            rolling = check.aggregate
            aggregate = slot.aggregate(rolling.fn, rolling.window) if rolling else None
            leaves.append(Leaf(metric, slot, aggregate, "within", math.nan))
            if limits is None:
                recorded = dict(params)
                tolerance = 0.0
                if check.tolerance is not None:
                    tolerance = float(value_for(check.metric, check.tolerance))
                low = NEG_INF if check.min is None else value_for(check.metric, check.min)
                high = INF if check.max is None else value_for(check.metric, check.max)
                if check.min is not None:
                    recorded["min"] = low
                if check.max is not None:
                    recorded["max"] = high
                recorded["tolerance"] = tolerance
                low, high = self._shared(low - tolerance), self._shared(high + tolerance)
        else:
            condition_leaves(check.passes, slot_for, value_for, leaves)
            passes = compiled_condition(check.passes, leaves, self._compiled)
            if limits is None:
                recorded = dict(params)
        gate_at = len(leaves)
        gate: Compiled | None = None
        if when is not None:
            condition_leaves(when, slot_for, value_for, leaves)
            # A gate `metric == state` (or !=) is read from its slot by the instance
            # (`gate_slot`): a compiled function for it (with its defaults and globals) was
            # ~0.3 KiB of each gated instance, unused.
            if not (isinstance(when, Comparison) and when.op in SIMPLE_GATE_OPS):
                gate = compiled_condition(when, leaves[gate_at:], self._compiled)
        if limits is None:
            recorded["for"] = check.for_
            recorded["clear_margin"] = check.clear.margin
            recorded["clear_for"] = check.clear.clear_for
            shared_params = self._shared_params(recorded)
            # The same for every device of the space type unless a limit names a state, which
            # is looked up in the device's own metrics first.
            if not isinstance(check, ThresholdConfig) or not any(
                isinstance(limit, str) and not limit.startswith("$")
                for limit in (check.min, check.max)
            ):
                self._limits[limits_key] = (low, high, shared_params)
        else:
            low, high, shared_params = limits
        metric_spec = device.metrics.get(leaves[0].metric)
        unit = metric_spec.unit if metric_spec is not None else None
        # The recorded parameters hold `for`, the clear margin and `clear_for`: equal ones
        # (one object, `_shared_params`) mean equal durations and margin.
        terms_key = (id(shared_params), unit, _exact(low), _exact(high))
        terms = self._terms.get(terms_key)
        if terms is None:
            terms = self._terms[terms_key] = CheckTerms(
                for_=check.for_,
                clear_for=check.clear.clear_for,
                margin=check.clear.margin,
                params=shared_params,
                unit=unit,
                low=low,
                high=high,
            )
        own = self._devices[device.id].slots
        specs = []
        # The first comparison reading each distinct slot (the same for every device of the
        # kind: comparisons alike in metric and owner read the same slot).
        first_reading: dict[int, int] = {}
        for i, leaf in enumerate(leaves):
            first_reading.setdefault(id(leaf.slot), i)
        for leaf in leaves:
            is_own = own.get(leaf.metric) is leaf.slot
            aggregate = leaf.aggregate
            fn = None if aggregate is None else aggregate.fn
            window = math.nan if aggregate is None else aggregate.window
            # Comparisons alike in all of these are alike for every device of the kind.
            alike = (leaf.metric, is_own, fn, _exact(window), leaf.op, _exact(leaf.limit))
            spec = self._leaf_specs.setdefault(alike, len(self._leaf_specs))
            specs.append((leaf.metric, is_own, fn, window, leaf.op, leaf.limit, spec))
        return _StatePlan(
            leaves=tuple(specs),
            passes=passes,
            gate=gate,
            gate_at=gate_at,
            simple_gate=isinstance(when, Comparison),
            watched_at=tuple(first_reading.values()),
            terms=terms,
            threshold=isinstance(check, ThresholdConfig),
        )

    def _bind_obligation(
        self,
        clause: ClauseVersion,
        bound: BoundClause,
        check: ObligationCheck,
    ) -> None:
        if clause.applies_to.devices:  # an obligation is a space's: a selector of devices has none
            return
        selected = self._spaces_selected(clause.applies_to)
        for space in self.site.spaces:
            if space.id not in selected:
                continue
            params = self._resolve_params(clause, space.type)
            params["grace"] = check.grace
            if check.every is not None:
                params["every"] = check.every
            instance = Obligation(
                bound,
                self._subject(space.id, None),
                self._new_uid(),
                check=check,
                params=self._shared_params(params),
            )
            done = self._last_done.get(
                (space.id, clause.id), self._last_done.get((space.id, check.event))
            )
            if done is None:
                done = self.site.last_done_at(space, clause.id, check.event)
            if done is not None:
                instance.last_done(done)
            self._add(instance, _space_part(space.id))
            self._obligations.setdefault((space.id, check.event), []).append(instance)

    def _bind_quota(self, clause: ClauseVersion, bound: BoundClause, check: QuotaCheck) -> None:
        where = f"clause {clause.id} v{clause.version}"
        for device, *_ in self._selected_devices(clause.applies_to):
            spec = device.metrics.get(check.metric)
            if spec is None:
                continue
            if not spec.cumulative:
                raise BindingError(f"{where}: {device.id}.{check.metric} is not a register")
            space = self._spaces[device.space]
            params = self._resolve_params(clause, space.type)
            value_for = self._value_for(device, params, clause)
            if check.budget is not None:
                budget = value_for(check.metric, check.budget)
            else:
                assert check.budget_per_m2 is not None
                if space.area_m2 is None:
                    raise BindingError(
                        f"{where}: budget_per_m2 needs the floor area of space {space.id}"
                    )
                budget = value_for(check.metric, check.budget_per_m2) * space.area_m2
                params["area_m2"] = space.area_m2
            slot = self._devices[device.id].slots[check.metric]
            instance = Quota(
                bound,
                self._subject(device.space, device.id),
                self._new_uid(),
                check=check,
                slot=slot,
                budget=budget,
                params=self._shared_params(params),
                unit=spec.unit,
            )
            self._add(instance, self._devices[device.id].part)
            self._route(instance, (slot,))

    def _bind_data_quality(
        self,
        clause: ClauseVersion,
        bound: BoundClause,
        check: DataQualityCheck,
    ) -> None:
        metrics, stale_after, stuck_for = check.metrics, check.stale_after, check.stuck_for
        faults = watched_faults(check)
        stale = INF if stale_after is None else stale_after
        by_type: dict[str, dict[str, Any]] = {}  # recorded parameters by space type
        for _, device_id, space, _ in self._selected_devices(clause.applies_to):
            state = self._devices[device_id]
            slots = state.slots
            watched = tuple([slots[m] for m in metrics or tuple(slots) if m in slots])
            if not watched:
                continue
            space_type = self._space_types[space]
            params = by_type.get(space_type)
            if params is None:
                params = self._resolve_params(clause, space_type)
                if stale_after is not None:
                    params["stale_after"] = stale_after
                if stuck_for is not None:
                    params["stuck_for"] = stuck_for
                params = by_type[space_type] = self._shared_params(params)
            instance = DataQuality(
                bound,
                self._subject(space, state.id),
                self._new_uid(),
                faults=faults,
                stale_after=stale,
                slots=watched,
                params=params,
            )
            self._add(instance, state.part)
            state.fault_listeners += (instance,)

    # ---- snapshot / restore ----
    #
    # A snapshot is a small header (clocks, pending events) and parts: one per device (its dedupe
    # keys, buffered readings, slots and the instances judging it) and one per space (its space
    # slots and the instances judging the space itself). The engine remembers which parts changed
    # since the last checkpoint began, so a checkpoint costs in proportion to the input taken
    # since the previous one, not to the size of the site.
    #
    # A checkpoint is taken at one instant (`begin_checkpoint`) but its parts may be captured
    # later, a slice at a time between readings (`capture`): a part about to change is captured
    # first (copy on write), so the result is the state at the instant it began, while the
    # readings that arrive meanwhile need not wait for the whole capture.

    def _index_parts(self) -> None:
        self._part_instances = {part: tuple(instances) for part, instances in self._by_part.items()}
        self._by_part.clear()
        # The metrics any space has a slot of: a space part's slots are looked up by them when
        # it is captured or restored (a dictionary of them for each space was 0.1 KiB a device).
        self._space_metrics = tuple(sorted({metric for _, metric in self._space_slots}))
        for state in self._devices.values():
            # Plain loops over a few items: generators and a set per device were a sixth of
            # this at 4,000 devices.
            touched = [state.part]
            for instance in state.timed_listeners:
                if instance.part not in touched:
                    touched.append(instance.part)
            for slot in state.slots.values():
                if slot.forward:
                    space = _space_part(state.space)
                    if space not in touched:
                        touched.append(space)
                    break
            touched.sort()
            state.touches = tuple(touched)
        self._parts = sorted(
            {state.part for state in self._devices.values()}
            | self._part_instances.keys()
            | {_space_part(space) for space, _ in self._space_slots}
        )
        # Parts changed since the last checkpoint began; a fresh engine's first checkpoint
        # replaces whatever was saved before, so it takes every part.
        self._changed: set[str] = set(self._parts)
        self._first_checkpoint = True
        # The checkpoint being captured: its header, the parts still to capture, those done.
        self._capturing: set[str] = set()
        self._checkpoint: dict[str, Any] | None = None
        self._captured: dict[str, Any] = {}
        self._encode: PartEncoder | None = None

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to resume, now: JSON-serialisable (no NaN or infinity inside).
        `full` is true: its parts replace every part saved before. Does not disturb a
        checkpoint being captured."""
        return {**self._header(full=True), "parts": {p: self._part_state(p) for p in self._parts}}

    def begin_checkpoint(self, encode: PartEncoder | None = None) -> None:
        """Starts a checkpoint of the state at this instant: the header and the parts changed
        since the previous checkpoint began (every part, the first time). `capture` completes
        it; readings and time may be taken meanwhile. `encode(name, part)`, when given, is
        applied to each part as it is captured, and the checkpoint holds what it returns: a
        part's objects (a few KiB a device) need not live until the whole site is captured."""
        if self._checkpoint is not None:
            raise RuntimeError("a checkpoint is already being captured")
        self._encode = encode
        self._checkpoint = self._header(full=self._first_checkpoint)
        self._first_checkpoint = False
        changed = self._changed
        for state in self._devices.values():
            if state.taken:
                changed.update(state.touches)
                state.taken = False
        self._capturing, self._changed = changed, set()
        self._captured = {}

    def capture(self, limit: int | None = None) -> dict[str, Any] | None:
        """Captures up to `limit` more parts (all of them with None) of the checkpoint begun;
        returns it (header and changed parts) once complete, else None. Merged over the parts
        saved before (by part name), or replacing them when `full`, it equals `snapshot()` at
        the instant the checkpoint began."""
        if self._checkpoint is None:
            raise RuntimeError("no checkpoint begun")
        capturing = self._capturing
        count = len(capturing) if limit is None else min(limit, len(capturing))
        for _ in range(count):
            part = capturing.pop()
            self._captured[part] = self._encoded_part(part)
        if capturing:
            return None
        checkpoint = {**self._checkpoint, "parts": self._captured}
        # A new empty set: a set emptied by pop() keeps its table (after a checkpoint of every
        # part, ~2 KiB a device).
        self._checkpoint, self._captured, self._capturing = None, {}, set()
        return checkpoint

    def checkpoint_lost(self) -> None:
        """The last checkpoint was never stored: the next one takes every part (and replaces
        what is stored)."""
        self._changed = set(self._parts)
        self._first_checkpoint = True

    def snapshot_changes(self) -> dict[str, Any]:
        """A whole checkpoint at once: `begin_checkpoint()` then `capture()`."""
        self.begin_checkpoint()
        checkpoint = self.capture()
        assert checkpoint is not None
        return checkpoint

    def _capture_before_change(self, parts: Iterable[str]) -> None:
        capturing = self._capturing
        for part in parts:
            if part in capturing:
                capturing.discard(part)
                self._captured[part] = self._encoded_part(part)

    def _encoded_part(self, part: str) -> object:
        state = self._part_state(part)
        return state if self._encode is None else self._encode(part, state)

    def _header(self, *, full: bool) -> dict[str, Any]:
        return {
            "format": SNAPSHOT_FORMAT,
            "site": self._site_id,
            "full": full,
            "now": to_json(self._now),
            "clock": to_json(self._clock),
            "start": to_json(self._start),
            "max_event_ts": to_json(self._max_event_ts),
            "max_ts": to_json(self._max_ts),
            "released_event_ts": to_json(self._released_event_ts),
            "events": [_event_json(event) for _, _, event in sorted(self._events)],
        }

    def _space_slots_in(self, part: str) -> dict[str, MetricSlot]:
        """The slots of the space of `part` (a space part), by metric."""
        space = part[len(_SPACE_PART) :]
        found: dict[str, MetricSlot] = {}
        for metric in self._space_metrics:
            slot = self._space_slots.get((space, metric))
            if slot is not None:
                found[metric] = slot
        return found

    def _part_state(self, part: str) -> dict[str, Any]:
        saved: dict[str, Any] = {
            "instances": {
                instance.key: instance.state() for instance in self._part_instances.get(part, ())
            }
        }
        if part.startswith(_DEVICE_PART):
            state = self._devices[part[len(_DEVICE_PART) :]]
            saved["device"] = {
                "max_ts": to_json(state.max_ts),
                "released_ts": to_json(state.released_ts),
                "seen_ts": state.keys.times_json(),
                "seen_seqs": state.keys.seqs_json(),
                "buffered": [
                    [stamp, ts, dict(metrics)]
                    for stamp, (ts, metrics) in (state.buffered or {}).items()
                ],
                "slots": {metric: slot.snapshot() for metric, slot in state.slots.items()},
            }
        else:
            saved["space_slots"] = {
                metric: slot.snapshot() for metric, slot in self._space_slots_in(part).items()
            }
        return saved

    @classmethod
    def restore(
        cls,
        site: SiteModel,
        clauses: Sequence[ClauseVersion],
        snapshot: Mapping[str, Any],
        *,
        lateness: float,
        standards: Mapping[str, str] | None = None,
        last_done: Mapping[tuple[str, str], float] | None = None,
    ) -> SiteEngine:
        """A new engine resuming from `snapshot` (the header with every part). Instances of
        clause versions or subjects that no longer exist are dropped; new ones start fresh."""
        if snapshot.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"unknown engine snapshot format {snapshot.get('format')!r}")
        engine = cls(site, clauses, lateness=lateness, standards=standards, last_done=last_done)
        engine.resume(snapshot)
        return engine

    def resume(self, snapshot: Mapping[str, Any]) -> None:
        """Takes the state of `snapshot` into this engine, fresh from its constructor: what
        `restore` does once it has built the engine, for a caller that builds it elsewhere
        (binding a site's clauses is most of the cost; the ingest pipeline prepares a new
        configuration off the thread that owns the running engine, issue 21)."""
        if snapshot.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"unknown engine snapshot format {snapshot.get('format')!r}")
        if self._now != NEG_INF or self._max_ts != NEG_INF or self._events:
            raise ValueError("resume() takes an engine that has not judged anything yet")
        self._now = from_json(snapshot["now"], NEG_INF)
        self._clock = from_json(snapshot["clock"], NEG_INF)
        self._start = from_json(snapshot.get("start"), self._clock)
        self._max_event_ts = from_json(snapshot["max_event_ts"], NEG_INF)
        self._max_ts = from_json(snapshot["max_ts"], NEG_INF)
        # Absent from snapshots saved before it was kept: then no bound but the clock.
        self._released_event_ts = from_json(snapshot.get("released_event_ts"), NEG_INF)
        for raw in snapshot["events"]:
            event = _event_from_json(raw)
            self._seen_events[(event.device, event.ts, event.type, event.seq)] = event.ts
            heapq.heappush(self._events, (event.ts, next(self._stamp), event))
        # One pass over the saved parts, each read once: a store may decode a part only when
        # it is read (store.checkpoints.StoredParts), so one part's objects are freed before
        # the next is decoded. Whether the saved parts are exactly this engine's, and hold
        # exactly its instances, is counted on the way.
        parts: Mapping[str, Any] = snapshot["parts"]
        mine = set(self._parts)
        same = True
        known = 0
        for part, saved in parts.items():
            if part in mine:
                known += 1
            else:
                same = False
            if part.startswith(_DEVICE_PART):
                self._restore_device(part[len(_DEVICE_PART) :], saved["device"])
            else:
                slots = self._space_slots_in(part)
                for metric, slot_state in saved["space_slots"].items():
                    if metric in slots:
                        slots[metric].restore(slot_state)
            # An instance's key names its part (space and device), so its saved state is
            # looked up in that part alone; each key is made once (they are derived, not kept).
            saved_states: Mapping[str, Any] = saved["instances"]
            instances = self._part_instances.get(part, ())
            found = 0
            subject: Subject | None = None
            named = ""
            for instance in instances:
                if instance.subject is not subject:  # a part's instances judge one subject
                    subject = instance.subject
                    named = subject_key(subject)
                saved_state = saved_states.get(instance.bound.key_prefix + named)
                if saved_state is not None:
                    instance.load(saved_state)
                    found += 1
            if found != len(saved_states) or found != len(instances):
                same = False
        if known != len(mine):  # parts not saved: their instances start fresh
            same = False
        self._released_ts = max(
            (state.released_ts for state in self._devices.values()), default=NEG_INF
        )
        for instance in self._instances:
            instance.heap_due = instance.next_due
        self._timers.fill([instance for instance in self._instances if instance.next_due < INF])
        # Buffered readings keep their arrival order (stamps) among equal event times.
        for state in self._devices.values():
            for stamp, (ts, metrics) in (state.buffered or {}).items():
                heapq.heappush(self._buffer, (ts, stamp, state, metrics))
        last_stamp = max((entry[1] for entry in self._buffer), default=-1)
        self._stamp = itertools.count(max(last_stamp + 1, next(self._stamp)))
        # What is saved is what was restored: later checkpoints need only what changes. Unless
        # the configuration changed (a part, or an instance of a part, gone or new): then the
        # stored parts hold what this engine no longer judges, and the next checkpoint
        # replaces them whole (store/ derives the open runs of the figures from them).
        if same:
            self._changed.clear()
            self._first_checkpoint = False

    def _restore_device(self, device_id: str, saved: Mapping[str, Any]) -> None:
        state = self._devices.get(device_id)
        if state is None:
            return
        state.max_ts = from_json(saved["max_ts"], NEG_INF)
        state.released_ts = from_json(saved["released_ts"], NEG_INF)
        state.keys.load(saved["seen_ts"], saved["seen_seqs"])
        buffered: dict[int, tuple[float, Mapping[str, float]]] = {
            int(stamp): (float(ts), dict(metrics)) for stamp, ts, metrics in saved["buffered"]
        }
        state.buffered = buffered or None
        for metric, slot_state in saved["slots"].items():
            if metric in state.slots:
                state.slots[metric].restore(slot_state)


_DEVICE_PART: Final = "device:"
_SPACE_PART: Final = "space:"


def _exact(value: float) -> float | str:
    """A key equal for equal bits only: the value itself where that is what equal means (not
    zero, not NaN: a hex string per lookup was a tenth of binding), else its hex form."""
    return value if value != 0.0 and value == value else value.hex()


def _device_part(device: str) -> str:
    return _DEVICE_PART + device


def _space_part(space: str) -> str:
    return _SPACE_PART + space


def _first_metric(check: ConditionCheck) -> str:
    """The metric of the first comparison in the pass condition: the subject device must
    report it (the other metrics may come from its space)."""
    node: Condition = check.passes
    while not isinstance(node, Comparison):
        if isinstance(node, AllOf):
            node = node.all[0]
        elif isinstance(node, AnyOf):
            node = node.any[0]
        else:
            node = node.not_
    return node.metric


def _never(t: float, margin: float) -> bool | None:
    """Placeholder pass-condition of thresholds, which judge in `ThresholdCheck.raw`."""
    return None


def _event_json(event: Event) -> dict[str, Any]:
    return {
        "device": event.device,
        "ts": event.ts,
        "type": event.type,
        "space": event.space,
        "actor": event.actor,
        "seq": event.seq,
        "attrs": event.attrs,
    }


def _event_from_json(raw: Mapping[str, Any]) -> Event:
    return Event(
        device=raw["device"],
        ts=float(raw["ts"]),
        type=raw["type"],
        space=raw["space"],
        actor=raw["actor"],
        seq=raw["seq"],
        attrs=dict(raw["attrs"]),
    )
