"""Per-metric state the engine keeps: the latest value, how long it holds, rolling aggregates.

A `MetricSlot` is one device's metric (or, for reads across devices, the latest value of a
metric in a space). A value holds from its reading until `until`; at or after `until` the metric
is unknown. Faults (out of physical range, stuck, register backwards) set `until` to the
reading's own time, so everything that reads the metric sees "unknown" from there on.
"""

from __future__ import annotations

import itertools
import math
from array import array
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from rules._instances import Instance

# Constants are Final: compiled (mypyc, setup.py), a Final is a C constant, any other module
# global a dictionary lookup each time it is read.
INF: Final = math.inf
# One shared object: `-INF` in an expression would allocate a new float each time it runs.
NEG_INF: Final = -math.inf

# Faults a slot can carry; "" when the value is good.
OUT_OF_RANGE: Final = "out_of_range"
STUCK: Final = "stuck"
BACKWARDS: Final = "register_backwards"
RECOVERED: Final = "recovered"  # not a fault: a good value after a fault or a stale gap


class RollingAggregate:
    """mean, min or max of the good readings with ts in (t - window, t], updated at each reading
    and held, like the value itself, until the next one."""

    __slots__ = (
        "current",
        "fn",
        "head",
        "last",
        "points",
        "same",
        "total",
        "until_resum",
        "window",
    )

    def __init__(self, fn: str, window: float) -> None:
        self.fn = fn
        self.window = window
        # mean: every point in the window; min/max: a monotonic queue of candidates. Flat
        # doubles from `head` on, ts, value, ts, value...: 16 bytes a point where a deque of
        # float objects took 65, and a co2 sensor's daily mean holds 1,440 points at one
        # reading a minute. Points before `head` have left the window (dropped in bulk).
        self.points = array("d")
        self.head = 0
        self.total = 0.0
        self.until_resum = _RESUM_EVERY  # adds (ever, not since clear()) until the next resum
        self.last = math.nan  # the newest value, and how many newest points equal it
        self.same = 0
        self.current = math.nan

    def add(self, ts: float, value: float) -> None:
        points = self.points
        horizon = ts - self.window
        head = self.head
        if self.fn == "mean":
            points.append(ts)
            points.append(value)
            total = self.total + value
            while points[head] <= horizon:
                total -= points[head + 1]
                head += 2
            self._advance(head)
            self.until_resum -= 1
            if not self.until_resum:  # no float drift accumulates in the running sum
                self.until_resum = _RESUM_EVERY
                total = math.fsum(itertools.islice(points, self.head + 1, None, 2))
            self.total = total
            if value == self.last:
                self.same += 1
            else:
                self.last, self.same = value, 1
            # A window of one repeated value averages to exactly that value (a running sum
            # over a count would give 0.08000000000000002 for 0.08 and fail a 0.08 limit).
            count = (len(points) - self.head) >> 1
            self.current = value if self.same >= count else total / count
            return
        if self.fn == "min":
            while len(points) > head and points[-1] >= value:
                points.pop()
                points.pop()
        else:
            while len(points) > head and points[-1] <= value:
                points.pop()
                points.pop()
        points.append(ts)
        points.append(value)
        while points[head] <= horizon:
            head += 2
        self._advance(head)
        self.current = points[self.head + 1]

    def _advance(self, head: int) -> None:
        """The window starts at `head` now; the points before it go once they are at least
        half of the array (each point is moved at most once on average)."""
        if head >= _COMPACT_FROM and head * 2 >= len(self.points):
            del self.points[:head]
            head = 0
        self.head = head

    def window_points(self) -> list[float]:
        """The points in the window, ts, value, ts, value..."""
        return self.points[self.head :].tolist()

    def clear(self) -> None:
        del self.points[:]
        self.head = 0
        self.total = 0.0
        self.last, self.same = math.nan, 0
        self.current = math.nan


# Points that have left a window are dropped once there are this many (and at least half the
# array): few and large moves instead of one per point.
_COMPACT_FROM: Final = 64


# How often a mean's running sum is recomputed exactly (a bounded cost: one pass per this many
# readings) so rounding errors of additions and removals cannot accumulate.
_RESUM_EVERY: Final = 256


class _ReadForEveryReading:
    """A slot's fields read when it takes a reading or an instance reads it, in a class of
    their own: CPython lays out `__slots__` base class first (each class's names sorted), so
    these share the object's first two cache lines (at 1,000 rooms each line is a miss)."""

    __slots__ = (
        "aggregate_list",
        "cumulative",
        "fault",
        "forward",
        "high",
        "low",
        "stuck_for",
        "stuck_since",
        "ts",
        "until",
        "valid_for",
        "value",
    )


