"""A replaced engine is freed by reference counting: the service freezes its state out of the
cyclic collector, so an engine whose objects still formed cycles would never be freed."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from rules.verdicts import Event


def every_shape(kit: Any) -> tuple[Any, list[Any]]:
    """A site and a clause of every kind: threshold with an aggregate and a gate read from
    another device, condition, obligation, quota, data quality."""
    site = kit.site(
        devices=[
            kit.sensor("d1", "o1", temperature=kit.TEMPERATURE, humidity=kit.HUMIDITY),
            kit.sensor("h1", "o1", hvac_mode=kit.HVAC),
            kit.sensor("m1", "o1", energy_kwh=kit.ENERGY),
        ]
    )
    cooling = {"metric": "hvac_mode", "op": "==", "value": "cooling"}
    clauses = [
        kit.clause(
            {
                "kind": "threshold",
                "metric": "temperature",
                "min": 26,
                "aggregate": {"fn": "mean", "window": "5m"},
                "when": cooling,
            },
            id="t.threshold",
        ),
        kit.clause(
            {
                "kind": "condition",
                "pass": {"metric": "humidity", "op": "<=", "value": 70},
                "for": "5m",
                "clear": {"clear_for": "2m"},
            },
            id="t.condition",
        ),
        kit.clause(
            {"kind": "obligation", "event": "cleaning.completed", "every": "2h", "grace": "10m"},
            applies_to={"space_types": ["toilet"]},
            id="t.obligation",
        ),
        kit.clause(
            {"kind": "quota", "metric": "energy_kwh", "period": "day", "budget": 50},
            id="t.quota",
        ),
        kit.clause({"kind": "data_quality", "stale_after": "10m"}, id="t.quality"),
    ]
    return site, clauses


@pytest.fixture
def saving_garbage() -> Iterator[list[Any]]:
    """What the cyclic collector finds unreachable from here on (kept, not freed)."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def engine_objects(found: list[Any]) -> list[str]:
    return sorted({type(o).__qualname__ for o in found if type(o).__module__.startswith("rules")})


def run_engine(kit: Any) -> Any:
    site, clauses = every_shape(kit)
    run = kit.run(site, *clauses)
    for minute in range(30):
        ts = kit.T0 + 60 * minute
        run.engine.observe("d1", ts, None, {"temperature": 24.0, "humidity": 80.0})
        run.engine.observe("h1", ts, None, {"hvac_mode": 1.0})
        run.engine.observe("m1", ts, None, {"energy_kwh": 100.0 + 3 * minute})
    run.engine.observe_event(
        Event(device="reader", ts=kit.T0 + 600, type="cleaning.completed", space="wc1")
    )
    run.advance(3 * 3600)
    assert run.started()  # the state held violations, evidence and open runs
    run.engine.begin_checkpoint()
    run.engine.capture(1)  # and a checkpoint half captured
    return run.engine


def test_a_closed_engine_leaves_no_cycles(kit: Any, saving_garbage: list[Any]) -> None:
    engine = run_engine(kit)
    engine.close()
    del engine
    gc.collect()
    assert engine_objects(saving_garbage) == []


def test_an_engine_not_closed_is_left_in_cycles(kit: Any, saving_garbage: list[Any]) -> None:
    # What close() is for: without it the collector alone frees a dropped engine.
    engine = run_engine(kit)
    del engine
    gc.collect()
    assert "ThresholdCheck" in engine_objects(saving_garbage)
