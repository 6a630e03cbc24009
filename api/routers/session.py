"""Signing in and out (issue 19): `POST /session` with a user's name and password makes a
server-side session (api/sessions.py) and sets its cookies; `GET /session` says who the caller
is (a user or a token); `DELETE /session` signs out. The sign-in page is `/login`.

Failed sign-ins are counted per user name and per client address; past the policy's limit
(api/users.py, `LockoutPolicy`) a sign-in is refused with 429 before its password is checked,
and the answer says until when."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import FileResponse

from api import STATIC_DIR
from api.auth import CurrentToken
from api.deps import DbConn
from api.models import Me, SignIn, problems
from api.sessions import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    SessionPolicy,
    cookie_name,
    create_session,
    end_session,
)
from api.users import check_lockout, clear_failures, record_failure, verify_password

router = APIRouter(prefix="/session", tags=["session"])
pages = APIRouter(include_in_schema=False)


def session_policy(request: Request) -> SessionPolicy:
    policy = getattr(request.app.state, "session_policy", None)
    return policy if isinstance(policy, SessionPolicy) else SessionPolicy()


@router.post("", responses=problems(401, 429))
def sign_in(body: SignIn, request: Request, response: Response, conn: DbConn) -> Me:
    """Signs a user in: sets the session cookie (HttpOnly) and the CSRF cookie, and answers
    the CSRF token to send as `X-CSRF-Token`. 401 for a wrong name or password (the same answer
    for both), 429 while the name or the client address is locked out."""
    policy = session_policy(request)
    client = request.client.host if request.client else ""
    name = body.name.lower()  # names are lower case; a phone may capitalise the first letter
    locked = check_lockout(conn, name, client, policy.lockout)
    if locked is not None:
        conn.commit()
        wait = max(1, int((locked.until - dt.datetime.now(dt.UTC)).total_seconds()) + 1)
        who = "this user" if locked.by_user else "this address"
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many failed sign-ins for {who} (登录失败次数过多): try again after"
            f" {locked.until.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%SZ}, or ask an administrator"
            " (clausewatch user reset-password)",
            headers={"Retry-After": str(wait)},
        )
    user = verify_password(conn, name, body.password)
    if user is None:
        record_failure(conn, name, client, policy.lockout)
        conn.commit()
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "wrong user name or password (用户名或密码错误)"
        )
    clear_failures(conn, name)
    secret, csrf, session = create_session(conn, user, policy, client)
    conn.commit()
    https = request.url.scheme == "https"
    response.headers["Cache-Control"] = "no-store"  # the answer holds the CSRF token
    max_age = int(policy.lifetime.total_seconds())
    for name, value, http_only in ((SESSION_COOKIE, secret, True), (CSRF_COOKIE, csrf, False)):
        response.set_cookie(
            cookie_name(name, https),
            value,
            max_age=max_age,
            path="/",
            secure=https,
            httponly=http_only,
            samesite="strict",
        )
    return Me(
        kind="user",
        actor=user.actor,
        user=user.name,
        display_name=user.display_name,
        role=user.role,
        sites=list(user.sites) or None,
        org=list(user.org),
        expires_at=session.expires_at,
        csrf_token=csrf,
    )


@router.get("", responses=problems(401))
def who_am_i(principal: CurrentToken) -> Me:
    """The caller: a signed-in user (with the sites its scope covers now) or an API token."""
    return Me(
        kind=principal.kind,
        actor=principal.actor,
        user=principal.user,
        display_name=principal.label,
        role=principal.role,
        sites=None if principal.sites is None else sorted(principal.sites),
        org=list(principal.org),
    )


@router.delete("", status_code=status.HTTP_204_NO_CONTENT, responses=problems(400, 401, 403))
def sign_out(principal: CurrentToken, request: Request, response: Response, conn: DbConn) -> None:
    """Ends the caller's session and clears its cookies (needs the CSRF header, like every
    request of a session that changes something). A token is not a session: 400."""
    if principal.session_id is None:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, "an API token is not a session; revoke it instead"
        )
    end_session(conn, principal.session_id)
    conn.commit()
    https = request.url.scheme == "https"
    for name, http_only in ((SESSION_COOKIE, True), (CSRF_COOKIE, False)):
        response.delete_cookie(
            cookie_name(name, https),
            path="/",
            secure=https,
            httponly=http_only,
            samesite="strict",
        )


@pages.get("/login")
def login_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "login.html", media_type="text/html; charset=utf-8")
