"""Stored input since a checkpoint: what a restarted engine replays to catch up.

The pipeline acknowledges MQTT messages once their rows are committed, not once a checkpoint
covers them, so after a crash the broker no longer holds the messages taken since the last
checkpoint: their readings and events are here. Every row carries the pipeline's receive stamp
(`received_at`, strictly increasing per pipeline), and a checkpoint records the stamp of the last
message it covers, so the rows after that stamp, in stamp order, are exactly the input the
engine took after the checkpoint, in the order it took it.
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from typing import Any

import psycopg

from rules.verdicts import Event

# The key of a checkpoint header holding the stamp of the last message it covers.
REPLAY_AFTER = "replay_after"
# Rows of one message share its stamp; a message's readings of one device and instant are one
# observation, as they were when taken.
READINGS_SINCE = """
SELECT received_at, device, ts, seq, metric, value
FROM readings
WHERE site = %(site)s AND received_at > %(after)s AND ts >= %(ts_floor)s
ORDER BY received_at, device, ts, seq, metric
"""
EVENTS_SINCE = """
SELECT received_at, device, ts, type, space, actor, seq, attrs
FROM events
WHERE site = %(site)s AND received_at > %(after)s AND ts >= %(ts_floor)s
ORDER BY received_at, device, ts, type
"""
LAST_STAMP = """
SELECT greatest(
    (SELECT max(received_at) FROM readings WHERE site = %(site)s),
    (SELECT max(received_at) FROM events WHERE site = %(site)s)
)
"""
# Before this, a ts bound is no bound (and keeps the partition pruning of later bounds honest).
NO_FLOOR = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class StoredReading:
    device: str
    ts: float
    seq: int | None
    metrics: dict[str, float]


_Entry = tuple[dt.datetime, StoredReading | Event]  # receive stamp, input


def stored_since(
    conn: psycopg.Connection[Any], site: str, after: float, ts_floor: float | None
) -> Iterator[tuple[float, StoredReading | Event]]:
    """The readings and events of `site` received after the stamp `after`, in the order they
    were taken, each with its stamp. Rows with `ts` before `ts_floor` are left out: the engine
    would set them aside as late anyway (its clock minus the lateness)."""
    params = {
        "site": site,
        "after": dt.datetime.fromtimestamp(after, dt.UTC),
        "ts_floor": NO_FLOOR if ts_floor is None else dt.datetime.fromtimestamp(ts_floor, dt.UTC),
    }
    readings = _readings(conn.execute(READINGS_SINCE, params))
    events: Iterator[_Entry] = (
        (received, Event(device, ts.timestamp(), kind, space, actor, seq, attrs))
        for received, device, ts, kind, space, actor, seq, attrs in conn.execute(
            EVENTS_SINCE, params
        ).fetchall()
    )
    # A message holds readings or events, never both: the two never share a stamp.
    for received, item in heapq.merge(readings, events, key=itemgetter(0)):
        yield received.timestamp(), item


def last_stamp(conn: psycopg.Connection[Any], site: str) -> float | None:
    """The newest stamp of any row of `site`, or None when it has none. It scans the site's
    rows: only for a site starting without a checkpoint (first start, or a checkpoint this
    version cannot read)."""
    row = conn.execute(LAST_STAMP, {"site": site}).fetchone()
    return None if row is None or row[0] is None else float(row[0].timestamp())


def _readings(cursor: psycopg.Cursor[Any]) -> Iterator[_Entry]:
    rows = cursor.fetchall()
    for (received, device, ts, seq), group in groupby(rows, key=lambda row: row[:4]):
        metrics = {metric: value for *_, metric, value in group}
        yield received, StoredReading(device, ts.timestamp(), seq, metrics)
