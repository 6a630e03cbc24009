"""`GET /compliance`: compliance rate, not-assessable share and key-clause coverage per site,
clause and space over a period (definitions: compliance/rates.py and docs/api.md)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from api.auth import Reader
from api.deps import DbConn
from api.models import ComplianceReport, QueryTime, SiteId, problems
from api.periods import query_period
from compliance.rates import compliance_report
from store import registry

router = APIRouter(tags=["compliance"])
DEFAULT_PERIOD = dt.timedelta(days=7)


@router.get(
    "/compliance",
    responses=problems(401, 403, 404),
)
def get_compliance(
    conn: DbConn,
    principal: Reader,
    site: SiteId | None = None,
    clause: Annotated[str | None, Query(max_length=128)] = None,
    since: Annotated[QueryTime | None, Query(description="default: until − 7 days")] = None,
    until: Annotated[QueryTime | None, Query(description="exclusive; default: now")] = None,
) -> ComplianceReport:
    now = dt.datetime.now(dt.UTC)
    start, end = query_period(since, until, DEFAULT_PERIOD, now)
    sites = principal.site_filter(site)
    if sites is None:
        sites = registry.site_ids(conn)
    elif site is not None and not registry.site_exists(conn, site):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "site not found")
    return compliance_report(conn, sites, start, end, now, clause)
