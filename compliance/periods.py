"""Calendar quarters in a site's timezone, the period of a self-evaluation report and of a
person's implementation evaluation: "2026Q3" is [07-01 00:00, 10-01 00:00) local time."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

PERIOD = re.compile(r"^(\d{4})Q([1-4])$")


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
