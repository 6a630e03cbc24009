"""Builders for engine tests: a small site, clause versions from check dicts, and a runner that
feeds (time, values) rows and reads the outputs back in minutes or seconds from T0.

Times in tests are offsets in seconds from T0 = Monday 2024-07-01 00:00 Asia/Shanghai (a
workday, inside the cooling season), so expectations can be written by hand.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from rules.clause import ClauseVersion
from rules.engine import SiteEngine
from rules.site import SiteModel
from rules.verdicts import (
    ComplianceInterval,
    Output,
    ViolationEnded,
    ViolationStarted,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
T0 = dt.datetime(2024, 7, 1, tzinfo=SHANGHAI).timestamp()


def at(day: int, hour: int, minute: int = 0) -> float:
    """Offset from T0 of a local wall time `day` days after 2024-07-01."""
    local = dt.datetime(2024, 7, 1, hour, minute, tzinfo=SHANGHAI) + dt.timedelta(days=day)
    return local.timestamp() - T0


def sensor(device: str, space: str, **metrics: dict[str, Any]) -> dict[str, Any]:
    return {"id": device, "space": space, "metrics": metrics}


TEMPERATURE = {"unit": "°C", "range": [-20, 60], "max_gap": 600}
HUMIDITY = {"unit": "%", "range": [0, 100], "max_gap": 600}
HVAC = {"unit": "state", "states": {"off": 0, "cooling": 1, "heating": 2}, "max_gap": 3600}
ENERGY = {"unit": "kWh", "cumulative": True, "carrier": "electricity", "max_gap": 7200}


def make_site(
    devices: Iterable[dict[str, Any]] | None = None,
    spaces: Iterable[dict[str, Any]] | None = None,
    timezone: str = "Asia/Shanghai",
    **site: Any,
) -> SiteModel:
    """Default: building b1 > floor f1 > office o1 (40 m²) and toilet wc1, sensor d1 in o1."""
    if spaces is None:
        spaces = [
            {"id": "b1", "type": "building", "area_m2": 1000},
            {"id": "f1", "type": "floor", "parent": "b1"},
            {"id": "o1", "type": "office", "parent": "f1", "area_m2": 40},
            {"id": "wc1", "type": "toilet", "parent": "f1", "area_m2": 10},
        ]
    if devices is None:
        devices = [sensor("d1", "o1", temperature=TEMPERATURE, humidity=HUMIDITY)]
    info = {"id": "s1", "name": "test site", "timezone": timezone}
    info.update(site)
    return SiteModel.model_validate(
        {"site": info, "spaces": list(spaces), "devices": list(devices)}
    )


def make_clause(check: Mapping[str, Any], **fields: Any) -> ClauseVersion:
    data: dict[str, Any] = {
        "id": "c.test",
        "version": 1,
        "effective_from": "2020-01-01",
        "number": "1",
        "title": "test clause",
        "domain": "test",
        "confidence": "A",
        "check": dict(check),
    }
    data.update(fields)
    return ClauseVersion.model_validate(data)


@dataclass
class Run:
    """An engine plus everything it has said, with times as offsets from T0."""

    engine: SiteEngine
    outputs: list[Output] = field(default_factory=list)

    def feed(self, rows: Iterable[tuple[float, Mapping[str, float]]], device: str = "d1") -> Run:
        for offset, values in rows:
            self.engine.observe(device, T0 + offset, None, values)
        self.collect()
        return self

    def advance(self, offset: float) -> Run:
        self.engine.advance(T0 + offset)
        self.collect()
        return self

    def collect(self) -> None:
        self.outputs.extend(self.engine.drain())

    def intervals(self, clause: str | None = None) -> list[tuple[float, float, str]]:
        """(start, end, status) offsets, adjacent equal statuses merged."""
        merged: list[tuple[float, float, str]] = []
        for out in self.outputs:
            if not isinstance(out, ComplianceInterval):
                continue
            if clause is not None and out.clause.clause_id != clause:
                continue
            start, end = out.start - T0, out.end - T0
            if merged and merged[-1][2] == out.status and merged[-1][1] == start:
                merged[-1] = (merged[-1][0], end, out.status)
            else:
                merged.append((start, end, out.status))
        return merged

    def started(self, kind: str | None = None) -> list[ViolationStarted]:
        return [
            o
            for o in self.outputs
            if isinstance(o, ViolationStarted) and (kind is None or o.kind == kind)
        ]

    def ended(self, kind: str | None = None) -> list[ViolationEnded]:
        return [
            o
            for o in self.outputs
            if isinstance(o, ViolationEnded) and (kind is None or o.kind == kind)
        ]

    def violations(self, kind: str | None = None) -> list[tuple[float, float | None]]:
        """(started_at, ended_at or None) offsets of violations of `kind`."""
        ends = {(e.clause.clause_id, e.subject, e.started_at): e.ended_at for e in self.ended(kind)}
        found = []
        for s in self.started(kind):
            end = ends.get((s.clause.clause_id, s.subject, s.started_at))
            found.append((s.started_at - T0, None if end is None else end - T0))
        return found


class Kit:
    """What the tests use: builders and a runner (a fixture, so test files need no imports)."""

    T0 = T0
    at = staticmethod(at)
    site = staticmethod(make_site)
    clause = staticmethod(make_clause)
    sensor = staticmethod(sensor)
    TEMPERATURE = TEMPERATURE
    HUMIDITY = HUMIDITY
    HVAC = HVAC
    ENERGY = ENERGY

    @staticmethod
    def run(
        site: SiteModel, *clauses: ClauseVersion, lateness: float = 0.0, start: float | None = 0.0
    ) -> Run:
        """An engine started (first advance) at offset `start` unless None."""
        run = Run(SiteEngine(site, clauses, lateness=lateness))
        if start is not None:
            run.advance(start + lateness)
        return run


@pytest.fixture
def kit() -> type[Kit]:
    return Kit
