"""Field check-ins (issue 19; docs/api.md "Field check-ins"): a printable sheet of QR codes, one
per space whose obligations accept a task, and the phone page each code opens, where the
signed-in person records that the task was done, with an optional note and photo.

The check-in's event enters the pipeline exactly as an event over MQTT or HTTP ingest does
(`api.routers.ingest.deliver`: decode, dedupe, engine, flush), on the topic of the reporter
`rules.checkin.CHECKIN_REPORTER`, and the answer comes after its commit. The page's event id
makes a double tap or a retry one check-in: the first stores the row with its event time, a
repeat reuses that time, so the pipeline absorbs the copy.

Photos: JPEG, PNG or WebP, known by their first bytes (`compliance.feedback.photo_type`, the
same check as the occupants' feedback form; the declared type and any file name are not
trusted), at most 5 MiB; stored in PostgreSQL; served back with their own type, `nosniff` and a
sandboxing policy, never as anything a browser would run.

Who: reading the sheet needs `read`; a space's tasks `read` or `checkins:record`; checking in
and uploading need `checkins:record` (cleaners, facility managers, admins), for a site in the
caller's scope. The actor recorded is `Principal.actor`.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import uuid
from typing import Annotated, Any, cast

import orjson
import psycopg
import segno
from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import FileResponse
from pydantic import BaseModel, StringConstraints
from starlette.concurrency import run_in_threadpool

from api import STATIC_DIR
from api.auth import CheckinReader, CheckinRecorder, Principal, Reader
from api.deps import DbConn
from api.models import Input, problems
from api.routers.ingest import HttpIngest, deliver
from compliance.feedback import PHOTO_MAX_BYTES, photo_type
from rules.checkin import CHECKIN_REPORTER, Task, space_tasks
from rules.clause import ClauseVersion
from rules.site import ID_PATTERN, SiteModel
from store import checkins, checkpoints, registry
from store.times import wall_now

router = APIRouter(tags=["check-ins"])
writes = APIRouter(tags=["check-ins"])  # only where a pipeline runs (api/app.py)
pages = APIRouter(include_in_schema=False)

PathId = Annotated[str, Path(pattern=ID_PATTERN, max_length=64)]
MAX_SHEET_SPACES = 2000
PHOTO_TYPES = ("image/jpeg", "image/png", "image/webp")


# ---- pages ----


@pages.get("/checkin/sheet")
def sheet_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "checkin-sheet.html", media_type="text/html; charset=utf-8")


@pages.get("/checkin/{site}/{space}")
def checkin_page(site: PathId, space: PathId) -> FileResponse:
    return FileResponse(STATIC_DIR / "checkin.html", media_type="text/html; charset=utf-8")


# ---- models ----


class TaskPublic(BaseModel):
    event: str  # the obligation's event type, e.g. cleaning.completed
    label_zh: str
    label_en: str
    clauses: list[str]


class SheetEntry(BaseModel):
    space: str
    name: str
    type: str
    path: list[str]  # names from the root to the space
    tasks: list[TaskPublic]
    url: str  # what the QR code encodes: the space's check-in page
    qr_svg: str  # the QR code as an SVG data URI


class Sheet(BaseModel):
    site: str
    site_name: str
    root: str | None
    entries: list[SheetEntry]


class CheckinPublic(BaseModel):
    event_id: uuid.UUID
    site: str
    space: str
    task: str
    ts: dt.datetime
    actor: str
    note: str
    photo: uuid.UUID | None
    photo_url: str | None


class SpaceCheckins(BaseModel):
    site: str
    site_name: str
    space: str
    name: str
    type: str
    path: list[str]
    tasks: list[TaskPublic]
    recent: list[CheckinPublic]  # the latest check-ins of the space, newest first


class CheckinCreate(Input):
    # Made by the page once per intended check-in: a repeat of it is the same check-in.
    event_id: uuid.UUID
    task: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.-]*$", max_length=64)]
    note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000)] = ""
    photo: uuid.UUID | None = None


class PhotoStored(BaseModel):
    id: uuid.UUID
    content_type: str
    size: int
    url: str


# ---- reads ----


def _site(conn: psycopg.Connection[Any], principal: Principal, site: str) -> SiteModel:
    principal.require_visible(site, "site")
    model = registry.site_model(conn, site)
    if model is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "site not found")
    return model


def _obligations(conn: psycopg.Connection[Any]) -> list[ClauseVersion]:
    """The stored clause versions (files and published revisions); space_tasks picks the
    obligations in force."""
    return [stored.clause for stored in registry.stored_clause_versions(conn)]


def _tasks(model: SiteModel, space: str, clauses: list[ClauseVersion]) -> list[Task]:
    today = wall_now().astimezone(model.zone()).date()
    return space_tasks(model, space, clauses, today)


def _public_task(task: Task) -> TaskPublic:
    return TaskPublic(
        event=task.event, label_zh=task.label_zh, label_en=task.label_en, clauses=list(task.clauses)
    )


def _path(model: SiteModel, space: str) -> list[str]:
    return [model.space(s).name or s for s in reversed(model.ancestors(space))]


def _base_url(request: Request) -> str:
    base: str | None = getattr(request.app.state, "public_base_url", None)
    return (base or str(request.base_url)).rstrip("/")


def qr_data_uri(url: str) -> str:
    """The QR code of `url` (error correction M, quiet zone of 4 modules) as an SVG data URI."""
    code = segno.make_qr(url, error="m", boost_error=False)
    out = io.BytesIO()
    code.save(out, kind="svg", scale=4, border=4, xmldecl=False, svgns=True, nl=False)
    return "data:image/svg+xml;base64," + base64.b64encode(out.getvalue()).decode()


@router.get("/checkins/sheet", responses=problems(401, 403, 404))
def sheet(
    request: Request,
    conn: DbConn,
    principal: Reader,
    site: Annotated[str, Query(pattern=ID_PATTERN, max_length=64)],
    space: Annotated[str | None, Query(pattern=ID_PATTERN, max_length=64)] = None,
) -> Sheet:
    """One entry per space of the site (or of `space`'s subtree) whose obligations accept a
    task, with the QR code of its check-in page."""
    principal.site_filter(site)
    model = _site(conn, principal, site)
    if space is not None and space not in model.parent_of:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"space {space!r} not found")
    clauses = _obligations(conn)
    base = _base_url(request)
    entries = []
    for item in model.spaces:
        if space is not None and space not in model.ancestors(item.id):
            continue
        tasks = _tasks(model, item.id, clauses)
        if not tasks:
            continue
        url = f"{base}/checkin/{site}/{item.id}"
        entries.append(
            SheetEntry(
                space=item.id,
                name=item.name or item.id,
                type=item.type,
                path=_path(model, item.id),
                tasks=[_public_task(t) for t in tasks],
                url=url,
                qr_svg=qr_data_uri(url),
            )
        )
        if len(entries) >= MAX_SHEET_SPACES:
            break
    return Sheet(site=site, site_name=model.site.name, root=space, entries=entries)


def _public(row: dict[str, Any]) -> CheckinPublic:
    photo = row["photo"]
    return CheckinPublic(
        **row,
        photo_url=None if photo is None else f"/api/v1/checkin-photos/{photo}",
    )


@router.get("/checkins/{site}/{space}", responses=problems(401, 403, 404))
def space_checkins(
    conn: DbConn,
    principal: CheckinReader,
    site: PathId,
    space: PathId,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> SpaceCheckins:
    """A space's tasks (what its obligations accept) and its latest check-ins."""
    model = _site(conn, principal, site)
    if space not in model.parent_of:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"space {space!r} not found")
    item = model.space(space)
    recent = checkins.checkins_between(conn, site, space, None, None, None, limit)
    return SpaceCheckins(
        site=site,
        site_name=model.site.name,
        space=space,
        name=item.name or space,
        type=item.type,
        path=_path(model, space),
        tasks=[_public_task(t) for t in _tasks(model, space, _obligations(conn))],
        recent=[_public(row) for row in recent],
    )


