"""Snapshot and restore for every rule shape: a restarted engine continues as if it had never
stopped (same outputs as one uninterrupted run), from a whole snapshot or from incremental
checkpoints (the changed parts saved after every step, merged over the earlier ones)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from rules.engine import SiteEngine
from rules.verdicts import Event

METER = {"unit": "kWh", "cumulative": True, "carrier": "electricity", "max_gap": "1d"}


def both_ways(kit: Any, site: Any, clauses: list[Any], steps: list[Any], cut: int) -> None:
    """Runs `steps` straight through, and again with a snapshot/restore after `cut` steps."""

    def play(engine: SiteEngine, part: list[Any]) -> list[Any]:
        for kind, *args in part:
            if kind == "reading":
                device, offset, values = args
                engine.observe(device, kit.T0 + offset, None, values)
            elif kind == "event":
                space, offset, type_ = args
                engine.observe_event(Event("r1", kit.T0 + offset, type_, space=space))
            else:
                engine.advance(kit.T0 + args[0])
        return engine.drain()

    straight = SiteEngine(site, clauses, lateness=30)
    expected = play(straight, steps)
    first = SiteEngine(site, clauses, lateness=30)
    before = play(first, steps[:cut])
    saved = json.loads(json.dumps(first.snapshot(), allow_nan=False))
    second = SiteEngine.restore(site, clauses, saved, lateness=30)
    # Each clause's outputs in the same order; between clauses, outputs of one instant may
    # interleave differently (timers of different instances due at the same time).
    assert by_clause(before + play(second, steps[cut:])) == by_clause(expected)
    assert expected  # the scenario says something

    third = SiteEngine(site, clauses, lateness=30)
    saved = {}
    before = []
    for step in steps[:cut]:
        before += play(third, [step])
        saved = merge_changes(saved, json_copy(third.snapshot_changes()))
    # Every change was marked: the merged parts are exactly a whole snapshot's.
    assert without_full(saved) == without_full(json_copy(third.snapshot()))
    fourth = SiteEngine.restore(site, clauses, saved, lateness=30)
    assert by_clause(before + play(fourth, steps[cut:])) == by_clause(expected)

    # A checkpoint begun at the cut and captured one part per later step is the state at the
    # cut: parts about to change are captured before they do.
    fifth = SiteEngine(site, clauses, lateness=30)
    saved = {}
    for step in steps[:cut]:
        play(fifth, [step])
        saved = merge_changes(saved, json_copy(fifth.snapshot_changes()))
    at_cut = json_copy(fifth.snapshot())
    fifth.begin_checkpoint()
    checkpoint = None
    for step in steps[cut:]:
        play(fifth, [step])
        checkpoint = checkpoint or fifth.capture(limit=1)
    checkpoint = checkpoint or fifth.capture()
    assert checkpoint is not None
    saved = merge_changes(saved, json_copy(checkpoint))
    assert without_full(saved) == without_full(at_cut)


def json_copy(snapshot: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(snapshot, allow_nan=False))


def merge_changes(saved: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """What the checkpoint store does: a full snapshot replaces, changes replace their parts."""
    if changes["full"]:
        return changes
    return {**changes, "parts": {**saved["parts"], **changes["parts"]}}


def without_full(snapshot: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in snapshot.items() if key != "full"}


def by_clause(outputs: list[Any]) -> dict[str, list[Any]]:
    grouped: dict[str, list[Any]] = {}
    for output in outputs:
        key = output.clause.clause_id if hasattr(output, "clause") else type(output).__name__
        grouped.setdefault(key, []).append(output)
    return grouped


def test_obligation_resumes(kit: Any) -> None:
    check = {"kind": "obligation", "event": "cleaning.completed", "every": "2h", "grace": "10m"}
    clause = kit.clause(check, applies_to={"space_types": ["toilet"]})
    steps = [
        ("advance", 0),
        ("event", "wc1", 3600, "cleaning.completed"),
        ("advance", 7200),
        ("advance", 4 * 3600),  # overdue at 3 h 10 min
        ("event", "wc1", 5 * 3600, "cleaning.completed"),
        ("advance", 8 * 3600),
    ]
    for cut in range(1, len(steps)):
        both_ways(kit, kit.site(), [clause], steps, cut)


def test_quota_resumes(kit: Any) -> None:
    site = kit.site(devices=[kit.sensor("m1", "o1", energy_kwh=METER)])
    check = {"kind": "quota", "metric": "energy_kwh", "period": "day", "budget": 50}
    clause = kit.clause(check)
    steps = [("advance", 0)] + [
        ("reading", "m1", 3600 * h, {"energy_kwh": 100 + 4 * h}) for h in range(30)
    ]
    steps.append(("advance", 31 * 3600))
    for cut in (3, 10, 20, 28):
        both_ways(kit, site, [clause], steps, cut)


# Too warm for 7 minutes, then a reading out of range: a violation, its clearing and a fault.
TEMPERATURES = [25, 27, 27, 27, 27, 27, 27, 27, 25, 25, 25, 99, 25]


def condition_and_quality(kit: Any) -> tuple[Any, Any]:
    """A temperature condition with a minimum duration and a clear margin, and the
    temperature's data quality: the two clause kinds whose state a restore carries most of."""
    condition = kit.clause(
        {
            "kind": "condition",
            "pass": {"metric": "temperature", "op": "<=", "value": 26},
            "for": "5m",
            "clear": {"clear_for": "2m"},
        },
        id="t.cond",
    )
    quality = kit.clause(
        {"kind": "data_quality", "metrics": ["temperature"], "stale_after": "10m"}, id="dq"
    )
    return condition, quality


