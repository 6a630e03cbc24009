"""The site model as a workbook over the API (issue 21): `POST /sites/import` (an .xlsx workbook
or a zip of CSV files as the body; a dry run shows what it adds, changes and removes, and every
problem by sheet, row and column; applied, it writes the site's file in the configuration
directory the service runs with and syncs the registry, as `clausewatch site import` does),
`GET /sites/{site}/export.xlsx` and `GET /sites/template.xlsx`. Applied, an import only
bootstraps a site not configured yet: a configured site changes through a site revision
(`/site-revisions` below, approved by another person; `site_revisions.check_direct_import`).
The mapping, the diff and the import are config/sitebook.py and config/sitefiles.py;
docs/config-formats.md, "Site workbook".

An applied import takes effect without a restart: the registry, the API and the pages see it at
once, and the running engines judge with the synced model within about a second
(docs/register.md, "Site changes while running"). What the broker lets a new device publish is
its own file: `clausewatch broker files`, then the broker reloads (docs/broker.md).
"""

from __future__ import annotations

import datetime as dt
import io
import tempfile
import threading
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel

from api import STATIC_DIR
from api.auth import Principal, Reader, RegistryAdmin
from api.deps import DbConn
from api.limits import SITE_WORKBOOK_MAX_BYTES
from api.models import RevisionDecision, RevisionRejection, SiteRevisionPublication, problems
from compliance import site_revisions
from compliance.revisions import RevisionError
from compliance.site_revisions import SiteRevision, SiteRevisionState
from config import BUNDLED_DIR
from config.documents import ConfigError
from config.sitebook import KindDiff, SheetProblem, WorkbookError
from config.sitefiles import (
    ImportPlan,
    apply_import,
    configured_site,
    plan_import,
    read_workbook,
    workbook_bytes,
)
from rules.site import ID_PATTERN
from store.registry import sync_site

router = APIRouter(prefix="/sites", tags=["site workbook"])
# Site revisions: the workbook proposed, approved, published with an effective time, rolled
# back (compliance/site_revisions.py).
revisions = APIRouter(prefix="/site-revisions", tags=["site workbook"])
RevisionId = Annotated[int, Path(ge=1, le=2**62)]
pages = APIRouter(include_in_schema=False)
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
SiteParam = Annotated[str, Path(pattern=ID_PATTERN, max_length=64)]
APPLIED_NOTE = (
    "站点文件已写入、登记表已同步，运行中的判定引擎约一秒内按新的站点模型判定；新增设备的 MQTT 登录"
    "需运行 clausewatch broker files 并重新加载代理 / the site file is written and the registry "
    "synced; the running engines judge with the new model within about a second; a new device's "
    "MQTT login needs `clausewatch broker files` and a broker reload"
)
# Where a change of a configured site goes instead of an import (named in the 409).
PROPOSE = "POST /api/v1/site-revisions"
# One import of the configuration directory at a time: planned against the files as they are
# when it is written.
_IMPORTING = threading.Lock()


class KindChanges(BaseModel):
    """Ids added, changed and removed (an assignment named party@space/domain/role/level from
    valid_from)."""

    added: list[str]
    changed: list[str]
    removed: list[str]


class WorkbookProblem(BaseModel):
    """One problem: where (sheet key, row, column key; row 0 or column "" for a whole sheet or
    row; sheet "" for the workbook or the configuration as a whole) and what."""

    sheet: str
    row: int
    column: str
    where: str
    zh: str
    en: str


class SiteImport(BaseModel):
    """What an import of the workbook does (dry run) or did."""

    site: str
    dry_run: bool
    applied: bool  # the site file was written (False: a dry run, or nothing changed)
    new_site: bool
    site_changed: bool  # the site sheet (name, timezone, seasons...)
    changes: dict[str, KindChanges]  # space, device, party, assignment
    file: str  # the site's file, relative to the configuration directory
    registry: dict[str, int]  # what the registry sync changed, by ledger kind
    note: str


async def _upload(request: Request) -> bytes:
    """The request body, bounded (the body gate lets this path's body reach
    SITE_WORKBOOK_MAX_BYTES and no further; counted here too for a chunked body)."""
    data = bytearray()
    async for chunk in request.stream():
        data.extend(chunk)
        if len(data) > SITE_WORKBOOK_MAX_BYTES:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE,
                f"a site workbook of at most {SITE_WORKBOOK_MAX_BYTES} bytes, please",
            )
    return bytes(data)


