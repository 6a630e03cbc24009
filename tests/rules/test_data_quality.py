"""Shape 5: data quality. Faults raise a data_quality alert and make the metric unknown, so the
clauses that read it are not assessable for that time (neither compliant nor violating)."""

from __future__ import annotations

from typing import Any

C, V, NA = "compliant", "violating", "not_assessable"
MAX_26 = {"kind": "threshold", "metric": "temperature", "max": 26}


def temps(*rows: tuple[float, float]) -> list[tuple[float, dict[str, float]]]:
    return [(t, {"temperature": v}) for t, v in rows]


def clauses(kit: Any, **dq: Any) -> tuple[Any, Any]:
    quality = kit.clause({"kind": "data_quality", "metrics": ["temperature"], **dq}, id="dq.test")
    return kit.clause(MAX_26, id="t.max"), quality


def test_stale_by_time_alone_then_recovered(kit: Any) -> None:
    run = kit.run(kit.site(), *clauses(kit, stale_after="5m"))
    run.feed(temps((0, 25), (60, 25.1))).advance(1000)
    assert run.violations("data_quality") == [(360, None)]
    assert run.started("data_quality")[0].reason == "stale: temperature"
    run.feed(temps((1200, 25.2))).advance(1300)
    assert run.violations("data_quality") == [(360, 1200)]
    # Stale time is not assessable for the threshold (not only after max_gap's 600 s).
    assert run.intervals("t.max") == [(0, 360, C), (360, 1200, NA)]
    assert run.intervals("dq.test") == [(0, 360, C), (360, 1200, V)]


def test_stuck_value(kit: Any) -> None:
    run = kit.run(kit.site(), *clauses(kit, stuck_for="2m"))
    run.feed(temps((0, 25), (60, 25), (120, 25), (180, 25), (240, 25.3))).advance(300)
    assert run.violations("data_quality") == [(120, 240)]
    assert run.intervals("t.max") == [(0, 120, C), (120, 240, NA)]


def test_stuck_does_not_span_a_data_gap(kit: Any) -> None:
    """Issue 17: after a gap longer than the value holds (max_gap 600 s), a first value equal to
    the last one before the gap starts a new run; it is not stuck for the whole gap."""
    run = kit.run(kit.site(), *clauses(kit, stuck_for="2m"))
    run.feed(temps((0, 25), (60, 25), (1000, 25), (1060, 25), (1100, 25.3))).advance(1200)
    assert run.violations("data_quality") == []
    assert run.intervals("t.max") == [(0, 660, C), (660, 1000, NA)]  # compliant from 1000 on


def test_out_of_physical_range(kit: Any) -> None:
    run = kit.run(kit.site(), *clauses(kit))
    run.feed(temps((0, 25), (60, 85), (120, 30))).advance(200)
    (started,) = run.started("data_quality")
    assert started.reason == "out_of_range: temperature" and started.worst_value == 85
    assert run.violations("data_quality") == [(60, 120)]
    # 85 °C is a sensor fault, never a violation of the 26 °C clause; 30 °C at 120 s is.
    assert run.violations("violation") == [(120, None)]
    assert run.intervals("t.max") == [(0, 60, C), (60, 120, NA)]


def test_register_backwards(kit: Any) -> None:
    meter = {"unit": "kWh", "cumulative": True, "carrier": "electricity"}
    site = kit.site(devices=[kit.sensor("m1", "o1", energy_kwh=meter)])
    dq = kit.clause({"kind": "data_quality", "metrics": ["energy_kwh"]})
    run = kit.run(site, dq)
    run.feed([(0, {"energy_kwh": 500}), (60, {"energy_kwh": 20}), (120, {"energy_kwh": 21})], "m1")
    assert run.violations("data_quality") == [(60, 120)]
    assert run.started("data_quality")[0].reason == "register_backwards: energy_kwh"


def test_range_faults_are_not_alerts_when_the_clause_does_not_ask(kit: Any) -> None:
    run = kit.run(kit.site(), *clauses(kit, out_of_range=False, stale_after="1h"))
    run.feed(temps((0, 25), (60, 85), (120, 25))).advance(200)
    assert run.started("data_quality") == []
    assert run.intervals("t.max") == [(0, 60, C), (60, 120, NA)]  # still unknown, though


def test_a_silent_sensor_is_not_assessable_after_max_gap_for_the_clauses_reading_it(
    kit: Any,
) -> None:
    """Issue 17: a sensor silent for 3 h of a working day. Its last value holds for the metric's
    max_gap (600 s here), after which the clause reading it is not assessable until the next
    reading, whether or not a data-quality clause watches it; the data-quality clause (stale
    after 1 h, longer than max_gap) raises its fault only from then on."""
    morning = [(kit.at(0, 9, m), 25.0) for m in range(0, 60, 5)]  # 09:00 ... 09:55
    afternoon = [(kit.at(0, 13, m), 25.0) for m in range(0, 60, 5)]  # 13:00 ... 13:55
    silent_from = kit.at(0, 9, 55) + 600
    alone = kit.run(kit.site(), kit.clause(MAX_26, id="t.max"), start=kit.at(0, 9))
    alone.feed(temps(*morning, *afternoon)).advance(kit.at(0, 14))
    assert alone.intervals("t.max") == [
        (kit.at(0, 9), silent_from, C),
        (silent_from, kit.at(0, 13), NA),
    ]
    watched = kit.run(kit.site(), *clauses(kit, stale_after="1h"), start=kit.at(0, 9))
    watched.feed(temps(*morning, *afternoon)).advance(kit.at(0, 14))
    assert watched.intervals("t.max") == alone.intervals("t.max")
    assert watched.violations("data_quality") == [(kit.at(0, 10, 55), kit.at(0, 13))]
    assert watched.intervals("dq.test") == [
        (kit.at(0, 9), kit.at(0, 10, 55), C),
        (kit.at(0, 10, 55), kit.at(0, 13), V),
    ]
