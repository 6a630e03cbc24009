"""The standards register: search over every clause and version, and one clause in detail.

Search matches the text `cw_clause_document(...)` (migration 0060: clause id, standard code and
title, number, title, clause text, domain; lower-cased) against each word of the query with
ILIKE, so Chinese needs no tokenizer: 室内温度 is found wherever those characters stand. With
`pg_trgm` a trigram index serves the match and `word_similarity` ranks the hits; without it
the same match runs as a scan, ranked by clause id.

A clause's status comes from its versions' effective dates against `today`: `in_force` when a
version is in force, else `planned` when a version starts later, else `superseded`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel, Field, JsonValue

from compliance.rates import compliance_report, read_metrics, selection, site_facts

ClauseStatus = Literal["in_force", "superseded", "planned"]
Confidence = Literal["A", "A/B", "B", "B-", "C"]
DOCUMENT = (
    "cw_clause_document(clause_id, standard_code, standard_title, number, title, text, domain)"
)
# Compliance shown beside a clause: the last 30 days, a period long enough to include weekly
# obligations and short enough to reflect the present.
RECENT = dt.timedelta(days=30)
# Fields that differ between any two versions by construction; shown as columns, not changes.
NOT_CHANGES = frozenset({"version", "effective_from", "effective_to"})
EXCERPT_CHARS = 60
# 复审: a clause's current version is reviewed at most this many years after it took effect
# (the five-year review cycle of standards), and the register reminds this many days before.
REVIEW_YEARS = 5
REVIEW_REMINDER = dt.timedelta(days=90)


class RegisterQuery(BaseModel):
    q: str | None = Field(default=None, max_length=200)
    domain: str | None = None
    key: bool | None = None
    confidence: Confidence | None = None
    status: ClauseStatus | None = None
    limit: int = Field(default=100, ge=1, le=500)


class StandardRef(BaseModel):
    code: str
    title: str
    edition: str


class RegisterEntry(BaseModel):
    clause_id: str
    standard: StandardRef
    number: str
    title: str
    domain: str
    key: bool
    confidence: str
    severity: str
    status: ClauseStatus
    # The version in force today, else the newest one.
    version: int
    versions: int
    effective_from: dt.date
    effective_to: dt.date | None
    excerpt: str
    review_due: dt.date  # 复审: the current version's first day plus REVIEW_YEARS
    review_reminder: bool  # the review is due within REVIEW_REMINDER, or overdue
    pending_revisions: int  # revisions waiting for approval or publication


class VersionChange(BaseModel):
    """One leaf of the version's config that differs from the previous version (dotted path)."""

    path: str
    before: JsonValue
    after: JsonValue


class VersionEntry(BaseModel):
    version: int
    content_hash: str
    status: ClauseStatus
    effective_from: dt.date
    effective_to: dt.date | None
    number: str
    title: str
    text: str
    severity: str
    key: bool
    confidence: str
    changes: list[VersionChange]  # against the previous version; empty for the first


class DataSource(BaseModel):
    device: str
    space: str
    metrics: list[str]
    last_reading: dt.datetime | None


class ResponsibleParty(BaseModel):
    party: str
    name: str
    kind: str
    space: str
    domain: str
    role: str
    level: int


class SiteApplication(BaseModel):
    """Where the clause's current version applies at one site, and how it is doing there."""

    site: str
    spaces: list[str]
    data_sources: list[DataSource]
    events: list[str]  # for obligations: the event type that fulfils it
    responsible: list[ResponsibleParty]
    compliance_rate: float | None  # the last 30 days (docs/api.md definition)
    counted_until: dt.datetime | None  # the rate counts time up to here (the site's data time)
    open_alerts: int


class ClauseDetail(BaseModel):
    clause_id: str
    standard: StandardRef
    status: ClauseStatus
    domain: str
    key: bool
    confidence: str
    versions: list[VersionEntry]
    sites: list[SiteApplication]


class ClauseNotFound(LookupError):
    pass


def version_status(
    effective_from: dt.date, effective_to: dt.date | None, today: dt.date
) -> ClauseStatus:
    if effective_from > today:
        return "planned"
    if effective_to is not None and effective_to < today:
        return "superseded"
    return "in_force"


def clause_status(statuses: Iterable[str]) -> ClauseStatus:
    found = set(statuses)
    if "in_force" in found:
        return "in_force"
    if "planned" in found:
        return "planned"
    return "superseded"


def has_trigrams(conn: psycopg.Connection[Any]) -> bool:
    return (
        conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'").fetchone() is not None
    )


