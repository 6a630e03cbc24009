"""Register arithmetic, by hand: resets, gaps, bucket edges, missing data."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from energy.accounting import Sample, bucket_edges, meter_consumption, to_decimal

SHANGHAI = ZoneInfo("Asia/Shanghai")
HOUR = 3600.0


def samples(*pairs: tuple[float, float]) -> list[Sample]:
    return [Sample(ts, to_decimal(value)) for ts, value in pairs]


def test_differences_are_decimal_exact() -> None:
    result = meter_consumption(
        samples((0, 1234.56), (HOUR, 1234.87), (2 * HOUR, 1235.0)), [0, 2 * HOUR], HOUR
    )
    assert result.total == Decimal("0.44")
    assert result.estimated == 0 and not result.missing and not result.gaps


def test_backwards_register_is_a_new_baseline_never_negative() -> None:
    # 100 -> 130 (30), reset to 2, 2 -> 12 (10): 40 counted, the reset interval is flagged.
    result = meter_consumption(
        samples((0, 100), (HOUR, 130), (2 * HOUR, 2), (3 * HOUR, 12)), [0, 3 * HOUR], 2 * HOUR
    )
    assert result.total == Decimal(40)
    [reset] = result.resets
    assert (reset.previous_ts, reset.ts, reset.before, reset.after) == (HOUR, 2 * HOUR, 130, 2)
    assert [(m.start, m.end) for m in result.missing] == [(HOUR, 2 * HOUR)]


def test_interval_across_a_bucket_edge_is_split_by_time_and_marked_estimated() -> None:
    # 40 used between 00:30 and 01:30: 20 in each hour, both estimated.
    result = meter_consumption(
        samples((0.5 * HOUR, 10), (1.5 * HOUR, 50)), [0, HOUR, 2 * HOUR], 2 * HOUR
    )
    assert [b.value for b in result.buckets] == [Decimal(20), Decimal(20)]
    assert all(b.is_estimated for b in result.buckets)
    # Before the first and after the last reading nothing is known: missing, not invented.
    assert [(m.start, m.end) for m in result.missing] == [(0, 0.5 * HOUR), (1.5 * HOUR, 2 * HOUR)]


def test_reading_on_the_edge_closes_the_bucket_exactly() -> None:
    result = meter_consumption(
        samples((0, 0), (HOUR, 5), (2 * HOUR, 12)), [0, HOUR, 2 * HOUR], HOUR
    )
    assert [b.value for b in result.buckets] == [Decimal(5), Decimal(7)]
    assert result.estimated == 0 and not result.missing


def test_gap_is_reported_and_its_total_kept() -> None:
    # No reading for 3 h, max_gap 1 h: the 30 kWh across it are kept (the register is exact),
    # spread over the hours it spans and flagged.
    result = meter_consumption(
        samples((0, 0), (HOUR, 10), (4 * HOUR, 40)), bucket_edges_hours(4), HOUR
    )
    assert result.total == Decimal(40)
    assert [(g.start, g.end) for g in result.gaps] == [(HOUR, 4 * HOUR)]
    assert [b.value for b in result.buckets] == [Decimal(10), Decimal(10), Decimal(10), Decimal(10)]
    assert [b.is_estimated for b in result.buckets] == [False, True, True, True]


def test_no_readings_is_all_missing() -> None:
    result = meter_consumption([], [0, HOUR], HOUR)
    assert result.total == 0 and result.missing_seconds == HOUR


def test_duplicates_and_disorder_change_nothing() -> None:
    ordered = meter_consumption(samples((0, 1), (HOUR, 3), (2 * HOUR, 8)), [0, 2 * HOUR], HOUR)
    shuffled = meter_consumption(
        samples((2 * HOUR, 8), (0, 1), (HOUR, 3), (HOUR, 3)), [0, 2 * HOUR], HOUR
    )
    assert ordered.total == shuffled.total == Decimal(7)


def bucket_edges_hours(hours: int) -> list[float]:
    return [h * HOUR for h in range(hours + 1)]


def test_month_edges_follow_the_site_timezone() -> None:
    since = dt.datetime(2026, 6, 15, tzinfo=SHANGHAI)
    until = dt.datetime(2026, 8, 1, tzinfo=SHANGHAI)
    edges = bucket_edges(since, until, "month", SHANGHAI)
    assert [dt.datetime.fromtimestamp(e, SHANGHAI).date() for e in edges] == [
        dt.date(2026, 6, 15),
        dt.date(2026, 7, 1),
        dt.date(2026, 8, 1),
    ]
    assert len(bucket_edges(since, since + dt.timedelta(days=2), "hour", SHANGHAI)) == 49


def test_bad_periods_are_refused() -> None:
    with pytest.raises(ValueError, match="after"):
        bucket_edges(
            dt.datetime(2026, 2, 1, tzinfo=SHANGHAI),
            dt.datetime(2026, 1, 1, tzinfo=SHANGHAI),
            "day",
            SHANGHAI,
        )
    with pytest.raises(ValueError, match="aware"):
        bucket_edges(dt.datetime(2026, 1, 1), dt.datetime(2026, 2, 1), "day", SHANGHAI)


register_steps = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=7200),  # seconds to the next reading
        st.one_of(
            st.decimals(min_value=0, max_value=50, places=3),  # consumption
            st.just(Decimal(-1)),  # a reset: the register restarts low
        ),
    ),
    min_size=1,
    max_size=60,
)


def _series(steps: list[tuple[int, Decimal]]) -> list[Sample]:
    ts, value = 0.0, Decimal(100)
    out = [Sample(ts, value)]
    for gap, step in steps:
        ts += gap
        value = Decimal("0.5") if step < 0 else value + step
        out.append(Sample(ts, value))
    return out


@given(register_steps, st.lists(st.floats(min_value=1, max_value=0.999e6), max_size=8))
def test_totals_do_not_depend_on_how_the_period_is_cut(
    steps: list[tuple[int, Decimal]], cuts: list[float]
) -> None:
    series = _series(steps)
    end = series[-1].ts
    whole = meter_consumption(series, [0.0, end], 3600)
    inner = sorted({c for c in cuts if 0 < c < end})
    cut = meter_consumption(series, [0.0, *inner, end], 3600)
    expected = sum(
        (b.value - a.value for a, b in itertools.pairwise(series) if b.value >= a.value),
        Decimal(0),
    )
    assert whole.total == expected
    # split in proportion to time, each share rounded at 28 significant digits
    assert abs(cut.total - expected) <= expected * Decimal("1e-25")
    assert all(b.value >= 0 and b.estimated >= 0 for b in cut.buckets)
    backwards = sum(1 for a, b in itertools.pairwise(series) if b.value < a.value)
    assert len(whole.resets) == len(cut.resets) == backwards
