"""API bearer tokens: created once (the plain token is shown only then), stored as SHA-256,
revocable. A token carries a role and the sites it may see; no sites means every site.

Functions take a `psycopg.Connection` and do not commit: the caller owns the transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any, Literal, get_args

import psycopg

Role = Literal["viewer", "facility_manager", "energy_officer", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)
TOKEN_PREFIX = "cw_"


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: int
    role: Role
    sites: tuple[str, ...]  # empty: every site
    label: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None


def new_token() -> str:
    """A fresh bearer token: the prefix (so leaked tokens are recognisable to scanners) and
    32 random bytes, URL-safe base64."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def create_token(
    conn: psycopg.Connection, role: Role, sites: tuple[str, ...] = (), label: str = ""
) -> tuple[str, TokenRecord]:
    """Stores a new token and returns (plain token, record). The plain token exists nowhere
    else afterwards."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    token = new_token()
    row = conn.execute(
        "INSERT INTO api_tokens (token_hash, role, sites, label) VALUES (%s, %s, %s, %s)"
        " RETURNING id, role, sites, label, created_at, revoked_at",
        (token_digest(token), role, list(dict.fromkeys(sites)), label),
    ).fetchone()
    assert row is not None
    return token, _record(row)


def revoke_token(conn: psycopg.Connection, token_id: int) -> bool:
    """Revokes a token by id; False when no live token has that id."""
    cur = conn.execute(
        "UPDATE api_tokens SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL",
        (token_id,),
    )
    return cur.rowcount == 1


def lookup_token(conn: psycopg.Connection, token: str) -> TokenRecord | None:
    """The live (unrevoked) token with this plain value, or None."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = conn.execute(
        "SELECT id, role, sites, label, created_at, revoked_at FROM api_tokens"
        " WHERE token_hash = %s AND revoked_at IS NULL",
        (token_digest(token),),
    ).fetchone()
    return None if row is None else _record(row)


def is_live(conn: psycopg.Connection, token_id: int) -> bool:
    """Whether the token with this id exists and is not revoked (long streams re-check)."""
    row = conn.execute(
        "SELECT 1 FROM api_tokens WHERE id = %s AND revoked_at IS NULL", (token_id,)
    ).fetchone()
    return row is not None


def list_tokens(conn: psycopg.Connection) -> list[TokenRecord]:
    rows = conn.execute(
        "SELECT id, role, sites, label, created_at, revoked_at FROM api_tokens ORDER BY id"
    ).fetchall()
    return [_record(row) for row in rows]


def _record(row: tuple[Any, ...]) -> TokenRecord:
    token_id, role, sites, label, created_at, revoked_at = row
    return TokenRecord(token_id, role, tuple(sites), label, created_at, revoked_at)
