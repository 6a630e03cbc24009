"""Publishing scenarios to a real broker and reading them back with a real subscriber."""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict

import orjson
import pytest

from config import BUNDLED_DIR
from config.files import load_site
from simulators.runner import SimulatorThread, run_scenario
from simulators.scenario import Scenario, load_scenario
from simulators.stream import Simulation

pytestmark = pytest.mark.integration

SITE = load_site(BUNDLED_DIR / "sites" / "demo-hq.yaml")


def test_a_fast_run_delivers_exactly_the_simulated_stream(
    mqtt_url, topic_prefix, collector
) -> None:
    week = load_scenario(BUNDLED_DIR / "scenarios" / "week-faults.yaml")
    delivery_faults = [
        {"kind": "duplicate", "device": "th-201", "at": "2h", "count": 5},
        {"kind": "out_of_order", "device": "th-203", "at": "2h", "count": 3},
        {"kind": "malformed", "device": "th-canteen", "at": "3h", "count": 7},
    ]
    week = Scenario.model_validate(week.model_dump(by_alias=True) | {"faults": delivery_faults})
    now = time.time()
    result = run_scenario(
        week, SITE, mqtt_url, topic_prefix,
        as_fast_as_possible=True, start=now - 86400, span=86400, clock=lambda: now,
        max_in_flight=200,
    )  # fmt: skip
    expected = list(Simulation(week, SITE, now - 86400, now, now=now).messages())
    assert result.published == len(expected) > 5_000
    assert collector.wait_for(lambda got: len(got) >= len(expected), timeout=60)
    by_topic: dict[str, list[bytes]] = defaultdict(list)
    for topic, payload, _ in collector.received:
        by_topic[topic].append(payload)
    wanted: dict[str, list[bytes]] = defaultdict(list)
    for message in expected:
        wanted[f"{topic_prefix}/demo-hq/{message.device}/{message.channel}"].append(message.payload)
    assert by_topic == wanted  # same messages, same order per topic (duplicates and all)
    assert result.manifest.of_kind("malformed")[0].count == 7


def test_an_accelerated_run_catches_up_with_now_and_never_publishes_the_future(
    mqtt_url, topic_prefix, collector
) -> None:
    sc = Scenario.model_validate({"name": "pace", "site": "demo-hq", "sample_interval": "1m"})
    started = time.time()
    runner = SimulatorThread(sc, SITE, mqtt_url, topic_prefix, speed=3600.0, start=started - 1800)
    runner.start()
    try:
        # Half an hour of building at an hour per second: caught up within a second or two.
        assert collector.wait_for(
            lambda got: any(_stamp(p) >= started - 120 for _, p, _ in got), timeout=15
        )
    finally:
        runner.stop()
    assert runner.error is None and runner.result is not None and runner.result.stopped
    for _, payload, received_at in collector.received:
        assert _stamp(payload) <= received_at + 1.0
    assert min(_stamp(p) for _, p, _ in collector.received) >= started - 1800


def _stamp(payload: bytes) -> float:
    return dt.datetime.fromisoformat(orjson.loads(payload)["ts"]).timestamp()
