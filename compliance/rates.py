"""Compliance figures from the engine's compliance timelines, and key-clause coverage: shared
by the API (`GET /compliance`) and the register (statistics, reports, public view, search).

Definitions (also in docs/api.md):

- Judged time of a site runs up to `counted_until` = min(until, data time), where the data time
  is the watermark of the site's last engine checkpoint (`data_time` of `GET /sites`): the
  event time up to which its data has been judged. A site whose engine never saved a
  checkpoint has no data time: its stored intervals count as they are (`counted_until` null).
- Over a period [since, until), the time counted is every compliance interval clipped to
  [since, counted_until), plus the stretch each clause instance is still in (its open run,
  `engine_open_runs`, saved with the checkpoint) over the same span. An open run whose status
  is still being decided (a `for` or `clear_for` running) counts only up to where it began.
  Time a stored interval already covers is never counted twice: an open run that an interval
  written after the checkpoint has closed is left out.
- Time `outside_schedule` (outside the clause's schedule, its effective dates or its `when`
  gate) does not count at all; nor does a space or device its `applies_to` exempts (no
  instance judges it).
- Time a maintenance window (planned works, store/quiet.py) covers is exempt: it is taken out
  of compliant, violating and not-assessable time alike and reported as `exempt_s`, so it is
  in no rate. A window covers the clause instances of its scope: a whole site, a space with its
  subtree, a device, or one clause; over [starts_at, effective_end). Overlapping windows
  count once.
- Data-quality clauses (check kind `data_quality`) are not compliance clauses: their time is in
  no rate. A fault makes the metric unknown, so the clauses reading it are not assessable
  then; the fault itself is reported as `data_quality_s`: the time a device had at least one
  data-quality fault (the union over the data-quality clauses), per device, and summed per
  space and site.
- rate = compliant ÷ (compliant + violating), time-weighted over every clause × subject in the
  group (a clause, a space, a site); null when nothing was assessable.
- not_assessable_share = not_assessable ÷ (compliant + violating + not_assessable): how much
  of the judged time had no usable data.
- key-clause coverage of a site, at t = min(until, now):
  key clauses in force for the site = key clauses with a version in force on t's date whose
  `applies_to` selects at least one space or device of the site; such a clause is covered when
  it is (1) active: it produced compliance intervals for the site in the period, or an open run
  reaching into it, (2) bound to a live data source: for clauses that read metrics, a device of
  a selected space reporting one of those metrics has a reading within that metric's `max_gap`
  before t; for obligations, an event of the expected type was recorded at the site within the
  period; and (3) bound to a responsible party: a `responsible` assignment at the site for the
  clause's domain (or '*') is in force at t. coverage = covered ÷ in force; null when no key
  clause is in force.
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

from store import checkpoints

Missing = Literal["active", "live_data_source", "responsible_party"]


class Durations(BaseModel):
    """Seconds of each status in the period, and the figures derived from them."""

    compliant_s: float
    violating_s: float
    not_assessable_s: float
    # Judged time a maintenance window made exempt: in none of the three above, so in no rate.
    exempt_s: float = 0.0
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
    # Time its devices had a data-quality fault, summed over the devices (in no rate).
    data_quality_s: float = 0.0


class DeviceDataQuality(BaseModel):
    """A device's data-quality faults in the period (counted up to its site's counted_until)."""

    site: str
    space: str
    device: str
    # Time with at least one fault (the union over the data-quality clauses).
    data_quality_s: float
    clauses: list[str]  # the data-quality clauses that found a fault


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
    # Time its devices had a data-quality fault, summed over the devices (in no rate).
    data_quality_s: float = 0.0
    # Event time up to which the site's data has been judged (its last checkpoint's watermark);
    # null when its engine never saved one.
    data_time: dt.datetime | None = None
    # The figures count time in [since, counted_until): min(until, data_time), not before
    # since; null without a data time (stored intervals only).
    counted_until: dt.datetime | None = None


class ComplianceReport(BaseModel):
    since: dt.datetime
    until: dt.datetime
    sites: list[SiteCompliance]
    clauses: list[ClauseCompliance]  # compliance clauses only, not data-quality ones
    spaces: list[SpaceCompliance]
    data_quality: list[DeviceDataQuality] = []  # devices with a fault in the period


@dataclass
class Tally:
    compliant: float = 0.0
    violating: float = 0.0
    not_assessable: float = 0.0
    exempt: float = 0.0

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
            "exempt_s": self.exempt,
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


# Every judged stretch of the period: compliance intervals and open runs, each clipped to
# [since, the site's limit) (counted_until, or until without a data time); an open run that an
# interval stored after its checkpoint has closed (one starting at or after the run's start) is
# left out, so no time counts twice. Compliance clauses come out summed per clause, space and
# status, less the time maintenance windows covering them make exempt (`exempt`: the union of
# the windows over each stretch, so overlapping windows count once); the faults of data-quality
# clauses one by one, for the union per device.
_SPANS = """
WITH lim(site, until) AS (SELECT * FROM unnest(%(sites)s::text[], %(limits)s::timestamptz[])),
quality AS (
    SELECT clause_id, version FROM clause_versions
    WHERE config -> 'check' ->> 'kind' = 'data_quality'
),
spans AS (
    SELECT ci.site, ci.clause_id, ci.clause_version, ci.space, ci.device, ci.status,
           greatest(ci.start_ts, %(since)s) AS s, least(ci.end_ts, lim.until) AS e
    FROM compliance_intervals ci JOIN lim ON lim.site = ci.site
    WHERE ci.start_ts < lim.until AND ci.end_ts > %(since)s
      AND ci.status <> 'outside_schedule'
      AND (%(clause)s::text IS NULL OR ci.clause_id = %(clause)s)
    UNION ALL
    SELECT r.site, r.clause_id, r.clause_version, r.space, r.device, r.status,
           greatest(r.since, %(since)s), least(lim.until, r.known_until)
    FROM (
        SELECT site, clause_id, clause_version, space, device, status,
               to_timestamp(since) AS since,
               coalesce(to_timestamp(known_until), 'infinity'::timestamptz) AS known_until
        FROM engine_open_runs
        WHERE site = ANY(%(sites)s) AND (%(clause)s::text IS NULL OR clause_id = %(clause)s)
    ) r JOIN lim ON lim.site = r.site
    WHERE greatest(r.since, %(since)s) < least(lim.until, r.known_until)
      AND NOT EXISTS (
          SELECT 1 FROM compliance_intervals ci
          WHERE ci.site = r.site AND ci.clause_id = r.clause_id
            AND ci.clause_version = r.clause_version AND ci.space = r.space
            AND ci.device = r.device AND ci.start_ts >= r.since
      )
),
"""
# Without a maintenance window in the period nothing is exempt: the stretches as they are.
_MARKED = """
marked AS (
    SELECT spans.*, q.clause_id IS NOT NULL AS data_quality, 0::float8 AS exempt
    FROM spans LEFT JOIN quality q
      ON q.clause_id = spans.clause_id AND q.version = spans.clause_version
)
"""
_MARKED_EXEMPT = """
numbered AS (SELECT row_number() OVER () AS n, spans.* FROM spans),
windows AS (
    SELECT * FROM quiet_periods
    WHERE kind = 'maintenance' AND site = ANY(%(sites)s) AND effective_end > %(since)s
      AND effective_end > starts_at  -- one cancelled before it began covers nothing
),
-- Per site, the time any window covers: one multirange test per stretch finds the few a window
-- touches, instead of comparing every stretch with every window.
envelope AS (
    SELECT site, range_agg(tstzrange(starts_at, effective_end)) AS covered
    FROM windows GROUP BY site
),
touched AS (
    SELECT sp.* FROM numbered sp JOIN envelope v
      ON v.site = sp.site AND v.covered && tstzrange(sp.s, sp.e)
),
exempt AS (
    SELECT covered.n, sum(extract(epoch FROM upper(piece) - lower(piece))) AS seconds
    FROM (
        SELECT sp.n, range_agg(tstzrange(greatest(w.starts_at, sp.s),
                                         least(w.effective_end, sp.e))) AS pieces
        FROM touched sp JOIN windows w
          ON w.site = sp.site AND w.starts_at < sp.e AND w.effective_end > sp.s
         AND cw_quiet_covers(w, sp.site, sp.space, sp.device, sp.clause_id)
        GROUP BY sp.n
    ) covered, unnest(covered.pieces) AS piece
    GROUP BY covered.n
),
marked AS (
    SELECT numbered.*, q.clause_id IS NOT NULL AS data_quality,
           coalesce(exempt.seconds, 0)::float8 AS exempt
    FROM numbered
    LEFT JOIN quality q
      ON q.clause_id = numbered.clause_id AND q.version = numbered.clause_version
    LEFT JOIN exempt ON exempt.n = numbered.n
)"""
_TOTALS = """
SELECT site, clause_id, space, status, NULL::text AS device,
       sum(extract(epoch FROM e - s) - exempt)::float8 AS seconds,
       sum(exempt)::float8 AS exempt, NULL::float8 AS s, NULL::float8 AS e
