"""Calendar quarters and years in a site's timezone, the periods of self-evaluation reports
(quarterly and annual) and of a person's implementation evaluation (a quarter): "2026Q3" is
[07-01 00:00, 10-01 00:00) local time, "2026" is [2026-01-01 00:00, 2027-01-01 00:00)."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

PERIOD = re.compile(r"^(\d{4})Q([1-4])$")
YEAR = re.compile(r"^(\d{4})$")


class BadPeriod(ValueError):
    pass


def quarter_bounds(period: str, zone: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of a quarter "YYYYQn" in `zone`, as aware datetimes. Raises BadPeriod."""
    match = PERIOD.match(period)
    if match is None:
        raise BadPeriod(f"{period!r} is not a quarter such as 2026Q3")
    year, quarter = int(match.group(1)), int(match.group(2))
    if not 1990 <= year <= 2100:
        raise BadPeriod("the year must be between 1990 and 2100")
    start = dt.datetime(year, 3 * quarter - 2, 1, tzinfo=zone)
    end = (
        dt.datetime(year + 1, 1, 1, tzinfo=zone)
        if quarter == 4
        else dt.datetime(year, 3 * quarter + 1, 1, tzinfo=zone)
    )
    return start, end


def last_complete_quarter(now: dt.datetime, zone: ZoneInfo) -> str:
    """The newest quarter that has ended at `now` in `zone`."""
    local = now.astimezone(zone)
    quarter = (local.month - 1) // 3  # the current quarter's index 0..3; the previous one ends
    return f"{local.year - 1}Q4" if quarter == 0 else f"{local.year}Q{quarter}"


def is_year(period: str) -> bool:
    return YEAR.match(period) is not None


def report_bounds(period: str, zone: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of a report's period: a quarter "YYYYQn" or a year "YYYY". Raises
    BadPeriod."""
    match = YEAR.match(period)
    if match is None:
        if PERIOD.match(period) is None:
            raise BadPeriod(
                f"{period!r} is neither a quarter such as 2026Q3 nor a year such as 2026"
            )
        return quarter_bounds(period, zone)
    year = int(match.group(1))
    if not 1990 <= year <= 2100:
        raise BadPeriod("the year must be between 1990 and 2100")
    return dt.datetime(year, 1, 1, tzinfo=zone), dt.datetime(year + 1, 1, 1, tzinfo=zone)


def last_complete_year(now: dt.datetime, zone: ZoneInfo) -> str:
    """The newest calendar year that has ended at `now` in `zone`."""
    return str(now.astimezone(zone).year - 1)
