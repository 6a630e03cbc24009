"""Notifications: one message per alert event and target, in the target's channel (the signed
JSON webhook, a WeCom, DingTalk or Feishu robot, e-mail, SMS: alerts/channels.py), retried with
exponential backoff, every attempt recorded.

Targets live in `webhook_targets` (alerts/webhooks.py: name, kind, URL, secret; per site and
escalation level, NULL = any), managed by unscoped admins only. A `broadcast` target receives
every notification of its site and level; a party's `contacts.webhook` names a target that
receives that party's notifications. Nothing but the target holds the URL or the secret:
notifications, timeline rows and ledger entries name the target's id and name.

`queue` writes the messages in the caller's transaction, so a notification exists exactly when
the alert event that caused it was committed; `deliver_due` (a scheduler job) sends what is due,
reading the target's URL and secret at send time, checking the address after DNS resolution
(alerts/outbound.py: internal addresses refused unless allow-listed) and connecting to the
address it checked. A message that never gets through ends `failed` after MAX_ATTEMPTS (at
once when no retry can help: no such target, refused address) and stays in the table, with its
attempts, a timeline row and a ledger entry: visible, not lost.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from alerts import channels, outbound, silences
from rules.site import WEBHOOK_CONTACT
from store import ledger
from store.times import require_aware

NOTIFIER_ACTOR = "notifier"
# First retry after BACKOFF_BASE_S, doubling each time: 30 s, 1, 2, 4, 8, 16 min. Gateways that
# are down for a deploy come back well within that; longer outages end as `failed`, visible.
BACKOFF_BASE_S = 30.0
MAX_ATTEMPTS = 7
# How many due messages one `deliver_due` call sends at most, so one job run stays short.
DELIVER_BATCH = 100
# Where the links in messages point (`{public_base_url}/alerts/{id}`) unless the service's
# settings say otherwise (Settings.public_base_url).
DEFAULT_PUBLIC_BASE_URL = "http://127.0.0.1:8000"
# A receiver's rate limit counts the attempts in this window (alerts/channels.py).
RATE_WINDOW = dt.timedelta(minutes=1)
# Webhook targets (id, name, site, level, broadcast) that may apply to any of the sites given
# as an array.
TARGETS_QUERY = (
    "SELECT id, name, site, level, broadcast FROM webhook_targets"
    " WHERE enabled AND (site IS NULL OR site = ANY(%s))"
)


@dataclass(frozen=True, slots=True)
class AlertNotice:
    """One alert event to tell the party at `level` about (level 0: the responsible party)."""

    alert_id: int
    site: str
    event: str  # raised | escalated (resolved | closed: `queue_follow_ups`)
    level: int
    party: str | None
    alert: dict[str, Any]  # the alert's summary as sent (see `alert_summary`)


# alert_id, site, target_id, target_name, event, level, party, payload, next_attempt_at,
# created_at
NotificationRow = tuple[Any, ...]


@dataclass
class DeliveryReport:
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    silenced: int = 0
    deferred: int = 0  # held back by the receiver's rate limit, not attempted yet


def alert_summary(row: dict[str, Any]) -> dict[str, Any]:
    """The alert as a receiver sees it (SPEC §5 field names), from an alerts row."""
    return {
        "id": row["id"],
        "site": row["site"],
        "clause": {
            "id": row["clause_id"],
            "version": row["clause_version"],
            "standard": row["standard"],
            "number": row["number"],
            "title": row["title"],
        },
        "subject": {"space": row["space"], "device": row["device"]},
        "kind": row["kind"],
        "severity": row["severity"],
        "state": row["state"],
        "started_at": _iso(row["started_at"]),
        "ended_at": _iso(row["ended_at"]),
        "worst_value": row["worst_value"],
        "unit": row["unit"],
        "reason": row["reason"],
        "responsible": {"party": row["responsible_party"], "name": row["responsible_name"]},
        "escalation_level": row["escalation_level"],
    }


def queue(conn: psycopg.Connection[Any], messages: Sequence[AlertNotice], now: dt.datetime) -> int:
    """Queues each message for every enabled broadcast target of its site and level, and for
    the target the party's contacts.webhook names; returns how many notifications were written.
    Does not commit."""
    if not messages:
        return 0
    targets = conn.execute(TARGETS_QUERY, (sorted({m.site for m in messages}),)).fetchall()
    parties = _parties(conn, {(m.site, m.party) for m in messages if m.party})
    rows = notification_rows(messages, targets, parties, now)
    write(conn, rows)
    return len(rows)


def notification_rows(
    messages: Sequence[AlertNotice],
    targets: Sequence[tuple[Any, ...]],
    parties: Mapping[tuple[str, str | None], dict[str, Any]],
    now: dt.datetime,
) -> list[NotificationRow]:
    """The notifications of `messages`: `targets` as TARGETS_QUERY reads them, `parties` as
    `party_record` makes them, by (site, party id). A party naming a target that does not
    exist (or is disabled, or serves another site) still gets a notification, without a target:
    it fails when due, saying so."""
    require_aware(now, "now")
    rows: list[NotificationRow] = []
    for message in messages:
        party = parties.get((message.site, message.party)) if message.party else None
        chosen: dict[str, int | None] = {}  # target name -> id, in order
        for target_id, name, site, level, broadcast in targets:
            if broadcast and site in (None, message.site) and level in (None, message.level):
                chosen.setdefault(name, target_id)
        own = party["contacts"].get(WEBHOOK_CONTACT) if party else None
        if isinstance(own, str) and own:
            named = (t[0] for t in targets if t[1] == own and t[2] in (None, message.site))
            chosen.setdefault(own, next(named, None))
        payload = Jsonb(
            {"event": message.event, "level": message.level, "party": party, "alert": message.alert}
        )
        rows.extend(
            (
                message.alert_id,
                message.site,
                target_id,
                name,
                message.event,
                message.level,
                message.party,
                payload,
                now,
                now,
            )
            for name, target_id in chosen.items()
        )
    return rows


def write(conn: psycopg.Connection[Any], rows: Sequence[NotificationRow]) -> None:
    """Inserts rows made by `notification_rows`; one round trip, and it may run in a pipeline."""
    if not rows:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO notifications (alert_id, site, target_id, target_name, event, level,"
            " party, payload, next_attempt_at, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            rows,
        )


# The notices that follow an alert's raised/escalated ones: to every target that was told of
# the alert (its latest notice per target), with that notice's party and level, the event and
# the alert's new state, end, cause and corrective action.
FOLLOW_UP_QUERY = """
INSERT INTO notifications (alert_id, site, target_id, target_name, event, level, party, payload,
                           next_attempt_at, created_at)
