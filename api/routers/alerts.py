"""Alerts: list (filtered, cursor-paginated), detail with provenance and timeline, and the two
human steps of the lifecycle, acknowledge and close (alerts does the transition)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status

from alerts import lifecycle, reads, silences
from api.auth import AlertActor, Principal, Reader
from api.deps import DbConn
from api.models import (
    AcknowledgeCreate,
    AlertDetail,
    AlertPage,
    AlertState,
    ClauseProvenance,
    CloseCreate,
    QueryTime,
    Severity,
    SiteId,
    Standard,
    TimelineEntry,
    alert_public,
    evidence_readings,
    problems,
)
from api.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, encode_cursor
from store.times import wall_now

router = APIRouter(prefix="/alerts", tags=["alerts"])

AlertId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.get("", responses=problems(401, 403))
def list_alerts(
    conn: DbConn,
    principal: Reader,
    site: SiteId | None = None,
    state: Annotated[list[AlertState] | None, Query()] = None,
    severity: Annotated[list[Severity] | None, Query()] = None,
    clause: Annotated[str | None, Query(max_length=128)] = None,
    space: Annotated[
        str | None, Query(max_length=64, description="a space and its subtree")
    ] = None,
    since: Annotated[QueryTime | None, Query(description="started at or after")] = None,
    until: Annotated[QueryTime | None, Query(description="started before")] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> AlertPage:
    """Alerts newest first (by start time, then id) in the token's sites."""
    sites = principal.site_filter(site)
    before = decode_cursor(cursor) if cursor is not None else None
    rows = reads.alert_rows(
        conn,
        sites=sites,
        states=state or (),
        severities=severity or (),
        clause=clause,
        space=space,
        since=since,
        until=until,
        before=before,
        limit=limit + 1,  # one more than the page: is there a next page?
    )
    items = [alert_public(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(last["started_at"], last["id"])
    return AlertPage(items=items, next_cursor=next_cursor)


@router.get("/{alert_id}", responses=problems(401, 403, 404))
def get_alert(alert_id: AlertId, conn: DbConn, principal: Reader) -> AlertDetail:
    """One alert with the clause version it was judged under, its evidence and its timeline."""
    return load_alert_detail(conn, principal, alert_id)


@router.post("/{alert_id}/ack", responses=problems(401, 403, 404, 409))
def acknowledge_alert(
    alert_id: AlertId, body: AcknowledgeCreate, conn: DbConn, principal: AlertActor
) -> AlertDetail:
    """Acknowledge a firing (or resolved) alert, with an optional note. 409 when its state does
    not allow it (already acknowledged, closed)."""
    _ensure_visible(conn, principal, alert_id)
    with _lifecycle_errors(conn):
        lifecycle.acknowledge(conn, alert_id, actor=principal.actor, note=body.note)
    conn.commit()
    return load_alert_detail(conn, principal, alert_id)


@router.post("/{alert_id}/close", responses=problems(401, 403, 404, 409))
def close_alert(
    alert_id: AlertId, body: CloseCreate, conn: DbConn, principal: AlertActor
) -> AlertDetail:
    """Close a resolved alert with its cause and corrective action. 409 while the alert is still
    firing or acknowledged, or while the clause's re-verification period has not passed."""
    _ensure_visible(conn, principal, alert_id)
    with _lifecycle_errors(conn):
        lifecycle.close(
            conn,
            alert_id,
            actor=principal.actor,
            cause=body.cause,
            corrective_action=body.corrective_action,
        )
    conn.commit()
    return load_alert_detail(conn, principal, alert_id)


@contextlib.contextmanager
def _lifecycle_errors(conn: DbConn) -> Iterator[None]:
    """The lifecycle's refusals as HTTP answers (its errors carry their status)."""
    try:
        yield
    except lifecycle.IncompleteInput as exc:
        conn.rollback()
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [
                {"loc": ["body", field], "msg": exc.message, "type": "missing"}
                for field in exc.fields
            ],
        ) from exc
    except lifecycle.AlertError as exc:
        conn.rollback()
        raise HTTPException(exc.http_status, exc.message) from exc


def _ensure_visible(conn: DbConn, principal: Principal, alert_id: int) -> None:
    principal.require_visible(reads.alert_site(conn, alert_id), "alert")


def load_alert_detail(conn: DbConn, principal: Principal, alert_id: int) -> AlertDetail:
    row = reads.alert_detail_row(conn, alert_id)
    principal.require_visible(None if row is None else row["site"], "alert")
    assert row is not None
    timeline = reads.alert_timeline(conn, alert_id)
    public = alert_public(row)
    provenance = ClauseProvenance(
        **public.clause.model_dump(),
        standard_detail=Standard(
            code=row["standard_code"] or row["standard"],
            title=row["standard_title"] or "",
            edition=row["standard_edition"] or "",
        ),
        text=row["text"] or "",
        domain=row["domain"] or "",
        key=bool(row["key"]),
        confidence=row["confidence"] or "",
        effective_from=row["effective_from"] or row["started_at"].date(),
        effective_to=row["effective_to"],
        params=row["params"],
    )
    return AlertDetail(
        **public.model_dump(exclude={"clause"}),
        clause=provenance,
        confirmed_at=row["confirmed_at"],
        evidence=evidence_readings(row["evidence"]),
        escalation_chain=row["escalation_chain"],
        acknowledged_at=row["acknowledged_at"],
        acknowledged_by=row["acknowledged_by"],
        acknowledged_note=row["acknowledged_note"],
        closed_at=row["closed_at"],
        closed_by=row["closed_by"],
        cause=row["cause"],
        corrective_action=row["corrective_action"],
        silenced_by=silences.silence_of(conn, alert_id, wall_now()),
        timeline=[TimelineEntry(**entry) for entry in timeline],
    )
