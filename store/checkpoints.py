"""Engine checkpoints: one per site, a header and parts, with the engine's watermark.

The header (`engine_checkpoints.state`) is replaced on every save; parts
(`engine_checkpoint_parts`, one row per part name) are replaced one by one, so saving the parts
changed since the previous checkpoint costs in proportion to the change, not to the site.
`replace_parts` drops every part saved before (an engine that started afresh).

With the parts, the open run of every clause instance in them (`rules.runs`: status, since when,
and up to when it is decided) replaces that part's rows of `engine_open_runs`, in the same
transaction: the stretch each instance is in at the checkpoint's watermark, which no stored
compliance interval holds yet and which the compliance figures count (compliance/rates.py)
without decoding checkpoints. Runs outside the schedule are left out (they never count).
A saver that remembers what it stored (`stored_runs`: a digest of each part's runs, kept by the
checkpoint writer from one committed save to the next) writes only the parts whose runs
changed: most parts of a checkpoint are saved for a reading that left their runs as they were.

A part is stored compressed (zlib, level 1: a part of a device of the bundled clauses, 1.1 KB of
JSON, becomes about 0.3 KB), as it is encoded when captured. A checkpoint's parts are written in
a burst of WAL, and every commit of the pipeline meanwhile waits for that WAL to be flushed
before its own: smaller parts cost those commits less (the alert latency of probes meeting a
checkpoint, BENCHMARKS.md). Compressed by the writer thread instead, each part gave the
interpreter's lock up and took it back, and the saves took twice as long. Parts saved before
are plain JSON and load as they are.

Save the checkpoint in the same transaction as the readings it covers (the writer's `on_flush`
hook runs inside that transaction): after a crash the stored state then matches the stored
data exactly, neither ahead of it nor behind.
"""

from __future__ import annotations

import datetime as dt
import gc
import math
import struct
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg

from rules.runs import open_runs
from store.binary_copy import COPY_SIGNATURE, COPY_TRAILER, NULL_FIELD, text_field

# Parts go through a staging table by COPY, then one upsert: a few thousand changed devices
# per checkpoint cost one round trip, not one per part. The staging column compresses as the
# parts table's (lz4 where the server has it) and the upsert moves values still compressed: a
# staging column of its own would compress them with pglz, kept as is by the upsert, which
# took 2.7 times as long (1,000 parts of 17 KB: 360 ms instead of 130 ms).
PARTS_STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS engine_checkpoint_parts_staging (
    LIKE engine_checkpoint_parts {including}
) ON COMMIT DELETE ROWS
"""
PARTS_UPSERT = """
INSERT INTO engine_checkpoint_parts (site, part, state)
SELECT site, part, state FROM engine_checkpoint_parts_staging
ON CONFLICT (site, part) DO UPDATE SET state = excluded.state
"""
# The open runs of the saved parts go through a staging table by binary COPY, then rows are
# written only where a run changed: most parts of a checkpoint are saved for a new reading that
# left their runs as they were, and rewriting every row (delete, insert) cost three times as
# much on the server and left as many dead rows. Times are float8 epoch seconds (see 0007).
OPEN_RUNS_STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS engine_open_runs_staging (LIKE engine_open_runs)
ON COMMIT DELETE ROWS
"""
OPEN_RUNS_COPY = (
    "COPY engine_open_runs_staging (site, part, clause_id, clause_version, space, device,"
    " status, since, known_until) FROM STDIN (FORMAT BINARY)"
)
OPEN_RUNS_DIRECT_COPY = OPEN_RUNS_COPY.replace("engine_open_runs_staging", "engine_open_runs")
PARTS_COPY = "COPY engine_checkpoint_parts_staging (site, part, state) FROM STDIN (FORMAT BINARY)"
PARTS_DIRECT_COPY = PARTS_COPY.replace("engine_checkpoint_parts_staging", "engine_checkpoint_parts")
# Binary COPY fields: a row's field count, an int4 and a float8 with their lengths.
_RUN_FIELDS = (9).to_bytes(2, "big")
_PART_FIELDS = (3).to_bytes(2, "big")
_INT4 = struct.Struct(">ii").pack
_FLOAT8 = struct.Struct(">id").pack
# Instances of the saved parts without an open run now (outside the schedule, or gone).
OPEN_RUNS_GONE = """
DELETE FROM engine_open_runs t WHERE t.site = %s AND t.part = ANY(%s) AND NOT EXISTS (
    SELECT 1 FROM engine_open_runs_staging s
    WHERE s.part = t.part AND s.clause_id = t.clause_id AND s.clause_version = t.clause_version
      AND s.space = t.space AND s.device = t.device
)
"""
OPEN_RUNS_UPSERT = """
INSERT INTO engine_open_runs AS t SELECT * FROM engine_open_runs_staging
ON CONFLICT (site, part, clause_id, clause_version, space, device) DO UPDATE
SET status = excluded.status, since = excluded.since, known_until = excluded.known_until
WHERE (t.status, t.since, t.known_until)
      IS DISTINCT FROM (excluded.status, excluded.since, excluded.known_until)
"""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    site: str
    state: dict[str, Any]
    watermark: float | None  # engine time, epoch seconds
    saved_at: dt.datetime
    parts: Mapping[str, Any] = field(default_factory=dict)


