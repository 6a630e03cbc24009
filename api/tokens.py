"""API bearer tokens: created once (the plain token is shown only then), stored as SHA-256,
revocable, expiring (90 days unless told otherwise) and rotatable (a new secret for the same role,
sites and label; the old one revoked). A token carries a role and the sites it may see; no sites
means every site.

Functions take a `psycopg.Connection` and do not commit: the caller owns the transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import psycopg

Role = Literal["viewer", "facility_manager", "energy_officer", "admin", "cleaner"]
ROLES: tuple[Role, ...] = get_args(Role)
TOKEN_PREFIX = "cw_"
DEFAULT_LIFETIME = dt.timedelta(days=90)
MAX_LIFETIME = dt.timedelta(days=3650)
_LIFETIME = re.compile(r"([1-9][0-9]{0,6})([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
LIFETIME_HELP = "a lifetime such as 30d, 12h, 90m or 2w (at most 3650 days)"


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: int
    role: Role
    sites: tuple[str, ...]  # empty: every site
    label: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    expires_at: dt.datetime
    expired: bool  # at the time it was read (the database's clock)
    replaced_by: int | None  # the token that replaced this one (`token rotate`)


_COLUMNS = (
    "id, role, sites, label, created_at, revoked_at, expires_at, expires_at <= now(), replaced_by"
)


def parse_lifetime(text: str) -> dt.timedelta:
    """`30d`, `12h`, `90m`, `2w` → a timedelta; ValueError for anything else, zero, or more
    than ten years (a token that must outlive that is one nobody rotates)."""
    match = _LIFETIME.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not {LIFETIME_HELP}")
    lifetime = dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if lifetime > MAX_LIFETIME:
        raise ValueError(f"{text!r} is longer than {MAX_LIFETIME.days} days")
    return lifetime


def new_token() -> str:
    """A fresh bearer token: the prefix (so leaked tokens are recognisable to scanners) and
    32 random bytes, URL-safe base64."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def create_token(
    conn: psycopg.Connection,
    role: Role,
    sites: tuple[str, ...] = (),
    label: str = "",
    lifetime: dt.timedelta = DEFAULT_LIFETIME,
) -> tuple[str, TokenRecord]:
    """Stores a new token that expires `lifetime` from now and returns (plain token, record).
    The plain token exists nowhere else afterwards."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    if not dt.timedelta(0) < lifetime <= MAX_LIFETIME:
        raise ValueError(f"a token lives more than 0 s and at most {MAX_LIFETIME.days} days")
    token = new_token()
    row = conn.execute(
        "INSERT INTO api_tokens (token_hash, role, sites, label, expires_at)"
        " VALUES (%s, %s, %s, %s, now() + %s) RETURNING " + _COLUMNS,
        (token_digest(token), role, list(dict.fromkeys(sites)), label, lifetime),
    ).fetchone()
    assert row is not None
    return token, _record(row)


def rotate_token(
    conn: psycopg.Connection, token_id: int, lifetime: dt.timedelta | None = None
) -> tuple[str, TokenRecord] | None:
    """Replaces an unrevoked token (expired or not) by a new secret with its role, sites and
    label, living `lifetime` (default: as long as the old one was made to live); the old one is
    revoked at once and names its successor. None when no unrevoked token has that id."""
    old = conn.execute(
        "SELECT role, sites, label, expires_at - created_at FROM api_tokens"
        " WHERE id = %s AND revoked_at IS NULL FOR UPDATE",
        (token_id,),
    ).fetchone()
    if old is None:
        return None
    role, sites, label, old_lifetime = old
    token, record = create_token(
        conn, role, tuple(sites), label, old_lifetime if lifetime is None else lifetime
    )
    conn.execute(
        "UPDATE api_tokens SET revoked_at = now(), replaced_by = %s WHERE id = %s",
        (record.id, token_id),
    )
    return token, record


def revoke_token(conn: psycopg.Connection, token_id: int) -> bool:
    """Revokes a token by id; False when no live token has that id."""
    cur = conn.execute(
        "UPDATE api_tokens SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL",
        (token_id,),
    )
    return cur.rowcount == 1


def lookup_token(conn: psycopg.Connection, token: str) -> TokenRecord | None:
    """The unrevoked token with this plain value (`expired` says whether it may still be
    used), or None."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM api_tokens WHERE token_hash = %s AND revoked_at IS NULL",
        (token_digest(token),),
    ).fetchone()
    return None if row is None else _record(row)


async def live_token_ids(conn: psycopg.AsyncConnection[Any], token_ids: Sequence[int]) -> set[int]:
    """Which of these token ids are neither revoked nor expired (the stream's periodic check)."""
    cur = await conn.execute(
        "SELECT id FROM api_tokens WHERE id = ANY(%s) AND revoked_at IS NULL"
        " AND expires_at > now()",
        (list(token_ids),),
    )
    return {int(row[0]) for row in await cur.fetchall()}


def list_tokens(conn: psycopg.Connection) -> list[TokenRecord]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM api_tokens ORDER BY id").fetchall()
    return [_record(row) for row in rows]


def _record(row: tuple[Any, ...]) -> TokenRecord:
    token_id, role, sites, label, created_at, revoked_at, expires_at, expired, replaced_by = row
    return TokenRecord(
        token_id,
        role,
        tuple(sites),
        label,
        created_at,
        revoked_at,
        expires_at,
        bool(expired),
        replaced_by,
    )
