"""What an alert's evidence shows beyond the readings kept with it (docs/api.md, "Evidence"):
the raw reading at the alert's worst value, and for an obligation the events of its task for
the subject, when it was last done, when it was due and how long it has been overdue.

Events are read generically from the events table (any device, any source: a check-in reader,
the check-in page, MQTT, HTTP ingest): an event of the task's type for the subject's space, or
from a device in that space when the event names no space, as the engine matches them
(rules/engine.py `_apply_event`). Nothing here writes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg.rows import dict_row, tuple_row

from rules.clause import ObligationCheck

# At most this many events are listed (the newest of the window).
MAX_EVENTS: Final = 200
# How long a calendar period is, at most, for the window of an obligation with `per`.
PERIOD_SECONDS: Final = {
    "day": 86_400.0,
    "week": 7 * 86_400.0,
    "month": 31 * 86_400.0,
    "quarter": 92 * 86_400.0,
    "year": 366 * 86_400.0,
}

_SUBJECT = (
    "site = %(site)s AND type = %(type)s AND (space = %(space)s OR (space IS NULL AND device IN"
    " (SELECT id FROM devices WHERE site = %(site)s AND space = %(space)s)))"
)


def worst_reading(
    conn: psycopg.Connection[Any],
    site: str,
    device: str,
    metric: str,
    worst: float,
    since: dt.datetime,
    until: dt.datetime,
) -> tuple[dt.datetime, float] | None:
    """The raw reading of the metric in [since, until] nearest the alert's worst value (the
    worst value is stored in the metric's precision), the first of equals; None when none is
    kept (retention)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            "SELECT ts, value FROM readings WHERE site = %s AND device = %s AND metric = %s"
            " AND ts >= %s AND ts <= %s ORDER BY abs(value - %s), ts LIMIT 1",
            (site, device, metric, since, until, worst),
        ).fetchone()
    return None if row is None else (row[0], float(row[1]))


@dataclass(frozen=True, slots=True)
class ObligationView:
    event: str
    every: float | None  # seconds of schedule time (rolling), or None
    per: str | None  # the calendar period, or None
    grace: float
    last_done_at: dt.datetime | None  # the last time the task was done before it was due
    due_at: dt.datetime  # when it became overdue (the deadline, grace included)
    done_at: dt.datetime | None  # the event that ended the overdue stretch, if one did
    overdue_until: dt.datetime  # done_at, or now
    overdue_seconds: float
    since: dt.datetime  # the window of `events`
    until: dt.datetime
    events: list[dict[str, Any]]  # ts, device, type, space, actor, attrs; oldest first


def obligation_view(
    conn: psycopg.Connection[Any],
    *,
    site: str,
    space: str,
    check: ObligationCheck,
    started_at: dt.datetime,
    ended_at: dt.datetime | None,
    evidence: list[tuple[dt.datetime, str]],
    now: dt.datetime,
) -> ObligationView:
    """An obligation alert of `space` (started when the task became overdue, ended by the
    event that met it) with its task's events from one cadence before it was last done (or
    before it was due) to the end of the overdue stretch plus one cadence. `evidence` is what
    the engine kept ((ts, event type): the last event it judged with, a site model's or the
    API's last-done time included); else the last stored event before the due time."""
    cadence = check.every if check.every is not None else PERIOD_SECONDS[check.per or "day"]
    args: dict[str, Any] = {"site": site, "type": check.event, "space": space}
    kept = [ts for ts, kind in evidence if kind == check.event and ts <= started_at]
    last_done = max(kept) if kept else None
    if last_done is None:
        with conn.cursor(row_factory=tuple_row) as cur:
            row = cur.execute(
                f"SELECT max(ts) FROM events WHERE {_SUBJECT} AND ts <= %(due)s",
                {**args, "due": started_at},
            ).fetchone()
        last_done = row[0] if row else None
    overdue_until = ended_at if ended_at is not None else max(now, started_at)
    step = dt.timedelta(seconds=cadence)
    since = (last_done if last_done is not None else started_at) - step
    until = overdue_until + step
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"SELECT ts, device, type, space, actor, attrs FROM events WHERE {_SUBJECT}"
            " AND ts >= %(since)s AND ts <= %(until)s ORDER BY ts DESC LIMIT %(limit)s",
            {**args, "since": since, "until": until, "limit": MAX_EVENTS},
        ).fetchall()
    return ObligationView(
        event=check.event,
        every=check.every,
        per=check.per,
        grace=check.grace,
        last_done_at=last_done,
        due_at=started_at,
        done_at=ended_at,
        overdue_until=overdue_until,
        overdue_seconds=(overdue_until - started_at).total_seconds(),
        since=since,
        until=until,
        events=rows[::-1],
    )
