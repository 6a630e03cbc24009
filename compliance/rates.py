"""Compliance figures from stored compliance intervals, and key-clause coverage: shared by the
API (`GET /compliance`) and the register (statistics, reports, public view, search).

Definitions (also in docs/api.md):

- Over a period [since, until), every compliance interval is clipped to the period. Time
  `outside_schedule` does not count at all.
- rate = compliant ÷ (compliant + violating), time-weighted over every clause × subject in the
  group (a clause, a space, a site); null when nothing was assessable.
- not_assessable_share = not_assessable ÷ (compliant + violating + not_assessable): how much
  of the judged time had no usable data.
- key-clause coverage of a site, at t = min(until, now):
  key clauses in force for the site = key clauses with a version in force on t's date whose
  `applies_to` selects at least one space or device of the site; such a clause is covered when
  it is (1) active: it produced compliance intervals for the site in the period, (2) bound to a
  live data source: for clauses that read metrics, a device of a selected space reporting one
  of those metrics has a reading within that metric's `max_gap` before t; for obligations, an
  event of the expected type was recorded at the site within the period; and (3) bound to a
  responsible party: a `responsible` assignment at the site for the clause's domain (or '*')
  is in force at t. coverage = covered ÷ in force; null when no key clause is in force.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel

JudgedStatus = Literal["compliant", "violating", "not_assessable"]
Missing = Literal["active", "live_data_source", "responsible_party"]


class Durations(BaseModel):
    """Seconds of each status in the period, and the figures derived from them."""

    compliant_s: float
    violating_s: float
    not_assessable_s: float
    # compliant ÷ (compliant + violating); null when nothing was assessable.
    rate: float | None
    # not_assessable ÷ (compliant + violating + not_assessable): data incompleteness.
    not_assessable_share: float | None


class ClauseCompliance(Durations):
    site: str
    clause_id: str
    key: bool


class SpaceCompliance(Durations):
    site: str
    space: str


class CoverageGap(BaseModel):
    clause_id: str
    missing: list[Missing]


class Coverage(BaseModel):
    key_clauses_in_force: int
    covered: int
    rate: float | None
    gaps: list[CoverageGap]


class SiteCompliance(Durations):
    site: str
    open_alerts: int
    coverage: Coverage


class ComplianceReport(BaseModel):
    since: dt.datetime
    until: dt.datetime
    sites: list[SiteCompliance]
    clauses: list[ClauseCompliance]
    spaces: list[SpaceCompliance]


@dataclass
class Tally:
    compliant: float = 0.0
    violating: float = 0.0
    not_assessable: float = 0.0

    def add(self, status: str, seconds: float) -> None:
        if status == "compliant":
            self.compliant += seconds
        elif status == "violating":
            self.violating += seconds
        elif status == "not_assessable":
            self.not_assessable += seconds

    def figures(self) -> dict[str, Any]:
        assessable = self.compliant + self.violating
        judged = assessable + self.not_assessable
        return {
            "compliant_s": self.compliant,
            "violating_s": self.violating,
            "not_assessable_s": self.not_assessable,
            "rate": self.compliant / assessable if assessable > 0 else None,
            "not_assessable_share": self.not_assessable / judged if judged > 0 else None,
        }


@dataclass
class SiteFacts:
    """What coverage needs to know about one site, at `evaluated_at`."""

    evaluated_at: dt.datetime
    spaces: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> type, tags, parent
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> space, metrics
    last_seen: dict[tuple[str, str], dt.datetime] = field(default_factory=dict)
    events_seen: set[str] = field(default_factory=set)
    responsible_domains: set[str] = field(default_factory=set)
    active_clauses: set[str] = field(default_factory=set)

    def subtree(self, root: str) -> set[str]:
        found = {root}
        grew = True
        while grew:
            grew = False
            for space_id, space in self.spaces.items():
                if space_id not in found and space["parent"] in found:
                    found.add(space_id)
                    grew = True
        return found


def compliance_report(
    conn: psycopg.Connection,
    sites: list[str],
    since: dt.datetime,
    until: dt.datetime,
    now: dt.datetime,
    clause: str | None = None,
) -> ComplianceReport:
    by_clause: dict[tuple[str, str], Tally] = defaultdict(Tally)
    by_space: dict[tuple[str, str], Tally] = defaultdict(Tally)
    by_site: dict[str, Tally] = defaultdict(Tally)
    with conn.cursor() as cur:
        rows = cur.execute(
            "SELECT site, clause_id, space, status, sum(extract(epoch FROM"
            " least(end_ts, %(until)s) - greatest(start_ts, %(since)s)))::float8"
            " FROM compliance_intervals"
            " WHERE site = ANY(%(sites)s) AND start_ts < %(until)s AND end_ts > %(since)s"
            " AND status <> 'outside_schedule'"
            " AND (%(clause)s::text IS NULL OR clause_id = %(clause)s)"
            " GROUP BY site, clause_id, space, status",
            {"sites": sites, "since": since, "until": until, "clause": clause},
        ).fetchall()
    for site, clause_id, space, status, seconds in rows:
        by_clause[(site, clause_id)].add(status, seconds)
        by_space[(site, space)].add(status, seconds)
        by_site[site].add(status, seconds)

    versions = versions_in_force(conn, min(until, now).date())
    key_of = _key_flags(conn)
    open_alerts: dict[str, int] = dict(
        conn.execute(
            "SELECT site, count(*) FROM alerts WHERE site = ANY(%s) AND state <> 'closed'"
            " GROUP BY site",
            (sites,),
        ).fetchall()
    )
    site_rows: list[SiteCompliance] = []
    for site in sites:
        facts = site_facts(conn, site, since, until, now)
        site_rows.append(
            SiteCompliance(
                site=site,
                open_alerts=open_alerts.get(site, 0),
                coverage=coverage(facts, versions.values()),
                **by_site[site].figures(),
            )
        )
    return ComplianceReport(
        since=since,
        until=until,
        sites=site_rows,
        clauses=[
            ClauseCompliance(
                site=site, clause_id=clause_id, key=key_of.get(clause_id, False), **t.figures()
            )
            for (site, clause_id), t in sorted(by_clause.items())
        ],
        spaces=[
            SpaceCompliance(site=site, space=space, **t.figures())
            for (site, space), t in sorted(by_space.items())
        ],
    )


def coverage(facts: SiteFacts, versions: Iterable[dict[str, Any]]) -> Coverage:
    """Key-clause coverage of one site from its facts and the clause versions in force."""
    in_force = 0
    gaps: list[CoverageGap] = []
    for version in versions:
        config = version["config"]
        if not config.get("key"):
            continue
        selected_spaces, selected_devices = selection(facts, config.get("applies_to") or {})
        if not selected_spaces and not selected_devices:
            continue
        in_force += 1
        missing: list[Missing] = []
        if version["clause_id"] not in facts.active_clauses:
            missing.append("active")
        if not _live_source(facts, config, selected_devices):
            missing.append("live_data_source")
        domain = config.get("domain", "")
        if not facts.responsible_domains & {domain, "*"}:
            missing.append("responsible_party")
        if missing:
            gaps.append(CoverageGap(clause_id=version["clause_id"], missing=missing))
    covered = in_force - len(gaps)
    return Coverage(
        key_clauses_in_force=in_force,
        covered=covered,
        rate=covered / in_force if in_force else None,
        gaps=gaps,
    )


def selection(facts: SiteFacts, selector: dict[str, Any]) -> tuple[set[str], set[str]]:
    """Spaces and devices of the site a clause's `applies_to` selects (exemptions removed)."""
    exempt = selector.get("exempt") or {}
    spaces = set(facts.spaces)
    if selector.get("space_types"):
        spaces = {s for s in spaces if facts.spaces[s]["type"] in selector["space_types"]}
    if selector.get("tags"):
        wanted = set(selector["tags"])
        spaces = {s for s in spaces if wanted & set(facts.spaces[s]["tags"])}
    if selector.get("spaces"):
        listed: set[str] = set()
        for root in selector["spaces"]:
            if root in facts.spaces:
                listed |= facts.subtree(root)
        spaces &= listed
    spaces = {
        s
        for s in spaces
        if facts.spaces[s]["type"] not in exempt.get("space_types", ())
        and not set(exempt.get("tags", ())) & set(facts.spaces[s]["tags"])
        and s not in exempt.get("spaces", ())
    }
    devices = {
        d
        for d, device in facts.devices.items()
        if device["space"] in spaces
        and (not selector.get("devices") or d in selector["devices"])
        and d not in exempt.get("devices", ())
    }
    if selector.get("devices"):
        spaces = {facts.devices[d]["space"] for d in devices}
    return spaces, devices


