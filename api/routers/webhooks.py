"""Webhook targets and the outbound allow-list: global data, so only admin tokens without a site
scope (`GlobalAdmin`) see or change them. A target's URL is shown as scheme, host and port, its
secret never; every change is in the ledger (alerts/webhooks.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Response, status

from alerts import webhooks
from api.auth import GlobalAdmin
from api.deps import DbConn
from api.models import (
    AllowEntryCreate,
    AllowEntryPublic,
    WebhookTargetCreate,
    WebhookTargetPublic,
    WebhookTargetUpdate,
    problems,
)
from store import registry

router = APIRouter(tags=["webhooks"])
RowId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.get("/webhooks", responses=problems(401, 403))
def list_targets(conn: DbConn, principal: GlobalAdmin) -> list[WebhookTargetPublic]:
    """Every webhook target with its delivery counts."""
    return [WebhookTargetPublic(**row) for row in webhooks.target_rows(conn)]


@router.post(
    "/webhooks", status_code=status.HTTP_201_CREATED, responses=problems(401, 403, 404, 409)
)
def create_target(
    body: WebhookTargetCreate, conn: DbConn, principal: GlobalAdmin
) -> WebhookTargetPublic:
    """Adds a target. 409 when the name is taken; 404 for an unknown site."""
    _require_site(conn, body.site)
    target = webhooks.Target(**body.model_dump())
    try:
        target_id = webhooks.add_target(conn, target, principal.actor)
    except webhooks.TargetInvalid as exc:
        conn.rollback()
        raise _field_error(exc.field, str(exc)) from None
    except webhooks.TargetExists as exc:
        conn.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, "a target with this name exists") from exc
    conn.commit()
    return _target(conn, target_id)


@router.patch("/webhooks/{target_id}", responses=problems(401, 403, 404))
def update_target(
    target_id: RowId, body: WebhookTargetUpdate, conn: DbConn, principal: GlobalAdmin
) -> WebhookTargetPublic:
    """Changes the fields given: `url`, `secret` (rotate it here and at the receiver),
    `site` and `level` (null: every one), `broadcast`, `enabled`, `language`, `options`,
    `max_per_minute` (null: the kind's default)."""
    given = body.model_dump(exclude_unset=True)
    changes: dict[str, Any] = {
        k: v
        for k, v in given.items()
        if v is not None or k in ("site", "level", "max_per_minute", "repeat_interval_s")
    }
    if changes.get("site") is not None:
        _require_site(conn, changes["site"])
    try:
        webhooks.change_target(conn, target_id, changes, principal.actor)
    except webhooks.TargetInvalid as exc:
        conn.rollback()
        raise _field_error(exc.field, str(exc)) from None
    except LookupError as exc:
        conn.rollback()
        raise HTTPException(status.HTTP_404_NOT_FOUND, "webhook target not found") from exc
    conn.commit()
    return _target(conn, target_id)


@router.get("/webhook-allowlist", responses=problems(401, 403))
def list_allowed(conn: DbConn, principal: GlobalAdmin) -> list[AllowEntryPublic]:
    """Internal host names and networks webhooks may go to (everything else internal is
    refused at send time, after DNS resolution)."""
    return [AllowEntryPublic(**row) for row in webhooks.allow_rows(conn)]


@router.post(
    "/webhook-allowlist", status_code=status.HTTP_201_CREATED, responses=problems(401, 403, 409)
)
def add_allowed(body: AllowEntryCreate, conn: DbConn, principal: GlobalAdmin) -> AllowEntryPublic:
    """Allow-lists a host name, an address or a network. 409 when it is there already."""
    try:
        entry_id, added = webhooks.allow(conn, body.entry, body.note, principal.actor)
    except ValueError as exc:
        conn.rollback()
        raise _field_error("entry", str(exc)) from None
    if not added:
        conn.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, "that entry is allow-listed already")
    conn.commit()
    return next(AllowEntryPublic(**r) for r in webhooks.allow_rows(conn) if r["id"] == entry_id)


@router.delete(
    "/webhook-allowlist/{entry_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problems(401, 403, 404),
)
def remove_allowed(entry_id: RowId, conn: DbConn, principal: GlobalAdmin) -> Response:
    try:
        webhooks.disallow(conn, entry_id, principal.actor)
    except LookupError as exc:
        conn.rollback()
        raise HTTPException(status.HTTP_404_NOT_FOUND, "allow-list entry not found") from exc
    conn.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _require_site(conn: DbConn, site: str | None) -> None:
    if site is not None and not registry.site_exists(conn, site):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "site not found")


def _target(conn: DbConn, target_id: int) -> WebhookTargetPublic:
    row = webhooks.target_row(conn, target_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "webhook target not found")
    return WebhookTargetPublic(**row)


def _field_error(field: str, message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        [{"loc": ["body", field], "msg": message, "type": "value_error"}],
    )
