"""Who is calling and what they may do: bearer token or a user's session → `Principal`, roles →
permissions, and the one place where site scope is enforced.

A machine sends an API token (`Authorization: Bearer`); a person signs in at /login and sends
the session cookie (api/sessions.py), plus the session's CSRF token on every request that may
change something. A user scoped to an organisation sees the sites under it as registered at
the time of the request.

Rules (SPEC §5): no, unknown, revoked or expired token or session → 401; a role without the
permission → 403; a site filter naming a site outside the token's scope → 403; a resource
(alert, device...) of a site outside the scope → 404, exactly as if it did not exist, so ids
cannot be probed.
Global data (emission factors, webhook targets, the outbound allow-list, tokens of other scopes)
belongs to no site: only a token without a site scope changes it (`GLOBAL_ADMIN`), an admin's
scoped token gets 403. The table of docs/api.md, "Who may call what", states the same route by
route.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import psycopg
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import ConnectionPool
from starlette.requests import HTTPConnection

from api.deps import Pool
from api.sessions import CSRF_HEADER, SESSION_COOKIE, cookie_name, live_session_ids, lookup_session
from api.tokens import Role, live_token_ids, lookup_token
from store import registry


class Permission(enum.Enum):
    READ = "read"  # alerts, clauses, compliance, readings, registry, stream of visible sites
    ALERTS_ACT = "alerts:act"  # acknowledge and close alerts
    # record field check-ins (and their photos) and open a space's check-in form
    CHECKINS_RECORD = "checkins:record"
    ENERGY_READ = "energy:read"  # energy and carbon reports
    REGISTRY_WRITE = "registry:write"  # parties and assignments
    CLAUSES_ADMIN = "clauses:admin"  # validate (and later publish) clause files
    LEDGER_VERIFY = "ledger:verify"  # the ledger spans every site: unscoped tokens only
    # Data no one site owns (emission factors, webhook targets and the outbound allow-list,
    # tokens of other scopes): unscoped admin tokens only.
    GLOBAL_ADMIN = "global:admin"


# Permissions over what spans every site: a token scoped to sites never has them, whatever its
# role.
UNSCOPED_ONLY = frozenset({Permission.LEDGER_VERIFY, Permission.GLOBAL_ADMIN})


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    "viewer": frozenset({Permission.READ, Permission.ENERGY_READ, Permission.LEDGER_VERIFY}),
    "facility_manager": frozenset(
        {
            Permission.READ,
            Permission.ALERTS_ACT,
            Permission.CHECKINS_RECORD,
            Permission.LEDGER_VERIFY,
        }
    ),
    "energy_officer": frozenset(
        {Permission.READ, Permission.ENERGY_READ, Permission.LEDGER_VERIFY}
    ),
    "admin": frozenset(Permission),
    # Staff on rounds (保洁, patrols): check-ins at the spaces of their sites, nothing else; no
    # alert, reading or report is theirs to read.
    "cleaner": frozenset({Permission.CHECKINS_RECORD}),
}


# What a principal signed in with: an API token or a user's session, by id (the stream counts
# and re-checks its open streams per credential).
Credential = tuple[Literal["token", "session"], int]


@dataclass(frozen=True, slots=True)
class Principal:
    token_id: int | None  # None: a user signed in with a session
    role: Role
    sites: frozenset[str] | None  # None: every site
    label: str = ""  # a token's label, a user's display name
    user: str | None = None  # the user's name (a session)
    session_id: int | None = None
    org: tuple[str, ...] = ()  # a user's organisation scope; `sites` are its sites now

    @property
    def actor(self) -> str:
        """How edits made by this principal are recorded (ledger, alert timeline): the person
        for a user, the token (and its label) for a machine."""
        name = f"user:{self.user}" if self.user is not None else f"token:{self.token_id}"
        return name + (f" ({self.label})" if self.label else "")

    @property
    def credential(self) -> Credential:
        if self.session_id is not None:
            return ("session", self.session_id)
        assert self.token_id is not None
        return ("token", self.token_id)

    def can(self, permission: Permission) -> bool:
        if permission in UNSCOPED_ONLY and self.sites is not None:
            return False
        return permission in ROLE_PERMISSIONS[self.role]

    def sees(self, site: str) -> bool:
        return self.sites is None or site in self.sites

    def sees_now(self, site: str, site_org: Sequence[str] | None) -> bool:
        """`sees`, given the site's organisation path as registered now (None: it has none):
        a principal kept open (a stream) and scoped to an organisation sees a site registered
        under it later, and no longer one moved out of it."""
        if self.org and self.sites is not None:
            return site_org is not None and tuple(site_org[: len(self.org)]) == self.org
        return self.sees(site)

    def site_filter(self, requested: str | None) -> list[str] | None:
        """Sites a query may return: the requested one (403 when outside the scope), else the
        principal's sites; None means no restriction."""
        if requested is not None:
            if not self.sees(requested):
                raise HTTPException(
                    status.HTTP_403_FORBIDDEN, f"this {self.kind} cannot see that site"
                )
            return [requested]
        return None if self.sites is None else sorted(self.sites)

    def require_visible(self, site: str | None, what: str) -> None:
        """404 for a resource of a site outside the scope (or of no site at all)."""
        if site is None or not self.sees(site):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"{what} not found")

    @property
    def kind(self) -> Literal["user", "token"]:
        return "token" if self.user is None else "user"


