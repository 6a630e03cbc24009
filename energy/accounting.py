"""Consumption of one cumulative register (a meter) over a period, split into buckets.

Pure arithmetic on samples already read from storage: no I/O, no clock. Register values are
converted to `Decimal` from their shortest decimal text, so differences are exact (a kWh register
read as 1234.56 gives 1234.56, never 1234.5599999).

How a register becomes consumption:
- the consumption between two successive readings is their difference, and it happened in the
  half-open interval (earlier ts, later ts];
- a reading lower than the one before is a reset or a replacement: the lower value is the new
  baseline, the interval across it counts nothing and is reported (flagged), never negative;
- an interval longer than the meter's `max_gap` is a gap: the register still tells exactly how
  much was used across it, but not when, so the gap is reported;
- a difference whose interval crosses a bucket edge or the period's edge is split in proportion to
  time; that share is an estimate and is reported as such (`estimated`), never silently;
- time in the period before the first or after the last reading is missing: nothing is invented.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo

Bucket = Literal["hour", "day", "month", "year", "period"]
ZERO = Decimal(0)


def to_decimal(value: float | int | str | Decimal) -> Decimal:
    """A register value as the decimal a person would read on the meter's display."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


@dataclass(frozen=True, slots=True)
class Sample:
    ts: float  # epoch seconds, UTC
    value: Decimal


@dataclass(frozen=True, slots=True)
class Reset:
    """The register went backwards at `ts`: `before` was the last value, `after` the new baseline.
    Consumption between `previous_ts` and `ts` is unknown and not counted."""

    previous_ts: float
    ts: float
    before: Decimal
    after: Decimal


@dataclass(frozen=True, slots=True)
class Interval:
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Summary:
    """Successive readings known only by their summary (an hour whose raw rows retention
    dropped; store.readings.register_hours): its first and last reading, the distinct instants,
    the sum of the increases between successive readings, the resets between them, and the
    intervals between them longer than `floor` seconds. Accounted like those readings as long
    as no bucket edge falls strictly between its first and last reading."""

    first: Sample
    last: Sample
    readings: int
    consumption: Decimal
    resets: tuple[Reset, ...]
    intervals: tuple[Interval, ...]
    floor: float


class SummaryCut(ValueError):
    """A bucket or period edge falls inside a summary: the raw readings would be needed."""

    def __init__(self, summary: Summary) -> None:
        super().__init__(f"an edge falls between {summary.first.ts} and {summary.last.ts}")
        self.summary = summary


@dataclass(slots=True)
class BucketTotal:
    start: float
    end: float
    value: Decimal = ZERO
    estimated: Decimal = ZERO  # the part of `value` spread in proportion to time

    @property
    def is_estimated(self) -> bool:
        return self.estimated != ZERO


@dataclass(slots=True)
class MeterConsumption:
    """Consumption of one register over [edges[0], edges[-1]), bucket by bucket."""

    buckets: list[BucketTotal]
    resets: list[Reset] = field(default_factory=list)
    gaps: list[Interval] = field(default_factory=list)  # longer than max_gap, spread linearly
    missing: list[Interval] = field(default_factory=list)  # no reading at all: not counted
    readings: int = 0

    @property
    def total(self) -> Decimal:
        return sum((b.value for b in self.buckets), ZERO)

    @property
    def estimated(self) -> Decimal:
        return sum((b.estimated for b in self.buckets), ZERO)

    @property
    def missing_seconds(self) -> float:
        return sum(m.seconds for m in self.missing)


def meter_consumption(
    samples: Iterable[Sample | Summary], edges: Sequence[float], max_gap: float
) -> MeterConsumption:
    """Consumption per bucket [edges[i], edges[i+1]) from register samples.

    `samples` may include readings before the first edge and after the last (the neighbours the
    period needs to be measured at its edges); they may come in any order; duplicate timestamps
    keep the first value seen. Summaries of readings (`Summary`) count as those readings did;
    one cut by an edge raises SummaryCut. Gaps inside a summary are those longer than both
    `max_gap` and its floor.
    """
    if len(edges) < 2 or any(b <= a for a, b in itertools.pairwise(edges)):
        raise ValueError("bucket edges must be at least two strictly increasing times")
    ordered = _dedupe_sorted(samples)
    start, end = edges[0], edges[-1]
    result = MeterConsumption(buckets=[BucketTotal(a, b) for a, b in itertools.pairwise(edges)])
    if not ordered:
        result.missing.append(Interval(start, end))
        return result
    if _head(ordered[0]).ts > start:
        result.missing.append(Interval(start, min(_head(ordered[0]).ts, end)))
    previous: Sample | None = None
    for item in ordered:
        if previous is not None:
            _pair(result, edges, previous, _head(item), max_gap)
        if isinstance(item, Summary):
            _summary(result, edges, item, max_gap)
            previous = item.last
        else:
            result.readings += 1 if start <= item.ts <= end else 0
            previous = item
    if previous is not None and previous.ts < end:
        result.missing.append(Interval(max(previous.ts, start), end))
    return result


def _head(item: Sample | Summary) -> Sample:
    return item.first if isinstance(item, Summary) else item