def read_metrics(node: object) -> set[str]:
    """Metric names a check reads (its metric(s), conditions and gates)."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "metric" and isinstance(value, str):
                found.add(value)
            elif key == "metrics" and isinstance(value, list):
                found |= {m for m in value if isinstance(m, str)}
            else:
                found |= read_metrics(value)
    elif isinstance(node, list):
        for item in node:
            found |= read_metrics(item)
    return found


def _live_source(facts: SiteFacts, config: dict[str, Any], devices: set[str]) -> bool:
    check = config.get("check") or {}
    if check.get("kind") == "obligation":
        return check.get("event") in facts.events_seen
    metrics = read_metrics(check)
    now = facts.evaluated_at
    for device_id in devices:
        specs = facts.devices[device_id]["metrics"] or {}
        for metric in metrics or specs.keys():
            spec = specs.get(metric)
            seen = facts.last_seen.get((device_id, metric))
            if spec is None or seen is None:
                continue
            if (now - seen).total_seconds() <= float(spec.get("max_gap", 900.0)):
                return True
    return False


def site_facts(
    conn: psycopg.Connection, site: str, since: dt.datetime, until: dt.datetime, now: dt.datetime
) -> SiteFacts:
    at = min(until, now)
    facts = SiteFacts(evaluated_at=at)
    with conn.cursor(row_factory=dict_row) as cur:
        for row in cur.execute(
            "SELECT id, type, tags, parent FROM spaces WHERE site = %s AND retired_at IS NULL",
            (site,),
        ):
            facts.spaces[row["id"]] = row
        for row in cur.execute(
            "SELECT id, space, metrics FROM devices WHERE site = %s AND retired_at IS NULL",
            (site,),
        ):
            facts.devices[row["id"]] = row
        longest_gap = max(
            (
                float(spec.get("max_gap", 900.0))
                for device in facts.devices.values()
                for spec in (device["metrics"] or {}).values()
            ),
            default=900.0,
        )
        for row in cur.execute(
            "SELECT device, metric, max(ts) AS seen FROM readings"
            " WHERE site = %s AND ts > %s AND ts <= %s GROUP BY device, metric",
            (site, at - dt.timedelta(seconds=longest_gap), at),
        ):
            facts.last_seen[(row["device"], row["metric"])] = row["seen"]
        facts.events_seen = {
            row["type"]
            for row in cur.execute(
                "SELECT DISTINCT type FROM events WHERE site = %s AND ts >= %s AND ts < %s",
                (site, since, until),
            )
        }
        facts.responsible_domains = {
            row["domain"]
            for row in cur.execute(
                "SELECT DISTINCT domain FROM assignments WHERE site = %s AND role = 'responsible'"
                " AND valid_from <= %s AND (valid_to IS NULL OR valid_to > %s)",
                (site, at, at),
            )
        }
        facts.active_clauses = {
            row["clause_id"]
            for row in cur.execute(
                "SELECT DISTINCT clause_id FROM compliance_intervals"
                " WHERE site = %s AND start_ts < %s AND end_ts > %s",
                (site, until, since),
            )
        }
    return facts


def versions_in_force(conn: psycopg.Connection, day: dt.date) -> dict[str, dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT DISTINCT ON (clause_id) clause_id, version, config FROM clause_versions"
            " WHERE effective_from <= %s AND (effective_to IS NULL OR effective_to >= %s)"
            " ORDER BY clause_id, version DESC",
            (day, day),
        ).fetchall()
    return {row["clause_id"]: row for row in rows}


def _key_flags(conn: psycopg.Connection) -> dict[str, bool]:
    rows = conn.execute(
        "SELECT clause_id, bool_or(key) FROM clause_versions GROUP BY clause_id"
    ).fetchall()
    return {clause_id: bool(key) for clause_id, key in rows}
