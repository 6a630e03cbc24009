"""Named users (issue 19): people sign in with a name and a password; API tokens stay for
machines. A user has a role (the token roles of api/tokens.py) and one scope: some sites, an
organisation path (every site whose `site.org` starts with it, resolved at each request, so a
site added later is seen at once), or neither (every site).

Passwords are hashed with argon2id (pwdlib's parameters: 64 MiB, 3 passes); only the hash is
stored. Sign-in failures are counted per user name and per client address over a window, and a
name or address past its limit is refused before its password is checked (`check_lockout`).

Functions take a `psycopg.Connection` and do not commit: the caller owns the transaction.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from api.tokens import ROLES, Role

USER_NAME: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
USER_NAME_HELP: Final = "1 to 64 of a-z 0-9 . _ -, starting with a letter or digit"
MIN_PASSWORD: Final = 10  # characters (NIST SP 800-63B asks for at least 8)
MAX_PASSWORD: Final = 200  # bounded: argon2 hashes the whole of it
MAX_DISPLAY_NAME: Final = 100
# The first key of the sign-in locks (two-int advisory locks: a key space of their own).
SIGN_IN_LOCK_CLASS: Final = 19
_HASHER: Final = PasswordHash((Argon2Hasher(),))
# Verified when the name is unknown, so an unknown name takes as long as a wrong password.
_DUMMY_HASH: Final = _HASHER.hash("clausewatch: no such user")


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    """At most `per_user` failed sign-ins for one user name, and `per_client` from one client
    address, within `window`; past either the sign-in is refused until the oldest failure of
    the window is older than it."""

    per_user: int = 5
    per_client: int = 20
    window: dt.timedelta = dt.timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: int
    name: str
    display_name: str
    role: Role
    sites: tuple[str, ...]  # the sites it may see (empty: see `org`)
    org: tuple[str, ...]  # an organisation path (empty: see `sites`); both empty: every site
    created_at: dt.datetime
    disabled_at: dt.datetime | None

    @property
    def actor(self) -> str:
        """How the person is named in the ledger and the alert timeline."""
        return f"user:{self.name}" + (f" ({self.display_name})" if self.display_name else "")

    @property
    def scope(self) -> str:
        if self.sites:
            return "sites " + ", ".join(self.sites)
        if self.org:
            return "org " + "/".join(self.org)
        return "all sites"


class UserError(ValueError):
    """Bad input for a user (name, role, scope, password): the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Lockout:
    """A refused sign-in: who is locked (the user name or the client address) and until when."""

    by_user: bool
    until: dt.datetime


USER_COLUMNS = "id, name, display_name, role, sites, org, created_at, disabled_at"


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"a password has at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise UserError(f"a password has at most {MAX_PASSWORD} characters")


def create_user(
    conn: psycopg.Connection[Any],
    name: str,
    role: Role,
    password: str,
    *,
    display_name: str = "",
    sites: tuple[str, ...] = (),
    org: tuple[str, ...] = (),
) -> UserRecord:
    """Stores a new user; UserError for a bad name, role, scope or password, or a name taken."""
    if not USER_NAME.fullmatch(name):
        raise UserError(f"{name!r} is not a user name ({USER_NAME_HELP})")
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    if sites and org:
        raise UserError("a user is scoped to sites or to an organisation, not both")
    if len(display_name) > MAX_DISPLAY_NAME:
        raise UserError(f"a display name has at most {MAX_DISPLAY_NAME} characters")
    check_password_rules(password)
    row = conn.execute(
        "INSERT INTO users (name, display_name, role, sites, org, password_hash)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO NOTHING RETURNING " + USER_COLUMNS,
        (
            name,
            display_name,
            role,
            list(dict.fromkeys(sites)),
            list(org),
            _HASHER.hash(password),
        ),
    ).fetchone()
    if row is None:
        raise UserError(f"a user named {name!r} exists already")
    return user_record(row)


def list_users(conn: psycopg.Connection[Any]) -> list[UserRecord]:
    return [user_record(r) for r in conn.execute(f"SELECT {USER_COLUMNS} FROM users ORDER BY name")]


def get_user(conn: psycopg.Connection[Any], name: str) -> UserRecord | None:
    row = conn.execute(f"SELECT {USER_COLUMNS} FROM users WHERE name = %s", (name,)).fetchone()
    return None if row is None else user_record(row)


