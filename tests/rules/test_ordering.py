"""Event-time semantics: reordering within the lateness, duplicates, late readings, advance,
snapshot and restore with readings still buffered."""

from __future__ import annotations

import json
from typing import Any

from rules.engine import SiteEngine
from rules.verdicts import LateReading

MAX_26_FOR = {"kind": "threshold", "metric": "temperature", "max": 26, "for": "2m"}
ROWS = [(0, 25.0), (60, 27.0), (120, 27.0), (180, 27.0), (240, 25.0), (300, 25.0)]


def judged(kit: Any, order: list[tuple[float, float]], lateness: float) -> Any:
    run = kit.run(kit.site(), kit.clause(MAX_26_FOR), lateness=lateness)
    run.feed([(t, {"temperature": v}) for t, v in order])
    run.advance(1000)
    return run


def test_out_of_order_within_the_lateness_is_judged_as_if_in_order(kit: Any) -> None:
    in_order = judged(kit, ROWS, lateness=120)
    shuffled = judged(kit, [ROWS[i] for i in (1, 0, 3, 2, 5, 4)], lateness=120)
    assert in_order.violations() == shuffled.violations() == [(60, 240)]
    assert in_order.intervals() == shuffled.intervals()


def test_with_lateness_nothing_is_judged_until_the_watermark_passes(kit: Any) -> None:
    run = kit.run(kit.site(), kit.clause({**MAX_26_FOR, "for": 0}), lateness=120, start=None)
    run.feed([(0, {"temperature": 27.0}), (100, {"temperature": 27.0})])
    assert run.started() == []  # 0 is not yet behind max ts (100) - 120
    run.feed([(130, {"temperature": 27.0})])  # releases 0: a violation at that instant ...
    assert run.started() == []  # ... held until time moves past it (nothing else at 0 s)
    run.feed([(250, {"temperature": 27.0})])
    assert [s.started_at - kit.T0 for s in run.started()] == [0]


def test_a_violation_of_zero_length_is_no_violation(kit: Any) -> None:
    """Two messages of one instant (temperature, then humidity) must not leave a transient."""
    both = {
        "kind": "condition",
        "pass": {
            "any": [
                {"metric": "temperature", "op": "<=", "value": 26},
                {"metric": "humidity", "op": "<", "value": 40},
            ]
        },
    }
    run = kit.run(kit.site(), kit.clause(both))
    run.feed([(0, {"temperature": 25.0, "humidity": 50.0})])
    run.feed([(60, {"temperature": 27.0}), (60, {"humidity": 30.0})]).advance(120)
    assert run.violations() == [] and run.intervals() == []  # compliant since 0, unbroken
    run.feed([(180, {"temperature": 27.0, "humidity": 50.0})]).advance(240)
    assert run.violations() == [(180, None)] and run.intervals() == [(0, 180, "compliant")]


def test_duplicates_change_nothing(kit: Any) -> None:
    once = judged(kit, ROWS, lateness=0)
    twice = kit.run(kit.site(), kit.clause(MAX_26_FOR))
    for t, v in ROWS:
        for _ in range(2):  # same device, metric and ts
            twice.engine.observe("d1", kit.T0 + t, None, {"temperature": v})
        # same device and seq, even with another value (a redelivery is the same message)
        twice.engine.observe("d1", kit.T0 + t, int(t), {"temperature": v})
        twice.engine.observe("d1", kit.T0 + t, int(t), {"temperature": 99.0})
    twice.collect()
    twice.advance(1000)
    assert twice.outputs == once.outputs


def test_late_readings_are_reported_and_not_judged(kit: Any) -> None:
    run = kit.run(kit.site(), kit.clause(MAX_26_FOR), lateness=60)
    run.feed([(t, {"temperature": v}) for t, v in ROWS])
    run.feed([(30, {"temperature": 40.0})])  # 30 s is behind the released 240 s reading
    late = [o for o in run.outputs if isinstance(o, LateReading)]
    assert [(o.device, o.ts - kit.T0, o.metric) for o in late] == [("d1", 30, "temperature")]
    run.advance(1000)
    assert run.violations() == [(60, 240)]


def test_readings_behind_advanced_time_are_late(kit: Any) -> None:
    run = kit.run(kit.site(), kit.clause(MAX_26_FOR), lateness=0)
    run.advance(500)
    run.feed([(400, {"temperature": 25.0}), (500, {"temperature": 25.0})])
    late = [o.ts - kit.T0 for o in run.outputs if isinstance(o, LateReading)]
    assert late == [400]


def test_snapshot_keeps_buffered_readings_and_dedupe_keys(kit: Any) -> None:
    site, clause = kit.site(), kit.clause(MAX_26_FOR)
    straight = judged(kit, ROWS, lateness=120)
    first = SiteEngine(site, [clause], lateness=120)
    first.advance(kit.T0 + 120)
    for t, v in ROWS[:4]:
        first.observe("d1", kit.T0 + t, int(t), {"temperature": v})
    before = first.drain()
    saved = json.loads(json.dumps(first.snapshot(), allow_nan=False))
    second = SiteEngine.restore(site, [clause], saved, lateness=120)
    second.observe("d1", kit.T0 + 180, 180, {"temperature": 99.0})  # a redelivered duplicate
    for t, v in ROWS[4:]:
        second.observe("d1", kit.T0 + t, int(t), {"temperature": v})
    second.advance(kit.T0 + 1000)
    assert before + second.drain() == straight.outputs


