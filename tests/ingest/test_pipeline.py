"""The pipeline on a real PostgreSQL, fed through its ingress queue (no broker needed here):
messages are acknowledged once their rows are committed, a restarted pipeline replays what was
stored after its checkpoint, a checkpoint the database refuses is dropped and the next one is
whole, and an engine failure on one input neither stops ingestion nor loses the reading."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from clausewatch.service import sync_registry
from config.files import LoadedConfig
from ingest.checkpoint_writer import CHECKPOINT_FAILURES
from ingest.mqtt import IngressQueue, ReceivedMessage
from ingest.pipeline import ENGINE_ERRORS, Pipeline
from ingest.retry import MAX_REJECTED_ATTEMPTS
from rules.clause import Schedule
from rules.engine import BindingError
from store.checkpoints import load_checkpoint
from store.migrate import migrate
from store.partitions import ensure_partitions
from store.pool import make_pool
from tests.ingest.test_pipeline_integration import CLAUSES, SITE
from tests.support import config_pipeline

pytestmark = pytest.mark.integration

NOW = time.time()


def reading(seq: int, value: float = 24.0) -> ReceivedMessage:
    body = {"ts": int((NOW - 60 + seq) * 1000), "seq": seq, "metrics": {"temperature": value}}
    return ReceivedMessage("cw/t-hq/th-a/telemetry", orjson.dumps(body), NOW, (1, seq, 1))


def count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
    return int(row[0]) if row else 0


@pytest.fixture
def run_pipeline(
    fresh_database_url: str,
) -> Iterator[Callable[..., tuple[Pipeline, IngressQueue]]]:
    migrate(fresh_database_url)
    config = LoadedConfig(sites={"t-hq": SITE}, clause_files={Path("test.yaml"): CLAUSES})
    sync_registry(fresh_database_url, config)
    pool = make_pool(fresh_database_url)
    started: list[Pipeline] = []

    def start(
        ack: Callable[[list[tuple[int, int, int]]], None],
        checkpoint_interval: float = 0.1,
        **options: Any,
    ) -> tuple[Pipeline, IngressQueue]:
        inbox = IngressQueue(100)
        pipeline = config_pipeline(
            pool,
            config,
            inbox,
            ack,
            lateness=0,
            flush_interval=0.05,
            clock="data",
            checkpoint_interval=checkpoint_interval,
            **options,
        )
        pipeline.start()
        started.append(pipeline)
        return pipeline, inbox

    yield start
    for pipeline in started:
        pipeline.stop()
    pool.close()


def wait_for(probe: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return value


def test_messages_are_acknowledged_only_after_their_rows_are_committed(
    run_pipeline: Any, fresh_database_url: str
) -> None:
    seen_at_ack: list[tuple[int, int]] = []

    def ack(tokens: list[tuple[int, int, int]]) -> None:
        # Another connection must already see every row of the acknowledged messages.
        seen_at_ack.append((len(tokens), count(fresh_database_url)))

    _, inbox = run_pipeline(ack)
    for seq in range(1, 6):
        inbox.put(reading(seq), threading.Event())
    wait_for(lambda: sum(n for n, _ in seen_at_ack) == 5)
    committed = 0
    for acked, stored in seen_at_ack:
        committed += acked
        assert stored >= committed


def test_a_restarted_pipeline_replays_what_was_stored_after_its_checkpoint(
    run_pipeline: Any, fresh_database_url: str
) -> None:
    acked: list[tuple[int, int, int]] = []
    first, inbox = run_pipeline(acked.extend, checkpoint_interval=3600)
    for seq in range(1, 6):
        inbox.put(reading(seq), threading.Event())
    wait_for(lambda: len(acked) == 5)  # committed and acknowledged, no checkpoint since start
    with psycopg.connect(fresh_database_url) as conn:
        checkpoint = load_checkpoint(conn, "t-hq")
    assert checkpoint is not None
    assert checkpoint.parts["device:th-a"]["device"]["seen_seqs"] == [[], []]

    # A second pipeline on the same database stands for the first one restarted after a crash.
    second, _ = run_pipeline(lambda tokens: None)
    parts = second.engines["t-hq"].snapshot()["parts"]
    seqs, _ = parts["device:th-a"]["device"]["seen_seqs"]
    assert set(seqs) == {1, 2, 3, 4, 5}
    assert first.alive


class _FailingOnSeq2:
    """A site engine whose observe() fails for the reading with seq 2."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def observe(self, device: str, ts: float, seq: int | None, metrics: Any) -> None:
        if seq == 2:
            raise RuntimeError("engine bug")
        self._engine.observe(device, ts, seq, metrics)


