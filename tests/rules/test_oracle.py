"""Property: the streaming engine agrees with a brute-force batch oracle.

Random readings of one temperature sensor (some out of the physical range, some gaps longer
than max_gap) and, for gated rules, of an HVAC controller in the same room (the gate
`hvac_mode == cooling` is read across devices) arrive shuffled within the lateness and with
duplicates, often with readings of both devices at the same instant. The engine's violations
and compliance intervals must equal those of `oracle`, which knows every reading up front and
walks time second by second (all times and durations here are whole seconds, so nothing can
change between two seconds). The oracle shares no code with the engine: it re-derives the
semantics of docs/design.md directly.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rules.clause import ClauseVersion
from rules.engine import SiteEngine
from rules.rejudge import InstanceKey, StoredInput, horizon, instance_key, rejudge
from rules.site import SiteModel
from rules.verdicts import (
    ComplianceInterval,
    LateReading,
    ViolationEnded,
    ViolationStarted,
)

T0 = dt.datetime(2024, 7, 1, tzinfo=dt.UTC).timestamp()
MAX_GAP = 50  # seconds a reading holds
RANGE = (-20.0, 60.0)
LIMIT = 26.0
END = 400  # the engine is advanced until this time is final
VALUES = [24.0, 25.4, 25.9, 26.0, 26.2, 26.6, 27.0, 99.0]  # 99: outside the physical range
WINDOWS = {None: None, "00:01-00:04": (60, 240), "00:02-00:03": (120, 180)}
HVAC_GAP = 70  # seconds an HVAC state holds


@dataclass(frozen=True)
class Rule:
    for_: int
    margin: float
    clear_for: int
    window: str | None
    gated: bool = False


# ---- the oracle ----


def oracle(
    readings: dict[int, float], rule: Rule, hvac: dict[int, float] | None = None
) -> tuple[list[Any], list[Any]]:
    """(violations, closed intervals) from the complete, ordered, duplicate-free readings.
    Violations are (started_at, confirmed_at, ended_at or None); intervals are
    (start, end, status) with equal neighbours merged."""
    window = WINDOWS[rule.window]
    times = sorted(readings)
    hvac = hvac or {}

    def raw(t: int, violating: bool) -> str:
        if window is not None and not (window[0] <= t < window[1]):
            return "outside"
        if rule.gated:
            states = [ts for ts in sorted(hvac) if ts <= t]
            if not states or t >= states[-1] + HVAC_GAP:
                return "unknown"
            if hvac[states[-1]] != 1:
                return "outside"
        latest = [ts for ts in times if ts <= t]
        if not latest or t >= latest[-1] + MAX_GAP:
            return "unknown"
        value = readings[latest[-1]]
        if not (RANGE[0] <= value <= RANGE[1]):
            return "unknown"
        limit = LIMIT - rule.margin if violating else LIMIT
        return "fail" if value > limit else "pass"

    violations: list[list[Any]] = []
    raws: list[str] = []
    violating = False
    fail_start: int | None = None
    pass_start: int | None = None
    for t in range(END + 1):
        if not violating and fail_start is not None and t - fail_start >= rule.for_:
            violating, pass_start = True, None
            violations.append([fail_start, fail_start + rule.for_, None])
            fail_start = None
        if violating and pass_start is not None and t - pass_start >= rule.clear_for:
            violations[-1][2] = pass_start
            violating, pass_start = False, None
        now = raw(t, violating)
        raws.append(now)
        if violating:
            if now == "fail":
                pass_start = None
            elif now == "pass":
                if pass_start is None:
                    pass_start = t
                if rule.clear_for == 0:
                    violations[-1][2] = t
                    violating, pass_start = False, None
            else:
                violations[-1][2] = pass_start if pass_start is not None else t
                violating, pass_start = False, None
        elif now == "fail":
            if fail_start is None:
                fail_start = t
            if rule.for_ == 0:
                violations.append([t, t, None])
                violating, fail_start = True, None
        else:
            fail_start = None

    # Status per second; a stretch still pending at the end is undecided, so stop before it.
    decided = END + 1
    if fail_start is not None:
        decided = fail_start
    elif violating and pass_start is not None:
        decided = pass_start
    statuses = []
    for t in range(decided):
        in_violation = any(s <= t and (e is None or t < e) for s, _, e in violations)
        statuses.append(
            "violating"
            if in_violation
            else {"outside": "outside_schedule", "unknown": "not_assessable"}.get(
                raws[t], "compliant"
            )
        )
    intervals = []
    start = 0
    for t in range(1, decided + 1):
        if t == decided or statuses[t] != statuses[start]:
            intervals.append((start, t, statuses[start]))
            start = t
    return [tuple(v) for v in violations], intervals[:-1]  # the last run is still open


# ---- the engine ----


def site() -> SiteModel:
    return SiteModel.model_validate(
        {
            "site": {"id": "s1", "name": "s", "timezone": "UTC"},
            "spaces": [{"id": "o1", "type": "office"}],
            "devices": [
                {
                    "id": "d1",
                    "space": "o1",
                    "metrics": {
                        "temperature": {"unit": "°C", "range": list(RANGE), "max_gap": MAX_GAP}
                    },
                },
                {
                    "id": "h1",
                    "space": "o1",
                    "metrics": {
                        "hvac_mode": {
                            "unit": "state",
                            "states": {"off": 0, "cooling": 1},
                            "max_gap": HVAC_GAP,
                        }
                    },
                },
            ],
        }
    )


def clause(rule: Rule) -> ClauseVersion:
    schedule: dict[str, Any] = {}
    if rule.window is not None:
        start, end = rule.window.split("-")
        schedule = {"windows": [{"start": start, "end": end}]}
    return ClauseVersion.model_validate(
        {
            "id": "t.max",
            "version": 1,
            "effective_from": "2024-01-01",
            "number": "1",
            "title": "t",
            "domain": "test",
            "confidence": "A",
            "schedule": schedule,
            "check": {
                "kind": "threshold",
                "metric": "temperature",
                "max": LIMIT,
                "for": rule.for_,
                "clear": {"margin": rule.margin, "clear_for": rule.clear_for},
                "when": {"metric": "hvac_mode", "op": "==", "value": "cooling"}
                if rule.gated
                else None,
            },
        }
    )


Arrival = tuple[str, int, int | None, float]  # device, ts, seq, value


def engine_verdicts(
    arrivals: list[Arrival], rule: Rule, lateness: int
) -> tuple[list[Any], list[Any]]:
    engine = SiteEngine(site(), [clause(rule)], lateness=lateness)
    engine.advance(T0 + lateness)  # time 0 is final: the timeline starts there
    for device, ts, seq, value in arrivals:
        metric = "temperature" if device == "d1" else "hvac_mode"
        engine.observe(device, T0 + ts, seq, {metric: value})
    engine.advance(T0 + END + lateness)
    outputs = engine.drain()
    ends = {o.started_at: o.ended_at - T0 for o in outputs if isinstance(o, ViolationEnded)}
    violations = [
        (o.started_at - T0, o.confirmed_at - T0, ends.get(o.started_at))
        for o in outputs
        if isinstance(o, ViolationStarted)
    ]
    intervals: list[tuple[float, float, str]] = []
    for o in outputs:
        if isinstance(o, ComplianceInterval):
            start, end = o.start - T0, o.end - T0
            if intervals and intervals[-1][2] == o.status and intervals[-1][1] == start:
                intervals[-1] = (intervals[-1][0], end, o.status)
            else:
                intervals.append((start, end, o.status))
    return violations, intervals


# ---- the property ----


@st.composite
def scenarios(
    draw: st.DrawFn,
) -> tuple[dict[int, float], dict[int, float], list[Arrival], Rule, int]:
    times = sorted(draw(st.sets(st.integers(0, 300), min_size=1, max_size=30)))
    readings = {t: draw(st.sampled_from(VALUES)) for t in times}
    rule = Rule(
        for_=draw(st.sampled_from([0, 20, 45])),
        margin=draw(st.sampled_from([0.0, 0.5])),
        clear_for=draw(st.sampled_from([0, 15])),
        window=draw(st.sampled_from(list(WINDOWS))),
        gated=draw(st.booleans()),
    )
    hvac: dict[int, float] = {}
    if rule.gated:
        # Often at the same instants as temperature readings: applied one after the other,
        # they must not leave a transient behind.
        hvac_times = draw(
            st.sets(st.integers(0, 300) | st.sampled_from(times), min_size=1, max_size=10)
        )
        hvac = {t: float(draw(st.sampled_from([0, 1, 1]))) for t in hvac_times}
    lateness = draw(st.sampled_from([0, 5, 30, 90]))
    with_seq = draw(st.booleans())
    # Arrival: each reading delayed by less than the lateness, ties broken at random.
    items = [("d1", t, v) for t, v in readings.items()] + [("h1", t, v) for t, v in hvac.items()]
    keyed = [
        (t + draw(st.integers(0, max(lateness - 1, 0))), draw(st.floats(0, 1)), i, device, t, v)
        for i, (device, t, v) in enumerate(items)
    ]
    arrivals: list[Arrival] = [
        (device, t, i if with_seq else None, v) for _, _, i, device, t, v in sorted(keyed)
    ]
    # Duplicates (redeliveries) anywhere after their original.
    for _ in range(draw(st.integers(0, 5))):
        original = draw(st.integers(0, len(arrivals) - 1))
        position = draw(st.integers(original + 1, len(arrivals)))
        arrivals.insert(position, arrivals[original])
    return readings, hvac, arrivals, rule, lateness


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_streaming_engine_equals_batch_oracle(
    scenario: tuple[dict[int, float], dict[int, float], list[Arrival], Rule, int],
) -> None:
    readings, hvac, arrivals, rule, lateness = scenario
    assert engine_verdicts(arrivals, rule, lateness) == oracle(readings, rule, hvac)


def test_a_same_instant_gate_reading_leaves_no_transient_interval() -> None:
    """Found by the property above: the gate's reading at t=4 applied before the out-of-range
    temperature at t=4 made the site compliant for an instant; that zero-length stretch must
    not split the not-assessable run into a closed interval (0, 4)."""
    rule = Rule(for_=0, margin=0.0, clear_for=0, window=None, gated=True)
    readings = {0: 24.0, 1: 24.0, 2: 24.0, 3: 24.0, 4: 99.0}
    hvac = {4: 1.0}
    arrivals: list[Arrival] = [("d1", t, None, v) for t, v in readings.items() if t < 4]
    arrivals += [("h1", 4, None, 1.0), ("d1", 4, None, 99.0)]
    assert engine_verdicts(arrivals, rule, 0) == oracle(readings, rule, hvac)


# ---- late input re-judged (issue 17, defect 3) ----


def rejudged_verdicts(
    arrivals: list[Arrival], rule: Rule, lateness: int
) -> tuple[list[Any], list[Any]]:
    """As `engine_verdicts`, but input later than the lateness is re-judged as the pipeline does
    it: from the newest snapshot taken before its timestamp, with every input taken since, and
    the recorded intervals and violations of the instances are corrected from there on."""
    model, clauses = site(), [clause(rule)]
    engine = SiteEngine(model, clauses, lateness=lateness)
    now = T0 + lateness
    engine.advance(now)
    history: list[tuple[dict[str, Any], int]] = []  # snapshot, arrivals taken before it
    intervals: list[ComplianceInterval] = []
    alerts: dict[tuple[InstanceKey, float], list[Any]] = {}  # -> [confirmed_at, ended_at]

    def record(outputs: list[Any]) -> None:
        for o in outputs:
            if isinstance(o, ComplianceInterval):
                intervals.append(o)
            elif isinstance(o, ViolationStarted):
                alerts.setdefault((instance_key(o), o.started_at), [o.confirmed_at, None])
            elif isinstance(o, ViolationEnded) and (instance_key(o), o.started_at) in alerts:
                alerts[(instance_key(o), o.started_at)][1] = o.ended_at

    def stored(index: int) -> StoredInput:
        device, ts, seq, value = arrivals[index]
        return (device, T0 + ts, seq, {"temperature" if device == "d1" else "hvac_mode": value})

    for index in range(len(arrivals)):
        history.append((engine.snapshot(), index))
        engine.observe(*stored(index))
        outputs = engine.drain()
        record(outputs)
        late = [o.ts for o in outputs if isinstance(o, LateReading)]
        if not late:
            continue
        chosen = max(i for i, (s, _) in enumerate(history) if horizon(s, lateness) <= min(late))
        snapshot, taken = history[chosen]
        inputs = [stored(i) for i in range(taken, index + 1)]
        result = rejudge(model, clauses, snapshot, inputs, now, lateness=lateness)
        assert result.late() == []
        kept = [i for i in intervals if i.start < result.replace_from[instance_key(i)]]
        intervals[:] = kept + result.intervals()
        for key in [k for k in alerts if k[1] >= result.replace_from[k[0]]]:
            previous = alerts.pop(key)
            for span in result.spans().get(key[0], []):
                if span.started is None and span.started_at == key[1]:
                    alerts[key] = [previous[0], span.ended.ended_at if span.ended else None]
        for key, spans in result.spans().items():
            for span in spans:
                if span.started is not None:
                    alerts[(key, span.started_at)] = [
                        span.started.confirmed_at,
                        span.ended.ended_at if span.ended else None,
                    ]
        record([o for o in result.outputs if isinstance(o, ViolationEnded)])
        engine = result.engine
        del history[chosen + 1 :]  # taken without the late input: no longer true
    engine.advance(T0 + END + lateness)
    record(engine.drain())
    violations = sorted(
        (started - T0, confirmed - T0, None if ended is None else ended - T0)
        for (_, started), (confirmed, ended) in alerts.items()
    )
    merged: list[tuple[float, float, str]] = []
    for o in sorted(intervals, key=lambda i: i.start):
        start, end = o.start - T0, o.end - T0
        if merged and merged[-1][2] == o.status and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], end, o.status)
        else:
            merged.append((start, end, o.status))
    return violations, merged


@st.composite
def late_scenarios(
    draw: st.DrawFn,
) -> tuple[dict[int, float], dict[int, float], list[Arrival], Rule, int]:
    """As `scenarios`, but some input arrives up to 150 s late, far beyond the lateness."""
    readings, hvac, arrivals, rule, lateness = draw(scenarios())
    keyed = [
        (ts + draw(st.sampled_from([0, 0, 0, lateness + 1, 60, 150])), position, item)
        for position, item in enumerate(arrivals)
        for _, ts, _, _ in [item]
    ]
    return readings, hvac, [item for _, _, item in sorted(keyed)], rule, lateness


@settings(max_examples=150, deadline=None)
@given(late_scenarios())
def test_input_later_than_the_lateness_is_rejudged_to_the_in_order_verdicts(
    scenario: tuple[dict[int, float], dict[int, float], list[Arrival], Rule, int],
) -> None:
    readings, hvac, arrivals, rule, lateness = scenario
    violations, intervals = oracle(readings, rule, hvac)
    assert rejudged_verdicts(arrivals, rule, lateness) == (sorted(violations), intervals)


def test_a_late_gate_reading_undoes_a_violation_held_at_the_snapshot() -> None:
    """Found by the property above (2026-12-07). Cooling from 40, 26.2 °C at 41 (over the
    maximum while cooling, no `for`): the violation begins at 41 and is held until time moves
    past 41 (another input of that instant may undo it), and the snapshot before the reading
    at 42 holds it. The cooling's end at 41 arrives late. Re-judged from that snapshot, the
    instant 41 is outside the gate: no violation. The held start was taken for a violation
    already recorded at the snapshot, carried and never ended: an alert open for ever."""
    arrivals: list[Arrival] = [
        ("d1", 0, None, 24.0),
        ("h1", 0, None, 0.0),
        ("d1", 1, None, 24.0),
        ("h1", 32, None, 0.0),
        ("h1", 40, None, 1.0),
        ("d1", 41, None, 26.2),
        ("d1", 42, None, 24.0),
        ("h1", 96, None, 0.0),
        ("h1", 41, None, 0.0),  # late
    ]
    rule = Rule(for_=0, margin=0.0, clear_for=0, window=None, gated=True)
    in_order = sorted(arrivals, key=lambda arrival: arrival[1])
    assert engine_verdicts(in_order, rule, 0)[0] == []
    assert rejudged_verdicts(arrivals, rule, 0) == engine_verdicts(in_order, rule, 0)


def test_a_same_instant_gate_reading_keeps_the_hysteresis_margin() -> None:
    """In order, no late input: violating since 175 (26.6 °C), the HVAC state at 225 (cooling
    still) taken before the 26.0 °C of the same instant ends the violation at 225, as if the
    clear margin (0.5: must drop to 25.5) did not apply; taken after it, the violation goes on
    to 275 (the value's max_gap), as the oracle says."""
    rule = Rule(for_=0, margin=0.5, clear_for=0, window=None, gated=True)
    readings, hvac = {175: 26.6, 225: 26.0}, {169: 1.0, 225: 1.0}
    arrivals: list[Arrival] = [
        ("h1", 169, None, 1.0),
        ("d1", 175, None, 26.6),
        ("h1", 225, None, 1.0),
        ("d1", 225, None, 26.0),
    ]
    assert engine_verdicts(arrivals, rule, 0) == oracle(readings, rule, hvac)
