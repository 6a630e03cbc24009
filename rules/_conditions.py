"""Conditions (comparisons, all / any / not) compiled into closures over metric slots.

An evaluator takes (t, margin) and returns True, False or None (unknown). `margin` is the
hysteresis margin: a comparison must pass by that much (towards compliance); under `not` the
sign flips, because the inner condition must then fail by that much. Unknown follows Kleene
logic: `all` is False if any part is False, else unknown if any part is unknown.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

from rules._slots import MetricSlot, RollingAggregate
from rules.clause import AllOf, AnyOf, Comparison, Condition, Not

Evaluator = Callable[[float, float], bool | None]
SlotFor = Callable[[str], MetricSlot]
ValueFor = Callable[[str, float | str], float]


def compile_condition(
    node: Condition, slot_for: SlotFor, value_for: ValueFor, leaves: list[Leaf]
) -> Evaluator:
    """`leaves` collects every comparison (for evidence and routing). The evaluators are bound
    methods of small objects rather than closures: a closure keeps each captured variable in a
    cell object of its own, and at 1,000 rooms every object read per reading is a cache miss."""
    if isinstance(node, Comparison):
        slot = slot_for(node.metric)
        aggregate = (
            slot.aggregate(node.aggregate.fn, node.aggregate.window) if node.aggregate else None
        )
        leaf = Leaf(node.metric, slot, aggregate, node.op, value_for(node.metric, node.value))
        leaves.append(leaf)
        return leaf.passes
    if isinstance(node, AllOf):
        return _AllOf([compile_condition(c, slot_for, value_for, leaves) for c in node.all]).passes
    if isinstance(node, AnyOf):
        return _AnyOf([compile_condition(c, slot_for, value_for, leaves) for c in node.any]).passes
    assert isinstance(node, Not)
    return _Not(compile_condition(node.not_, slot_for, value_for, leaves)).passes


class _AllOf:
    __slots__ = ("parts",)

    def __init__(self, parts: list[Evaluator]) -> None:
        self.parts = parts

    def passes(self, t: float, margin: float) -> bool | None:
        unknown = False
        for part in self.parts:
            result = part(t, margin)
            if result is False:
                return False
            if result is None:
                unknown = True
        return None if unknown else True


class _AnyOf:
    __slots__ = ("options",)

    def __init__(self, options: list[Evaluator]) -> None:
        self.options = options

    def passes(self, t: float, margin: float) -> bool | None:
        unknown = False
        for option in self.options:
            result = option(t, margin)
            if result is True:
                return True
            if result is None:
                unknown = True
        return None if unknown else False


class _Not:
    __slots__ = ("inner",)

    def __init__(self, inner: Evaluator) -> None:
        self.inner = inner

    def passes(self, t: float, margin: float) -> bool | None:
        result = self.inner(t, -margin)
        return None if result is None else not result


class Leaf:
    """One comparison: metric (value or rolling aggregate) op limit."""

    __slots__ = ("aggregate", "compare_to", "limit", "metric", "op", "shift", "slot")

    def __init__(
        self,
        metric: str,
        slot: MetricSlot,
        aggregate: RollingAggregate | None,
        op: str,
        limit: float,
    ) -> None:
        self.metric = metric
        self.slot = slot
        self.aggregate = aggregate
        self.op = op
        self.limit = limit
        # ("within": the placeholder leaf of a threshold, which never calls `passes`.)
        self.compare_to = _OPERATORS.get(op, _OPERATORS["=="])
        # The margin moves the limit towards compliance: up for >, >=; down for <, <=.
        self.shift = 1.0 if op in (">=", ">") else -1.0 if op in ("<=", "<") else 0.0

    def current(self, t: float) -> float | None:
        slot = self.slot
        if t >= slot.until:
            return None
        return self.aggregate.current if self.aggregate is not None else slot.value

    def excess(self, value: float) -> float:
        """How far `value` lies on the failing side of the limit (for the worst value)."""
        if self.op in (">=", ">"):
            return self.limit - value
        if self.op in ("<=", "<"):
            return value - self.limit
        return 0.0

    def passes(self, t: float, margin: float) -> bool | None:
        slot = self.slot
        if t >= slot.until:
            return None
        aggregate = self.aggregate
        value = slot.value if aggregate is None else aggregate.current
        return self.compare_to(value, self.limit + self.shift * margin)


_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}
