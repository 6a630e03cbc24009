"""Silences: whether a notification may go out now. A silence (store/quiet.py) covering an
alert's subject at the moment its notification comes due holds the message back: the
notification ends `silenced`, naming the silence, with a timeline row and a ledger entry. The
alert itself is recorded, escalated and shown as usual; only messages to people stop.

Decided at delivery, not when the message is queued, so a silence set after an alert was raised
still holds back its pending notices, and one that has ended lets the next ones through.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from store import ledger, quiet

SILENCER_ACTOR = "notifier"

_SILENCE_OF_ALERT = (
    "SELECT q.id FROM alerts a JOIN quiet_periods q ON q.kind = 'silence'"
    " AND q.starts_at <= %(at)s AND q.effective_end > %(at)s AND "
    + quiet.covers_sql("q", "a.site", "a.space", "a.device", "a.clause_id")
    + " WHERE a.id = %(alert)s ORDER BY q.id LIMIT 1"
)


def silence_of(conn: psycopg.Connection[Any], alert_id: int, at: dt.datetime) -> int | None:
    """The silence (lowest id) covering the alert's subject at `at`, or None."""
    row = conn.execute(_SILENCE_OF_ALERT, {"alert": alert_id, "at": at}).fetchone()
    return None if row is None else int(row[0])


def hold_if_silenced(
    conn: psycopg.Connection[Any], notification: dict[str, Any], now: dt.datetime
) -> bool:
    """Whether a due notification (id, alert_id, site, event, level) is held back by a
    silence at `now`; if so it is marked `silenced` with the silence, and the alert's timeline
    and the ledger say which silence held it. Does not commit."""
    silence = silence_of(conn, notification["alert_id"], now)
    if silence is None:
        return False
    conn.execute(
        "UPDATE notifications SET state = 'silenced', silence_id = %s WHERE id = %s",
        (silence, notification["id"]),
    )
    facts = {
        "notification": notification["id"],
        "event": notification["event"],
        "level": notification["level"],
        "outcome": "silenced",
        "silence": silence,
    }
    note = (
        f"{notification['event']} notice to level {notification['level']} held back"
        f" by silence {silence}"
    )
    conn.execute(
        "INSERT INTO alert_timeline (alert_id, site, at, action, actor, note, data)"
        " VALUES (%s, %s, %s, 'notified', %s, %s, %s)",
        (notification["alert_id"], notification["site"], now, SILENCER_ACTOR, note, Jsonb(facts)),
    )
    ledger.append(
        conn,
        [
            ledger.Entry(
                kind="notification.silenced",
                entity=f"notification:{notification['id']}",
                payload={
                    "alert": notification["alert_id"],
                    "site": notification["site"],
                    "actor": SILENCER_ACTOR,
                    "at": now,
                    "note": note,
                    **facts,
                },
            )
        ],
        now,
    )
    return True