def test_a_device_whose_buffered_readings_are_released_keeps_no_buffer(kit: Any) -> None:
    """With a lateness, every reading waits in the reorder buffer; once all of a device's are
    judged it holds no table for them (an emptied dictionary kept 0.2 KiB a device), and its
    part says so as before."""
    engine = SiteEngine(kit.site(), [kit.clause(MAX_26_FOR)], lateness=120)
    engine.advance(kit.T0)
    for t, v in ROWS[:4]:
        engine.observe("d1", kit.T0 + t, int(t), {"temperature": v})
    part = engine.snapshot()["parts"]["device:d1"]["device"]
    # Those within the lateness of the newest wait.
    assert [ts for _, ts, _ in part["buffered"]] == [kit.T0 + 120, kit.T0 + 180]
    engine.advance(kit.T0 + 1000)
    assert engine._devices["d1"].buffered is None
    assert engine.snapshot()["parts"]["device:d1"]["device"]["buffered"] == []


def _data_clock(kit: Any, engine: SiteEngine, times: list[float]) -> list[Any]:
    """As the pipeline with `clock="data"`: each reading, then advance to its time."""
    outputs: list[Any] = []
    for t in times:
        engine.observe("d1", kit.T0 + t, None, {"temperature": 25.0})
        engine.advance(kit.T0 + t)
        outputs += engine.drain()
    return outputs


def test_judging_starts_at_the_first_reading_not_one_lateness_before(kit: Any) -> None:
    """Issue 17: with the data's clock the first advance comes with the first reading (at 100
    s); judging from 95 s added 5 s of data-quality time judged compliant without any data."""
    from rules.verdicts import ComplianceInterval

    quality = kit.clause(
        {"kind": "data_quality", "metrics": ["temperature"], "stale_after": "5m"}, id="dq"
    )
    clauses = (kit.clause({**MAX_26_FOR}, id="t.max"), quality)
    engine = SiteEngine(kit.site(), clauses, lateness=5)
    outputs = _data_clock(kit, engine, [100, 160])
    # A checkpoint here, then more data: the restored engine keeps the same start.
    engine = SiteEngine.restore(
        kit.site(), clauses, json.loads(json.dumps(engine.snapshot())), lateness=5
    )
    outputs += _data_clock(kit, engine, [220])
    engine.advance(kit.T0 + 1000)
    outputs += engine.drain()
    starts = {
        o.clause.clause_id: min(
            i.start
            for i in outputs
            if isinstance(i, ComplianceInterval) and i.clause.clause_id == o.clause.clause_id
        )
        - kit.T0
        for o in outputs
        if isinstance(o, ComplianceInterval)
    }
    assert starts == {"t.max": 100, "dq": 100}


def test_a_device_remembers_enough_recent_keys_to_absorb_a_redelivery_and_no_more(
    kit: Any,
) -> None:
    """The dedupe keys a device keeps are bounded (they are in every checkpoint of its part, and
    in memory for as long as the service runs): a redelivery of its newest messages, what the
    broker re-sends after losing the acknowledgement of a commit, still changes nothing."""
    site, clause = kit.site(), kit.clause({**MAX_26_FOR, "for": 0})
    engines = [SiteEngine(site, [clause], lateness=0.0) for _ in range(2)]
    for engine in engines:
        engine.advance(kit.T0)
        for i in range(2000):
            engine.observe("d1", kit.T0 + i, i, {"temperature": 25.0 + (i % 3)})
    redelivered = engines[1]
    for i in range(1968, 2000):  # the newest 32 messages again, even with other values
        redelivered.observe("d1", kit.T0 + i, i, {"temperature": 99.0})
        redelivered.observe("d1", kit.T0 + i, None, {"temperature": 99.0})
    for engine in engines:
        engine.advance(kit.T0 + 2001)
    straight, twice = (engine.drain() for engine in engines)
    assert [o for o in twice if isinstance(o, LateReading)] == []
    assert twice == straight
    device = redelivered.snapshot()["parts"]["device:d1"]["device"]
    assert len(device["seen_seqs"][0]) <= 64
    assert len(device["seen_ts"]["all"]) + len(device["seen_ts"]["some"]) <= 64


def test_many_messages_of_one_instant_keep_the_seq_memory_bounded(kit: Any) -> None:
    """A device sending message after message stamped with one instant (a clock that stopped, a
    gateway's bulk upload) still keeps only its newest keys, and the newest still dedupe."""
    engine = SiteEngine(kit.site(), [kit.clause(MAX_26_FOR)], lateness=0.0)
    engine.advance(kit.T0)
    for seq in range(1000):
        engine.observe("d1", kit.T0 + 10, seq, {"temperature": 25.0})
    engine.drain()
    engine.observe("d1", kit.T0 + 10, 999, {"temperature": 99.0})  # a redelivery: nothing
    assert engine.drain() == []
    device = engine.snapshot()["parts"]["device:d1"]["device"]
    assert len(device["seen_seqs"][0]) <= 64
