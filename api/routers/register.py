"""The standards register: search (`GET /register`), one clause in detail
(`GET /register/{clause_id}`), and backtests of a clause file over a site's history
(`POST /register/backtest`, admins). Clauses are not site data; the per-site parts of a
clause's detail cover only the token's sites. Code: compliance/."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status
from fastapi.responses import FileResponse

from api import STATIC_DIR
from api.auth import ClauseAdmin, Reader
from api.deps import DbConn
from api.models import BacktestRequest, BacktestResult, ClauseDetail, RegisterEntry, problems
from api.routers.clauses import pre_parse
from compliance.backtest import BacktestError, backtest
from compliance.register import (
    ClauseNotFound,
    ClauseStatus,
    Confidence,
    RegisterQuery,
    clause_detail,
    search_register,
)
from config.documents import ConfigError
from config.files import load_clause_file
from store import registry

router = APIRouter(prefix="/register", tags=["register"])
pages = APIRouter(include_in_schema=False)
ClauseId = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_.-]*$", max_length=128)]


@router.get("", responses=problems(401, 403))
def search(
    conn: DbConn,
    principal: Reader,
    q: Annotated[str | None, Query(max_length=200, description="words, all must match")] = None,
    domain: Annotated[str | None, Query(max_length=64)] = None,
    key: bool | None = None,
    confidence: Confidence | None = None,
    status_: Annotated[ClauseStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[RegisterEntry]:
    """Clauses whose code, title, text or domain contain every word of `q` (Chinese included),
    filtered on their current version; status from effective dates against today (UTC)."""
    query = RegisterQuery(
        q=q, domain=domain, key=key, confidence=confidence, status=status_, limit=limit
    )
    return search_register(conn, query, dt.datetime.now(dt.UTC).date())


@router.get("/{clause_id}", responses=problems(401, 403, 404))
def detail(clause_id: ClauseId, conn: DbConn, principal: Reader) -> ClauseDetail:
    """Versions with what changed between them; where the current version applies at each of
    the token's sites, its data sources, responsible parties, 30-day compliance and open
    alerts."""
    sites = principal.site_filter(None)
    if sites is None:
        sites = registry.site_ids(conn)
    try:
        return clause_detail(conn, clause_id, sites, dt.datetime.now(dt.UTC))
    except ClauseNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "clause not found") from exc


@router.post("/backtest", responses=problems(401, 403, 404))
def run_backtest(
    body: BacktestRequest, conn: DbConn, principal: ClauseAdmin
) -> list[BacktestResult]:
    """Judges each clause version of the file over the site's stored history in
    [since, until), beside the version in force; stores nothing."""
    principal.site_filter(body.site)
    if not registry.site_exists(conn, body.site):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "site not found")
    problem = pre_parse(body.yaml)
    if problem is not None:
        raise _body_error("yaml", f"{problem.message} (line {problem.line})")
    with tempfile.TemporaryDirectory(prefix="cw-backtest-") as folder:
        path = FilePath(folder) / "clauses.yaml"
        path.write_text(body.yaml, encoding="utf-8")
        try:
            parsed = load_clause_file(path)
        except ConfigError as exc:
            first = exc.problems[0]
            raise _body_error("yaml", f"{first.where}: {first.message}") from exc
        except RecursionError as exc:
            raise _body_error("yaml", "the document nests too deeply") from exc
    versions = [c for c in parsed.clauses if body.clause in (None, c.id)]
    if not versions:
        raise _body_error("clause", "no such clause in the file")
    try:
        return [backtest(conn, body.site, v, body.since, body.until) for v in versions]
    except BacktestError as exc:
        raise _body_error("until", str(exc)) from exc


def _body_error(field: str, message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        [{"loc": ["body", field], "msg": message, "type": "value_error"}],
    )


@pages.get("/register")
def register_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "register.html", media_type="text/html; charset=utf-8")
