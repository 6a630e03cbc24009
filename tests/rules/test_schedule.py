"""Schedules in site time: windows, day kinds by the holiday calendar, seasons, effective dates,
DST, calendar periods."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from rules.clause import Schedule
from rules.schedule import CompiledSchedule, WorkdayCalendar, period_bounds
from rules.site import HolidayCalendar, SiteModel

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")


def site(timezone: str = "Asia/Shanghai", **holidays: object) -> SiteModel:
    return SiteModel.model_validate(
        {
            "site": {
                "id": "s1",
                "name": "s",
                "timezone": timezone,
                "holidays": {"kind": "cn", **holidays},
                "seasons": {
                    "cooling": {"from": "06-01", "to": "09-30"},
                    "heating": {"from": "11-15", "to": "03-15"},
                },
            },
            "spaces": [{"id": "o1", "type": "office"}],
        }
    )


def local(*args: int, zone: ZoneInfo = SHANGHAI) -> float:
    return dt.datetime(*args, tzinfo=zone).timestamp()


OFFICE_HOURS = {
    "windows": [{"start": "08:30", "end": "12:00"}, {"start": "13:30", "end": "18:00"}],
    "days": "workdays",
}


def compiled(
    spec: dict[str, object], on: SiteModel | None = None, **dates: dt.date
) -> CompiledSchedule:
    return CompiledSchedule(Schedule.model_validate(spec), on or site(), **dates)


@pytest.mark.parametrize(
    ("when", "inside", "changes_at"),
    [
        (local(2024, 7, 1, 8, 29), False, local(2024, 7, 1, 8, 30)),
        (local(2024, 7, 1, 8, 30), True, local(2024, 7, 1, 12, 0)),
        (local(2024, 7, 1, 12, 0), False, local(2024, 7, 1, 13, 30)),
        (local(2024, 7, 1, 17, 59), True, local(2024, 7, 1, 18, 0)),
        # Friday evening to Monday morning is one stretch.
        (local(2024, 7, 5, 18, 0), False, local(2024, 7, 8, 8, 30)),
    ],
)
def test_office_hours_windows(when: float, inside: bool, changes_at: float) -> None:
    assert compiled(OFFICE_HOURS).state_at(when) == (inside, changes_at)


def test_cn_workdays_follow_statutory_holidays_and_adjusted_working_days() -> None:
    schedule = compiled(OFFICE_HOURS)
    # 2024-10-01 (Tuesday) is National Day; 2024-09-29 (Sunday) is an adjusted working day.
    assert schedule.state_at(local(2024, 10, 1, 10))[0] is False
    assert schedule.state_at(local(2024, 9, 29, 10))[0] is True
    # After the Golden Week the next office hours are on Tuesday 2024-10-08.
    assert schedule.state_at(local(2024, 10, 1, 10))[1] == local(2024, 10, 8, 8, 30)


def test_extra_holidays_and_workdays_override_the_official_schedules() -> None:
    calendar = WorkdayCalendar(
        HolidayCalendar(
            extra_holidays=(dt.date(2024, 7, 2),), extra_workdays=(dt.date(2024, 7, 6),)
        )
    )
    assert calendar.is_workday(dt.date(2024, 7, 1))
    assert not calendar.is_workday(dt.date(2024, 7, 2))
    assert calendar.is_workday(dt.date(2024, 7, 6))  # a Saturday made a workday


def test_years_without_an_official_schedule_fall_back_to_weekends_only() -> None:
    calendar = WorkdayCalendar(HolidayCalendar())
    assert calendar.is_workday(dt.date(2040, 10, 1))  # a Monday; no holiday schedule for 2040
    assert not calendar.is_workday(dt.date(2040, 10, 6))  # a Saturday


def test_window_ending_at_midnight_runs_to_the_end_of_the_day() -> None:
    schedule = compiled({"windows": [{"start": "20:00", "end": "00:00"}]})
    assert schedule.state_at(local(2024, 7, 1, 23, 59)) == (True, local(2024, 7, 2, 0, 0))
    assert schedule.inside_seconds(local(2024, 7, 1), local(2024, 7, 3)) == 8 * 3600


def test_named_season_wrapping_the_new_year() -> None:
    schedule = compiled({"season": "heating"})
    assert schedule.state_at(local(2025, 1, 10, 12))[0] is True
    assert schedule.state_at(local(2024, 11, 14, 12))[0] is False
    assert schedule.state_at(local(2024, 11, 14, 12))[1] == local(2024, 11, 15)
    assert schedule.state_at(local(2025, 3, 15, 23))[1] == local(2025, 3, 16)


def test_unknown_season_is_an_error() -> None:
    with pytest.raises(ValueError, match="not a season"):
        compiled({"season": "monsoon"})


def test_effective_dates_bound_the_schedule() -> None:
    schedule = compiled({}, effective_from=dt.date(2023, 2, 1), effective_to=dt.date(2023, 2, 28))
    assert schedule.state_at(local(2023, 1, 31, 23, 59)) == (False, local(2023, 2, 1))
    inside, changes_at = schedule.state_at(local(2023, 2, 1))
    # A long stretch may report an earlier "can change" time (a cache horizon), never later.
    assert inside and changes_at <= local(2023, 3, 1)
    assert schedule.state_at(local(2023, 2, 28, 23)) == (True, local(2023, 3, 1))
    assert schedule.state_at(local(2023, 3, 1)) == (False, local(2023, 3, 15))


def test_dst_days_have_their_true_length_in_berlin() -> None:
    berlin = site("Europe/Berlin", kind="weekends")
    schedule = compiled({"windows": [{"start": "01:00", "end": "04:00"}]}, berlin)
    # 2024-03-31: clocks jump from 02:00 to 03:00, so 01:00-04:00 lasts two hours.
    spring = schedule.inside_seconds(
        local(2024, 3, 31, zone=BERLIN), local(2024, 4, 1, zone=BERLIN)
    )
    # 2024-10-27: 02:00-03:00 happens twice, so the window lasts four hours.
    autumn = schedule.inside_seconds(
        local(2024, 10, 27, zone=BERLIN), local(2024, 10, 28, zone=BERLIN)
    )
    assert (spring, autumn) == (2 * 3600, 4 * 3600)
    # The window opens at 01:00 CET = 00:00 UTC on the spring day.
    start = dt.datetime(2024, 3, 31, 0, 0, tzinfo=dt.UTC).timestamp()
    assert schedule.state_at(start) == (
        True,
        dt.datetime(2024, 3, 31, 2, 0, tzinfo=dt.UTC).timestamp(),
    )
    # A day is 23 hours long that day: a calendar period knows it.
    day = period_bounds(start, "day", BERLIN)
    assert day[1] - day[0] == 23 * 3600


def test_after_inside_seconds_counts_schedule_time_only() -> None:
    schedule = compiled({"windows": [{"start": "08:00", "end": "18:00"}]})
    # Two hours of schedule time from 17:00: one today, one from 08:00 tomorrow.
    assert schedule.after_inside_seconds(local(2024, 7, 1, 17), 7200) == local(2024, 7, 2, 9)


@pytest.mark.parametrize(
    ("period", "first", "after"),
    [
        ("day", (2024, 8, 15), (2024, 8, 16)),
        ("week", (2024, 8, 12), (2024, 8, 19)),
        ("month", (2024, 8, 1), (2024, 9, 1)),
        ("quarter", (2024, 7, 1), (2024, 10, 1)),
        ("year", (2024, 1, 1), (2025, 1, 1)),
    ],
)
def test_calendar_periods_in_site_time(
    period: str, first: tuple[int, int, int], after: tuple[int, int, int]
) -> None:
    ts = local(2024, 8, 15, 3)
    assert period_bounds(ts, period, SHANGHAI) == (local(*first), local(*after))  # type: ignore[arg-type]
