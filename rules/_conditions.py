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
    """`leaves` collects every comparison (for evidence and routing)."""
    if isinstance(node, Comparison):
        slot = slot_for(node.metric)
        aggregate = (
            slot.aggregate(node.aggregate.fn, node.aggregate.window) if node.aggregate else None
        )
        leaf = Leaf(node.metric, slot, aggregate, node.op, value_for(node.metric, node.value))
        leaves.append(leaf)
        return leaf.evaluator()
    if isinstance(node, AllOf):
        parts = [compile_condition(c, slot_for, value_for, leaves) for c in node.all]

        def all_of(t: float, margin: float) -> bool | None:
            unknown = False
            for part in parts:
                result = part(t, margin)
                if result is False:
                    return False
                if result is None:
                    unknown = True
            return None if unknown else True

        return all_of
    if isinstance(node, AnyOf):
        options = [compile_condition(c, slot_for, value_for, leaves) for c in node.any]

        def any_of(t: float, margin: float) -> bool | None:
            unknown = False
            for option in options:
                result = option(t, margin)
                if result is True:
                    return True
                if result is None:
                    unknown = True
            return None if unknown else False

        return any_of
    assert isinstance(node, Not)
    inner = compile_condition(node.not_, slot_for, value_for, leaves)

    def negation(t: float, margin: float) -> bool | None:
        result = inner(t, -margin)
        return None if result is None else not result

    return negation


class Leaf:
    """One comparison: metric (value or rolling aggregate) op limit."""

    __slots__ = ("aggregate", "limit", "metric", "op", "slot")

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

    def evaluator(self) -> Evaluator:
        slot, aggregate, limit = self.slot, self.aggregate, self.limit
        compare_to = _OPERATORS[self.op]
        # The margin moves the limit towards compliance: up for >, >=; down for <, <=.
        shift = 1.0 if self.op in (">=", ">") else -1.0 if self.op in ("<=", "<") else 0.0
        # Two flat closures (no nested calls) because this runs for nearly every reading.
        if aggregate is None:

            def compare(t: float, margin: float) -> bool | None:
                if t >= slot.until:
                    return None
                return compare_to(slot.value, limit + shift * margin)

            return compare

        def compare_aggregate(t: float, margin: float) -> bool | None:
            if t >= slot.until:
                return None
            return compare_to(aggregate.current, limit + shift * margin)

        return compare_aggregate


_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}
