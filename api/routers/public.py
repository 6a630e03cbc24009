"""The opt-in public view of a site (`site.public: true`): no token, read-only, no personal
data. `GET /api/v1/public/{site}` answers JSON and `GET /public/{site}` a page; a site that
does not exist or has not opted in is a 404 either way. Code: compliance/public.py."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import HTMLResponse

from api.deps import DbConn
from api.models import PublicSite, SiteId, problems
from compliance.public import NotPublic, public_site, render_public_html

router = APIRouter(prefix="/public", tags=["public"])
pages = APIRouter(include_in_schema=False)


def _view(conn: DbConn, site: str) -> PublicSite:
    try:
        return public_site(conn, site, dt.datetime.now(dt.UTC))
    except NotPublic as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no public page for this site") from exc


@router.get("/{site}", responses=problems(404))
def public_figures(site: SiteId, conn: DbConn) -> PublicSite:
    return _view(conn, site)


@pages.get("/public/{site}", response_class=HTMLResponse)
def public_page(site: SiteId, conn: DbConn) -> HTMLResponse:
    return HTMLResponse(render_public_html(_view(conn, site)))
