"""Webhook targets and the outbound allow-list: global data, changed by unscoped admins only
(the API's `GlobalAdmin`, or the command line, which holds the database URL).

A target is a name, a URL and a signing secret, optionally limited to a site and an escalation
level. The URL and the secret are read here and by `alerts.notify` when sending, and nowhere
else: what the API and the command line show of a target is `shown_url` (scheme, host and port;
a path, query or user info may hold a token), and what the ledger records of a change is which
fields changed, never their values.

None of these functions commit: the caller owns the transaction. Every change takes the ledger
lock first and is recorded in the ledger with the actor.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row

from alerts.outbound import parse_allow_entry
from rules.site import WEBHOOK_TARGET_PATTERN
from store import ledger
from store.times import require_aware, wall_now

MIN_SECRET_LENGTH = 16
_FIELDS = ("url", "secret", "site", "level", "broadcast", "enabled")


class TargetExists(ValueError):
    """A target with that name exists (names are unique and never change)."""


class TargetInvalid(ValueError):
    """A name, URL or secret that cannot be used; `field` names which."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    url: str
    secret: str
    site: str | None = None
    level: int | None = None
    broadcast: bool = True
    enabled: bool = True


def new_secret() -> str:
    """A signing secret for a target whose receiver has none yet (256 random bits)."""
    return secrets.token_urlsafe(32)


