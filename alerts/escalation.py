"""Escalation: an alert left unacknowledged past its clause's policy goes up a level, and the
party at that level (from the chain snapshotted when the alert was raised) is notified.

`escalate_due` is what the service's scheduler runs (clausewatch/service.py): with the wall
clock, or, when the sites live on simulated time (the demo's `clock: data`), once per site with
that site's data time, so escalation follows the same clock as the alerts it escalates; tests
pass their own `now`. The escalation clock starts when the alert was
confirmed (raised).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from alerts import notify
from alerts.policy import policies
from store import ledger
from store.times import require_aware

ESCALATION_ACTOR = "escalation"


def escalate_due(
    conn: psycopg.Connection[Any], now: dt.datetime, sites: Sequence[str] | None = None
) -> list[tuple[int, int]]:
    """Raises the level of every firing, unacknowledged alert (of `sites`, when given) whose
    policy step is due at `now` and returns (alert id, new level) per step taken. Each step
    crossed gets its own timeline row, ledger entry and notification (so a service that was
    down catches up level by level). Takes the ledger lock first (see ledger.lock). Does not
    commit."""
    require_aware(now, "now")
    ledger.lock(conn)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT * FROM alerts WHERE state = 'firing' AND acknowledged_at IS NULL"
            # An inhibited alert escalates through its outage alert (alerts/inhibition.py).
            " AND inhibited_by IS NULL"
            " AND confirmed_at <= %s AND (%s::text[] IS NULL OR site = ANY(%s))"
            " ORDER BY confirmed_at, id FOR UPDATE SKIP LOCKED",
            (now, None if sites is None else list(sites), None if sites is None else list(sites)),
        )
        candidates = cur.fetchall()
    if not candidates:
        return []
    clause_policies = policies(
        conn, {(a["clause_id"], a["clause_version"], a["content_hash"]) for a in candidates}
    )
    steps: list[tuple[dict[str, Any], int, dt.timedelta]] = []
    for alert in candidates:
        policy = clause_policies[(alert["clause_id"], alert["clause_version"])]
        level = alert["escalation_level"]
        for step in policy.escalation:
            after = dt.timedelta(seconds=step.after)
            if step.to_level > level and alert["confirmed_at"] + after <= now:
                steps.append((alert, step.to_level, after))
                level = step.to_level
    if not steps:
        return []
    final_level = {alert["id"]: level for alert, level, _ in steps}
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE alerts SET escalation_level = %s, updated_at = %s WHERE id = %s",
            [(level, now, alert_id) for alert_id, level in final_level.items()],
        )
    timeline = []
    entries = []
    messages = []
    for alert, level, after in steps:
        party = _party_at(alert["escalation_chain"], level)
        note = (
            f"unacknowledged for {after.total_seconds() / 60:g} min: escalated to level {level}"
            + (f" ({party['name']})" if party else " (no party assigned at this level)")
        )
        facts = {"level": level, "after_s": after.total_seconds(), "party": party}
        timeline.append(
            (alert["id"], alert["site"], now, "escalated", ESCALATION_ACTOR, note, Jsonb(facts))
        )
        entries.append(
            ledger.Entry(
                kind="alert.escalated",
                entity=f"alert:{alert['id']}",
                payload={
                    "alert": alert["id"],
                    "site": alert["site"],
                    "actor": ESCALATION_ACTOR,
                    "at": now,
                    "note": note,
                    **facts,
                },
            )
        )
        summary = notify.alert_summary({**alert, "escalation_level": level})
        messages.append(
            notify.AlertNotice(
                alert_id=alert["id"],
                site=alert["site"],
                event="escalated",
                level=level,
                party=party["party"] if party else None,
                alert=summary,
            )
        )
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO alert_timeline (alert_id, site, at, action, actor, note, data)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            timeline,
        )
    ledger.append(conn, entries, now)
    notify.queue(conn, messages, now)
    return [(alert["id"], level) for alert, level, _ in steps]


def _party_at(chain: list[dict[str, Any]], level: int) -> dict[str, Any] | None:
    for entry in chain:
        if entry.get("level") == level:
            return entry
    return None
