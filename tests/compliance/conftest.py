"""Fixtures of the register tests: a migrated database of their own holding the bundled clauses,
the demo site and two small sites (one public, with named parties and contacts, in an
organisation tree), a test clause of our own; history tables emptied before each test."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.types.json import Jsonb

from api.app import create_app
from api.tokens import create_token
from config import BUNDLED_DIR
from config.files import load_clause_file, load_site
from rules.clause import ClauseFile
from rules.site import SiteModel
from store.migrate import migrate
from store.pool import connect
from store.registry import sync_clauses, sync_site
from tests.support import auth as auth  # the test modules import it from here
from tests.support import serve_app, throwaway_database

CONFIG = BUNDLED_DIR
PUBLIC_SITE = "pub-site"
PRIVATE_SITE = "private-site"
SYNCED_AT = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
# Personal data the public page must never show.
PARTY_NAME = "王建国"
PARTY_PHONE = "13912345678"
PARTY_EMAIL = "wang.jianguo@example.cn"

TEST_CLAUSE = {
    "id": "test.temp.max",
    "version": 1,
    "effective_from": "2020-01-01",
    "number": "第九条",
    "title": "办公室室内温度不得高于28℃",
    "text": "办公室夏季室内温度不得高于 28℃。",
    "domain": "indoor_climate",
    "key": True,
    "confidence": "B",
    "severity": "major",
    "applies_to": {"space_types": ["office"]},
    "params": {"limit": {"default": 28, "unit": "°C"}},
    "check": {"kind": "threshold", "metric": "temperature", "max": "$limit"},
    "reopen_within": "1h",
}


def clause_file_with(**changes: Any) -> ClauseFile:
    return ClauseFile.model_validate(
        {
            "standard": {"code": "TEST-1", "title": "测试标准", "edition": "2020"},
            "clauses": [{**TEST_CLAUSE, **changes}],
        }
    )


def small_site(site: str, *, public: bool, org: list[str]) -> SiteModel:
    return SiteModel.model_validate(
        {
            "site": {
                "id": site,
                "name": f"测试楼 {site}",
                "timezone": "Asia/Shanghai",
                "public": public,
                "org": org,
            },
            "spaces": [
                {"id": "b1", "type": "building"},
                {"id": "office-1", "type": "office", "parent": "b1", "name": "一号办公室"},
                {"id": "office-2", "type": "office", "parent": "b1", "name": "二号办公室"},
            ],
            "devices": [
                {
                    "id": "th-1",
                    "space": "office-1",
                    "metrics": {"temperature": {"unit": "°C", "range": [-20, 60]}},
                },
                {
                    "id": "th-2",
                    "space": "office-2",
                    "metrics": {"temperature": {"unit": "°C", "range": [-20, 60]}},
                },
            ],
            "parties": [
                {
                    "id": "wang",
                    "name": PARTY_NAME,
                    "contacts": {"phone": PARTY_PHONE, "email": PARTY_EMAIL},
                }
            ],
            "assignments": [
                {"party": "wang", "space": "b1", "valid_from": "2026-01-01T00:00:00+08:00"}
            ],
        }
    )


@pytest.fixture(scope="session")
def register_db_url(pg_server_url: str) -> Iterator[str]:
    with throwaway_database(pg_server_url, "cw_register") as url:
        migrate(url)
        with connect(url) as conn:
            sync_site(conn, load_site(CONFIG / "sites" / "demo-hq.yaml"), "test", now=SYNCED_AT)
            sync_site(
                conn,
                small_site(PUBLIC_SITE, public=True, org=["jinan", "lixia"]),
                "test",
                now=SYNCED_AT,
            )
            sync_site(
                conn,
                small_site(PRIVATE_SITE, public=False, org=["jinan", "shizhong"]),
                "test",
                now=SYNCED_AT,
            )
            files = [load_clause_file(p) for p in sorted((CONFIG / "clauses").glob("*.yaml"))]
            sync_clauses(conn, [*files, clause_file_with()], "test", now=SYNCED_AT)
            conn.commit()
        yield url


HISTORY = (
    "feedback_steps",
    "feedback_photos",
    "feedback_items",
    "feedback_hits",
    "improvement_actions",
    "evaluations",
    "org_targets",
    "evaluation_reports",
    "alert_timeline",
    "alerts",
    "compliance_intervals",
    "readings",
    "events",
)


@pytest.fixture
def conn(register_db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection to the register database with its history tables emptied."""
    with connect(register_db_url, autocommit=True) as admin:
        admin.execute(("".join(f"DELETE FROM {t}; " for t in HISTORY)).encode())
    with connect(register_db_url) as connection:
        yield connection


