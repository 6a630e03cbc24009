"""Backtest: run a new or changed clause version over a site's stored readings and events with
the same pure engine the pipeline uses (`rules.engine.SiteEngine`), beside the version in force,
before anyone activates it.

- Both versions are judged as if in force over the whole period (their effective dates are
  widened to cover it), so a planned version can be tried on last quarter's data.
- The site's data-quality clauses in force run alongside, so faulty data is not assessable for
  the clause exactly as in production; only the tested clause's outputs are counted.
- History is replayed from WARMUP before `since` (rolling means and `for` durations need it);
  only alerts confirmed and compliance time within [since, until) count.
- Readings are read in event-time order through a server-side cursor, so memory stays flat
  over long periods; lateness 0 then releases each reading at once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from pydantic import BaseModel

from compliance.rates import Tally
from config.clausetests import open_runs
from rules.clause import ClauseVersion
from rules.engine import SiteEngine
from rules.site import SiteModel
from rules.verdicts import ComplianceInterval, Event, Output, ViolationEnded, ViolationStarted
from store import registry

WARMUP = dt.timedelta(days=1)
MAX_PERIOD = dt.timedelta(days=366)
MAX_LISTED = 200  # alerts listed per run; the counts cover all
FETCH_ROWS = 5_000  # server-side cursor batch: a few hundred kB per round trip


class BacktestError(ValueError):
    pass


class WouldRaise(BaseModel):
    kind: str
    space: str
    device: str | None
    started_at: dt.datetime
    confirmed_at: dt.datetime
    ended_at: dt.datetime | None
    worst_value: float | None
    reason: str


class BacktestRun(BaseModel):
    clause_id: str
    version: int
    content_hash: str
    alerts: int  # confirmed in the period, every kind
    violations: int
    compliant_s: float
    violating_s: float
    not_assessable_s: float
    compliance_rate: float | None
    raised: list[WouldRaise]


class BacktestResult(BaseModel):
    site: str
    since: dt.datetime
    until: dt.datetime
    readings: int
    events: int
    candidate: BacktestRun
    in_force: BacktestRun | None  # None: no version of the clause is in force


def _widened(version: ClauseVersion, since: dt.datetime, until: dt.datetime) -> ClauseVersion:
    first = (since - WARMUP).date() - dt.timedelta(days=1)  # a day of margin for timezones
    return version.model_copy(update={"effective_from": first, "effective_to": None})


def version_in_force(
    conn: psycopg.Connection[Any], clause_id: str, day: dt.date
) -> ClauseVersion | None:
    row = conn.execute(
        "SELECT config FROM clause_versions WHERE clause_id = %s AND effective_from <= %s"
        " AND (effective_to IS NULL OR effective_to >= %s) ORDER BY version DESC LIMIT 1",
        (clause_id, day, day),
    ).fetchone()
    return None if row is None else ClauseVersion.model_validate(row[0])


def _data_quality_in_force(
    conn: psycopg.Connection[Any], day: dt.date, exclude: str
) -> list[ClauseVersion]:
    rows = conn.execute(
        "SELECT DISTINCT ON (clause_id) config FROM clause_versions"
        " WHERE config -> 'check' ->> 'kind' = 'data_quality' AND clause_id <> %s"
        " AND effective_from <= %s AND (effective_to IS NULL OR effective_to >= %s)"
        " ORDER BY clause_id, version DESC",
        (exclude, day, day),
    ).fetchall()
    return [ClauseVersion.model_validate(row[0]) for row in rows]


class _Run:
    """One engine and the tally of the clause under test."""

    def __init__(
        self,
        site: SiteModel,
        tested: ClauseVersion,
        reported: ClauseVersion,
        companions: Sequence[ClauseVersion],
        since: float,
        until: float,
    ) -> None:
        self.engine = SiteEngine(site, [tested, *companions], lateness=0.0)
        self.reported = reported
        self.clause_id = tested.id
        self.since = since
        self.until = until
        self.tally = Tally()
        self.raised: dict[tuple[str, str | None, str, float], WouldRaise] = {}
        self.alerts = 0
        self.violations = 0

    def collect(self) -> None:
        for output in self.engine.drain():
            self._take(output)

    def _take(self, output: Output) -> None:
        if isinstance(output, ComplianceInterval):
            if output.clause.clause_id != self.clause_id:
                return
            start, end = max(output.start, self.since), min(output.end, self.until)
            if end > start:
                self.tally.add(output.status, end - start)
        elif isinstance(output, ViolationStarted):
            if output.clause.clause_id != self.clause_id:
                return
            if not self.since <= output.confirmed_at < self.until:
                return
            self.alerts += 1
            if output.kind == "violation":
                self.violations += 1
            key = (output.kind, output.subject.device, output.subject.space, output.started_at)
            if len(self.raised) < MAX_LISTED:
                self.raised[key] = WouldRaise(
                    kind=output.kind,
                    space=output.subject.space,
                    device=output.subject.device,
                    started_at=_moment(output.started_at),
                    confirmed_at=_moment(output.confirmed_at),
                    ended_at=None,
                    worst_value=output.worst_value,
                    reason=output.reason,
                )
        elif isinstance(output, ViolationEnded) and output.clause.clause_id == self.clause_id:
            key = (output.kind, output.subject.device, output.subject.space, output.started_at)
            if key in self.raised:
                self.raised[key] = self.raised[key].model_copy(
                    update={"ended_at": _moment(output.ended_at)}
                )

    def close(self) -> None:
        """Counts the runs still open at the end (the engine emits an interval only when its
        status changes), read from a snapshot exactly as clause tests read them."""
        self.collect()
        for run in open_runs(self.engine.snapshot(), self.until):
            if run.clause == self.clause_id:
                start, end = max(run.start, self.since), min(run.end, self.until)
                if end > start:
                    self.tally.add(run.status, end - start)

    def result(self) -> BacktestRun:
        figures = self.tally.figures()
        return BacktestRun(
            clause_id=self.reported.id,
            version=self.reported.version,
            content_hash=self.reported.content_hash(),
            alerts=self.alerts,
            violations=self.violations,
            compliant_s=figures["compliant_s"],
            violating_s=figures["violating_s"],
            not_assessable_s=figures["not_assessable_s"],
            compliance_rate=figures["rate"],
            raised=list(self.raised.values()),
        )


def _moment(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def load_site(conn: psycopg.Connection[Any], site: str) -> SiteModel:
    model = registry.site_model(conn, site)
    if model is None:
        raise BacktestError(f"unknown site {site!r}")
    return model


def backtest(
    conn: psycopg.Connection[Any],
    site: str,
    candidate: ClauseVersion,
    since: dt.datetime,
    until: dt.datetime,
) -> BacktestResult:
    """Judges `candidate` and the version of its clause in force at the end of the period over
    the site's stored history in [since, until). Reads only; raises BacktestError on bad input."""
    if since.tzinfo is None or until.tzinfo is None:
        raise BacktestError("since and until need a UTC offset")
    if until <= since:
        raise BacktestError("since must be before until")
    if until - since > MAX_PERIOD:
        raise BacktestError("a backtest covers at most 366 days")
    model = load_site(conn, site)
    last_day = (until - dt.timedelta(microseconds=1)).astimezone(model.zone()).date()
    current = version_in_force(conn, candidate.id, last_day)
    companions = _data_quality_in_force(conn, last_day, candidate.id)
    start, end = since.timestamp(), until.timestamp()
    runs = [_Run(model, _widened(candidate, since, until), candidate, companions, start, end)]
    if current is not None:
        runs.append(_Run(model, _widened(current, since, until), current, companions, start, end))
    known = {device.id for device in model.devices}
    readings = events = since_collect = 0
    for item in _history(conn, site, since - WARMUP, until, known):
        if isinstance(item, Event):
            events += 1
            for run in runs:
                run.engine.observe_event(item)
                run.engine.advance(item.ts)
        else:
            device, ts, seq, metrics = item
            readings += len(metrics)
            for run in runs:
                run.engine.observe(device, ts, seq, metrics)
        since_collect += 1
        if since_collect == FETCH_ROWS:  # keep the engines' output lists short
            since_collect = 0
            for run in runs:
                run.collect()
    for run in runs:
        run.engine.advance(end)
        run.close()
    return BacktestResult(
        site=site,
        since=since,
        until=until,
        readings=readings,
        events=events,
        candidate=runs[0].result(),
        in_force=runs[1].result() if len(runs) > 1 else None,
    )