def disable_user(conn: psycopg.Connection[Any], name: str) -> bool:
    """Disables an enabled user and ends its sessions; False when no enabled user has that
    name."""
    row = conn.execute(
        "UPDATE users SET disabled_at = now() WHERE name = %s AND disabled_at IS NULL RETURNING id",
        (name,),
    ).fetchone()
    if row is None:
        return False
    end_user_sessions(conn, int(row[0]))
    return True


def enable_user(conn: psycopg.Connection[Any], name: str) -> bool:
    """Enables a disabled user; False when no disabled user has that name."""
    cur = conn.execute(
        "UPDATE users SET disabled_at = NULL WHERE name = %s AND disabled_at IS NOT NULL", (name,)
    )
    return cur.rowcount == 1


def set_password(conn: psycopg.Connection[Any], name: str, password: str) -> bool:
    """A new password for the user; its sessions end (whoever knew the old one is signed out)
    and its failed sign-ins are forgotten. False when no user has that name."""
    check_password_rules(password)
    row = conn.execute(
        "UPDATE users SET password_hash = %s, password_set_at = now() WHERE name = %s RETURNING id",
        (_HASHER.hash(password), name),
    ).fetchone()
    if row is None:
        return False
    end_user_sessions(conn, int(row[0]))
    clear_failures(conn, name)
    return True


def end_user_sessions(conn: psycopg.Connection[Any], user_id: int) -> int:
    cur = conn.execute(
        "UPDATE user_sessions SET ended_at = now() WHERE user_id = %s AND ended_at IS NULL",
        (user_id,),
    )
    return cur.rowcount


def check_lockout(
    conn: psycopg.Connection[Any], name: str, client: str, policy: LockoutPolicy
) -> Lockout | None:
    """A Lockout when this user name or this client address has used up its failed sign-ins
    within the window, else None. Sign-ins of one name are serialised from here to the end of
    the caller's transaction (an advisory lock), so guesses sent at once cannot all pass the
    count before the first failure is recorded."""
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (SIGN_IN_LOCK_CLASS, name))
    for by_user, column, value, limit in (
        (True, "user_name", name, policy.per_user),
        (False, "client", client, policy.per_client),
    ):
        row = conn.execute(
            f"SELECT count(*), min(at) FROM (SELECT at FROM login_failures WHERE {column} = %s"
            " AND at > now() - %s ORDER BY at DESC LIMIT %s) recent",
            (value, policy.window, limit),
        ).fetchone()
        assert row is not None
        if row[0] >= limit:
            return Lockout(by_user, row[1] + policy.window)
    return None


def record_failure(
    conn: psycopg.Connection[Any], name: str, client: str, policy: LockoutPolicy
) -> None:
    conn.execute("DELETE FROM login_failures WHERE at <= now() - %s", (policy.window,))
    conn.execute("INSERT INTO login_failures (user_name, client) VALUES (%s, %s)", (name, client))


def clear_failures(conn: psycopg.Connection[Any], name: str) -> None:
    """Forgets the user name's failed sign-ins (after one that succeeded)."""
    conn.execute("DELETE FROM login_failures WHERE user_name = %s", (name,))


def verify_password(conn: psycopg.Connection[Any], name: str, password: str) -> UserRecord | None:
    """The enabled user with this name and password, else None (unknown name, wrong password,
    disabled user: the same answer, in about the same time). A hash made with older parameters
    is replaced by one with the current parameters."""
    row = conn.execute(
        f"SELECT {USER_COLUMNS}, password_hash FROM users WHERE name = %s", (name,)
    ).fetchone()
    if row is None or len(password) > MAX_PASSWORD:
        _HASHER.verify(password[:MAX_PASSWORD], _DUMMY_HASH)
        return None
    valid, updated = _HASHER.verify_and_update(password, row[-1])
    if not valid or row[7] is not None:
        return None
    if updated is not None:
        conn.execute("UPDATE users SET password_hash = %s WHERE id = %s", (updated, row[0]))
    return user_record(row[:-1])


def user_record(row: tuple[Any, ...]) -> UserRecord:
    user_id, name, display_name, role, sites, org, created_at, disabled_at = row
    return UserRecord(
        int(user_id),
        name,
        display_name,
        role,
        tuple(sites),
        tuple(org),
        created_at,
        disabled_at,
    )
