"""A device's recent dedupe keys, kept in arrays.

A reading is a duplicate when its sequence number was taken before, or when every metric it
carries was already seen at its event time (a device that sends no sequence numbers, or sends
its metrics in several messages of one instant). The engine remembers the keys of a device's
last `MEMORY` instants; older keys are forgotten (a reading that old is late anyway)."""

from __future__ import annotations

from array import array
from collections.abc import Collection, Mapping
from typing import Any, Final

from rules._slots import NEG_INF

# Instants remembered a device (32 to 64: the older half goes when it passes 64). A duplicate is
# a redelivery of a message whose commit's acknowledgement the broker never got: one of the
# device's last messages, a batch or two (0.2 s each) at most, or what the replay after a crash
# judged again. An older duplicate is reported as a late reading: never judged, its stored row
# already there, at most a re-judge of the site. The keys are in memory as long as the service
# runs and in every checkpoint of the device's part: with 512, after 600 readings a device's
# state had grown by 68.7 KiB and its part to 17.7 KB (bench/long_run.py).
MEMORY: Final = 64


class DedupeKeys:
    """The keys of a device's recent readings. Arrays of machine numbers, not dicts of boxed
    ones: 64 instants in two dicts (seq -> ts, ts -> metrics) were about 9 KiB of every device
    that had run a while, and two empty dicts 0.4 KiB of every device (issue 24). Readings come
    mostly in order, so a key above every one kept is new without a search; an older one is
    searched for among at most `MEMORY`."""

    __slots__ = ("newest_seq", "newest_ts", "partial", "seq_ts", "seqs", "times")

    def __init__(self) -> None:
        self.seqs = array("q")  # sequence numbers taken (at most 2**63 - 1: the decoder's bound)
        self.seq_ts = array("d")  # the event time of each, which decides when it is forgotten
        self.times = array("d")  # event times at which metrics were seen
        # The instants at which only some of the device's metrics were seen, with those (rare:
        # made when first needed).
        self.partial: dict[float, Collection[str]] | None = None
        self.newest_seq = -1
        self.newest_ts = NEG_INF

    def has_seq(self, seq: int) -> bool:
        return seq <= self.newest_seq and seq in self.seqs

    def seen_at(self, ts: float, every: Collection[str]) -> Collection[str] | None:
        """The metrics seen at `ts`, None when none were (`every`: all of the device's)."""
        times = self.times
        if ts > self.newest_ts or not times:
            return None
        # The newest instant first: several messages of one instant come one after another.
        if times[len(times) - 1] != ts and ts not in times:
            return None
        partial = self.partial
        if partial is not None:
            found = partial.get(ts)
            if found is not None:
                return found
        return every

    def add_time(self, ts: float, some: Collection[str] | None) -> None:
        """Metrics were first seen at `ts`: all of the device's, or only `some`."""
        self.times.append(ts)
        if ts > self.newest_ts:
            self.newest_ts = ts
        if some is not None:
            self._set_partial(ts, some)

    def widen(self, ts: float, seen: Collection[str], complete: bool) -> None:
        """The metrics seen at `ts` (already seen at) are now `seen`; `complete` when that is all
        of the device's."""
        if complete:
            if self.partial is not None:
                self.partial.pop(ts, None)
        else:
            self._set_partial(ts, seen)

    def add_seq(self, seq: int, ts: float) -> None:
        self.seqs.append(seq)
        self.seq_ts.append(ts)
        if seq > self.newest_seq:
            self.newest_seq = seq

    def __len__(self) -> int:
        """The instants remembered."""
        return len(self.times)

    def forget_older_half(self) -> None:
        """Keeps the keys of the newest half of the instants remembered."""
        cutoff = sorted(self.times)[len(self.times) // 2]
        self.times = array("d", [ts for ts in self.times if ts >= cutoff])
        kept = [index for index, ts in enumerate(self.seq_ts) if ts >= cutoff]
        self.seqs = array("q", [self.seqs[index] for index in kept])
        self.seq_ts = array("d", [self.seq_ts[index] for index in kept])
        self.newest_seq = max(self.seqs, default=-1)
        if self.partial is not None:
            partial = {ts: seen for ts, seen in self.partial.items() if ts >= cutoff}
            self.partial = partial or None

    def times_json(self) -> dict[str, list[Any]]:
        """The instants in a checkpoint: those at which every metric was seen (`all`, listed
        without them: sorting thousands of small sets made checkpoints slow), the others with
        theirs (`some`)."""
        partial = self.partial or {}
        return {
            "all": [ts for ts in self.times if ts not in partial],
            "some": [[ts, sorted(seen)] for ts, seen in partial.items()],
        }

    def seqs_json(self) -> list[list[Any]]:
        """The sequence numbers in a checkpoint, and beside them their event times."""
        return [list(self.seqs), list(self.seq_ts)]

    def load(self, times: Mapping[str, Any], seqs: list[list[Any]]) -> None:
        """Takes the keys of a checkpoint (`times_json`, `seqs_json`)."""
        # The decoded lists copied into the arrays as they are, newest found on the way: mapped
        # through float() into new arrays and max() of each, a device's keys took ~17 k
        # instructions of a restore (a call of the array type alone ~2 k).
        every: list[Any] = times["all"]
        _refill(self.times, every)
        self.partial = None
        newest = NEG_INF
        for ts in every:
            if ts > newest:
                newest = float(ts)
        self.newest_ts = newest
        for ts, seen in times["some"]:
            self.add_time(float(ts), set(seen))
        numbers, their_ts = seqs
        if len(numbers) != len(their_ts):
            raise ValueError("seen_seqs: as many event times as sequence numbers")
        _refill(self.seqs, numbers)
        _refill(self.seq_ts, their_ts)
        newest_seq = -1
        for seq in numbers:
            if seq > newest_seq:
                newest_seq = int(seq)
        self.newest_seq = newest_seq

    def _set_partial(self, ts: float, seen: Collection[str]) -> None:
        if self.partial is None:
            self.partial = {}
        self.partial[ts] = seen


def _refill(into: array[Any], values: list[Any]) -> None:
    """`into` holding `values` (numbers; anything else is a TypeError) and nothing else."""
    if len(into):
        del into[:]
    into.fromlist(values)