# zlib's fastest: on the bundled clauses' parts, 9.6 µs a part of 1.1 KB, to 0.29 KB.
PART_COMPRESSION_LEVEL = 1


@dataclass(frozen=True, slots=True)
class EncodedPart:
    """A checkpoint part as it is saved: its state as orjson bytes, compressed, its open runs
    as rows of the binary COPY into the open-runs staging table, and their digest
    (`save_open_runs`). The ingest pipeline encodes each part as it captures it: a checkpoint in
    flight then holds bytes (about 0.9 KB a device with the bundled clauses, 2 KB before the
    state was compressed) instead of the part's objects (5.4 KiB), and the writer thread only
    sends them."""

    state: bytes
    runs: bytes
    digest: int


def encode_part(site: str, name: str, part: Mapping[str, Any]) -> EncodedPart:
    runs = encode_runs(site, name, part)
    # A new bytes of its own size: orjson's result keeps the buffer it grew (about 8 KiB of
    # resident memory for a part of 1 KB, measured: 50,000 kept, 7.3-8.2 KiB each against 0.9).
    state = zlib.compress(orjson.dumps(part), PART_COMPRESSION_LEVEL)
    return EncodedPart(state, runs, hash(runs))


def encode_runs(site: str, name: str, part: Mapping[str, Any]) -> bytes:
    """The open runs of a part's instances as binary COPY rows (OPEN_RUNS_COPY's columns);
    runs outside the schedule are left out (they never count)."""
    head = _RUN_FIELDS + text_field(site) + text_field(name)
    # A part's instances share their subject and the site's few statuses: each text is encoded
    # once a part, and the row's fields go into one join (half of capturing a part was here).
    texts: dict[str, bytes] = {}
    chunks: list[bytes] = []
    for run in open_runs(part.get("instances") or {}):
        status = run.status
        if status == "outside_schedule":
            continue
        for text in (run.clause_id, run.space, run.device, status):
            if text not in texts:
                texts[text] = text_field(text)
        known_until = run.known_until
        chunks += (
            head,
            texts[run.clause_id],
            _INT4(4, run.version),
            texts[run.space],
            texts[run.device],
            texts[status],
            _FLOAT8(8, run.start),
            NULL_FIELD if known_until is None else _FLOAT8(8, known_until),
        )
    return b"".join(chunks)


