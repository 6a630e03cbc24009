"""The public view of one site: opt-in (`site.public: true` in the site model), read-only and
unauthenticated. It shows compliance figures per clause over the last 30 days and nothing
personal: no party names, contacts or assignments, no actors of alert steps, no readings,
no spaces (room names can identify people). The models below are the whole of what it
reveals; they are built field by field, never from a row."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
from pydantic import BaseModel

from compliance.rates import compliance_report
from config.templates import render
from store import registry

PERIOD = dt.timedelta(days=30)


class PublicClause(BaseModel):
    clause_id: str
    standard: str
    number: str
    title: str
    key: bool
    compliance_rate: float | None
    data_completeness: float | None


class PublicSite(BaseModel):
    site: str
    name: str
    since: dt.datetime
    until: dt.datetime
    counted_until: dt.datetime | None  # the figures count time up to here (the data time)
    compliance_rate: float | None
    # Time planned maintenance made exempt, out of the rate (said, so the rate is not misread).
    exempt_s: float = 0.0
    key_clause_coverage: float | None
    open_alerts: int
    clauses: list[PublicClause]


class NotPublic(LookupError):
    """The site does not exist or has not opted in (both answer 404)."""


def public_site(conn: psycopg.Connection[Any], site: str, now: dt.datetime) -> PublicSite:
    registered = registry.site_row(conn, site)
    if registered is None or registered.info.get("public") is not True:
        raise NotPublic(site)
    since = now - PERIOD
    report = compliance_report(conn, [site], since, now, now)
    figures = report.sites[0]
    titles = {
        clause_id: (standard, number, title)
        for clause_id, standard, number, title in conn.execute(
            "SELECT DISTINCT ON (clause_id) clause_id, standard_code, number, title"
            " FROM clause_versions ORDER BY clause_id, version DESC"
        ).fetchall()
    }
    clauses = []
    for clause in report.clauses:
        standard, number, title = titles.get(clause.clause_id, ("", "", clause.clause_id))
        clauses.append(
            PublicClause(
                clause_id=clause.clause_id,
                standard=standard,
                number=number,
                title=title,
                key=clause.key,
                compliance_rate=clause.rate,
                data_completeness=(
                    None if clause.not_assessable_share is None else 1 - clause.not_assessable_share
                ),
            )
        )
    return PublicSite(
        site=site,
        name=registered.name,
        since=since,
        until=now,
        counted_until=(
            None if figures.counted_until is None else figures.counted_until.astimezone(dt.UTC)
        ),
        compliance_rate=figures.rate,
        exempt_s=figures.exempt_s,
        key_clause_coverage=figures.coverage.rate,
        open_alerts=figures.open_alerts,
        clauses=clauses,
    )


def render_public_html(view: PublicSite) -> str:
    """The page of `view` (templates/public.html; the stylesheet is /static/public.css)."""
    return render("compliance", "public.html", view=view)
