"""Implementation evaluations (标准实施效果评价): a person records one for a clause at a site for a
quarter (`POST /evaluations`, facility managers and admins), lists them (`GET /evaluations`),
and closes or reopens its improvement actions (`PATCH /evaluations/actions/{id}`, 限期整改).
The token's actor is recorded on each, with a ledger entry. Code: compliance/evaluations.py."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status

from api.auth import AlertActor, Reader
from api.deps import DbConn
from api.models import (
    ActionUpdate,
    Evaluation,
    EvaluationCreate,
    ImprovementAction,
    QueryTime,
    SiteId,
    problems,
)
from compliance.evaluations import (
    ActionUnchanged,
    NotInForce,
    PlannedAction,
    UnknownAction,
    action_site,
    list_evaluations,
    record_evaluation,
    update_action,
)
from compliance.periods import BadPeriod
from store.registry import UnknownSite

router = APIRouter(prefix="/evaluations", tags=["evaluations"])
RowId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.get("", responses=problems(401, 403))
def evaluations(
    conn: DbConn,
    principal: Reader,
    site: SiteId | None = None,
    since: Annotated[QueryTime | None, Query(description="quarters ending after this")] = None,
    until: Annotated[QueryTime | None, Query(description="quarters starting before this")] = None,
) -> list[Evaluation]:
    """Evaluations of the token's sites (or of `site`), newest quarter first (at most 1000),
    each with its improvement actions, `overdue` as of now."""
    return list_evaluations(
        conn, principal.site_filter(site), at=dt.datetime.now(dt.UTC), since=since, until=until
    )


@router.get("/{evaluation_id}", responses=problems(401, 403, 404))
def evaluation(evaluation_id: RowId, conn: DbConn, principal: Reader) -> Evaluation:
    found = list_evaluations(conn, None, at=dt.datetime.now(dt.UTC), evaluation_id=evaluation_id)
    principal.require_visible(found[0].site if found else None, "evaluation")
    return found[0]


@router.post("", status_code=status.HTTP_201_CREATED, responses=problems(401, 403, 404))
def create_evaluation(body: EvaluationCreate, conn: DbConn, principal: AlertActor) -> Evaluation:
    principal.site_filter(body.site)
    try:
        recorded = record_evaluation(
            conn,
            site=body.site,
            clause_id=body.clause_id,
            period=body.period,
            method=body.method,
            findings=body.findings,
            satisfaction=body.satisfaction,
            actions=[PlannedAction(a.action, a.owner, a.deadline) for a in body.actions],
            actor=principal.actor,
            now=dt.datetime.now(dt.UTC),
        )
    except UnknownSite as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "site not found") from exc
    except BadPeriod as exc:
        raise _field_error("period", str(exc)) from exc
    except NotInForce as exc:
        raise _field_error("clause_id", str(exc)) from exc
    conn.commit()
    return recorded


@router.patch("/actions/{action_id}", responses=problems(401, 403, 404, 409))
def change_action(
    action_id: RowId, body: ActionUpdate, conn: DbConn, principal: AlertActor
) -> ImprovementAction:
    """Done records who closed it and when; open again clears that (both go to the ledger).
    409 when it is already in that state."""
    principal.require_visible(action_site(conn, action_id), "action")
    try:
        changed = update_action(
            conn, action_id, body.state, body.note, principal.actor, dt.datetime.now(dt.UTC)
        )
    except UnknownAction as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "action not found") from exc
    except ActionUnchanged as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    conn.commit()
    return changed


def _field_error(field: str, message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        [{"loc": ["body", field], "msg": message, "type": "value_error"}],
    )