@pytest.fixture(scope="session")
def client(register_db_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(register_db_url)) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def admin_token(register_db_url: str) -> str:
    with psycopg.connect(register_db_url) as conn:
        token, _ = create_token(conn, "admin", (), "register tests")
    return token


def add_interval(
    conn: psycopg.Connection[Any],
    site: str,
    clause_id: str,
    space: str,
    start: dt.datetime,
    hours: float,
    status: str,
    device: str = "",
) -> None:
    conn.execute(
        "INSERT INTO compliance_intervals (site, clause_id, clause_version, content_hash, space,"
        " device, start_ts, end_ts, status) VALUES (%s, %s, 1, 'h', %s, %s, %s, %s, %s)",
        (site, clause_id, space, device, start, start + dt.timedelta(hours=hours), status),
    )


def add_alert(
    conn: psycopg.Connection[Any],
    site: str,
    clause_id: str,
    *,
    space: str = "office-1",
    severity: str = "major",
    started_at: dt.datetime,
    state: str = "firing",
    acknowledged_after: dt.timedelta | None = None,
    closed_after: dt.timedelta | None = None,
    ended_after: dt.timedelta | None = None,
    reopen_count: int = 0,
    cause: str | None = None,
    action: str | None = None,
    responsible_name: str = PARTY_NAME,
) -> int:
    """An alert row as the alert service leaves it (confirmed at its start, named party). It
    ends when it is closed, or `ended_after` its start (resolved, not closed)."""
    acknowledged = started_at + acknowledged_after if acknowledged_after else None
    closed = started_at + closed_after if closed_after else None
    ended = started_at + ended_after if ended_after else closed
    row = conn.execute(
        "INSERT INTO alerts (site, clause_id, clause_version, content_hash, standard, number,"
        " title, domain, key, kind, severity, space, device, metric, reason, state, started_at,"
        " confirmed_at, ended_at, worst_value, unit, params, evidence, responsible_party,"
        " responsible_name, acknowledged_at, acknowledged_by, closed_at, closed_by, cause,"
        " corrective_action, reopen_count, updated_at)"
        " SELECT %(site)s, clause_id, version, content_hash, standard_code, number, title,"
        " domain, key, 'violation', %(severity)s, %(space)s, 'th-1', 'temperature',"
        " 'too warm', %(state)s, %(at)s, %(at)s, %(ended)s, 29.5, '°C', %(params)s, '[]',"
        " 'wang', %(name)s, %(ack)s, %(ack_by)s, %(closed)s, %(closed_by)s, %(cause)s,"
        " %(action)s, %(reopens)s, %(at)s"
        " FROM clause_versions WHERE clause_id = %(clause)s ORDER BY version DESC LIMIT 1"
        " RETURNING id",
        {
            "site": site,
            "severity": severity,
            "space": space,
            "state": state,
            "at": started_at,
            "closed": closed,
            "ended": ended,
            "params": Jsonb({"limit": 28.0}),
            "name": responsible_name,
            "ack": acknowledged,
            "ack_by": f"token:1 ({responsible_name})" if acknowledged else None,
            "closed_by": f"token:1 ({responsible_name})" if closed else None,
            "cause": cause,
            "action": action,
            "reopens": reopen_count,
            "clause": clause_id,
        },
    ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture(scope="session")
def live_api(register_db_url: str) -> Iterator[str]:
    """The app served by uvicorn on a free local port (for the browser)."""
    with serve_app(create_app(register_db_url), "register-api") as url:
        yield url