_bearer = HTTPBearer(auto_error=False, description="an API token: `clausewatch token create`")
# Methods that change nothing: a session may use them without the CSRF header.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def authenticate(pool: ConnectionPool, token: str | None) -> Principal:
    """The principal of a bearer token, or a 401 saying why not (none, unknown or revoked,
    expired). Blocking (one short pool checkout): a stream must not hold a connection for its
    lifetime, and the request-body gate (api/limits.py) calls it from a worker thread."""
    if not token:
        raise _unauthorized("a bearer token is required")
    with pool.connection() as conn:
        record = lookup_token(conn, token)
    if record is None:
        raise _unauthorized("unknown or revoked token")
    if record.expired:
        raise _unauthorized(
            f"this token expired at {record.expires_at.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%SZ};"
            " ask an administrator for a new one (clausewatch token rotate)"
        )
    return Principal(record.id, record.role, frozenset(record.sites) or None, record.label)


def authenticate_connection(pool: ConnectionPool, connection: HTTPConnection) -> Principal:
    """The principal of a request: its bearer token when it sends an Authorization header
    (machines; unchanged), else its user's session cookie. A session's request that may change
    something must carry the session's CSRF token in `X-CSRF-Token` (403 otherwise): another
    site can make a browser send the cookie, never that header. Blocking, like `authenticate`."""
    authorization = connection.headers.get("authorization")
    # "Bearer" with nothing after it (a page with no token pasted) is no credential at all.
    if authorization is not None and authorization.strip().lower() != "bearer":
        scheme, _, token = authorization.strip().partition(" ")
        return authenticate(pool, token.strip() if scheme.lower() == "bearer" else None)
    https = connection.url.scheme == "https"
    secret = connection.cookies.get(cookie_name(SESSION_COOKIE, https))
    if not secret:
        raise _unauthorized("a bearer token is required, or sign in at /login")
    with pool.connection() as conn:
        session = lookup_session(conn, secret)
        if session is None:
            raise _unauthorized(
                "your session has ended (signed out, expired or idle too long); sign in again"
                " at /login"
            )
        user = session.user
        if user.sites:
            sites: frozenset[str] | None = frozenset(user.sites)
        elif user.org:
            sites = frozenset(registry.sites_in_org(conn, user.org))
        else:
            sites = None
    if connection.scope.get("method", "GET") not in SAFE_METHODS and not session.csrf_matches(
        connection.headers.get(CSRF_HEADER)
    ):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"a request that changes something needs the {CSRF_HEADER} header of your session"
            " (reload the page)",
        )
    return Principal(None, user.role, sites, user.display_name, user.name, session.id, user.org)


async def live_credentials(
    conn: psycopg.AsyncConnection[Any], credentials: Sequence[Credential]
) -> set[Credential]:
    """Which of these tokens and sessions may still be used (the stream's periodic check)."""
    tokens = [number for kind, number in credentials if kind == "token"]
    sessions = [number for kind, number in credentials if kind == "session"]
    live: set[Credential] = set()
    if tokens:
        live |= {("token", number) for number in await live_token_ids(conn, tokens)}
    if sessions:
        live |= {("session", number) for number in await live_session_ids(conn, sessions)}
    return live


def current_principal(
    request: Request,
    pool: Pool,
    # Declared so the OpenAPI schema names the bearer scheme; read by authenticate_connection.
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    # A request with a body was authenticated before its body was read (api/limits.py).
    checked = getattr(request.state, "principal", None)
    if isinstance(checked, Principal):
        return checked
    principal = authenticate_connection(pool, request)
    request.state.principal = principal
    return principal


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


CurrentToken = Annotated[Principal, Depends(current_principal)]


def require(permission: Permission, *alternatives: Permission) -> Callable[[Principal], Principal]:
    """A dependency: the caller's principal, or 403 when its role has neither `permission` nor
    any of the `alternatives`."""

    def check(principal: CurrentToken) -> Principal:
        if not any(principal.can(p) for p in (permission, *alternatives)):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"role {principal.role} may not {permission.value}"
                + (f" (site-scoped {principal.kind})" if principal.sites is not None else ""),
            )
        return principal

    return check


Reader = Annotated[Principal, Depends(require(Permission.READ))]
AlertActor = Annotated[Principal, Depends(require(Permission.ALERTS_ACT))]
EnergyReader = Annotated[Principal, Depends(require(Permission.ENERGY_READ))]
RegistryAdmin = Annotated[Principal, Depends(require(Permission.REGISTRY_WRITE))]
ClauseAdmin = Annotated[Principal, Depends(require(Permission.CLAUSES_ADMIN))]
LedgerVerifier = Annotated[Principal, Depends(require(Permission.LEDGER_VERIFY))]
GlobalAdmin = Annotated[Principal, Depends(require(Permission.GLOBAL_ADMIN))]
CheckinRecorder = Annotated[Principal, Depends(require(Permission.CHECKINS_RECORD))]
# A space's check-in form: who reads the site, or who records check-ins there.
CheckinReader = Annotated[Principal, Depends(require(Permission.READ, Permission.CHECKINS_RECORD))]
