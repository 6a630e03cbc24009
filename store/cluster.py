"""Partition ownership of the cluster mode (issue 23, migration 0015), in PostgreSQL.

A worker owns a partition while it holds the partition's session-level advisory lock on its
lease connection (one connection per worker, `LeaseConnection`). A worker killed outright loses
its connection and with it every lock at once; a stalled one (SIGSTOP, a long pause) stops
talking on it, and the server closes it after `idle_session_timeout` (the lease), so its locks
free up too. Taking a partition bumps its epoch; every write the owner makes for the partition
runs `commit_position` in the same transaction, which fails (`Fenced`) once the epoch moved
on, so a stalled old owner that wakes up cannot commit after the new one took over.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from store.pool import CONNECT_TIMEOUT_S, session_options

# The advisory lock space of partitions: (this key, partition number). Picked once; other
# advisory locks of the schema use single bigint keys (store/migrate.py), a different space.
LOCK_KEY = 0x6377  # "cw"
# The periodic jobs' runner (`JobsLease`): one lock of its own space.
JOBS_LOCK = (0x636A, 0)  # "cj"
JOBS_SESSION = "clausewatch-jobs "  # the application name of the lease session, before the owner


class Fenced(Exception):
    """The partition was taken over (its epoch moved on): this worker may not write for it.
    Not a psycopg.Error, so the pipeline does not retry it: the worker stops instead."""


@dataclass(frozen=True, slots=True)
class Claim:
    partition: int
    epoch: int
    stream_seq: int  # the last stream sequence committed: consume from the one after
    # Taken from an owner that did not release it (died, stalled, lost its lease): a failover.
    failed_over: bool = False


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    partition: int
    owner: str | None
    epoch: int
    stream_seq: int
    claimed_at: dt.datetime | None
    committed_at: dt.datetime | None
    owner_alive: bool


@functools.cache
def worker_id() -> str:
    """A name for this process, new at every start: host, pid and a random tail. One per
    process, so its partitions and the periodic jobs' lease show the same node."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def with_session_timeouts(database_url: str, *, idle_in_transaction_s: float) -> str:
    """`database_url` whose sessions end a transaction left open longer than the given time: a
    worker stalled inside a flush would otherwise hold the partition's row lock, and the
    takeover's epoch bump would wait for it."""
    options = session_options(database_url)
    options += f" -c idle_in_transaction_session_timeout={round(idle_in_transaction_s * 1000)}"
    return make_conninfo(database_url, options=options)


def init_partitions(conn: psycopg.Connection[Any], partitions: int) -> None:
    """Creates the rows of `partitions` partitions once; the number cannot change afterwards
    (every site's partition is a hash modulo it), so another number raises ValueError."""
    if not 1 <= partitions <= 4096:
        raise ValueError("partitions must be between 1 and 4096")
    with conn.transaction():
        conn.execute("LOCK TABLE cluster_partitions IN EXCLUSIVE MODE")
        row = conn.execute("SELECT count(*) FROM cluster_partitions").fetchone()
        existing = 0 if row is None else int(row[0])
        if existing == 0:
            conn.execute(
                "INSERT INTO cluster_partitions (partition) SELECT generate_series(0, %s - 1)",
                (partitions,),
            )
        elif existing != partitions:
            raise ValueError(
                f"the cluster has {existing} partitions; it cannot be run with {partitions}"
            )


def never_taken(conn: psycopg.Connection[Any]) -> list[int]:
    """Partitions no worker has taken yet (epoch 0)."""
    rows = conn.execute(
        "SELECT partition FROM cluster_partitions WHERE epoch = 0 ORDER BY partition"
    ).fetchall()
    return [int(number) for (number,) in rows]