def _suffix(data: bytes) -> str:
    """.xlsx or .zip by content: both are zip archives; a workbook has [Content_Types].xml."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    except zipfile.BadZipFile:
        raise _problems(
            [
                SheetProblem(
                    "",
                    0,
                    "",
                    "不是 .xlsx 工作簿，也不是 CSV 文件的 zip 包",
                    "not an .xlsx workbook nor a zip of CSV files",
                )
            ]
        ) from None
    return ".xlsx" if "[Content_Types].xml" in names else ".zip"


def _problem_out(problem: SheetProblem) -> WorkbookProblem:
    return WorkbookProblem(
        sheet=problem.sheet,
        row=problem.row,
        column=problem.column,
        where=problem.where(),
        zh=problem.zh,
        en=problem.en,
    )


class _Refused(Exception):
    def __init__(self, response: JSONResponse) -> None:
        self.response = response


def _problems(found: list[SheetProblem] | tuple[SheetProblem, ...]) -> _Refused:
    """422 in the house form (one {loc, msg, type} per problem) with `problems` beside."""
    detail = [
        {
            "loc": ["body", *([p.sheet] if p.sheet else []), p.row, p.column],
            "msg": f"{p.where()}: {p.zh} / {p.en}",
            "type": "value_error",
        }
        for p in found
    ]
    body = {
        "detail": detail,
        "problems": [_problem_out(p).model_dump() for p in found],
    }
    return _Refused(JSONResponse(body, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT))


def _config_dir(request: Request) -> tuple[FilePath, bool]:
    """The configuration directory the service runs with, and whether an import may write it
    (not the bundled one)."""
    given: FilePath | None = request.app.state.config_dir
    return (given, True) if given is not None else (BUNDLED_DIR, False)


def _plan(data: bytes, directory: FilePath, filename: str) -> ImportPlan:
    with tempfile.TemporaryDirectory(prefix="cw-site-import-") as scratch:
        path = FilePath(scratch) / f"upload{_suffix(data)}"
        path.write_bytes(data)
        try:
            return plan_import(read_workbook(path), directory, filename)
        except WorkbookError as exc:
            raise _problems(exc.problems) from None
        except ConfigError as exc:
            raise _problems(
                [
                    SheetProblem(
                        "",
                        0,
                        "",
                        f"导入后配置无效：{text}",
                        f"the configuration with this site would be invalid: {text}",
                    )
                    for text in _relative(exc, directory)
                ]
            ) from None


def _relative(error: ConfigError, directory: FilePath) -> list[str]:
    """The problems of the configuration, their files named inside the directory (not where
    the service keeps it)."""
    out = []
    for problem in error.problems:
        try:
            name = str(FilePath(problem.file).relative_to(directory))
        except ValueError:
            name = FilePath(problem.file).name
        out.append(str(replace(problem, file=name)))
    return out


def _changes(kinds: dict[str, KindDiff]) -> dict[str, KindChanges]:
    return {
        kind: KindChanges(added=d.added, changed=d.changed, removed=d.removed)
        for kind, d in kinds.items()
    }


# A workbook upload, as the import and a site revision's proposal take it: the kind is told by
# content, whatever the type says (curl --data-binary sends application/octet-stream).
_BINARY = {"schema": {"type": "string", "format": "binary"}}
WORKBOOK_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {XLSX: _BINARY, "application/zip": _BINARY, "application/octet-stream": _BINARY},
    }
}
WORKBOOK_ANSWERS: dict[int | str, dict[str, Any]] = {
    **problems(401, 403, 409, 413),
    422: {"description": "the workbook's problems, by sheet, row and column"},
}


@router.post(
    "/import",
    response_model=SiteImport,
    responses=WORKBOOK_ANSWERS,
    openapi_extra=WORKBOOK_BODY,
)
def import_site(
    request: Request,
    conn: DbConn,
    principal: RegistryAdmin,
    data: Annotated[bytes, Depends(_upload)],
    dry_run: bool = True,
    filename: Annotated[str, Query(max_length=200, pattern=r"^[^/\\\x00]+$")] = "upload.xlsx",
) -> SiteImport | Response:
    """Imports a site workbook sent as the body (.xlsx, or a zip of one CSV file per sheet).
    It is checked as the site's YAML file is, with every other site and clause file of the
    configuration directory; with `dry_run` (the default) nothing is written. Applied, which
    only a new site (`new_site`) may be, the site's file is written (the previous one kept as
    `*.bak`) and the registry synced in one transaction, recorded in the ledger with this
    caller as the actor; a change of a configured site is a 409: it goes through
    `POST /site-revisions`, approved by another person. Admins of the site the workbook names;
    the running engines judge with the new model within about a second."""
    directory, writable = _config_dir(request)
    if not dry_run and not writable:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            "the service runs with the bundled configuration, which an import does not change: "
            "start it with CLAUSEWATCH_CONFIG_DIR",
        )
    with _IMPORTING:
        try:
            plan = _plan(data, directory, filename)
        except _Refused as refused:
            return refused.response
        principal.site_filter(plan.model.site.id)  # 403 for a site outside the scope
        applied = False
        report: dict[str, int] = {}
        if not dry_run:
            try:
                site_revisions.check_direct_import(plan, PROPOSE)
            except RevisionError as exc:
                raise HTTPException(exc.http_status, str(exc)) from exc
            report = sync_site(conn, plan.model, principal.actor).changes
            applied = apply_import(plan)
            conn.commit()
    try:
        file = str(plan.target.relative_to(directory))
    except ValueError:
        file = plan.target.name
    changed = applied or bool(report)
    return SiteImport(
        site=plan.model.site.id,
        dry_run=dry_run,
        applied=applied,
        new_site=plan.diff.new_site,
        site_changed=plan.diff.site_changed,
        changes=_changes(plan.diff.kinds),
        file=file,
        registry=report,
        note=APPLIED_NOTE if changed else "",
    )


def _xlsx(data: bytes, name: str) -> Response:
    return Response(
        data,
        media_type=XLSX,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get(
    "/template.xlsx",
    response_class=Response,
    responses={200: {"content": {XLSX: {}}}, **problems(401, 403)},
)
def template(principal: Reader) -> Response:
    """The empty site workbook: one sheet per part of the model, Chinese headers in row 1 and
    the English keys in row 2."""
    return _xlsx(workbook_bytes(None), "site-template.xlsx")


@router.get(
    "/{site}/export.xlsx",
    response_class=Response,
    responses={200: {"content": {XLSX: {}}}, **problems(401, 403, 404)},
)
def export(site: SiteParam, request: Request, principal: RegistryAdmin) -> Response:
    """The site's model as its file in the configuration directory defines it, as the
    workbook an import reads (importing it unchanged changes nothing). Admins of the site (it
    holds the parties' contacts)."""
    principal.site_filter(site)
    directory, _ = _config_dir(request)
    try:
        model, _path = configured_site(directory, site)
    except ConfigError as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"the configuration directory is invalid: {exc}"
        ) from None
    if model is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such site in the configuration")
    return _xlsx(workbook_bytes(model), f"{site}.xlsx")