def save_checkpoint(
    conn: psycopg.Connection[Any],
    site: str,
    state: Mapping[str, Any],
    watermark: float | None,
    *,
    parts: Mapping[str, Any] | None = None,
    replace_parts: bool = False,
    stored_runs: Mapping[str, int] | None = None,
    pause: Callable[[], object] | None = None,
) -> dict[str, int]:
    """Replaces the checkpoint header of `site` and the given `parts` (all of them with
    `replace_parts`), each an engine checkpoint part or its `EncodedPart`. Everything must be
    JSON-serialisable (orjson). No commit: it becomes visible when the caller's transaction
    commits, and a rollback keeps the previous checkpoint. `stored_runs` and the result: see
    `save_open_runs`. `pause` is called between parts (a thread sharing the interpreter lets
    the others run: ingest/checkpoint_writer.py)."""
    conn.execute(
        "INSERT INTO engine_checkpoints (site, state, watermark, saved_at)"
        " VALUES (%s, %s::jsonb, %s, now())"
        " ON CONFLICT (site) DO UPDATE SET state = excluded.state,"
        " watermark = excluded.watermark, saved_at = excluded.saved_at",
        (site, orjson.dumps(state).decode(), watermark),
    )
    if replace_parts:
        conn.execute("DELETE FROM engine_checkpoint_parts WHERE site = %s", (site,))
        conn.execute("DELETE FROM engine_open_runs WHERE site = %s", (site,))
    if not parts:
        return {}
    encoded: dict[str, EncodedPart] = {}
    for name, part in parts.items():
        if isinstance(part, EncodedPart):
            encoded[name] = part
        else:
            encoded[name] = encode_part(site, name, part)
            if pause is not None:
                pause()
    written = save_open_runs(
        conn,
        site,
        encoded,
        replaced=replace_parts,
        stored=None if replace_parts else stored_runs,
        pause=pause,
    )
    with conn.cursor() as cur:
        # Parts replacing the site's (deleted above) go straight into the table, as their open
        # runs do; others through a staging table and an upsert.
        if not replace_parts:
            # Per column compression methods came with PostgreSQL 14.
            compression = conn.info.server_version >= 140000
            cur.execute(
                PARTS_STAGING_DDL.format(including="INCLUDING COMPRESSION" if compression else "")
            )
        with cur.copy(PARTS_DIRECT_COPY if replace_parts else PARTS_COPY) as copy:
            copy.write(COPY_SIGNATURE)
            site_field = text_field(site)
            for name, part in encoded.items():
                saved = part.state
                copy.write(
                    _PART_FIELDS + site_field + text_field(name) + len(saved).to_bytes(4, "big")
                )
                copy.write(saved)
                if pause is not None:
                    pause()
            copy.write(COPY_TRAILER)
        if not replace_parts:
            cur.execute(PARTS_UPSERT)
            # Emptied now, not at commit: the next site saved in this transaction stages its own.
            cur.execute("DELETE FROM engine_checkpoint_parts_staging")
    return written


def save_open_runs(
    conn: psycopg.Connection[Any],
    site: str,
    parts: Mapping[str, Any],
    *,
    replaced: bool = False,
    stored: Mapping[str, int] | None = None,
    pause: Callable[[], object] | None = None,
) -> dict[str, int]:
    """Makes the open runs of `parts` (engine checkpoint parts: device and space states with
    their "instances", or their `EncodedPart`s) those stored; `replaced`: the site's rows are
    gone already. `stored`: the digest of each part's runs as they are stored (what an earlier
    call returned, once its transaction committed); a part whose runs have that digest is left
    as it is. Returns the digest of the runs of each part written. `pause`: called between
    parts. No commit."""
    written: dict[str, int] = {}
    with conn.cursor() as cur:
        # With the site's rows gone, its runs go straight into the table: through the staging
        # table and the upsert's conflict checks, a checkpoint of every part cost twice as much.
        if not replaced:
            cur.execute(OPEN_RUNS_STAGING_DDL)
        with cur.copy(OPEN_RUNS_DIRECT_COPY if replaced else OPEN_RUNS_COPY) as copy:
            copy.write(COPY_SIGNATURE)
            for name, part in parts.items():
                if isinstance(part, EncodedPart):
                    runs, digest = part.runs, part.digest
                else:
                    runs = encode_runs(site, name, part)
                    digest = hash(runs)
                if pause is not None:
                    pause()
                if stored is not None and stored.get(name) == digest:
                    continue
                written[name] = digest
                if runs:
                    copy.write(runs)
            copy.write(COPY_TRAILER)
        if replaced:
            return written
        if written:
            cur.execute(OPEN_RUNS_GONE, (site, list(written)))
        cur.execute(OPEN_RUNS_UPSERT)
        # Emptied now, not at commit: the next site saved in this transaction stages its own.
        cur.execute("DELETE FROM engine_open_runs_staging")
    return written


