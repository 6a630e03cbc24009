"""What people do to alerts: acknowledge, close, comment and reassign.

    firing ──ack──► acknowledged ──(engine: condition cleared)──► resolved ──close──► closed
       └──────────────(engine: condition cleared)──────────────► resolved

A resolved alert may still be acknowledged (resolution can come first). Closing needs the cause
and the corrective action, and only a resolved alert can be closed; for a clause with
`reverify_for`, only once the subject has been compliant that long since the resolution.
A comment (any state) and a reassignment (to another party of the alert's site, not once the
alert is closed) change no state; each is a timeline row and a ledger entry like the rest.

Errors form a tiny hierarchy the API maps to status codes: AlertNotFound (404),
TransitionRefused (409, the alert's state forbids it now), IncompleteInput (422, a required
field is missing). Functions lock the alert row, write the change, a timeline row and a ledger
entry, and return the updated row; they do not commit.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from alerts import notify
from alerts.policy import policies
from store import ledger
from store.times import require_aware, wall_now


class AlertError(Exception):
    """Base of the lifecycle errors; `http_status` is what the API answers."""

    http_status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AlertNotFound(AlertError):
    http_status = 404


class TransitionRefused(AlertError):
    """The alert exists but its state (or the re-verification rule) forbids this now."""

    http_status = 409


class UnknownParty(AlertError):
    """A reassignment names no current party of the alert's site (a field error: 422)."""

    http_status = 422


class IncompleteInput(AlertError):
    """A required field is missing or blank; `fields` names them."""

    http_status = 422

    def __init__(self, message: str, fields: tuple[str, ...]) -> None:
        super().__init__(message)
        self.fields = fields


