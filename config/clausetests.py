"""Clause tests as data, in the spirit of `promtool test rules`.

A clause test file names a clause file and a site (a file or inline), then lists cases: input
series in a compact notation, explicit readings and events, and the violations and compliance
statuses expected. `violations: []` asserts silence. Each case runs through the real engine
(`rules.engine.SiteEngine`) from a fresh state. The format is documented in
docs/config-formats.md ("Clause tests").

Series notation, one string per `device.metric`, one token per `interval` step:
  `25.1`        one sample
  `25.1x3`      three samples of 25.1 (note: promtool's `x3` means four)
  `100+5x4`     four samples 100, 105, 110, 115 (also `a-bxn`)
  `_`, `_x10`   one or ten steps without a sample (a gap)
  `cooling`     a named state of the metric from the site model (hvac_mode), also `coolingx5`
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from config.documents import (
    ConfigError,
    Loc,
    Problem,
    format_loc,
    read_yaml,
    validate_document,
)
from config.files import load_clause_file, load_site
from rules.clause import ClauseFile, ClauseVersion
from rules.durations import parse_duration
from rules.runs import open_runs as instance_runs
from rules.site import Id, MetricName, SiteModel, Strict
from rules.verdicts import (
    AlertKind,
    ComplianceInterval,
    Event,
    LateReading,
    Output,
    Status,
    Subject,
    ViolationEnded,
    ViolationStarted,
)


def _offset(value: object) -> float | dt.datetime:
    """A time in a case: an offset from the case's start ('90m', 5400) or an aware datetime."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("a datetime needs a UTC offset, e.g. 2026-07-01T09:00:00+08:00")
        return value
    if isinstance(value, str) and "T" in value:
        parsed = dt.datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError("a datetime needs a UTC offset, e.g. 2026-07-01T09:00:00+08:00")
        return parsed
    if isinstance(value, str | int | float):
        return parse_duration(value)
    raise ValueError("expected an offset such as '90m' or an aware datetime")


Offset = Annotated[float | dt.datetime, BeforeValidator(_offset)]
SERIES_KEY = re.compile(r"^([a-z0-9][a-z0-9_-]{0,63})\.([a-z][a-z0-9_]*)$")
_TOKEN = re.compile(r"^(?P<base>.+?)(?:x(?P<count>\d+))?$")
_RAMP = re.compile(r"^(?P<start>[-+]?\d+(?:\.\d+)?)(?P<step>[-+]\d+(?:\.\d+)?)$")

SeriesValue = float | str | None  # a number, a state name to resolve, or a gap


def parse_series(text: str) -> list[SeriesValue]:
    """The per-step values of a series string (see module docstring). Raises ValueError."""
    values: list[SeriesValue] = []
    for token in text.split():
        match = _TOKEN.match(token)
        if match is None:  # pragma: no cover - the pattern matches any non-empty token
            raise ValueError(f"cannot read {token!r}")
        base, count = match.group("base"), int(match.group("count") or 1)
        if count < 1:
            raise ValueError(f"{token!r}: a repeat count is at least 1")
        ramp = _RAMP.match(base)
        if base == "_":
            values.extend([None] * count)
        elif ramp:
            start, step = float(ramp.group("start")), float(ramp.group("step"))
            values.extend(round(start + i * step, 9) for i in range(count))
        else:
            try:
                number = float(base)
            except ValueError:
                if not re.fullmatch(r"[a-z][a-z0-9_-]*", base):
                    raise ValueError(
                        f"{token!r} is not a number, a ramp (100+5x4), a gap (_) or a state name"
                    ) from None
                values.extend([base] * count)
                continue
            if not math.isfinite(number):
                raise ValueError(f"{token!r}: values must be finite")
            values.extend([number] * count)
    return values


class TestReading(Strict):
    """An explicit reading, delivered when it `arrive`s (default: at its own time)."""

    at: Offset
    device: Id
    metrics: dict[MetricName, float | str] = Field(min_length=1)
    seq: int | None = Field(default=None, ge=0)
    arrive: Offset | None = None


class TestEvent(Strict):
    at: Offset
    device: Id
    type: str = Field(pattern=r"^[a-z][a-z0-9_.-]*$")
    space: Id | None = None
    actor: str | None = None
    seq: int | None = Field(default=None, ge=0)
    attrs: dict[str, Any] = {}
    arrive: Offset | None = None


