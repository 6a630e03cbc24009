"""User management in the browser for administrators (issue 19): `/users` (the page) and
`/api/v1/users`: list, create, disable, enable, and set a new password — what `clausewatch
user` does, for an unscoped admin (`GlobalAdmin`: a user of one scope must not make users of
another). Each change is in the ledger under the administrator's name, never the password.
Disabling or a new password ends the user's sessions (api/users.py); an administrator cannot
disable their own account, so the last one is not locked out from the browser.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from api import STATIC_DIR, users
from api.auth import GlobalAdmin, Principal
from api.deps import DbConn
from api.models import Input, problems
from api.tokens import Role
from rules.site import ID_PATTERN
from store import ledger
from store.times import wall_now

router = APIRouter(tags=["users"])
pages = APIRouter(include_in_schema=False)
UserName = Annotated[str, Path(pattern=users.USER_NAME.pattern)]
ScopeId = Annotated[str, Field(pattern=ID_PATTERN, max_length=64)]
Password = Annotated[str, Field(max_length=users.MAX_PASSWORD)]


class UserPublic(BaseModel):
    name: str
    display_name: str
    role: Role
    sites: list[str]  # the sites it sees (empty: see `org`)
    org: list[str]  # an organisation path (empty: see `sites`); both empty: every site
    enabled: bool
    created_at: dt.datetime
    disabled_at: dt.datetime | None


class UserCreate(Input):
    name: Annotated[str, Field(pattern=f"^{users.USER_NAME.pattern}$", max_length=64)]
    display_name: Annotated[str, Field(max_length=users.MAX_DISPLAY_NAME)] = ""
    role: Role
    sites: Annotated[list[ScopeId], Field(max_length=200)] = []
    org: Annotated[list[ScopeId], Field(max_length=10)] = []
    password: Password


class PasswordSet(Input):
    password: Password


@pages.get("/users")
def users_page() -> FileResponse:
    """The administrators' page of users (用户管理)."""
    return FileResponse(STATIC_DIR / "users.html", media_type="text/html; charset=utf-8")


@router.get("/users", responses=problems(401, 403))
def list_users(conn: DbConn, principal: GlobalAdmin) -> list[UserPublic]:
    """Every user, by name, with role, scope and whether it may sign in."""
    return [_public(u) for u in users.list_users(conn)]


@router.post("/users", status_code=status.HTTP_201_CREATED, responses=problems(401, 403, 409))
def create_user(body: UserCreate, conn: DbConn, principal: GlobalAdmin) -> UserPublic:
    """A new user who signs in at /login with this password (at least 10 characters)."""
    if users.get_user(conn, body.name) is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"a user named {body.name!r} exists already")
    try:
        made = users.create_user(
            conn,
            body.name,
            body.role,
            body.password,
            display_name=body.display_name,
            sites=tuple(body.sites),
            org=tuple(body.org),
        )
    except users.UserError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    _record(conn, "user.created", made, principal, role=made.role, scope=made.scope)
    return _public(made)


@router.post("/users/{name}/disable", responses=problems(401, 403, 404, 409))
def disable_user(name: UserName, conn: DbConn, principal: GlobalAdmin) -> UserPublic:
    """The user can no longer sign in; their sessions end at once."""
    if name == principal.user:
        raise HTTPException(status.HTTP_409_CONFLICT, "you cannot disable your own account")
    if not users.disable_user(conn, name):
        _exists(conn, name)
        raise HTTPException(status.HTTP_409_CONFLICT, f"user {name!r} is disabled already")
    return _changed(conn, "user.disabled", name, principal)


@router.post("/users/{name}/enable", responses=problems(401, 403, 404, 409))
def enable_user(name: UserName, conn: DbConn, principal: GlobalAdmin) -> UserPublic:
    """A disabled user may sign in again."""
    if not users.enable_user(conn, name):
        _exists(conn, name)
        raise HTTPException(status.HTTP_409_CONFLICT, f"user {name!r} is enabled already")
    return _changed(conn, "user.enabled", name, principal)


@router.post("/users/{name}/password", responses=problems(401, 403, 404))
def set_password(
    name: UserName, body: PasswordSet, conn: DbConn, principal: GlobalAdmin
) -> UserPublic:
    """A new password (at least 10 characters): the user's sessions end and a lockout lifts."""
    try:
        found = users.set_password(conn, name, body.password)
    except users.UserError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    if not found:
        _exists(conn, name)
    return _changed(conn, "user.password_set", name, principal)


def _exists(conn: DbConn, name: str) -> users.UserRecord:
    found = users.get_user(conn, name)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no user named {name!r}")
    return found


def _changed(conn: DbConn, kind: str, name: str, principal: Principal) -> UserPublic:
    user = _exists(conn, name)
    _record(conn, kind, user, principal)
    return _public(user)


def _record(
    conn: DbConn, kind: str, user: users.UserRecord, principal: Principal, **more: str
) -> None:
    """The change in the ledger, by whom (never a password), and commits."""
    entry = ledger.Entry(
        kind=kind, entity=f"user:{user.name}", payload={"actor": principal.actor, **more}
    )
    ledger.append(conn, [entry], wall_now())
    conn.commit()


def _public(user: users.UserRecord) -> UserPublic:
    return UserPublic(
        name=user.name,
        display_name=user.display_name,
        role=user.role,
        sites=list(user.sites),
        org=list(user.org),
        enabled=user.disabled_at is None,
        created_at=user.created_at,
        disabled_at=user.disabled_at,
    )
