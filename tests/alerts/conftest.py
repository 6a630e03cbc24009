"""Fixtures for the alerts area: a migrated database of its own, emptied before each test, a
small site model and a clause with escalation, reopen and re-verification policies."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from config.urls import database_named
from rules.clause import ClauseFile, ClauseVersion
from rules.site import SiteModel
from rules.verdicts import ClauseRef, Evidence, Subject, ViolationEnded, ViolationStarted
from store.migrate import migrate
from store.pool import connect
from store.registry import sync_clauses, sync_site

SITE = "alerts-hq"
T0 = dt.datetime(2026, 7, 1, 0, 0, tzinfo=dt.UTC)  # 08:00 in Asia/Shanghai


# Every table this area writes, emptied before each test (cheaper than a database per test).
TABLES = (
    "notification_attempts",
    "notifications",
    "notification_routes",
    "user_contacts",
    "user_sessions",
    "users",
    "quiet_periods",
    "webhook_targets",
    "webhook_allowlist",
    "alert_timeline",
    "alerts",
    "clause_versions",
    "assignments",
    "parties",
    "devices",
    "spaces",
    "sites",
    "ledger",
    "ledger_anchors",
    "compliance_intervals",
    "engine_checkpoints",
)
# DELETE (few rows) is much cheaper than TRUNCATE (new files, fsync) on a busy server; the
# replica role skips the append-only and foreign-key triggers for this cleanup only.
CLEANUP = (
    "SET session_replication_role = replica; "
    + "".join(f"DELETE FROM {table}; " for table in TABLES)
    + (
        "SELECT setval(pg_get_serial_sequence(t, 'id'), 1, false) FROM unnest(ARRAY["
        "'notification_attempts', 'notifications', 'notification_routes', 'webhook_targets',"
        " 'webhook_allowlist',"
        " 'alert_timeline', 'alerts', 'assignments', 'ledger_anchors', 'quiet_periods']) AS t; "
        "ALTER TABLE ledger ENABLE TRIGGER ledger_append_only"
    )
)


@pytest.fixture(scope="session")
def alerts_db_url(pg_server_url: str) -> Iterator[str]:
    """A migrated database of this test area alone (other areas never see its rows)."""
    name = f"cw_alerts_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = database_named(pg_server_url, name)
    migrate(url)
    yield url
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def conn(alerts_db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection to an emptied database; sequences restart, the ledger trigger is on."""
    with connect(alerts_db_url, autocommit=True) as admin:
        admin.execute(CLEANUP.encode())  # bytes: several statements in one simple query
    with connect(alerts_db_url) as connection:
        yield connection


def site_model(assignments: list[dict[str, Any]] | None = None) -> SiteModel:
    return SiteModel.model_validate(
        {
            "site": {"id": SITE, "name": "测试楼", "timezone": "Asia/Shanghai"},
            "spaces": [
                {"id": "b1", "type": "building"},
                {"id": "b1-2f", "type": "floor", "parent": "b1"},
                {"id": "b1-2f-201", "type": "office", "parent": "b1-2f"},
                {"id": "b1-3f", "type": "floor", "parent": "b1"},
                {"id": "b1-3f-301", "type": "office", "parent": "b1-3f"},
            ],
            "devices": [
                {"id": "th-201", "space": "b1-2f-201", "metrics": {"temperature": {"unit": "°C"}}},
                {"id": "th-301", "space": "b1-3f-301", "metrics": {"temperature": {"unit": "°C"}}},
            ],
            "parties": [
                {"id": "wang", "name": "王工"},
                {"id": "li", "name": "李工"},
                {"id": "zhao", "name": "赵科长", "contacts": {"phone": "13800000000"}},
                {"id": "chen", "name": "陈主任"},
            ],
            "assignments": assignments
            if assignments is not None
            else [
                {"party": "wang", "space": "b1-2f", "valid_from": "2026-01-01T00:00:00+08:00"},
                {
                    "party": "zhao",
                    "space": "b1",
                    "role": "escalation",
                    "level": 1,
                    "valid_from": "2026-01-01T00:00:00+08:00",
                },
                {
                    "party": "chen",
                    "space": "b1",
                    "role": "escalation",
                    "level": 2,
                    "valid_from": "2026-01-01T00:00:00+08:00",
                },
            ],
        }
    )


def clause_file(**changes: Any) -> ClauseFile:
    clause: dict[str, Any] = {
        "id": "temp.cooling.min",
        "version": 1,
        "effective_from": "2008-07-01",
        "number": "第三条",
        "title": "夏季室内空调温度设置不得低于26℃",
        "domain": "indoor_climate",
        "key": True,
        "confidence": "A",
        "severity": "major",
        "params": {"limit": {"default": 26, "unit": "°C"}},
        "check": {"kind": "threshold", "metric": "temperature", "min": "$limit", "for": "15m"},
        "escalation": [{"after": "30m", "to_level": 1}, {"after": "2h", "to_level": 2}],
        "reverify_for": "1h",
        "reopen_within": "1h",
    }
    clause.update(changes)
    return ClauseFile.model_validate(
        {
            "standard": {
                "code": "建科〔2008〕115号",
                "title": "公共建筑室内温度控制管理办法",
                "edition": "2008",
            },
            "clauses": [clause],
        }
    )


def clause_ref(clause: ClauseVersion | None = None) -> ClauseRef:
    version = clause or clause_file().clauses[0]
    return ClauseRef(
        clause_id=version.id,
        version=version.version,
        content_hash=version.content_hash(),
        standard="建科〔2008〕115号",
        number=version.number,
        title=version.title,
        domain=version.domain,
        severity=version.severity,
        key=version.key,
    )


def started(
    at: dt.datetime, *, device: str = "th-201", space: str = "b1-2f-201", value: float = 24.1
) -> ViolationStarted:
    ts = at.timestamp()
    return ViolationStarted(
        clause=clause_ref(),
        subject=Subject(site=SITE, space=space, device=device),
        kind="violation",
        started_at=ts,
        confirmed_at=ts + 900,
        worst_value=value,
        unit="°C",
        reason="temperature 24.1 °C below 26 °C",
        params={"limit": 26.0},
        evidence=(Evidence(ts=ts, metric="temperature", value=value, device=device),),
    )


def ended(
    at: dt.datetime, started_at: dt.datetime, *, device: str = "th-201", space: str = "b1-2f-201"
) -> ViolationEnded:
    return ViolationEnded(
        clause=clause_ref(),
        subject=Subject(site=SITE, space=space, device=device),
        kind="violation",
        started_at=started_at.timestamp(),
        ended_at=at.timestamp(),
        worst_value=23.8,
    )


def with_contacts(party: str, contacts: dict[str, str]) -> SiteModel:
    """The test site with one party's contacts replaced (a copy, not validated: the migration
    test stores a URL there as sites did before migration 0028)."""
    model = site_model()
    parties = tuple(
        p.model_copy(update={"contacts": contacts}) if p.id == party else p for p in model.parties
    )
    return model.model_copy(update={"parties": parties})


@pytest.fixture
def registered(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """The test site and clause stored, committed."""
    sync_site(conn, site_model(), "test", now=T0 - dt.timedelta(days=30))
    sync_clauses(conn, [clause_file()], "test", now=T0 - dt.timedelta(days=30))
    conn.commit()
    return conn
