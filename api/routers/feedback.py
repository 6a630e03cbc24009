"""Feedback items (信息反馈) for the facility managers: list and filter them
(`GET /feedback`, any reader of the site), one item (`GET /feedback/{id}`), its photo
(`GET /feedback/{id}/photo`), and triage (`PATCH /feedback/{id}`, facility managers and admins:
new → triaged → resolved / rejected, with the token's actor and a note, in the ledger). Items
of a site outside the token's scope answer 404. The public form that makes them is in
api/routers/public.py. Code: compliance/feedback.py."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status
from fastapi.responses import Response

from api.auth import AlertActor, Reader
from api.deps import DbConn
from api.models import FeedbackItem, FeedbackTriage, QueryTime, SiteId, problems
from compliance.feedback import (
    Category,
    State,
    StepNotAllowed,
    UnknownItem,
    feedback_photo,
    feedback_site,
    list_feedback,
    triage,
)
from rules.site import ID_PATTERN

router = APIRouter(prefix="/feedback", tags=["feedback"])
ItemId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.get("", responses=problems(401, 403))
def feedback_items(
    conn: DbConn,
    principal: Reader,
    site: SiteId | None = None,
    state: State | None = None,
    category: Category | None = None,
    space: Annotated[str | None, Query(pattern=ID_PATTERN, max_length=128)] = None,
    since: Annotated[QueryTime | None, Query(description="received at or after")] = None,
    until: Annotated[QueryTime | None, Query(description="received before")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[FeedbackItem]:
    """Items of the token's sites (or of `site`), newest first, with their triage steps."""
    return list_feedback(
        conn,
        principal.site_filter(site),
        state=state,
        category=category,
        space=space,
        since=since,
        until=until,
        limit=limit,
    )


@router.get("/{item_id}", responses=problems(401, 403, 404))
def feedback_item(item_id: ItemId, conn: DbConn, principal: Reader) -> FeedbackItem:
    principal.require_visible(feedback_site(conn, item_id), "feedback item")
    return list_feedback(conn, None, item_id=item_id)[0]


@router.get(
    "/{item_id}/photo",
    response_class=Response,
    responses={
        **problems(401, 403, 404),
        200: {"content": {t: {} for t in ("image/jpeg", "image/png", "image/webp")}},
    },
)
def feedback_item_photo(item_id: ItemId, conn: DbConn, principal: Reader) -> Response:
    """The photo as it was sent, its type as read from its bytes (404 when there is none)."""
    principal.require_visible(feedback_site(conn, item_id), "feedback item")
    found = feedback_photo(conn, item_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "this item has no photo")
    content_type, data = found
    return Response(data, media_type=content_type, headers={"Cache-Control": "private"})


@router.patch("/{item_id}", responses=problems(401, 403, 404, 409))
def triage_item(
    item_id: ItemId, body: FeedbackTriage, conn: DbConn, principal: AlertActor
) -> FeedbackItem:
    """One step of triage; 409 when the item's state does not allow it."""
    principal.require_visible(feedback_site(conn, item_id), "feedback item")
    try:
        changed = triage(
            conn, item_id, body.state, body.note, principal.actor, dt.datetime.now(dt.UTC)
        )
    except UnknownItem as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "feedback item not found") from exc
    except StepNotAllowed as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    conn.commit()
    return changed
