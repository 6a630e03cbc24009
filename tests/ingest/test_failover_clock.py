"""The cluster mode's failover ordering (issue 23, docs/cluster.md "The engines' clock"): after a
failover the engines' clocks move with each site's input, not the wall clock, so a reading sent
again late is not judged late; and a consumer's deliveries lost on their way hold back what
came after them until they come again, so a partition's input is handed over in stream order."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import psycopg
import pytest

from clausewatch.service import sync_registry
from config.files import LoadedConfig
from ingest.mqtt import IngressQueue, ReceivedMessage
from ingest.nats import GAP_WAIT_S, DeliveryOrder
from ingest.pipeline import Pipeline, engine_now, held_clock
from store.migrate import migrate
from store.pool import make_pool
from tests.ingest.test_pipeline_integration import CLAUSES, SITE
from tests.support import config_pipeline, wait_for

T = 1_800_000_000.0


def test_without_a_hold_the_wall_clock_moves_the_engine() -> None:
    assert held_clock(T + 20, T, hold_until=0.0, wall=T + 22) == T + 20


def test_while_held_a_site_moves_with_its_own_input() -> None:
    # A site sending goes on (its input is the clock), one stalled stays at its newest input.
    assert held_clock(T + 20, T + 19.9, hold_until=T + 60, wall=T + 22) == T + 19.9
    assert held_clock(T + 20, T + 3, hold_until=T + 60, wall=T + 22) == T + 3
    # Never further than the wall clock (a device's clock ahead), and not at all before input.
    assert held_clock(T + 20, T + 25, hold_until=T + 60, wall=T + 22) == T + 20
    assert held_clock(T + 20, float("-inf"), hold_until=T + 60, wall=T + 22) == float("-inf")


def test_the_hold_ends_at_its_deadline() -> None:
    assert held_clock(T + 70, T + 3, hold_until=T + 60, wall=T + 60) == T + 70


def telemetry(ts: float, seq: int) -> ReceivedMessage:
    body = {"ts": int(ts * 1000), "seq": seq, "metrics": {"temperature": 24.0}}
    return ReceivedMessage("cw/t-hq/th-a/telemetry", orjson.dumps(body), time.time(), (1, seq, 1))


@pytest.fixture
def wall_pipeline(fresh_database_url: str) -> Iterator[tuple[Pipeline, IngressQueue]]:
    migrate(fresh_database_url)
    config = LoadedConfig(sites={"t-hq": SITE}, clause_files={Path("test.yaml"): CLAUSES})
    sync_registry(fresh_database_url, config)
    pool = make_pool(fresh_database_url)
    inbox = IngressQueue(100)
    pipeline = config_pipeline(
        pool,
        config,
        inbox,
        lateness=5.0,
        flush_interval=0.05,
        clock="wall",
    )
    pipeline.start()
    try:
        yield pipeline, inbox
    finally:
        pipeline.stop()
        pool.close()


def late_readings(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM late_readings").fetchone()
    return int(row[0]) if row else 0


def stored(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
    return int(row[0]) if row else 0


@pytest.mark.integration
@pytest.mark.parametrize("held", [False, True], ids=["wall-clock", "held"])
def test_a_reading_sent_again_after_a_failover_is_judged_late_only_without_the_hold(
    wall_pipeline: tuple[Pipeline, IngressQueue], fresh_database_url: str, held: bool
) -> None:
    pipeline, inbox = wall_pipeline
    sent = float(int(time.time()) - 60)  # whole seconds: readings carry milliseconds
    engine = pipeline.engines["t-hq"]
    inbox.put(telemetry(sent + 1, 2), threading.Event())
    wait_for(lambda: stored(fresh_database_url) == 1, 10, "the first reading stored")
    # The wall clock ran 20 s on while the reading stamped at `sent` waited to be sent again.
    pipeline.request_advance(sent + 20, hold_until=float("inf") if held else 0.0)
    wait_for(lambda: engine_now(engine) >= sent + 1, 10, "the clock applied")
    assert engine_now(engine) == (sent + 1 if held else sent + 20)
    inbox.put(telemetry(sent, 1), threading.Event())
    wait_for(lambda: stored(fresh_database_url) == 2, 10, "the re-sent reading stored")
    assert late_readings(fresh_database_url) == (0 if held else 1)


def deliveries(*entries: tuple[int, int, int]) -> list[tuple[int, int, int, str]]:
    """(consumer sequence, stream sequence, times delivered) → with the item `s{stream seq}`."""
    return [(c, s, n, f"s{s}") for c, s, n in entries]


def test_deliveries_in_order_are_handed_over_at_once() -> None:
    order: DeliveryOrder[str] = DeliveryOrder()
    assert order.take(deliveries((1, 10, 1), (2, 12, 1)), T) == ["s10", "s12"]
    assert order.take(deliveries((3, 15, 1)), T) == ["s15"]
    assert order.missing == 0


def test_after_lost_deliveries_what_follows_waits_for_them_and_comes_in_stream_order() -> None:
    order: DeliveryOrder[str] = DeliveryOrder()
    assert order.take(deliveries((1, 10, 1)), T) == ["s10"]
    # Deliveries 2 and 3 (stream 12 and 15) were lost with a node; 4 and 5 came.
    assert order.take(deliveries((4, 17, 1), (5, 20, 1)), T + 1) == []
    assert order.missing == 2
    # 17 delivered again (acknowledged too late) is no lost one coming.
    assert order.take(deliveries((6, 17, 2)), T + 5) == []
    assert order.take(deliveries((7, 15, 2)), T + 11) == []
    assert order.take(deliveries((8, 12, 2), (9, 22, 1)), T + 11.1) == [
        "s12",
        "s15",
        "s17",
        "s17",
        "s20",
        "s22",
    ]
    assert (order.missing, order.lost, order.given_up) == (0, 2, 0)
    assert order.take(deliveries((10, 25, 1)), T + 12) == ["s25"]


def test_lost_deliveries_that_never_come_again_hold_back_no_longer_than_the_gap_wait() -> None:
    order: DeliveryOrder[str] = DeliveryOrder()
    assert order.take(deliveries((1, 10, 1), (3, 14, 1)), T) == []
    assert order.take([], T + GAP_WAIT_S - 0.1) == []
    assert order.take([], T + GAP_WAIT_S) == ["s10", "s14"]
    assert (order.missing, order.lost, order.given_up) == (0, 1, 1)
