"""Field check-ins and their photos as stored (migration 0045; issue 19). The event of a
check-in is written by the pipeline like any other (store/batches.py); these rows keep who did
it, the note and the photo, keyed by the page's event id."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg.errors
from psycopg.rows import dict_row, tuple_row


@dataclass(frozen=True, slots=True)
class Photo:
    id: uuid.UUID
    site: str
    content_type: str
    size: int
    data: bytes


def insert_photo(
    conn: psycopg.Connection[Any], site: str, content_type: str, data: bytes, uploaded_by: str
) -> uuid.UUID:
    """Stores a photo (its type already checked by its bytes); returns its id. No commit."""
    photo_id = uuid.uuid4()
    conn.execute(
        "INSERT INTO checkin_photos (id, site, content_type, size, sha256, data, uploaded_by)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (
            photo_id,
            site,
            content_type,
            len(data),
            hashlib.sha256(data).hexdigest(),
            data,
            uploaded_by,
        ),
    )
    return photo_id


def photo(conn: psycopg.Connection[Any], photo_id: uuid.UUID) -> Photo | None:
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            "SELECT id, site, content_type, size, data FROM checkin_photos WHERE id = %s",
            (photo_id,),
        ).fetchone()
    return None if row is None else Photo(row[0], row[1], row[2], row[3], bytes(row[4]))


def photo_site(conn: psycopg.Connection[Any], photo_id: uuid.UUID) -> str | None:
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute("SELECT site FROM checkin_photos WHERE id = %s", (photo_id,)).fetchone()
    return None if row is None else str(row[0])


CHECKIN_COLUMNS = "event_id, site, space, task, ts, actor, note, photo, created_at"
MAX_INSTANT_TRIES = 1000


def claim_checkin(
    conn: psycopg.Connection[Any],
    event_id: uuid.UUID,
    site: str,
    space: str,
    task: str,
    ts: dt.datetime,
    actor: str,
    note: str,
    photo_id: uuid.UUID | None,
) -> dict[str, Any]:
    """The check-in of `event_id`: inserted now, or the one stored before (a double tap, a
    retry), whose event time then stands. Its event shares a reporter with every check-in, and
    events are keyed by instant: a time another check-in of this task at this site holds already
    moves on by a millisecond (two cleaners at one instant, or under the data clock, where the
    site's time stands still between checkpoints). No commit."""
    for _ in range(MAX_INSTANT_TRIES):
        try:
            with conn.transaction():  # a savepoint: a taken instant undoes only this try
                conn.execute(
                    "INSERT INTO checkins (event_id, site, space, task, ts, actor, note, photo)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING",
                    (event_id, site, space, task, ts, actor, note, photo_id),
                )
            break
        except psycopg.errors.UniqueViolation:
            ts += dt.timedelta(milliseconds=1)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            f"SELECT {CHECKIN_COLUMNS} FROM checkins WHERE event_id = %s", (event_id,)
        ).fetchone()
    if row is None:
        raise RuntimeError(f"no free instant for a check-in of {task} at {site}")
    return row


def checkins_between(
    conn: psycopg.Connection[Any],
    site: str,
    space: str,
    task: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Check-ins of a space (of one task, when given) in [since, until], newest first."""
    where = ["site = %s", "space = %s"]
    args: list[Any] = [site, space]
    for clause, value in (("task = %s", task), ("ts >= %s", since), ("ts <= %s", until)):
        if value is not None:
            where.append(clause)
            args.append(value)
    args.append(limit)
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT {CHECKIN_COLUMNS} FROM checkins WHERE {' AND '.join(where)}"
            " ORDER BY ts DESC LIMIT %s",
            args,
        ).fetchall()