SELECT DISTINCT ON (n.alert_id, n.target_name)
       n.alert_id, n.site, n.target_id, n.target_name, %(event)s, n.level, n.party,
       n.payload || jsonb_build_object(
           'event', %(event)s::text,
           'alert', (n.payload->'alert') || jsonb_build_object(
               'state', a.state, 'ended_at', a.ended_at, 'cause', a.cause,
               'corrective_action', a.corrective_action)),
       %(now)s, %(now)s
  FROM notifications n JOIN alerts a ON a.id = n.alert_id
 WHERE n.alert_id = ANY(%(ids)s) AND n.event IN ('raised', 'escalated')
 ORDER BY n.alert_id, n.target_name, n.id DESC
"""
FOLLOW_UP_EVENTS = ("resolved", "closed")


def queue_follow_ups(
    conn: psycopg.Connection[Any], alert_ids: Sequence[int], event: str, now: dt.datetime
) -> None:
    """Queues a `resolved` or `closed` notice of each alert to every target told of it before
    (one statement: it may run in a pipeline, after the alerts' own update). Does not commit."""
    if event not in FOLLOW_UP_EVENTS:
        raise ValueError(f"a follow-up notice is one of {FOLLOW_UP_EVENTS}")
    if alert_ids:
        conn.execute(
            FOLLOW_UP_QUERY,
            {"event": event, "ids": list(alert_ids), "now": require_aware(now, "now")},
        )


# Reminders (a target's repeat_interval_s): a firing alert nobody acknowledged, whose latest
# notice to the target (raised, escalated or an earlier reminder) is that old, is told again,
# with that notice's party and level.
REMINDER_QUERY = """
WITH latest AS (
    SELECT DISTINCT ON (n.alert_id, n.target_id) n.*
      FROM notifications n JOIN alerts a ON a.id = n.alert_id
     WHERE a.state = 'firing' AND n.target_id IS NOT NULL
       AND n.event IN ('raised', 'escalated', 'reminder')
     ORDER BY n.alert_id, n.target_id, n.id DESC)
INSERT INTO notifications (alert_id, site, target_id, target_name, event, level, party, payload,
                           next_attempt_at, created_at)
SELECT l.alert_id, l.site, l.target_id, l.target_name, 'reminder', l.level, l.party,
       l.payload || jsonb_build_object(
           'event', 'reminder',
           'alert', (l.payload->'alert') || jsonb_build_object(
               'escalation_level', a.escalation_level)),
       %(now)s, %(now)s
  FROM latest l JOIN webhook_targets t ON t.id = l.target_id JOIN alerts a ON a.id = l.alert_id
 WHERE t.enabled AND t.repeat_interval_s IS NOT NULL
   AND l.created_at <= %(now)s - make_interval(secs => t.repeat_interval_s)
"""


def queue_reminders(conn: psycopg.Connection[Any], now: dt.datetime) -> int:
    """Queues the reminders due at `now` (REMINDER_QUERY); returns how many. Does not commit."""
    cursor = conn.execute(REMINDER_QUERY, {"now": require_aware(now, "now")})
    return cursor.rowcount


def party_record(party_id: str, name: str, kind: str, contacts: dict[str, Any]) -> dict[str, Any]:
    """A party as a notification's payload carries it."""
    return {"id": party_id, "name": name, "kind": kind, "contacts": contacts}


def deliver_due(
    conn: psycopg.Connection[Any],
    now: dt.datetime,
    limit: int = DELIVER_BATCH,
    *,
    resolver: outbound.Resolver = outbound.system_resolver,
    public_base_url: str = DEFAULT_PUBLIC_BASE_URL,
) -> DeliveryReport:
    """Sends every pending notification due at `now` (up to `limit`), one message each in its
    target's channel (alerts/channels.py), to the address its host resolves to (by `resolver`)
    once checked against the address policy and the allow-list; messages link to the alert
    under `public_base_url`.

    Commits after each notification (its attempt, new state, timeline row and ledger entry
    together), so a crash mid-run loses no recorded attempt; rows being sent by another worker
    are skipped (SKIP LOCKED). `now` stamps the attempts and schedules the retries; the
    signature's timestamp is the wall clock at the moment of sending.
    """
    require_aware(now, "now")
    report = DeliveryReport()
    allow = outbound.load_allow_list(conn)
    for _ in range(limit):
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                "SELECT n.id, n.alert_id, n.site, n.target_id, n.target_name, n.event, n.level,"
                " n.party, n.payload, n.attempts, t.url, t.secret, t.enabled,"
                " t.site AS target_site, t.kind, t.language, t.options, t.max_per_minute,"
                " s.timezone, s.name AS site_name"
                " FROM notifications n LEFT JOIN webhook_targets t ON t.id = n.target_id"
                " LEFT JOIN sites s ON s.id = n.site"
                " WHERE n.state = 'pending' AND n.next_attempt_at <= %s"
                " ORDER BY n.next_attempt_at, n.id LIMIT 1 FOR UPDATE OF n SKIP LOCKED",
                (now,),
            )
            row = cur.fetchone()
        if row is None:
            conn.commit()
            break
        if silences.hold_if_silenced(conn, row, now):
            outcome = "silenced"  # kept, not sent (alerts/silences.py)
        else:
            outcome = _defer(conn, row, now) or _send_one(
                conn, row, now, allow, resolver, public_base_url
            )
        setattr(report, outcome, getattr(report, outcome) + 1)
        conn.commit()
    return report


