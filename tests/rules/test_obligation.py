"""Shape 3: obligations go overdue by the passage of time alone (advance), and an event ends the
violation at its own time."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from rules.verdicts import Event

C, V, OUT = "compliant", "violating", "outside_schedule"

TOILET_CLEANING = {
    "kind": "obligation",
    "event": "cleaning.completed",
    "every": "2h",
    "grace": "15m",
}
OPEN_HOURS = {"windows": [{"start": "08:00", "end": "18:00"}]}
TOILETS = {"space_types": ["toilet"]}


def clean(run: Any, kit: Any, offset: float, space: str = "wc1") -> None:
    run.engine.observe_event(
        Event(device="reader-1", ts=kit.T0 + offset, type="cleaning.completed", space=space)
    )
    run.collect()


def test_rolling_obligation_counts_schedule_time_only(kit: Any) -> None:
    clause = kit.clause(TOILET_CLEANING, applies_to=TOILETS, schedule=OPEN_HOURS)
    run = kit.run(kit.site(), clause, start=kit.at(0, 7))
    clean(run, kit, kit.at(0, 9))
    run.advance(kit.at(0, 11, 15))  # due 11:00, grace to 11:15: exactly then is still in time
    assert run.started() == []
    run.advance(kit.at(0, 11, 16))  # no message at all: time alone makes it overdue
    assert run.violations() == [(kit.at(0, 11, 15), None)]
    clean(run, kit, kit.at(0, 12))
    assert run.violations() == [(kit.at(0, 11, 15), kit.at(0, 12))]
    clean(run, kit, kit.at(0, 14))
    clean(run, kit, kit.at(0, 16))
    # Cleaned at 17:00: one hour of opening time left today, one more from 08:00 tomorrow.
    clean(run, kit, kit.at(0, 17))
    run.advance(kit.at(1, 9, 15))
    assert len(run.started()) == 1
    run.advance(kit.at(1, 9, 16))
    assert run.violations()[-1] == (kit.at(1, 9, 15), None)
    assert run.intervals() == [
        (kit.at(0, 7), kit.at(0, 8), OUT),
        (kit.at(0, 8), kit.at(0, 11, 15), C),
        (kit.at(0, 11, 15), kit.at(0, 12), V),
        (kit.at(0, 12), kit.at(0, 18), C),
        (kit.at(0, 18), kit.at(1, 8), OUT),
        (kit.at(1, 8), kit.at(1, 9, 15), C),
    ]


def test_event_exactly_at_the_deadline_is_in_time(kit: Any) -> None:
    clause = kit.clause(TOILET_CLEANING, applies_to=TOILETS, schedule=OPEN_HOURS)
    run = kit.run(kit.site(), clause, start=kit.at(0, 8))
    clean(run, kit, kit.at(0, 10, 15))  # 08:00 + 2h + 15 min grace
    run.advance(kit.at(0, 12))
    assert run.started() == []


def test_events_of_other_spaces_and_types_do_not_count(kit: Any) -> None:
    clause = kit.clause(TOILET_CLEANING, applies_to=TOILETS, schedule=OPEN_HOURS)
    run = kit.run(kit.site(), clause, start=kit.at(0, 8))
    clean(run, kit, kit.at(0, 9), space="o1")
    run.engine.observe_event(
        Event(device="r", ts=kit.T0 + kit.at(0, 9), type="inspection.done", space="wc1")
    )
    run.advance(kit.at(0, 10, 16))
    assert [s.subject.space for s in run.started()] == ["wc1"]


def test_calendar_period_with_grace(kit: Any) -> None:
    daily = {"kind": "obligation", "event": "patrol.done", "per": "day", "grace": "1h"}
    clause = kit.clause(
        daily, applies_to={"space_types": ["building"]}, schedule={"days": "workdays"}
    )
    run = kit.run(kit.site(), clause, start=0)

    def patrol(offset: float) -> None:
        run.engine.observe_event(Event("r", kit.T0 + offset, "patrol.done", space="b1"))
        run.collect()

    patrol(kit.at(0, 10))  # Monday: done
    run.advance(kit.at(2, 0, 59))  # Tuesday missed; its grace runs to Wednesday 01:00
    assert run.started() == []
    run.advance(kit.at(2, 1, 1))
    assert run.violations() == [(kit.at(2, 1), None)]
    patrol(kit.at(2, 9))  # ends it, and counts for Wednesday too
    run.advance(kit.at(3, 1, 1))
    assert run.violations() == [(kit.at(2, 1), kit.at(2, 9))]
    # Saturday 2024-07-06 and Sunday are not workdays: no patrol is owed for them.
    patrol(kit.at(3, 10))
    patrol(kit.at(4, 10))
    run.advance(kit.at(7, 0, 30))
    assert len(run.started()) == 1


def test_quarterly_obligation_overdue_after_the_quarter(kit: Any) -> None:
    quarterly = {"kind": "obligation", "event": "inspection.done", "per": "quarter"}
    clause = kit.clause(quarterly, applies_to={"space_types": ["building"]})
    run = kit.run(kit.site(), clause, start=0)  # 2024-07-01: a whole quarter ahead
    run.advance(kit.at(92, 0, 1))  # 2024-10-01 00:01
    assert run.violations() == [(kit.at(92, 0), None)]
    assert run.started()[0].reason == "no inspection.done in the quarter"


def test_an_overdue_reason_gives_the_interval_in_days_and_hours(kit: Any) -> None:
    """Issue 17: the reason read "no inspection.done for 7.9488e+06 s of schedule time"."""
    every = {"kind": "obligation", "event": "inspection.done", "every": "92d", "grace": "0s"}
    run = kit.run(kit.site(), kit.clause(every, applies_to=TOILETS), start=0)
    run.advance(93 * 86400)
    assert run.started()[0].reason == "no inspection.done for 92 d of schedule time (+ grace)"
    lift = {"kind": "obligation", "event": "check.done", "every": "1d12h", "grace": "0s"}
    run = kit.run(kit.site(), kit.clause(lift, applies_to=TOILETS), start=0)
    run.advance(2 * 86400)
    assert run.started()[0].reason == "no check.done for 1 d 12 h of schedule time (+ grace)"


LIFT_MAINTENANCE = {"kind": "obligation", "event": "maintenance.done", "every": "15d"}
LIFTS = {"space_types": ["elevator"]}


def _lift_site(kit: Any, last_done: dict[str, Any] | None = None) -> Any:
    lift: dict[str, Any] = {"id": "lift1", "type": "elevator", "parent": "b1"}
    if last_done is not None:
        lift["last_done"] = last_done
    return kit.site(spaces=[{"id": "b1", "type": "building"}, lift], devices=[])


def _overdue_from(kit: Any, site: Any, clause_id: str = "elevator.maintenance") -> list[float]:
    clause = kit.clause(LIFT_MAINTENANCE, id=clause_id, applies_to=LIFTS)
    run = kit.run(site, clause, start=0)
    run.advance(kit.at(40, 0))
    return [start / 86400 for start, _ in run.violations()]


def test_a_last_done_date_starts_a_rolling_obligation_from_it(kit: Any) -> None:
    """Issue 17, defect 4: a subject's last-done date, given in the site model, is the last
    event of a new obligation instance: the deadline is `every` after it, not after the start
    of judging (a lift serviced 14 days before the deployment is due the next day)."""
    yesterday = dt.datetime.fromtimestamp(kit.T0 - 86400, dt.UTC)
    two_weeks_ago = dt.datetime.fromtimestamp(kit.T0 - 14 * 86400, dt.UTC)
    assert _overdue_from(kit, _lift_site(kit)) == [15]  # from the start: as before
    assert _overdue_from(kit, _lift_site(kit, {"maintenance.done": yesterday})) == [14]
    assert _overdue_from(kit, _lift_site(kit, {"maintenance.done": two_weeks_ago})) == [1]
    # Keyed by the clause id, or as a date: local midnight at the site.
    by_clause = _lift_site(kit, {"elevator.maintenance": dt.date(2024, 6, 30)})
    assert _overdue_from(kit, by_clause) == [14]
    # Another clause's or task's date changes nothing.
    other = _lift_site(kit, {"cleaning.completed": two_weeks_ago})
    assert _overdue_from(kit, other) == [15]


def test_a_last_done_date_must_be_aware(kit: Any) -> None:
    with pytest.raises(ValueError, match="UTC offset"):
        _lift_site(kit, {"maintenance.done": dt.datetime(2024, 6, 30, 9)})


def test_the_registrys_last_done_time_is_passed_in_at_binding(kit: Any) -> None:
    """The registry's time (set in the site file or through the API) is given to the engine
    and wins over the model's; it also reaches instances bound on restore."""
    from rules.engine import SiteEngine

    clause = kit.clause(LIFT_MAINTENANCE, id="elevator.maintenance", applies_to=LIFTS)
    site = _lift_site(kit, {"maintenance.done": dt.date(2024, 6, 1)})
    done = {("lift1", "maintenance.done"): kit.T0 - 2 * 86400}
    engine = SiteEngine(site, [clause], lateness=0, last_done=done)
    restored = SiteEngine.restore(site, [clause], engine.snapshot(), lateness=0, last_done=done)
    for judged in (engine, restored):
        judged.advance(kit.T0)
        judged.advance(kit.T0 + 40 * 86400)
        starts = [o.started_at for o in judged.drain() if type(o).__name__ == "ViolationStarted"]
        assert [(s - kit.T0) / 86400 for s in starts] == [13]