def test_an_engine_failure_neither_stops_ingestion_nor_loses_the_reading(
    run_pipeline: Any, fresh_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    acked: list[tuple[int, int, int]] = []
    pipeline, inbox = run_pipeline(acked.extend)
    # The engine is replaced, not patched: a compiled (mypyc) SiteEngine has no instance
    # dictionary to hold a patched method.
    monkeypatch.setitem(pipeline.engines, "t-hq", _FailingOnSeq2(pipeline.engines["t-hq"]))
    errors_before = ENGINE_ERRORS._value.get()
    for seq in (1, 2, 3):
        inbox.put(reading(seq), threading.Event())
    wait_for(lambda: len(acked) == 3)
    assert count(fresh_database_url) == 3
    assert ENGINE_ERRORS._value.get() == errors_before + 1
    assert pipeline.alive


REFUSE_CHECKPOINTS = """
CREATE TABLE refuse_checkpoints (reason text);
CREATE FUNCTION refuse_checkpoint() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM refuse_checkpoints) THEN
        RAISE EXCEPTION 'checkpoint refused by the test';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_checkpoint BEFORE INSERT OR UPDATE ON engine_checkpoints
    FOR EACH ROW EXECUTE FUNCTION refuse_checkpoint();
INSERT INTO refuse_checkpoints VALUES ('on');
"""


def test_a_refused_checkpoint_is_dropped_and_the_next_one_is_whole(
    run_pipeline: Any, fresh_database_url: str
) -> None:
    acked: list[tuple[int, int, int]] = []
    _, inbox = run_pipeline(acked.extend)
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        conn.execute(REFUSE_CHECKPOINTS)
    failures_before = CHECKPOINT_FAILURES._value.get()
    for seq in (1, 2, 3):
        inbox.put(reading(seq), threading.Event())
    # Acknowledged once committed: a checkpoint is not waited for.
    wait_for(lambda: len(acked) == 3)
    # Refused (not unreachable): given up after MAX_REJECTED_ATTEMPTS.
    wait_for(lambda: CHECKPOINT_FAILURES._value.get() >= failures_before + MAX_REJECTED_ATTEMPTS)

    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM refuse_checkpoints")
    # No new message needed: the dropped checkpoint makes the next one due at once, whole.

    def stored_seqs() -> set[int]:
        with psycopg.connect(fresh_database_url) as conn:
            checkpoint = load_checkpoint(conn, "t-hq")
        assert checkpoint is not None
        if not checkpoint.state["full"] or "device:th-a" not in checkpoint.parts:
            return set()
        return set(checkpoint.parts["device:th-a"]["device"]["seen_seqs"][0])

    assert wait_for(lambda: {1, 2, 3} <= stored_seqs())


def test_a_requested_checkpoint_is_saved_whatever_the_spacing(
    run_pipeline: Any, fresh_database_url: str
) -> None:
    acked: list[tuple[int, int, int]] = []
    pipeline, inbox = run_pipeline(acked.extend, checkpoint_interval=3600, batch_rows=1)
    for seq in (1, 2):
        inbox.put(reading(seq), threading.Event())
    wait_for(lambda: len(acked) == 2)
    saved = pipeline.checkpoints_saved
    pipeline.request_checkpoint()
    wait_for(lambda: pipeline.checkpoints_saved > saved)
    with psycopg.connect(fresh_database_url) as conn:
        checkpoint = load_checkpoint(conn, "t-hq")
    assert checkpoint is not None
    assert set(checkpoint.parts["device:th-a"]["device"]["seen_seqs"][0]) == {1, 2}


def test_a_requested_checkpoint_with_nothing_new_to_save_settles(
    run_pipeline: Any, fresh_database_url: str
) -> None:
    """A caller waits for `checkpoint_pending` to clear after `request_checkpoint()`: when an
    earlier checkpoint already saved everything (nothing changed since), the request is met by
    what is stored, not left waiting for input that may never come (bench/scale.py hung so)."""
    acked: list[tuple[int, int, int]] = []
    pipeline, inbox = run_pipeline(acked.extend, checkpoint_interval=3600, batch_rows=1)
    inbox.put(reading(1), threading.Event())
    wait_for(lambda: len(acked) == 1)
    pipeline.request_checkpoint()
    assert pipeline.checkpoint_pending
    assert wait_for(lambda: not pipeline.checkpoint_pending)
    saved = pipeline.checkpoints_saved
    pipeline.request_checkpoint()  # nothing committed since: what is stored is current
    assert wait_for(lambda: not pipeline.checkpoint_pending)
    assert pipeline.checkpoints_saved == saved
    inbox.put(reading(2), threading.Event())
    wait_for(lambda: len(acked) == 2)
    pipeline.request_checkpoint()
    assert wait_for(lambda: not pipeline.checkpoint_pending)
    assert pipeline.checkpoints_saved == saved + 1
    with psycopg.connect(fresh_database_url) as conn:
        checkpoint = load_checkpoint(conn, "t-hq")
    assert checkpoint is not None
    assert set(checkpoint.parts["device:th-a"]["device"]["seen_seqs"][0]) == {1, 2}


def test_a_closed_pipeline_lets_go_of_its_engines(
    run_pipeline: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A pipeline dropped while its process goes on (a partition handed over): its engines,
    restored and frozen out of the collector, let go of their state."""
    acked: list[tuple[int, int, int]] = []
    pipeline, inbox = run_pipeline(acked.extend)
    inbox.put(reading(1), threading.Event())
    wait_for(lambda: len(acked) == 1)
    engine = pipeline.engines["t-hq"]
    pipeline.close()  # still running: its engines are left as they are
    assert pipeline.engines["t-hq"] is engine and engine.bindings()
    assert "still running" in caplog.text
    pipeline.stop()
    pipeline.close()
    assert pipeline.engines == {}
    assert engine.bindings() == []


def test_a_new_clause_set_switches_the_engines_keeping_their_state(
    run_pipeline: Any, fresh_database_url: str
) -> None:
    """A clause revision published while running (issue 21): the engines are restored from
    their own state with the new set; a set a site cannot bind leaves them as they were."""
    acked: list[tuple[int, int, int]] = []
    pipeline, inbox = run_pipeline(acked.extend)
    for seq in (1, 2, 3):
        inbox.put(reading(seq), threading.Event())
    wait_for(lambda: len(acked) == 3)
    before = pipeline.engines["t-hq"]
    [clause] = CLAUSES.clauses

    unbindable = clause.model_copy(
        update={"version": 2, "schedule": Schedule(season="no-such-season")}
    )
    with pytest.raises(BindingError, match="no-such-season"):
        pipeline.request_configuration([clause, unbindable])
    for seq in (4, 5):
        inbox.put(reading(seq), threading.Event())
        wait_for(lambda: len(acked) == seq)  # noqa: B023 (waited for in this iteration)
    assert pipeline.alive and pipeline.engines["t-hq"] is before
    assert pipeline.clauses == (clause,)

    newer = clause.model_copy(update={"id": "temp.cooling.min.v2", "title": "another"})
    pipeline.request_configuration([clause, newer])
    wait_for(lambda: pipeline.clauses == (clause, newer))
    after = pipeline.engines["t-hq"]
    assert after is not before
    seqs, _ = after.snapshot()["parts"]["device:th-a"]["device"]["seen_seqs"]
    assert set(seqs) == {1, 2, 3, 4, 5}  # what the device sent is remembered across the switch
    assert {ref.clause_id for ref, _ in after.bindings()} == {clause.id, newer.id}
    # The replaced engine let go of its state: frozen out of the collector, it would otherwise
    # never be freed.
    assert before.bindings() == []


# Holds the commit of the readings with seq 1 inside its transaction, until the test lets go of
# advisory lock 4242 (a row trigger of the readings waits for it).
HOLD_SEQ_1 = """
CREATE FUNCTION hold_seq_1() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.seq = 1 THEN
        PERFORM pg_advisory_xact_lock_shared(4242);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER hold_seq_1 BEFORE INSERT ON readings
    FOR EACH ROW EXECUTE FUNCTION hold_seq_1();
"""


@pytest.fixture
def held_seq_1(run_pipeline: Any, fresh_database_url: str) -> Iterator[Callable[[], None]]:
    """While held, a transaction storing a reading with seq 1 waits inside; calling the
    fixture's value lets it go. The readings' partition (native mode, as the service makes
    them at start) or chunk (TimescaleDB: made by a row of that day) of the test's readings is
    made first: a commit making one holds the readings from the other writers until it ends,
    once a day in a service."""
    holder = psycopg.connect(fresh_database_url, autocommit=True)
    ensure_partitions(holder)
    holder.execute(
        "INSERT INTO readings (site, device, metric, ts, value, received_at)"
        " VALUES ('t-hq', 'th-a', 'temperature', to_timestamp(%s), 0, now())",
        (NOW - 60,),
    )
    holder.execute("DELETE FROM readings")
    holder.execute(HOLD_SEQ_1)
    holder.execute("SELECT pg_advisory_lock(4242)")
    held = [True]

    def release() -> None:
        if held[0]:
            holder.execute("SELECT pg_advisory_unlock(4242)")
            held[0] = False

    yield release
    release()
    holder.close()


def waiting_for_lock(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ).fetchone()
    return bool(row and row[0])


def stored_seqs(url: str) -> set[int]:
    with psycopg.connect(url) as conn:
        return {seq for (seq,) in conn.execute("SELECT seq FROM readings").fetchall()}


def pipeline_waits_for_a_commit() -> bool:
    """Whether the pipeline thread is blocked on a commit in flight (in `Future.result`, called
    by `Pipeline._collect`)."""
    for thread in threading.enumerate():
        if thread.name == "ingest-pipeline" and thread.ident is not None:
            names = []  # innermost first
            frame = sys._current_frames().get(thread.ident)
            while frame is not None:
                names.append(frame.f_code.co_name)
                frame = frame.f_back
            if "_collect" in names and "result" in names[: names.index("_collect")]:
                return True
    return False


def test_a_full_batch_commits_beside_the_one_before_and_is_acknowledged_after_it(
    run_pipeline: Any, fresh_database_url: str, held_seq_1: Callable[[], None]
) -> None:
    acked: list[tuple[int, int, int]] = []
    # Every reading a full batch: only a full batch commits beside the one before.
    _, inbox = run_pipeline(acked.extend, checkpoint_interval=3600, batch_rows=1)
    inbox.put(reading(1, 27.0), threading.Event())
    inbox.put(reading(2, 27.0), threading.Event())
    wait_for(lambda: waiting_for_lock(fresh_database_url))  # the first commit is held inside
    # The second flush commits on a connection of its own meanwhile ...
    wait_for(lambda: stored_seqs(fresh_database_url) == {2})
    # ... but its message is acknowledged only after the first one's (MQTT 5, 4.6).
    assert acked == []
    held_seq_1()
    wait_for(lambda: len(acked) == 2)
    assert acked == [reading(1).token, reading(2).token]
    assert stored_seqs(fresh_database_url) == {1, 2}


def test_a_batch_with_a_device_status_waits_for_the_commit_before_it(
    run_pipeline: Any, fresh_database_url: str, held_seq_1: Callable[[], None]
) -> None:
    """A device's statuses (and engine outputs, alerts among them) are stored in the order they
    came: a batch carrying one never commits beside another, full or not."""
    acked: list[tuple[int, int, int]] = []
    _, inbox = run_pipeline(acked.extend, checkpoint_interval=3600, batch_rows=1)
    status = ReceivedMessage("cw/t-hq/gw-b1/status", b"online", NOW, (1, 100, 1))
    for message in (reading(1, 27.0), status, reading(2, 27.0)):
        inbox.put(message, threading.Event())
    wait_for(lambda: waiting_for_lock(fresh_database_url))
    wait_for(lambda: inbox.qsize() == 0 and pipeline_waits_for_a_commit())
    assert stored_seqs(fresh_database_url) == set()
    held_seq_1()
    wait_for(lambda: len(acked) == 3)
    assert acked == [reading(1).token, status.token, reading(2).token]
    assert stored_seqs(fresh_database_url) == {1, 2}
    with psycopg.connect(fresh_database_url) as conn:
        assert conn.execute("SELECT device, online FROM device_status").fetchall() == [
            ("gw-b1", True)
        ]


def test_a_fenced_pipeline_commits_one_batch_at_a_time(
    run_pipeline: Any, fresh_database_url: str, held_seq_1: Callable[[], None]
) -> None:
    """The cluster mode's commits carry the stream position: one committed ahead of a flush
    that then failed would let the next owner of the partition skip that flush."""
    fenced: list[list[tuple[int, int, int]]] = []
    acked: list[tuple[int, int, int]] = []
    _, inbox = run_pipeline(
        acked.extend,
        checkpoint_interval=3600,
        batch_rows=1,
        fence=lambda conn, tokens: fenced.append(list(tokens)),
    )
    inbox.put(reading(1, 27.0), threading.Event())
    inbox.put(reading(2, 27.0), threading.Event())
    wait_for(lambda: waiting_for_lock(fresh_database_url))
    wait_for(lambda: inbox.qsize() == 0 and pipeline_waits_for_a_commit())
    assert stored_seqs(fresh_database_url) == set()
    held_seq_1()
    wait_for(lambda: len(acked) == 2)
    assert [tokens for tokens in fenced if tokens] == [[reading(1).token], [reading(2).token]]
    assert acked == [reading(1).token, reading(2).token]