def like_pattern(term: str) -> str:
    """`%term%` with LIKE's wildcards and escape character taken literally."""
    escaped = term.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search_register(
    conn: psycopg.Connection[Any], query: RegisterQuery, today: dt.date
) -> list[RegisterEntry]:
    """Clauses whose text (any version) contains every word of `query.q`, filtered on their
    current version; best matches first when pg_trgm ranks them, else by clause id."""
    terms = (query.q or "").split()
    args: dict[str, Any] = {"today": today, "q": (query.q or "").lower()}
    conditions = []
    for i, term in enumerate(terms):
        args[f"t{i}"] = like_pattern(term)
        conditions.append(f"{DOCUMENT} LIKE %(t{i})s")
    ranked = bool(terms) and has_trigrams(conn)
    rank = f"max(word_similarity(%(q)s, {DOCUMENT}))" if ranked else "0.0"
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "WITH matched AS ("
            f"  SELECT clause_id, {rank}::float8 AS rank FROM clause_versions"
            f"  WHERE {' AND '.join(conditions) or 'TRUE'} GROUP BY clause_id"
            "), versions AS ("
            "  SELECT v.*, m.rank,"
            "    CASE WHEN v.effective_from > %(today)s THEN 'planned'"
            "         WHEN v.effective_to < %(today)s THEN 'superseded'"
            "         ELSE 'in_force' END AS version_status"
            "  FROM clause_versions v JOIN matched m USING (clause_id)"
            ")"
            " SELECT DISTINCT ON (clause_id) clause_id, version, standard_code, standard_title,"
            " standard_edition, number, title, text, domain, key, confidence, severity,"
            " effective_from, effective_to, rank,"
            " count(*) OVER w AS versions,"
            " array_agg(version_status) OVER w AS statuses"
            " FROM versions WINDOW w AS (PARTITION BY clause_id)"
            " ORDER BY clause_id, (version_status = 'in_force') DESC, version DESC",
            args,
        ).fetchall()
    pending = dict(
        conn.execute(
            "SELECT clause_id, count(*)::int FROM clause_revisions"
            " WHERE state IN ('pending', 'approved') GROUP BY clause_id"
        ).fetchall()
    )
    entries: list[tuple[float, RegisterEntry]] = []
    for row in rows:
        review = review_due(row["effective_from"])
        entry = RegisterEntry(
            clause_id=row["clause_id"],
            standard=StandardRef(
                code=row["standard_code"],
                title=row["standard_title"],
                edition=row["standard_edition"],
            ),
            number=row["number"],
            title=row["title"],
            domain=row["domain"],
            key=row["key"],
            confidence=row["confidence"],
            severity=row["severity"],
            status=clause_status(row["statuses"]),
            version=row["version"],
            versions=row["versions"],
            effective_from=row["effective_from"],
            effective_to=row["effective_to"],
            excerpt=excerpt(row["text"] or row["title"], terms),
            review_due=review,
            review_reminder=review <= today + REVIEW_REMINDER,
            pending_revisions=pending.get(row["clause_id"], 0),
        )
        if _passes(entry, query):
            entries.append((row["rank"], entry))
    entries.sort(key=lambda pair: (-pair[0], pair[1].clause_id))
    return [entry for _, entry in entries[: query.limit]]


def reviews_due(conn: psycopg.Connection[Any], today: dt.date) -> list[RegisterEntry]:
    """Clauses whose review (复审) is due within REVIEW_REMINDER of `today`, or overdue."""
    return [
        entry
        for entry in search_register(conn, RegisterQuery(limit=500), today)
        if entry.review_reminder
    ]


def review_due(effective_from: dt.date) -> dt.date:
    """When a version that took effect on `effective_from` is due for review (复审)."""
    year = effective_from.year + REVIEW_YEARS
    try:
        return effective_from.replace(year=year)
    except ValueError:  # 29 February
        return dt.date(year, 3, 1)


def _passes(entry: RegisterEntry, query: RegisterQuery) -> bool:
    return (
        (query.domain is None or entry.domain == query.domain)
        and (query.key is None or entry.key == query.key)
        and (query.confidence is None or entry.confidence == query.confidence)
        and (query.status is None or entry.status == query.status)
    )


