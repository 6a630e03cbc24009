"""The gateway's store-and-forward buffer: SQLite in WAL mode.

Every reading is written here before anything is sent, together with its per-device `seq`, in one
transaction, so a gateway killed at any instant restarts with every reading it stamped and a
seq that continues where it stopped. A row is deleted only once the broker acknowledged the
message that carried it. While the broker is away the buffer grows up to `cap` rows; past that
the oldest rows are dropped and counted (`dropped`), never the newest.

Each thread gets its own connection (sqlite3 connections are not shared across threads); WAL
lets the forwarder read while samplers write.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: the order of the readings
    device  TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    payload BLOB    NOT NULL                    -- the SPEC §2 reading object, UTF-8 JSON
);
CREATE TABLE IF NOT EXISTS sequences (device TEXT PRIMARY KEY, last_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class Row:
    id: int
    device: str
    seq: int
    payload: bytes


class Buffer:
    def __init__(self, path: Path, cap: int) -> None:
        self.path = path
        self.cap = cap
        self._local = threading.local()
        self._write_lock = (
            threading.Lock()
        )  # one writer at a time: seq allocation is read-modify-write
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._conn()
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(SCHEMA)
        self._count: int = conn.execute("SELECT count(*) FROM readings").fetchone()[0]

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            # NORMAL in WAL mode survives a crash of the process (kill -9); only a power loss
            # can lose the last transactions, which FULL would cost an fsync per reading for.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    def append(self, device: str, encode: Callable[[int], bytes]) -> int:
        """Stores one reading of `device` and returns its seq. `encode(seq)` makes the payload."""
        with self._write_lock:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                found = conn.execute(
                    "SELECT last_seq FROM sequences WHERE device = ?", (device,)
                ).fetchone()
                seq = (found[0] if found else 0) + 1
                conn.execute(
                    "INSERT INTO sequences (device, last_seq) VALUES (?, ?) "
                    "ON CONFLICT (device) DO UPDATE SET last_seq = excluded.last_seq",
                    (device, seq),
                )
                conn.execute(
                    "INSERT INTO readings (device, seq, payload) VALUES (?, ?, ?)",
                    (device, seq, encode(seq)),
                )
                overflow = self._count + 1 - self.cap
                if overflow > 0:
                    conn.execute(
                        "DELETE FROM readings WHERE id IN "
                        "(SELECT id FROM readings ORDER BY id LIMIT ?)",
                        (overflow,),
                    )
                    conn.execute(
                        "INSERT INTO counters (name, value) VALUES ('dropped', ?) "
                        "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                        (overflow,),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._count += 1 - max(overflow, 0)
            return seq

    def oldest(self, limit: int, skip_devices: Collection[str] = ()) -> list[Row]:
        """Up to `limit` rows, oldest first, leaving out the devices in `skip_devices` (those
        with a batch in flight)."""
        marks = ",".join("?" * len(skip_devices))
        rows = self._conn().execute(
            "SELECT id, device, seq, payload FROM readings"
            f" WHERE device NOT IN ({marks}) ORDER BY id LIMIT ?",
            (*skip_devices, limit),
        )
        return [Row(*row) for row in rows]

    def delete(self, ids: Sequence[int]) -> None:
        """Forgets acknowledged rows (ids already dropped by the cap are ignored)."""
        if not ids:
            return
        with self._write_lock:
            conn = self._conn()
            deleted = 0
            for chunk in _chunks(ids, 500):  # SQLite's bound-parameter limit is 999 on old builds
                marks = ",".join("?" * len(chunk))
                deleted += conn.execute(
                    f"DELETE FROM readings WHERE id IN ({marks})", chunk
                ).rowcount
            self._count -= deleted

    def pending(self) -> int:
        return self._count

    def dropped(self) -> int:
        found = self._conn().execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
        return int(found[0]) if found else 0

    def last_seq(self, device: str) -> int:
        found = (
            self._conn()
            .execute("SELECT last_seq FROM sequences WHERE device = ?", (device,))
            .fetchone()
        )
        return int(found[0]) if found else 0

    def close(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _chunks(items: Sequence[int], size: int) -> Iterable[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