# ---- photos ----


async def _read_photo(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > PHOTO_MAX_BYTES:
        raise _photo_too_large(int(declared))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > PHOTO_MAX_BYTES:
            raise _photo_too_large(size)
        chunks.append(chunk)
    return b"".join(chunks)


def _photo_too_large(size: int) -> HTTPException:
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE,
        f"照片过大 photo too large: {size} bytes, at most {PHOTO_MAX_BYTES} (5 MiB)",
    )


@router.post(
    "/checkin-photos",
    status_code=status.HTTP_201_CREATED,
    responses=problems(401, 403, 404, 413, 415),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in PHOTO_TYPES},
        }
    },
)
async def upload_photo(
    request: Request,
    principal: CheckinRecorder,
    site: Annotated[str, Query(pattern=ID_PATTERN, max_length=64)],
) -> PhotoStored:
    """A photo for a check-in: the image's bytes as the body (JPEG, PNG or WebP, at most
    5 MiB; its type is read from its bytes). Name it in the check-in as `photo`."""
    principal.site_filter(site)  # 403 outside the token's sites
    data = await _read_photo(request)
    if not data:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "the body holds no photo")
    kind = photo_type(data)
    if kind is None:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            "只接受 JPEG、PNG 或 WebP 照片 only JPEG, PNG or WebP photos (judged by the file's "
            "content, not its name or declared type)",
        )
    photo_id = await run_in_threadpool(_store_photo, request, site, kind, data, principal.actor)
    return PhotoStored(
        id=photo_id, content_type=kind, size=len(data), url=f"/api/v1/checkin-photos/{photo_id}"
    )


