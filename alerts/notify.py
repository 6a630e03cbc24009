"""Notifications: one message per alert event and target, in the target's channel (the signed
JSON webhook, a WeCom, DingTalk or Feishu robot, e-mail, SMS: alerts/channels.py), retried with
exponential backoff, every attempt recorded.

Targets live in `webhook_targets` (alerts/webhooks.py: name, kind, URL, secret; per site and
escalation level, NULL = any), managed by unscoped admins only. A `broadcast` target receives
every notification of its site and level; a party's `contacts.webhook` names a target that
receives that party's notifications. Routing policies (alerts/routing.py) add receivers of
their own and group the notices of one site and clause to one target into one message
(group_wait, group_interval). Nothing but the target holds the URL or the secret:
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

from alerts import binding, channels, outbound, routing, silences, subscriptions
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
# created_at, route, group_key, group_wait_s, group_interval_s, repeat_interval_s, send_resolved,
# user_id (a user's subscription: the message goes to that user's contact point), action_id
# (a notice of an overdue improvement action instead of an alert: alert_id is None)
NotificationRow = tuple[Any, ...]
# At most this many notices of one group go in one message; the rest go in the next.
MAX_GROUP = 500


@dataclass
class DeliveryReport:
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    silenced: int = 0
    withheld: int = 0  # for a subscriber who may no longer see the alert: not sent
    deferred: int = 0  # held back by the receiver's rate limit, not attempted yet
    messages: int = 0  # messages sent (attempted): a group of notices is one


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
            "domain": row.get("domain"),
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
    routes: routing.Routing | None = None,
) -> list[NotificationRow]:
    """The notifications of `messages`: `targets` as TARGETS_QUERY reads them, `parties` as
    `party_record` makes them, by (site, party id). A party naming a target that does not
    exist (or is disabled, or serves another site) still gets a notification, without a target:
    it fails when due, saying so.

    Receivers, in this order (a target named again is notified once): the broadcast targets of
    the site and level, the target the party's contacts.webhook names, then for a `raised`
    notice to level 0 the receivers of the routes the alert takes (alerts/routing.py). Once a
    route matched, every notice of the alert is grouped by site and clause, with the timings of
    the route that named the receiver (else the first route taken). Then each user's
    subscription the alert matches (routing.subscribed) adds a notice per receiver for that
    user alone, grouped per user (alerts/subscriptions.py)."""
    require_aware(now, "now")
    rows: list[NotificationRow] = []
    for message in messages:
        party = parties.get((message.site, message.party)) if message.party else None
        chosen = _receivers(targets, message.site, message.level, party)
        taken: list[routing.Route] = []
        if routes is not None and routes.routes and message.event == "raised" and not message.level:
            facts = routing.facts(routes.sites.get(message.site), message.alert)
            taken = routing.select(routes.routes, facts)
        route_of: dict[str, routing.Route] = {}
        for route in taken:
            for receiver in route.receivers:
                chosen.setdefault(receiver, _target_named(targets, receiver, message.site))
                route_of.setdefault(receiver, route)
        payload = Jsonb(
            {"event": message.event, "level": message.level, "party": party, "alert": message.alert}
        )
        group_key = f"{message.site}/{message.alert['clause']['id']}" if taken else None
        for name, target_id in chosen.items():
            chooser = route_of.get(name) or (taken[0] if taken else None)
            rows.append(
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
                    *_route_columns(chooser, group_key),
                    None,
                    None,
                )
            )
        if routes is None or message.event != "raised" or message.level:
            continue
        facts = routing.facts(routes.sites.get(message.site), message.alert)
        for route in routing.subscribed(routes.routes, facts):
            user_key = f"{message.site}/{message.alert['clause']['id']}/user:{route.owner}"
            for receiver in route.receivers:
                rows.append(
                    (
                        message.alert_id,
                        message.site,
                        _target_named(targets, receiver, message.site),
                        receiver,
                        message.event,
                        message.level,
                        message.party,
                        payload,
                        now,
                        now,
                        *_route_columns(route, user_key),
                        route.owner,
                        None,
                    )
                )
    return rows


def _receivers(
    targets: Sequence[tuple[Any, ...]], site: str, level: int, party: dict[str, Any] | None
) -> dict[str, int | None]:
    """Target name -> id, in order: the broadcast targets of the site and level, then the
    target the party's contacts.webhook names (None: no such target; it fails when due)."""
    chosen: dict[str, int | None] = {}
    for target_id, name, target_site, target_level, broadcast in targets:
        if broadcast and target_site in (None, site) and target_level in (None, level):
            chosen.setdefault(name, target_id)
    own = party["contacts"].get(WEBHOOK_CONTACT) if party else None
    if isinstance(own, str) and own:
        chosen.setdefault(own, _target_named(targets, own, site))
    return chosen