def _pair(
    result: MeterConsumption,
    edges: Sequence[float],
    earlier: Sample,
    later: Sample,
    max_gap: float,
) -> None:
    start, end = edges[0], edges[-1]
    if later.ts <= start or earlier.ts >= end:
        return
    if later.value < earlier.value:
        result.resets.append(Reset(earlier.ts, later.ts, earlier.value, later.value))
        result.missing.append(Interval(max(earlier.ts, start), min(later.ts, end)))
        return
    if later.ts - earlier.ts > max_gap:
        result.gaps.append(Interval(max(earlier.ts, start), min(later.ts, end)))
    _spread(result.buckets, edges, earlier.ts, later.ts, later.value - earlier.value)


def _summary(
    result: MeterConsumption, edges: Sequence[float], summary: Summary, max_gap: float
) -> None:
    start, end = edges[0], edges[-1]
    if summary.last.ts < start or summary.first.ts > end:
        return  # a neighbour of the period (only its edge readings are used, above)
    if summary.first.ts == end:
        result.readings += 1  # a reading on the period's end counts, as a sample would
        return
    inner = bisect.bisect_right(edges, summary.first.ts)
    if summary.first.ts < start or summary.last.ts > end or edges[inner] < summary.last.ts:
        raise SummaryCut(summary)
    result.readings += summary.readings
    result.buckets[inner - 1].value += summary.consumption
    for reset in summary.resets:
        result.resets.append(reset)
        result.missing.append(Interval(reset.previous_ts, reset.ts))
    result.gaps.extend(i for i in summary.intervals if i.seconds > max_gap)


def _dedupe_sorted(samples: Iterable[Sample | Summary]) -> list[Sample | Summary]:
    by_ts: dict[float, Sample | Summary] = {}
    for sample in samples:
        by_ts.setdefault(_head(sample).ts, sample)
    return [by_ts[ts] for ts in sorted(by_ts)]


def spread(edges: Sequence[float], t0: float, t1: float, amount: Decimal) -> list[BucketTotal]:
    """`amount`, used during (t0, t1] (a bill's period), per bucket of `edges` in proportion to
    time: the part outside the edges is left out; a share of a split interval is `estimated`."""
    buckets = [BucketTotal(a, b) for a, b in itertools.pairwise(edges)]
    if t1 > edges[0] and t0 < edges[-1]:
        _spread(buckets, edges, t0, t1, amount)
    return buckets


def _spread(
    buckets: list[BucketTotal], edges: Sequence[float], t0: float, t1: float, amount: Decimal
) -> None:
    """Adds `amount`, used during (t0, t1], to the buckets it overlaps, in proportion to time."""
    if amount == ZERO:
        return
    first = max(bisect.bisect_right(edges, t0) - 1, 0)
    last = min(bisect.bisect_left(edges, t1) - 1, len(buckets) - 1)
    if first == last and edges[first] <= t0 and t1 <= edges[first + 1]:
        buckets[first].value += amount  # wholly inside one bucket: exact
        return
    # Times as decimals, so the overlaps of a fully covered interval add up to its duration
    # exactly and its shares to `amount` (float differences would be off by ~1e-16).
    start, end = Decimal(repr(t0)), Decimal(repr(t1))
    duration = end - start
    for index in range(first, last + 1):
        bucket = buckets[index]
        overlap = min(end, Decimal(repr(bucket.end))) - max(start, Decimal(repr(bucket.start)))
        if overlap <= 0:
            continue
        share = amount * overlap / duration
        bucket.value += share
        bucket.estimated += share


def bucket_edges(
    since: dt.datetime, until: dt.datetime, bucket: Bucket, zone: ZoneInfo
) -> list[float]:
    """Edges from `since` to `until` at the starts of local hours, days, months or years.

    The first edge is `since` and the last `until` even when they are not aligned, so a partial
    first or last bucket is possible. `period` gives one bucket for the whole period.
    """
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("since and until must be aware datetimes")
    if until <= since:
        raise ValueError("until must be after since")
    edges = [since.timestamp()]
    if bucket != "period":
        boundary = _next_boundary(since.astimezone(zone), bucket, zone)
        while boundary < until:
            edges.append(boundary.timestamp())
            boundary = _next_boundary(boundary, bucket, zone)
    edges.append(until.timestamp())
    return edges


def _next_boundary(local: dt.datetime, bucket: Bucket, zone: ZoneInfo) -> dt.datetime:
    naive = local.replace(tzinfo=None)
    if bucket == "hour":
        # Step in UTC so hours are real hours across daylight-saving changes.
        start = local.replace(minute=0, second=0, microsecond=0)
        return (start.astimezone(dt.UTC) + dt.timedelta(hours=1)).astimezone(zone)
    if bucket == "day":
        nxt = dt.datetime.combine(naive.date() + dt.timedelta(days=1), dt.time())
    elif bucket == "month":
        year, month = (naive.year + 1, 1) if naive.month == 12 else (naive.year, naive.month + 1)
        nxt = dt.datetime(year, month, 1)
    else:
        nxt = dt.datetime(naive.year + 1, 1, 1)
    return nxt.replace(tzinfo=zone)
