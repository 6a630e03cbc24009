"""Fixtures of the API tests: a migrated database of their own with two sites (site-a, site-b),
the bundled clause file, tokens of every role scoped to site-a or to every site, an app, and
helpers that raise alerts the way the alert service records them (a row and its timeline)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.types.json import Jsonb

from api.app import create_app
from api.stream import StreamConfig
from api.tokens import ROLES, create_token
from config import BUNDLED_DIR
from config.files import load_clause_file
from rules.site import SiteModel
from store import registry
from store.migrate import migrate
from tests.support import auth as auth  # the test modules import it from here
from tests.support import serve_app, throwaway_database

CONFIG = BUNDLED_DIR
SITES = ("site-a", "site-b")
T0 = dt.datetime(2026, 7, 1, 1, 0, tzinfo=dt.UTC)  # 09:00 in Asia/Shanghai, a workday
# Fast stream for tests: wake-ups come from LISTEN; the poll only covers a lost connection.
TEST_STREAM = StreamConfig(heartbeat_s=1.0, poll_s=0.5, gap_wait_s=2.0, token_check_s=1.0)


def site_model(site: str) -> SiteModel:
    return SiteModel.model_validate(
        {
            "site": {
                "id": site,
                "name": f"Test {site}",
                "timezone": "Asia/Shanghai",
                "seasons": {"cooling": {"from": "06-01", "to": "09-30"}},
            },
            "spaces": [
                {"id": "b1", "type": "building"},
                {"id": "room-1", "type": "meeting", "parent": "b1", "name": "会议室"},
                {"id": "server", "type": "server-room", "parent": "b1"},
            ],
            "devices": [
                {
                    "id": "th-1",
                    "space": "room-1",
                    "metrics": {
                        "temperature": {"unit": "°C", "range": [-20, 60]},
                        "hvac_mode": {
                            "unit": "",
                            "states": {"off": 0, "cooling": 1, "heating": 2, "fan": 3},
                        },
                    },
                }
            ],
            "parties": [{"id": "fm-1", "name": f"王工 ({site})"}],
            "assignments": [
                {"party": "fm-1", "space": "b1", "valid_from": "2026-01-01T00:00:00+08:00"}
            ],
        }
    )


@pytest.fixture(scope="module")
def api_database_url(pg_server_url: str) -> Iterator[str]:
    """A migrated database for one test module, with both sites and the bundled clauses."""
    with throwaway_database(pg_server_url, "cw_api") as url:
        migrate(url)
        with psycopg.connect(url) as conn:
            for site in SITES:
                registry.sync_site(conn, site_model(site), actor="test", now=T0)
            clause_files = [
                load_clause_file(p) for p in sorted((CONFIG / "clauses").glob("*.yaml"))
            ]
            registry.sync_clauses(conn, clause_files, actor="test", now=T0)
        yield url


@pytest.fixture(scope="module")
def tokens(api_database_url: str) -> dict[tuple[str, str], str]:
    """(role, scope) → token, scope "site-a" (scoped) or "all" (every site)."""
    made: dict[tuple[str, str], str] = {}
    with psycopg.connect(api_database_url) as conn:
        for role in ROLES:
            made[(role, "site-a")], _ = create_token(conn, role, ("site-a",), f"{role} of a")
            made[(role, "all")], _ = create_token(conn, role, (), f"{role} of all")
    return made


@pytest.fixture(scope="module")
def client(api_database_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(api_database_url, stream=TEST_STREAM)) as test_client:
        yield test_client


def insert_alert(
    conn: psycopg.Connection[Any],
    site: str,
    *,
    started_at: dt.datetime = T0,
    state: str = "firing",
    severity: str = "warning",
    clause_id: str = "temp.cooling.min",
    space: str = "room-1",
) -> int:
    """An alert as the alert service records one: the row, its 'raised' timeline entry."""
    row = conn.execute(
        "INSERT INTO alerts (site, clause_id, clause_version, content_hash, standard, number,"
        " title, domain, key, kind, severity, space, device, metric, reason, state, started_at,"
        " confirmed_at, worst_value, unit, params, evidence, responsible_party,"
        " responsible_name, updated_at)"
        " SELECT %(site)s, clause_id, version, content_hash, standard_code, number, title,"
        " domain, key, 'violation', %(severity)s, %(space)s, 'th-1', 'temperature',"
        " 'temperature below 25.7', %(state)s, %(at)s, %(at)s + interval '10 minutes', 24.1,"
        " '°C', %(params)s, %(evidence)s, 'fm-1', '王工', %(at)s"
        " FROM clause_versions WHERE clause_id = %(clause)s ORDER BY version DESC LIMIT 1"
        " RETURNING id",
        {
            "site": site,
            "severity": severity,
            "space": space,
            "state": state,
            "at": started_at,
            "clause": clause_id,
            "params": Jsonb({"limit": 26.0, "tolerance": 0.3}),
            "evidence": Jsonb(
                [
                    {
                        "ts": started_at.timestamp() + 60 * i,
                        "device": "th-1",
                        "metric": "temperature",
                        "value": 24.5 - 0.1 * i,
                    }
                    for i in range(5)
                ]
            ),
        },
    ).fetchone()
    assert row is not None
    add_timeline(conn, row[0], site, "raised", started_at)
    return int(row[0])


def add_timeline(
    conn: psycopg.Connection[Any],
    alert_id: int,
    site: str,
    action: str,
    at: dt.datetime | None = None,
) -> int:
    """A timeline row (at the transaction's time unless `at` is given); does not commit."""
    row = conn.execute(
        "INSERT INTO alert_timeline (alert_id, site, at, action, actor)"
        " VALUES (%s, %s, coalesce(%s, now()), %s, 'engine') RETURNING id",
        (alert_id, site, at, action),
    ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture(scope="module")
def live_api(api_database_url: str) -> Iterator[str]:
    """The app served by uvicorn on a free local port (real HTTP, for streams and browsers)."""
    with serve_app(create_app(api_database_url, stream=TEST_STREAM), "live-api") as url:
        yield url


@dataclass
class SseEvent:
    event: str
    id: str | None
    data: str


def read_events(
    lines: Iterator[str], count: int, deadline_s: float = 10.0, kinds: tuple[str, ...] = ("alert",)
) -> list[SseEvent]:
    """The next `count` events of the given kinds from an SSE line stream (comments and other
    kinds skipped); fails when they do not come before the deadline."""
    found: list[SseEvent] = []
    deadline = time.monotonic() + deadline_s
    event, event_id, data = "message", None, []
    for line in lines:
        if time.monotonic() > deadline:
            break
        if line == "":
            if data and event in kinds:
                found.append(SseEvent(event, event_id, "\n".join(data)))
                if len(found) == count:
                    return found
            event, event_id, data = "message", None, []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
    raise AssertionError(f"expected {count} events, got {len(found)}: {found}")
