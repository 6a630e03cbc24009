"""`GET /ledger/verify`: the check of `clausewatch ledger verify` (alerts/audit.py): the hash
chain, against the signed anchors when the app was given their folder, and the alerts and
their timelines against the ledger."""

from __future__ import annotations

from fastapi import APIRouter, Request

from alerts.anchors import AnchorError, AnchorSet, AnchorSource
from alerts.audit import audit
from api.auth import LedgerVerifier
from api.deps import DbConn
from api.models import LedgerAnchorCheck, LedgerRecordsCheck, LedgerVerdict, problems

router = APIRouter(prefix="/ledger", tags=["ledger"])


@router.get("/verify", responses=problems(401, 403))
def verify_ledger(conn: DbConn, principal: LedgerVerifier, request: Request) -> LedgerVerdict:
    """The ledger spans every site, so only tokens without a site scope may verify it."""
    source: AnchorSource | None = getattr(request.app.state, "ledger_anchors", None)
    anchors: AnchorSet | None = None
    unreadable: str | None = None
    if source is not None:
        try:
            anchors = source.load()
        except AnchorError as exc:
            unreadable = f"the anchors cannot be read: {exc}"
    # The token check ran in this connection's transaction: end it, so the audit reads one
    # snapshot of its own.
    conn.commit()
    result = audit(conn, anchors)
    verdict = result.chain
    found = result.problems()
    if unreadable is not None:
        found.insert(0, unreadable)
    anchor_check = None
    if anchors is not None:
        latest = anchors.latest
        anchor_check = LedgerAnchorCheck(
            folder=str(anchors.folder),
            count=len(anchors.anchors),
            latest_seq=latest.seq if latest else None,
            latest_hash=latest.hash if latest else None,
            latest_at=latest.at if latest else None,
            matched_seq=verdict.anchored_seq,
            problems=anchors.problems,
        )
    records = result.records
    return LedgerVerdict(
        ok=result.ok and unreadable is None,
        checked=verdict.checked,
        first_bad_seq=verdict.first_bad_seq,
        problem=verdict.problem,
        tip_seq=verdict.tip_seq,
        tip_hash=verdict.tip_hash,
        anchored=anchors is not None,
        anchors=anchor_check,
        records=LedgerRecordsCheck(
            alerts=records.alerts,
            timeline=records.timeline,
            entries=records.entries,
            problem_count=records.problem_count,
            problems=records.problems,
        ),
        problems=found,
    )
