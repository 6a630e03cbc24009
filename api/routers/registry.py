"""The registry: sites, spaces, devices, parties and assignments of the sites a token sees, and
the admin edits of parties and assignments. Every edit is recorded in the ledger with the
token that made it (store.registry / ledger)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Annotated, Any, cast

import orjson
from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from starlette.concurrency import run_in_threadpool

from alerts import webhooks
from api.auth import Principal, Reader, RegistryAdmin
from api.deps import DbConn
from api.models import (
    AssignmentCreate,
    AssignmentPublic,
    AssignmentUpdate,
    DevicePublic,
    DeviceStatusPublic,
    LastDoneApplied,
    LastDonePublic,
    LastDoneUpdate,
    PartyCreate,
    PartyPublic,
    PartyUpdate,
    QueryTime,
    SiteId,
    SitePublic,
    SpacePublic,
    problems,
)
from api.routers.ingest import HttpIngest, LastDoneView, deliver
from rules.site import LAST_DONE_REPORTER, WEBHOOK_CONTACT, Assignment, Party
from store import registry

router = APIRouter(tags=["registry"])
PathId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
TaskId = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_.-]{0,127}$")]


@router.get("/sites", responses=problems(401, 403))
def list_sites(conn: DbConn, principal: Reader) -> list[SitePublic]:
    return [SitePublic(**row) for row in registry.site_summaries(conn, principal.site_filter(None))]


@router.get("/spaces", responses=problems(401, 403))
def list_spaces(conn: DbConn, principal: Reader, site: SiteId | None = None) -> list[SpacePublic]:
    return [SpacePublic(**row) for row in registry.space_rows(conn, principal.site_filter(site))]


@router.get("/devices", responses=problems(401, 403))
def list_devices(conn: DbConn, principal: Reader, site: SiteId | None = None) -> list[DevicePublic]:
    return [DevicePublic(**row) for row in registry.device_rows(conn, principal.site_filter(site))]


@router.get("/device-status", responses=problems(401, 403))
def list_device_status(
    conn: DbConn, principal: Reader, site: SiteId | None = None
) -> list[DeviceStatusPublic]:
    """The latest online/offline status of each gateway or device that published one."""
    rows = registry.device_status_rows(conn, principal.site_filter(site))
    return [DeviceStatusPublic(**row) for row in rows]


@router.get("/parties", responses=problems(401, 403))
def list_parties(conn: DbConn, principal: Reader, site: SiteId | None = None) -> list[PartyPublic]:
    return [PartyPublic(**row) for row in registry.party_rows(conn, principal.site_filter(site))]


@router.get("/assignments", responses=problems(401, 403))
def list_assignments(
    conn: DbConn,
    principal: Reader,
    site: SiteId | None = None,
    at: Annotated[QueryTime | None, Query(description="only those in force at this time")] = None,
) -> list[AssignmentPublic]:
    """Assignments, past, present and future (or only those in force at `at`)."""
    rows = registry.assignment_rows(conn, principal.site_filter(site), at)
    return [AssignmentPublic(**row) for row in rows]


@router.post(
    "/parties",
    status_code=status.HTTP_201_CREATED,
    responses=problems(401, 403, 404, 409),
)
def create_party(body: PartyCreate, conn: DbConn, principal: RegistryAdmin) -> PartyPublic:
    """Adds a party to a site. 409 when the id is taken. `contacts.webhook` names a webhook
    target serving the site (422 otherwise); targets are made by unscoped admins."""
    _require_site(conn, principal, body.site)
    _require_webhook_target(conn, body.site, body.contacts)
    party = Party.model_validate(body.model_dump(include={"id", "name", "kind", "contacts"}))
    try:
        registry.add_party(conn, body.site, party, principal.actor)
    except registry.PartyExists as exc:
        conn.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, "a party with this id exists") from exc
    conn.commit()
    return _party(conn, body.site, body.id)


@router.patch("/parties/{site}/{party_id}", responses=problems(401, 403, 404))
def update_party(
    site: PathId, party_id: PathId, body: PartyUpdate, conn: DbConn, principal: RegistryAdmin
) -> PartyPublic:
    """Changes a party's name, kind or contacts (the fields given). `contacts.webhook` names a
    webhook target serving the site (422 otherwise)."""
    principal.require_visible(site, "party")
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    if registry.party_row(conn, site, party_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "party not found")
    _require_webhook_target(conn, site, changes.get("contacts", {}))
    try:
        registry.change_party(conn, site, party_id, changes, principal.actor)
    except LookupError as exc:
        conn.rollback()
        raise HTTPException(status.HTTP_404_NOT_FOUND, "party not found") from exc
    conn.commit()
    return _party(conn, site, party_id)


@router.post(
    "/assignments",
    status_code=status.HTTP_201_CREATED,
    responses=problems(401, 403, 404),
)
def create_assignment(
    body: AssignmentCreate, conn: DbConn, principal: RegistryAdmin
) -> AssignmentPublic:
    """Makes a party answer for a space subtree and clause domain over a period."""
    _require_site(conn, principal, body.site)
    has_party, has_space = registry.party_and_space_exist(conn, body.site, body.party, body.space)
    if not has_party:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "party not found")
    if not has_space:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "space not found")
    if body.valid_to is not None and body.valid_to <= body.valid_from:
        raise _field_error("valid_to", "must be after valid_from")
    assignment = Assignment.model_validate(body.model_dump(exclude={"site"}))
    new_id = registry.add_assignment(conn, body.site, assignment, principal.actor)
    conn.commit()
    return _assignment(conn, principal, new_id)


@router.patch("/assignments/{assignment_id}", responses=problems(401, 403, 404))
def end_assignment(
    assignment_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    body: AssignmentUpdate,
    conn: DbConn,
    principal: RegistryAdmin,
) -> AssignmentPublic:
    """Ends an assignment's period at `valid_to` (assignments are history: nothing else
    changes; a new period is a new assignment)."""
    current = _assignment(conn, principal, assignment_id)
    if body.valid_to < current.valid_from:
        raise _field_error("valid_to", "must not be before the assignment began")
    registry.end_assignment(conn, assignment_id, body.valid_to, principal.actor)
    conn.commit()
    return _assignment(conn, principal, assignment_id)


@router.put("/spaces/{site}/{space}/last-done/{task}", responses=problems(401, 403, 404, 409, 503))
async def set_last_done(
    request: Request,
    site: PathId,
    space: PathId,
    task: TaskId,
    body: LastDoneUpdate,
    principal: RegistryAdmin,
) -> LastDonePublic:
    """Sets when `space` last met the obligation of `task` (a clause id, or the event type it
    expects), recorded in the ledger with the token that set it, and makes it count in the
    running engines without a restart (docs/api.md "Last-done times"): inside the ingest's
    maximum age and after judging began it is input, an event of the task's type from the
    reporter `last-done` judged in event time (`applied: "input"`, answered after its commit);
    otherwise a baseline applied to the running engine at once (`applied: "baseline"`)."""
    ingest = cast(HttpIngest | None, request.app.state.ingest)
    if ingest is not None and site in ingest.other_sites:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"site {site!r} is judged by another ingest worker (clausewatch run --workers): "
            "nothing was stored; set it on a service running one worker, or in the site file",
        )
    if body.done_at > dt.datetime.now(dt.UTC) + dt.timedelta(seconds=MAX_FUTURE_SKEW_S):
        raise _field_error("done_at", "is in the future")
    row = await run_in_threadpool(_store_last_done, request, principal, site, space, task, body)
    applied: LastDoneApplied = "at_next_start"  # no pipeline of this site in this process
    if ingest is not None and ingest.last_done is not None and site in ingest.sites:
        applied = await _reach_engines(ingest, site, space, task, body.done_at, principal.actor)
    return LastDonePublic(**row, applied=applied)


# A last-done time a little ahead of the server's clock (a phone's) is taken as now-ish.
MAX_FUTURE_SKEW_S = 60.0


def _store_last_done(
    request: Request,
    principal: Principal,
    site: str,
    space: str,
    task: str,
    body: LastDoneUpdate,
) -> dict[str, Any]:
    with request.app.state.pool.connection() as conn:
        _require_site(conn, principal, site)
        # Input events are keyed (site, reporter, type, ts): another space's at the same
        # instant would be absorbed as a copy of it.
        taken = conn.execute(
            "SELECT space FROM events WHERE site = %s AND device = %s AND ts = %s"
            " AND space IS DISTINCT FROM %s LIMIT 1",
            (site, LAST_DONE_REPORTER, body.done_at, space),
        ).fetchone()
        if taken is not None:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"space {taken[0]!r} has a last-done time at this very instant: give this one "
                "a time at least a microsecond apart",
            )
        try:
            registry.set_last_done(conn, site, space, task, body.done_at, principal.actor)
        except LookupError as exc:
            conn.rollback()
            raise HTTPException(status.HTTP_404_NOT_FOUND, "space not found") from exc
        conn.commit()
        row = registry.last_done_row(conn, site, space, task)
    assert row is not None
    return row


async def _reach_engines(
    ingest: HttpIngest, site: str, space: str, task: str, done_at: dt.datetime, actor: str
) -> LastDoneApplied:
    """Hands the stored time to the pipeline (ingest.pipeline.Pipeline.request_last_done) and,
    when it is input, feeds it as one event per event type through HTTP ingest's path."""
    assert ingest.last_done is not None
    try:
        decision = cast(
            LastDoneView,
            await asyncio.wait_for(
                asyncio.wrap_future(ingest.last_done(site, space, task, done_at.timestamp())),
                ingest.commit_timeout_s,
            ),
        )
    except (TimeoutError, RuntimeError):  # not taken in time, or the pipeline is restarting
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "stored, but the running engines did not take it within "
            f"{ingest.commit_timeout_s:g} s: it counts from the next start; PUT it again",
            headers={"Retry-After": "5"},
        ) from None
    if not decision.events:
        return "no_obligation"
    if decision.kind != "input":
        return "baseline"
    topic = f"{ingest.prefix}/{site}/{LAST_DONE_REPORTER}/event"
    for event_type in sorted(decision.events):
        event = {
            "ts": done_at.astimezone(dt.UTC).isoformat(),
            "type": event_type,
            "space": space,
            "actor": actor[:128],
            "attrs": {"via": "last_done", "task": task},
        }
        delivery = await deliver(ingest, topic, orjson.dumps(event))
        if not delivery.events:
            reasons = "; ".join(f"{d.reason}: {d.detail}" for d in delivery.dead_letters)
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"stored, but the event was refused ({reasons}): it counts from the next start",
            )
    return "input"


def _require_site(conn: DbConn, principal: Principal, site: str) -> None:
    """403 for a site outside the token's scope (as for a site filter), 404 for an unknown one."""
    principal.site_filter(site)
    if not registry.site_exists(conn, site):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "site not found")


def _require_webhook_target(conn: DbConn, site: str, contacts: dict[str, str]) -> None:
    """422 unless contacts.webhook (if any) names a webhook target serving `site`: a scoped
    admin can send the site's notifications only where an unscoped admin allowed."""
    name = contacts.get(WEBHOOK_CONTACT)
    if name is not None and not webhooks.target_serves(conn, name, site):
        raise _field_error("contacts", f"no webhook target named {name!r} serves site {site}")


def _party(conn: DbConn, site: str, party_id: str) -> PartyPublic:
    row = registry.party_row(conn, site, party_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "party not found")
    return PartyPublic(**row)


def _assignment(conn: DbConn, principal: Principal, assignment_id: int) -> AssignmentPublic:
    row = registry.assignment_row(conn, assignment_id)
    principal.require_visible(None if row is None else row["site"], "assignment")
    assert row is not None
    return AssignmentPublic(**row)


def _field_error(field: str, message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        [{"loc": ["body", field], "msg": message, "type": "value_error"}],
    )