class LeaseConnection:
    """A worker's own connection: its heartbeat and the advisory locks of its partitions. The
    server closes it when the worker says nothing for `lease_s` (idle_session_timeout), which
    frees the locks of a stalled worker; `heartbeat` must run more often than that."""

    def __init__(self, database_url: str, owner: str, lease_s: float) -> None:
        self.owner = owner
        options = session_options(database_url) + (
            f" -c idle_session_timeout={round(lease_s * 1000)}"
        )
        self.conn: psycopg.Connection[Any] = psycopg.connect(
            database_url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_S,
            options=options,
            application_name=f"clausewatch-lease {owner}"[:63],
        )
        self.conn.execute(
            "INSERT INTO cluster_workers (owner, host, pid, backend_pid)"
            " VALUES (%s, %s, %s, pg_backend_pid())",
            (owner, socket.gethostname()[:200], os.getpid()),
        )

    def heartbeat(self) -> None:
        """Raises psycopg.Error when the lease connection is gone (every lock with it)."""
        self.conn.execute(
            "UPDATE cluster_workers SET heartbeat_at = now() WHERE owner = %s", (self.owner,)
        )

    def live_workers(self, lease_s: float) -> int:
        """Workers with a recent heartbeat whose lease connection is still there: a killed
        worker's share goes to the others as soon as PostgreSQL sees its connection close."""
        row = self.conn.execute(
            "SELECT count(*) FROM cluster_workers"
            " WHERE heartbeat_at > now() - make_interval(secs => %s)"
            " AND backend_pid IN (SELECT pid FROM pg_stat_activity)",
            (lease_s,),
        ).fetchone()
        return 1 if row is None else max(1, int(row[0]))

    def try_claim(self, partition: int) -> Claim | None:
        """Takes `partition` when no live worker holds it: its lock, then a new epoch (in one
        transaction with reading the committed position). None when another worker holds it."""
        row = self.conn.execute(
            "SELECT pg_try_advisory_lock(%s, %s)", (LOCK_KEY, partition)
        ).fetchone()
        if row is None or not row[0]:
            return None
        with self.conn.transaction():
            claimed = self.conn.execute(
                "UPDATE cluster_partitions p SET owner = %s, epoch = p.epoch + 1,"
                " claimed_at = now() FROM (SELECT partition, owner FROM cluster_partitions"
                " WHERE partition = %s FOR UPDATE) previous"
                " WHERE p.partition = previous.partition"
                " RETURNING p.epoch, p.stream_seq, previous.owner",
                (self.owner, partition),
            ).fetchone()
        if claimed is None:
            self.unlock(partition)
            raise ValueError(f"partition {partition} does not exist (clausewatch cluster init)")
        return Claim(partition, int(claimed[0]), int(claimed[1]), claimed[2] is not None)

    def release(self, claim: Claim) -> None:
        """After the partition's last commit: no owner, and its lock free for the next one."""
        self.conn.execute(
            "UPDATE cluster_partitions SET owner = NULL WHERE partition = %s AND epoch = %s",
            (claim.partition, claim.epoch),
        )
        self.unlock(claim.partition)

    def unlock(self, partition: int) -> None:
        self.conn.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_KEY, partition))

    def unowned(self) -> list[int]:
        """Partitions whose advisory lock nobody holds (released, or their owner is gone)."""
        rows = self.conn.execute(
            "SELECT p.partition FROM cluster_partitions p WHERE NOT EXISTS ("
            " SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND l.classid = %s AND l.objid = p.partition AND l.objsubid = 2)"
            " ORDER BY p.partition",
            (LOCK_KEY,),
        ).fetchall()
        return [int(partition) for (partition,) in rows]

    def close(self) -> None:
        """Ends the lease: every lock goes with the connection."""
        # The connection may be gone already: so are the locks then.
        with contextlib.suppress(psycopg.Error):
            self.conn.execute("DELETE FROM cluster_workers WHERE owner = %s", (self.owner,))
        self.conn.close()


