"""The opt-in public view of a site (`site.public: true`): no token, read-only, no personal
data. `GET /api/v1/public/{site}` answers JSON and `GET /public/{site}` a page; a site that
does not exist or has not opted in is a 404 either way. Code: compliance/public.py.

信息反馈 (issue 21): `GET /public/{site}/feedback?space=` is the form a space's QR code opens
(`GET /api/v1/public/{site}/feedback?space=` says what it offers, as JSON), and
`POST /public/{site}/feedback` takes it (multipart/form-data, an optional photo; no token,
no cookie): 303 to the thanks, 422 with the form again and what to correct, 429 with when to
try again (`Retry-After`). Code: compliance/feedback.py."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import UploadFile

from api.deps import DbConn
from api.models import FeedbackForm, PublicSite, SiteId, problems
from compliance.feedback import (
    PHOTO_MAX_BYTES,
    BadFeedback,
    Lang,
    NoFeedbackPage,
    RateLimited,
    feedback_form,
    render_feedback_html,
    submit_feedback,
)
from compliance.public import NotPublic, public_site, render_public_html
from rules.site import ID_PATTERN

router = APIRouter(prefix="/public", tags=["public"])
pages = APIRouter(include_in_schema=False)
SpaceId = Annotated[str, Query(pattern=ID_PATTERN, max_length=128)]
# What the form may carry besides its photo (the text is bounded again, in characters).
FORM_FIELDS = 8
FORM_FIELD_BYTES = 16 * 1024


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


def _form(conn: DbConn, site: str, space: str) -> FeedbackForm:
    try:
        return feedback_form(conn, site, space, dt.datetime.now(dt.UTC))
    except NoFeedbackPage as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no feedback page for this space") from exc


@router.get("/{site}/feedback", responses=problems(404))
def feedback_categories(site: SiteId, space: SpaceId, conn: DbConn) -> FeedbackForm:
    """What the public form of a space offers: the categories its clauses give."""
    return _form(conn, site, space)


@pages.get("/public/{site}/feedback", response_class=HTMLResponse)
def feedback_page(
    site: SiteId,
    space: SpaceId,
    conn: DbConn,
    lang: Lang = "zh",
    sent: bool = False,
) -> HTMLResponse:
    return HTMLResponse(render_feedback_html(_form(conn, site, space), lang, sent=sent))


@dataclass(frozen=True, slots=True)
class PostedFeedback:
    space: str
    lang: Lang
    category: str
    text: str
    photo: bytes | None


async def _posted(request: Request) -> PostedFeedback:
    """The form's fields, bounded: one file, a few small fields (Starlette answers 400 past
    these), a photo read to one byte over its limit at most."""
    async with request.form(
        max_files=1, max_fields=FORM_FIELDS, max_part_size=FORM_FIELD_BYTES
    ) as form:
        fields = {
            name: value
            for name in ("space", "lang", "category", "text")
            if isinstance(value := form.get(name), str)
        }
        upload = form.get("photo")
        photo = await upload.read(PHOTO_MAX_BYTES + 1) if isinstance(upload, UploadFile) else None
    lang = fields.get("lang")
    return PostedFeedback(
        space=fields.get("space", ""),
        lang="en" if lang == "en" else "zh",
        category=fields.get("category", ""),
        text=fields.get("text", ""),
        photo=photo or None,
    )


@pages.post("/public/{site}/feedback", response_class=HTMLResponse)
def post_feedback(
    site: SiteId,
    request: Request,
    conn: DbConn,
    posted: Annotated[PostedFeedback, Depends(_posted)],
) -> Response:
    now = dt.datetime.now(dt.UTC)
    if len(posted.space) > 128:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no feedback page for this space")
    form = _form(conn, site, posted.space)
    client = request.client.host if request.client else ""
    try:
        submit_feedback(
            conn,
            site=site,
            space=posted.space,
            category=posted.category,
            text=posted.text,
            photo=posted.photo,
            lang=posted.lang,
            client=client,
            now=now,
        )
    except BadFeedback as exc:
        conn.rollback()
        said = exc.message_zh if posted.lang == "zh" else str(exc)
        return _again(form, posted, said, status.HTTP_422_UNPROCESSABLE_CONTENT)
    except RateLimited as exc:
        conn.rollback()
        minutes = math.ceil(exc.retry_after_s / 60)
        said = (
            f"提交过于频繁，请 {minutes} 分钟后再试。"
            if posted.lang == "zh"
            else f"Too many reports from here just now; please try again in {minutes} min."
        )
        if exc.scope == "space":
            said = (
                f"这里刚刚收到很多反馈，请 {minutes} 分钟后再试。"
                if posted.lang == "zh"
                else f"This space has had many reports just now; try again in {minutes} min."
            )
        response = _again(form, posted, said, status.HTTP_429_TOO_MANY_REQUESTS)
        response.headers["Retry-After"] = str(exc.retry_after_s)
        return response
    conn.commit()
    return RedirectResponse(
        f"/public/{quote(site)}/feedback?space={quote(posted.space)}&lang={posted.lang}&sent=1",
        status.HTTP_303_SEE_OTHER,
    )


def _again(form: FeedbackForm, posted: PostedFeedback, said: str, code: int) -> HTMLResponse:
    """The form again with what to correct, the person's choice and text kept (not the photo:
    a browser cannot be handed a file back)."""
    html = render_feedback_html(
        form, posted.lang, error=said, chosen=posted.category, text=posted.text
    )
    return HTMLResponse(html, code)
