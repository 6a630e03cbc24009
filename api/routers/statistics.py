"""Statistics (`GET /statistics`): one site's figures and alarm-system health over a period,
or an organisation node (city, district) summed over the token's sites beneath it with its
children one level down. Definitions: clausewatch/register/statistics.py, docs/register.md."""

from __future__ import annotations

import datetime as dt
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import FileResponse

from api.auth import Reader
from api.deps import DbConn
from api.models import SiteId, problems
from clausewatch.register.statistics import (
    OrgStatistics,
    SiteStatistics,
    UnknownSite,
    org_statistics,
    site_statistics,
)

router = APIRouter(prefix="/statistics", tags=["statistics"])
pages = APIRouter(include_in_schema=False)
STATIC_DIR = FilePath(__file__).resolve().parent.parent / "static"
DEFAULT_PERIOD = dt.timedelta(days=30)
MAX_PERIOD = dt.timedelta(days=3660)
OrgPath = Annotated[
    str,
    Query(
        pattern=r"^([a-z0-9][a-z0-9_-]{0,63}(/[a-z0-9][a-z0-9_-]{0,63})*)?$",
        max_length=400,
        description="organisation path, e.g. jinan/lixia; empty: every visible site",
    ),
]


def period(since: dt.datetime | None, until: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
    """[since, until) with defaults (the 30 days to now) and limits; naive times are UTC."""
    now = dt.datetime.now(dt.UTC)
    end = _aware(until) if until is not None else now
    try:
        start = _aware(since) if since is not None else end - DEFAULT_PERIOD
    except OverflowError as exc:
        raise _field_error("until", "too early to have a default period before it") from exc
    if start >= end:
        raise _field_error("since", "must be before until")
    if end - start > MAX_PERIOD:
        raise _field_error("since", "the period may be at most ten years long")
    return start, end


@router.get("/site/{site}", responses=problems(401, 403, 404))
def site_figures(
    site: SiteId,
    conn: DbConn,
    principal: Reader,
    since: Annotated[dt.datetime | None, Query(description="default: until − 30 days")] = None,
    until: Annotated[dt.datetime | None, Query(description="exclusive; default: now")] = None,
) -> SiteStatistics:
    start, end = period(since, until)
    principal.site_filter(site)
    try:
        return site_statistics(conn, site, start, end, dt.datetime.now(dt.UTC))
    except UnknownSite as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "site not found") from exc


@router.get("/org", responses=problems(401, 403))
def org_figures(
    conn: DbConn,
    principal: Reader,
    path: OrgPath = "",
    since: Annotated[dt.datetime | None, Query(description="default: until − 30 days")] = None,
    until: Annotated[dt.datetime | None, Query(description="exclusive; default: now")] = None,
) -> OrgStatistics:
    """A node of the organisation tree over the token's sites beneath it (a site-scoped token
    sees only its own sites' share), and its children."""
    start, end = period(since, until)
    nodes = [part for part in path.split("/") if part]
    return org_statistics(
        conn, nodes, principal.site_filter(None), start, end, dt.datetime.now(dt.UTC)
    )


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _field_error(field: str, message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        [{"loc": ["query", field], "msg": message, "type": "value_error"}],
    )


@pages.get("/statistics")
def statistics_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "stats.html", media_type="text/html; charset=utf-8")