def test_condition_and_data_quality_resume(kit: Any) -> None:
    condition, quality = condition_and_quality(kit)
    values = TEMPERATURES
    steps: list[Any] = [("advance", 0)]
    steps += [("reading", "d1", 60 * i, {"temperature": v}) for i, v in enumerate(values)]
    steps += [("advance", 3000), ("reading", "d1", 3100, {"temperature": 25}), ("advance", 3200)]
    for cut in (2, 5, 9, 13, 15):
        both_ways(kit, kit.site(), [condition, quality], steps, cut)


def test_a_checkpoint_is_the_state_when_it_began_across_devices(kit: Any) -> None:
    """A reading buffered before the checkpoint began and released after it by another
    device's reading changes its own device's part: captured before that change."""
    temperature = {"unit": "°C", "range": [-20, 60], "max_gap": 600}
    site = kit.site(
        devices=[kit.sensor("d1", "o1", temperature=temperature), kit.sensor("d2", "o1")]
    )
    clause = kit.clause({"kind": "threshold", "metric": "temperature", "max": 26, "for": "5m"})
    engine = SiteEngine(site, [clause], lateness=30)
    engine.snapshot_changes()  # the first, whole checkpoint
    engine.observe("d1", kit.T0, None, {"temperature": 28.0})  # buffered (lateness 30 s)
    at_start = json_copy(engine.snapshot())
    engine.begin_checkpoint()
    engine.observe("d2", kit.T0 + 100, None, {"temperature": 20.0})  # releases d1's reading
    checkpoint = engine.capture()

    assert checkpoint is not None
    parts = json_copy(checkpoint)["parts"]
    assert set(parts) == {"device:d1"}  # only d1 changed before the checkpoint began
    assert parts["device:d1"] == at_start["parts"]["device:d1"]
    assert parts["device:d1"]["device"]["buffered"]  # its reading still waiting, as at the start


