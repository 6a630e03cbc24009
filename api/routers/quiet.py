"""Silences and maintenance windows (issue 20): list, create, cancel (store/quiet.py does it).

Both need `alerts:act` to change and `read` to list; a site-scoped token only for its sites. A
maintenance window that began in the past changes compliance figures already reported: only an
unscoped admin token may declare one (`global:admin`); it is marked retroactive, in the ledger
too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, status

from api.auth import AlertActor, Permission, Principal, Reader
from api.deps import DbConn
from api.models import QuietCreate, QuietList, QuietPublic, SiteId, problems
from store import quiet
from store.times import wall_now

router = APIRouter(tags=["silences and maintenance"])

PeriodId = Annotated[int, Path(ge=1, le=2**63 - 1)]
MAX_LIST = 500


def _public(row: dict[str, Any]) -> QuietPublic:
    now = wall_now()
    active = row["starts_at"] <= now < row["effective_end"]
    return QuietPublic(**row, active=active)


@contextlib.contextmanager
def _refusals(conn: DbConn) -> Iterator[None]:
    try:
        yield
    except quiet.QuietError as exc:
        conn.rollback()
        raise HTTPException(exc.http_status, exc.message) from exc


def _list(
    kind: quiet.Kind,
    conn: DbConn,
    principal: Principal,
    site: str | None,
    include_ended: bool,
    limit: int,
) -> QuietList:
    sites = principal.site_filter(site)
    rows = quiet.rows(conn, kind, sites, wall_now(), include_ended=include_ended, limit=limit)
    return QuietList(items=[_public(row) for row in rows])


def _create(kind: quiet.Kind, body: QuietCreate, conn: DbConn, principal: Principal) -> QuietPublic:
    if not principal.sees(body.site):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this token cannot act on that site")
    now = wall_now()
    spec = quiet.Spec(
        kind=kind,
        site=body.site,
        scope=body.scope,
        target=body.target,
        starts_at=body.starts_at or now,
        ends_at=body.ends_at,
        reason=body.reason,
    )
    with _refusals(conn):
        row = quiet.create(
            conn, spec, principal.actor, now, may_backdate=principal.can(Permission.GLOBAL_ADMIN)
        )
    conn.commit()
    return _public(row)


def _cancel(kind: quiet.Kind, period_id: int, conn: DbConn, principal: Principal) -> QuietPublic:
    row = quiet.get(conn, kind, period_id)
    principal.require_visible(None if row is None else row["site"], kind)
    with _refusals(conn):
        updated = quiet.cancel(conn, kind, period_id, principal.actor, wall_now())
    conn.commit()
    return _public(updated)


ListLimit = Annotated[int, Query(ge=1, le=MAX_LIST)]
IncludeEnded = Annotated[bool, Query(description="also those over or cancelled")]


@router.get("/silences", responses=problems(401, 403))
def list_silences(
    conn: DbConn,
    principal: Reader,
    site: SiteId | None = None,
    include_ended: IncludeEnded = False,
    limit: ListLimit = 200,
) -> QuietList:
    """Silences of the token's sites, newest first: those not over yet unless include_ended."""
    return _list("silence", conn, principal, site, include_ended, limit)


@router.post(
    "/silences", status_code=status.HTTP_201_CREATED, responses=problems(401, 403, 404, 409)
)
def create_silence(body: QuietCreate, conn: DbConn, principal: AlertActor) -> QuietPublic:
    """Hold back the notifications of the alerts in its scope (alerts are still recorded)."""
    return _create("silence", body, conn, principal)


@router.post("/silences/{silence_id}/cancel", responses=problems(401, 403, 404, 409))
def cancel_silence(silence_id: PeriodId, conn: DbConn, principal: AlertActor) -> QuietPublic:
    """End a silence now. 409 when it is already over or cancelled."""
    return _cancel("silence", silence_id, conn, principal)


@router.get("/maintenance", responses=problems(401, 403))
def list_maintenance(
    conn: DbConn,
    principal: Reader,
    site: SiteId | None = None,
    include_ended: IncludeEnded = False,
    limit: ListLimit = 200,
) -> QuietList:
    """Maintenance windows of the token's sites, newest first."""
    return _list("maintenance", conn, principal, site, include_ended, limit)


@router.post(
    "/maintenance", status_code=status.HTTP_201_CREATED, responses=problems(401, 403, 404, 409)
)
def create_maintenance(body: QuietCreate, conn: DbConn, principal: AlertActor) -> QuietPublic:
    """Declare planned works: the time it covers is exempt from the compliance rate. Starting
    in the past (retroactive) needs an unscoped admin token."""
    return _create("maintenance", body, conn, principal)


@router.post("/maintenance/{window_id}/cancel", responses=problems(401, 403, 404, 409))
def cancel_maintenance(window_id: PeriodId, conn: DbConn, principal: AlertActor) -> QuietPublic:
    """End a maintenance window now (time already past stays exempt)."""
    return _cancel("maintenance", window_id, conn, principal)