def _send_one(
    conn: psycopg.Connection[Any],
    row: dict[str, Any],
    now: dt.datetime,
    allow: outbound.AllowList,
    resolver: outbound.Resolver,
    public_base_url: str,
) -> str:
    status: int | None = None
    began = time.perf_counter()
    error, final = _unusable(row)
    if error is None:
        sent = channels.send(row, allow, resolver, public_base_url)
        status, error, final = sent.status, sent.error, sent.final
    duration_ms = (time.perf_counter() - began) * 1000.0
    attempts = row["attempts"] + 1
    conn.execute(
        "INSERT INTO notification_attempts (notification_id, at, status, error, duration_ms)"
        " VALUES (%s, %s, %s, %s, %s)",
        (row["id"], now, status, error, duration_ms),
    )
    if error is None:
        conn.execute(
            "UPDATE notifications SET state = 'delivered', attempts = %s, delivered_at = %s,"
            " last_error = NULL WHERE id = %s",
            (attempts, now, row["id"]),
        )
        _record_outcome(conn, row, "delivered", attempts, None, now)
        return "delivered"
    if final or attempts >= MAX_ATTEMPTS:
        conn.execute(
            "UPDATE notifications SET state = 'failed', attempts = %s, last_error = %s"
            " WHERE id = %s",
            (attempts, error, row["id"]),
        )
        _record_outcome(conn, row, "failed", attempts, error, now)
        return "failed"
    retry_at = now + dt.timedelta(seconds=BACKOFF_BASE_S * 2 ** (attempts - 1))
    conn.execute(
        "UPDATE notifications SET attempts = %s, last_error = %s, next_attempt_at = %s"
        " WHERE id = %s",
        (attempts, error, retry_at, row["id"]),
    )
    return "retrying"


