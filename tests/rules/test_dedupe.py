"""A device's dedupe keys in arrays (`rules._dedupe`) against the plain model they replaced:
a dict of sequence numbers to event times and a dict of event times to the metrics seen."""

from __future__ import annotations

from collections.abc import Collection

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules._dedupe import MEMORY, DedupeKeys

EVERY = frozenset(("a", "b", "c"))


class Model:
    """What the engine kept before: the keys of the newest instants, in dicts."""

    def __init__(self) -> None:
        self.seqs: dict[int, float] = {}
        self.times: dict[float, Collection[str]] = {}

    def take(self, ts: float, seq: int | None, metrics: frozenset[str]) -> frozenset[str]:
        if seq is not None and seq in self.seqs:
            return frozenset()
        seen = self.times.get(ts)
        fresh = metrics if seen is None else metrics - set(seen)
        if not fresh:
            return frozenset()
        self.times[ts] = fresh if seen is None else {*seen, *fresh}
        if seq is not None:
            self.seqs[seq] = ts
        if len(self.times) > MEMORY:
            cutoff = sorted(self.times)[len(self.times) // 2]
            self.times = {t: m for t, m in self.times.items() if t >= cutoff}
            self.seqs = {s: t for s, t in self.seqs.items() if t >= cutoff}
        return fresh


def take(keys: DedupeKeys, ts: float, seq: int | None, metrics: frozenset[str]) -> frozenset[str]:
    """What `SiteEngine.observe` does with the keys: the metrics of the reading to judge."""
    if seq is not None and keys.has_seq(seq):
        return frozenset()
    seen = keys.seen_at(ts, EVERY)
    if seen is None:
        keys.add_time(ts, None if metrics == EVERY else metrics)
        fresh = metrics
    else:
        fresh = metrics - set(seen)
        if not fresh:
            return frozenset()
        widened = {*seen, *fresh}
        keys.widen(ts, widened, len(widened) == len(EVERY))
    if seq is not None:
        keys.add_seq(seq, ts)
    if len(keys) > MEMORY:
        keys.forget_older_half()
    return fresh


readings = st.lists(
    st.tuples(
        # Mostly in order, with redeliveries and stragglers: an offset back from the newest.
        st.integers(min_value=-3, max_value=3),
        st.one_of(st.none(), st.integers(min_value=0, max_value=400)),
        st.frozensets(st.sampled_from(sorted(EVERY)), min_size=1),
        st.booleans(),
    ),
    max_size=400,
)


@settings(max_examples=300, deadline=None)
@given(readings)
def test_the_arrays_dedupe_as_the_dicts_did(
    steps: list[tuple[int, int | None, frozenset[str], bool]],
) -> None:
    model, keys = Model(), DedupeKeys()
    clock = 0
    for offset, seq, metrics, restart in steps:
        clock = max(0, clock + offset)
        if restart:  # a restart in between: the keys through a checkpoint
            saved = orjson.loads(orjson.dumps([keys.times_json(), keys.seqs_json()]))
            keys = DedupeKeys()
            keys.load(saved[0], saved[1])
        assert take(keys, float(clock), seq, metrics) == model.take(float(clock), seq, metrics)
        assert len(keys) == len(model.times) <= MEMORY
        assert sorted(keys.seqs) == sorted(model.seqs)


def test_a_redelivered_sequence_number_is_a_duplicate_whatever_it_carries() -> None:
    keys = DedupeKeys()
    assert take(keys, 10.0, 7, EVERY) == EVERY
    assert take(keys, 11.0, 7, frozenset({"a"})) == frozenset()
    assert take(keys, 9.0, 6, EVERY) == EVERY  # older, and new: judged (as late, if it is)


def test_metrics_of_one_instant_in_several_messages_are_each_taken_once() -> None:
    keys = DedupeKeys()
    assert take(keys, 10.0, None, frozenset({"a"})) == {"a"}
    assert take(keys, 10.0, None, frozenset({"a", "b"})) == {"b"}
    assert keys.times_json() == {"all": [], "some": [[10.0, ["a", "b"]]]}
    assert take(keys, 10.0, None, EVERY) == {"c"}
    assert keys.times_json() == {"all": [10.0], "some": []}
    assert take(keys, 10.0, None, EVERY) == frozenset()


def test_the_keys_of_the_older_half_are_forgotten() -> None:
    keys = DedupeKeys()
    for i in range(MEMORY + 1):
        take(keys, float(i), i, EVERY)
    assert len(keys) == MEMORY // 2 + 1
    assert min(keys.times) == MEMORY // 2 and min(keys.seqs) == MEMORY // 2
    assert take(keys, 0.0, 0, EVERY) == EVERY  # forgotten: the engine reports it late


def test_a_checkpoint_whose_sequence_numbers_lack_their_times_is_refused() -> None:
    with pytest.raises(ValueError, match="as many event times as sequence numbers"):
        DedupeKeys().load({"all": [], "some": []}, [[1, 2], [10.0]])
