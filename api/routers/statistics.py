"""Statistics (`GET /statistics`): one site's figures and alarm-system health over a period,
or an organisation node (city, district) summed over the token's sites beneath it with its
children one level down, with attainment against the targets of the plan; the targets per
organisation node (`/statistics/targets`: read by every reader, set by unscoped admins: they
span sites). Definitions: compliance/statistics.py, compliance/targets.py, docs/register.md."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import FileResponse

from api import STATIC_DIR
from api.auth import GlobalAdmin, Reader
from api.deps import DbConn
from api.models import (
    OrgStatistics,
    QueryTime,
    SiteId,
    SiteStatistics,
    TargetSetting,
    TargetsUpdate,
    problems,
)
from api.periods import query_period
from compliance.statistics import org_statistics, site_statistics
from compliance.targets import Targets, clear_targets, list_targets, set_targets
from store.registry import UnknownSite

router = APIRouter(prefix="/statistics", tags=["statistics"])
pages = APIRouter(include_in_schema=False)
DEFAULT_PERIOD = dt.timedelta(days=30)
OrgPath = Annotated[
    str,
    Query(
        pattern=r"^([a-z0-9][a-z0-9_-]{0,63}(/[a-z0-9][a-z0-9_-]{0,63})*)?$",
        max_length=400,
        description="organisation path, e.g. jinan/lixia; empty: every visible site",
    ),
]


@router.get("/site/{site}", responses=problems(401, 403, 404))
def site_figures(
    site: SiteId,
    conn: DbConn,
    principal: Reader,
    since: Annotated[QueryTime | None, Query(description="default: until − 30 days")] = None,
    until: Annotated[QueryTime | None, Query(description="exclusive; default: now")] = None,
) -> SiteStatistics:
    start, end = query_period(since, until, DEFAULT_PERIOD, dt.datetime.now(dt.UTC))
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
    since: Annotated[QueryTime | None, Query(description="default: until − 30 days")] = None,
    until: Annotated[QueryTime | None, Query(description="exclusive; default: now")] = None,
) -> OrgStatistics:
    """A node of the organisation tree over the token's sites beneath it (a site-scoped token
    sees only its own sites' share), and its children."""
    start, end = query_period(since, until, DEFAULT_PERIOD, dt.datetime.now(dt.UTC))
    return org_statistics(
        conn, _nodes(path), principal.site_filter(None), start, end, dt.datetime.now(dt.UTC)
    )


@router.get("/targets", responses=problems(401, 403))
def targets(conn: DbConn, principal: Reader) -> list[TargetSetting]:
    """The targets set per organisation node; a node without its own takes its nearest
    ancestor's, and with none the plan's (0.90, 0.95, 0.30)."""
    return list_targets(conn)


@router.put("/targets", responses=problems(401, 403))
def put_targets(body: TargetsUpdate, conn: DbConn, principal: GlobalAdmin) -> TargetSetting:
    setting = set_targets(
        conn,
        _nodes(body.path),
        Targets(
            compliance_rate=body.compliance_rate,
            key_clause_coverage=body.key_clause_coverage,
            evaluated_share=body.evaluated_share,
        ),
        principal.actor,
        dt.datetime.now(dt.UTC),
    )
    conn.commit()
    return setting


@router.delete(
    "/targets", status_code=status.HTTP_204_NO_CONTENT, responses=problems(401, 403, 404)
)
def delete_targets(conn: DbConn, principal: GlobalAdmin, path: OrgPath = "") -> None:
    """The node takes its ancestor's targets (or the plan's) again."""
    if not clear_targets(conn, _nodes(path), principal.actor, dt.datetime.now(dt.UTC)):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no targets set for that node")
    conn.commit()


def _nodes(path: str) -> list[str]:
    return [part for part in path.split("/") if part]


@pages.get("/statistics")
def statistics_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "stats.html", media_type="text/html; charset=utf-8")
