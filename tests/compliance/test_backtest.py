"""Backtests over stored history: a stricter version raises more violations than the version in
force on the same readings, and none on a clean history; the CLI and the admin endpoint."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from fastapi.testclient import TestClient

from clausewatch.cli import main
from compliance.backtest import BacktestError, backtest, version_in_force
from store.batches import EventRow, ReadingRow, write_events, write_readings
from tests.compliance.conftest import PUBLIC_SITE, TEST_CLAUSE, auth, clause_file_with

pytestmark = pytest.mark.integration
SINCE = dt.datetime(2026, 8, 3, 1, 0, tzinfo=dt.UTC)
UNTIL = SINCE + dt.timedelta(hours=2)
STRICTER = {"version": 2, "params": {"limit": {"default": 26, "unit": "°C"}}}


def _store(conn: psycopg.Connection[Any], temperature: float) -> None:
    """Two hours of one reading a minute from both offices' sensors."""
    rows = [
        ReadingRow(
            PUBLIC_SITE,
            device,
            "temperature",
            SINCE.timestamp() + 60 * i,
            temperature + 0.01 * (i % 3),
            i,
            SINCE.timestamp() + 60 * i,
        )
        for device in ("th-1", "th-2")
        for i in range(120)
    ]
    write_readings(conn, rows)
    conn.commit()


def test_a_stricter_version_raises_more_than_the_version_in_force(
    conn: psycopg.Connection[Any],
) -> None:
    _store(conn, 27.0)  # between the stricter 26 °C and the 28 °C in force
    stricter = clause_file_with(**STRICTER).clauses[0]
    result = backtest(conn, PUBLIC_SITE, stricter, SINCE, UNTIL)
    assert result.readings == 240
    assert result.in_force is not None and result.in_force.version == 1
    assert result.in_force.violations == 0
    assert result.in_force.compliance_rate == 1.0
    assert result.candidate.version == 2
    assert result.candidate.violations == 2  # one per office
    assert {r.device for r in result.candidate.raised} == {"th-1", "th-2"}
    assert result.candidate.compliance_rate == 0.0


def test_a_clean_history_raises_nothing(conn: psycopg.Connection[Any]) -> None:
    _store(conn, 23.5)
    stricter = clause_file_with(**STRICTER).clauses[0]
    result = backtest(conn, PUBLIC_SITE, stricter, SINCE, UNTIL)
    assert result.candidate.alerts == 0 and result.candidate.compliance_rate == 1.0
    assert result.in_force is not None and result.in_force.alerts == 0


def test_bad_periods_are_refused(conn: psycopg.Connection[Any]) -> None:
    version = clause_file_with().clauses[0]
    with pytest.raises(BacktestError):
        backtest(conn, PUBLIC_SITE, version, UNTIL, SINCE)
    with pytest.raises(BacktestError):
        backtest(conn, "no-such-site", version, SINCE, UNTIL)


def _yaml() -> str:
    return yaml.safe_dump(
        {
            "standard": {"code": "TEST-1", "title": "测试标准", "edition": "2026"},
            "clauses": [{**TEST_CLAUSE, **STRICTER}],
        },
        allow_unicode=True,
    )


def test_backtest_command(
    conn: psycopg.Connection[Any],
    register_db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _store(conn, 27.0)
    clause_path = tmp_path / "stricter.yaml"
    clause_path.write_text(_yaml(), encoding="utf-8")
    code = main(
        [
            "backtest",
            str(clause_path),
            "--site",
            PUBLIC_SITE,
            "--from",
            "2026-08-03",
            "--to",
            "2026-08-03",
            "--database-url",
            register_db_url,
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "candidate  : v2 would raise 2 alerts (2 violations)" in out
    assert "in force   : v1 would raise 0 alerts (0 violations)" in out


def test_backtest_endpoint_is_for_admins(
    conn: psycopg.Connection[Any], client: TestClient, admin_token: str, register_db_url: str
) -> None:
    _store(conn, 27.0)
    body = {
        "yaml": _yaml(),
        "site": PUBLIC_SITE,
        "since": SINCE.isoformat(),
        "until": UNTIL.isoformat(),
    }
    answer = client.post("/api/v1/register/backtest", json=body, headers=auth(admin_token))
    assert answer.status_code == 200, answer.text
    [result] = answer.json()
    assert result["candidate"]["violations"] == 2 and result["in_force"]["violations"] == 0
    from api.tokens import create_token

    with psycopg.connect(register_db_url) as admin:
        viewer, _ = create_token(admin, "viewer", (), "viewer")
    refused = client.post("/api/v1/register/backtest", json=body, headers=auth(viewer))
    assert refused.status_code == 403
    broken = client.post(
        "/api/v1/register/backtest",
        json={**body, "yaml": "clauses: [ {"},
        headers=auth(admin_token),
    )
    assert broken.status_code == 422


def test_an_obligation_backtest_replays_stored_events(conn: psycopg.Connection[Any]) -> None:
    """Toilets cleaned every 90 minutes of a workday: fine under the 2 h rule in force, overdue
    under an hourly one."""
    jinan = dt.timezone(dt.timedelta(hours=8))
    day = dt.datetime(2026, 8, 4, tzinfo=jinan)  # a Tuesday
    readers = {
        "reader-2f-wc-east": "b1-2f-wc-east",
        "reader-2f-wc-west": "b1-2f-wc-west",
        "reader-3f-wc-east": "b1-3f-wc-east",
        "reader-3f-wc-west": "b1-3f-wc-west",
    }
    rows = [
        EventRow("demo-hq", reader, ts, "cleaning.completed", space, "保洁", i, {}, ts)
        for reader, space in readers.items()
        for i in range(7)
        for ts in [(day + dt.timedelta(hours=8, minutes=90 * i)).timestamp()]
    ]
    write_events(conn, rows)
    conn.commit()
    in_force = version_in_force(conn, "toilet.cleaning", day.date())
    assert in_force is not None
    hourly = in_force.model_copy(
        update={"version": 2, "check": in_force.check.model_copy(update={"every": 3600.0})}
    )
    result = backtest(conn, "demo-hq", hourly, day, day + dt.timedelta(days=1))
    assert result.events == 28
    assert result.in_force is not None and result.in_force.alerts == 0
    assert result.candidate.alerts >= 4
    assert {r.space for r in result.candidate.raised} == set(readers.values())


def test_a_new_clause_has_nothing_in_force_beside_it(conn: psycopg.Connection[Any]) -> None:
    _store(conn, 27.0)
    new = clause_file_with(id="test.temp.max.new", **STRICTER).clauses[0]
    result = backtest(conn, PUBLIC_SITE, new, SINCE, UNTIL)
    assert result.in_force is None and result.candidate.violations == 2
