"""PostgreSQL stopped in the middle of a stream and started again: the service holds its batch
and retries with backoff, the broker keeps what the service does not take meanwhile, and
every reading the broker accepted is stored exactly once."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from clausewatch.embedded import EmbeddedPostgres
from tests.support import wait_for

pytestmark = pytest.mark.integration

RATE = 200.0


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path / "postgres")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.cluster_dir, ignore_errors=True)


def test_postgres_restart_mid_stream_loses_nothing(
    own_postgres: EmbeddedPostgres,
    own_broker: Any,
    config_dir: Path,
    service_factory: Callable[..., Any],
    publisher_factory: Callable[[str], Any],
) -> None:
    with psycopg.connect(own_postgres.url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE faults")
    url = own_postgres.url.rsplit("/", 1)[0] + "/faults"
    service = service_factory(url, own_broker.url, config_dir)
    service.start()
    publisher = publisher_factory(own_broker.url)
    publisher.stream(RATE, lambda device: 600.0)
    wait_for(lambda: count(url) > 300, 20, "the stream stored")

    own_postgres.stop()
    down_from = time.monotonic()
    wait_for(lambda: time.monotonic() - down_from > 3, 10, "the database down a while")
    wait_for(lambda: "flush failed" in service.log.read_text(), 20, "a failed flush retried")
    own_postgres.start()
    wait_for(lambda: count(url) > 0, 30, "the database back")
    stored_after_restart = count(url)
    wait_for(lambda: count(url) > stored_after_restart, 30, "ingestion resumed")
    publisher.stop_stream()
    accepted = publisher.settle()

    expected = len(accepted) * 3
    wait_for(lambda: count(url) >= expected, 60, f"{expected} stored values")
    with psycopg.connect(url) as conn:
        stored = conn.execute(
            "SELECT device, seq, count(*) FROM readings GROUP BY 1, 2 HAVING count(*) = 3"
        ).fetchall()
        assert count(url) == expected, "nothing doubled"
    assert {(device, seq) for device, seq, _ in stored} == {
        (device, seq) for device, seq, _, _ in accepted
    }, "every accepted reading stored with its three values"
    assert service.process.poll() is None, "the service rode out the outage"
    assert service.starts() == 1


def count(url: str) -> int:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            row = conn.execute("SELECT count(*) FROM readings").fetchone()
    except psycopg.OperationalError:
        return 0
    return int(row[0]) if row else 0
