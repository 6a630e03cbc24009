"""Partition ownership of the cluster mode (store/cluster.py) against real PostgreSQL: one
owner per partition, a takeover bumps the epoch, and the old owner's commit then fails, whether
it died (its connection gone) or stalled (its lease connection closed by the server)."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import psycopg.errors
import pytest

from store.cluster import (
    Claim,
    Fenced,
    LeaseConnection,
    commit_position,
    init_partitions,
    partition_status,
    with_session_timeouts,
)
from store.roles import as_role
from tests.support import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster_url(store_url: str) -> str:
    with psycopg.connect(store_url) as conn:
        init_partitions(conn, 8)
    return as_role(store_url, "clausewatch_service")


def commit(url: str, partition: int, epoch: int, seq: int | None) -> None:
    with psycopg.connect(url) as conn, conn.transaction():
        commit_position(conn, partition, epoch, seq)


def test_the_partition_count_is_fixed_once(store_url: str) -> None:
    with psycopg.connect(store_url) as conn:
        init_partitions(conn, 8)
        init_partitions(conn, 8)  # again: nothing changes
        with pytest.raises(ValueError, match="8 partitions; it cannot be run with 16"):
            init_partitions(conn, 16)
        assert [s.partition for s in partition_status(conn, 3)] == list(range(8))


def test_one_owner_at_a_time_and_a_dead_owners_commit_fails(cluster_url: str) -> None:
    a = LeaseConnection(cluster_url, "a", 30)
    b = LeaseConnection(cluster_url, "b", 30)
    try:
        claim = a.try_claim(3)
        assert claim is not None and (claim.epoch, claim.stream_seq) == (1, 0)
        assert not claim.failed_over, "never owned before"
        assert b.try_claim(3) is None, "a holds its lock"
        assert 3 not in b.unowned()
        commit(cluster_url, 3, 1, 41)
        commit(cluster_url, 3, 1, None)  # a flush without messages keeps the position
        assert b.live_workers(30) == 2
        a.conn.close()  # a dies: its locks go with its connection
        # and it no longer counts, though its last heartbeat is recent: b's share grows now.
        wait_for(lambda: b.live_workers(30) == 1, 10, "a no longer counted live")
        taken = wait_for(lambda: b.try_claim(3), 10, "b takes partition 3")
        assert (taken.epoch, taken.stream_seq, taken.failed_over) == (2, 41, True)
        with pytest.raises(Fenced):
            commit(cluster_url, 3, 1, 42)
        commit(cluster_url, 3, 2, 42)
        # Handed over (released after its last commit), it is taken with no failover.
        b.release(taken)
        handed = b.try_claim(3)
        assert handed is not None and (handed.epoch, handed.failed_over) == (3, False)
        b.release(handed)
        assert b.try_claim(3) == Claim(3, 4, 42, False)
        commit(cluster_url, 3, 4, 42)
        with psycopg.connect(cluster_url) as conn:
            [status] = [s for s in partition_status(conn, 30) if s.partition == 3]
        assert (status.owner, status.epoch, status.stream_seq, status.owner_alive) == (
            "b",
            4,
            42,
            True,
        )
    finally:
        b.close()


def test_a_stalled_owner_loses_its_lease_and_its_late_commit_fails(cluster_url: str) -> None:
    lease_s = 1.0
    stalled = LeaseConnection(cluster_url, "stalled", lease_s)
    other = LeaseConnection(cluster_url, "other", 30)
    try:
        claim = stalled.try_claim(5)
        assert claim is not None
        # The stalled owner is inside a flush that holds the partition's row when it stops.
        url = with_session_timeouts(cluster_url, idle_in_transaction_s=lease_s)
        flush: psycopg.Connection[Any] = psycopg.connect(url)
        commit_position(flush, 5, claim.epoch, 10)
        started = time.monotonic()
        # Nothing is said on its lease connection: the server closes it, and the lock is free.
        taken = wait_for(lambda: other.try_claim(5), 10, "the other worker takes partition 5")
        assert time.monotonic() - started < lease_s + 2
        assert taken.epoch == claim.epoch + 1
        assert taken.stream_seq == 0, "the stalled flush never committed"
        with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):
            flush.commit()  # the server ended the transaction it left open
        flush.close()
        with pytest.raises(Fenced):
            commit(cluster_url, 5, claim.epoch, 11)
        with pytest.raises(psycopg.OperationalError):
            stalled.heartbeat()
    finally:
        other.close()
        stalled.close()


def test_a_commit_racing_a_takeover_waits_for_it_then_fails(cluster_url: str) -> None:
    owner = LeaseConnection(cluster_url, "owner", 30)
    claim = owner.try_claim(1)
    assert claim is not None
    owner.conn.close()
    taker = LeaseConnection(cluster_url, "taker", 30)
    try:
        with psycopg.connect(cluster_url) as bump:
            # The takeover's epoch bump, not committed yet.
            bump.execute("UPDATE cluster_partitions SET epoch = epoch + 1 WHERE partition = 1")
            outcome: list[BaseException | None] = []

            def late_commit() -> None:
                try:
                    commit(cluster_url, 1, claim.epoch, 5)
                    outcome.append(None)
                except BaseException as exc:
                    outcome.append(exc)

            thread = threading.Thread(target=late_commit)
            thread.start()
            thread.join(0.5)
            assert thread.is_alive(), "the old owner's commit waits for the row"
            bump.commit()
            thread.join(10)
        assert len(outcome) == 1 and isinstance(outcome[0], Fenced)
    finally:
        taker.close()
