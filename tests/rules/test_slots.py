"""Rolling aggregates: exact for steady values, accurate over long windows."""

from __future__ import annotations

import math
import random

import pytest

from rules._slots import RollingAggregate


@pytest.mark.parametrize("value", [0.08, 0.1, 26.0, 0.3, 1e-5])
def test_a_steady_value_averages_to_itself(value: float) -> None:
    mean = RollingAggregate("mean", 3600)
    for i in range(200):
        mean.add(60.0 * i, value)
        assert mean.current == value


def test_mean_min_max_over_the_window_match_a_recomputation() -> None:
    rng = random.Random(3)
    aggregates = {fn: RollingAggregate(fn, 600) for fn in ("mean", "min", "max")}
    points: list[tuple[float, float]] = []
    t = 0.0
    for _ in range(3000):
        t += rng.choice([1.0, 30.0, 60.0, 200.0])
        value = rng.uniform(-50, 50)
        points.append((t, value))
        window = [v for ts, v in points if ts > t - 600]
        for aggregate in aggregates.values():
            aggregate.add(t, value)
        assert aggregates["mean"].current == pytest.approx(math.fsum(window) / len(window))
        assert aggregates["min"].current == min(window)
        assert aggregates["max"].current == max(window)


@pytest.mark.parametrize("fn", ["mean", "min", "max"])
def test_points_that_left_the_window_are_dropped(fn: str) -> None:
    # A day's window at one reading a minute, run for a week: what is kept stays bounded by
    # the window (twice its points at most, as they are dropped in bulk), not by the history.
    aggregate = RollingAggregate(fn, 86400)
    for i in range(7 * 1440):
        aggregate.add(60.0 * i, float(i % 97))
        window = aggregate.window_points()
        assert len(window) <= 2 * 1440
        assert len(aggregate.points) <= 2 * len(window) + 64 * 2
    assert window[0] > 60.0 * (7 * 1440 - 1) - 86400