def load_checkpoint(conn: psycopg.Connection[Any], site: str) -> Checkpoint | None:
    """The last committed checkpoint of `site` (header and every part), or None when it never
    had one. Its header is decoded (with the collector paused, `collector_paused`), its parts
    when read (`StoredParts`)."""
    with collector_paused():
        row = conn.execute(
            "SELECT state::text, watermark, saved_at FROM engine_checkpoints WHERE site = %s",
            (site,),
        ).fetchone()
        if row is None:
            return None
        query = "SELECT part, state FROM engine_checkpoint_parts WHERE site = %s"
        return Checkpoint(site, orjson.loads(row[0]), row[1], row[2], _parts(conn, query, site))


def data_times(conn: psycopg.Connection[Any], sites: Sequence[str]) -> dict[str, dt.datetime]:
    """Each site's data time: the watermark of its last checkpoint, the event time up to which
    its data has been judged (`data_time` of GET /sites). Sites without a checkpoint, or whose
    engine never advanced, are left out."""
    rows = conn.execute(
        "SELECT site, to_timestamp(watermark) FROM engine_checkpoints"
        " WHERE site = ANY(%s) AND watermark IS NOT NULL",
        (list(sites),),
    ).fetchall()
    return {site: moment for site, moment in rows}


# ---- history: older checkpoints, for judging late input (issue 17) ----

HISTORY_COPY_HEADER = """
INSERT INTO engine_checkpoint_history (site, horizon, saved_at, state)
SELECT site, %(horizon)s, saved_at, state FROM engine_checkpoints WHERE site = %(site)s
RETURNING id
"""
HISTORY_COPY_PARTS = """
INSERT INTO engine_checkpoint_history_parts (history_id, part, state)
SELECT %(id)s, part, state FROM engine_checkpoint_parts WHERE site = %(site)s
"""
# Rows older than the oldest time still accepted are needed no more, but for the newest of them
# (the one a late input just inside that age is judged from).
HISTORY_PRUNE = """
DELETE FROM engine_checkpoint_history WHERE site = %(site)s AND horizon < (
    SELECT max(horizon) FROM engine_checkpoint_history
    WHERE site = %(site)s AND horizon <= %(keep_after)s
)
"""


@dataclass(frozen=True, slots=True)
class HistoryPolicy:
    """How often a site's stored checkpoint is copied into its history (`every`, in engine
    seconds), and from when on copies are kept (`max_age` before the newest)."""

    every: float
    max_age: float


def keep_history(
    conn: psycopg.Connection[Any], site: str, horizon: float, policy: HistoryPolicy
) -> bool:
    """Copies the stored checkpoint of `site` (call after saving it, in its transaction) into
    its history when the newest copy is `policy.every` older than `horizon`, and prunes copies
    no longer needed. Returns whether it copied. No commit. A checkpoint of an engine that
    never took input nor time is not kept: where its instances start depends on the first
    time given to it, which a replay cannot know."""
    if not math.isfinite(horizon):
        return False
    row = conn.execute(
        "SELECT max(horizon) FROM engine_checkpoint_history WHERE site = %s", (site,)
    ).fetchone()
    newest = None if row is None else row[0]
    if newest is not None and horizon - newest < policy.every:
        return False
    copied = conn.execute(HISTORY_COPY_HEADER, {"site": site, "horizon": horizon}).fetchone()
    if copied is None:
        return False
    conn.execute(HISTORY_COPY_PARTS, {"site": site, "id": copied[0]})
    conn.execute(HISTORY_PRUNE, {"site": site, "keep_after": horizon - policy.max_age})
    return True


@dataclass(frozen=True, slots=True)
class HistoricCheckpoint:
    id: int
    horizon: float
    checkpoint: Checkpoint


def history_before(
    conn: psycopg.Connection[Any], site: str, ts: float
) -> HistoricCheckpoint | None:
    """The newest kept checkpoint of `site` from which input at event time `ts` is judged (its
    horizon at or before `ts`), with every part; None when the history starts later. Decoded
    with the collector paused."""
    with collector_paused():
        return _history_before(conn, site, ts)