def acknowledge(
    conn: psycopg.Connection[Any],
    alert_id: int,
    actor: str,
    note: str = "",
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """firing → acknowledged; on a resolved alert the acknowledgement is recorded and the
    state stays resolved. Refused for closed and already acknowledged alerts."""
    now = require_aware(now or wall_now(), "now")
    _require_actor(actor)
    alert = _lock(conn, alert_id)
    if alert["state"] == "closed":
        raise TransitionRefused(
            f"alert {alert_id} is closed; a closed alert cannot be acknowledged"
        )
    if alert["state"] == "acknowledged":
        raise TransitionRefused(
            f"alert {alert_id} was already acknowledged by {alert['acknowledged_by']}"
        )
    if alert["state"] == "resolved" and alert["acknowledged_at"] is not None:
        raise TransitionRefused(
            f"alert {alert_id} was already acknowledged by {alert['acknowledged_by']}"
        )
    state = "acknowledged" if alert["state"] == "firing" else alert["state"]
    updated = _update(
        conn,
        alert_id,
        "state = %s, acknowledged_at = %s, acknowledged_by = %s, acknowledged_note = %s",
        (state, now, actor, note),
        now,
    )
    _record(conn, updated, "acknowledged", actor, note or None, now, {"state": state})
    return updated


def close(
    conn: psycopg.Connection[Any],
    alert_id: int,
    actor: str,
    cause: str | None,
    corrective_action: str | None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """resolved → closed, with the cause and the corrective action (both required)."""
    now = require_aware(now or wall_now(), "now")
    _require_actor(actor)
    missing = tuple(
        name
        for name, value in (("cause", cause), ("corrective_action", corrective_action))
        if value is None or not value.strip()
    )
    if missing:
        raise IncompleteInput(
            "closing an alert needs both the cause and the corrective action; missing: "
            + ", ".join(missing),
            missing,
        )
    assert cause is not None and corrective_action is not None
    alert = _lock(conn, alert_id)
    if alert["state"] == "closed":
        raise TransitionRefused(f"alert {alert_id} is already closed")
    if alert["state"] in ("firing", "acknowledged"):
        raise TransitionRefused(
            f"alert {alert_id} is still {alert['state']}: the condition has not cleared yet, "
            "so it cannot be closed until it is resolved"
        )
    _require_reverified(conn, alert, now)
    updated = _update(
        conn,
        alert_id,
        "state = 'closed', closed_at = %s, closed_by = %s, cause = %s, corrective_action = %s",
        (now, actor, cause.strip(), corrective_action.strip()),
        now,
    )
    _record(
        conn,
        updated,
        "closed",
        actor,
        None,
        now,
        {"cause": updated["cause"], "corrective_action": updated["corrective_action"]},
    )
    notify.queue_follow_ups(conn, [alert_id], "closed", now)
    return updated


def comment(
    conn: psycopg.Connection[Any],
    alert_id: int,
    actor: str,
    text: str,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """A comment on the alert's record (in any state, closed included)."""
    now = require_aware(now or wall_now(), "now")
    _require_actor(actor)
    if not text.strip():
        raise IncompleteInput("a comment needs its text", ("text",))
    alert = _lock(conn, alert_id)
    _record(conn, alert, "commented", actor, text.strip(), now, {})
    return alert


def reassign(
    conn: psycopg.Connection[Any],
    alert_id: int,
    actor: str,
    party: str,
    note: str = "",
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Hands the alert to another party of its site (a current one, not retired); the party
    and its name become the alert's responsible party. Refused for a closed alert and for the
    party already responsible."""
    now = require_aware(now or wall_now(), "now")
    _require_actor(actor)
    alert = _lock(conn, alert_id)
    if alert["state"] == "closed":
        raise TransitionRefused(f"alert {alert_id} is closed; a closed alert is not reassigned")
    found = conn.execute(
        "SELECT name FROM parties WHERE site = %s AND id = %s AND retired_at IS NULL",
        (alert["site"], party),
    ).fetchone()
    if found is None:
        raise UnknownParty(f"site {alert['site']} has no current party {party!r}")
    if alert["responsible_party"] == party:
        raise TransitionRefused(f"alert {alert_id} is already assigned to {party}")
    previous = {"party": alert["responsible_party"], "name": alert["responsible_name"]}
    updated = _update(
        conn,
        alert_id,
        "responsible_party = %s, responsible_name = %s",
        (party, found[0]),
        now,
    )
    _record(
        conn,
        updated,
        "reassigned",
        actor,
        note.strip() or None,
        now,
        {"responsible": {"party": party, "name": found[0]}, "previous": previous},
    )
    return updated


def _require_reverified(
    conn: psycopg.Connection[Any], alert: dict[str, Any], now: dt.datetime
) -> None:
    """For a clause with `reverify_for`: the subject must have been compliant that long since
    the resolution. Judged from the compliance intervals when the engine has written any for
    the period; otherwise from the clock (no violation since, and `reverify_for` elapsed)."""
    policy = policies(conn, [(alert["clause_id"], alert["clause_version"], alert["content_hash"])])[
        (alert["clause_id"], alert["clause_version"])
    ]
    if policy.reverify_for is None:
        return
    since: dt.datetime = alert["ended_at"]
    needed = dt.timedelta(seconds=policy.reverify_for)
    again = conn.execute(
        "SELECT id, started_at FROM alerts WHERE site = %s AND clause_id = %s AND space = %s"
        " AND coalesce(device, '') = coalesce(%s, '') AND started_at >= %s AND id <> %s"
        " ORDER BY started_at LIMIT 1",
        (alert["site"], alert["clause_id"], alert["space"], alert["device"], since, alert["id"]),
    ).fetchone()
    if again is not None:
        raise TransitionRefused(
            f"alert {alert['id']} cannot be closed yet: the subject violated the clause again "
            f"at {again[1].isoformat()} (alert {again[0]}), so the corrective action is not "
            "verified"
        )
    intervals = conn.execute(
        "SELECT status, greatest(start_ts, %s), end_ts FROM compliance_intervals"
        " WHERE site = %s AND clause_id = %s AND space = %s AND device = coalesce(%s, '')"
        " AND end_ts > %s AND start_ts < %s ORDER BY start_ts",
        (since, alert["site"], alert["clause_id"], alert["space"], alert["device"], since, now),
    ).fetchall()
    if intervals:
        violating = [start for status, start, _ in intervals if status == "violating"]
        if violating:
            raise TransitionRefused(
                f"alert {alert['id']} cannot be closed yet: the subject was violating again at "
                f"{violating[0].isoformat()}"
            )
        compliant = sum(
            (end - start for status, start, end in intervals if status == "compliant"),
            dt.timedelta(0),
        )
        if compliant < needed:
            raise TransitionRefused(
                f"alert {alert['id']} cannot be closed yet: the clause requires "
                f"{_hours(needed)} of compliance after the corrective action; the subject has "
                f"{_hours(compliant)} of compliant time since it was resolved at "
                f"{since.isoformat()}"
            )
        return
    if now < since + needed:
        raise TransitionRefused(
            f"alert {alert['id']} cannot be closed yet: the clause requires {_hours(needed)} of "
            f"compliance after the corrective action; closing is possible from "
            f"{(since + needed).isoformat()}"
        )


def _hours(delta: dt.timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 60:g} min"


def _require_actor(actor: str) -> None:
    if not actor or not actor.strip():
        raise IncompleteInput("an action on an alert needs the person who takes it", ("actor",))


def _lock(conn: psycopg.Connection[Any], alert_id: int) -> dict[str, Any]:
    ledger.lock(conn)  # before the row: the one lock order of every alert writer
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM alerts WHERE id = %s FOR UPDATE", (alert_id,))
        row = cur.fetchone()
    if row is None:
        raise AlertNotFound(f"no alert {alert_id}")
    return row


def _update(
    conn: psycopg.Connection[Any],
    alert_id: int,
    assignments: str,
    values: tuple[Any, ...],
    now: dt.datetime,
) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"UPDATE alerts SET {assignments}, updated_at = %s WHERE id = %s RETURNING *",
            (*values, now, alert_id),
        )
        row = cur.fetchone()
    assert row is not None
    return row


def _record(
    conn: psycopg.Connection[Any],
    alert: dict[str, Any],
    action: str,
    actor: str,
    note: str | None,
    now: dt.datetime,
    data: dict[str, Any],
) -> None:
    conn.execute(
        "INSERT INTO alert_timeline (alert_id, site, at, action, actor, note, data)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (alert["id"], alert["site"], now, action, actor, note, Jsonb(data)),
    )
    ledger.append(
        conn,
        [
            ledger.Entry(
                kind=f"alert.{action}",
                entity=f"alert:{alert['id']}",
                payload={
                    "alert": alert["id"],
                    "site": alert["site"],
                    "actor": actor,
                    "at": now,
                    "note": note,
                    **data,
                },
            )
        ],
        now,
    )