def test_an_encoder_is_given_each_part_as_it_is_captured(kit: Any) -> None:
    """With an encoder the checkpoint holds what it returned for each part, made from the part
    as it was when the checkpoint began: both for parts captured in slices and for a part
    captured just before a reading changes it."""
    temperature = {"unit": "°C", "range": [-20, 60], "max_gap": 600}
    site = kit.site(
        devices=[
            kit.sensor(device, space, temperature=temperature)
            for device, space in (("d1", "o1"), ("d2", "o1"), ("d3", "wc1"))
        ]
    )
    clause = kit.clause({"kind": "threshold", "metric": "temperature", "max": 26})
    engine = SiteEngine(site, [clause], lateness=0)
    engine.observe("d1", kit.T0, None, {"temperature": 25.0})
    engine.advance(kit.T0 + 60)
    at_start = json_copy(engine.snapshot())
    encoded: list[str] = []

    def encode(name: str, part: dict[str, Any]) -> tuple[str, str]:
        encoded.append(name)
        return name, json.dumps(part, allow_nan=False)

    engine.begin_checkpoint(encode)
    engine.observe("d2", kit.T0 + 90, None, {"temperature": 30.0})  # its part captured first
    assert engine.capture(limit=1) is None  # a slice of one part
    checkpoint = engine.capture()

    assert checkpoint is not None
    assert encoded[0] == "device:d2"
    assert sorted(encoded) == sorted(at_start["parts"]) == sorted(checkpoint["parts"])
    for name, (encoded_name, text) in checkpoint["parts"].items():
        assert encoded_name == name
        assert json.loads(text) == at_start["parts"][name]
    # The next checkpoint without one holds the parts themselves.
    assert set(json_copy(engine.snapshot_changes())["parts"]) == {"device:d2"}


def test_a_checkpoint_after_restoring_under_other_clauses_or_devices_is_whole(kit: Any) -> None:
    """A restart under another configuration (a clause version or a device gone, another one
    added) must not leave the stored parts saying what the engine no longer judges: what is
    stored is what the first checkpoint after the restore replaces, whole (the open runs the
    compliance figures count are written from these parts)."""
    site = kit.site()
    kept = kit.clause({"kind": "threshold", "metric": "temperature", "max": 26}, id="t.kept")
    dropped = kit.clause({"kind": "threshold", "metric": "humidity", "max": 70}, id="t.gone")
    engine = SiteEngine(site, [kept, dropped], lateness=0)
    engine.observe("d1", kit.T0, None, {"temperature": 25.0, "humidity": 50.0})
    engine.advance(kit.T0 + 60)
    saved = json.loads(json.dumps(engine.snapshot(), allow_nan=False))

    same = SiteEngine.restore(site, [kept, dropped], saved, lateness=0)
    assert same.snapshot_changes()["full"] is False  # nothing changed: nothing to save

    fewer = SiteEngine.restore(site, [kept], saved, lateness=0)
    checkpoint = fewer.snapshot_changes()
    assert checkpoint["full"] is True
    keys = {key for part in checkpoint["parts"].values() for key in part["instances"]}
    assert keys == {"t.kept|1|o1|d1"}

    added = kit.clause({"kind": "threshold", "metric": "humidity", "max": 80}, id="t.new")
    more = SiteEngine.restore(site, [kept, dropped, added], saved, lateness=0)
    assert more.snapshot_changes()["full"] is True

    smaller = kit.site(devices=[])
    assert SiteEngine.restore(smaller, [kept], saved, lateness=0).snapshot_changes()["full"]


def test_resume_is_restore_into_an_engine_built_elsewhere(kit: Any) -> None:
    """A configuration changed while running (issue 21): the new engine is built off the
    pipeline thread and resumed from the old one's state there. An open violation of a clause
    that stays goes on (no second start, its end reported once); an engine that judged
    anything already is refused."""
    site = kit.site()
    kept = kit.clause({"kind": "threshold", "metric": "temperature", "max": 26}, id="t.kept")
    added = kit.clause({"kind": "threshold", "metric": "humidity", "max": 80}, id="t.new")
    old = SiteEngine(site, [kept], lateness=0)
    old.observe("d1", kit.T0, None, {"temperature": 28.0, "humidity": 50.0})
    old.advance(kit.T0 + 60)
    assert [type(o).__name__ for o in old.drain()].count("ViolationStarted") == 1

    new = SiteEngine(site, [kept, added], lateness=0)
    new.resume(old.snapshot())
    new.observe("d1", kit.T0 + 120, None, {"temperature": 25.0, "humidity": 90.0})
    new.advance(kit.T0 + 180)
    outputs = new.drain()
    by_kind = {(type(o).__name__, o.clause.clause_id) for o in outputs if hasattr(o, "clause")}
    assert ("ViolationEnded", "t.kept") in by_kind
    assert ("ViolationStarted", "t.kept") not in by_kind
    assert ("ViolationStarted", "t.new") in by_kind

    with pytest.raises(ValueError, match="not judged anything"):
        new.resume(old.snapshot())