def _history_before(
    conn: psycopg.Connection[Any], site: str, ts: float
) -> HistoricCheckpoint | None:
    row = conn.execute(
        "SELECT id, horizon, state::text, saved_at FROM engine_checkpoint_history"
        " WHERE site = %s AND horizon <= %s ORDER BY horizon DESC, id DESC LIMIT 1",
        (site, ts),
    ).fetchone()
    if row is None:
        return None
    parts = _parts(
        conn,
        "SELECT part, state FROM engine_checkpoint_history_parts WHERE history_id = %s",
        row[0],
    )
    state = orjson.loads(row[2])
    checkpoint = Checkpoint(site, state, state.get("clock"), row[3], parts)
    return HistoricCheckpoint(int(row[0]), float(row[1]), checkpoint)


def history_oldest(conn: psycopg.Connection[Any], site: str) -> HistoricCheckpoint | None:
    """The oldest kept checkpoint of `site` (input older than its horizon cannot be judged, but
    the rest of the late input can), or None when it has none."""
    row = conn.execute(
        "SELECT horizon FROM engine_checkpoint_history WHERE site = %s"
        " ORDER BY horizon, id LIMIT 1",
        (site,),
    ).fetchone()
    return None if row is None else history_before(conn, site, float(row[0]))


def drop_history_after(conn: psycopg.Connection[Any], site: str, history_id: int) -> int:
    """Drops the copies of `site` newer than `history_id`: taken without input judged since
    from that one, they no longer hold the site's state. No commit."""
    cur = conn.execute(
        "DELETE FROM engine_checkpoint_history WHERE site = %s AND id > %s", (site, history_id)
    )
    return max(cur.rowcount, 0)


@contextmanager
def collector_paused(*, keep: bool = False) -> Iterator[None]:
    """The cyclic garbage collector paused (if it ran) for the block: decoding a checkpoint's
    parts and building an engine from them make millions of objects and none of them garbage,
    and every collection their allocations set off scans what was made so far (failover time
    is restore time).

    `keep`: what the block makes is long-lived (a service's restored engines) or freed by its
    reference counts (the checkpoints they were restored from): once it succeeds, it is frozen
    (`gc.freeze`), out of every later collection, as the service freezes its state once built.
    Otherwise the first young collection after the pause scans all of it (1.5 s after building
    100,000 devices) and a middle one again. Garbage made before the block is collected on the
    way in; garbage other threads make during it would be frozen with it and never freed, so
    keep only while no other thread takes input (a service starting, not a cluster worker
    taking a partition over)."""
    running = gc.isenabled()
    if keep and running:
        gc.collect()
    gc.disable()
    try:
        yield
    except BaseException:
        if running:
            gc.enable()
        raise
    if running:
        if keep:
            gc.freeze()
        gc.enable()


class StoredParts(Mapping[str, Any]):
    """A checkpoint's parts by name, kept as stored and each decoded (`decode_part`) when it is
    read. An engine resuming reads each part once (`SiteEngine.resume`), so one part's objects
    are freed before the next is decoded and their memory taken again: decoded all at once,
    100,000 devices' parts were ~0.5 GB of new pages, their page faults most of a 3-4.5 s
    load (issue 24)."""

    __slots__ = ("_stored",)

    def __init__(self, stored: dict[str, bytes]) -> None:
        self._stored = stored

    def __getitem__(self, name: str) -> Any:
        return decode_part(self._stored[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._stored)

    def __len__(self) -> int:
        return len(self._stored)


def _parts(conn: psycopg.Connection[Any], query: str, key: object) -> StoredParts:
    """Checkpoint parts (name, stored bytes) read by `query` with its one parameter. Fetched in
    binary: bytea as text is hex, twice the bytes to send and decode (a restore of 10,000
    devices read its parts in 0.12-0.16 s instead of 0.44-0.94 s)."""
    rows = conn.execute(query, (key,), binary=True)
    return StoredParts({name: bytes(state) for name, state in rows})


def decode_part(stored: bytes) -> Any:
    """A part as `save_checkpoint` stores it (zlib), or as it stored it before (JSON)."""
    return orjson.loads(stored if stored[:1] == b"{" else zlib.decompress(stored))