class MetricSlot(_ReadForEveryReading):
    """The latest known value of one metric of one device (or of one space)."""

    __slots__ = (
        "device",
        "listeners",
        "metric",
        "previous",
        "reset_from",
    )

    def __init__(
        self,
        device: str,
        metric: str,
        *,
        valid_for: float,
        low: float = NEG_INF,
        high: float = INF,
        cumulative: bool = False,
    ) -> None:
        self.device = device
        self.metric = metric
        self.valid_for = valid_for
        self.low = low
        self.high = high
        self.cumulative = cumulative
        self.stuck_for = INF
        self.value = math.nan
        self.ts = NEG_INF
        self.until = NEG_INF
        self.previous = math.nan  # last good register value (baseline for differences)
        self.reset_from = math.nan  # the register value before its last backwards step
        self.stuck_since = NEG_INF
        self.fault = ""
        # Rolling aggregates read from this slot (one per fn and window); a tuple, not a list
        # or a dictionary: a tuple holds its items in the object itself (one object fewer to
        # read per reading), and () is one shared object.
        self.aggregate_list: tuple[RollingAggregate, ...] = ()
        self.forward: tuple[MetricSlot, ...] = ()  # space slots that take this device's values
        # Of a device's slot, the instances its readings wake (set by the engine): here, not in
        # a dictionary of the device by metric (0.25 KiB a device, issue 24).
        self.listeners: tuple[Instance, ...] = ()

    def aggregate(self, fn: str, window: float) -> RollingAggregate:
        for found in self.aggregate_list:
            if found.fn == fn and found.window == window:
                return found
        found = RollingAggregate(fn, window)
        self.aggregate_list += (found,)
        return found

    def update(self, ts: float, value: float) -> str:
        """Takes a released reading. Returns "" when the value is good and the metric was known
        and good before; otherwise the fault it shows, or RECOVERED when a good value follows a
        fault or an expired (stale) value: the cases in which data quality may have changed."""
        # A stuck run goes on only while the last value still held: after a gap longer than
        # a value holds, even the same value starts a new run.
        if value == self.value and ts - self.ts < self.valid_for:
            if ts - self.stuck_since >= self.stuck_for and self.until > NEG_INF:
                return self._faulty(ts, value, STUCK)
        else:
            self.stuck_since = ts
        if not (self.low <= value <= self.high):
            return self._faulty(ts, value, OUT_OF_RANGE)
        if self.cumulative:
            if value < self.previous:
                self.reset_from = self.previous
                self.previous = value  # the new baseline
                return self._faulty(ts, value, BACKWARDS)
            self.previous = value
        change = RECOVERED if self.fault or self.until <= ts else ""
        self.value = value
        self.ts = ts
        self.fault = ""
        until = self.until = ts + self.valid_for
        if self.aggregate_list:
            for aggregate in self.aggregate_list:
                aggregate.add(ts, value)
        if self.forward:
            for space_slot in self.forward:
                if ts >= space_slot.ts:
                    space_slot.take(ts, value, until)
        return change

    def _faulty(self, ts: float, value: float, fault: str) -> str:
        self.value = value
        self.ts = ts
        self.fault = fault
        self.until = ts  # unknown from this reading on, for everything that reads the metric
        for space_slot in self.forward:  # the space's latest value is this unknown one
            if ts >= space_slot.ts:
                space_slot.value, space_slot.ts, space_slot.until = value, ts, ts
        return fault

    def take(self, ts: float, value: float, until: float) -> None:
        """A space slot takes a good value from one of the space's devices."""
        self.value = value
        self.ts = ts
        self.until = until
        for aggregate in self.aggregate_list:
            aggregate.add(ts, value)

    def snapshot(self) -> dict[str, object]:
        """Its state; a field at its default (null, no fault, no aggregates) left out: a
        checkpoint holds every slot of every device that changed."""
        state: dict[str, object] = {
            "value": to_json(self.value),
            "ts": to_json(self.ts),
            "until": to_json(self.until),
            "stuck_since": to_json(self.stuck_since),
        }
        previous = to_json(self.previous)
        if previous is not None:
            state["previous"] = previous
        if self.fault:
            state["fault"] = self.fault
        if self.aggregate_list:
            # Points as kept, ts, value, ts, value...: one C-level pass, no list per point
            # (checkpoints hold every window point of every device that changed).
            state["aggregates"] = [
                [agg.fn, agg.window, agg.window_points()] for agg in self.aggregate_list
            ]
        return state

    def restore(self, state: dict[str, object]) -> None:
        self.value = from_json(state["value"], math.nan)
        self.ts = from_json(state["ts"], NEG_INF)
        self.until = from_json(state["until"], NEG_INF)
        self.previous = from_json(state.get("previous"), math.nan)
        self.stuck_since = from_json(state["stuck_since"], NEG_INF)
        self.fault = str(state.get("fault", ""))
        aggregates = state.get("aggregates", [])
        assert isinstance(aggregates, list)
        for fn, window, points in aggregates:
            agg = self.aggregate(str(fn), float(window))
            if len(agg.points):
                agg.clear()
            assert isinstance(points, list)
            if len(points) % 2:
                raise ValueError(f"aggregate {fn}: points are (ts, value) pairs")
            for i in range(0, len(points), 2):
                agg.add(float(points[i]), float(points[i + 1]))


def to_json(value: float) -> float | None:
    """JSON has no NaN or infinity: those become null (read back by `from_json` with a
    default)."""
    return None if math.isnan(value) or math.isinf(value) else value


def from_json(value: object, default: float) -> float:
    if value is None:
        return default
    # A tuple, not `int | float`: compiled, the union is built anew at every call (a restore
    # makes millions of them).
    assert isinstance(value, (int, float))
    return float(value)