def _target_named(targets: Sequence[tuple[Any, ...]], name: str, site: str) -> int | None:
    return next((t[0] for t in targets if t[1] == name and t[2] in (None, site)), None)


def _route_columns(route: routing.Route | None, group_key: str | None) -> tuple[Any, ...]:
    if route is None:
        return (None, None, None, None, None, True)
    return (
        route.name,
        group_key,
        route.group_wait_s,
        route.group_interval_s,
        route.repeat_interval_s,
        route.send_resolved,
    )


def write(conn: psycopg.Connection[Any], rows: Sequence[NotificationRow]) -> None:
    """Inserts rows made by `notification_rows`; one round trip, and it may run in a pipeline.
    A grouped notice is due with its group's message (cw_group_due, migration 0033)."""
    if not rows:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO notifications (alert_id, site, target_id, target_name, event, level,"
            " party, payload, next_attempt_at, created_at, route, group_key, group_wait_s,"
            " group_interval_s, repeat_interval_s, send_resolved, user_id, action_id)"
            " SELECT v.alert_id, v.site, v.target_id, v.target_name, v.event, v.level, v.party,"
            " v.payload, CASE WHEN v.group_key IS NULL THEN v.now ELSE cw_group_due(v.target_id,"
            " v.group_key, v.now, v.group_wait_s, v.group_interval_s) END, v.now, v.route,"
            " v.group_key, v.group_wait_s, v.group_interval_s, v.repeat_interval_s,"
            " v.send_resolved, v.user_id, v.action_id"
            " FROM (VALUES (%s::bigint, %s::text, %s::bigint, %s::text, %s::text, %s::int,"
            " %s::text, %s::jsonb, %s::timestamptz, %s::timestamptz, %s::text, %s::text,"
            " %s::int, %s::int, %s::int, %s::boolean, %s::bigint, %s::bigint))"
            " AS v(alert_id, site, target_id, target_name, event, level, party, payload, now,"
            " created_at, route, group_key, group_wait_s, group_interval_s, repeat_interval_s,"
            " send_resolved, user_id, action_id)",
            rows,
        )


@dataclass(frozen=True, slots=True)
class ActionNotice:
    """A step of an overdue improvement action (compliance/evaluations.py) to tell the party at
    `level` about: 0 its owner, n the party at level n of the site's escalation chain for the
    clause's `domain`."""

    action_id: int
    site: str
    level: int
    owner: str
    domain: str
    action: dict[str, Any]  # the action as sent (compliance.evaluations.action_summary)


ACTION_EVENTS = ("action_overdue", "action_escalated")


