"""The rows one flush writes (`Batch`, `write_batch`): readings (COPY into a staging table,
then one INSERT ... ON CONFLICT DO NOTHING), events, dead letters, device status, compliance
intervals, late readings.

Every function here runs in the caller's transaction and never commits, so the pipeline puts a
flush's readings, events, dead letters and engine outputs in ONE transaction; the engine
checkpoint follows in a transaction of its own (docs/storage.md, "One transaction per flush").

Dedupe (SPEC §2) — a redelivered batch adds no row:
- Readings are unique on (site, device, metric, ts, seq), NULLS NOT DISTINCT (migration 0004).
  A payload that carries its own ts (every edge reading) is redelivered with the same ts and
  seq, so the key absorbs it; without seq it is the (device, metric, ts) key. Readings with
  different seqs and one ts (a loaded gateway's millisecond) are all kept.
- A reading without ts is stamped with the receive time (`broker_stamped`), which differs on
  redelivery: for those the (device, seq) key is checked against stored broker-stamped rows of
  the last `BROKER_SEQ_WINDOW` (partial index `readings_broker_seq`). A broker-stamped reading
  with no seq has no stable key at all: a redelivered copy is a second reading (the SPEC gives
  it none); the engine's dedupe sees the same thing.
- A device whose seq restarts (reboot) keeps distinct rows because their ts differ.
One writer per site (ingest workers own whole sites, SPEC §1) so two writers never race on one
device's seq check.
"""

from __future__ import annotations

import datetime as dt
import math
import operator
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
import psycopg

from rules.verdicts import ComplianceInterval, LateReading
from store.binary_copy import COPY_SIGNATURE, COPY_TRAILER, text_field
from store.mode import storage_mode
from store.partitions import ensure_days, existing_days

# Dead letters keep at most this much of the raw payload: enough to diagnose, bounded so a
# flood of oversized payloads cannot fill the disk.
# The one cap on a dead letter's payload: ingest cuts it there (docs/storage.md).
DEAD_LETTER_PAYLOAD_CAP = 4 * 1024
# How far back a broker-stamped (device, seq) redelivery is looked for: persistent MQTT
# sessions redeliver after a restart, well within the ingest's 7-day max age.
BROKER_SEQ_WINDOW = "8 days"
DAY_S = 86400.0


class ReadingRow(NamedTuple):
    """One metric value. Times are epoch seconds (UTC), as in the engine."""

    site: str
    device: str
    metric: str
    ts: float
    value: float
    seq: int | None
    received_at: float
    broker_stamped: bool = False


class Reading(NamedTuple):
    """The metric values of one message (one device, one ts): a ReadingRow each once stored.
    The pipeline hands these to `write_readings` as the decoder made them, without a row
    object per value."""

    site: str
    device: str
    ts: float  # epoch seconds, UTC
    seq: int | None
    metrics: dict[str, float]
    received_at: float
    broker_stamped: bool  # no ts in the payload: the receive time stands in


def reading_rows(readings: Iterable[Reading]) -> list[ReadingRow]:
    """One row per metric value."""
    return [
        ReadingRow(r.site, r.device, metric, r.ts, value, r.seq, r.received_at, r.broker_stamped)
        for r in readings
        for metric, value in r.metrics.items()
    ]


def _as_readings(rows: Sequence[ReadingRow | Reading]) -> list[Reading]:
    return [
        Reading(r.site, r.device, r.ts, r.seq, {r.metric: r.value}, r.received_at, r.broker_stamped)
        if isinstance(r, ReadingRow)
        else r
        for r in rows
    ]


class EventRow(NamedTuple):
    site: str
    device: str
    ts: float
    type: str
    space: str | None
    actor: str | None
    seq: int | None
    attrs: dict[str, Any]
    received_at: float


class DeadLetterRow(NamedTuple):
    received_at: float
    topic: str
    payload: bytes
    reason: str
    detail: str = ""
    truncated: bool = False  # cut before it came here (stored as cut either way)


