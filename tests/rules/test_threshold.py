"""Shape 1: thresholds and bands. Value tables: (seconds from T0, value) in, statuses and
violations out, computed by hand. Statuses: c compliant, v violating, na not assessable,
out outside schedule."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from rules.engine import SiteEngine
from rules.verdicts import ComplianceInterval, ViolationStarted

C, V, NA, OUT = "compliant", "violating", "not_assessable", "outside_schedule"
MAX_26 = {"kind": "threshold", "metric": "temperature", "max": 26}


def temps(*rows: tuple[float, float]) -> list[tuple[float, dict[str, float]]]:
    return [(t, {"temperature": v}) for t, v in rows]


def test_raw_threshold_value_table(kit: Any) -> None:
    run = kit.run(kit.site(), kit.clause(MAX_26))
    run.feed(temps((0, 25), (60, 27), (120, 26), (180, 26.5), (240, 25))).advance(300)
    assert run.intervals() == [(0, 60, C), (60, 120, V), (120, 180, C), (180, 240, V)]
    assert run.violations() == [(60, 120), (180, 240)]


def test_garbage_and_gaps_are_not_assessable_then_recover(kit: Any) -> None:
    run = kit.run(kit.site(), kit.clause(MAX_26))
    # 99 °C is outside the sensor's physical range (-20..60): a fault, not a violation.
    # Nothing from 120 to 1000 s: the value holds for max_gap (600 s), then is unknown.
    run.feed(temps((0, 25), (60, 99), (120, 25), (1000, 25))).advance(1100)
    assert run.intervals() == [(0, 60, C), (60, 120, NA), (120, 720, C), (720, 1000, NA)]
    assert run.violations() == []


def test_no_data_at_all_is_not_assessable_never_compliant(kit: Any) -> None:
    run = kit.run(kit.site(), kit.clause(MAX_26))
    run.feed(temps((500, 25))).advance(600)
    assert run.intervals() == [(0, 500, NA)]


def test_for_needs_the_condition_to_hold_that_long(kit: Any) -> None:
    run = kit.run(kit.site(), kit.clause({**MAX_26, "for": "2m"}))
    rows = [(0, 25), (60, 27), (120, 27), (150, 25)]  # 90 s excursion: compliant time
    rows += [(200, 27), (260, 27), (320, 27), (380, 25)]  # 180 s: a violation from 200 s
    run.feed(temps(*rows)).advance(400)
    assert run.intervals() == [(0, 200, C), (200, 380, V)]
    (started,) = run.started()
    assert (started.started_at - kit.T0, started.confirmed_at - kit.T0) == (200, 320)
    # The readings that established it (the one at 320 s came at the confirming instant).
    assert [e.ts - kit.T0 for e in started.evidence] == [200, 260]
    assert run.violations() == [(200, 380)]


def test_for_is_confirmed_by_time_alone(kit: Any) -> None:
    run = kit.run(kit.site(), kit.clause({**MAX_26, "for": "2m"}))
    run.feed(temps((0, 27))).advance(119)
    assert run.started() == []
    run.advance(120)
    assert [(s.started_at - kit.T0, s.confirmed_at - kit.T0) for s in run.started()] == [(0, 120)]


def test_hysteresis_margin_and_clear_duration(kit: Any) -> None:
    check = {**MAX_26, "clear": {"margin": 0.5, "clear_for": "1m"}}
    run = kit.run(kit.site(), kit.clause(check))
    rows = [
        (0, 27),  # violating
        (60, 25.8),  # below 26 but not by the 0.5 margin: still violating
        (120, 25.4),  # passes by the margin: clearing starts
        (150, 26.2),  # fails again before a minute: clearing cancelled
        (180, 25.0),  # clearing starts again ...
        (300, 25.0),  # ... and held a minute by 240: the violation ended at 180
    ]
    run.feed(temps(*rows)).advance(400)
    assert run.violations() == [(0, 180)]
    assert run.intervals() == [(0, 180, V)]
    (ended,) = run.ended()
    assert ended.worst_value == 27


def test_unknown_ends_a_violation_and_cuts_a_pending_one(kit: Any) -> None:
    run = kit.run(kit.site(), kit.clause({**MAX_26, "for": "5m"}))
    # 27 from 0 s, confirmed at 300 s; the value expires at 600 s (max_gap): the violation
    # ends there. 27 again from 1000 s: confirmed at 1300 s, still open.
    run.feed(temps((0, 27), (1000, 27), (1100, 27))).advance(1400)
    assert run.violations() == [(0, 600), (1000, None)]
    assert run.intervals() == [(0, 600, V), (600, 1000, NA)]
    run2 = kit.run(kit.site(), kit.clause({**MAX_26, "for": "15m"}))
    run2.feed(temps((0, 27))).advance(700)  # expires at 600, before the 900 s `for`
    assert run2.violations() == []
    assert run2.intervals() == [(0, 600, C)]


def test_tolerance_applies_to_the_limit_and_both_are_recorded(kit: Any) -> None:
    clause = kit.clause(
        {"kind": "threshold", "metric": "temperature", "min": "$limit", "tolerance": "$tol"},
        params={"limit": {"default": 26, "unit": "°C"}, "tol": {"default": 0.3, "unit": "°C"}},
    )
    run = kit.run(kit.site(), clause)
    run.feed(temps((0, 25.8), (60, 25.69), (120, 25.7))).advance(200)
    assert run.intervals() == [(0, 60, C), (60, 120, V)]
    (started,) = run.started()
    assert started.params["min"] == 26 and started.params["tolerance"] == 0.3
    assert started.params["limit"] == 26 and started.worst_value == 25.69


def test_parameters_overridden_per_space_type(kit: Any) -> None:
    clause = kit.clause(
        {"kind": "threshold", "metric": "temperature", "max": "$max"},
        params={"max": {"default": 26, "unit": "°C"}},
        overrides={"space_types": {"office": {"max": 28}}},
    )
    run = kit.run(kit.site(), clause)
    run.feed(temps((0, 27), (60, 28.5))).advance(120)
    assert run.intervals() == [(0, 60, C)]


def test_rolling_mean_over_a_time_window(kit: Any) -> None:
    check = {**MAX_26, "aggregate": {"fn": "mean", "window": "5m"}}
    run = kit.run(kit.site(), kit.clause(check))
    rows = [
        (0, 25),  # mean 25
        (60, 27),  # mean 26: not above
        (120, 27.5),  # mean 26.5: violating
        (360, 25),  # window (60, 360]: 27, 27.5, 25 -> 26.5
        (420, 24),  # window (120, 420]: 27.5, 25, 24 -> 25.5
    ]
    run.feed(temps(*rows)).advance(500)
    assert run.violations() == [(120, 420)]


@pytest.mark.parametrize(("fn", "expected"), [("max", [(60, 360)]), ("min", [])])
def test_rolling_min_and_max(kit: Any, fn: str, expected: list[tuple[float, float]]) -> None:
    check = {**MAX_26, "aggregate": {"fn": fn, "window": "5m"}}
    run = kit.run(kit.site(), kit.clause(check))
    run.feed(temps((0, 25), (60, 27), (120, 25), (360, 25))).advance(400)
    assert run.violations() == expected


def test_band_with_min_and_max(kit: Any) -> None:
    run = kit.run(kit.site(), kit.clause({**MAX_26, "min": 24}))
    run.feed(temps((0, 23.9), (60, 24), (120, 26), (180, 26.1))).advance(200)
    assert run.intervals() == [(0, 60, V), (60, 180, C)]


def hvac_site(kit: Any) -> Any:
    return kit.site(
        devices=[
            kit.sensor("d1", "o1", temperature=kit.TEMPERATURE),
            kit.sensor("h1", "o1", hvac_mode=kit.HVAC),
        ]
    )


def test_when_gate_on_a_named_state_from_another_device_of_the_space(kit: Any) -> None:
    check = {
        "kind": "threshold",
        "metric": "temperature",
        "min": 26,
        "when": {"metric": "hvac_mode", "op": "==", "value": "cooling"},
    }
    run = kit.run(hvac_site(kit), kit.clause(check))
    run.feed([(0, {"hvac_mode": 1})], device="h1")
    run.feed(temps((0, 25), (60, 24)))
    run.feed([(120, {"hvac_mode": 0})], device="h1")  # off: not judged
    run.feed(temps((180, 24)))
    run.feed([(240, {"hvac_mode": 1})], device="h1")
    run.feed(temps((300, 27))).advance(400)
    assert run.intervals() == [(0, 120, V), (120, 240, OUT), (240, 300, V)]
    assert run.violations() == [(0, 120), (240, 300)]


def test_unknown_gate_is_not_assessable(kit: Any) -> None:
    check = {
        "kind": "threshold",
        "metric": "temperature",
        "min": 26,
        "when": {"metric": "hvac_mode", "op": "==", "value": "cooling"},
    }
    run = kit.run(hvac_site(kit), kit.clause(check))
    run.feed(temps((0, 27), (300, 27))).advance(400)  # no HVAC state seen yet
    assert run.intervals() == [] and run.violations() == []  # not assessable, still open
    run.feed([(450, {"hvac_mode": 1})], device="h1").advance(500)
    assert run.intervals() == [(0, 450, NA)]


def test_schedule_boundaries_cut_intervals_and_violations(kit: Any) -> None:
    clause = kit.clause(MAX_26, schedule={"windows": [{"start": "08:30", "end": "12:00"}]})
    run = kit.run(kit.site(), clause, start=kit.at(0, 8))
    rows = [(kit.at(0, 8) + 300 * i, 27.0) for i in range(60)]  # 08:00 .. 12:55, always 27
    run.feed(temps(*rows)).advance(kit.at(0, 13))
    assert run.intervals() == [
        (kit.at(0, 8), kit.at(0, 8, 30), OUT),
        (kit.at(0, 8, 30), kit.at(0, 12), V),
    ]
    assert run.violations() == [(kit.at(0, 8, 30), kit.at(0, 12))]


def test_exempt_space_types_get_no_instance(kit: Any) -> None:
    site = kit.site(
        spaces=[
            {"id": "o1", "type": "office"},
            {"id": "srv", "type": "server-room"},
        ],
        devices=[
            kit.sensor("d1", "o1", temperature=kit.TEMPERATURE),
            kit.sensor("d2", "srv", temperature=kit.TEMPERATURE),
        ],
    )
    clause = kit.clause(MAX_26, applies_to={"exempt": {"space_types": ["server-room"]}})
    run = kit.run(site, clause)
    run.feed(temps((0, 30)), device="d1").feed(temps((0, 30)), device="d2").advance(60)
    assert {s.subject.device for s in run.started()} == {"d1"}


def test_evidence_is_bounded_and_worst_value_tracked(kit: Any) -> None:
    run = kit.run(kit.site(), kit.clause({**MAX_26, "for": "10m"}))
    rows = [(10 * i, 27 + (i % 7) * 0.1) for i in range(70)]
    run.feed(temps(*rows)).advance(700)
    (started,) = run.started()
    assert len(started.evidence) == 10
    assert started.worst_value == pytest.approx(27.6)
    assert [e.ts - kit.T0 for e in started.evidence] == [500 + 10 * i for i in range(10)]


def test_formaldehyde_edition_switch_by_reading_time(kit: Any) -> None:
    """GB/T 18883: 0.10 mg/m³ until 2023-01-31, 0.08 from 2023-02-01, one clause id."""
    hcho = {"unit": "mg/m3", "range": [0, 5], "max_gap": "3h"}
    site = kit.site(devices=[kit.sensor("d1", "o1", hcho=hcho)])
    check = {"kind": "threshold", "metric": "hcho", "max": "$limit"}
    v1 = kit.clause(
        check,
        id="iaq.hcho",
        version=1,
        effective_from="2003-03-01",
        effective_to="2023-01-31",
        params={"limit": {"default": 0.10, "unit": "mg/m3"}},
    )
    v2 = kit.clause(
        check,
        id="iaq.hcho",
        version=2,
        effective_from="2023-02-01",
        params={"limit": {"default": 0.08, "unit": "mg/m3"}},
    )
    zone = kit.site().zone()
    before = dt.datetime(2023, 1, 31, 23, 0, tzinfo=zone).timestamp()
    after = dt.datetime(2023, 2, 1, 1, 0, tzinfo=zone).timestamp()
    engine = SiteEngine(site, [v1, v2], lateness=0)
    engine.observe("d1", before, 1, {"hcho": 0.09})
    engine.observe("d1", after, 2, {"hcho": 0.09})
    engine.advance(after + 60)
    outputs = engine.drain()
    started = [o for o in outputs if isinstance(o, ViolationStarted)]
    midnight = dt.datetime(2023, 2, 1, tzinfo=zone).timestamp()
    # The 23:00 reading (0.09) still holds at midnight: version 2 judges it from 00:00.
    assert [(s.clause.version, s.started_at) for s in started] == [(2, midnight)]
    assert started[0].params["limit"] == 0.08
    v1_intervals = [
        (o.start, o.end, o.status)
        for o in outputs
        if isinstance(o, ComplianceInterval) and o.clause.version == 1
    ]
    assert v1_intervals == [(before, midnight, C)]
    assert len(started[0].clause.content_hash) == 64


def test_snapshot_restore_resumes_a_half_elapsed_for(kit: Any) -> None:
    site, clause = kit.site(), kit.clause({**MAX_26, "for": "10m"})
    run = kit.run(site, clause)
    run.feed(temps(*[(60 * i, 27) for i in range(6)]))  # 0..300 s: half of the 10 minutes
    saved = json.loads(json.dumps(run.engine.snapshot(), allow_nan=False))
    restored = SiteEngine.restore(site, [clause], saved, lateness=0)
    restored.observe("d1", kit.T0 + 360, None, {"temperature": 27})
    restored.advance(kit.T0 + 600)
    started = [o for o in restored.drain() if isinstance(o, ViolationStarted)]
    assert [(s.started_at - kit.T0, s.confirmed_at - kit.T0) for s in started] == [(0, 600)]


def test_a_gate_read_from_devices_holding_values_for_different_times_expires_on_time(
    kit: Any,
) -> None:
    # The office's hvac_mode is the latest of two controllers': h1's holds an hour, h2's a
    # minute. After h2 reports at 100 s the gate is unknown from 160 s, although h1's older
    # value would still hold (a space's value is its latest reading).
    site = kit.site(
        devices=[
            kit.sensor("d1", "o1", temperature=kit.TEMPERATURE),
            kit.sensor("h1", "o1", hvac_mode=kit.HVAC),
            kit.sensor("h2", "o1", hvac_mode={**kit.HVAC, "max_gap": 60}),
        ]
    )
    gate = {"metric": "hvac_mode", "op": "==", "value": "cooling"}
    run = kit.run(site, kit.clause({**MAX_26, "when": gate}))
    run.feed([(0, {"hvac_mode": 1})], device="h1")
    run.feed(temps((0, 25)))
    run.feed([(100, {"hvac_mode": 1})], device="h2")
    run.feed(temps((300, 25)))
    run.feed([(500, {"hvac_mode": 1})], device="h1")
    run.advance(600)
    assert run.intervals() == [(0, 160, C), (160, 500, NA)]
