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
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from clausewatch.configfiles import (
    ConfigError,
    Loc,
    Problem,
    format_loc,
    load_clause_file,
    load_site,
    read_yaml,
    validate_document,
)
from rules.clause import ClauseFile, ClauseVersion
from rules.durations import parse_duration
from rules.site import Id, MetricName, SiteModel, Strict
from rules.verdicts import AlertKind, Status


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
    """The compliance status of a clause for a subject at one time."""

    clause: str
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
    statuses: tuple[ExpectedStatus, ...] = ()
    late_readings: int | None = Field(default=None, ge=0)

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
            if expected.clause not in tested:
                found.append(((*loc, "clause"), f"clause {expected.clause!r} is not under test"))
            if expected.device is not None and expected.device not in devices:
                found.append(((*loc, "device"), f"the site has no device {expected.device!r}"))
            if expected.space is not None and expected.space not in spaces:
                found.append(((*loc, "space"), f"the site has no space {expected.space!r}"))
    return found