READING_COLUMNS = "site, device, metric, ts, value, seq, received_at, broker_stamped"
READING_TYPES = ["text", "text", "text", "timestamptz", "float8", "int8", "timestamptz", "bool"]
# Straight into the table: the fast path for the usual batch, in which no row is stored yet.
DIRECT_COPY = f"COPY readings ({READING_COLUMNS}) FROM STDIN (FORMAT BINARY)"
STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS readings_staging (
    site text COLLATE "C", device text COLLATE "C", metric text COLLATE "C", ts timestamptz,
    value float8, seq int8, received_at timestamptz, broker_stamped bool
) ON COMMIT DELETE ROWS
"""
STAGING_COPY = f"COPY readings_staging ({READING_COLUMNS}) FROM STDIN (FORMAT BINARY)"
# The dedupe path, one statement: insert the rows not stored yet, mark their hours dirty for
# the rollups, count them. The rows come from the staging table, or inline for small batches.
INSERT_DEDUPED = f"""
WITH inserted AS (
    INSERT INTO readings ({READING_COLUMNS})
    SELECT s.site, s.device, s.metric, s.ts, s.value, s.seq, s.received_at, s.broker_stamped
    FROM {{source}}
    WHERE NOT (s.broker_stamped AND s.seq IS NOT NULL AND EXISTS (
        SELECT 1 FROM readings r
        WHERE r.site = s.site AND r.device = s.device AND r.seq = s.seq
          AND r.metric = s.metric AND r.broker_stamped
          AND r.ts >= s.ts - INTERVAL '{BROKER_SEQ_WINDOW}' AND r.ts <= s.ts))
    ON CONFLICT DO NOTHING
    RETURNING site, device, metric, ts
), dirty AS (
    INSERT INTO rollup_dirty (site, device, metric, bucket)
    SELECT DISTINCT site, device, metric, date_trunc('hour', ts, 'UTC') FROM inserted
    ON CONFLICT DO NOTHING
)
SELECT count(*) FROM inserted
"""
INSERT_FROM_STAGING = INSERT_DEDUPED.format(source="readings_staging s")
VALUES_ROW = "(" + ", ".join(f"%s::{name}" for name in READING_TYPES) + ")"
# Up to this many rows a batch goes in one INSERT with the rows inline: one round trip, where
# the COPY paths take four. Past it COPY wins.
SMALL_BATCH = 64
MARK_DIRTY = """
INSERT INTO rollup_dirty (site, device, metric, bucket)
SELECT site, device, metric, to_timestamp(hour * 3600)
FROM unnest(%s::text[], %s::text[], %s::text[], %s::int8[]) AS u(site, device, metric, hour)
ON CONFLICT DO NOTHING
"""
# After a batch met stored rows (redelivery), this many batches go straight to the dedupe path
# rather than trying the fast path and rolling it back each time.
DEDUPE_STREAK = 20
HOUR_S = 3600.0
_TS = operator.itemgetter(2)  # of a Reading


def _days(times: Iterable[float]) -> set[dt.date]:
    """UTC days of epoch times. A time within a microsecond of midnight may be stored rounded
    into the next day: that day is included too."""
    epoch_days: set[int] = set()
    for t in times:
        day = int(t // DAY_S)
        epoch_days.add(day)
        if t - day * DAY_S > DAY_S - 1e-6:
            epoch_days.add(day + 1)
    return {dt.date(1970, 1, 1) + dt.timedelta(days=d) for d in epoch_days}


@dataclass
class PartitionCache:
    """A writer's memory between batches: days known to have a partition, per table (native
    mode), and how many coming batches skip the fast path. Clear it after a rollback:
    partitions created in a rolled-back transaction do not exist."""

    days: dict[str, set[dt.date]] = field(default_factory=dict)
    dedupe_batches: int = 0
    staging_backend: int | None = None  # server process whose session has the staging table

    def ensure(self, conn: psycopg.Connection[Any], table: str, times: Iterable[float]) -> None:
        if storage_mode(conn) != "native":
            return
        known = self.days.get(table)
        if known is None:
            # The days already there, committed: creating one takes the creators' lock until
            # the end of the transaction, which a writer beside this one may hold for long.
            known = self.days[table] = existing_days(conn, table)
        ensure_days(conn, table, _days(times), known)

    def clear(self) -> None:
        self.days.clear()
        self.staging_backend = None


def _insert_inline(cur: psycopg.Cursor[Any], rows: Sequence[ReadingRow]) -> int:
    """The dedupe path with the rows inline in the statement (small batches)."""
    stamp = dt.datetime.fromtimestamp
    utc = dt.UTC
    params: list[Any] = []
    for r in rows:
        params.extend(
            (
                r.site,
                r.device,
                r.metric,
                stamp(r.ts, utc),
                r.value,
                r.seq,
                stamp(r.received_at, utc),
                r.broker_stamped,
            )
        )
    source = "(VALUES " + ", ".join([VALUES_ROW] * len(rows)) + f") AS s ({READING_COLUMNS})"
    cur.execute(INSERT_DEDUPED.format(source=source), params)
    counted = cur.fetchone()
    return int(counted[0]) if counted else 0


PG_EPOCH_S = 946684800  # 2000-01-01 UTC, where timestamptz counts microseconds from
# A row's fields after its three texts: ts, value, seq (or NULL), received_at, broker_stamped.
_ROW_TAIL = struct.Struct(">iqidiqiqi?").pack
_ROW_TAIL_NO_SEQ = struct.Struct(">iqidiiqi?").pack


def _micros(t: float) -> int:
    """Microseconds since 2000-01-01 UTC (timestamptz's binary value) of the epoch time `t`,
    rounded as `datetime.fromtimestamp` rounds (the fraction half to even): the inline path
    passes datetimes, so every path stores one float as the same timestamp and a redelivered
    reading meets its stored key."""
    fraction, whole = math.modf(t)
    return (int(whole) - PG_EPOCH_S) * 1_000_000 + round(fraction * 1e6)


def _copy_data(readings: Sequence[Reading]) -> bytes:
    """The rows in the binary COPY format, encoded here rather than by psycopg's per-field
    dumpers (a third of a flush's CPU): each site and metric name is encoded once per batch,
    each device's row head (field count, site, device) once per batch, the times (shared by
    the rows of one message) once per message. At 10,000 devices a batch holds about one
    message a device, so what is encoded per device, not per series, is what counts."""
    texts: dict[str, bytes] = {}  # site and metric names, encoded as text fields
    heads: dict[tuple[str, str], bytes] = {}
    parts = [COPY_SIGNATURE]
    append = parts.append
    for site, device, ts, seq, metrics, received_at, broker_stamped in readings:
        head = heads.get((site, device))
        if head is None:
            site_field = texts.get(site)
            if site_field is None:
                site_field = texts[site] = text_field(site)
            head = heads[site, device] = b"\x00\x08" + site_field + text_field(device)
        ts_us, received_us = _micros(ts), _micros(received_at)
        for metric, value in metrics.items():
            metric_field = texts.get(metric)
            if metric_field is None:
                metric_field = texts[metric] = text_field(metric)
            append(head)
            append(metric_field)
            if seq is None:
                append(_ROW_TAIL_NO_SEQ(8, ts_us, 8, value, -1, 8, received_us, 1, broker_stamped))
            else:
                append(_ROW_TAIL(8, ts_us, 8, value, 8, seq, 8, received_us, 1, broker_stamped))
    append(COPY_TRAILER)
    return b"".join(parts)


def _copy(cur: psycopg.Cursor[Any], statement: str, readings: Sequence[Reading]) -> None:
    with cur.copy(statement) as copy:
        copy.write(_copy_data(readings))


def _array_literal(values: Sequence[str]) -> str:
    """A PostgreSQL text[] literal. Built by hand: psycopg adapts list elements one by one in
    Python, which cost more than the whole COPY of a batch. Every element is quoted (an empty
    string or NULL would not survive otherwise); only values holding a quote or a backslash
    are escaped one by one. Ids never hold either, and at 10,000 devices escaping a batch's
    15,000 marks one by one was a fifth of the commit thread's CPU (py-spy, bench/scale.py)."""
    if not values:
        return "{}"
    raw = "".join(values)
    if '"' not in raw and "\\" not in raw:
        return '{"' + '","'.join(values) + '"}'
    quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(quoted) + "}"


def _mark_dirty(cur: psycopg.Cursor[Any], readings: Sequence[Reading]) -> None:
    """Marks the (series, UTC hour) of each row for `refresh_rollups`. A ts within a
    microsecond of the next hour may be stored rounded into it: mark both (an extra mark
    only costs a recomputation)."""
    first, last = min(map(_TS, readings)), max(map(_TS, readings))
    hour = int(first // HOUR_S)
    hours: set[tuple[str, str, str, int]]
    if int(last // HOUR_S) == hour and last - hour * HOUR_S <= HOUR_S - 1e-6:
        # The usual batch, all in one hour: each series once.
        hours = {(r.site, r.device, metric, hour) for r in readings for metric in r.metrics}
    else:
        hours = set()
        add = hours.add
        for r in reading_rows(readings):
            hour = int(r.ts // HOUR_S)
            add((r.site, r.device, r.metric, hour))
            if r.ts - hour * HOUR_S > HOUR_S - 1e-6:
                add((r.site, r.device, r.metric, hour + 1))
    sites, devices, metrics, numbers = zip(*hours, strict=True)
    cur.execute(
        MARK_DIRTY,
        (
            _array_literal(sites),
            _array_literal(devices),
            _array_literal(metrics),
            "{" + ",".join(map(str, numbers)) + "}",
        ),
    )


def write_readings(
    conn: psycopg.Connection[Any],
    rows: Sequence[ReadingRow | Reading],
    partitions: PartitionCache | None = None,
) -> int:
    """Stores the readings not already stored and returns how many were new; marks the touched
    hours for `refresh_rollups`. No commit (the caller owns the transaction).

    Small batches (up to SMALL_BATCH rows): one INSERT ... ON CONFLICT DO NOTHING with the
    rows inline. Larger ones, fast path: COPY straight into `readings` inside a savepoint; a
    batch that meets a stored row (a redelivery) rolls back to the savepoint and takes the
    dedupe path: COPY into a staging table, then INSERT ... ON CONFLICT DO NOTHING. Batches
    with broker-stamped readings carrying a seq always take a dedupe path (their key is not
    the unique index)."""
    if not rows:
        return 0
    readings = _as_readings(rows)
    state = partitions or PartitionCache()
    state.ensure(conn, "readings", set(map(_TS, readings)))
    values = sum(len(r.metrics) for r in readings)
    with conn.cursor() as cur:
        if values <= SMALL_BATCH:
            return _insert_inline(cur, reading_rows(readings))
        seq_checked = any(r.broker_stamped and r.seq is not None for r in readings)
        if state.dedupe_batches > 0:
            state.dedupe_batches -= 1
        elif not seq_checked:
            # Marks first: an extra mark (for rows that turn out to be stored) only costs a
            # recomputation, and this statement opens the caller's transaction if none is
            # open yet, so that the block below is a savepoint inside it and not a transaction
            # of its own that would commit.
            _mark_dirty(cur, readings)
            try:
                with conn.transaction():
                    _copy(cur, DIRECT_COPY, readings)
                return values
            except psycopg.errors.UniqueViolation:
                state.dedupe_batches = DEDUPE_STREAK
        backend = conn.info.backend_pid
        if state.staging_backend != backend:
            cur.execute(STAGING_DDL)
            state.staging_backend = backend
        _copy(cur, STAGING_COPY, readings)
        cur.execute(INSERT_FROM_STAGING)
        counted = cur.fetchone()
        # The staging rows go at commit (ON COMMIT DELETE ROWS, which also drops the dead rows
        # this leaves); delete them now so a second call in this transaction does not see them.
        cur.execute("DELETE FROM readings_staging")
    return int(counted[0]) if counted else 0


def write_events(
    conn: psycopg.Connection[Any],
    rows: Sequence[EventRow],
    partitions: PartitionCache | None = None,
) -> int:
    """Inserts events not already stored (key: site, device, type, ts); returns how many were
    new. Events are few next to readings, so a pipelined executemany is enough. No commit."""
    if not rows:
        return 0
    (partitions or PartitionCache()).ensure(conn, "events", (r.ts for r in rows))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO events (site, device, ts, seq, type, space, actor, attrs, received_at)"
            " VALUES (%s, %s, to_timestamp(%s), %s, %s, %s, %s, %s::jsonb, to_timestamp(%s))"
            " ON CONFLICT DO NOTHING",
            [
                (
                    r.site,
                    r.device,
                    r.ts,
                    r.seq,
                    r.type,
                    r.space,
                    r.actor,
                    orjson.dumps(r.attrs).decode(),
                    r.received_at,
                )
                for r in rows
            ],
            returning=False,
        )
        return max(cur.rowcount, 0)


def write_dead_letters(conn: psycopg.Connection[Any], rows: Sequence[DeadLetterRow]) -> int:
    """Stores dead letters, the payload capped at `DEAD_LETTER_PAYLOAD_CAP` bytes (with
    `truncated` set when cut, here or before). Returns how many. No commit."""
    if not rows:
        return 0
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO dead_letters (received_at, topic, payload, truncated, reason, detail)"
            " VALUES (to_timestamp(%s), %s, %s, %s, %s, %s)",
            [
                (
                    r.received_at,
                    r.topic,
                    r.payload[:DEAD_LETTER_PAYLOAD_CAP],
                    r.truncated or len(r.payload) > DEAD_LETTER_PAYLOAD_CAP,
                    r.reason,
                    r.detail,
                )
                for r in rows
            ],
        )
    return len(rows)


class StatusRow(NamedTuple):
    site: str
    device: str
    online: bool
    received_at: float  # epoch seconds
    sources: bytes | None = None  # a gateway's health report of its sources, JSON (issue 22)


def write_device_status(conn: psycopg.Connection[Any], rows: Iterable[StatusRow]) -> int:
    """Keeps the latest status per (site, device); an older message (a redelivery) changes
    nothing. A status without a health report of sources keeps the last one. Returns how many
    rows changed. No commit."""
    latest: dict[tuple[str, str], StatusRow] = {}
    for row in rows:
        key = (row.site, row.device)
        held = latest.get(key)
        if held is None or row.received_at >= held.received_at:
            latest[key] = row
    if not latest:
        return 0
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO device_status (site, device, online, received_at, sources)"
            " VALUES (%s, %s, %s, to_timestamp(%s), %s::jsonb)"
            " ON CONFLICT (site, device) DO UPDATE"
            " SET online = excluded.online, received_at = excluded.received_at,"
            " sources = coalesce(excluded.sources, device_status.sources)"
            " WHERE excluded.received_at >= device_status.received_at",
            [
                (*row[:4], None if row.sources is None else row.sources.decode())
                for row in latest.values()
            ],
        )
        return max(cur.rowcount, 0)


def write_compliance_intervals(
    conn: psycopg.Connection[Any], intervals: Iterable[ComplianceInterval]
) -> int:
    """Stores compliance intervals; one already stored (same clause version, subject and start)
    is kept as it is. Returns how many were new. No commit."""
    params = [
        (
            i.subject.site,
            i.clause.clause_id,
            i.clause.version,
            i.clause.content_hash,
            i.subject.space,
            i.subject.device or "",
            i.start,
            i.end,
            i.status,
        )
        for i in intervals
    ]
    if not params:
        return 0
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO compliance_intervals (site, clause_id, clause_version, content_hash,"
            " space, device, start_ts, end_ts, status)"
            " VALUES (%s, %s, %s, %s, %s, %s, to_timestamp(%s), to_timestamp(%s), %s)"
            " ON CONFLICT DO NOTHING",
            params,
        )
        return max(cur.rowcount, 0)


def write_late_readings(conn: psycopg.Connection[Any], items: Iterable[LateReading]) -> int:
    """Records which stored readings arrived too late to be judged. No commit."""
    params = [(i.site, i.device, i.metric, i.ts) for i in items]
    if not params:
        return 0
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO late_readings (site, device, metric, ts)"
            " VALUES (%s, %s, %s, to_timestamp(%s)) ON CONFLICT DO NOTHING",
            params,
        )
        return max(cur.rowcount, 0)