def _store_photo(request: Request, site: str, kind: str, data: bytes, actor: str) -> uuid.UUID:
    with request.app.state.pool.connection() as conn:
        if not registry.site_exists(conn, site):
            raise HTTPException(status.HTTP_404_NOT_FOUND, "site not found")
        photo_id = checkins.insert_photo(conn, site, kind, data, actor)
        conn.commit()
    return photo_id


@router.get(
    "/checkin-photos/{photo_id}",
    response_class=Response,
    responses={
        **problems(401, 404),
        200: {
            "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in PHOTO_TYPES}
        },
    },
)
def photo(conn: DbConn, principal: Reader, photo_id: uuid.UUID) -> Response:
    """A check-in's photo, as the image type its bytes were stored as."""
    stored = checkins.photo(conn, photo_id)
    if stored is None or not principal.sees(stored.site):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "photo not found")
    return Response(
        stored.data,
        media_type=stored.content_type,
        headers={
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Content-Disposition": f'inline; filename="{photo_id}"',
            "Cache-Control": "private, max-age=86400",
        },
    )


# ---- the check-in ----


@writes.post(
    "/checkins/{site}/{space}",
    responses=problems(401, 403, 404, 409, 422, 503),
)
async def check_in(
    request: Request, principal: CheckinRecorder, site: PathId, space: PathId, body: CheckinCreate
) -> CheckinPublic:
    """Records that `task` was done in `space` now by the caller, and answers after the event's
    commit. The same `event_id` again is the same check-in (one event)."""
    ingest = cast(HttpIngest, request.app.state.ingest)
    row = await run_in_threadpool(_claim, request, principal, site, space, body, ingest)
    if (row["site"], row["space"], row["task"]) != (site, space, body.task):
        raise HTTPException(status.HTTP_409_CONFLICT, "this event id belongs to another check-in")
    event = {
        "ts": int(row["ts"].timestamp() * 1000),
        "type": row["task"],
        "space": space,
        "actor": row["actor"][:128],
        "attrs": {
            "via": "checkin",
            "event_id": str(row["event_id"]),
            **({"note": row["note"]} if row["note"] else {}),
            **({"photo": str(row["photo"])} if row["photo"] else {}),
        },
    }
    topic = f"{ingest.prefix}/{site}/{CHECKIN_REPORTER}/event"
    delivery = await deliver(ingest, topic, orjson.dumps(event))
    if not delivery.events:
        reasons = "; ".join(f"{d.reason}: {d.detail}" for d in delivery.dead_letters)
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"event refused: {reasons}")
    return _public(row)


def _claim(
    request: Request,
    principal: Principal,
    site: str,
    space: str,
    body: CheckinCreate,
    ingest: HttpIngest,
) -> dict[str, Any]:
    """Checks the check-in and stores its row (or finds the one of its event id)."""
    with request.app.state.pool.connection() as conn:
        model = _site(conn, principal, site)
        if space not in model.parent_of:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"space {space!r} not found")
        offered = {t.event for t in _tasks(model, space, _obligations(conn))}
        if body.task not in offered:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"space {space!r} has no obligation accepting {body.task!r}"
                + (f"; it accepts {', '.join(sorted(offered))}" if offered else ""),
            )
        if body.photo is not None and checkins.photo_site(conn, body.photo) != site:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "unknown photo")
        if site not in ingest.sites:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                f"site {site!r} is not judged by this service process",
                headers={"Retry-After": "60"},
            )
        now = _checkin_time(conn, ingest, site)
        row = checkins.claim_checkin(
            conn,
            body.event_id,
            site,
            space,
            body.task,
            now.replace(microsecond=now.microsecond // 1000 * 1000),  # the event's ms
            principal.actor,
            body.note,
            body.photo,
        )
        conn.commit()
    return row


def _checkin_time(conn: psycopg.Connection[Any], ingest: HttpIngest, site: str) -> dt.datetime:
    """Now, for the site's engine: the wall clock, or under the data clock (the demo, a replay)
    the site's data time, so a check-in lands in the building's simulated day instead of
    pushing its engine to the wall clock (wall time until the site's first checkpoint)."""
    now = wall_now()
    if ingest.data_clock:
        now = checkpoints.data_times(conn, [site]).get(site, now)
    return now
