"""Shape 2: compound conditions (all / any / not) over metrics of one subject, with unknowns
following Kleene logic (an unknown part decides nothing when another part already does)."""

from __future__ import annotations

from typing import Any

C, V, NA, OUT = "compliant", "violating", "not_assessable", "outside_schedule"

# The inspection pass test: pass if T >= 25.7 or (T >= 23.7 and RH > 62).
INSPECTION = {
    "kind": "condition",
    "pass": {
        "any": [
            {"metric": "temperature", "op": ">=", "value": 25.7},
            {
                "all": [
                    {"metric": "temperature", "op": ">=", "value": 23.7},
                    {"metric": "humidity", "op": ">", "value": 62},
                ]
            },
        ]
    },
}


def test_inspection_pass_test_value_table(kit: Any) -> None:
    run = kit.run(kit.site(), kit.clause(INSPECTION))
    rows = [
        (0, {"temperature": 26.0, "humidity": 50}),  # T >= 25.7: pass
        (60, {"temperature": 24.0, "humidity": 70}),  # humid and >= 23.7: pass
        (120, {"temperature": 24.0, "humidity": 62}),  # RH not above 62: fail
        (180, {"temperature": 23.0, "humidity": 70}),  # too cool even when humid: fail
        (240, {"temperature": 25.7, "humidity": 10}),  # boundary 25.7 passes
    ]
    run.feed(rows).advance(300)
    assert run.intervals() == [(0, 120, C), (120, 240, V)]
    (started,) = run.started()
    (ended,) = run.ended()
    # The value furthest on the failing side: when confirmed, and over the whole violation.
    assert (started.worst_value, ended.worst_value) == (24.0, 23.0)
    assert {(e.metric, e.value) for e in started.evidence} >= {("temperature", 24.0)}


def test_worst_value_and_metric_are_of_the_first_metric_so_the_unit_fits(kit: Any) -> None:
    run = kit.run(kit.site(), kit.clause(INSPECTION))
    # Humidity misses its limit by more (in its own unit) than temperature does in degrees:
    # the worst value must still be a temperature, the unit the alert shows.
    rows = [(0, {"temperature": 24.0, "humidity": 20}), (60, {"temperature": 25.0, "humidity": 10})]
    run.feed(rows).advance(120)
    (started,) = run.started()
    assert (started.metric, started.worst_value) == ("temperature", 24.0)


def test_unknown_parts_follow_kleene_logic(kit: Any) -> None:
    run = kit.run(kit.site(), kit.clause(INSPECTION))
    # Both reported at 0 s: both unknown from 600 s (max_gap); humidity never comes back.
    run.feed([(0, {"temperature": 26.0, "humidity": 50})])
    run.feed([(700, {"temperature": 26.0})])  # T alone decides: pass
    run.feed([(760, {"temperature": 24.0})])  # needs RH, which is unknown: not assessable
    run.feed([(820, {"temperature": 23.0})])  # fails whatever RH is: violating
    run.feed([(880, {"temperature": 26.0})]).advance(900)
    assert run.intervals() == [
        (0, 600, C),
        (600, 700, NA),
        (700, 760, C),
        (760, 820, NA),
        (820, 880, V),
    ]


def test_not_and_named_states(kit: Any) -> None:
    site = kit.site(
        devices=[kit.sensor("w1", "o1", window_open={"unit": "bool"}, hvac_mode=kit.HVAC)]
    )
    check = {
        "kind": "condition",
        "when": {"metric": "hvac_mode", "op": "==", "value": "cooling"},
        "pass": {"not": {"metric": "window_open", "op": "==", "value": 1}},
        "for": "15m",
    }
    run = kit.run(site, kit.clause(check))
    rows = [
        (0, {"hvac_mode": 1, "window_open": 0}),
        (60, {"hvac_mode": 1, "window_open": 1}),  # opened: a short airing is fine ...
        (600, {"hvac_mode": 1, "window_open": 0}),  # ... closed within 15 minutes
        (660, {"hvac_mode": 1, "window_open": 1}),  # open again ...
        (1200, {"hvac_mode": 1, "window_open": 1}),
        (1800, {"hvac_mode": 0, "window_open": 1}),  # AC off: no longer judged
    ]
    run.feed(rows, device="w1").advance(1900)
    assert run.violations() == [(660, 1800)]
    assert run.intervals() == [(0, 660, C), (660, 1800, V)]


def test_hysteresis_margin_flips_under_not(kit: Any) -> None:
    # pass: not (T > 26), i.e. T <= 26; while violating it must pass by 0.5 (T <= 25.5).
    check = {
        "kind": "condition",
        "pass": {"not": {"metric": "temperature", "op": ">", "value": 26}},
        "clear": {"margin": 0.5},
    }
    run = kit.run(kit.site(), kit.clause(check))
    rows = [(0, 27.0), (60, 25.8), (120, 25.5), (180, 26.2)]
    run.feed([(t, {"temperature": v}) for t, v in rows]).advance(200)
    assert run.violations() == [(0, 120), (180, None)]
