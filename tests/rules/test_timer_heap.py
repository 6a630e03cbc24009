"""The engine's timer heap: instances come out in (due, uid) order, each at most once, whatever
the order in which they were added, moved earlier and taken out."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from rules._instances import Instance, TimerHeap
from rules.engine import SiteEngine
from tests.rules.conftest import TEMPERATURE, make_clause, make_site, sensor

DEVICES = 12


def instances() -> list[Instance]:
    """Some real instances, to be handed around by a heap of the test's own."""
    devices = [sensor(f"d{i}", "o1", temperature=TEMPERATURE) for i in range(DEVICES)]
    site = make_site(devices=devices)
    clause = make_clause({"kind": "threshold", "metric": "temperature", "max": 28})
    found: list[Instance] = SiteEngine(site, [clause], lateness=0.0)._instances
    for instance in found:
        instance.heap_due = math.inf
        instance.heap_pos = -1
    return found


# An operation: push instance i at due d (when earlier than its due), or pop the first.
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.integers(0, DEVICES - 1), st.sampled_from([-math.inf, 0.0, 1.0, 2.5, 7.0])),
        st.just(None),
    ),
    max_size=80,
)


@given(operations=OPERATIONS)
def test_instances_come_out_in_due_then_uid_order_each_once(
    operations: list[tuple[int, float] | None],
) -> None:
    pool = instances()
    heap = TimerHeap()
    model: dict[int, float] = {}  # uid -> due of the instances in the heap
    by_uid = {instance.uid: instance for instance in pool}
    for operation in operations:
        if operation is None:
            if not model:
                continue
            first = heap.pop()
            expected = min(model, key=lambda uid: (model[uid], uid))
            assert (first.uid, first.heap_due) == (expected, model.pop(expected))
            assert first.heap_pos == -1
            first.heap_due = math.inf  # as the engine does with what it pops
        else:
            index, due = operation
            instance = pool[index]
            if due < instance.heap_due:
                heap.push(instance, due)
                model[instance.uid] = due
        assert len(heap.items) == len(model)
        assert all(heap.items[i].heap_pos == i for i in range(len(heap.items)))
        assert {i.uid for i in heap.items} == model.keys()
    drained = []
    while heap.items:
        drained.append(heap.pop().uid)
    assert drained == sorted(model, key=lambda uid: (model[uid], uid))
    assert all(by_uid[uid].heap_pos == -1 for uid in model)


def test_a_heap_filled_at_once_comes_out_in_due_then_uid_order() -> None:
    pool = instances()
    dues = [7.0, -math.inf, 2.5, 2.5, 0.0, 1.0, 7.0, 0.0, -math.inf, 3.0, 2.5, 1.0]
    for instance, due in zip(pool, dues, strict=True):
        instance.heap_due = due
    filled = TimerHeap()
    filled.fill(list(reversed(pool)))
    order = [filled.pop().uid for _ in pool]
    assert order == [i.uid for i in sorted(pool, key=lambda i: (i.heap_due, i.uid))]
    filled.fill(pool)
    filled.clear()
    assert filled.items == [] and all(instance.heap_pos == -1 for instance in pool)