@dataclass
class Batch:
    """What one flush writes in one transaction. `values` counts the readings' metric values:
    add readings with `add_reading`."""

    id: int
    readings: list[Reading] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    dead_letters: list[DeadLetterRow] = field(default_factory=list)
    values: int = 0

    def __post_init__(self) -> None:
        self.values = sum(len(r.metrics) for r in self.readings)

    def __len__(self) -> int:
        return self.values + len(self.events) + len(self.dead_letters)

    def add_reading(self, reading: Reading) -> None:
        self.readings.append(reading)
        self.values += len(reading.metrics)


@dataclass(frozen=True, slots=True)
class BatchResult:
    readings_new: int
    events_new: int
    dead_letters: int


def write_batch(
    conn: psycopg.Connection[Any], batch: Batch, partitions: PartitionCache | None = None
) -> BatchResult:
    """Writes the readings, events and dead letters of `batch`. No commit."""
    return BatchResult(
        write_readings(conn, batch.readings, partitions),
        write_events(conn, batch.events, partitions),
        write_dead_letters(conn, batch.dead_letters),
    )


def replace_compliance_intervals(
    conn: psycopg.Connection[Any],
    site: str,
    replace_from: Mapping[tuple[str, int, str, str], float],
    intervals: Iterable[ComplianceInterval],
) -> int:
    """Late input re-judged (ingest/rejudge.py): per clause instance (clause id, version, space,
    device or ''), the stored intervals starting at or after its time in `replace_from` give way
    to `intervals`. Returns how many were removed. No commit: with the inserts, one change."""
    keys = list(replace_from)
    removed = 0
    with conn.cursor() as cur:
        if keys:
            cur.execute(
                "DELETE FROM compliance_intervals c USING unnest("
                "%s::text[], %s::int[], %s::text[], %s::text[], %s::float8[]"
                ") AS k(clause_id, clause_version, space, device, since)"
                " WHERE c.site = %s AND c.clause_id = k.clause_id"
                " AND c.clause_version = k.clause_version AND c.space = k.space"
                " AND c.device = k.device AND c.start_ts >= to_timestamp(k.since)",
                (
                    [k[0] for k in keys],
                    [k[1] for k in keys],
                    [k[2] for k in keys],
                    [k[3] for k in keys],
                    [max(replace_from[k], 0.0) for k in keys],
                    site,
                ),
            )
            removed = max(cur.rowcount, 0)
    write_compliance_intervals(conn, intervals)
    return removed


def late_waiting(conn: psycopg.Connection[Any], site: str) -> float | None:
    """The event time of the oldest late input of `site` no re-judging has taken yet, or None."""
    row = conn.execute(
        "SELECT extract(epoch FROM min(ts)) FROM late_readings"
        " WHERE site = %s AND rejudged_at IS NULL",
        (site,),
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def mark_late_rejudged(conn: psycopg.Connection[Any], site: str) -> int:
    """Every late input of `site` waiting has been taken by a re-judging. No commit."""
    cur = conn.execute(
        "UPDATE late_readings SET rejudged_at = now() WHERE site = %s AND rejudged_at IS NULL",
        (site,),
    )
    return max(cur.rowcount, 0)
