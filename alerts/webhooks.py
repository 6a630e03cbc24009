"""Notification targets ("webhook targets": the table's and the commands' name) and the
outbound allow-list: global data, changed by unscoped admins only (the API's `GlobalAdmin`, or
the command line, which holds the database URL).

A target is a name, a kind (its channel: alerts/channels.py), a URL and a secret, options that are
not secret (recipients, message type, an SMS template) and a language (zh or en), optionally limited
to a site and an escalation level. The URL and the secret are read here and by `alerts.notify` when
sending, and nowhere else: what the API and the command line show of a target is `shown_url`
(scheme, host and port; a path, query or user info may hold a token), and what the ledger records of
a change is which fields changed, never their values.

None of these functions commit: the caller owns the transaction. Every change takes the ledger
lock first and is recorded in the ledger with the actor.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from alerts import channels, messages
from alerts.outbound import parse_allow_entry
from rules.site import WEBHOOK_TARGET_PATTERN
from store import ledger
from store.times import require_aware, wall_now

MIN_SECRET_LENGTH = 16
_FIELDS = (
    "url",
    "secret",
    "site",
    "level",
    "broadcast",
    "enabled",
    "language",
    "options",
    "max_per_minute",
    "repeat_interval_s",
)
# Fields whose new values the ledger records (the URL as `shown_url`; the secret never).
_SHOWN = (
    "site",
    "level",
    "broadcast",
    "enabled",
    "language",
    "options",
    "max_per_minute",
    "repeat_interval_s",
)
# A target whose last this many attempts failed, with no delivery since, is shown as failing.
FAILING_AFTER = 3


class TargetExists(ValueError):
    """A target with that name exists (names are unique and never change)."""


# A name, kind, URL, secret or options that cannot be used; `field` names which.
TargetInvalid = channels.InvalidConfig


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    url: str
    secret: str
    site: str | None = None
    level: int | None = None
    broadcast: bool = True
    enabled: bool = True
    kind: channels.Kind = "webhook"
    language: str = "zh"
    options: dict[str, Any] = field(default_factory=dict)
    max_per_minute: int | None = None  # None: the kind's default (channels.DEFAULT_PER_MINUTE)
    repeat_interval_s: int | None = None  # remind of unacknowledged alerts (None: never)


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
    """Raises TargetInvalid for a name, kind, URL, secret or options that cannot be used."""
    if not re.fullmatch(WEBHOOK_TARGET_PATTERN, target.name):
        raise TargetInvalid("name", f"a target's name matches {WEBHOOK_TARGET_PATTERN}")
    channels.parse_options(target.kind, target.options)
    channels.check_url(target.kind, target.url)
    channels.check_secret(target.kind, target.secret, MIN_SECRET_LENGTH)
    check_language(target.language)
    if target.level is not None and target.level < 0:
        raise TargetInvalid("level", "a level is 0 (the responsible party) or more")
    check_rate(target.max_per_minute)
    check_repeat(target.repeat_interval_s)


def check_rate(max_per_minute: int | None) -> None:
    if max_per_minute is not None and not 1 <= max_per_minute <= 10000:
        raise TargetInvalid("max_per_minute", "at most 1 to 10000 messages a minute (or none)")


def check_repeat(seconds: int | None) -> None:
    if seconds is not None and not 60 <= seconds <= 604800:
        raise TargetInvalid("repeat_interval_s", "reminders every 1 minute to 7 days (or none)")


def check_language(language: str) -> None:
    if language not in messages.LANGUAGES:
        raise TargetInvalid("language", f"a target's language is one of {messages.LANGUAGES}")


def add_target(
    conn: psycopg.Connection[Any], target: Target, actor: str, now: dt.datetime | None = None
) -> int:
    """Stores a new target and returns its id. Raises TargetInvalid, TargetExists."""
    now = require_aware(now or wall_now(), "now")
    check_target(target)
    ledger.lock(conn)
    row = conn.execute(
        "INSERT INTO webhook_targets (name, kind, language, options, max_per_minute,"
        " repeat_interval_s, site, level, url, secret, broadcast, enabled, created_by,"
        " created_at, updated_by, updated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (name) DO NOTHING RETURNING id",
        (
            target.name,
            target.kind,
            target.language,
            Jsonb(target.options),
            target.max_per_minute,
            target.repeat_interval_s,
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
        "kind": target.kind,
        "language": target.language,
        "options": target.options,
        "max_per_minute": target.max_per_minute,
        "repeat_interval_s": target.repeat_interval_s,
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
    """Changes the fields of `changes` (url, secret, site, level, broadcast, enabled, language,
    options; the name and the kind never change). The ledger records which fields changed, and
    the new values of those that are not secret. Raises LookupError for an unknown id,
    TargetInvalid."""
    now = require_aware(now or wall_now(), "now")
    unknown = set(changes) - set(_FIELDS)
    if unknown:
        raise ValueError(f"not a changeable field of a webhook target: {sorted(unknown)}")
    if changes.get("level") is not None and changes["level"] < 0:
        raise TargetInvalid("level", "a level is 0 (the responsible party) or more")
    if "language" in changes:
        check_language(changes["language"])
    if "max_per_minute" in changes:
        check_rate(changes["max_per_minute"])
    if "repeat_interval_s" in changes:
        check_repeat(changes["repeat_interval_s"])
    ledger.lock(conn)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT kind, url, secret, site, level, broadcast, enabled, language, options,"
            " max_per_minute, repeat_interval_s FROM webhook_targets WHERE id = %s FOR UPDATE",
            (target_id,),
        )
        before = cur.fetchone()
    if before is None:
        raise LookupError(f"no webhook target {target_id}")
    kind = before["kind"]
    if "options" in changes:
        channels.parse_options(kind, changes["options"])
    if "url" in changes:
        channels.check_url(kind, changes["url"])
    if "secret" in changes:
        channels.check_secret(kind, changes["secret"], MIN_SECRET_LENGTH)
    changed = {k: v for k, v in changes.items() if before[k] != v}
    if not changed:
        return
    after = before | changed
    conn.execute(
        "UPDATE webhook_targets SET url = %s, secret = %s, site = %s, level = %s,"
        " broadcast = %s, enabled = %s, language = %s, options = %s, max_per_minute = %s,"
        " repeat_interval_s = %s, updated_by = %s, updated_at = %s WHERE id = %s",
        (
            after["url"],
            after["secret"],
            after["site"],
            after["level"],
            after["broadcast"],
            after["enabled"],
            after["language"],
            Jsonb(after["options"]),
            after["max_per_minute"],
            after["repeat_interval_s"],
            actor,
            now,
            target_id,
        ),
    )
    facts: dict[str, Any] = {"id": target_id, "changed": sorted(changed), "actor": actor}
    facts.update({k: v for k, v in changed.items() if k in _SHOWN})
    if "url" in changed:
        facts["url"] = shown_url(changed["url"])
    ledger.append(
        conn, [ledger.Entry("webhook_target.changed", f"webhook:{target_id}", facts)], now
    )


def target_rows(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Every target as it may be shown (`url` as `shown_url`, no secret), with its delivery
    counts and its health, by id: `failed_attempts` in a row since its last successful one
    (every notification's attempts), `last_error`, `last_success_at`, and `failing` once
    FAILING_AFTER attempts in a row failed (a receiver that keeps failing is shown)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "WITH attempts AS ("
            "  SELECT n.target_id, a.id, a.at, a.error FROM notification_attempts a"
            "  JOIN notifications n ON n.id = a.notification_id),"
            " last_ok AS ("
            "  SELECT target_id, max(id) AS id, max(at) AS at FROM attempts"
            "  WHERE error IS NULL GROUP BY target_id),"
            " since AS ("
            "  SELECT a.target_id, count(*) AS failed_attempts,"
            "  (array_agg(a.error ORDER BY a.id DESC))[1] AS last_error,"
            "  max(a.at) AS last_failure_at"
            "  FROM attempts a LEFT JOIN last_ok o ON o.target_id = a.target_id"
            "  WHERE a.error IS NOT NULL AND a.id > coalesce(o.id, 0) GROUP BY a.target_id),"
            " counts AS ("
            "  SELECT target_id,"
            "  count(*) FILTER (WHERE state = 'delivered') AS delivered,"
            "  count(*) FILTER (WHERE state = 'pending') AS pending,"
            "  count(*) FILTER (WHERE state = 'failed') AS failed"
            "  FROM notifications GROUP BY target_id)"
            " SELECT t.id, t.name, t.kind, t.language, t.options, t.max_per_minute,"
            " t.repeat_interval_s, t.site,"
            " t.level, t.broadcast,"
            " t.enabled, t.url, t.created_by, t.created_at, t.updated_by, t.updated_at,"
            " coalesce(c.delivered, 0) AS delivered, coalesce(c.pending, 0) AS pending,"
            " coalesce(c.failed, 0) AS failed,"
            " coalesce(f.failed_attempts, 0) AS failed_attempts, f.last_error,"
            " f.last_failure_at, o.at AS last_success_at"
            " FROM webhook_targets t LEFT JOIN counts c ON c.target_id = t.id"
            " LEFT JOIN since f ON f.target_id = t.id LEFT JOIN last_ok o ON o.target_id = t.id"
            " ORDER BY t.id"
        )
        rows = cur.fetchall()
    for row in rows:
        row["url"] = shown_url(row["url"])
        row["failing"] = row["failed_attempts"] >= FAILING_AFTER
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
