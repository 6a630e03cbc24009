"""Server-side sign-in sessions of named users (issue 19).

Signing in (POST /api/v1/session, api/routers/session.py) makes a session: a random secret in
an HttpOnly cookie and a random CSRF token in a cookie the pages read and send back as the
`X-CSRF-Token` header of every request that changes something. Only the SHA-256 of each is
stored (`user_sessions`). A session ends `lifetime` after sign-in, after `idle_timeout` without
a request (an open alert stream counts as activity), when its user signs out, is disabled or is
given a new password.

Over HTTPS the cookies are `__Host-` prefixed and `Secure` (bound to this origin, never sent
in clear); over plain HTTP (the demo on localhost) they carry neither, since a browser keeps no
`Secure` cookie set over HTTP. Both are `SameSite=Strict`.

Functions take a `psycopg.Connection` and do not commit: the caller owns the transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import psycopg

from api.users import USER_COLUMNS, LockoutPolicy, UserRecord, user_record

SESSION_COOKIE: Final = "cw_session"
CSRF_COOKIE: Final = "cw_csrf"
CSRF_HEADER: Final = "X-CSRF-Token"
SECURE_PREFIX: Final = "__Host-"
MAX_SECRET: Final = 100  # characters of a cookie value worth hashing


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    lifetime: dt.timedelta = dt.timedelta(hours=12)  # a working day, then sign in again
    idle_timeout: dt.timedelta = dt.timedelta(minutes=30)
    lockout: LockoutPolicy = field(default_factory=LockoutPolicy)


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: int
    user: UserRecord
    csrf_hash: bytes
    expires_at: dt.datetime

    def csrf_matches(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(_digest(token), self.csrf_hash)


def cookie_name(base: str, https: bool) -> str:
    return SECURE_PREFIX + base if https else base


def create_session(
    conn: psycopg.Connection[Any], user: UserRecord, policy: SessionPolicy, client: str
) -> tuple[str, str, SessionRecord]:
    """A new session of `user`: (session secret, CSRF token, record). Neither secret is stored;
    the user's sessions that ended more than a day ago are deleted."""
    conn.execute(
        "DELETE FROM user_sessions WHERE user_id = %s"
        " AND least(coalesce(ended_at, expires_at), expires_at) < now() - interval '1 day'",
        (user.id,),
    )
    secret, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    row = conn.execute(
        "INSERT INTO user_sessions (session_hash, csrf_hash, user_id, client, expires_at,"
        " idle_timeout) VALUES (%s, %s, %s, %s, now() + %s, %s) RETURNING id, expires_at",
        (
            _digest(secret),
            _digest(csrf),
            user.id,
            client[:100],
            policy.lifetime,
            policy.idle_timeout,
        ),
    ).fetchone()
    assert row is not None
    return secret, csrf, SessionRecord(int(row[0]), user, _digest(csrf), row[1])


def lookup_session(conn: psycopg.Connection[Any], secret: str) -> SessionRecord | None:
    """The live session with this secret, its last activity moved to now; None when there is
    none (unknown, signed out, expired, idle too long, its user disabled)."""
    if not secret or len(secret) > MAX_SECRET:
        return None
    user_columns = ", ".join(f"u.{c.strip()}" for c in USER_COLUMNS.split(","))
    row = conn.execute(
        "UPDATE user_sessions s SET last_seen_at = now() FROM users u"
        " WHERE s.session_hash = %s AND u.id = s.user_id AND s.ended_at IS NULL"
        " AND s.expires_at > now() AND s.last_seen_at > now() - s.idle_timeout"
        " AND u.disabled_at IS NULL"
        f" RETURNING s.id, s.csrf_hash, s.expires_at, {user_columns}",
        (_digest(secret),),
    ).fetchone()
    if row is None:
        return None
    return SessionRecord(int(row[0]), user_record(row[3:]), bytes(row[1]), row[2])


def end_session(conn: psycopg.Connection[Any], session_id: int) -> None:
    conn.execute(
        "UPDATE user_sessions SET ended_at = now() WHERE id = %s AND ended_at IS NULL",
        (session_id,),
    )


async def live_session_ids(
    conn: psycopg.AsyncConnection[Any], session_ids: Sequence[int]
) -> set[int]:
    """Which of these sessions are live (the stream's periodic check); an open stream is
    activity, so their last activity moves to now."""
    cur = await conn.execute(
        "UPDATE user_sessions s SET last_seen_at = now() FROM users u"
        " WHERE s.id = ANY(%s) AND u.id = s.user_id AND s.ended_at IS NULL"
        " AND s.expires_at > now() AND s.last_seen_at > now() - s.idle_timeout"
        " AND u.disabled_at IS NULL RETURNING s.id",
        (list(session_ids),),
    )
    return {int(row[0]) for row in await cur.fetchall()}


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()
