"""Notifications by webhook: a JSON POST per alert event and target, retried with exponential
backoff, every attempt recorded. SMS, e-mail or chat gateways plug in as webhook receivers.

Targets live in `webhook_targets` (per site and escalation level, NULL = any), and a party may
name its own (`contacts.webhook` in the site file). `queue` writes
the messages in the caller's transaction, so a notification exists exactly when the alert event
that caused it was committed; `deliver_due` (a scheduler job) sends what is due. A message that
never gets through ends `failed` after MAX_ATTEMPTS and stays in the table, with its attempts,
a timeline row and a ledger entry: visible, not lost.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from store import ledger
from store.times import require_aware

NOTIFIER_ACTOR = "notifier"
# First retry after BACKOFF_BASE_S, doubling each time: 30 s, 1, 2, 4, 8, 16 min. Gateways that
# are down for a deploy come back well within that; longer outages end as `failed`, visible.
BACKOFF_BASE_S = 30.0
MAX_ATTEMPTS = 7
# A webhook receiver should answer at once and do its work later; past this it counts as down.
REQUEST_TIMEOUT_S = 5.0
# A party whose contacts carry this key (an http(s) URL) gets its notifications there as well.
PARTY_WEBHOOK_CONTACT = "webhook"
# How many due messages one `deliver_due` call sends at most, so one job run stays short.
DELIVER_BATCH = 100
# Webhook targets (id, site, level, url) that may apply to any of the sites given as an array.
TARGETS_QUERY = (
    "SELECT id, site, level, url FROM webhook_targets"
    " WHERE enabled AND (site IS NULL OR site = ANY(%s))"
)


@dataclass(frozen=True, slots=True)
class AlertNotice:
    """One alert event to tell the party at `level` about (level 0: the responsible party)."""

    alert_id: int
    site: str
    event: str  # raised | escalated
    level: int
    party: str | None
    alert: dict[str, Any]  # the alert's summary as sent (see `alert_summary`)


# alert_id, site, target_id, url, event, level, party, payload, next_attempt_at, created_at
NotificationRow = tuple[Any, ...]


@dataclass
class DeliveryReport:
    delivered: int = 0
    retrying: int = 0
    failed: int = 0


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
    """Queues each message for every enabled target of its site and level, and for the party's
    own webhook (contacts.webhook) if it has one; returns how many notifications were written.
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
    `party_record` makes them, by (site, party id)."""
    require_aware(now, "now")
    rows: list[NotificationRow] = []
    for message in messages:
        party = parties.get((message.site, message.party)) if message.party else None
        urls: dict[str, int | None] = {}
        for target_id, target_site, target_level, url in targets:
            if target_site in (None, message.site) and target_level in (None, message.level):
                urls.setdefault(url, target_id)
        own = party["contacts"].get(PARTY_WEBHOOK_CONTACT) if party else None
        if isinstance(own, str) and own.startswith(("http://", "https://")):
            urls.setdefault(own, None)
        payload = Jsonb(
            {"event": message.event, "level": message.level, "party": party, "alert": message.alert}
        )
        rows.extend(
            (
                message.alert_id,
                message.site,
                target_id,
                url,
                message.event,
                message.level,
                message.party,
                payload,
                now,
                now,
            )
            for url, target_id in urls.items()
        )
    return rows


def write(conn: psycopg.Connection[Any], rows: Sequence[NotificationRow]) -> None:
    """Inserts rows made by `notification_rows`; one round trip, and it may run in a pipeline."""
    if not rows:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO notifications (alert_id, site, target_id, url, event, level, party,"
            " payload, next_attempt_at, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            rows,
        )


def party_record(party_id: str, name: str, kind: str, contacts: dict[str, Any]) -> dict[str, Any]:
    """A party as a notification's payload carries it."""
    return {"id": party_id, "name": name, "kind": kind, "contacts": contacts}


def deliver_due(
    conn: psycopg.Connection[Any],
    now: dt.datetime,
    client: httpx.Client | None = None,
    limit: int = DELIVER_BATCH,
) -> DeliveryReport:
    """Sends every pending notification due at `now` (up to `limit`), one POST each.

    Commits after each notification (its attempt, new state, timeline row and ledger entry
    together), so a crash mid-run loses no recorded attempt; rows being sent by another worker
    are skipped (SKIP LOCKED). `now` stamps the attempts and schedules the retries.
    """
    require_aware(now, "now")
    report = DeliveryReport()
    own_client = client is None
    http = client or httpx.Client(timeout=REQUEST_TIMEOUT_S)
    try:
        for _ in range(limit):
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(
                    "SELECT id, alert_id, site, url, event, level, party, payload, attempts"
                    " FROM notifications WHERE state = 'pending' AND next_attempt_at <= %s"
                    " ORDER BY next_attempt_at, id LIMIT 1 FOR UPDATE SKIP LOCKED",
                    (now,),
                )
                row = cur.fetchone()
            if row is None:
                conn.commit()
                break
            outcome = _send_one(conn, http, row, now)
            setattr(report, outcome, getattr(report, outcome) + 1)
            conn.commit()
    finally:
        if own_client:
            http.close()
    return report


def _send_one(
    conn: psycopg.Connection[Any], http: httpx.Client, row: dict[str, Any], now: dt.datetime
) -> str:
    status: int | None = None
    error: str | None = None
    began = time.perf_counter()
    try:
        response = http.post(
            row["url"],
            json=row["payload"],
            headers={"X-Clausewatch-Notification": str(row["id"])},
        )
        status = response.status_code
        if not response.is_success:
            error = f"HTTP {status}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
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
    if attempts >= MAX_ATTEMPTS:
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
        "url": row["url"],
        "outcome": outcome,
        "attempts": attempts,
        "error": error,
    }
    note = (
        f"{row['event']} notice to level {row['level']} delivered"
        if outcome == "delivered"
        else f"{row['event']} notice to level {row['level']} failed after {attempts} attempts:"
        f" {error}"
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
