"""Shared fixtures: real PostgreSQL and a real MQTT broker, never mocks.

Which ones: CLAUSEWATCH_TEST_DATABASE_URL / CLAUSEWATCH_TEST_MQTT_URL when set; else PostgreSQL
on 127.0.0.1:5432 and Mosquitto on 127.0.0.1:1883 when they answer; else the embedded ones
(started once per test session). Every test session gets its own database, created here and
dropped at the end, so parallel runs on one server never see each other's rows; every test gets
its own MQTT topic prefix for the same reason.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import psycopg
import pytest
from hypothesis import settings

from clausewatch.embedded import EmbeddedBroker, EmbeddedPostgres
from config.holidays import install_official_calendar
from config.urls import database_named
from rules.holidays import OfficialCalendar, official_calendar, use_official_calendar
from store.migrate import migrate
from store.mode import FORCE_NATIVE_ENV, timescaledb_preloaded
from tests.support import mqtt_publisher, throwaway_database

# Schedules judge working days with the bundled official holiday schedules, as the service and
# the command line do (they install them at start-up); tests that need another calendar use the
# `calendar_in_use` fixture.
install_official_calendar()

# Under CI the property tests draw the same examples every run: a submission is judged on its
# own change, not on the luck of the draw. Elsewhere they keep exploring new examples each run.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

LOCAL_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_MQTT_URL = "mqtt://127.0.0.1:1883"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture
def calendar_in_use() -> Iterator[Callable[[OfficialCalendar], None]]:
    """Sets the official holiday calendar schedules compile with; the one before comes back
    after the test."""
    before = official_calendar()
    yield use_official_calendar
    use_official_calendar(before)


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


class _Server(Protocol):
    """What both embedded servers offer."""

    @property
    def url(self) -> str: ...

    def start(self) -> None: ...
    def stop(self) -> None: ...


def _server_url(
    env: str, port: int, local_url: str, embedded: Callable[[], _Server]
) -> Iterator[str]:
    """The URL configured in `env`; else the local server when it answers on `port`; else an
    embedded one, started here and stopped afterwards."""
    configured = os.environ.get(env)
    if configured:
        yield configured
    elif _answers("127.0.0.1", port):
        yield local_url
    else:
        server = embedded()
        server.start()
        try:
            yield server.url
        finally:
            server.stop()


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a maintenance database on the PostgreSQL server the tests use."""
    yield from _server_url(
        "CLAUSEWATCH_TEST_DATABASE_URL",
        5432,
        LOCAL_DATABASE_URL,
        lambda: EmbeddedPostgres(tmp_path_factory.mktemp("pgdata")),
    )


@pytest.fixture(scope="session")
def database_url(pg_server_url: str) -> Iterator[str]:
    """A fresh, empty database for this test session (dropped afterwards)."""
    with throwaway_database(pg_server_url, "cw_test") as url:
        yield url


@pytest.fixture
def empty_database_url(pg_server_url: str) -> Iterator[str]:
    """A fresh, empty database for one test, for tests that must start from nothing (the
    migrations themselves, first-start behaviour)."""
    with throwaway_database(pg_server_url, "cw_test") as url:
        yield url


@pytest.fixture(scope="session")
def migrated_template(pg_server_url: str) -> Iterator[str]:
    """A database migrated once per session, to be copied: a copy takes a fraction of a
    second, a migration run several seconds, and most tests start a service on a new one."""
    name = f"cw_tpl_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    migrate(database_named(pg_server_url, name))
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        # CREATE DATABASE ... TEMPLATE fails while anyone is connected to the template, and
        # TimescaleDB's job scheduler connects to every database with the extension unless it
        # is a template: mark it one, refuse connections, and end the scheduler's.
        conn.execute(f'ALTER DATABASE "{name}" IS_TEMPLATE true ALLOW_CONNECTIONS false')
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
    yield name
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" IS_TEMPLATE false')
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fresh_database_url(pg_server_url: str, migrated_template: str) -> Iterator[str]:
    """A migrated database of this test alone, copied from the session's template."""
    with throwaway_database(pg_server_url, "cw_test", template=migrated_template) as url:
        yield url


@pytest.fixture(scope="session")
def timescale_server_status(pg_server_url: str) -> str | None:
    """Why the test server cannot run TimescaleDB tests, or None when it can: the extension
    installed and its loader preloaded (installed alone, `CREATE EXTENSION` is fatal)."""
    with psycopg.connect(pg_server_url) as conn:
        available = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchone()
        if available is None:
            return "the test server has no TimescaleDB (set CLAUSEWATCH_TEST_DATABASE_URL)"
        if not timescaledb_preloaded(conn):
            return "the test server has TimescaleDB but does not preload it"
    return None


@pytest.fixture
def timescale_server(
    pg_server_url: str, timescale_server_status: str | None, monkeypatch: pytest.MonkeyPatch
) -> str:
    """The test server, for a test of the TimescaleDB mode: skipped unless the server runs
    TimescaleDB, and the native mode no longer forced."""
    if timescale_server_status is not None:
        pytest.skip(timescale_server_status)
    monkeypatch.delenv(FORCE_NATIVE_ENV, raising=False)
    return pg_server_url


@pytest.fixture(scope="session")
def mqtt_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _server_url(
        "CLAUSEWATCH_TEST_MQTT_URL",
        1883,
        LOCAL_MQTT_URL,
        lambda: EmbeddedBroker(tmp_path_factory.mktemp("broker")),
    )


@pytest.fixture
def topic_prefix() -> str:
    """A topic prefix of this test alone, so tests sharing a broker never cross."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def publish(mqtt_url: str, topic_prefix: str) -> Iterator[Callable[[str, bytes], None]]:
    """publish(topic under this test's prefix, payload): QoS 1, returns once the broker has it."""
    with mqtt_publisher(mqtt_url) as send:
        yield lambda topic_tail, payload: send(f"{topic_prefix}/{topic_tail}", payload)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests leave files for people to look at (screenshots, reports)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
