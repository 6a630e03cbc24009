"""SIGKILL of the service in the middle of a stream, then a restart: every reading the broker
accepted is stored exactly once, the one alert is neither lost nor doubled, and a `for`
duration half elapsed before the crash completes after it, from the engine checkpoint."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.support import wait_for

pytestmark = pytest.mark.integration

FOR_S = 6.0  # the co2 clause's `for` in conftest.CLAUSES

RATE = 200.0  # messages/s, 3 metrics each


@pytest.mark.parametrize("batch_rows", [None, 2], ids=["default batches", "two commits at once"])
def test_sigkill_mid_stream_then_restart_loses_and_doubles_nothing(
    fresh_database_url: str,
    own_broker: Any,
    config_dir: Path,
    service_factory: Callable[..., Any],
    publisher_factory: Callable[[str], Any],
    batch_rows: int | None,
) -> None:
    url = fresh_database_url
    service = service_factory(url, own_broker.url, config_dir)
    if batch_rows is not None:
        # Every flush of two readings is full: it commits beside the one in flight, so the
        # kill finds two flushes committing at once, one of them perhaps stored, not acked.
        service.env["CLAUSEWATCH_BATCH_ROWS"] = str(batch_rows)
    service.start()
    publisher = publisher_factory(own_broker.url)
    # s0 breaks the co2 limit from its first reading on; the others never do.
    publisher.stream(RATE, lambda device: 2500.0 if device == "s0" else 600.0)
    first_violation = wait_for(
        lambda: query(url, "SELECT min(ts) FROM readings WHERE device = 's0' AND metric = 'co2'")[
            0
        ][0],
        20,
        "the first violating reading stored",
    )
    # Half the `for` duration later (checkpoints are taken every second), the crash.
    wait_for(
        lambda: time.time() >= first_violation.timestamp() + FOR_S / 2,
        FOR_S,
        "half the duration elapsed",
    )
    assert query(url, "SELECT count(*) FROM alerts") == [(0,)]
    if batch_rows is not None:
        assert commits_beside(service) > 0
    service.kill()
    down_from = time.monotonic()
    # Published while no service runs: the persistent session keeps them.
    wait_for(lambda: time.monotonic() - down_from > 1.5, 5, "a while down")
    service.start()
    # Deadlines for what must eventually happen are generous: a loaded machine only waits longer.
    wait_for(lambda: query(url, "SELECT count(*) FROM alerts")[0][0] >= 1, 90, "the alert")
    publisher.stop_stream()
    accepted = publisher.settle()

    expected = len(accepted) * 3
    wait_for(
        lambda: query(url, "SELECT count(*) FROM readings")[0][0] >= expected,
        90,
        f"{expected} stored values",
    )
    stored = query(url, "SELECT device, seq, metric, count(*) FROM readings GROUP BY 1, 2, 3")
    assert len(stored) == expected, "every accepted reading's three values are stored"
    assert all(copies == 1 for *_, copies in stored), "and each exactly once"
    assert {(device, seq) for device, seq, _, _ in stored} == {
        (device, seq) for device, seq, _, _ in accepted
    }

    alerts = query(url, "SELECT device, started_at, state FROM alerts")
    assert alerts == [("s0", first_violation, "firing")], (
        "one alert, started when the violation began before the crash"
    )
    assert first_violation == dt.datetime.fromtimestamp(
        min(ts for device, _, ts, _ in accepted if device == "s0") / 1000, dt.UTC
    )
    raised = query(url, "SELECT count(*) FROM alert_timeline WHERE action = 'raised'")
    assert raised == [(1,)]


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def commits_beside(service: Any) -> float:
    """The service's count of flushes committed beside the one before them (GET /metrics)."""
    port = service.env["CLAUSEWATCH_HTTP_PORT"]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("clausewatch_batches_beside_total "):
            return float(line.split()[1])
    raise AssertionError("clausewatch_batches_beside_total is not in /metrics")
