"""The checkpoint writer on a real database: the open runs it writes are those stored, whether
a part's runs changed, stayed as they were, or belong to a save the database refused."""

from __future__ import annotations

import weakref
from typing import Any

import psycopg
import pytest

from ingest.checkpoint_writer import CheckpointJob, CheckpointWriter, Courtesy
from store.pool import make_pool

pytestmark = pytest.mark.integration

COMPLIANT = {"run_status": "compliant", "run_start": 100.0}
VIOLATING = {"run_status": "violating", "run_start": 150.0}


def job(full: bool, **parts: dict[str, Any]) -> CheckpointJob:
    """A checkpoint of site s1 whose parts hold one instance each (clause c, version 1)."""
    return CheckpointJob(
        {
            "s1": {
                "full": full,
                "clock": 200.0,
                "parts": {
                    f"device:{name}": {"instances": {f"c|1|room|{name}": state}}
                    for name, state in parts.items()
                },
            }
        },
        replay_after=1.0,
    )


def stored_runs(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT part, status, since FROM engine_open_runs WHERE site = 's1' ORDER BY part"
        ).fetchall()


def save(writer: CheckpointWriter, checkpoint: CheckpointJob) -> None:
    writer.submit(checkpoint)
    assert writer.wait_idle(30)


def test_runs_left_as_they_were_are_not_written_again_and_changed_ones_are(
    fresh_database_url: str,
) -> None:
    refuse = {"now": False}

    def fence(conn: psycopg.Connection[Any]) -> None:
        if refuse["now"]:
            conn.execute("SELECT 1 / 0")  # refused: the whole save rolls back

    with make_pool(fresh_database_url) as pool:
        writer = CheckpointWriter(pool, fence=fence)
        writer.start()
        try:
            save(writer, job(True, a=COMPLIANT, b=COMPLIANT))
            assert stored_runs(fresh_database_url) == [
                ("device:a", "compliant", 100.0),
                ("device:b", "compliant", 100.0),
            ]
            # a unchanged, b changed: only b is written.
            with psycopg.connect(fresh_database_url) as conn:
                conn.execute("UPDATE engine_open_runs SET since = 99.0 WHERE part = 'device:a'")
                conn.commit()
            save(writer, job(False, a=COMPLIANT, b=VIOLATING))
            assert stored_runs(fresh_database_url) == [
                ("device:a", "compliant", 99.0),  # not written again (the marker stays)
                ("device:b", "violating", 150.0),
            ]
            # A save the database refuses leaves nothing behind, not even in the writer's memory
            # of what is stored: the same runs are written by the next save.
            refuse["now"] = True
            save(writer, job(False, a=VIOLATING))
            assert writer.take_dropped()
            assert stored_runs(fresh_database_url)[0] == ("device:a", "compliant", 99.0)
            refuse["now"] = False
            save(writer, job(False, a=VIOLATING))
            assert stored_runs(fresh_database_url) == [
                ("device:a", "violating", 150.0),
                ("device:b", "violating", 150.0),
            ]
            # A part whose instance left its run (not started) loses its row.
            save(writer, job(False, b={"run_status": None, "run_start": None}))
            assert stored_runs(fresh_database_url) == [("device:a", "violating", 150.0)]
            # A whole checkpoint (a new engine) writes every part's runs, whatever was stored.
            with psycopg.connect(fresh_database_url) as conn:
                conn.execute("UPDATE engine_open_runs SET since = 99.0")
                conn.commit()
            save(writer, job(True, a=VIOLATING, b=COMPLIANT))
            assert stored_runs(fresh_database_url) == [
                ("device:a", "violating", 150.0),
                ("device:b", "compliant", 100.0),
            ]
        finally:
            writer.stop(30)


def test_a_saved_checkpoint_is_let_go_at_once(fresh_database_url: str) -> None:
    """The parts of a checkpoint (0.4 KiB a device, encoded) are not held from one save to the
    next: the writer waiting for its next job keeps no reference to the last (issue 24)."""
    with make_pool(fresh_database_url) as pool:
        writer = CheckpointWriter(pool)
        writer.start()
        try:
            saved = job(True, a=COMPLIANT)
            gone = weakref.ref(saved)
            save(writer, saved)
            del saved
            assert gone() is None
        finally:
            writer.stop(30)


def test_courtesy_hands_the_lock_over_after_each_stretch_of_work() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    courtesy = Courtesy(every=0.001, pause=0.0001, clock=lambda: now[0], sleep=sleep)
    courtesy()
    now[0] += 0.0009
    courtesy()
    assert slept == []  # less than a stretch of work: no pause
    now[0] += 0.0002
    courtesy()
    assert slept == [0.0001]
    now[0] += 0.0005
    courtesy()
    assert slept == [0.0001]  # the stretch counts from the end of the last pause
    now[0] += 0.0005
    courtesy()
    assert slept == [0.0001, 0.0001]
