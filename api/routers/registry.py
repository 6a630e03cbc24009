"""The registry: sites, spaces, devices, parties and assignments of the sites a token sees, and
the admin edits of parties and assignments. Every edit is recorded in the ledger with the
token that made it (store.registry / ledger)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status

from alerts import webhooks
from api.auth import Principal, Reader, RegistryAdmin
from api.deps import DbConn
from api.models import (
    AssignmentCreate,
    AssignmentPublic,
    AssignmentUpdate,
    DevicePublic,
    DeviceStatusPublic,
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
from rules.site import WEBHOOK_CONTACT, Assignment, Party
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


@router.put("/spaces/{site}/{space}/last-done/{task}", responses=problems(401, 403, 404))
def set_last_done(
    site: PathId,
    space: PathId,
    task: TaskId,
    body: LastDoneUpdate,
    conn: DbConn,
    principal: RegistryAdmin,
) -> LastDonePublic:
    """Sets when `space` last met the obligation of `task` (a clause id, or the event type it
    expects): a new obligation instance counts from it as from an event. Recorded in the
    ledger with the token that set it."""
    _require_site(conn, principal, site)
    try:
        registry.set_last_done(conn, site, space, task, body.done_at, principal.actor)
    except LookupError as exc:
        conn.rollback()
        raise HTTPException(status.HTTP_404_NOT_FOUND, "space not found") from exc
    conn.commit()
    row = registry.last_done_row(conn, site, space, task)
    assert row is not None
    return LastDonePublic(**row)


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
