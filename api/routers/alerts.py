"""Alerts: list (filtered, searched, cursor-paginated), detail with provenance and timeline, and
what people do to them (alerts.lifecycle does each step): acknowledge and close, one alert or a
batch; comment; reassign to another party of the site; a site's 台账 as CSV."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, status
from fastapi.responses import Response
from pydantic import ValidationError

from alerts import evidence, export, lifecycle, reads, silences
from api.auth import AlertActor, Principal, Reader
from api.deps import DbConn
from api.models import (
    AcknowledgeCreate,
    AlertDetail,
    AlertPage,
    AlertState,
    BulkAcknowledge,
    BulkClose,
    BulkOutcome,
    BulkRefusal,
    CheckinEvidence,
    ClauseProvenance,
    CloseCreate,
    CommentCreate,
    ConsumptionBucket,
    EvidenceReading,
    InhibitedAlert,
    MeterEvidence,
    ObligationEvidence,
    QueryTime,
    ReassignCreate,
    Severity,
    SiteId,
    Span,
    Standard,
    SubjectEvent,
    TimelineEntry,
    alert_public,
    evidence_readings,
    problems,
)
from api.pagination import DEFAULT_LIMIT, MAX_LIMIT, decode_cursor, encode_cursor
from api.periods import query_error
from energy.quotas import quota_evidence
from energy.reports import ReportError, load_site_model
from rules.checkin import TASK_LABELS
from rules.clause import (
    ClauseVersion,
    ConditionCheck,
    DataQualityCheck,
    ObligationCheck,
    QuotaCheck,
    ThresholdCheck,
)
from store import checkins
from store.registry import UnknownSite
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
    search: Annotated[
        str | None,
        Query(
            max_length=100,
            description="words that must each occur (case-insensitive) in the clause id, number"
            " or title, the standard, the space (id or name), the device or the responsible"
            " party (id or name)",
        ),
    ] = None,
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
        search=search,
        before=before,
        limit=limit + 1,  # one more than the page: is there a next page?
    )
    items = [alert_public(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(last["started_at"], last["id"])
    return AlertPage(items=items, next_cursor=next_cursor)


# A year of alerts at most: the 台账 is read into memory as one file.
LEDGER_MAX_DAYS = 366


@router.get(
    "/ledger.csv",
    response_class=Response,
    responses={**problems(401, 403, 404), 200: {"content": {"text/csv": {}}}},
)
def alert_ledger(
    conn: DbConn,
    principal: Reader,
    site: SiteId,
    first_day: Annotated[dt.date, Query(description="the first day, in the site's time zone")],
    last_day: Annotated[dt.date, Query(description="the last day (included)")],
) -> Response:
    """The 台账 of a site (alerts/export.py, as `clausewatch alerts export` writes it): the
    alerts that started in [first_day, last_day] with clause, responsible party, timeline,
    cause and corrective action; CSV, UTF-8 with BOM; at most 366 days."""
    principal.site_filter(site)
    if last_day >= dt.date.max or not 0 <= (last_day - first_day).days < LEDGER_MAX_DAYS:
        raise query_error(
            "last_day", f"the period must run forward and span at most {LEDGER_MAX_DAYS} days"
        )
    try:
        data = export.ledger_csv(conn, site, first_day, last_day)
    except UnknownSite as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "site not found") from exc
    name = f"taizhang-{site}-{first_day.isoformat()}-{last_day.isoformat()}.csv"
    return Response(
        data,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


# The batch routes come before /{alert_id}/...: "bulk" is not an id.
@router.post("/bulk/ack", responses=problems(401, 403))
def acknowledge_alerts(body: BulkAcknowledge, conn: DbConn, principal: AlertActor) -> BulkOutcome:
    """Acknowledge every alert of the batch that may be acknowledged, with one note; each gets
    its timeline row and ledger entry. The others are refused one by one, with the answer the
    single-alert route would give (404 unknown or outside the token's sites, 409 wrong state);
    they do not stop the rest."""
    return _bulk(
        conn,
        principal,
        body.ids,
        lambda alert_id: lifecycle.acknowledge(
            conn, alert_id, actor=principal.actor, note=body.note
        ),
    )


@router.post("/bulk/close", responses=problems(401, 403))
def close_alerts(body: BulkClose, conn: DbConn, principal: AlertActor) -> BulkOutcome:
    """Close every resolved alert of the batch with one cause and corrective action; the rest
    are refused one by one as in POST /alerts/bulk/ack (409 for a firing or acknowledged alert,
    or one whose re-verification period has not passed)."""
    return _bulk(
        conn,
        principal,
        body.ids,
        lambda alert_id: lifecycle.close(
            conn,
            alert_id,
            actor=principal.actor,
            cause=body.cause,
            corrective_action=body.corrective_action,
        ),
    )


def _bulk(
    conn: DbConn,
    principal: Principal,
    ids: list[int],
    step: Callable[[int], dict[str, Any]],
) -> BulkOutcome:
    """`step` for each id (in the order given, repeats once) in one transaction, each in a
    savepoint, so a refusal leaves no trace and the others stand."""
    done: list[int] = []
    refused: list[BulkRefusal] = []
    sites = reads.alert_sites(conn, ids)
    for alert_id in dict.fromkeys(ids):
        site = sites.get(alert_id)
        if site is None or not principal.sees(site):
            refused.append(BulkRefusal(id=alert_id, status=404, detail="alert not found"))
            continue
        try:
            with conn.transaction():
                step(alert_id)
        except lifecycle.AlertError as exc:
            refused.append(BulkRefusal(id=alert_id, status=exc.http_status, detail=exc.message))
            continue
        done.append(alert_id)
    conn.commit()
    return BulkOutcome(done=done, refused=refused)


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


@router.post("/{alert_id}/comments", responses=problems(401, 403, 404))
def comment_alert(
    alert_id: AlertId, body: CommentCreate, conn: DbConn, principal: AlertActor
) -> AlertDetail:
    """Add a comment to the alert's record (any state); it is a timeline row and a ledger entry
    with the person who wrote it."""
    _ensure_visible(conn, principal, alert_id)
    with _lifecycle_errors(conn):
        lifecycle.comment(conn, alert_id, actor=principal.actor, text=body.text)
    conn.commit()
    return load_alert_detail(conn, principal, alert_id)


@router.post("/{alert_id}/reassign", responses=problems(401, 403, 404, 409))
def reassign_alert(
    alert_id: AlertId, body: ReassignCreate, conn: DbConn, principal: AlertActor
) -> AlertDetail:
    """Hand the alert to another current party of its site (GET /parties?site=...), with an
    optional note. 422 for a party the site does not have; 409 for a closed alert or the party
    already responsible."""
    _ensure_visible(conn, principal, alert_id)
    with _lifecycle_errors(conn):
        lifecycle.reassign(conn, alert_id, actor=principal.actor, party=body.party, note=body.note)
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
    except lifecycle.UnknownParty as exc:
        conn.rollback()
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [{"loc": ["body", "party"], "msg": exc.message, "type": "unknown_party"}],
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
    kept = evidence_readings(row["evidence"])
    return AlertDetail(
        **public.model_dump(exclude={"clause"}),
        clause=provenance,
        confirmed_at=row["confirmed_at"],
        evidence=kept,
        **_evidence_views(conn, row, kept, wall_now()),
        escalation_chain=row["escalation_chain"],
        acknowledged_at=row["acknowledged_at"],
        acknowledged_by=row["acknowledged_by"],
        acknowledged_note=row["acknowledged_note"],
        closed_by=row["closed_by"],
        silenced_by=silences.silence_of(conn, alert_id, wall_now()),
        inhibits=[InhibitedAlert(**each) for each in reads.inhibited_alerts(conn, alert_id)]
        if row["outage"]
        else [],
        timeline=[TimelineEntry(**entry) for entry in timeline],
        checkins=_checkins(conn, row),
    )


def _evidence_views(
    conn: DbConn, row: dict[str, Any], kept: list[EvidenceReading], now: dt.datetime
) -> dict[str, Any]:
    """What the alert's clause makes of its evidence (docs/api.md, "Evidence"): the worst raw
    reading of a threshold, condition or data-quality alert, a quota's consumption per period,
    an obligation's last done / due / overdue by. Empty when the clause version is not
    stored."""
    try:
        clause = ClauseVersion.model_validate(row["clause_config"] or {})
    except ValidationError:
        return {}
    check = clause.check
    site, device, metric = row["site"], row["device"], row["metric"]
    end = row["ended_at"] or now
    if isinstance(check, ThresholdCheck | ConditionCheck | DataQualityCheck):
        if device is None or metric is None or row["worst_value"] is None:
            return {}
        found = evidence.worst_reading(
            conn, site, device, metric, row["worst_value"], row["started_at"], end
        )
        if found is None:
            return {}
        at, value = found
        return {"worst_reading": EvidenceReading(ts=at, device=device, metric=metric, value=value)}
    if isinstance(check, ObligationCheck) and row["space"] is not None:
        view = evidence.obligation_view(
            conn,
            site=site,
            space=row["space"],
            check=check,
            started_at=row["started_at"],
            ended_at=row["ended_at"],
            evidence=[(reading.ts, reading.metric) for reading in kept],
            now=now,
        )
        return {
            "obligation": ObligationEvidence(
                event=view.event,
                every_s=view.every,
                per=view.per,
                grace_s=view.grace,
                last_done_at=view.last_done_at,
                due_at=view.due_at,
                done_at=view.done_at,
                overdue_until=view.overdue_until,
                overdue_s=view.overdue_seconds,
                since=view.since,
                until=view.until,
                events=[SubjectEvent(**event) for event in view.events],
            )
        }
    if isinstance(check, QuotaCheck) and device is not None:
        try:
            model = load_site_model(conn, site)
        except ReportError:
            return {}
        quota = quota_evidence(conn, model, clause, device, row["params"], row["started_at"], end)
        if quota is None:
            return {}
        return {
            "meter": MeterEvidence(
                device=quota.device,
                metric=quota.metric,
                register_unit=quota.register_unit,
                unit=quota.unit,
                area_m2=None if quota.area_m2 is None else float(quota.area_m2),
                period=quota.period,
                bucket=quota.bucket,
                period_start=quota.period_start,
                period_end=quota.period_end,
                limit=float(quota.limit),
                buckets=[
                    ConsumptionBucket(
                        start=b.start,
                        end=b.end,
                        value=float(b.value),
                        cumulative=float(b.cumulative),
                        estimated=b.estimated,
                    )
                    for b in quota.buckets
                ],
                resets=quota.resets,
                gaps=[Span(start=a, end=b) for a, b in quota.gaps],
                missing_hours=float(quota.missing_hours),
            )
        }
    return {}


MAX_CHECKINS = 20  # check-ins shown with one alert


def _checkins(conn: DbConn, row: dict[str, Any]) -> list[CheckinEvidence]:
    """An obligation alert's check-ins (store/checkins.py) while it was open."""
    if row["obligation_event"] is None or row["space"] is None:
        return []
    found = checkins.checkins_between(
        conn,
        row["site"],
        row["space"],
        row["obligation_event"],
        row["started_at"],
        row["ended_at"],
        MAX_CHECKINS,
    )
    evidence = []
    for item in found:
        zh, en = TASK_LABELS.get(item["task"], (item["task"], item["task"]))
        photo = item["photo"]
        evidence.append(
            CheckinEvidence(
                **item,
                task_zh=zh,
                task_en=en,
                photo_url=None if photo is None else f"/api/v1/checkin-photos/{photo}",
            )
        )
    return evidence