def shown_url(url: str) -> str:
    """What may be shown of a target's URL: scheme, host and port, the rest as `/…` (a chat
    robot's token sits in the query, a Slack hook's in the path, a password in the user info)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "(not a valid URL)"
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    port = f":{parsed.port}" if parsed.port is not None else ""
    return f"{parsed.scheme}://{host}{port}/…"


def check_target(target: Target) -> None:
    """Raises TargetInvalid for a name, URL or secret that cannot be used."""
    if not re.fullmatch(WEBHOOK_TARGET_PATTERN, target.name):
        raise TargetInvalid("name", f"a target's name matches {WEBHOOK_TARGET_PATTERN}")
    check_url(target.url)
    check_secret(target.secret)
    if target.level is not None and target.level < 0:
        raise TargetInvalid("level", "a level is 0 (the responsible party) or more")


def check_url(url: str) -> None:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise TargetInvalid("url", "not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise TargetInvalid("url", "an http:// or https:// URL with a host")
    if parsed.fragment:
        raise TargetInvalid("url", "a webhook URL has no #fragment")


def check_secret(secret: str) -> None:
    if len(secret) < MIN_SECRET_LENGTH or not secret.isprintable() or secret != secret.strip():
        raise TargetInvalid(
            "secret",
            f"a secret has at least {MIN_SECRET_LENGTH} printable characters, no surrounding"
            " spaces",
        )


def add_target(
    conn: psycopg.Connection[Any], target: Target, actor: str, now: dt.datetime | None = None
) -> int:
    """Stores a new target and returns its id. Raises TargetInvalid, TargetExists."""
    now = require_aware(now or wall_now(), "now")
    check_target(target)
    ledger.lock(conn)
    row = conn.execute(
        "INSERT INTO webhook_targets (name, site, level, url, secret, broadcast, enabled,"
        " created_by, created_at, updated_by, updated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (name) DO NOTHING RETURNING id",
        (
            target.name,
            target.site,
            target.level,
            target.url,
            target.secret,
            target.broadcast,
            target.enabled,
            actor,
            now,
            actor,
            now,
        ),
    ).fetchone()
    if row is None:
        raise TargetExists(f"a webhook target named {target.name!r} exists")
    target_id = int(row[0])
    facts = {
        "id": target_id,
        "name": target.name,
        "site": target.site,
        "level": target.level,
        "broadcast": target.broadcast,
        "enabled": target.enabled,
        "url": shown_url(target.url),
        "actor": actor,
    }
    ledger.append(conn, [ledger.Entry("webhook_target.added", f"webhook:{target_id}", facts)], now)
    return target_id


def change_target(
    conn: psycopg.Connection[Any],
    target_id: int,
    changes: dict[str, Any],
    actor: str,
    now: dt.datetime | None = None,
) -> None:
    """Changes the fields of `changes` (url, secret, site, level, broadcast, enabled; the name
    never changes). The ledger records which fields changed, and the new values of those that
    are not secret. Raises LookupError for an unknown id, TargetInvalid."""
    now = require_aware(now or wall_now(), "now")
    unknown = set(changes) - set(_FIELDS)
    if unknown:
        raise ValueError(f"not a changeable field of a webhook target: {sorted(unknown)}")
    if "url" in changes:
        check_url(changes["url"])
    if "secret" in changes:
        check_secret(changes["secret"])
    if changes.get("level") is not None and changes["level"] < 0:
        raise TargetInvalid("level", "a level is 0 (the responsible party) or more")
    ledger.lock(conn)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT url, secret, site, level, broadcast, enabled FROM webhook_targets"
            " WHERE id = %s FOR UPDATE",
            (target_id,),
        )
        before = cur.fetchone()
    if before is None:
        raise LookupError(f"no webhook target {target_id}")
    changed = {k: v for k, v in changes.items() if before[k] != v}
    if not changed:
        return
    after = before | changed
    conn.execute(
        "UPDATE webhook_targets SET url = %s, secret = %s, site = %s, level = %s,"
        " broadcast = %s, enabled = %s, updated_by = %s, updated_at = %s WHERE id = %s",
        (
            after["url"],
            after["secret"],
            after["site"],
            after["level"],
            after["broadcast"],
            after["enabled"],
            actor,
            now,
            target_id,
        ),
    )
    facts: dict[str, Any] = {"id": target_id, "changed": sorted(changed), "actor": actor}
    facts.update(
        {k: v for k, v in changed.items() if k in ("site", "level", "broadcast", "enabled")}
    )
    if "url" in changed:
        facts["url"] = shown_url(changed["url"])
    ledger.append(
        conn, [ledger.Entry("webhook_target.changed", f"webhook:{target_id}", facts)], now
    )


def target_rows(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Every target as it may be shown (`url` as `shown_url`, no secret), with its delivery
    counts, by id."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT t.id, t.name, t.site, t.level, t.broadcast, t.enabled, t.url,"
            " t.created_by, t.created_at, t.updated_by, t.updated_at,"
            " count(n.id) FILTER (WHERE n.state = 'delivered') AS delivered,"
            " count(n.id) FILTER (WHERE n.state = 'pending') AS pending,"
            " count(n.id) FILTER (WHERE n.state = 'failed') AS failed"
            " FROM webhook_targets t LEFT JOIN notifications n ON n.target_id = t.id"
            " GROUP BY t.id ORDER BY t.id"
        )
        rows = cur.fetchall()
    for row in rows:
        row["url"] = shown_url(row["url"])
    return rows


def target_row(conn: psycopg.Connection[Any], target_id: int) -> dict[str, Any] | None:
    return next((row for row in target_rows(conn) if row["id"] == target_id), None)


def target_id_by_name(conn: psycopg.Connection[Any], name: str) -> int | None:
    row = conn.execute("SELECT id FROM webhook_targets WHERE name = %s", (name,)).fetchone()
    return None if row is None else int(row[0])


def target_serves(conn: psycopg.Connection[Any], name: str, site: str) -> bool:
    """Whether a party of `site` may name the target `name` in its contacts.webhook: it exists
    and serves every site or this one."""
    row = conn.execute(
        "SELECT 1 FROM webhook_targets WHERE name = %s AND (site IS NULL OR site = %s)",
        (name, site),
    ).fetchone()
    return row is not None


# ---- the allow-list ----


def allow_rows(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT id, kind, entry, note, created_by, created_at FROM webhook_allowlist"
            " ORDER BY id"
        )
        return cur.fetchall()


def allow(
    conn: psycopg.Connection[Any],
    entry: str,
    note: str,
    actor: str,
    now: dt.datetime | None = None,
) -> tuple[int, bool]:
    """Allow-lists a host name or a network (an address is a /32 or /128): webhooks may go
    there although it is internal. Returns (id, whether it was added now). Raises ValueError
    for an entry that is neither."""
    now = require_aware(now or wall_now(), "now")
    kind, value = parse_allow_entry(entry)
    ledger.lock(conn)
    row = conn.execute(
        "INSERT INTO webhook_allowlist (kind, entry, note, created_by, created_at)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (entry) DO NOTHING RETURNING id",
        (kind, value, note, actor, now),
    ).fetchone()
    if row is None:
        existing = conn.execute(
            "SELECT id FROM webhook_allowlist WHERE entry = %s", (value,)
        ).fetchone()
        assert existing is not None
        return int(existing[0]), False
    facts = {"id": row[0], "kind": kind, "entry": value, "note": note, "actor": actor}
    ledger.append(conn, [ledger.Entry("webhook_allowlist.added", f"allow:{value}", facts)], now)
    return int(row[0]), True


def disallow(
    conn: psycopg.Connection[Any], entry_id: int, actor: str, now: dt.datetime | None = None
) -> None:
    """Removes an allow-list entry. Raises LookupError for an unknown id."""
    now = require_aware(now or wall_now(), "now")
    ledger.lock(conn)
    row = conn.execute(
        "DELETE FROM webhook_allowlist WHERE id = %s RETURNING kind, entry", (entry_id,)
    ).fetchone()
    if row is None:
        raise LookupError(f"no allow-list entry {entry_id}")
    facts = {"id": entry_id, "kind": row[0], "entry": row[1], "actor": actor}
    ledger.append(conn, [ledger.Entry("webhook_allowlist.removed", f"allow:{row[1]}", facts)], now)