# ---- a last-done time given while judging (issue 17, defect 4): a baseline, not input ----

ALWAYS_CLEANING = {
    "kind": "obligation",
    "event": "cleaning.completed",
    "every": "2h",
    "grace": "15m",
}
H = 3600.0


def _baseline(run: Any, kit: Any, offset: float, task: str = "cleaning.completed") -> int:
    changed: int = run.engine.apply_last_done("wc1", task, kit.T0 + offset)
    run.collect()
    return changed


def test_a_baseline_moves_the_deadline_of_a_running_instance(kit: Any) -> None:
    run = kit.run(kit.site(), kit.clause(ALWAYS_CLEANING, applies_to=TOILETS), start=0)
    run.advance(1 * H)
    assert _baseline(run, kit, -0.5 * H) == 1  # done 30 min before judging began
    run.advance(1.75 * H)
    assert run.started() == []  # due at 1:45 exactly: in time
    run.advance(1.75 * H + 1)
    assert run.violations() == [(1.75 * H, None)]  # not 2:15, as counted from the start


def test_a_baseline_that_makes_it_overdue_in_the_past_starts_the_violation_now(kit: Any) -> None:
    run = kit.run(kit.site(), kit.clause(ALWAYS_CLEANING, applies_to=TOILETS), start=0)
    run.advance(1 * H)
    assert _baseline(run, kit, -2 * H) == 1  # due at 0:15, but 0:15-1:00 was judged already
    run.advance(1 * H + 1)
    assert run.violations() == [(1 * H, None)]
    assert run.intervals() == [(0, 1 * H, C)]  # the open stretch is violating from 1:00


