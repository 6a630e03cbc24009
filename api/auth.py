"""Who is calling and what they may do: bearer token → `Principal`, roles → permissions, and the
one place where site scope is enforced.

Rules (SPEC §5): no, unknown, revoked or expired token → 401; a role without the permission →
403; a site filter naming a site outside the token's scope → 403; a resource (alert, device...)
of a site outside the scope → 404, exactly as if it did not exist, so ids cannot be probed.
Global data (emission factors, webhook targets, the outbound allow-list, tokens of other scopes)
belongs to no site: only a token without a site scope changes it (`GLOBAL_ADMIN`), an admin's
scoped token gets 403. The table of docs/api.md, "Who may call what", states the same route by
route.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import ConnectionPool

from api.deps import Pool
from api.tokens import Role, lookup_token


class Permission(enum.Enum):
    READ = "read"  # alerts, clauses, compliance, readings, registry, stream of visible sites
    ALERTS_ACT = "alerts:act"  # acknowledge and close alerts
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
        {Permission.READ, Permission.ALERTS_ACT, Permission.LEDGER_VERIFY}
    ),
    "energy_officer": frozenset(
        {Permission.READ, Permission.ENERGY_READ, Permission.LEDGER_VERIFY}
    ),
    "admin": frozenset(Permission),
}


@dataclass(frozen=True, slots=True)
class Principal:
    token_id: int
    role: Role
    sites: frozenset[str] | None  # None: every site
    label: str = ""

    @property
    def actor(self) -> str:
        """How edits made with this token are recorded (ledger, alert timeline)."""
        return f"token:{self.token_id}" + (f" ({self.label})" if self.label else "")

    def can(self, permission: Permission) -> bool:
        if permission in UNSCOPED_ONLY and self.sites is not None:
            return False
        return permission in ROLE_PERMISSIONS[self.role]

    def sees(self, site: str) -> bool:
        return self.sites is None or site in self.sites

    def site_filter(self, requested: str | None) -> list[str] | None:
        """Sites a query may return: the requested one (403 when outside the scope), else the
        token's sites; None means no restriction."""
        if requested is not None:
            if not self.sees(requested):
                raise HTTPException(status.HTTP_403_FORBIDDEN, "this token cannot see that site")
            return [requested]
        return None if self.sites is None else sorted(self.sites)

    def require_visible(self, site: str | None, what: str) -> None:
        """404 for a resource of a site outside the scope (or of no site at all)."""
        if site is None or not self.sees(site):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"{what} not found")


_bearer = HTTPBearer(auto_error=False, description="an API token: `clausewatch token create`")


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


def current_principal(
    request: Request,
    pool: Pool,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    # A request with a body was authenticated before its body was read (api/limits.py).
    checked = getattr(request.state, "principal", None)
    if isinstance(checked, Principal):
        return checked
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("a bearer token is required")
    principal = authenticate(pool, credentials.credentials)
    request.state.principal = principal
    return principal


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


CurrentToken = Annotated[Principal, Depends(current_principal)]


def require(permission: Permission) -> Callable[[Principal], Principal]:
    """A dependency: the caller's principal, or 403 when its role lacks `permission`."""

    def check(principal: CurrentToken) -> Principal:
        if not principal.can(permission):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"role {principal.role} may not {permission.value}"
                + (" (site-scoped token)" if principal.sites is not None else ""),
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
