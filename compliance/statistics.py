"""Statistics per site and per organisation level (city → district → unit) over a period, with
the health of the alarm system. Definitions (docs/register.md):

- compliance rate, not-assessable share, data-quality time, key-clause coverage, and the time
  they count up to (`counted_until`, the site's data time when the period has not ended):
  `compliance.rates.compliance_report` (docs/api.md), reused as is; data completeness =
  1 − not-assessable share.
- clauses in force at a site: a version in force at t = min(until, now) whose `applies_to`
  selects a space or device of the site (the definition coverage uses, for every clause).
- evaluated share = clauses in force that a person evaluated (compliance/evaluations.py) for a
  quarter overlapping [since, until) ÷ clauses in force. Generated reports count for nothing.
- improvement actions: open at t (recorded by t, not done by t), overdue when past their deadline.
- attainment: each of compliance rate, key-clause coverage and evaluated share against the
  targets of the node (compliance/targets.py), with the sites below the target.
- feedback (信息反馈, compliance/feedback.py): items received in [since, until) by t, by
  category, by clause, by state as of t; mean time to triage from receipt to the first step out
  of 'new' (a rejection too), over the items with one by t.
- alerts by clause and severity: alerts started in [since, until).
- mean time to acknowledge / close: over alerts confirmed in the period and acknowledged /
  closed since, from `confirmed_at`.
- alarm health: alerts per responsible party per day (alerts started in the period ÷ days of the
  period up to now); chattering = alerts alive in the period reopened at least
  CHATTER_REOPENS times; standing = not closed at t and confirmed at least STANDING_AFTER
  before t; never firing = clauses in force without an alert in the period; always firing =
  clauses violating at least (1 − ALWAYS_FIRING_RATE) of their assessable time.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel

from compliance.evaluations import (
    ImprovementAction,
    clauses_in_force,
    evaluated_clauses,
    site_actions,
)
from compliance.feedback import FeedbackCounts, feedback_counts
from compliance.rates import (
    ClauseCompliance,
    Coverage,
    DeviceDataQuality,
    SpaceCompliance,
    compliance_report,
)
from compliance.targets import Attainment, Figure, TargetTable, attainment, load_targets
from store import registry
from store.registry import UnknownSite

# An alert that reopened this often within its life flaps: its clause needs a longer `for`,
# more hysteresis or a longer `reopen_within`.
CHATTER_REOPENS = 3
# Open (not closed) for longer than a working day: nobody is dealing with it.
STANDING_AFTER = dt.timedelta(hours=24)
# Compliant at most 10 % of the assessable time: the limit or the building is wrong.
ALWAYS_FIRING_RATE = 0.1
DAY_S = 86_400.0


class AlertCount(BaseModel):
    clause_id: str
    severity: str
    alerts: int


class PartyLoad(BaseModel):
    party: str | None  # None: alerts no party was bound to
    name: str | None
    alerts: int
    per_day: float


class AlertRef(BaseModel):
    id: int
    clause_id: str
    space: str
    severity: str
    state: str
    reopen_count: int
    confirmed_at: dt.datetime
    open_hours: float | None  # for standing alerts: how long open at t


class ClauseFiring(BaseModel):
    clause_id: str
    rate: float


class AlarmHealth(BaseModel):
    per_party: list[PartyLoad]
    chattering: list[AlertRef]
    standing: list[AlertRef]
    never_firing: list[str]
    always_firing: list[ClauseFiring]


class SiteStatistics(BaseModel):
    site: str
    name: str
    org: list[str]
    since: dt.datetime
    until: dt.datetime
    # The figures count time up to here (compliance.rates.SiteCompliance.counted_until).
    counted_until: dt.datetime | None
    data_time: dt.datetime | None
    compliant_s: float
    violating_s: float
    not_assessable_s: float
    # Judged time maintenance windows made exempt, in no rate (compliance.rates).
    exempt_s: float = 0.0  # reports stored before maintenance windows have none
    compliance_rate: float | None
    data_completeness: float | None
    data_quality_s: float  # device time with a data-quality fault, in no rate
    coverage: Coverage
    clauses_in_force: list[str]
    evaluated_clauses: list[str]
    evaluated_share: float | None
    attainment: Attainment
    # Improvement actions of evaluations open at t, earliest deadline first (`overdue` flags).
    open_actions: list[ImprovementAction]
    overdue_actions: int
    # Feedback from the public form received in the period (reports stored before it have none).
    feedback: FeedbackCounts = FeedbackCounts()
    alerts: int
    open_alerts: int
    alerts_by_clause: list[AlertCount]
    acknowledged: int
    mean_time_to_acknowledge_s: float | None
    closed: int
    mean_time_to_close_s: float | None
    health: AlarmHealth
    clauses: list[ClauseCompliance]
    spaces: list[SpaceCompliance]
    data_quality: list[DeviceDataQuality]


class OrgSummary(BaseModel):
    """Figures of an organisation node (or one site) summed over the sites beneath it."""

    path: list[str]
    sites: list[str]
    # The earliest counted_until of its sites (null when one has no data time).
    counted_until: dt.datetime | None
    compliance_rate: float | None
    data_completeness: float | None
    data_quality_s: float
    # Time planned maintenance made exempt, summed over the sites (in no rate).
    exempt_s: float = 0.0
    key_clause_coverage: float | None
    evaluated_share: float | None
    attainment: Attainment
    open_actions: int
    overdue_actions: int
    feedback: int = 0  # items received in the period
    feedback_new: int = 0  # of those, not triaged by t
    mean_time_to_triage_s: float | None = None
    alerts: int
    open_alerts: int
    mean_time_to_acknowledge_s: float | None
    mean_time_to_close_s: float | None


class OrgStatistics(BaseModel):
    since: dt.datetime
    until: dt.datetime
    node: OrgSummary
    children: list[OrgSummary]  # the next level down: districts of a city, units of a district


def site_statistics(
    conn: psycopg.Connection[Any],
    site: str,
    since: dt.datetime,
    until: dt.datetime,
    now: dt.datetime,
    targets: TargetTable | None = None,
) -> SiteStatistics:
    """Every figure of one site over [since, until), its attainment against its unit's targets
    (`targets`: the table of compliance.targets, read when not given). Raises UnknownSite."""
    registered = registry.site_row(conn, site)
    if registered is None:
        raise UnknownSite(site)
    at = min(until, now)
    report = compliance_report(conn, [site], since, until, now)
    figures = report.sites[0]
    in_force = clauses_in_force(conn, site, since, until, now)
    evaluated = sorted(set(in_force) & evaluated_clauses(conn, site, since, until))
    evaluated_share = len(evaluated) / len(in_force) if in_force else None
    org = list(registered.info.get("org") or [])
    values: dict[Figure, float | None] = {
        "compliance_rate": figures.rate,
        "key_clause_coverage": figures.coverage.rate,
        "evaluated_share": evaluated_share,
    }
    actions = site_actions(conn, site, at)
    alerts = _alert_figures(conn, site, since, until, at)
    always = [
        ClauseFiring(clause_id=c.clause_id, rate=c.rate)
        for c in report.clauses
        if c.rate is not None and c.rate <= ALWAYS_FIRING_RATE
    ]
    fired = {count.clause_id for count in alerts["by_clause"]}
    days = max((at - since).total_seconds(), 0.0) / DAY_S
    per_party = [
        PartyLoad(
            party=row["party"],
            name=row["name"],
            alerts=row["n"],
            per_day=row["n"] / days if days > 0 else 0.0,
        )
        for row in alerts["per_party"]
    ]
    return SiteStatistics(
        site=site,
        name=registered.name,
        org=org,
        since=since,
        until=until,
        counted_until=figures.counted_until,
        data_time=figures.data_time,
        compliant_s=figures.compliant_s,
        violating_s=figures.violating_s,
        not_assessable_s=figures.not_assessable_s,
        exempt_s=figures.exempt_s,
        compliance_rate=figures.rate,
        data_completeness=(
            None if figures.not_assessable_share is None else 1 - figures.not_assessable_share
        ),
        data_quality_s=figures.data_quality_s,
        coverage=figures.coverage,
        clauses_in_force=in_force,
        evaluated_clauses=evaluated,
        evaluated_share=evaluated_share,
        attainment=attainment(
            load_targets(conn) if targets is None else targets,
            unit_path(org, site),
            values,
            {site: values},
        ),
        open_actions=actions,
        overdue_actions=sum(a.overdue for a in actions),
        feedback=feedback_counts(conn, site, since, until, at),
        alerts=sum(c.alerts for c in alerts["by_clause"]),
        open_alerts=figures.open_alerts,
        alerts_by_clause=alerts["by_clause"],
        acknowledged=alerts["acknowledged"],
        mean_time_to_acknowledge_s=alerts["mtta"],
        closed=alerts["closed"],
        mean_time_to_close_s=alerts["mttc"],
        health=AlarmHealth(
            per_party=per_party,
            chattering=alerts["chattering"],
            standing=alerts["standing"],
            never_firing=[c for c in in_force if c not in fired],
            always_firing=always,
        ),
        clauses=report.clauses,
        spaces=report.spaces,
        data_quality=report.data_quality,
    )


def unit_path(org: list[str], site: str) -> list[str]:
    """A site's own node in the organisation tree: its org path, ending with the site itself."""
    return org if org and org[-1] == site else [*org, site]