def test_a_baseline_that_meets_an_overdue_obligation_ends_the_violation_now(kit: Any) -> None:
    run = kit.run(kit.site(), kit.clause(ALWAYS_CLEANING, applies_to=TOILETS), start=0)
    run.advance(3 * H)
    assert run.violations() == [(2.25 * H, None)]
    assert _baseline(run, kit, 2 * H) == 1  # due 4:15 from it: the violation ends at 3:00
    assert run.violations() == [(2.25 * H, 3 * H)]
    run.advance(4.25 * H + 1)
    assert run.violations() == [(2.25 * H, 3 * H), (4.25 * H, None)]
    assert run.intervals() == [(0, 2.25 * H, C), (2.25 * H, 3 * H, V), (3 * H, 4.25 * H, C)]


def test_a_baseline_too_old_to_meet_an_overdue_obligation_leaves_it(kit: Any) -> None:
    run = kit.run(kit.site(), kit.clause(ALWAYS_CLEANING, applies_to=TOILETS), start=0)
    run.advance(3 * H)
    assert _baseline(run, kit, 0.5 * H) == 1  # due 2:45 from it: still overdue
    run.advance(5 * H)
    assert run.violations() == [(2.25 * H, None)]


def test_a_baseline_not_after_the_last_event_or_of_another_task_changes_nothing(kit: Any) -> None:
    run = kit.run(kit.site(), kit.clause(ALWAYS_CLEANING, applies_to=TOILETS), start=0)
    clean(run, kit, 1 * H)
    run.advance(1.5 * H)
    assert _baseline(run, kit, 0.5 * H) == 0
    assert _baseline(run, kit, 1.2 * H, task="inspection.done") == 0
    assert _baseline(run, kit, 1.2 * H, task="c.test") == 1  # by clause id
    run.advance(3.45 * H)
    assert run.started() == []
    run.advance(3.45 * H + 1)
    assert run.violations() == [(3.45 * H, None)]


def test_a_calendar_baseline_in_the_missed_period_ends_its_violation(kit: Any) -> None:
    daily = {"kind": "obligation", "event": "patrol.done", "per": "day", "grace": "1h"}
    clause = kit.clause(daily, applies_to={"space_types": ["building"]})
    run = kit.run(kit.site(), clause, start=0)
    run.advance(kit.at(1, 2))  # Monday missed: overdue since Tuesday 01:00
    assert run.violations() == [(kit.at(1, 1), None)]
    assert run.engine.apply_last_done("b1", "patrol.done", kit.T0 - 3600) == 1
    run.collect()
    assert run.violations() == [(kit.at(1, 1), None)]  # Sunday's: Monday is still missed
    assert run.engine.apply_last_done("b1", "patrol.done", kit.T0 + kit.at(0, 20)) == 1
    run.collect()
    assert run.violations() == [(kit.at(1, 1), kit.at(1, 2))]  # ended now, not rewritten
    run.advance(kit.at(2, 1, 1))  # Tuesday is owed still
    assert run.violations()[-1] == (kit.at(2, 1), None)


def test_no_site_file_may_name_a_device_as_the_last_done_reporter(kit: Any) -> None:
    """Input from a last-done time set through the API comes from the reporter `last-done`."""
    import pydantic

    from rules.site import LAST_DONE_REPORTER

    reader = {"id": LAST_DONE_REPORTER, "space": "wc1", "metrics": {}}
    spaces = [{"id": "wc1", "type": "toilet"}]
    with pytest.raises(pydantic.ValidationError, match="reserved for last-done input"):
        kit.site(spaces=spaces, devices=[reader])
