"""Re-judging a site from an earlier snapshot: how late input gets judged after all (issue 17).

The engine sets aside input older than its lateness as a `LateReading`: time already made final
is not rewritten on the fly. But the engine is deterministic and every input is stored, so the
verdicts that in-order delivery would have given can be recomputed: restore the engine from a
snapshot taken before the late timestamp (`horizon(header) <= late ts`), feed it every input
taken since that snapshot in event-time order (the late one included), and advance it to the
live engine's time. What it emits from then on replaces what was emitted before:

- compliance intervals: per clause instance, the stored intervals starting at or after the
  start of the run it was in at the snapshot (`Rejudged.replace_from`) are replaced by the
  intervals of the replay (every interval emitted after a snapshot starts there or later);
- violations: per instance, those starting at or after that run start are exactly
  `Rejudged.spans()`; any other recorded there should not exist.

The re-judged engine then takes the live engine's place. Pure: no I/O (ingest/ reads the
snapshots and the inputs, store/ and alerts/ apply the corrections).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rules.clause import ClauseVersion
from rules.engine import SiteEngine
from rules.runs import open_runs
from rules.site import SiteModel
from rules.verdicts import (
    ComplianceInterval,
    Event,
    LateReading,
    Output,
    ViolationEnded,
    ViolationStarted,
)

NEG_INF = float("-inf")

# A reading as stored: device, ts, seq, metrics.
StoredInput = tuple[str, float, int | None, Mapping[str, float]] | Event
# One clause version judging one subject: clause id, version, space, device ('' for a space).
InstanceKey = tuple[str, int, str, str]


def input_ts(item: StoredInput) -> float:
    return item.ts if isinstance(item, Event) else item[1]


def horizon(header: Mapping[str, Any], lateness: float) -> float:
    """The oldest event time an engine restored from a snapshot with this header still judges:
    input before it is late (behind its clock, or behind what its buffer has released)."""
    times = [header.get(k) for k in ("now", "max_ts", "max_event_ts")]
    known = [float(t) for t in times if t is not None]
    newest = max(known) - lateness if known else NEG_INF
    clock = header.get("clock")
    return max(newest, NEG_INF if clock is None else float(clock))


@dataclass(frozen=True, slots=True)
class Span:
    """A violation as in-order judging records it."""

    started: ViolationStarted | None  # None: begun before the snapshot (already recorded)
    started_at: float
    ended: ViolationEnded | None


@dataclass
class Rejudged:
    engine: SiteEngine
    outputs: list[Output]
    # Per instance: the start of the run it was in at the snapshot (-inf: not started yet).
    replace_from: dict[InstanceKey, float] = field(default_factory=dict)
    # Instances violating at the snapshot (their open violation began at `replace_from`).
    violating: set[InstanceKey] = field(default_factory=set)

    def intervals(self) -> list[ComplianceInterval]:
        return [o for o in self.outputs if isinstance(o, ComplianceInterval)]

    def late(self) -> list[LateReading]:
        """Input older than the snapshot: still not judged (it predates the history kept)."""
        return [o for o in self.outputs if isinstance(o, LateReading)]

    def spans(self) -> dict[InstanceKey, list[Span]]:
        """Per instance, the violations starting at or after `replace_from`, as in-order
        judging would have recorded them (an end of None: still open)."""
        spans: dict[InstanceKey, list[Span]] = {}
        open_: dict[tuple[InstanceKey, str, float], int] = {}
        carried: dict[tuple[InstanceKey, float], int] = {}
        for key in self.violating:
            spans.setdefault(key, []).append(Span(None, self.replace_from[key], None))
            carried[(key, self.replace_from[key])] = len(spans[key]) - 1
        for output in self.outputs:
            if isinstance(output, ViolationStarted):
                key = instance_key(output)
                spans.setdefault(key, []).append(Span(output, output.started_at, None))
                open_[(key, output.kind, output.started_at)] = len(spans[key]) - 1
            elif isinstance(output, ViolationEnded):
                key = instance_key(output)
                index = open_.pop((key, output.kind, output.started_at), None)
                if index is None:
                    index = carried.pop((key, output.started_at), None)
                if index is None:
                    # The end of a violation begun before the run at the snapshot (a quota's
                    # warning): not replaced, recorded as usual.
                    continue
                span = spans[key][index]
                spans[key][index] = Span(span.started, span.started_at, output)
        return spans


def _start_held(state: Mapping[str, Any]) -> bool:
    """Whether the violation an instance's state is in was held at its instant (begun at the
    input being judged, no `for`), not yet recorded: re-judged, it is recorded when it happens
    and is gone when input of that instant undoes it, so it is no open violation to carry."""
    held = state.get("held")
    return held is not None and "ended_at" not in held


def instance_key(output: ViolationStarted | ViolationEnded | ComplianceInterval) -> InstanceKey:
    return (
        output.clause.clause_id,
        output.clause.version,
        output.subject.space,
        output.subject.device or "",
    )


def rejudge(
    site: SiteModel,
    clauses: Sequence[ClauseVersion],
    snapshot: Mapping[str, Any],
    inputs: Iterable[StoredInput],
    now: float,
    *,
    lateness: float,
    standards: Mapping[str, str] | None = None,
    last_done: Mapping[tuple[str, str], float] | None = None,
) -> Rejudged:
    """An engine restored from `snapshot` (header and every part) that has taken `inputs` (every
    input taken since the snapshot, in the order taken) in event-time order and advanced to
    `now`, with what it emitted."""
    engine = SiteEngine.restore(
        site, clauses, snapshot, lateness=lateness, standards=standards, last_done=last_done
    )
    replace_from: dict[InstanceKey, float] = {}
    violating: set[InstanceKey] = set()
    for part in snapshot["parts"].values():
        instances = part.get("instances") or {}
        for run in open_runs(instances):
            key = (run.clause_id, run.version, run.space, run.device)
            replace_from[key] = run.start
            if run.status == "violating" and not _start_held(instances["|".join(map(str, key))]):
                violating.add(key)
    for ref, subject in engine.bindings():
        replace_from.setdefault(
            (ref.clause_id, ref.version, subject.space, subject.device or ""), NEG_INF
        )
    # Stable: inputs of one instant keep the order they were taken in.
    for item in sorted(inputs, key=input_ts):
        ts = input_ts(item)
        if isinstance(item, Event):
            engine.observe_event(item)
        else:
            engine.observe(item[0], ts, item[2], item[3])
        engine.advance(min(ts, now))
    engine.advance(now)
    return Rejudged(engine, engine.drain(), replace_from, violating)
