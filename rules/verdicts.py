"""What goes into the engine and what comes out of it.

Times are float seconds since the Unix epoch (UTC) inside the engine: cheap to compare on the
hot path. Conversion to and from datetimes happens at the boundaries (ingest, storage, api).
Every output is a frozen, slotted dataclass so it can cross threads and be logged safely.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Status = Literal["compliant", "violating", "not_assessable", "outside_schedule"]
AlertKind = Literal["violation", "warning", "data_quality"]


@dataclass(frozen=True, slots=True)
class Event:
    """An observed event (cleaning.completed, inspection.done, refuel) in event time."""

    device: str
    ts: float
    type: str
    space: str | None = None
    actor: str | None = None
    seq: int | None = None
    attrs: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ClauseRef:
    """The clause version a verdict was judged under (provenance travels with every output)."""

    clause_id: str
    version: int
    content_hash: str
    standard: str
    number: str
    title: str
    domain: str
    severity: str
    key: bool


@dataclass(frozen=True, slots=True)
class Subject:
    """Who or what is judged: a device's metric(s) in a space, or a space (obligations)."""

    site: str
    space: str
    device: str | None = None


@dataclass(frozen=True, slots=True)
class Evidence:
    ts: float
    metric: str
    value: float
    device: str


@dataclass(frozen=True, slots=True)
class ViolationStarted:
    """A violation (or warning, or data-quality fault) confirmed. `started_at` is when the
    condition began; `confirmed_at` is the event time at which it had held long enough."""

    clause: ClauseRef
    subject: Subject
    kind: AlertKind
    started_at: float
    confirmed_at: float
    worst_value: float | None
    unit: str | None
    reason: str
    params: dict[str, float]
    evidence: tuple[Evidence, ...]
    # The metric `worst_value` and `unit` are of (a compound condition reads several).
    metric: str | None = None


@dataclass(frozen=True, slots=True)
class ViolationEnded:
    clause: ClauseRef
    subject: Subject
    kind: AlertKind
    started_at: float
    ended_at: float
    worst_value: float | None


@dataclass(frozen=True, slots=True)
class ComplianceInterval:
    """[start, end) of one status for one clause version and subject. Intervals of a subject
    never overlap and are emitted once final (behind the watermark)."""

    clause: ClauseRef
    subject: Subject
    start: float
    end: float
    status: Status


@dataclass(frozen=True, slots=True)
class LateReading:
    """A reading that arrived after its subject's watermark had passed it by more than the
    lateness: stored, but it does not rewrite closed verdicts."""

    site: str
    device: str
    ts: float
    metric: str


@dataclass(frozen=True, slots=True)
class RegisterReset:
    """A cumulative register went backwards: a reset or a replacement, taken as a new baseline."""

    site: str
    device: str
    metric: str
    ts: float
    previous: float
    value: float


Output = ViolationStarted | ViolationEnded | ComplianceInterval | LateReading | RegisterReset
