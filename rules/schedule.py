"""When a clause judges: schedules compiled against a site's calendar, in event-time seconds.

A clause `Schedule` (time windows, day kinds, a season) plus its version's effective dates is
compiled once per site into a `CompiledSchedule`. The engine asks `state_at(ts)` for whether a
time is inside and until when that answer holds, so the hot path converts no time zones between
changes. Windows are [start, end) in local time; an end of 00:00 is the midnight that ends the
day. Local times are turned into epoch seconds through `zoneinfo`, so DST days have their true
lengths (a window 01:00-04:00 on a spring-forward day lasts two hours).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

from rules.clause import Schedule
from rules.holidays import OfficialCalendar, official_calendar
from rules.site import HolidayCalendar, SeasonRange, SiteModel

Period = Literal["day", "week", "month", "quarter", "year"]

# A schedule's next change is looked for this many days ahead (and its start this many days
# back) at most; past that the horizon is reported as a time at which the state "can" change,
# which costs the engine one re-evaluation and never a wrong answer.
_SCAN_DAYS = 14
_MIDNIGHT = dt.time(0, 0)


class WorkdayCalendar:
    """Workdays of a site. `cn`: the official holiday schedules (rules/holidays.py: 放假 days
    and 调休 working days of each year with a State Council notice loaded) where a notice names
    the day, else Monday to Friday, which is also the whole rule for a year without a notice;
    `weekends`: Monday to Friday. Extra holidays and workdays of the site apply on top of
    either. The official calendar is the one in use when the schedule is compiled, unless one is
    given."""

    __slots__ = ("_extra_holidays", "_extra_workdays", "_kind", "_official")

    def __init__(self, calendar: HolidayCalendar, official: OfficialCalendar | None = None) -> None:
        self._kind = calendar.kind
        self._extra_holidays = frozenset(calendar.extra_holidays)
        self._extra_workdays = frozenset(calendar.extra_workdays)
        self._official = official if official is not None else official_calendar()

    def is_workday(self, day: dt.date) -> bool:
        if day in self._extra_holidays:
            return False
        if day in self._extra_workdays:
            return True
        if self._kind == "cn":
            return self._official.is_workday(day)
        return day.weekday() < 5


def local_midnight(day: dt.date, zone: ZoneInfo) -> float:
    """Epoch seconds of 00:00 local time on `day`."""
    return dt.datetime.combine(day, _MIDNIGHT, tzinfo=zone).timestamp()


def local_date(ts: float, zone: ZoneInfo) -> dt.date:
    return dt.datetime.fromtimestamp(ts, zone).date()


def period_bounds(ts: float, period: Period, zone: ZoneInfo) -> tuple[float, float]:
    """[start, end) in epoch seconds of the calendar period (site-local) that contains `ts`.
    Weeks start on Monday (ISO)."""
    day = local_date(ts, zone)
    if period == "day":
        first, after = day, day + dt.timedelta(days=1)
    elif period == "week":
        first = day - dt.timedelta(days=day.weekday())
        after = first + dt.timedelta(days=7)
    elif period == "month":
        first = day.replace(day=1)
        after = _add_months(first, 1)
    elif period == "quarter":
        first = day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)
        after = _add_months(first, 3)
    else:
        first = day.replace(month=1, day=1)
        after = first.replace(year=first.year + 1)
    return local_midnight(first, zone), local_midnight(after, zone)


def _add_months(first_of_month: dt.date, months: int) -> dt.date:
    index = first_of_month.month - 1 + months
    return first_of_month.replace(year=first_of_month.year + index // 12, month=index % 12 + 1)


class CompiledSchedule:
    """A clause schedule and effective dates against one site's zone, calendar and seasons."""

    __slots__ = (
        "_always",
        "_calendar",
        "_day_active",
        "_effective_from",
        "_effective_to",
        "_last",
        "_pieces_by_day",
        "_windows",
        "zone",
    )

    def __init__(
        self,
        schedule: Schedule,
        site: SiteModel,
        effective_from: dt.date | None = None,
        effective_to: dt.date | None = None,
    ) -> None:
        self.zone = site.zone()
        self._calendar = WorkdayCalendar(site.site.holidays)
        self._effective_from = effective_from
        self._effective_to = effective_to
        self._windows = tuple(
            (w.start, w.end) for w in sorted(schedule.windows, key=lambda w: w.start)
        )
        season: SeasonRange | None
        if isinstance(schedule.season, str):
            if schedule.season not in site.site.seasons:
                raise ValueError(
                    f"schedule season {schedule.season!r} is not a season of site {site.site.id}"
                )
            season = site.site.seasons[schedule.season]
        else:
            season = schedule.season
        self._day_active = _day_filter(schedule.days, season, self._calendar)
        self._always = (
            not self._windows
            and schedule.days == "all"
            and season is None
            and effective_from is None
            and effective_to is None
        )
        self._last: tuple[float, float, bool] = (math.inf, -math.inf, False)
        self._pieces_by_day: dict[dt.date, list[tuple[float, float, bool]]] = {}

    def state_at(self, ts: float) -> tuple[bool, float]:
        """Whether `ts` is inside, and the next time after `ts` at which that can change."""
        _start, end, inside = self.segment_at(ts)
        return inside, end

    def segment_at(self, ts: float) -> tuple[float, float, bool]:
        """The maximal [start, end) around `ts` over which inside-ness is constant (as far as
        the scan horizon reaches), and that inside-ness."""
        last = self._last
        if last[0] <= ts < last[1]:
            return last
        segment = (-math.inf, math.inf, True) if self._always else self._compute_segment(ts)
        self._last = segment
        return segment

    def inside_seconds(self, start: float, end: float) -> float:
        """Seconds of [start, end) that are inside the schedule."""
        total, t = 0.0, start
        while t < end:
            _seg_start, seg_end, inside = self.segment_at(t)
            stop = min(seg_end, end)
            if inside:
                total += stop - t
            t = stop
        return total

    def after_inside_seconds(self, start: float, seconds: float) -> float:
        """The earliest time at which `seconds` of schedule time have passed since `start`
        (math.inf when the schedule never has that much time again)."""
        remaining, t = seconds, start
        for _ in range(10_000):
            _seg_start, seg_end, inside = self.segment_at(t)
            if inside:
                if seg_end - t >= remaining:
                    return t + remaining
                remaining -= seg_end - t
            if math.isinf(seg_end):
                return math.inf
            t = seg_end
        return math.inf

    # ---- the calendar work, off the hot path ----

    def _day_intervals(self, day: dt.date) -> list[tuple[float, float]]:
        """Inside intervals of one local day, in epoch seconds, merged and ordered."""
        if not self._in_force(day) or not self._day_active(day):
            return []
        zone = self.zone
        next_midnight = local_midnight(day + dt.timedelta(days=1), zone)
        if not self._windows:
            return [(local_midnight(day, zone), next_midnight)]
        spans: list[tuple[float, float]] = []
        for start, end in self._windows:
            a = dt.datetime.combine(day, start, tzinfo=zone).timestamp()
            b = (
                next_midnight
                if end == _MIDNIGHT
                else dt.datetime.combine(day, end, tzinfo=zone).timestamp()
            )
            if b <= a:
                continue
            if spans and a <= spans[-1][1]:
                spans[-1] = (spans[-1][0], max(spans[-1][1], b))
            else:
                spans.append((a, b))
        return spans

    def _in_force(self, day: dt.date) -> bool:
        if self._effective_from is not None and day < self._effective_from:
            return False
        return self._effective_to is None or day <= self._effective_to

    def _compute_segment(self, ts: float) -> tuple[float, float, bool]:
        zone = self.zone
        day = local_date(ts, zone)
        # Boundaries of the days around ts, as alternating inside/outside pieces.
        start, inside = self._piece_at(day, ts)
        # Walk back for the start of this constant stretch (bounded: it is only a cache key).
        back_day = day
        for _ in range(_SCAN_DAYS):
            piece_start, piece_inside = self._piece_start_before(back_day, start, inside)
            if piece_start is None:
                break
            start = piece_start
            back_day = back_day - dt.timedelta(days=1)
            if piece_inside is None:
                break
        end = self._next_change(day, ts, inside)
        return start, end, inside

    def _pieces(self, day: dt.date) -> list[tuple[float, float, bool]]:
        """The day cut into inside and outside pieces covering [midnight, next midnight)."""
        cached = self._pieces_by_day.get(day)
        if cached is not None:
            return cached
        if len(self._pieces_by_day) > 4096:
            self._pieces_by_day.clear()
        zone = self.zone
        t = local_midnight(day, zone)
        day_end = local_midnight(day + dt.timedelta(days=1), zone)
        pieces: list[tuple[float, float, bool]] = []
        for a, b in self._day_intervals(day):
            if a > t:
                pieces.append((t, a, False))
            pieces.append((a, b, True))
            t = b
        if t < day_end:
            pieces.append((t, day_end, False))
        self._pieces_by_day[day] = pieces
        return pieces

    def _piece_at(self, day: dt.date, ts: float) -> tuple[float, bool]:
        for a, b, inside in self._pieces(day):
            if a <= ts < b:
                return a, inside
        # ts on a day boundary quirk (cannot happen with consistent zones); treat as outside.
        return ts, False

    def _piece_start_before(
        self, day: dt.date, start: float, inside: bool
    ) -> tuple[float | None, bool | None]:
        """If the stretch starting at `start` began at the day's midnight, continue it into the
        previous day: returns the earlier start, and None as second item when it stops there."""
        if start != local_midnight(day, self.zone):
            return None, None
        previous = self._pieces(day - dt.timedelta(days=1))
        if not previous or previous[-1][2] != inside:
            return None, None
        earlier = previous[-1][0]
        continues = len(previous) == 1
        return earlier, (inside if continues else None)

    def _next_change(self, day: dt.date, ts: float, inside: bool) -> float:
        current = day
        for _ in range(_SCAN_DAYS):
            for a, _b, piece_inside in self._pieces(current):
                if a > ts and piece_inside != inside:
                    return a
            current = current + dt.timedelta(days=1)
        return local_midnight(current, self.zone)


def _day_filter(
    days: str, season: SeasonRange | None, calendar: WorkdayCalendar
) -> Callable[[dt.date], bool]:
    @lru_cache(maxsize=4096)
    def active(day: dt.date) -> bool:
        if season is not None and not season.contains(day):
            return False
        if days == "weekdays":
            return day.weekday() < 5
        if days == "workdays":
            return calendar.is_workday(day)
        if days == "non_workdays":
            return not calendar.is_workday(day)
        return True

    return active