class JobsLease:
    """Which node of the cluster runs the periodic jobs (reports, escalations, retention,
    TimescaleDB jobs...): the one holding JOBS_LOCK, a session advisory lock, on a connection
    of its own that the server closes when the node says nothing for `lease_s`
    (idle_session_timeout), as `LeaseConnection` does for partitions. `refresh` must run more
    often than that: it keeps the lease or, when free (the runner died or stalled), takes it;
    `holds` before each job says whether the lease is still this node's, never taking it."""

    def __init__(self, database_url: str, owner: str, lease_s: float) -> None:
        self.database_url = database_url
        self.owner = owner
        self.lease_s = lease_s
        self.conn: psycopg.Connection[Any] | None = None
        self.held = False
        self._lock = threading.Lock()  # the scheduler's threads share it

    def refresh(self) -> bool:
        """Whether this node holds the lease now (taking it when it is free). A lost
        connection (the lock went with it) is made again at the next turn."""
        with self._lock:
            return self._refresh()

    def holds(self) -> bool:
        """Whether this node still holds the lease (a stalled node that woke up learns here
        that the server closed its connection, and the lock with it)."""
        with self._lock:
            if not self.held or self.conn is None:
                return False
            try:
                self.conn.execute("SELECT 1")
            except psycopg.Error:
                self._close()
            return self.held

    def _refresh(self) -> bool:
        try:
            if self.conn is None:
                self.held = False
                self.conn = psycopg.connect(
                    self.database_url,
                    autocommit=True,
                    connect_timeout=CONNECT_TIMEOUT_S,
                    options=session_options(self.database_url)
                    + f" -c idle_session_timeout={round(self.lease_s * 1000)}",
                    application_name=f"{JOBS_SESSION}{self.owner}"[:63],
                )
            if self.held:  # a word on the connection: the server keeps it, and the lock
                self.conn.execute("SELECT 1")
            else:
                row = self.conn.execute("SELECT pg_try_advisory_lock(%s, %s)", JOBS_LOCK).fetchone()
                self.held = row is not None and bool(row[0])
            return self.held
        except psycopg.Error:
            self._close()
            return False

    def close(self) -> None:
        """Gives the lease up (the lock goes with the connection)."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        self.held = False
        if self.conn is not None:
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
            self.conn = None


def jobs_runner(conn: psycopg.Connection[Any]) -> str | None:
    """The application name of the session holding JOBS_LOCK (JOBS_SESSION + owner)."""
    row = conn.execute(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        JOBS_LOCK,
    ).fetchone()
    return None if row is None else str(row[0])


def commit_position(
    conn: psycopg.Connection[Any], partition: int, epoch: int, stream_seq: int | None
) -> None:
    """Inside a write transaction for `partition`: records its stream position (when the
    transaction takes messages) and fails with `Fenced` when the partition's epoch is no longer
    `epoch`. The row lock makes it wait for a takeover in progress, then see its epoch."""
    row = conn.execute(
        "UPDATE cluster_partitions SET stream_seq = greatest(stream_seq, coalesce(%s, 0)),"
        " committed_at = CASE WHEN %s::bigint IS NULL THEN committed_at ELSE now() END"
        " WHERE partition = %s AND epoch = %s RETURNING 1",
        (stream_seq, stream_seq, partition, epoch),
    ).fetchone()
    if row is None:
        raise Fenced(f"partition {partition} was taken over (epoch {epoch} is not current)")


def partition_status(conn: psycopg.Connection[Any], lease_s: float) -> list[PartitionStatus]:
    """Every partition with its owner, epoch and committed position; `owner_alive` when the
    owner's heartbeat is within `lease_s`."""
    rows = conn.execute(
        "SELECT p.partition, p.owner, p.epoch, p.stream_seq, p.claimed_at, p.committed_at,"
        " coalesce(w.heartbeat_at > now() - make_interval(secs => %s), false)"
        " FROM cluster_partitions p LEFT JOIN cluster_workers w ON w.owner = p.owner"
        " ORDER BY p.partition",
        (lease_s,),
    ).fetchall()
    return [PartitionStatus(*row) for row in rows]


def forget_dead_workers(conn: psycopg.Connection[Any], older_than_s: float) -> int:
    """Removes workers whose heartbeat stopped long ago (so the status stays readable)."""
    return conn.execute(
        "DELETE FROM cluster_workers WHERE heartbeat_at < now() - make_interval(secs => %s)",
        (older_than_s,),
    ).rowcount