class ExpectedViolation(Strict):
    """A violation (or warning, or data-quality fault) expected in the run. `end: null`: still
    open when the run ends. `device` / `space` select the subject; give at least one."""

    clause: str
    version: int | None = None
    device: Id | None = None
    space: Id | None = None
    kind: AlertKind = "violation"
    start: Offset
    end: Offset | None = None

    @model_validator(mode="after")
    def _subject(self) -> ExpectedViolation:
        if self.device is None and self.space is None:
            raise ValueError("name the subject: device, space or both")
        return self


class ExpectedStatus(Strict):
    """The compliance status of a clause (one version, or every version) for a subject at one
    time."""

    clause: str
    version: int | None = None
    device: Id | None = None
    space: Id | None = None
    at: Offset
    status: Status

    @model_validator(mode="after")
    def _subject(self) -> ExpectedStatus:
        if self.device is None and self.space is None:
            raise ValueError("name the subject: device, space or both")
        return self


class ClauseTestCase(Strict):
    name: str
    clauses: tuple[str, ...] = ()  # clause ids to run in this case; empty: the file's choice
    start: dt.datetime
    interval: Annotated[float, BeforeValidator(parse_duration)] = 60.0
    series: dict[str, str] = {}
    readings: tuple[TestReading, ...] = ()
    events: tuple[TestEvent, ...] = ()
    # Delivery order of the series: `swap_pairs` delivers each pair of time steps later one
    # first (both at the later time) - an out-of-order test; needs lateness >= interval.
    order: Literal["in_order", "swap_pairs"] = "in_order"
    duplicate: bool = False  # deliver every series reading twice (same seq): must change nothing
    lateness: Annotated[float, BeforeValidator(parse_duration)] | None = None
    end: Offset | None = None  # the engine is advanced to here; default: one step after the last
    violations: tuple[ExpectedViolation, ...] | None = None  # None: not checked; []: silence
    # Statuses are read from the final compliance intervals plus each subject's open run at
    # the end (the stretch before a still-pending `for` / `clear_for` is not final: not read).
    statuses: tuple[ExpectedStatus, ...] = ()
    late_readings: int | None = Field(default=None, ge=0)
    # Snapshot the engine, restore a new one from the snapshot's JSON and go on, at the first
    # delivery at or after this time: a restart must change nothing.
    restart_at: Offset | None = None
    # A known engine limitation this case documents: the case must fail, with this reason.
    xfail: str | None = None

    @field_validator("start")
    @classmethod
    def _aware(cls, value: dt.datetime) -> dt.datetime:
        if value.tzinfo is None:
            raise ValueError("start needs a UTC offset, e.g. 2026-07-01T09:00:00+08:00")
        return value

    @field_validator("interval")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("interval must be longer than zero")
        return value

    @field_validator("series")
    @classmethod
    def _series(cls, value: dict[str, str]) -> dict[str, str]:
        problems = []
        for key, text in value.items():
            if not SERIES_KEY.match(key):
                problems.append(f"series.{key}: a key is device.metric, e.g. th-201.temperature")
                continue
            try:
                parse_series(text)
            except ValueError as exc:
                problems.append(f"series.{key}: {exc}")
        if problems:
            # Paths are relative to the case; the loader re-roots them.
            raise ValueError("; ".join(problems))
        return value

    @model_validator(mode="after")
    def _expects_something(self) -> ClauseTestCase:
        if self.violations is None and not self.statuses and self.late_readings is None:
            raise ValueError(
                "a case must expect something: violations ([] for silence), statuses or "
                "late_readings"
            )
        return self

    def epoch(self, offset: float | dt.datetime) -> float:
        """An expectation's time as engine time (epoch seconds)."""
        if isinstance(offset, dt.datetime):
            return offset.timestamp()
        return self.start.timestamp() + offset