def _defer(conn: psycopg.Connection[Any], row: dict[str, Any], now: dt.datetime) -> str | None:
    """Holds the notification back (until its target's oldest attempt of the last minute leaves
    the minute) when the target had its `max_per_minute` (or its kind's default) attempts in
    the minute up to `now`; "deferred" then, else None. No attempt is recorded."""
    limit = row["max_per_minute"] or channels.DEFAULT_PER_MINUTE.get(row["kind"] or "")
    if not limit or row["url"] is None:
        return None
    count, oldest = conn.execute(
        "SELECT count(*), min(a.at) FROM notification_attempts a"
        " JOIN notifications n ON n.id = a.notification_id"
        " WHERE n.target_id = %s AND a.at > %s AND a.at <= %s",
        (row["target_id"], now - RATE_WINDOW, now),
    ).fetchone() or (0, None)
    if count < limit or oldest is None:
        return None
    conn.execute(
        "UPDATE notifications SET next_attempt_at = %s WHERE id = %s",
        (max(oldest + RATE_WINDOW, now + dt.timedelta(seconds=1)), row["id"]),
    )
    return "deferred"


def _unusable(row: dict[str, Any]) -> tuple[str | None, bool]:
    """Why this notification's target cannot be used at all (then no retry helps), or None."""
    name = row["target_name"]
    if row["url"] is None:
        return f"no enabled webhook target named {name!r} for site {row['site']}", True
    if not row["enabled"]:
        return f"webhook target {name!r} is disabled", True
    if row["target_site"] not in (None, row["site"]):
        return f"webhook target {name!r} serves another site", True
    return None, False


def _record_outcome(
    conn: psycopg.Connection[Any],
    row: dict[str, Any],
    outcome: str,
    attempts: int,
    error: str | None,
    now: dt.datetime,
) -> None:
    facts = {
        "notification": row["id"],
        "event": row["event"],
        "level": row["level"],
        "party": row["party"],
        "target": row["target_id"],
        "target_name": row["target_name"],
        "outcome": outcome,
        "attempts": attempts,
        "error": error,
    }
    via = f"{row['kind'] or 'webhook'} {row['target_name']}"
    tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
    note = (
        f"{row['event']} notice to level {row['level']} delivered ({via})"
        if outcome == "delivered"
        else f"{row['event']} notice to level {row['level']} failed after {tries} ({via}): {error}"
    )
    conn.execute(
        "INSERT INTO alert_timeline (alert_id, site, at, action, actor, note, data)"
        " VALUES (%s, %s, %s, 'notified', %s, %s, %s)",
        (row["alert_id"], row["site"], now, NOTIFIER_ACTOR, note, Jsonb(facts)),
    )
    ledger.append(
        conn,
        [
            ledger.Entry(
                kind=f"notification.{outcome}",
                entity=f"notification:{row['id']}",
                payload={
                    "alert": row["alert_id"],
                    "site": row["site"],
                    "actor": NOTIFIER_ACTOR,
                    "at": now,
                    "note": note,
                    **facts,
                },
            )
        ],
        now,
    )


def _parties(
    conn: psycopg.Connection[Any], keys: set[tuple[str, str | None]]
) -> dict[tuple[str, str | None], dict[str, Any]]:
    if not keys:
        return {}
    rows = conn.execute(
        "SELECT site, id, name, kind, contacts FROM parties"
        " WHERE (site, id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
        ([k[0] for k in keys], [k[1] for k in keys]),
    ).fetchall()
    return {(r[0], r[1]): party_record(*r[1:]) for r in rows}


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()