def queue_actions(
    conn: psycopg.Connection[Any], notices: Sequence[ActionNotice], now: dt.datetime
) -> list[dict[str, Any] | None]:
    """Queues each notice for the broadcast targets of its site and level and the target the
    told party's contacts.webhook names, like an alert's; returns who was told per notice
    ({party, name}; None: nobody assigned there, the level's broadcast targets only). Level 0
    is the owner when the owner names a party of the site (by id, else by name); level n is
    taken from the escalation chain in force at `now` at the site's root space, as an alert
    there would have it (alerts/binding.py). Does not commit."""
    require_aware(now, "now")
    if not notices:
        return []
    sites = sorted({n.site for n in notices})
    targets = conn.execute(TARGETS_QUERY, (sites,)).fetchall()
    told: list[dict[str, Any] | None] = []
    rows: list[NotificationRow] = []
    for notice in notices:
        party = (
            _owner_party(conn, notice.site, notice.owner)
            if notice.level == 0
            else _chain_party(conn, notice.site, notice.domain, notice.level, now)
        )
        told.append(None if party is None else {"party": party["id"], "name": party["name"]})
        event = ACTION_EVENTS[min(notice.level, 1)]
        payload = Jsonb(
            {"event": event, "level": notice.level, "party": party, "action": notice.action}
        )
        for name, target_id in _receivers(targets, notice.site, notice.level, party).items():
            rows.append(
                (
                    None,
                    notice.site,
                    target_id,
                    name,
                    event,
                    notice.level,
                    party["id"] if party else None,
                    payload,
                    now,
                    now,
                    *_route_columns(None, None),
                    None,
                    notice.action_id,
                )
            )
    write(conn, rows)
    return told


def _owner_party(conn: psycopg.Connection[Any], site: str, owner: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT id, name, kind, contacts FROM parties WHERE site = %s AND retired_at IS NULL"
        " AND (id = %s OR name = %s) ORDER BY id = %s DESC, id LIMIT 1",
        (site, owner, owner, owner),
    ).fetchone()
    return None if row is None else party_record(*row)


def _chain_party(
    conn: psycopg.Connection[Any], site: str, domain: str, level: int, at: dt.datetime
) -> dict[str, Any] | None:
    root = conn.execute(
        "SELECT id FROM spaces WHERE site = %s AND parent IS NULL ORDER BY id LIMIT 1", (site,)
    ).fetchone()
    if root is None:
        return None
    chain = binding.responsible_at(conn, site, root[0], domain, at).chain
    entry = next((e for e in chain if e["level"] == level), None)
    if entry is None:
        return None
    found = conn.execute(
        "SELECT id, name, kind, contacts FROM parties WHERE site = %s AND id = %s",
        (site, entry["party"]),
    ).fetchone()
    return None if found is None else party_record(*found)


# The notices that follow an alert's raised/escalated ones: to every target that was told of
# the alert (its latest notice per target) unless its route said send_resolved: false, with that
# notice's party, level and grouping, the event and the alert's new state, end, cause and
# corrective action.
FOLLOW_UP_QUERY = """
INSERT INTO notifications (alert_id, site, target_id, target_name, event, level, party, payload,
                           next_attempt_at, created_at, route, group_key, group_wait_s,
                           group_interval_s, repeat_interval_s, send_resolved, user_id)
SELECT l.alert_id, l.site, l.target_id, l.target_name, %(event)s, l.level, l.party,
       l.payload || jsonb_build_object(
           'event', %(event)s::text,
           'alert', (l.payload->'alert') || jsonb_build_object(
               'state', a.state, 'ended_at', a.ended_at, 'cause', a.cause,
               'corrective_action', a.corrective_action)),
       CASE WHEN l.group_key IS NULL THEN %(now)s
            ELSE cw_group_due(l.target_id, l.group_key, %(now)s, l.group_wait_s,
                              l.group_interval_s) END,
       %(now)s, l.route, l.group_key, l.group_wait_s, l.group_interval_s,
       l.repeat_interval_s, l.send_resolved, l.user_id
  FROM (SELECT DISTINCT ON (n.alert_id, n.target_name, n.user_id) n.*
          FROM notifications n
         WHERE n.alert_id = ANY(%(ids)s) AND n.event IN ('raised', 'escalated')
         ORDER BY n.alert_id, n.target_name, n.user_id, n.id DESC) l
  JOIN alerts a ON a.id = l.alert_id
 WHERE l.send_resolved
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


# Reminders (the route's repeat_interval_s, else the target's): a firing alert nobody
# acknowledged, whose latest notice to the target (raised, escalated or an earlier reminder) is
# that old, is told again, with that notice's party, level and grouping (a group's reminders
# are timed like its other notices, cw_group_due, so they go as one message).
REMINDER_QUERY = """
WITH latest AS (
    SELECT DISTINCT ON (n.alert_id, n.target_id, n.user_id) n.*
      FROM notifications n JOIN alerts a ON a.id = n.alert_id
     WHERE a.state = 'firing' AND n.target_id IS NOT NULL
       AND n.event IN ('raised', 'escalated', 'reminder')
     ORDER BY n.alert_id, n.target_id, n.user_id, n.id DESC)
