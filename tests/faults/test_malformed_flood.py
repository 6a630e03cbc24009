"""A flood in which every tenth message is malformed: each bad one becomes a dead letter with
its reason and each good one is stored. The throughput against a clean flood of the same size
through the same service is printed (`pytest -s`) for BENCHMARKS.md, not asserted: the brief
keeps speed targets in benchmarks, and on a shared 2-core machine one run's ratio is noise."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from tests.support import wait_for

pytestmark = pytest.mark.integration

MESSAGES = 4000
SENSORS = 10  # conftest.SENSORS
# (payload maker, reason): one of each kind of mistake in turn.
BAD: list[tuple[Callable[[int], bytes], str]] = [
    (lambda ts: b'{"ts": %d, "metrics": {"co2": 6' % ts, "malformed_json"),
    (lambda ts: b'{"ts": %d, "metrics": {"co2": NaN}}' % ts, "non_finite"),
    (lambda ts: b'{"ts": %d, "metrics": {"radon": 3}}' % ts, "unknown_metric"),
    (lambda ts: b'{"ts": %d, "metrics": {}}' % ts, "missing_value"),
    (lambda ts: b'{"ts": %d, "metrics": {"co2": "high"}}' % ts, "bad_value"),
    (lambda ts: b'{"ts": "yesterday", "metrics": {"co2": 600}}', "bad_timestamp"),
    (lambda ts: b'{"ts": %d, "metrics": {"co2": 600}}' % (ts + 3_600_000), "future_timestamp"),
    (lambda ts: b'{"ts": %d, "metrics": {"co2": "\xff\xfe"}}' % ts, "invalid_utf8"),
]


def flood(
    publisher: Any, url: str, bad_share: int, seq_base: int, start_ms: int, messages: int = MESSAGES
) -> tuple[float, Counter[str]]:
    """Publishes `messages` readings (every `bad_share`-th one malformed, 0: none) as fast as
    the broker takes them; returns messages/s until every good value and every dead letter is
    committed, and the reasons of the bad ones sent. Readings are 1 ms apart, and `seq_base`
    places them after those of earlier floods (same-ms readings of a device are duplicates)."""
    values_before, letters_before = counts(url)
    sent_bad: Counter[str] = Counter()
    infos = []
    started = time.monotonic()
    for i in range(messages):
        ts = start_ms + seq_base + i
        device = f"s{i % SENSORS}"
        if bad_share and i % bad_share == bad_share - 1:
            make, reason = BAD[(i // bad_share) % len(BAD)]
            payload, sent_bad[reason] = make(ts), sent_bad[reason] + 1
        else:
            body = {"ts": ts, "seq": seq_base + i, "metrics": {"temperature": 24.0, "co2": 600.0}}
            payload = orjson.dumps(body)
        infos.append(publisher.send_raw(device, payload))
    good = messages - sum(sent_bad.values())
    want = (values_before + 2 * good, letters_before + sum(sent_bad.values()))
    wait_for(
        lambda: all(have >= need for have, need in zip(counts(url), want, strict=True)),
        60,
        "the flood stored",
    )
    elapsed = time.monotonic() - started
    # The service may commit the last messages before the publisher's client has read their
    # PUBACKs from the broker.
    wait_for(lambda: all(info.is_published() for info in infos), 10, "the flood acknowledged")
    assert counts(url) == want
    return messages / elapsed, sent_bad


def test_ten_percent_malformed_are_dead_letters_and_the_rest_is_stored(
    fresh_database_url: str,
    own_broker: Any,
    config_dir: Path,
    service_factory: Callable[..., Any],
    publisher_factory: Callable[[str], Any],
) -> None:
    url = fresh_database_url
    service_factory(url, own_broker.url, config_dir).start()
    publisher = publisher_factory(own_broker.url)

    # Readings 1 ms apart from now on: ahead of the wall clock, so all are judged, none late.
    start_ms = int(time.time() * 1000)
    flood(publisher, url, 0, 0, start_ms, messages=500)  # warm-up: partitions, statements
    clean_rate, none_bad = flood(publisher, url, 0, 500, start_ms)
    assert not none_bad
    dirty_rate, sent_bad = flood(publisher, url, 10, 500 + MESSAGES, start_ms)

    with psycopg.connect(url) as conn:
        reasons = Counter(
            dict(conn.execute("SELECT reason, count(*) FROM dead_letters GROUP BY 1").fetchall())
        )
        topics_ok = conn.execute(
            "SELECT bool_and(topic LIKE 'cw/fault-hq/s%%/telemetry' AND length(payload) > 0"
            " AND detail <> '') FROM dead_letters"
        ).fetchone()
    assert reasons == sent_bad, "every bad message is one dead letter with its reason"
    assert topics_ok == (True,), "with its topic, raw payload and a detail"
    ratio = dirty_rate / clean_rate
    print(
        f"clean {clean_rate:,.0f} msg/s, 10 % malformed {dirty_rate:,.0f} msg/s, ratio {ratio:.2f}"
    )


def counts(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM dead_letters)"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])