@revisions.get("", responses=problems(401, 403))
def site_revisions_list(
    conn: DbConn,
    principal: Reader,
    site: Annotated[str | None, Query(pattern=ID_PATTERN, max_length=64)] = None,
    state: Annotated[list[SiteRevisionState] | None, Query(max_length=7)] = None,
    open_: Annotated[
        bool, Query(alias="open", description="pending, approved or published, not applied")
    ] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[SiteRevision]:
    """Site revisions of the caller's sites, newest first."""
    states: list[SiteRevisionState] | None = list(site_revisions.OPEN_STATES) if open_ else state
    return site_revisions.list_revisions(
        conn, sites=principal.site_filter(site), states=states, limit=limit
    )


@revisions.get("/{revision_id}", responses=problems(401, 403, 404))
def site_revision(revision_id: RevisionId, conn: DbConn, principal: Reader) -> SiteRevision:
    _visible(conn, principal, revision_id)
    return _answer(conn, lambda: site_revisions.get_revision(conn, revision_id))


@revisions.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SiteRevision,
    responses=WORKBOOK_ANSWERS,
    openapi_extra=WORKBOOK_BODY,
)
def propose_site_revision(
    request: Request,
    conn: DbConn,
    principal: RegistryAdmin,
    data: Annotated[bytes, Depends(_upload)],
    filename: Annotated[str, Query(max_length=200, pattern=r"^[^/\\\x00]+$")] = "upload.xlsx",
    reason: Annotated[str, Query(min_length=1, max_length=2000)] = "site workbook",
) -> SiteRevision | Response:
    """Proposes the workbook (checked as an import's dry run is) as a revision of the site it
    names: nothing changes until another named user approves it, it is published with an
    effective time and that time comes. Admins of the site."""
    directory, writable = _config_dir(request)
    if not writable:
        raise HTTPException(status.HTTP_409_CONFLICT, _BUNDLED)
    try:
        plan = _plan(data, directory, filename)
    except _Refused as refused:
        return refused.response
    principal.site_filter(plan.model.site.id)
    return _commit(
        conn,
        lambda: site_revisions.propose(
            conn, plan, filename, reason, principal.actor, dt.datetime.now(dt.UTC)
        ),
    )