INSERT INTO notifications (alert_id, site, target_id, target_name, event, level, party, payload,
                           next_attempt_at, created_at, route, group_key, group_wait_s,
                           group_interval_s, repeat_interval_s, send_resolved, user_id)
SELECT l.alert_id, l.site, l.target_id, l.target_name, 'reminder', l.level, l.party,
       l.payload || jsonb_build_object(
           'event', 'reminder',
           'alert', (l.payload->'alert') || jsonb_build_object(
               'escalation_level', a.escalation_level)),
       CASE WHEN l.group_key IS NULL THEN %(now)s
            ELSE cw_group_due(l.target_id, l.group_key, %(now)s, l.group_wait_s,
                              l.group_interval_s) END,
       %(now)s, l.route, l.group_key, l.group_wait_s, l.group_interval_s,
       l.repeat_interval_s, l.send_resolved, l.user_id
  FROM latest l JOIN webhook_targets t ON t.id = l.target_id JOIN alerts a ON a.id = l.alert_id
 WHERE t.enabled AND coalesce(l.repeat_interval_s, t.repeat_interval_s) IS NOT NULL
   AND l.created_at <= %(now)s
       - make_interval(secs => coalesce(l.repeat_interval_s, t.repeat_interval_s))
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

    Commits after each message (its attempt, the new state of its notices, their timeline rows
    and ledger entries together), so a crash mid-run loses no recorded attempt; rows being sent
    by another worker are skipped (SKIP LOCKED). The due notices of one group (alerts/routing.py)
    to one target go as one message: its attempt is recorded on the first (the message), the
    others name it in `sent_with`. `now` stamps the attempts and schedules the retries; the
    signature's timestamp is the wall clock at the moment of sending.
    """
    require_aware(now, "now")
    report = DeliveryReport()
    allow = outbound.load_allow_list(conn)
    for _ in range(limit):
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                _DUE_QUERY + " AND n.next_attempt_at <= %s"
                " ORDER BY n.next_attempt_at, n.id LIMIT 1 FOR UPDATE OF n SKIP LOCKED",
                (now,),
            )
            row = cur.fetchone()
            members = [row] if row is not None else []
            if row is not None and row["group_key"] is not None and row["target_id"] is not None:
                cur.execute(
                    _DUE_QUERY + " AND n.next_attempt_at <= %s AND n.target_id = %s"
                    " AND n.group_key = %s AND n.id <> %s"
                    " ORDER BY n.id LIMIT %s FOR UPDATE OF n SKIP LOCKED",
                    (now, row["target_id"], row["group_key"], row["id"], MAX_GROUP - 1),
                )
                members.extend(cur.fetchall())
        if row is None:
            conn.commit()
            break
        # A silence holds back the notices it covers (kept, not sent: alerts/silences.py); a
        # subscriber who may no longer see the alert gets nothing (alerts/subscriptions.py).
        sending = [
            m
            for m in members
            if m["alert_id"] is None or not silences.hold_if_silenced(conn, m, now)
        ]
        report.silenced += len(members) - len(sending)
        kept = [
            m
            for m in sending
            if not subscriptions.withhold_if_unseen(conn, m, now)
            and not _withhold_if_closed(conn, m)
        ]
        report.withheld += len(sending) - len(kept)
        sending = kept
        if sending:
            if _defer(conn, sending, now):
                report.deferred += len(sending)
            else:
                outcome = _send_one(conn, sending, now, allow, resolver, public_base_url)
                setattr(report, outcome, getattr(report, outcome) + len(sending))
                report.messages += 1
        conn.commit()
    return report


_DUE_QUERY = (
    "SELECT n.id, n.alert_id, n.site, n.target_id, n.target_name, n.event, n.level,"
    " n.party, n.payload, n.attempts, n.route, n.group_key, t.url, t.secret, t.enabled,"
    " t.site AS target_site, t.kind, t.language, t.options, t.max_per_minute,"
    " s.timezone, s.name AS site_name, n.user_id, c.email AS user_email,"
    " c.mobile AS user_mobile, n.action_id, ia.state AS action_state"
    " FROM notifications n LEFT JOIN webhook_targets t ON t.id = n.target_id"
    " LEFT JOIN sites s ON s.id = n.site LEFT JOIN user_contacts c ON c.user_id = n.user_id"
    " LEFT JOIN improvement_actions ia ON ia.id = n.action_id"
    " WHERE n.state = 'pending'"
)


def _withhold_if_closed(conn: psycopg.Connection[Any], notification: dict[str, Any]) -> bool:
    """A due notice of an improvement action closed since it was queued ends `withheld`:
    closing the action stops its escalation, messages already queued included."""
    if notification["action_id"] is None or notification["action_state"] == "open":
        return False
    conn.execute(
        "UPDATE notifications SET state = 'withheld', last_error = %s WHERE id = %s",
        ("the action was closed before the message went", notification["id"]),
    )
    return True


def _send_one(
    conn: psycopg.Connection[Any],
    members: list[dict[str, Any]],
    now: dt.datetime,
    allow: outbound.AllowList,
    resolver: outbound.Resolver,
    public_base_url: str,
) -> str:
    """Sends one message for `members` (one notice, or the due notices of one group to one
    target, the first being the message) and records the outcome on each."""
    row = members[0]
    status: int | None = None
    began = time.perf_counter()
    error, final = _unusable(row)
    if error is None:
        grouped = {**row, "group": [m["payload"] for m in members]} if len(members) > 1 else row
        sent = channels.send(grouped, allow, resolver, public_base_url)
        status, error, final = sent.status, sent.error, sent.final
    duration_ms = (time.perf_counter() - began) * 1000.0
    conn.execute(
        "INSERT INTO notification_attempts (notification_id, at, status, error, duration_ms)"
        " VALUES (%s, %s, %s, %s, %s)",
        (row["id"], now, status, error, duration_ms),
    )
    attempts = row["attempts"] + 1
    if error is None:
        outcome = "delivered"
    elif final or attempts >= MAX_ATTEMPTS:
        outcome = "failed"
    else:
        outcome = "retrying"
    retry_at = now + dt.timedelta(seconds=BACKOFF_BASE_S * 2 ** (attempts - 1))
    # Every notice of the message at once: its own attempt count goes up by one; those sent
    # with the first name it.
    conn.execute(
        "UPDATE notifications SET attempts = attempts + 1, last_error = %(error)s,"
        " sent_with = CASE WHEN id = %(lead)s THEN NULL ELSE %(lead)s END,"
        " state = CASE WHEN %(retry)s THEN state ELSE %(outcome)s END,"
        " next_attempt_at = CASE WHEN %(retry)s THEN %(retry_at)s ELSE next_attempt_at END,"
        " delivered_at = CASE WHEN %(outcome)s = 'delivered' THEN %(now)s END"
        " WHERE id = ANY(%(ids)s)",
        {
            "error": error,
            "lead": row["id"],
            "retry": outcome == "retrying",
            "outcome": outcome,
            "retry_at": retry_at,
            "now": now,
            "ids": [m["id"] for m in members],
        },
    )
    if outcome != "retrying":
        _record_outcomes(conn, members, outcome, error, now)
    return outcome


def _defer(conn: psycopg.Connection[Any], members: list[dict[str, Any]], now: dt.datetime) -> bool:
    """Holds the message back (until its target's oldest attempt of the last minute leaves the
    minute) when the target had its `max_per_minute` (or its kind's default) attempts in the
    minute up to `now`; no attempt is recorded. A group's message is one attempt."""
    row = members[0]
    limit = row["max_per_minute"] or channels.DEFAULT_PER_MINUTE.get(row["kind"] or "")
    if not limit or row["url"] is None:
        return False
    count, oldest = conn.execute(
        "SELECT count(*), min(a.at) FROM notification_attempts a"
        " JOIN notifications n ON n.id = a.notification_id"
        " WHERE n.target_id = %s AND a.at > %s AND a.at <= %s",
        (row["target_id"], now - RATE_WINDOW, now),
    ).fetchone() or (0, None)
    if count < limit or oldest is None:
        return False
    conn.execute(
        "UPDATE notifications SET next_attempt_at = %s WHERE id = ANY(%s)",
        (max(oldest + RATE_WINDOW, now + dt.timedelta(seconds=1)), [m["id"] for m in members]),
    )
    return True


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


def _record_outcomes(
    conn: psycopg.Connection[Any],
    members: Sequence[dict[str, Any]],
    outcome: str,
    error: str | None,
    now: dt.datetime,
) -> None:
    """Each notice's outcome: a `notified` timeline row on its alert and a ledger entry (one
    statement and one append for a whole group). The first member is the message; the others
    name it (`sent_with`)."""
    timeline: list[tuple[Any, ...]] = []
    entries: list[ledger.Entry] = []
    for member in members:
        attempts = member["attempts"] + 1
        facts: dict[str, Any] = {
            "notification": member["id"],
            "event": member["event"],
            "level": member["level"],
            "party": member["party"],
            "target": member["target_id"],
            "target_name": member["target_name"],
            "outcome": outcome,
            "attempts": attempts,
            "error": error,
        }
        via = f"{member['kind'] or 'webhook'} {member['target_name']}"
        if member["group_key"] is not None:  # chosen by a route: grouped (alerts/routing.py)
            sent_with = None if member is members[0] else members[0]["id"]
            facts.update(route=member["route"], group=member["group_key"], sent_with=sent_with)
            via += f", route {member['route']}"
            if len(members) > 1:
                via += f", one message for {len(members)} alerts"
        tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        notice = f"{member['event']} notice to level {member['level']}"
        note = (
            f"{notice} delivered ({via})"
            if outcome == "delivered"
            else f"{notice} failed after {tries} ({via}): {error}"
        )
        subject = {"alert": member["alert_id"]}
        if member["alert_id"] is None:  # an improvement action's notice: no alert timeline
            subject = {"action": member["action_id"]}
        else:
            timeline.append(
                (member["alert_id"], member["site"], now, NOTIFIER_ACTOR, note, Jsonb(facts))
            )
        entries.append(
            ledger.Entry(
                kind=f"notification.{outcome}",
                entity=f"notification:{member['id']}",
                payload={
                    **subject,
                    "site": member["site"],
                    "actor": NOTIFIER_ACTOR,
                    "at": now,
                    "note": note,
                    **facts,
                },
            )
        )
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO alert_timeline (alert_id, site, at, action, actor, note, data)"
            " VALUES (%s, %s, %s, 'notified', %s, %s, %s)",
            timeline,
        )
    ledger.append(conn, entries, now)


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
