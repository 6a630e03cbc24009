"""Quarterly and annual self-evaluation reports: list (`GET /reports`), produce one now
(`POST /reports` with a quarter "2026Q3" or a year "2026", facility managers and admins), read
one as JSON, printable HTML or CSV. Code: compliance/reports.py; an annual report's energy,
carbon and cost come from energy.summary."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, status
from fastapi.responses import HTMLResponse, Response

from api.auth import AlertActor, Principal, Reader
from api.deps import DbConn
from api.models import EvaluationReport, ReportCreate, SiteId, StoredReport, problems
from compliance.periods import BadPeriod
from compliance.reports import (
    ReportPart,
    generate_report,
    list_reports,
    stored_report_part,
)
from energy.summary import period_figures
from store import registry

router = APIRouter(prefix="/reports", tags=["reports"])
ReportId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.get("", responses=problems(401, 403))
def reports(conn: DbConn, principal: Reader, site: SiteId | None = None) -> list[StoredReport]:
    """Stored reports of the token's sites (or of `site`), newest period first."""
    return list_reports(conn, principal.site_filter(site))


@router.post("", status_code=status.HTTP_201_CREATED, responses=problems(401, 403, 404))
def create_report(body: ReportCreate, conn: DbConn, principal: AlertActor) -> StoredReport:
    principal.site_filter(body.site)
    if not registry.site_exists(conn, body.site):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "site not found")
    try:
        report_id, _ = generate_report(
            conn,
            body.site,
            body.period,
            principal.actor,
            dt.datetime.now(dt.UTC),
            energy=period_figures,
        )
    except BadPeriod as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [{"loc": ["body", "period"], "msg": str(exc), "type": "value_error"}],
        ) from exc
    conn.commit()
    return next(r for r in list_reports(conn, [body.site]) if r.id == report_id)


def _stored(conn: DbConn, principal: Principal, report_id: int, part: ReportPart) -> Any:
    stored = stored_report_part(conn, report_id, part)
    principal.require_visible(None if stored is None else stored[0], "report")
    assert stored is not None
    return stored[1]


@router.get("/{report_id}", responses=problems(401, 403, 404))
def report_figures(report_id: ReportId, conn: DbConn, principal: Reader) -> EvaluationReport:
    return EvaluationReport.model_validate(_stored(conn, principal, report_id, "figures"))


@router.get(
    "/{report_id}/html",
    response_class=HTMLResponse,
    responses=problems(401, 403, 404),
)
def report_html(report_id: ReportId, conn: DbConn, principal: Reader) -> HTMLResponse:
    """The printable report: self-contained (inline style and SVG, no script), served under a
    policy of its own that allows its inline styles by their hashes and nothing else."""
    page: str = _stored(conn, principal, report_id, "html")
    return HTMLResponse(page, headers={"Content-Security-Policy": report_policy(page)})


# Only the template writes a <style> element: text from data is escaped (config/templates.py).
STYLE_ELEMENT = re.compile(r"<style[^>]*>(.*?)</style>", re.DOTALL | re.IGNORECASE)


def report_policy(page: str) -> str:
    hashes = sorted(
        {
            "'sha256-" + base64.b64encode(hashlib.sha256(css.encode()).digest()).decode() + "'"
            for css in STYLE_ELEMENT.findall(page)
        }
    )
    return "; ".join(
        [
            "default-src 'none'",
            "style-src " + (" ".join(hashes) or "'none'"),
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


@router.get(
    "/{report_id}/csv",
    response_class=Response,
    responses={**problems(401, 403, 404), 200: {"content": {"text/csv": {}}}},
)
def report_csv(report_id: ReportId, conn: DbConn, principal: Reader) -> Response:
    text: str = _stored(conn, principal, report_id, "csv")
    return Response(
        ("\ufeff" + text).encode("utf-8"),  # a BOM, so spreadsheet programs read it as UTF-8
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="report-{report_id}.csv"'},
    )
