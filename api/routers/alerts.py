"""Alerts: list (filtered, cursor-paginated), detail with provenance and timeline, and the two
human steps of the lifecycle, acknowledge and close (alerts does the transition)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, status
from psycopg.rows import dict_row

from alerts import lifecycle
from api.alert_rows import ALERT_COLUMNS, alert_public, evidence_readings
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
    problems,
)
from api.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, encode_cursor

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
    where: list[str] = []
    args: list[Any] = []
    sites = principal.site_filter(site)
    if sites is not None:
        where.append("a.site = ANY(%s)")
        args.append(sites)
    if state:
        where.append("a.state = ANY(%s)")
        args.append(list(state))
    if severity:
        where.append("a.severity = ANY(%s)")
        args.append(list(severity))
    if clause is not None:
        where.append("a.clause_id = %s")
        args.append(clause)
    if space is not None:
        where.append(
            "(a.space = %s OR (a.site, a.space) IN (WITH RECURSIVE sub(site, id) AS ("
            " SELECT site, id FROM spaces WHERE id = %s"
            " UNION SELECT s.site, s.id FROM spaces s JOIN sub ON s.site = sub.site"
            " AND s.parent = sub.id) SELECT site, id FROM sub))"
        )
        args.extend([space, space])
    if since is not None:
        where.append("a.started_at >= %s")
        args.append(since)
    if until is not None:
        where.append("a.started_at < %s")
        args.append(until)
    if cursor is not None:
        at, last_id = decode_cursor(cursor)
        where.append("(a.started_at, a.id) < (%s, %s)")
        args.extend([at, last_id])
    sql = (
        f"SELECT {ALERT_COLUMNS} FROM alerts a"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY a.started_at DESC, a.id DESC LIMIT %s"
    )
    args.append(limit + 1)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(sql, args).fetchall()
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
    row = conn.execute("SELECT site FROM alerts WHERE id = %s", (alert_id,)).fetchone()
    principal.require_visible(None if row is None else row[0], "alert")


def load_alert_detail(conn: DbConn, principal: Principal, alert_id: int) -> AlertDetail:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"SELECT {ALERT_COLUMNS}, a.confirmed_at, a.params, a.evidence, a.escalation_chain,"
            " a.acknowledged_at, a.acknowledged_by, a.acknowledged_note, a.closed_at,"
            " a.closed_by, a.cause, a.corrective_action,"
            " v.standard_code, v.standard_title, v.standard_edition, v.text, v.domain, v.key,"
            " v.confidence, v.effective_from, v.effective_to"
            " FROM alerts a LEFT JOIN clause_versions v"
            " ON v.clause_id = a.clause_id AND v.version = a.clause_version"
            " WHERE a.id = %s",
            (alert_id,),
        ).fetchone()
        principal.require_visible(None if row is None else row["site"], "alert")
        assert row is not None
        timeline = cur.execute(
            "SELECT id, at, action, actor, note, data FROM alert_timeline"
            " WHERE alert_id = %s ORDER BY id",
            (alert_id,),
        ).fetchall()
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
        timeline=[TimelineEntry(**entry) for entry in timeline],
    )
