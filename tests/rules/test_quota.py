"""Shape 4: quotas on cumulative registers: differences, resets, pro-rated budget-to-date,
forecast warnings, breaches until the period ends."""

from __future__ import annotations

from typing import Any

from rules.verdicts import RegisterReset

METER = {"unit": "kWh", "cumulative": True, "carrier": "electricity", "max_gap": "1d"}


def meter_site(kit: Any) -> Any:
    return kit.site(devices=[kit.sensor("m1", "o1", energy_kwh=METER)])


def kwh(*rows: tuple[float, float]) -> list[tuple[float, dict[str, float]]]:
    return [(t, {"energy_kwh": v}) for t, v in rows]


DAILY_100 = {
    "kind": "quota",
    "metric": "energy_kwh",
    "period": "day",
    "budget": 100,
    "forecast_after": 0.25,
}


def test_warning_then_breach_then_period_end(kit: Any) -> None:
    run = kit.run(meter_site(kit), kit.clause(DAILY_100))
    rows = [
        (kit.at(0, 0), 1000),
        (kit.at(0, 6), 1030),  # 30 kWh at a quarter of the day: forecast 120 > 100: warning
        (kit.at(0, 12), 1050),  # 50 at half: forecast 100, not above: the warning ends
        (kit.at(0, 18), 1110),  # 110 > 100: breach until the day ends
        (kit.at(1, 3), 1120),
    ]
    run.feed(kwh(*rows), device="m1").advance(kit.at(1, 4))
    assert run.violations("warning") == [(kit.at(0, 6), kit.at(0, 12))]
    assert run.violations("violation") == [(kit.at(0, 18), kit.at(1, 0))]
    (warning,) = run.started("warning")
    assert warning.params["budget_to_date"] == 25 and warning.params["forecast"] == 120
    assert warning.worst_value == 30 and warning.unit == "kWh"
    (breach,) = run.started("violation")
    assert breach.params["consumed"] == 110
    assert run.intervals() == [
        (kit.at(0, 0), kit.at(0, 18), "compliant"),
        (kit.at(0, 18), kit.at(1, 0), "violating"),
    ]


def test_register_reset_is_a_new_baseline_never_negative_consumption(kit: Any) -> None:
    clause = kit.clause({**DAILY_100, "budget": 40})
    run = kit.run(meter_site(kit), clause)
    rows = [(0, 1000), (3600, 1010), (7200, 5), (10800, 25)]  # reset to 5 after 1010
    run.feed(kwh(*rows), device="m1").advance(11000)
    resets = [o for o in run.outputs if isinstance(o, RegisterReset)]
    assert [(r.previous, r.value) for r in resets] == [(1010, 5)]
    # 10 before the reset, 20 after it: 30 <= 40, no breach.
    assert run.violations("violation") == []
    run.feed(kwh((14400, 36)), device="m1").advance(14500)  # 41 in all
    assert run.violations("violation") == [(14400, None)]


def test_a_one_reading_glitch_does_not_count_the_recovery_as_consumption(kit: Any) -> None:
    run = kit.run(meter_site(kit), kit.clause({**DAILY_100, "budget": 40}))
    run.feed(kwh((0, 1000), (3600, 0), (7200, 1020)), device="m1").advance(7300)
    assert run.violations("violation") == []


def test_budget_per_m2_times_the_meter_space_area(kit: Any) -> None:
    check = {"kind": "quota", "metric": "energy_kwh", "period": "month", "budget_per_m2": 2.5}
    run = kit.run(meter_site(kit), kit.clause(check))  # o1 is 40 m²: 100 kWh a month
    run.feed(kwh((0, 0), (kit.at(20, 0), 99), (kit.at(21, 0), 101)), device="m1")
    run.advance(kit.at(21, 1))
    (breach,) = run.started("violation")
    assert breach.params["budget"] == 100 and breach.params["area_m2"] == 40
    assert breach.started_at - kit.T0 == kit.at(21, 0)