def _alert_figures(
    conn: psycopg.Connection[Any],
    site: str,
    since: dt.datetime,
    until: dt.datetime,
    at: dt.datetime,
) -> dict[str, Any]:
    args = {"site": site, "since": since, "until": until, "at": at}
    with conn.cursor(row_factory=dict_row) as cur:
        by_clause = [
            AlertCount(**row)
            for row in cur.execute(
                "SELECT clause_id, severity, count(*) AS alerts FROM alerts"
                " WHERE site = %(site)s AND started_at >= %(since)s AND started_at < %(until)s"
                " GROUP BY clause_id, severity ORDER BY count(*) DESC, clause_id, severity",
                args,
            )
        ]
        times = cur.execute(
            "SELECT count(acknowledged_at) AS acknowledged,"
            " avg(extract(epoch FROM acknowledged_at - confirmed_at))::float8 AS mtta,"
            " count(closed_at) AS closed,"
            " avg(extract(epoch FROM closed_at - confirmed_at))::float8 AS mttc"
            " FROM alerts WHERE site = %(site)s"
            " AND confirmed_at >= %(since)s AND confirmed_at < %(until)s",
            args,
        ).fetchone()
        assert times is not None
        per_party = cur.execute(
            "SELECT responsible_party AS party, max(responsible_name) AS name, count(*) AS n"
            " FROM alerts WHERE site = %(site)s"
            " AND started_at >= %(since)s AND started_at < %(until)s"
            " GROUP BY responsible_party ORDER BY count(*) DESC, responsible_party",
            args,
        ).fetchall()
        alive = cur.execute(
            "SELECT id, clause_id, space, severity, state, reopen_count, confirmed_at, closed_at"
            " FROM alerts WHERE site = %(site)s AND started_at < %(until)s"
            " AND (closed_at IS NULL OR closed_at >= %(since)s) ORDER BY id",
            args,
        ).fetchall()
    chattering: list[AlertRef] = []
    standing: list[AlertRef] = []
    for row in alive:
        closed_at = row.pop("closed_at")
        if row["reopen_count"] >= CHATTER_REOPENS:
            chattering.append(AlertRef(open_hours=None, **row))
        open_at_t = closed_at is None or closed_at > at
        if open_at_t and row["confirmed_at"] <= at - STANDING_AFTER:
            hours = (at - row["confirmed_at"]).total_seconds() / 3600
            standing.append(AlertRef(open_hours=hours, **row))
    standing.sort(key=lambda ref: -(ref.open_hours or 0.0))
    return {
        "by_clause": by_clause,
        "acknowledged": times["acknowledged"],
        "mtta": times["mtta"],
        "closed": times["closed"],
        "mttc": times["mttc"],
        "per_party": per_party,
        "chattering": chattering,
        "standing": standing,
    }


