"""Official holiday schedules: a year's 放假 periods and 调休 working days, as the State Council
notice for that year states them, and what the engine does for a year without one.

A `HolidaySchedule` is one year's notice as data (one YAML file per year, loaded by
`config/holidays.py`; the format is in docs/config-formats.md, "Holiday schedules"). An
`OfficialCalendar` merges the loaded years into two sets of dates, so judging a day costs two
set lookups. A day is a working day when a notice names it a working day (调休), not when a
notice names it a holiday, else when it is Monday to Friday. For a year without a notice that
same rule is the fallback, with nothing named: Monday to Friday are working days, and there are
no holidays and no adjusted working days. `calendar_coverage` says where that fallback is in use,
so the service can state it on what it affects (`clausewatch check`, `/healthz`, the dashboard
and reports).

The calendar the engine uses is set once at start-up with `use_official_calendar` (by the
service and the command line, from the bundled files and the deployment's overrides):
`rules.schedule.WorkdayCalendar` takes it when a schedule is compiled. Nothing here reads a file
or the clock; until it is set the calendar is empty and every year is judged by the fallback.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated

from pydantic import ConfigDict, Field, model_validator

from rules.site import Strict

# How far ahead a year without a schedule is announced: the State Council publishes the next
# year's notice in October to December; 60 days leaves an operator time to type it in.
UPCOMING_DAYS = 60

FALLBACK_RULE = "Monday to Friday are working days; no statutory holidays, no adjusted working days"
FALLBACK_RULE_ZH = "按周一至周五为工作日判断，不含法定节假日和调休"

Text = Annotated[str, Field(min_length=1)]


class Notice(Strict):
    """The notice a schedule is typed from: its title as published, and where known its number
    (文号), the day it was published and where."""

    title: Text
    document: Text | None = None  # 国办发明电〔2025〕7号
    published: dt.date | None = None
    url: Text | None = None


class HolidayPeriod(Strict):
    """Days off (放假), `from` and `to` inclusive."""

    name: Text  # 春节; a combined period as the notice words it: 国庆节、中秋节
    start: dt.date = Field(alias="from")
    end: dt.date = Field(alias="to")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def days(self) -> list[dt.date]:
        count = (self.end - self.start).days + 1
        return [self.start + dt.timedelta(days=n) for n in range(count)]


class AdjustedWorkday(Strict):
    """A Saturday or Sunday that is a working day (调休上班), and the holiday it belongs to."""

    date: dt.date
    holiday: Text = Field(alias="for")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class HolidaySchedule(Strict):
    """One year's arrangement, as the State Council notice for `year` states it (plus any later
    notice that changed it, in `amendments`). Its dates lie in `year`, or in the December before
    it when the New Year holiday or a working day for it starts there (the 2019 notice: 30
    December 2018 to 1 January 2019 off, Saturday 29 December 2018 worked)."""

    year: int = Field(ge=2000, le=2100)
    source: Notice
    amendments: tuple[Notice, ...] = ()
    holidays: tuple[HolidayPeriod, ...] = Field(min_length=1)
    workdays: tuple[AdjustedWorkday, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> HolidaySchedule:
        problems: list[str] = []
        first, last = dt.date(self.year - 1, 12, 1), dt.date(self.year, 12, 31)
        span = f"between {first} and {last} (the year, or the December before it)"
        days_off: dict[dt.date, int] = {}
        for i, period in enumerate(self.holidays):
            if period.end < period.start:
                problems.append(f"holidays[{i}].to: before its from ({period.start})")
                continue
            for key, day in (("from", period.start), ("to", period.end)):
                if not first <= day <= last:
                    problems.append(f"holidays[{i}].{key}: {day} is not {span}")
            for day in period.days():
                if day in days_off:
                    problems.append(
                        f"holidays[{i}]: {day} is also in holidays[{days_off[day]}] "
                        f"({self.holidays[days_off[day]].name})"
                    )
                    break
                days_off[day] = i
        names = {period.name for period in self.holidays}
        seen: set[dt.date] = set()
        for i, workday in enumerate(self.workdays):
            day = workday.date
            if not first <= day <= last:
                problems.append(f"workdays[{i}].date: {day} is not {span}")
            if day.weekday() < 5:
                problems.append(
                    f"workdays[{i}].date: {day} is a {day.strftime('%A')}: an adjusted working "
                    "day (调休) is a Saturday or Sunday"
                )
            if day in days_off:
                problems.append(
                    f"workdays[{i}].date: {day} is also a holiday "
                    f"(holidays[{days_off[day]}], {self.holidays[days_off[day]].name})"
                )
            if day in seen:
                problems.append(f"workdays[{i}].date: {day} is listed twice")
            seen.add(day)
            if workday.holiday not in names:
                problems.append(
                    f"workdays[{i}].for: {workday.holiday!r} is not the name of a holiday of "
                    f"this file ({', '.join(sorted(names))})"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def holiday_dates(self) -> frozenset[dt.date]:
        return frozenset(day for period in self.holidays for day in period.days())

    def workday_dates(self) -> frozenset[dt.date]:
        return frozenset(workday.date for workday in self.workdays)


class OfficialCalendar:
    """The loaded schedules, one per year, merged for judging days."""

    __slots__ = ("_holidays", "_workdays", "schedules")

    def __init__(self, schedules: Iterable[HolidaySchedule] = ()) -> None:
        by_year: dict[int, HolidaySchedule] = {}
        for schedule in schedules:
            if schedule.year in by_year:
                raise ValueError(f"two holiday schedules for {schedule.year}")
            by_year[schedule.year] = schedule
        self.schedules: Mapping[int, HolidaySchedule] = MappingProxyType(
            dict(sorted(by_year.items()))
        )
        self._holidays = frozenset().union(*(s.holiday_dates() for s in by_year.values()))
        self._workdays = frozenset().union(*(s.workday_dates() for s in by_year.values()))

    @property
    def years(self) -> tuple[int, ...]:
        return tuple(self.schedules)

    def covers(self, year: int) -> bool:
        return year in self.schedules

    def is_workday(self, day: dt.date) -> bool:
        """A working day by the notices, else by the fallback rule (Monday to Friday)."""
        if day in self._workdays:
            return True
        if day in self._holidays:
            return False
        return day.weekday() < 5

    def is_holiday(self, day: dt.date) -> bool:
        """A day a notice names as a day off (weekends not named are not holidays)."""
        return day in self._holidays


@dataclass(frozen=True)
class CalendarGap:
    """Days judged, or soon to be judged, without an official schedule for their year."""

    year: int
    first: dt.date  # the first and last day affected (inclusive)
    last: dt.date
    days_until: int | None = None  # set for a year not judged yet that starts within 60 days

    @property
    def upcoming(self) -> bool:
        return self.days_until is not None

    def message(self) -> str:
        if self.days_until is not None:
            return (
                f"no official holiday schedule for {self.year}, which starts in "
                f"{self.days_until} day(s): from {self.first} working days will be judged by "
                f"the fallback rule ({FALLBACK_RULE}) until holidays/{self.year}.yaml is added "
                "from the State Council notice"
            )
        return (
            f"no official holiday schedule for {self.year}: {self.first} to {self.last} "
            f"judged by the fallback rule ({FALLBACK_RULE})"
        )

    def note(self) -> CalendarNote:
        return CalendarNote(
            year=self.year,
            first=self.first,
            last=self.last,
            upcoming=self.upcoming,
            message=self.message(),
            message_zh=self.message_zh(),
        )

    def message_zh(self) -> str:
        if self.days_until is not None:
            return (
                f"尚无{self.year}年国务院节假日安排（{self.days_until}天后开始）：自{self.first}起"
                f"{FALLBACK_RULE_ZH}，请据国务院办公厅通知添加 holidays/{self.year}.yaml"
            )
        return f"无{self.year}年国务院节假日安排：{self.first}至{self.last}{FALLBACK_RULE_ZH}"


class CalendarNote(Strict):
    """A `CalendarGap` as data, for reports and APIs: the year, the days affected (for a year
    not judged yet, the whole of it), the fallback rule and a sentence in each language."""

    year: int
    first: dt.date
    last: dt.date
    upcoming: bool  # not judged yet: the year starts within 60 days
    fallback_rule: str = FALLBACK_RULE
    message: str
    message_zh: str


@dataclass(frozen=True)
class CalendarCoverage:
    """Which years have an official schedule, and where the fallback rule is (or soon will be)
    in use."""

    years_with_data: tuple[int, ...]
    gaps: tuple[CalendarGap, ...]
    fallback_rule: str = FALLBACK_RULE
    fallback_rule_zh: str = FALLBACK_RULE_ZH

    @property
    def complete(self) -> bool:
        return not self.gaps

    @property
    def years_without_data(self) -> tuple[int, ...]:
        """Judged years without a schedule."""
        return tuple(gap.year for gap in self.gaps if not gap.upcoming)

    @property
    def next_year_without_data(self) -> int | None:
        """The next year, when it starts within 60 days and has no schedule."""
        return next((gap.year for gap in self.gaps if gap.upcoming), None)

    def messages(self) -> list[str]:
        """One line per gap, in Chinese and English."""
        return [f"{gap.message_zh()} / {gap.message()}" for gap in self.gaps]


def calendar_coverage(
    calendar: OfficialCalendar,
    today: dt.date,
    judged: Iterable[tuple[dt.date, dt.date]] | None = None,
    upcoming_days: int = UPCOMING_DAYS,
) -> CalendarCoverage:
    """Where `calendar` lacks a year: in the periods `judged` ([first, last] days, inclusive;
    default the whole of `today`'s year), and the year after `today` when it starts within
    `upcoming_days` and is not judged already."""
    periods = (
        [(dt.date(today.year, 1, 1), dt.date(today.year, 12, 31))] if judged is None else judged
    )
    gaps: list[CalendarGap] = []
    judged_years: set[int] = set()
    for first, last in sorted(periods):
        for year in range(first.year, last.year + 1):
            judged_years.add(year)
            if calendar.covers(year):
                continue
            start, end = max(first, dt.date(year, 1, 1)), min(last, dt.date(year, 12, 31))
            merged = next((g for g in gaps if g.year == year), None)
            if merged is not None:
                gaps.remove(merged)
                start, end = min(start, merged.first), max(end, merged.last)
            gaps.append(CalendarGap(year, start, end))
    following = today.year + 1
    days_until = (dt.date(following, 1, 1) - today).days
    if (
        following not in judged_years
        and not calendar.covers(following)
        and days_until <= upcoming_days
    ):
        gaps.append(
            CalendarGap(
                following,
                dt.date(following, 1, 1),
                dt.date(following, 12, 31),
                days_until=days_until,
            )
        )
    return CalendarCoverage(
        years_with_data=calendar.years, gaps=tuple(sorted(gaps, key=lambda g: g.year))
    )


def site_calendar_notes(
    holidays_kind: str,
    first: dt.date,
    last: dt.date,
    today: dt.date,
    calendar: OfficialCalendar | None = None,
) -> list[CalendarNote]:
    """What a report on the days [first, last] of a site made on `today` must say about the
    holiday calendar (default: the one in use): nothing for a site whose working days are
    Monday to Friday anyway (`weekends`)."""
    if holidays_kind != "cn":
        return []
    coverage = calendar_coverage(
        calendar if calendar is not None else official_calendar(), today, [(first, last)]
    )
    return [gap.note() for gap in coverage.gaps]


# ---- the calendar in use, set at start-up ----

_in_use: OfficialCalendar = OfficialCalendar()


def use_official_calendar(calendar: OfficialCalendar) -> None:
    """Sets the calendar that schedules compiled from now on judge working days with (the
    service and the command line call it once at start-up)."""
    global _in_use
    _in_use = calendar


def official_calendar() -> OfficialCalendar:
    """The calendar in use (empty, so the fallback rule everywhere, until one is set)."""
    return _in_use
