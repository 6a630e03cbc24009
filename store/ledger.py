"""The tamper-evident ledger: an append-only hash chain in PostgreSQL.

Each entry is (seq, at, kind, entity, payload) where payload is canonical JSON (orjson with
sorted keys) stored as text, byte for byte what was hashed. The hash of an entry covers the hash
of the entry before it, so changing, removing, inserting or reordering any entry breaks the
chain from that entry on, and `verify` names the first entry that no longer fits.

Appends are serialised by a transaction-scoped advisory lock taken before the tip is read: two
writers never both extend the same tip, and the lock is released when the caller's transaction
ends (commit or rollback), so a rolled-back append leaves no gap.

What a chain alone cannot show: someone who rewrites the table and recomputes every hash after
the change, or who removes entries from the end. Anchors close both: the (seq, hash) of the tip
signed and kept outside the database from time to time (alerts/anchors.py); `verify(conn,
anchored)` then requires every anchored entry to exist with its anchored hash.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg

GENESIS_HASH = "0" * 64
# Key of the advisory lock serialising appends (an arbitrary constant unique to the ledger).
LEDGER_LOCK_KEY = 0x6C656467  # "ledg"
# Rows fetched per round trip while verifying: bounded memory whatever the ledger's length.
VERIFY_FETCH_ROWS = 5000
# How far past a mislinked entry to look for the entry it was swapped with.
LOOKAHEAD_ROWS = 64
# The last entry (seq, hash), no row for an empty ledger. Read it only while holding the lock.
TIP_QUERY = "SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1"


# seq, at, kind, entity, payload, prev_hash, hash: a row of the ledger table.
LedgerRow = tuple[int, dt.datetime, str, str, str, str, str]


@dataclass(frozen=True, slots=True)
class Entry:
    """One thing to record: what happened (`kind`, e.g. "alert.raised"), to what (`entity`,
    e.g. "alert:42") and the facts (`payload`, JSON-serialisable)."""

    kind: str
    entity: str
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Verdict:
    """Result of recomputing the chain. `first_bad_seq` is the first entry that does not fit
    (for a removed entry: the missing sequence number); `problem` says how, in words."""

    ok: bool
    checked: int
    first_bad_seq: int | None = None
    problem: str | None = None
    tip_seq: int | None = None
    tip_hash: str | None = None
    # The highest anchored entry found with its anchored hash (None: none was given, or none
    # checked out before the first problem).
    anchored_seq: int | None = None


def canonical_json(payload: Mapping[str, Any]) -> bytes:
    """The one byte form of a payload that gets hashed: sorted keys, no whitespace."""
    return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def format_at(at: dt.datetime) -> str:
    """A timestamp as hashed: UTC, microseconds (PostgreSQL's timestamptz precision)."""
    if at.tzinfo is None:
        raise ValueError("ledger times must be timezone-aware")
    return at.astimezone(dt.UTC).isoformat(timespec="microseconds")


def entry_hash(
    prev_hash: str, seq: int, at: dt.datetime, kind: str, entity: str, payload: str
) -> str:
    material = "\n".join((prev_hash, str(seq), format_at(at), kind, entity, payload))
    return hashlib.sha256(material.encode()).hexdigest()


def evidence_hash(evidence: object) -> str:
    """SHA-256 of the canonical JSON of an alert's evidence (readings, clause version, params)."""
    return hashlib.sha256(
        orjson.dumps(evidence, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    ).hexdigest()


def lock(conn: psycopg.Connection[Any]) -> None:
    """Takes the ledger's append lock until the caller's transaction ends (re-entrant).

    Every writer that also locks rows (alerts, assignments) takes this first: one lock order
    for all of them, so an acknowledgement and a pipeline flush never deadlock each other.
    """
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (LEDGER_LOCK_KEY,))


def append(conn: psycopg.Connection[Any], entries: Iterable[Entry], at: dt.datetime) -> list[int]:
    """Appends `entries` in order, all stamped `at`, and returns their sequence numbers.

    Takes the ledger's advisory lock for the rest of the caller's transaction (so keep that
    transaction short). Does not commit; on an autocommit connection it runs in a transaction
    of its own.
    """
    batch = list(entries)
    if not batch:
        return []
    if conn.autocommit:
        # The lock lives as long as a transaction: give it one, or it would end with the
        # SELECT and two writers could extend the same tip.
        with conn.transaction():
            return _append(conn, batch, at)
    return _append(conn, batch, at)


def _append(conn: psycopg.Connection[Any], batch: list[Entry], at: dt.datetime) -> list[int]:
    lock(conn)
    rows = chain(conn.execute(TIP_QUERY).fetchone(), batch, at)
    write(conn, rows)
    return [row[0] for row in rows]


def chain(
    tip: tuple[int, str] | None, entries: Iterable[Entry], at: dt.datetime
) -> list[LedgerRow]:
    """The rows that extend a ledger whose last entry is `tip` (from TIP_QUERY) by `entries`,
    all stamped `at`. For callers that batch their reads: they take the lock, read the tip and
    write these rows in one transaction."""
    at = at.astimezone(dt.UTC)
    seq, prev = (tip[0], tip[1]) if tip else (0, GENESIS_HASH)
    rows: list[LedgerRow] = []
    for entry in entries:
        seq += 1
        payload = canonical_json(entry.payload).decode()
        digest = entry_hash(prev, seq, at, entry.kind, entry.entity, payload)
        rows.append((seq, at, entry.kind, entry.entity, payload, prev, digest))
        prev = digest
    return rows


def write(conn: psycopg.Connection[Any], rows: Sequence[LedgerRow]) -> None:
    """Inserts rows made by `chain`, in one round trip. Not COPY, so that it may run in a
    pipeline with other statements (a record of alerts); a bulk sync pays for it (100,000
    entries: 1.1 s instead of 0.7 s)."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO ledger (seq, at, kind, entity, payload, prev_hash, hash)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            rows,
        )


def verify(conn: psycopg.Connection[Any], anchored: Mapping[int, str] | None = None) -> Verdict:
    """Recomputes the whole chain in sequence order and stops at the first entry that does not
    fit. `anchored` maps sequence numbers to the hashes their entries had when anchored: an
    entry with another hash means the chain was rewritten and re-hashed, an anchored entry
    past the end means the tail was cut off. Read-only (a server-side cursor, so memory stays
    bounded); does not commit."""
    expected = dict(anchored or {})
    confirmed = 0  # the highest anchored entry found intact so far
    checked = 0
    expected_seq = 1
    prev_hash = GENESIS_HASH
    previous_link: str | None = None  # what the previous entry linked to
    # A transaction (a savepoint inside the caller's) for the server-side cursor; its one
    # snapshot means appends made meanwhile are simply not part of this check.
    with conn.transaction(), conn.cursor(name="ledger_verify") as cur:
        cur.itersize = VERIFY_FETCH_ROWS
        cur.execute(
            "SELECT seq, at, kind, entity, payload, prev_hash, hash FROM ledger ORDER BY seq"
        )
        rows: Iterator[LedgerRow] = iter(cur)
        for seq, at, kind, entity, payload, stored_prev, stored_hash in rows:
            if seq < expected_seq:
                return _bad(checked, seq, f"entry {seq} is not part of the chain (it starts at 1)")
            if seq != expected_seq:
                if expected_seq + 1 == seq:
                    return _bad(checked, expected_seq, f"entry {expected_seq} is missing (deleted)")
                return _bad(
                    checked,
                    expected_seq,
                    f"entries {expected_seq} to {seq - 1} are missing (deleted)",
                )
            consistent = entry_hash(stored_prev, seq, at, kind, entity, payload) == stored_hash
            if stored_prev != prev_hash:
                return _broken_link(checked, seq, stored_prev, previous_link, consistent, rows)
            if not consistent:
                return _bad(
                    checked,
                    seq,
                    f"entry {seq} was modified: its content no longer matches its hash",
                )
            wanted = expected.get(seq)
            if wanted is not None:
                if wanted != stored_hash:
                    return _rehashed(checked, seq, confirmed)
                confirmed = seq
            previous_link = stored_prev
            prev_hash = stored_hash
            expected_seq += 1
            checked += 1
    tip = (checked, prev_hash) if checked else (None, None)
    furthest = max(expected, default=0)
    if furthest > checked:
        end = f"ends at entry {checked}" if checked else "is empty"
        return Verdict(
            ok=False,
            checked=checked,
            first_bad_seq=checked + 1,
            problem=f"the ledger {end} but entry {furthest} was anchored: entries "
            f"{checked + 1} to {furthest} were removed from its end",
            tip_seq=tip[0],
            tip_hash=tip[1],
            anchored_seq=confirmed or None,
        )
    return Verdict(
        ok=True, checked=checked, tip_seq=tip[0], tip_hash=tip[1], anchored_seq=confirmed or None
    )


def _bad(checked: int, seq: int, problem: str) -> Verdict:
    return Verdict(ok=False, checked=checked, first_bad_seq=seq, problem=problem)


def _rehashed(checked: int, seq: int, confirmed: int) -> Verdict:
    """Entry `seq` fits the chain but not its anchor: everything from some entry after the last
    anchor that checked out (`confirmed`) was rewritten and every hash recomputed."""
    where = (
        f"between entry {confirmed + 1} and entry {seq}"
        if confirmed
        else f"at or before entry {seq}"
    )
    return Verdict(
        ok=False,
        checked=checked,
        first_bad_seq=seq,
        problem=f"entry {seq} does not have the hash anchored for it: the chain was rewritten "
        f"{where} and every later hash recomputed",
        anchored_seq=confirmed or None,
    )


def _broken_link(
    checked: int,
    seq: int,
    link: str,
    previous_link: str | None,
    consistent: bool,
    rows: Iterator[LedgerRow],
) -> Verdict:
    """Entry `seq` does not link to the entry before it, which itself checked out. Says which
    entry is the culprit: an inserted one, a reordered pair, a renumbered one (after a removal
    or insertion) or a rewritten predecessor. `consistent`: the entry matches its own hash."""
    if seq == 1:
        return _bad(
            checked, 1, "entry 1 does not start the chain (its predecessor is not the genesis hash)"
        )
    if link == previous_link:
        return _bad(
            checked - 1,
            seq - 1,
            f"entry {seq - 1} was inserted: it and entry {seq} both follow entry {seq - 2}",
        )
    swapped_with = _entry_with_hash(rows, link)
    if swapped_with is not None:
        return _bad(
            checked,
            seq,
            f"entry {seq} is out of order: it links to entry {swapped_with}, which comes after "
            "it (entries were reordered)",
        )
    if not consistent:
        return _bad(
            checked,
            seq,
            f"entry {seq} was modified or renumbered: it matches neither its predecessor nor "
            "its own hash (an entry before it may have been removed)",
        )
    return _bad(
        checked - 1,
        seq - 1,
        f"entry {seq - 1} was rewritten together with its hash: entry {seq} links to a "
        "different predecessor",
    )


def _entry_with_hash(rows: Iterator[LedgerRow], wanted: str) -> int | None:
    """Reads a few entries ahead for one whose hash is `wanted`: an entry that links to a
    later one was swapped with it. Bounded so a broken ledger costs no second full scan."""
    for _, row in zip(range(LOOKAHEAD_ROWS), rows, strict=False):
        if row[6] == wanted:
            return row[0]
    return None