Reading = tuple[str, float, int | None, dict[str, float]]


def _history(
    conn: psycopg.Connection[Any],
    site: str,
    since: dt.datetime,
    until: dt.datetime,
    devices: set[str],
) -> Iterator[Reading | Event]:
    """Readings (grouped by device and ts) and events of the site in event-time order; an
    event goes before readings of the same instant."""
    event_rows = conn.execute(
        "SELECT device, extract(epoch FROM ts)::float8, type, space, actor, seq, attrs"
        " FROM events WHERE site = %s AND ts >= %s AND ts < %s ORDER BY ts, device",
        (site, since, until),
    ).fetchall()
    pending = [
        Event(device=d, ts=ts, type=t, space=sp, actor=a, seq=seq, attrs=attrs or {})
        for d, ts, t, sp, a, seq, attrs in event_rows
    ]
    next_event = 0
    group: Reading | None = None
    with conn.cursor(name="cw_backtest_readings") as cur:
        cur.itersize = FETCH_ROWS
        cur.execute(
            "SELECT device, extract(epoch FROM ts)::float8, seq, metric, value FROM readings"
            " WHERE site = %s AND ts >= %s AND ts < %s ORDER BY ts, device",
            (site, since, until),
        )
        for device, ts, seq, metric, value in cur:
            if device not in devices:
                continue  # a device since removed from the site model
            if group is not None and (group[0] != device or group[1] != ts):
                yield group
                group = None
            while next_event < len(pending) and pending[next_event].ts <= ts:
                yield pending[next_event]
                next_event += 1
            if group is None:
                group = (device, ts, seq, {})
            group[3][metric] = value
    if group is not None:
        yield group
    yield from pending[next_event:]