@revisions.post("/{revision_id}/approve", responses=problems(401, 403, 404, 409))
def approve_site_revision(
    revision_id: RevisionId, body: RevisionDecision, conn: DbConn, principal: RegistryAdmin
) -> SiteRevision:
    """A named user signed in, not the proposer (403 otherwise: an API token never approves)."""
    _visible(conn, principal, revision_id)
    return _commit(
        conn,
        lambda: site_revisions.approve(
            conn, revision_id, principal.actor, body.note, dt.datetime.now(dt.UTC)
        ),
    )


@revisions.post("/{revision_id}/reject", responses=problems(401, 403, 404, 409))
def reject_site_revision(
    revision_id: RevisionId, body: RevisionRejection, conn: DbConn, principal: RegistryAdmin
) -> SiteRevision:
    _visible(conn, principal, revision_id)
    return _commit(
        conn,
        lambda: site_revisions.reject(
            conn, revision_id, principal.actor, body.note, dt.datetime.now(dt.UTC)
        ),
    )


@revisions.post("/{revision_id}/publish", responses=problems(401, 403, 404, 409))
def publish_site_revision(
    revision_id: RevisionId,
    body: SiteRevisionPublication,
    conn: DbConn,
    principal: RegistryAdmin,
) -> SiteRevision:
    """Applies at `effective_at` (later than now): the service writes the site's file and syncs
    the registry then, and its engines judge with the new model from then on."""
    _visible(conn, principal, revision_id)
    return _commit(
        conn,
        lambda: site_revisions.publish(
            conn, revision_id, principal.actor, body.effective_at, dt.datetime.now(dt.UTC)
        ),
    )


@revisions.post("/{revision_id}/rollback", responses=problems(401, 403, 404, 409))
def rollback_site_revision(
    revision_id: RevisionId, request: Request, conn: DbConn, principal: RegistryAdmin
) -> SiteRevision:
    """Withdraws a revision not applied yet, or puts back at once the model an applied one
    replaced."""
    _visible(conn, principal, revision_id)
    directory, writable = _config_dir(request)
    if not writable:
        raise HTTPException(status.HTTP_409_CONFLICT, _BUNDLED)
    with _IMPORTING:
        return _commit(
            conn,
            lambda: site_revisions.rollback(
                conn, revision_id, principal.actor, directory, dt.datetime.now(dt.UTC)
            ),
        )


_BUNDLED = (
    "the service runs with the bundled configuration, which a site change does not change: "
    "start it with CLAUSEWATCH_CONFIG_DIR"
)


def _visible(conn: DbConn, principal: Principal, revision_id: int) -> None:
    principal.require_visible(site_revisions.revision_site(conn, revision_id), "revision")


def _answer(conn: DbConn, step: Callable[[], SiteRevision]) -> SiteRevision:
    try:
        return step()
    except RevisionError as exc:
        raise HTTPException(exc.http_status, str(exc)) from exc


def _commit(conn: DbConn, step: Callable[[], SiteRevision]) -> SiteRevision:
    try:
        result = step()
    except RevisionError as exc:
        conn.rollback()
        raise HTTPException(exc.http_status, str(exc)) from exc
    conn.commit()
    return result


@pages.get("/sites")
def sites_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "sites.html", media_type="text/html; charset=utf-8")
