"""Access rules of the register's endpoints (docs/api.md): every role reads; producing reports is
for facility managers and admins, backtests for admins; a site-scoped token gets 403 for
another site it names, 404 for another site's report by id, and only its own sites in lists,
clause details and organisation roll-ups."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.tokens import create_token
from compliance.reports import generate_report
from tests.compliance.conftest import PRIVATE_SITE, PUBLIC_SITE, auth

pytestmark = pytest.mark.integration
NOW = dt.datetime(2026, 11, 22, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def scoped(register_db_url: str) -> dict[str, str]:
    """role → a token of pub-site alone."""
    made = {}
    with psycopg.connect(register_db_url) as conn:
        for role in ("viewer", "facility_manager", "energy_officer", "admin"):
            made[role], _ = create_token(conn, role, (PUBLIC_SITE,), f"{role} of pub-site")
    return made


def test_every_role_reads_the_register_and_statistics(
    client: TestClient, scoped: dict[str, str]
) -> None:
    for token in scoped.values():
        assert client.get("/api/v1/register", headers=auth(token)).status_code == 200
        answer = client.get(f"/api/v1/statistics/site/{PUBLIC_SITE}", headers=auth(token))
        assert answer.status_code == 200
        assert client.get("/api/v1/reports", headers=auth(token)).status_code == 200


def test_a_scoped_token_sees_only_its_sites(
    conn: psycopg.Connection[Any], client: TestClient, scoped: dict[str, str]
) -> None:
    token = scoped["viewer"]
    other = client.get(f"/api/v1/statistics/site/{PRIVATE_SITE}", headers=auth(token))
    assert other.status_code == 403
    assert (
        client.get(f"/api/v1/reports?site={PRIVATE_SITE}", headers=auth(token)).status_code == 403
    )
    org = client.get("/api/v1/statistics/org", params={"path": "jinan"}, headers=auth(token))
    assert org.status_code == 200 and org.json()["node"]["sites"] == [PUBLIC_SITE]
    detail = client.get("/api/v1/register/test.temp.max", headers=auth(token)).json()
    assert [s["site"] for s in detail["sites"]] == [PUBLIC_SITE]
    own_id, _ = generate_report(conn, PUBLIC_SITE, "2026Q3", "test", NOW)
    other_id, _ = generate_report(conn, PRIVATE_SITE, "2026Q3", "test", NOW)
    conn.commit()
    listed = client.get("/api/v1/reports", headers=auth(token)).json()
    assert [r["id"] for r in listed] == [own_id]
    for suffix in ("", "/html", "/csv"):
        hidden = client.get(f"/api/v1/reports/{other_id}{suffix}", headers=auth(token))
        assert hidden.status_code == 404
        assert (
            client.get(f"/api/v1/reports/{own_id}{suffix}", headers=auth(token)).status_code == 200
        )


def test_who_may_produce_reports_and_run_backtests(
    client: TestClient, scoped: dict[str, str]
) -> None:
    body = {"site": PUBLIC_SITE, "period": "2026Q2"}
    expected = {"viewer": 403, "energy_officer": 403, "facility_manager": 201, "admin": 201}
    for role, status in expected.items():
        answer = client.post("/api/v1/reports", json=body, headers=auth(scoped[role]))
        assert answer.status_code == status, role
    other = {"site": PRIVATE_SITE, "period": "2026Q2"}
    assert (
        client.post("/api/v1/reports", json=other, headers=auth(scoped["admin"])).status_code == 403
    )
    backtest = {
        "yaml": "x: 1",
        "site": PUBLIC_SITE,
        "since": "2026-08-01T00:00:00Z",
        "until": "2026-08-02T00:00:00Z",
    }
    for role in ("viewer", "facility_manager", "energy_officer"):
        refused = client.post(
            "/api/v1/register/backtest", json=backtest, headers=auth(scoped[role])
        )
        assert refused.status_code == 403, role
    invalid = client.post("/api/v1/register/backtest", json=backtest, headers=auth(scoped["admin"]))
    assert invalid.status_code == 422


def test_bad_periods_are_field_errors(client: TestClient, scoped: dict[str, str]) -> None:
    answer = client.get(
        f"/api/v1/statistics/site/{PUBLIC_SITE}",
        params={"since": "2026-09-01T00:00:00Z", "until": "2026-08-01T00:00:00Z"},
        headers=auth(scoped["viewer"]),
    )
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["query", "since"]
    missing = client.get("/api/v1/statistics/site/nowhere", headers=auth(scoped["admin"]))
    assert missing.status_code == 403  # named outside the token's scope
