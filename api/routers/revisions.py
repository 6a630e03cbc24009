"""Clause revisions (issue 21): propose, approve or reject, publish with an effective date, roll
back. Every reader sees them; only unscoped admins change them (a clause is judged at every
site). The approver must be another token than the proposer. Code: compliance/revisions.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status

from api.auth import GlobalAdmin, Principal, Reader
from api.deps import DbConn
from api.models import (
    RevisionDecision,
    RevisionProposal,
    RevisionPublication,
    RevisionRejection,
    RevisionRollback,
    problems,
)
from compliance.revisions import (
    Revision,
    RevisionError,
    RevisionState,
    approve,
    get_revision,
    list_revisions,
    propose,
    publish,
    reject,
    rollback,
)

router = APIRouter(prefix="/clause-revisions", tags=["register"])
RevisionId = Annotated[int, Path(ge=1, le=2**62)]


@router.get("", responses=problems(401, 403))
def revisions(
    conn: DbConn,
    principal: Reader,
    clause_id: Annotated[str | None, Query(max_length=128)] = None,
    state: Annotated[list[RevisionState] | None, Query(max_length=5)] = None,
    open_: Annotated[bool, Query(alias="open", description="pending or approved only")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[Revision]:
    """Revisions, newest first; `open=true` (or `state=pending&state=approved`): those
    waiting for approval or publication."""
    states: list[RevisionState] | None = ["pending", "approved"] if open_ else state
    found = list_revisions(conn, clause_id=clause_id, states=states, limit=limit)
    return [_seen_by(principal, r) for r in found]


@router.get("/{revision_id}", responses=problems(401, 403, 404))
def revision(revision_id: RevisionId, conn: DbConn, principal: Reader) -> Revision:
    return _seen_by(principal, _answer(lambda: get_revision(conn, revision_id)))


@router.post("", status_code=status.HTTP_201_CREATED, responses=problems(401, 403, 404, 409))
def propose_revision(body: RevisionProposal, conn: DbConn, principal: GlobalAdmin) -> Revision:
    """Applies the changes to the clause's newest version, validates, binds it at every site
    and backtests it over `backtest_days` of stored history: a pending revision."""
    return _commit(
        conn,
        lambda: propose(
            conn,
            body.clause_id,
            body.changes,
            body.reason,
            principal.actor,
            _now(),
            backtest_days=body.backtest_days,
        ),
    )


@router.post("/{revision_id}/approve", responses=problems(401, 403, 404, 409))
def approve_revision(
    revision_id: RevisionId, body: RevisionDecision, conn: DbConn, principal: GlobalAdmin
) -> Revision:
    """403 when the caller proposed it: another named user approves."""
    return _commit(conn, lambda: approve(conn, revision_id, principal.actor, body.note, _now()))


@router.post("/{revision_id}/reject", responses=problems(401, 403, 404, 409))
def reject_revision(
    revision_id: RevisionId, body: RevisionRejection, conn: DbConn, principal: GlobalAdmin
) -> Revision:
    return _commit(conn, lambda: reject(conn, revision_id, principal.actor, body.note, _now()))


@router.post("/{revision_id}/publish", responses=problems(401, 403, 404, 409))
def publish_revision(
    revision_id: RevisionId, body: RevisionPublication, conn: DbConn, principal: GlobalAdmin
) -> Revision:
    """The next version from `effective_from` (after today at every site); the running
    service judges with it from that day, without a restart."""
    return _commit(
        conn, lambda: publish(conn, revision_id, principal.actor, body.effective_from, _now())
    )


@router.post("/{revision_id}/rollback", responses=problems(401, 403, 404, 409))
def rollback_revision(
    revision_id: RevisionId, body: RevisionRollback, conn: DbConn, principal: GlobalAdmin
) -> Revision:
    return _commit(
        conn, lambda: rollback(conn, revision_id, principal.actor, body.effective_from, _now())
    )


def _seen_by(principal: Principal, revision: Revision) -> Revision:
    """The revision with the backtests of the token's sites only (a clause is every site's;
    its figures at a site are that site's)."""
    tested = [t for t in revision.backtest if principal.sees(t.site)]
    return revision.model_copy(update={"backtest": tested})


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _answer(step: Callable[[], Revision]) -> Revision:
    try:
        return step()
    except RevisionError as exc:
        raise _problem(exc) from exc


def _commit(conn: DbConn, step: Callable[[], Revision]) -> Revision:
    try:
        result = step()
    except RevisionError as exc:
        conn.rollback()
        raise _problem(exc) from exc
    conn.commit()
    return result


def _problem(exc: RevisionError) -> HTTPException:
    if exc.http_status == status.HTTP_422_UNPROCESSABLE_CONTENT:
        field = exc.field or "body"
        return HTTPException(
            exc.http_status, [{"loc": ["body", field], "msg": str(exc), "type": "value_error"}]
        )
    return HTTPException(exc.http_status, str(exc))