class ClauseTestFile(Strict):
    clause_file: str  # path relative to this file
    site_file: str | None = None  # path relative to this file ...
    site: SiteModel | None = None  # ... or the site inline
    clauses: tuple[str, ...] = ()  # clause ids to run; empty: every clause of the file
    lateness: Annotated[float, BeforeValidator(parse_duration)] = 0.0
    tests: tuple[ClauseTestCase, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_site(self) -> ClauseTestFile:
        if (self.site_file is None) == (self.site is None):
            raise ValueError("give exactly one of site_file (a path) or site (inline)")
        return self


@dataclass
class LoadedClauseTests:
    path: Path
    spec: ClauseTestFile
    site: SiteModel
    clause_file: ClauseFile
    versions: list[ClauseVersion] = field(default_factory=list)  # the clauses under test


def load_clause_test_file(path: str | Path) -> LoadedClauseTests:
    """A clause test file with its clause file and site, every reference checked. Raises
    ConfigError (problems in the clause or site file are reported under their own names)."""
    path = Path(path)
    doc = read_yaml(path)
    spec = validate_document(path, doc, ClauseTestFile)
    name = str(path)

    def problem(loc: Loc, message: str) -> Problem:
        return Problem(name, format_loc(loc), message, doc.line_of(loc))

    problems: list[Problem] = []
    site = spec.site
    if spec.site_file is not None:
        site_path = path.parent / spec.site_file
        if not site_path.is_file():
            problems.append(problem(("site_file",), f"no such file {site_path}"))
        else:
            try:
                site = load_site(site_path)
            except ConfigError as exc:
                problems.extend(exc.problems)
    clause_path = path.parent / spec.clause_file
    clause_file: ClauseFile | None = None
    if not clause_path.is_file():
        problems.append(problem(("clause_file",), f"no such file {clause_path}"))
    else:
        try:
            clause_file = load_clause_file(clause_path)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if site is None or clause_file is None:
        raise ConfigError(problems)
    for loc, message in _reference_problems(spec, site, clause_file):
        problems.append(problem(loc, message))
    if problems:
        raise ConfigError(problems)
    wanted = set(spec.clauses) or {c.id for c in clause_file.clauses}
    versions = [c for c in clause_file.clauses if c.id in wanted]
    return LoadedClauseTests(path, spec, site, clause_file, versions)


def _reference_problems(
    spec: ClauseTestFile, site: SiteModel, clause_file: ClauseFile
) -> list[tuple[Loc, str]]:
    found: list[tuple[Loc, str]] = []
    clause_ids = {c.id for c in clause_file.clauses}
    for j, clause_id in enumerate(spec.clauses):
        if clause_id not in clause_ids:
            found.append((("clauses", j), f"the clause file has no clause {clause_id!r}"))
    tested = set(spec.clauses) or clause_ids
    devices = {d.id: d for d in site.devices}
    spaces = {s.id for s in site.spaces}
    for i, case in enumerate(spec.tests):
        here: Loc = ("tests", i)
        for j, clause_id in enumerate(case.clauses):
            if clause_id not in tested:
                found.append(((*here, "clauses", j), f"clause {clause_id!r} is not under test"))
        in_case = set(case.clauses) or tested
        for key, text in case.series.items():
            device_id, metric = key.split(".", 1)
            device = devices.get(device_id)
            if device is None:
                found.append(((*here, "series", key), f"the site has no device {device_id!r}"))
                continue
            metric_spec = device.metrics.get(metric)
            if metric_spec is None:
                found.append(
                    ((*here, "series", key), f"device {device_id!r} reports no {metric!r}")
                )
                continue
            for value in parse_series(text):
                if isinstance(value, str) and value not in metric_spec.states:
                    found.append(
                        ((*here, "series", key), f"{metric!r} has no state named {value!r}")
                    )
                    break
        for j, reading in enumerate(case.readings):
            device = devices.get(reading.device)
            if device is None:
                found.append(
                    ((*here, "readings", j, "device"), f"the site has no device {reading.device!r}")
                )
                continue
            for metric, value in reading.metrics.items():
                metric_spec = device.metrics.get(metric)
                if metric_spec is None:
                    found.append(
                        (
                            (*here, "readings", j, "metrics", metric),
                            f"device {reading.device!r} reports no {metric!r}",
                        )
                    )
                elif isinstance(value, str) and value not in metric_spec.states:
                    found.append(
                        (
                            (*here, "readings", j, "metrics", metric),
                            f"{metric!r} has no state named {value!r}",
                        )
                    )
        for j, event in enumerate(case.events):
            if event.device not in devices:
                found.append(
                    ((*here, "events", j, "device"), f"the site has no device {event.device!r}")
                )
            if event.space is not None and event.space not in spaces:
                found.append(
                    ((*here, "events", j, "space"), f"the site has no space {event.space!r}")
                )
        expectations: list[tuple[str, ExpectedViolation | ExpectedStatus, int]] = [
            ("violations", v, j) for j, v in enumerate(case.violations or ())
        ] + [("statuses", s, j) for j, s in enumerate(case.statuses)]
        for key, expected, j in expectations:
            loc: Loc = (*here, key, j)
            if expected.clause not in in_case:
                found.append(((*loc, "clause"), f"clause {expected.clause!r} is not under test"))
            if expected.device is not None and expected.device not in devices:
                found.append(((*loc, "device"), f"the site has no device {expected.device!r}"))
            if expected.space is not None and expected.space not in spaces:
                found.append(((*loc, "space"), f"the site has no space {expected.space!r}"))
    return found


# ---- running cases through the engine ----


@dataclass
class CaseResult:
    """The outcome of one case: `failures` is empty when every expectation held."""

    file: Path
    name: str
    failures: list[str]
    outputs: list[Output]

    @property
    def ok(self) -> bool:
        return not self.failures

    def report(self) -> str:
        lines = [f"{self.file}: {self.name!r} failed:"]
        lines.extend(f"  {failure}" for failure in self.failures)
        return "\n".join(lines)


@dataclass(frozen=True)
class _Delivery:
    arrival: float
    device: str
    ts: float
    seq: int | None = None
    metrics: Mapping[str, float] | None = None  # a reading, or ...
    event: Event | None = None  # ... an event


def run_clause_test_file(path: str | Path) -> list[CaseResult]:
    """Loads a clause test file and runs every case. Raises ConfigError if the file is invalid."""
    loaded = load_clause_test_file(path)
    return [run_case(loaded, case) for case in loaded.spec.tests]


def run_case(loaded: LoadedClauseTests, case: ClauseTestCase) -> CaseResult:
    """Runs one case through a fresh `SiteEngine` and compares its outputs with the case."""
    from rules.engine import SiteEngine

    lateness = case.lateness if case.lateness is not None else loaded.spec.lateness
    versions = [v for v in loaded.versions if not case.clauses or v.id in case.clauses]
    standards = {v.id: loaded.clause_file.standard.code for v in versions}
    engine = SiteEngine(loaded.site, versions, lateness=lateness, standards=standards)
    deliveries, last = _deliveries(loaded.site, case)
    # Time starts at the case's start: obligations and staleness count from there.
    clock = case.start.timestamp()
    engine.advance(clock)
    restart = case.epoch(case.restart_at) if case.restart_at is not None else math.inf
    saved: dict[str, Any] = {}
    outputs: list[Output] = []
    for item in deliveries:
        if item.arrival > clock:
            engine.advance(item.arrival)
            clock = item.arrival
        if clock >= restart:
            # A service restart: state survives only as the JSON of its checkpoints.
            outputs.extend(engine.drain())
            saved = merge_checkpoint(saved, engine.snapshot_changes())
            engine = SiteEngine.restore(
                loaded.site, versions, saved, lateness=lateness, standards=standards
            )
            restart = math.inf
        if item.event is not None:
            engine.observe_event(item.event)
        else:
            assert item.metrics is not None
            engine.observe(item.device, item.ts, item.seq, item.metrics)
        if restart < math.inf:
            # As the service does: a checkpoint of the changed parts after every delivery.
            saved = merge_checkpoint(saved, engine.snapshot_changes())
    end = case.epoch(case.end) if case.end is not None else last + case.interval
    engine.advance(end)
    outputs.extend(engine.drain())
    final = end - lateness
    in_force = _versions_in_force(versions, loaded.site)
    failures = _compare(case, outputs, open_runs(engine.snapshot(), final), in_force)
    return CaseResult(loaded.path, case.name, failures, outputs)


def merge_checkpoint(saved: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """The stored checkpoint after saving `changes` (JSON round trip included): a full snapshot
    replaces it, otherwise the changed parts replace theirs."""
    stored: dict[str, Any] = json.loads(json.dumps(changes, allow_nan=False))
    if stored["full"]:
        return stored
    return {**stored, "parts": {**saved["parts"], **stored["parts"]}}


def _deliveries(site: SiteModel, case: ClauseTestCase) -> tuple[list[_Delivery], float]:
    """Everything a case delivers, in delivery order, and the latest event time in it."""
    states = {(d.id, m): spec.states for d in site.devices for m, spec in d.metrics.items()}
    t0 = case.start.timestamp()
    grouped: dict[tuple[str, float], dict[str, float]] = {}
    for key, text in case.series.items():
        device, metric = key.split(".", 1)
        for step, value in enumerate(parse_series(text)):
            if value is None:
                continue
            number = states[(device, metric)][value] if isinstance(value, str) else value
            grouped.setdefault((device, t0 + step * case.interval), {})[metric] = number
    # Time steps in pairs for `swap_pairs`: the later step of each pair arrives first.
    steps = sorted({ts for _, ts in grouped})
    arrival_of = {ts: ts for ts in steps}
    swapped_rank = {ts: 0 for ts in steps}
    if case.order == "swap_pairs":
        for earlier, later in zip(steps[::2], steps[1::2], strict=False):
            arrival_of[earlier] = later
            swapped_rank[earlier] = 1
    items: list[tuple[float, int, int, _Delivery]] = []
    seqs: dict[str, int] = {}
    order = itertools.count()
    for (device, ts), metrics in sorted(grouped.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        seqs[device] = seqs.get(device, 0) + 1
        delivery = _Delivery(arrival_of[ts], device, ts, seqs[device], metrics)
        for _ in range(2 if case.duplicate else 1):
            items.append((arrival_of[ts], swapped_rank[ts], next(order), delivery))
    last = steps[-1] if steps else t0
    for reading in case.readings:
        ts = case.epoch(reading.at)
        arrival = case.epoch(reading.arrive) if reading.arrive is not None else ts
        metrics = {
            m: states[(reading.device, m)][v] if isinstance(v, str) else float(v)
            for m, v in reading.metrics.items()
        }
        delivery = _Delivery(arrival, reading.device, ts, reading.seq, metrics)
        items.append((arrival, 0, next(order), delivery))
        last = max(last, ts)
    for spec in case.events:
        ts = case.epoch(spec.at)
        arrival = case.epoch(spec.arrive) if spec.arrive is not None else ts
        event = Event(
            spec.device, ts, spec.type, spec.space, spec.actor, spec.seq, dict(spec.attrs)
        )
        items.append((arrival, 0, next(order), _Delivery(arrival, spec.device, ts, event=event)))
        last = max(last, ts)
    items.sort(key=lambda item: item[:3])
    return [item[3] for item in items], last


@dataclass(frozen=True)
class _Violation:
    clause: str
    version: int
    space: str
    device: str | None
    kind: str
    start: float
    end: float | None


def _violations(outputs: Sequence[Output]) -> list[_Violation]:
    found: list[_Violation] = []
    open_at: dict[tuple[str, int, Subject, str, float], int] = {}
    for output in outputs:
        if isinstance(output, ViolationStarted):
            key = (output.clause.clause_id, output.clause.version, output.subject)
            open_at[(*key, output.kind, output.started_at)] = len(found)
            found.append(
                _Violation(
                    output.clause.clause_id,
                    output.clause.version,
                    output.subject.space,
                    output.subject.device,
                    output.kind,
                    output.started_at,
                    None,
                )
            )
        elif isinstance(output, ViolationEnded):
            key = (output.clause.clause_id, output.clause.version, output.subject)
            index = open_at.pop((*key, output.kind, output.started_at), None)
            if index is not None:
                found[index] = replace(found[index], end=output.ended_at)
    return found


@dataclass(frozen=True)
class OpenRun:
    """A subject's status from `start` until `end`: a compliance interval, or the open run
    that no interval has closed yet."""

    clause: str
    version: int
    space: str | None
    device: str | None
    start: float
    end: float
    status: str


def open_runs(snapshot: Mapping[str, Any], final: float) -> list[OpenRun]:
    """Open runs of an engine snapshot (`rules.runs`), each up to `final` or to where a pending
    `for` / `clear_for` leaves its status undecided; empty ones left out."""
    runs: list[OpenRun] = []
    for part in snapshot["parts"].values():
        for run in instance_runs(part["instances"]):
            end = final if run.known_until is None else min(final, run.known_until)
            if end > run.start:
                space, device = run.space or None, run.device or None
                runs.append(
                    OpenRun(run.clause_id, run.version, space, device, run.start, end, run.status)
                )
    return runs


def _versions_in_force(
    versions: Sequence[ClauseVersion], site: SiteModel
) -> Callable[[str, float], set[int]]:
    """The versions of a clause in force at an engine time, by the site's calendar date."""
    zone = site.zone()

    def in_force(clause_id: str, t: float) -> set[int]:
        day = dt.datetime.fromtimestamp(t, zone).date()
        return {v.version for v in versions if v.id == clause_id and v.in_force_on(day)}

    return in_force


def _compare(
    case: ClauseTestCase,
    outputs: Sequence[Output],
    open_runs: Sequence[OpenRun],
    in_force: Callable[[str, float], set[int]],
) -> list[str]:
    failures: list[str] = []
    t0 = case.start.timestamp()

    def when(t: float | None) -> str:
        return "open" if t is None else _offset_text(t - t0)

    if case.violations is not None:
        actual = _violations(outputs)
        unmatched = list(actual)
        for expected in case.violations:
            start = case.epoch(expected.start)
            end = case.epoch(expected.end) if expected.end is not None else None
            match = next(
                (
                    v
                    for v in unmatched
                    if v.clause == expected.clause
                    and (expected.version is None or v.version == expected.version)
                    and (expected.device is None or v.device == expected.device)
                    and (expected.space is None or v.space == expected.space)
                    and v.kind == expected.kind
                    and _same(v.start, start)
                    and ((end is None and v.end is None) or _same(v.end, end))
                ),
                None,
            )
            if match is None:
                failures.append(
                    f"expected {expected.kind} of {expected.clause} on "
                    f"{expected.device or expected.space} from {when(start)} to {when(end)}: "
                    "not produced"
                )
            else:
                unmatched.remove(match)
        for extra in unmatched:
            failures.append(
                f"unexpected {extra.kind} of {extra.clause} v{extra.version} on "
                f"{extra.device or extra.space} from {when(extra.start)} to {when(extra.end)}"
            )
    intervals = [
        OpenRun(
            o.clause.clause_id,
            o.clause.version,
            o.subject.space,
            o.subject.device,
            o.start,
            o.end,
            o.status,
        )
        for o in outputs
        if isinstance(o, ComplianceInterval)
    ]
    intervals.extend(open_runs)
    for status in case.statuses:
        at = case.epoch(status.at)
        # Without a version: the version in force at that time (others are outside it).
        wanted = {status.version} if status.version is not None else in_force(status.clause, at)
        covering = [
            i
            for i in intervals
            if i.clause == status.clause
            and i.version in wanted
            and (status.device is None or i.device == status.device)
            and (status.space is None or i.space == status.space)
            and i.start <= at < i.end
        ]
        subject = status.device or status.space
        if not covering:
            failures.append(
                f"expected {status.clause} on {subject} {status.status} at {when(at)}: "
                "no compliance interval covers that time"
            )
        for interval in covering:
            if interval.status != status.status:
                failures.append(
                    f"expected {status.clause} on {subject} {status.status} at {when(at)}, "
                    f"got {interval.status} ({when(interval.start)}..{when(interval.end)})"
                )
    if case.late_readings is not None:
        late = sum(isinstance(o, LateReading) for o in outputs)
        if late != case.late_readings:
            failures.append(f"expected {case.late_readings} late reading(s), got {late}")
    return failures


def _same(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and abs(a - b) < 1e-6


def _offset_text(seconds: float) -> str:
    """+1h30m style, relative to the case's start."""
    sign = "-" if seconds < 0 else "+"
    rest = round(abs(seconds), 3)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if rest >= size:
            count = int(rest // size)
            parts.append(f"{count}{unit}")
            rest -= count * size
    if rest or not parts:
        parts.append(f"{rest:g}s")
    return sign + "".join(parts)


# ---- clausewatch test-clauses ----


def test_files_in(paths: Sequence[str | Path]) -> list[Path]:
    """Clause test files among `paths` (directories: their *.yaml files holding `tests`)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        candidates = sorted(path.rglob("*.y*ml")) if path.is_dir() else [path]
        for candidate in candidates:
            if path.is_dir():
                try:
                    data = read_yaml(candidate).data
                except ConfigError:
                    data = {"tests": None}  # unreadable: loading it reports why
                if not (isinstance(data, dict) and "tests" in data):
                    continue
            found.append(candidate)
    return found