FROM marked WHERE NOT data_quality
GROUP BY site, clause_id, space, status
UNION ALL
SELECT site, clause_id, space, status, device, NULL, NULL, extract(epoch FROM s)::float8,
       extract(epoch FROM e)::float8
FROM marked WHERE data_quality AND status = 'violating'
"""
JUDGED_TIME = _SPANS + _MARKED + _TOTALS
JUDGED_TIME_EXEMPT = _SPANS + _MARKED_EXEMPT + _TOTALS
# Whether a maintenance window of the sites reaches into [since, until).
WINDOWS_IN_PERIOD = (
    "SELECT EXISTS (SELECT 1 FROM quiet_periods WHERE kind = 'maintenance'"
    " AND site = ANY(%s) AND starts_at < %s AND effective_end > %s"
    " AND effective_end > starts_at)"
)


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
    faults: dict[tuple[str, str, str], list[tuple[float, float, str]]] = defaultdict(list)
    data_times = checkpoints.data_times(conn, sites)
    counted_until = {
        site: None if data_times.get(site) is None else max(since, min(until, data_times[site]))
        for site in sites
    }
    # In UTC: an array of timestamps travels as text, where PostgreSQL refuses offsets beyond
    # ±15:59 that a query's aware time may carry.
    limits = [(counted_until[site] or until).astimezone(dt.UTC) for site in sites]
    with conn.cursor() as cur:
        windows = cur.execute(WINDOWS_IN_PERIOD, (sites, until, since)).fetchone()
        rows = cur.execute(
            JUDGED_TIME_EXEMPT if windows and windows[0] else JUDGED_TIME,
            {"sites": sites, "limits": limits, "since": since, "clause": clause},
        ).fetchall()
    for site, clause_id, space, status, device, seconds, exempt, start, end in rows:
        if device is None:
            for tally in (by_clause[(site, clause_id)], by_space[(site, space)], by_site[site]):
                tally.add(status, seconds)
                tally.exempt += exempt
        else:
            faults[(site, space, device)].append((start, end, clause_id))
    quality = [
        DeviceDataQuality(
            site=site,
            space=space,
            device=device,
            data_quality_s=_union_seconds([(s, e) for s, e, _ in spans]),
            clauses=sorted({clause_id for _, _, clause_id in spans}),
        )
        for (site, space, device), spans in sorted(faults.items())
    ]
    quality_of_space: dict[tuple[str, str], float] = defaultdict(float)
    quality_of_site: dict[str, float] = defaultdict(float)
    for item in quality:
        quality_of_space[(item.site, item.space)] += item.data_quality_s
        quality_of_site[item.site] += item.data_quality_s

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
                data_quality_s=quality_of_site[site],
                data_time=data_times.get(site),
                counted_until=counted_until[site],
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
            SpaceCompliance(
                site=site,
                space=space,
                data_quality_s=quality_of_space[(site, space)],
                **by_space[(site, space)].figures(),
            )
            for site, space in sorted(by_space.keys() | quality_of_space.keys())
        ],
        data_quality=quality,
    )


def _union_seconds(spans: Iterable[tuple[float, float]]) -> float:
    """Length of the union of [start, end) spans."""
    total = 0.0
    reach = float("-inf")
    for start, end in sorted(spans):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


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
                "SELECT clause_id FROM compliance_intervals"
                " WHERE site = %(site)s AND start_ts < %(until)s AND end_ts > %(since)s"
                " UNION SELECT r.clause_id FROM engine_open_runs r"
                " JOIN engine_checkpoints c ON c.site = r.site WHERE r.site = %(site)s"
                " AND to_timestamp(r.since) < %(until)s AND to_timestamp(c.watermark) > %(since)s"
                " AND (r.known_until IS NULL OR to_timestamp(r.known_until) > %(since)s)",
                {"site": site, "since": since, "until": until},
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