def summarise(path: list[str], stats: list[SiteStatistics], targets: TargetTable) -> OrgSummary:
    """Sums of the sites' figures; rates are ratios of the sums (time- and count-weighted);
    attainment against the node's targets, naming the sites below them."""
    compliant = sum(s.compliant_s for s in stats)
    violating = sum(s.violating_s for s in stats)
    missing = sum(s.not_assessable_s for s in stats)
    in_force = sum(s.coverage.key_clauses_in_force for s in stats)
    covered = sum(s.coverage.covered for s in stats)
    clauses = sum(len(s.clauses_in_force) for s in stats)
    evaluated = sum(len(s.evaluated_clauses) for s in stats)
    acknowledged = sum(s.acknowledged for s in stats)
    closed = sum(s.closed for s in stats)
    judged = compliant + violating + missing
    ends = [s.counted_until for s in stats if s.counted_until is not None]
    rate = compliant / (compliant + violating) if compliant + violating else None
    coverage = covered / in_force if in_force else None
    share = evaluated / clauses if clauses else None
    return OrgSummary(
        path=path,
        sites=[s.site for s in stats],
        counted_until=min(ends) if ends and len(ends) == len(stats) else None,
        data_quality_s=sum(s.data_quality_s for s in stats),
        exempt_s=sum(s.exempt_s for s in stats),
        compliance_rate=rate,
        data_completeness=(compliant + violating) / judged if judged else None,
        key_clause_coverage=coverage,
        evaluated_share=share,
        attainment=attainment(
            targets,
            path,
            {"compliance_rate": rate, "key_clause_coverage": coverage, "evaluated_share": share},
            {
                s.site: {
                    "compliance_rate": s.compliance_rate,
                    "key_clause_coverage": s.coverage.rate,
                    "evaluated_share": s.evaluated_share,
                }
                for s in stats
            },
        ),
        open_actions=sum(len(s.open_actions) for s in stats),
        overdue_actions=sum(s.overdue_actions for s in stats),
        feedback=sum(s.feedback.received for s in stats),
        feedback_new=sum(s.feedback.by_state.get("new", 0) for s in stats),
        mean_time_to_triage_s=_weighted(
            [(s.feedback.mean_time_to_triage_s, s.feedback.triaged) for s in stats],
            sum(s.feedback.triaged for s in stats),
        ),
        alerts=sum(s.alerts for s in stats),
        open_alerts=sum(s.open_alerts for s in stats),
        mean_time_to_acknowledge_s=_weighted(
            [(s.mean_time_to_acknowledge_s, s.acknowledged) for s in stats], acknowledged
        ),
        mean_time_to_close_s=_weighted([(s.mean_time_to_close_s, s.closed) for s in stats], closed),
    )