def excerpt(text: str, terms: list[str]) -> str:
    """A window of the text around the first query word it contains (or its start)."""
    lowered = text.lower()
    hits = [lowered.find(term.lower()) for term in terms]
    at = min((hit for hit in hits if hit >= 0), default=0)
    start = max(0, at - EXCERPT_CHARS // 2)
    piece = text[start : start + EXCERPT_CHARS]
    return ("…" if start > 0 else "") + piece + ("…" if start + EXCERPT_CHARS < len(text) else "")


def config_changes(before: dict[str, Any], after: dict[str, Any]) -> list[VersionChange]:
    """Leaves of two clause configs that differ, by dotted path (params.limit.default,
    check.max, applies_to.space_types[1]); the version number and effective dates excluded."""
    old = _flatten({k: v for k, v in before.items() if k not in NOT_CHANGES})
    new = _flatten({k: v for k, v in after.items() if k not in NOT_CHANGES})
    return [
        VersionChange(path=path, before=old.get(path), after=new.get(path))
        for path in sorted(old.keys() | new.keys())
        if old.get(path) != new.get(path)
    ]


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        if not node:
            return {prefix: {}} if prefix else {}
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(node, list):
        if not node:
            return {prefix: []}
        flat = {}
        for index, value in enumerate(node):
            flat.update(_flatten(value, f"{prefix}[{index}]"))
        return flat
    return {prefix: node}


def clause_detail(
    conn: psycopg.Connection[Any],
    clause_id: str,
    sites: list[str],
    now: dt.datetime,
) -> ClauseDetail:
    """Every version of a clause with what changed, and for each of `sites` where its current
    version applies, its data sources, responsible parties, recent compliance and open alerts.
    Raises ClauseNotFound."""
    today = now.date()
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT * FROM clause_versions WHERE clause_id = %s ORDER BY version", (clause_id,)
        ).fetchall()
    if not rows:
        raise ClauseNotFound(clause_id)
    versions: list[VersionEntry] = []
    previous: dict[str, Any] | None = None
    for row in rows:
        versions.append(
            VersionEntry(
                version=row["version"],
                content_hash=row["content_hash"],
                status=version_status(row["effective_from"], row["effective_to"], today),
                effective_from=row["effective_from"],
                effective_to=row["effective_to"],
                number=row["number"],
                title=row["title"],
                text=row["text"],
                severity=row["severity"],
                key=row["key"],
                confidence=row["confidence"],
                changes=[] if previous is None else config_changes(previous, row["config"]),
            )
        )
        previous = row["config"]
    in_force = [r for r, v in zip(rows, versions, strict=True) if v.status == "in_force"]
    current = in_force[-1] if in_force else rows[-1]
    applications = [_application(conn, site, clause_id, current["config"], now) for site in sites]
    return ClauseDetail(
        clause_id=clause_id,
        standard=StandardRef(
            code=current["standard_code"],
            title=current["standard_title"],
            edition=current["standard_edition"],
        ),
        status=clause_status(v.status for v in versions),
        domain=current["domain"],
        key=current["key"],
        confidence=current["confidence"],
        versions=versions,
        sites=[a for a in applications if a is not None],
    )


def _application(
    conn: psycopg.Connection[Any],
    site: str,
    clause_id: str,
    config: dict[str, Any],
    now: dt.datetime,
) -> SiteApplication | None:
    """The clause at one site; None when its selector picks nothing there. Where it applies is
    its `applies_to` selection, as key-clause coverage reads it: a selected space without a
    device reporting what the clause reads shows as no data source (a gap), not as absent."""
    since = now - RECENT
    facts = site_facts(conn, site, since, now, now)
    spaces, devices = selection(facts, config.get("applies_to") or {})
    if not spaces and not devices:
        return None
    check = config.get("check") or {}
    read = read_metrics(check)
    sources = []
    if check.get("kind") != "obligation":
        for device_id in sorted(devices):
            device = facts.devices[device_id]
            reported = sorted(device["metrics"] or {})
            metrics = [m for m in reported if not read or m in read]
            if not metrics:
                continue
            seen = [facts.last_seen.get((device_id, m)) for m in metrics]
            sources.append(
                DataSource(
                    device=device_id,
                    space=device["space"],
                    metrics=metrics,
                    last_reading=max((s for s in seen if s is not None), default=None),
                )
            )
    domain = config.get("domain", "")
    with conn.cursor(row_factory=dict_row) as cur:
        parties = cur.execute(
            "SELECT a.party, p.name, p.kind, a.space, a.domain, a.role, a.level"
            " FROM assignments a JOIN parties p ON p.site = a.site AND p.id = a.party"
            " WHERE a.site = %(site)s AND a.domain IN (%(domain)s, '*')"
            " AND a.valid_from <= %(now)s AND (a.valid_to IS NULL OR a.valid_to > %(now)s)"
            " ORDER BY a.role DESC, a.level, a.party",
            {"site": site, "domain": domain, "now": now},
        ).fetchall()
        open_row = cur.execute(
            "SELECT count(*) AS n FROM alerts"
            " WHERE site = %s AND clause_id = %s AND state <> 'closed'",
            (site, clause_id),
        ).fetchone()
    # A party answers for its space's subtree: relevant when that subtree meets the selection.
    responsible = [ResponsibleParty(**p) for p in parties if facts.subtree(p["space"]) & spaces]
    report = compliance_report(conn, [site], since, now, now, clause_id)
    rate = next((c.rate for c in report.clauses if c.clause_id == clause_id), None)
    (figures,) = report.sites
    return SiteApplication(
        site=site,
        spaces=sorted(spaces),
        data_sources=sources,
        events=[check["event"]] if check.get("kind") == "obligation" else [],
        responsible=responsible,
        compliance_rate=rate,
        counted_until=figures.counted_until,
        open_alerts=open_row["n"] if open_row else 0,
    )