def with_every_field(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The layout saved before fields at their defaults were left out: every field listed."""
    saved = json_copy(snapshot)
    for part in saved["parts"].values():
        for state in part["instances"].values():
            if "started" in state:  # data quality (and obligations, which ignore it)
                state.setdefault("faulty_since", None)
                continue
            for field, default in (
                ("violating", False),
                ("pending_since", None),
                ("clear_since", None),
                ("started_at", None),
                ("worst", None),
                ("worst_excess", None),
                ("evidence", []),
                ("held", None),
            ):
                state.setdefault(field, default)
        slots = part["device"]["slots"] if "device" in part else part["space_slots"]
        for slot in slots.values():
            slot.setdefault("previous", None)
            slot.setdefault("fault", "")
            slot.setdefault("aggregates", [])
    return saved


def test_a_snapshot_listing_every_field_still_restores(kit: Any) -> None:
    """Checkpoints stored before defaults were left out resume as they did."""
    condition, quality = condition_and_quality(kit)
    readings = TEMPERATURES
    steps: list[Any] = [(60 * i, v) for i, v in enumerate(readings)]

    def play(engine: SiteEngine, part: list[Any]) -> list[Any]:
        for offset, value in part:
            engine.observe("d1", kit.T0 + offset, None, {"temperature": value})
        engine.advance(kit.T0 + 3000)
        return engine.drain()

    site = kit.site()
    expected = play(SiteEngine(site, [condition, quality], lateness=30), steps)
    for cut in (3, 7, 9, 12):
        first = SiteEngine(site, [condition, quality], lateness=30)
        for offset, value in steps[:cut]:
            first.observe("d1", kit.T0 + offset, None, {"temperature": value})
        before = first.drain()
        compact = json_copy(first.snapshot())
        old = with_every_field(compact)
        assert old != compact  # the old layout differs: the test reads something else
        for saved in (compact, old):
            second = SiteEngine.restore(site, [condition, quality], saved, lateness=30)
            assert json_copy(second.snapshot()) == compact
            assert by_clause(before + play(second, steps[cut:])) == by_clause(expected)


class CountingParts(Mapping[str, Any]):
    """Saved parts that count how often each is read (a store may decode a part when read)."""

    def __init__(self, parts: dict[str, Any]) -> None:
        self.parts = parts
        self.reads: dict[str, int] = {}

    def __getitem__(self, name: str) -> Any:
        self.reads[name] = self.reads.get(name, 0) + 1
        return json_copy(self.parts[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self.parts)

    def __len__(self) -> int:
        return len(self.parts)


def test_resume_reads_each_saved_part_once(kit: Any) -> None:
    """The store hands a checkpoint's parts over as stored and decodes each when it is read
    (store.checkpoints.StoredParts): resume reads every part once, and no more, and comes to
    the state that was saved."""
    site = kit.site(
        devices=[
            kit.sensor("d1", "o1", temperature=kit.TEMPERATURE, humidity=kit.HUMIDITY),
            kit.sensor("d2", "o1", temperature=kit.TEMPERATURE),
        ]
    )
    clauses = [
        kit.clause({"kind": "threshold", "metric": "temperature", "max": 26}, id="t.max"),
        kit.clause({"kind": "data_quality", "stale_after": "10m"}, id="dq.stale"),
    ]
    engine = SiteEngine(site, clauses, lateness=0)
    engine.observe("d1", kit.T0, None, {"temperature": 28.0, "humidity": 50.0})
    engine.observe("d2", kit.T0 + 1, None, {"temperature": 25.0})
    engine.advance(kit.T0 + 60)
    saved = json_copy(engine.snapshot())
    parts = CountingParts(saved["parts"])

    restored = SiteEngine.restore(site, clauses, {**saved, "parts": parts}, lateness=0)
    assert parts.reads == {name: 1 for name in saved["parts"]}
    assert json_copy(restored.snapshot()) == saved
    assert restored.snapshot_changes()["full"] is False  # the saved parts are exactly its own
