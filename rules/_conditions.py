"""Conditions (comparisons, all / any / not) compiled into one Python function each.

An evaluator takes (t, margin) and returns True, False or None (unknown). `margin` is the
hysteresis margin: a comparison must pass by that much (towards compliance); under `not` the
sign flips, because the inner condition must then fail by that much. Unknown follows Kleene
logic: `all` is False if any part is False, else unknown if any part is unknown.

A condition becomes the source text of one function (a single expression per margin case,
parts evaluated left to right and skipped once the verdict is settled, as `any`/`all` do),
compiled once per distinct shape and instantiated per instance with its slots, aggregates and
limits as argument defaults. At 1,000 rooms every object read per reading is a cache miss: a
tree of node objects, their part lists and a call per node cost ~15 objects per evaluation, the
function only itself, its defaults tuple and the slots and aggregates it reads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import CodeType, FunctionType
from typing import cast

from rules._slots import MetricSlot, RollingAggregate
from rules.clause import AllOf, Comparison, Condition, Not

Evaluator = Callable[[float, float], bool | None]
SlotFor = Callable[[str], MetricSlot]
ValueFor = Callable[[str, float | str], float]


def compiled_condition(
    node: Condition, leaves: Sequence[Leaf], memo: dict[tuple[int, tuple[int, ...]], Compiled]
) -> Compiled:
    """The function body of `node` over its comparisons `leaves` (`condition_leaves`) and
    where each of its defaults comes from. `memo` (kept by the caller while `node` lives: it is
    keyed by the node's identity) holds them by which of the leaves share a slot, aggregate or
    limit: binding a clause to 100,000 devices writes its source once, not once per device."""
    key = (id(node), _sharing(leaves))
    compiled = memo.get(key)
    if compiled is None:
        compiled = memo[key] = _compile(node, leaves)
    return compiled


def evaluator(compiled: Compiled, leaves: Sequence[Leaf]) -> Evaluator:
    """The function of `compiled` reading the slots, aggregates and limits of `leaves` (those
    of one subject, in the order `condition_leaves` gives them)."""
    code, recipe = compiled
    values = tuple(_default(leaves[index], kind) for kind, index in recipe)
    return cast(Evaluator, FunctionType(code, _GLOBALS, "passes", values))


# A function body and, for each of its defaults, (kind, leaf index): "s" the leaf's slot, "a"
# its aggregate, "l" its limit.
Compiled = tuple[CodeType, tuple[tuple[str, int], ...]]

# Compiled function bodies by source text: one per distinct condition shape.
_CODE: dict[str, CodeType] = {}

# The globals of every compiled condition, one dictionary for all: their bodies read only their
# arguments and defaults (a dictionary each was 80 bytes of every device with a condition).
_GLOBALS: dict[str, object] = {}


def condition_leaves(
    node: Condition, slot_for: SlotFor, value_for: ValueFor, leaves: list[Leaf]
) -> None:
    """The comparisons of `node`, left to right, as the expressions read them."""
    if isinstance(node, Comparison):
        slot = slot_for(node.metric)
        aggregate = (
            slot.aggregate(node.aggregate.fn, node.aggregate.window) if node.aggregate else None
        )
        leaves.append(
            Leaf(node.metric, slot, aggregate, node.op, value_for(node.metric, node.value))
        )
    elif isinstance(node, Not):
        condition_leaves(node.not_, slot_for, value_for, leaves)
    else:
        for part in node.all if isinstance(node, AllOf) else node.any:
            condition_leaves(part, slot_for, value_for, leaves)


def _sharing(leaves: Sequence[Leaf]) -> tuple[int, ...]:
    """Which leaves share a slot, an aggregate, a limit (the first leaf holding the same
    object, -1 for no aggregate): what the source text depends on besides the condition."""
    firsts: dict[int, int] = {}
    pattern: list[int] = []
    # Held until the end: compiled, a limit is boxed anew at each read, and an identity is
    # only unique while its object lives.
    alive: list[object] = []
    for index, leaf in enumerate(leaves):
        limit = leaf.limit
        alive.append(limit)
        pattern.append(firsts.setdefault(id(leaf.slot), index))
        aggregate = leaf.aggregate
        pattern.append(-1 if aggregate is None else firsts.setdefault(id(aggregate), index))
        pattern.append(firsts.setdefault(id(limit), index))
    return tuple(pattern)


def _compile(node: Condition, leaves: Sequence[Leaf]) -> Compiled:
    writer = _Writer(leaves)
    exact = writer.expression(node, None)
    writer.temps = 0  # the second expression reuses the names: only one of them runs
    writer.reused = 0  # and reads the same leaves again, in the same order
    with_margin = writer.expression(node, 1)
    names = ", ".join(writer.names)
    source = "\n".join(
        (f"def passes(t, m, {names}):", f"    if m: return {with_margin}", f"    return {exact}")
    )
    code = _CODE.get(source)
    if code is None:
        namespace: dict[str, object] = {}
        exec(compile(source, "<condition>", "exec"), namespace)
        code = _CODE[source] = cast(FunctionType, namespace["passes"]).__code__
    return code, tuple(writer.sources)


def _default(leaf: Leaf, kind: str) -> object:
    if kind == "s":
        return leaf.slot
    if kind == "a":
        return leaf.aggregate
    return leaf.limit


class _Writer:
    """Writes a condition as one expression over named defaults (slots, aggregates, limits)."""

    def __init__(self, leaves: Sequence[Leaf]) -> None:
        self.leaves = leaves
        self.names: list[str] = []
        self.sources: list[tuple[str, int]] = []  # of each default: (kind, leaf index)
        # The defaults themselves, held while writing: names go by identity (see _sharing).
        self.values: list[object] = []
        self.name_of: dict[int, str] = {}
        self.temps = 0
        self.reused = 0  # leaves read so far by the expression being written

    def bind(self, prefix: str, value: object, leaf: int) -> str:
        name = self.name_of.get(id(value))
        if name is None:
            name = self.name_of[id(value)] = f"{prefix}{len(self.names)}"
            self.names.append(name)
            self.sources.append((prefix, leaf))
            self.values.append(value)
        return name

    def temp(self) -> str:
        self.temps += 1
        return f"r{self.temps}"

    def expression(self, node: Condition, sign: int | None) -> str:
        """`sign`: None when the margin is zero (limits as they are), else +1 or -1 (under an
        odd number of `not`s) for the direction the margin moves the limits in."""
        if isinstance(node, Comparison):
            return self.comparison(sign)
        if isinstance(node, Not):
            inner = self.expression(node.not_, None if sign is None else -sign)
            result = self.temp()
            return f"(None if ({result} := {inner}) is None else not {result})"
        parts = node.all if isinstance(node, AllOf) else node.any
        settles = "False" if isinstance(node, AllOf) else "True"
        otherwise = "True" if isinstance(node, AllOf) else "False"
        results = []
        text = ""
        for part in parts:
            result = self.temp()
            results.append(result)
            inner = self.expression(part, sign)
            text += f"({settles} if ({result} := {inner}) is {settles} else "
        unknown = " or ".join(f"{result} is None" for result in results)
        return f"{text}(None if {unknown} else {otherwise}){')' * len(parts)}"

    def comparison(self, sign: int | None) -> str:
        index = self.reused  # the leaves are in the order the expression reads them
        leaf = self.leaves[index]
        self.reused += 1
        slot_name = self.bind("s", leaf.slot, index)
        value = (
            f"{slot_name}.value"
            if leaf.aggregate is None
            else f"{self.bind('a', leaf.aggregate, index)}.current"
        )
        limit = self.bind("l", leaf.limit, index)
        if sign is not None:
            # The margin moves the limit towards compliance: up for >, >=; down for <, <=
            # (the arithmetic of limit + shift * margin, term for term).
            shift = leaf.shift * sign
            limit = (
                f"({limit} + m)"
                if shift > 0
                else f"({limit} - m)"
                if shift < 0
                else f"({limit} + 0.0 * m)"
            )
        assert leaf.op in _OPERATORS  # the text of a comparison operator, nothing else
        return f"(None if t >= {slot_name}.until else {value} {leaf.op} {limit})"


class Leaf:
    """One comparison: metric (value or rolling aggregate) op limit."""

    __slots__ = ("aggregate", "limit", "metric", "op", "shift", "slot")

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
        self.op = op  # ("within": the placeholder leaf of a threshold, never compiled)
        self.limit = limit
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


_OPERATORS = frozenset((">=", ">", "<=", "<", "==", "!="))
