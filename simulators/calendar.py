"""Working days of a site, as its holiday calendar says: the engine's own rule
(`rules.schedule.WorkdayCalendar` over the official holiday schedules in use), so a simulated
building works on the days the clauses judge as working days."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

from rules.holidays import OfficialCalendar, official_calendar
from rules.schedule import WorkdayCalendar
from rules.site import HolidayCalendar, SiteModel


def is_workday(site: SiteModel, day: dt.date) -> bool:
    return _workdays(site.site.holidays, official_calendar()).is_workday(day)


@lru_cache(maxsize=64)
def _workdays(calendar: HolidayCalendar, official: OfficialCalendar) -> WorkdayCalendar:
    return WorkdayCalendar(calendar, official)
