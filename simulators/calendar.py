"""Working days of a site, as its holiday calendar says."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import chinese_calendar  # type: ignore[import-untyped]

from rules.site import HolidayCalendar, SiteModel


def is_workday(site: SiteModel, day: dt.date) -> bool:
    return _is_workday(site.site.holidays, day)


@lru_cache(maxsize=4096)
def _is_workday(calendar: HolidayCalendar, day: dt.date) -> bool:
    if day in calendar.extra_holidays:
        return False
    if day in calendar.extra_workdays:
        return True
    if calendar.kind == "cn":
        try:
            return bool(chinese_calendar.is_workday(day))
        except NotImplementedError:
            pass  # a year the package has no data for yet: fall back to Monday to Friday
    return day.weekday() < 5