def _weighted(pairs: list[tuple[float | None, int]], total: int) -> float | None:
    if total == 0:
        return None
    return sum((mean or 0.0) * count for mean, count in pairs) / total


def site_org_paths(conn: psycopg.Connection[Any], sites: list[str] | None) -> dict[str, list[str]]:
    """Each site's organisation path (SiteInfo.org); a site without one is its own root."""
    paths: dict[str, list[str]] = {}
    for registered in registry.site_rows(conn, sites):
        org = registered.info.get("org")
        paths[registered.id] = list(org) if org else [registered.id]
    return paths


def org_statistics(
    conn: psycopg.Connection[Any],
    path: list[str],
    sites: list[str] | None,
    since: dt.datetime,
    until: dt.datetime,
    now: dt.datetime,
) -> OrgStatistics:
    """The node at `path` (empty: everything visible) over the `sites` the caller may see
    (None: all), and its children one level down. A node without visible sites has zeros."""
    paths = site_org_paths(conn, sites)
    below = {site: org for site, org in paths.items() if org[: len(path)] == path}
    targets = load_targets(conn)
    stats = {site: site_statistics(conn, site, since, until, now, targets) for site in below}
    groups: dict[str, list[SiteStatistics]] = defaultdict(list)
    for site, org in below.items():
        child = org[len(path)] if len(org) > len(path) else site
        groups[child].append(stats[site])
    return OrgStatistics(
        since=since,
        until=until,
        node=summarise(path, list(stats.values()), targets),
        children=[summarise([*path, child], groups[child], targets) for child in sorted(groups)],
    )
