"""Official holiday schedules in the engine: a day of a year without one is judged by the fallback
rule (Monday to Friday, no holidays) and the calendar coverage names that year and the rule; a
schedule for the year makes the engine judge by it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from zoneinfo import ZoneInfo

import pytest

from rules.clause import ClauseVersion, Schedule
from rules.engine import SiteEngine
from rules.holidays import (
    FALLBACK_RULE,
    FALLBACK_RULE_ZH,
    HolidaySchedule,
    OfficialCalendar,
    calendar_coverage,
    official_calendar,
)
from rules.schedule import CompiledSchedule, WorkdayCalendar
from rules.site import HolidayCalendar, SiteModel
from rules.verdicts import ComplianceInterval

SHANGHAI = ZoneInfo("Asia/Shanghai")
OFFICE_HOURS = {"windows": [{"start": "08:30", "end": "18:00"}], "days": "workdays"}

# A made-up schedule for a year that has no notice yet: test data only, never bundled.
INVENTED_2027 = {
    "year": 2027,
    "source": {"title": "test: an invented arrangement for 2027"},
    "holidays": [{"name": "元旦", "from": "2027-01-01", "to": "2027-01-03"}],
    "workdays": [{"date": "2027-01-09", "for": "元旦"}],
}


def site() -> SiteModel:
    return SiteModel.model_validate(
        {
            "site": {"id": "s1", "name": "s", "timezone": "Asia/Shanghai"},
            "spaces": [{"id": "o1", "type": "office"}],
            "devices": [{"id": "th-1", "space": "o1", "metrics": {"temperature": {"unit": "°C"}}}],
        }
    )


def local(*args: int) -> float:
    return dt.datetime(*args, tzinfo=SHANGHAI).timestamp()


def office_hours() -> CompiledSchedule:
    return CompiledSchedule(Schedule.model_validate(OFFICE_HOURS), site())


def test_the_bundled_calendar_is_in_use_and_ends_with_2026() -> None:
    # tests/conftest.py installs it as the service does; 2027 has no notice yet.
    calendar = official_calendar()
    assert calendar.covers(2026) and not calendar.covers(2027)
    # 2026-10-01 (Thursday) is National Day, Saturday 2026-10-10 an adjusted working day.
    assert not office_hours().state_at(local(2026, 10, 1, 10))[0]
    assert office_hours().state_at(local(2026, 10, 10, 10))[0]


def test_a_year_without_a_schedule_is_judged_monday_to_friday_and_the_coverage_says_so() -> None:
    schedule = office_hours()
    # Friday 1 January 2027: New Year's Day in every year so far, but without the 2027 notice
    # the fallback rule makes it a working day; Saturday 2 January is not one.
    assert schedule.state_at(local(2027, 1, 1, 10)) == (True, local(2027, 1, 1, 18))
    assert schedule.state_at(local(2027, 1, 2, 10))[0] is False

    coverage = calendar_coverage(
        official_calendar(),
        today=dt.date(2027, 1, 1),
        judged=[(dt.date(2027, 1, 1), dt.date(2027, 3, 31))],
    )
    assert coverage.years_without_data == (2027,)
    (gap,) = coverage.gaps
    assert (gap.year, gap.first, gap.last, gap.upcoming) == (
        2027,
        dt.date(2027, 1, 1),
        dt.date(2027, 3, 31),
        False,
    )
    assert FALLBACK_RULE == (
        "Monday to Friday are working days; no statutory holidays, no adjusted working days"
    )
    assert gap.message() == (
        "no official holiday schedule for 2027: 2027-01-01 to 2027-03-31 judged by the "
        f"fallback rule ({FALLBACK_RULE})"
    )
    assert gap.message_zh() == f"无2027年国务院节假日安排：2027-01-01至2027-03-31{FALLBACK_RULE_ZH}"
    assert coverage.messages() == [f"{gap.message_zh()} / {gap.message()}"]


def test_the_engine_judges_a_workdays_clause_on_1_january_2027_by_the_fallback_rule() -> None:
    clause = ClauseVersion.model_validate(
        {
            "id": "temp.max",
            "version": 1,
            "effective_from": "2026-01-01",
            "number": "1",
            "title": "not too warm",
            "domain": "indoor_climate",
            "confidence": "A",
            "schedule": OFFICE_HOURS,
            "check": {"kind": "threshold", "metric": "temperature", "max": 30},
        }
    )
    engine = SiteEngine(site(), [clause], lateness=0)
    start = local(2027, 1, 1, 8)
    for step in range(67):  # every 10 minutes, 08:00 to 19:00
        engine.observe("th-1", start + step * 600, step, {"temperature": 25.0})
    engine.advance(local(2027, 1, 2, 12))
    intervals = [o for o in engine.drain() if isinstance(o, ComplianceInterval)]
    compliant = sum(i.end - i.start for i in intervals if i.status == "compliant")
    assert compliant == 9.5 * 3600  # 08:30 to 18:00 on Friday 1 January: a working day


def test_the_next_year_is_announced_within_60_days() -> None:
    calendar = official_calendar()
    # Today is 2026-12-06: 2027 starts in 26 days and has no schedule.
    coverage = calendar_coverage(calendar, today=dt.date(2026, 12, 6))
    assert coverage.years_without_data == ()
    assert coverage.next_year_without_data == 2027
    (gap,) = coverage.gaps
    assert (gap.first, gap.days_until) == (dt.date(2027, 1, 1), 26)
    assert gap.message() == (
        "no official holiday schedule for 2027, which starts in 26 day(s): from 2027-01-01 "
        f"working days will be judged by the fallback rule ({FALLBACK_RULE}) until "
        "holidays/2027.yaml is added from the State Council notice"
    )
    assert "周一至周五" in gap.message_zh() and "2027" in gap.message_zh()
    # Sixty-one days before, nothing yet; on the sixtieth day, the warning.
    assert calendar_coverage(calendar, today=dt.date(2026, 11, 1)).complete
    assert calendar_coverage(calendar, today=dt.date(2026, 11, 2)).next_year_without_data == 2027


def test_a_period_judged_across_years_names_only_the_days_without_a_schedule() -> None:
    coverage = calendar_coverage(
        official_calendar(),
        today=dt.date(2026, 12, 6),
        judged=[(dt.date(2026, 10, 1), dt.date(2027, 2, 15))],
    )
    (gap,) = coverage.gaps  # 2027 is judged, so it is not announced a second time
    assert (gap.year, gap.first, gap.last, gap.upcoming) == (
        2027,
        dt.date(2027, 1, 1),
        dt.date(2027, 2, 15),
        False,
    )


def test_a_schedule_for_2027_makes_2027_judged_by_it(
    calendar_in_use: Callable[[OfficialCalendar], None],
) -> None:
    schedules = [
        *official_calendar().schedules.values(),
        HolidaySchedule.model_validate(INVENTED_2027),
    ]
    calendar_in_use(OfficialCalendar(schedules))
    schedule = office_hours()
    assert schedule.state_at(local(2027, 1, 1, 10))[0] is False  # a holiday by that schedule
    assert schedule.state_at(local(2027, 1, 9, 10))[0] is True  # a Saturday worked
    coverage = calendar_coverage(official_calendar(), today=dt.date(2026, 12, 6))
    assert coverage.complete and coverage.years_with_data[-1] == 2027


def test_weekends_sites_and_extra_days_ignore_the_official_schedules() -> None:
    calendar = official_calendar()
    weekends = WorkdayCalendar(HolidayCalendar(kind="weekends"), calendar)
    assert weekends.is_workday(dt.date(2026, 10, 1))  # National Day, but a Thursday
    assert not weekends.is_workday(dt.date(2026, 10, 10))  # a Saturday the notice makes worked
    extra = WorkdayCalendar(HolidayCalendar(extra_workdays=(dt.date(2026, 10, 2),)), calendar)
    assert extra.is_workday(dt.date(2026, 10, 2))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"workdays": [{"date": "2027-01-08", "for": "元旦"}]},
            "workdays[0].date: 2027-01-08 is a Friday: an adjusted working day (调休) is a "
            "Saturday or Sunday",
        ),
        (
            {"workdays": [{"date": "2027-01-09", "for": "春节"}]},
            "workdays[0].for: '春节' is not the name of a holiday of this file (元旦)",
        ),
        (
            {"holidays": [{"name": "元旦", "from": "2027-01-03", "to": "2027-01-01"}]},
            "holidays[0].to: before its from (2027-01-03)",
        ),
        (
            {"holidays": [{"name": "元旦", "from": "2026-11-30", "to": "2027-01-01"}]},
            "holidays[0].from: 2026-11-30 is not between 2026-12-01 and 2027-12-31",
        ),
    ],
)
def test_a_schedule_that_contradicts_itself_is_refused(
    change: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match="validation error") as caught:
        HolidaySchedule.model_validate({**INVENTED_2027, **change})
    assert message in str(caught.value)
