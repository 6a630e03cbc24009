"""Alerts through the API: listing with filters and cursor pagination, detail, and the two
lifecycle steps people take (acknowledge, close)."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import T0, add_timeline, auth, insert_alert

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def seeded(api_database_url: str) -> dict[str, list[int]]:
    """Seven alerts in site-a an hour apart, two in site-b."""
    ids: dict[str, list[int]] = {"site-a": [], "site-b": []}
    with psycopg.connect(api_database_url) as conn:
        for i in range(7):
            severity = "critical" if i % 3 == 0 else "warning"
            at = T0 + dt.timedelta(hours=i)
            ids["site-a"].append(insert_alert(conn, "site-a", started_at=at, severity=severity))
        for i in range(2):
            at = T0 + dt.timedelta(hours=i)
            ids["site-b"].append(insert_alert(conn, "site-b", started_at=at))
    return ids


def test_pages_walk_every_alert_once_newest_first(
    client: TestClient, tokens: dict[tuple[str, str], str], seeded: dict[str, list[int]]
) -> None:
    headers = auth(tokens[("viewer", "site-a")])
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        response = client.get("/api/v1/alerts", params=params, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        seen.extend(item["id"] for item in page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(seeded["site-a"]))


def test_filters_by_severity_and_time(
    client: TestClient, tokens: dict[tuple[str, str], str], seeded: dict[str, list[int]]
) -> None:
    headers = auth(tokens[("viewer", "all")])
    response = client.get(
        "/api/v1/alerts",
        params={"severity": "critical", "site": "site-a", "since": T0.isoformat()},
        headers=headers,
    )
    assert [a["id"] for a in response.json()["items"]] == [
        seeded["site-a"][6],
        seeded["site-a"][3],
        seeded["site-a"][0],
    ]
    window = {
        "since": (T0 + dt.timedelta(hours=1)).isoformat(),
        "until": (T0 + dt.timedelta(hours=3)).isoformat(),
    }
    response = client.get("/api/v1/alerts", params={**window, "site": "site-a"}, headers=headers)
    assert [a["id"] for a in response.json()["items"]] == [seeded["site-a"][2], seeded["site-a"][1]]
    response = client.get(
        "/api/v1/alerts", params={"space": "b1", "site": "site-b"}, headers=headers
    )
    assert {a["id"] for a in response.json()["items"]} == set(seeded["site-b"])


def test_detail_carries_provenance_evidence_and_timeline(
    client: TestClient, tokens: dict[tuple[str, str], str], seeded: dict[str, list[int]]
) -> None:
    alert_id = seeded["site-a"][0]
    response = client.get(f"/api/v1/alerts/{alert_id}", headers=auth(tokens[("viewer", "site-a")]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["clause"]["id"] == "temp.cooling.min"
    assert body["clause"]["standard"] == "建科〔2008〕115号"
    assert body["clause"]["number"] == "第三条"
    assert "26" in body["clause"]["text"]
    assert body["clause"]["params"] == {"limit": 26.0, "tolerance": 0.3}
    assert body["responsible"] == {"party": "fm-1", "name": "王工"}
    assert body["subject"] == {"space": "room-1", "device": "th-1", "metric": "temperature"}
    assert len(body["evidence"]) == 5
    assert [entry["action"] for entry in body["timeline"]] == ["raised"]


@pytest.mark.parametrize(
    ("cursor", "field"),
    [("not-a-cursor", "cursor"), ("WyJ4IiwgMV0", "cursor")],
)
def test_a_bad_cursor_is_a_field_error(
    client: TestClient, tokens: dict[tuple[str, str], str], cursor: str, field: str
) -> None:
    response = client.get(
        "/api/v1/alerts", params={"cursor": cursor}, headers=auth(tokens[("viewer", "all")])
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", field]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"state": "burning"}, "state"),
        ({"limit": 0}, "limit"),
        ({"since": "yesterday"}, "since"),
        ({"site": "Site A"}, "site"),
    ],
)
def test_bad_filters_are_field_errors(
    client: TestClient, tokens: dict[tuple[str, str], str], params: dict[str, object], field: str
) -> None:
    response = client.get("/api/v1/alerts", params=params, headers=auth(tokens[("viewer", "all")]))
    assert response.status_code == 422
    assert [error["loc"][1] for error in response.json()["detail"]] == [field]


def test_acknowledge_resolve_close(
    client: TestClient, tokens: dict[tuple[str, str], str], api_database_url: str
) -> None:
    with psycopg.connect(api_database_url) as conn:
        # A subject of its own: a later violation of the same subject would block closing.
        alert_id = insert_alert(conn, "site-a", started_at=T0 - dt.timedelta(days=1), space="b1")
    headers = auth(tokens[("facility_manager", "site-a")])
    url = f"/api/v1/alerts/{alert_id}"
    response = client.post(f"{url}/ack", json={"note": "on my way"}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "acknowledged"
    assert response.json()["acknowledged_note"] == "on my way"
    assert client.post(f"{url}/ack", json={}, headers=headers).status_code == 409
    action = {"cause": "setpoint at 24 °C", "corrective_action": "setpoint back to 26 °C"}
    still_firing = client.post(f"{url}/close", json=action, headers=headers)
    assert still_firing.status_code == 409
    assert "resolved" in still_firing.json()["detail"]

    with psycopg.connect(api_database_url) as conn:  # the engine saw the condition clear
        ended = T0 - dt.timedelta(hours=20)
        conn.execute(
            "UPDATE alerts SET state = 'resolved', ended_at = %s WHERE id = %s", (ended, alert_id)
        )
        add_timeline(conn, alert_id, "site-a", "resolved", ended)

    missing = client.post(f"{url}/close", json={"cause": "x"}, headers=headers)
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["body", "corrective_action"]
    blank = client.post(f"{url}/close", json={**action, "cause": "  "}, headers=headers)
    assert blank.status_code == 422
    closed = client.post(f"{url}/close", json=action, headers=headers)
    assert closed.status_code == 200, closed.text
    body = closed.json()
    assert body["state"] == "closed"
    assert (body["cause"], body["corrective_action"]) == (
        action["cause"],
        action["corrective_action"],
    )
    assert [e["action"] for e in body["timeline"]] == [
        "raised",
        "acknowledged",
        "resolved",
        "closed",
    ]
    assert body["timeline"][-1]["actor"].startswith("token:")


def test_a_new_alert_does_not_shift_the_next_page(
    client: TestClient,
    tokens: dict[tuple[str, str], str],
    seeded: dict[str, list[int]],
    api_database_url: str,
) -> None:
    headers = auth(tokens[("viewer", "all")])
    params = {"site": "site-b", "limit": 1}
    first = client.get("/api/v1/alerts", params=params, headers=headers).json()
    with psycopg.connect(api_database_url) as conn:
        insert_alert(conn, "site-b", started_at=T0 + dt.timedelta(days=30))  # newest of all
    second = client.get(
        "/api/v1/alerts", params={**params, "cursor": first["next_cursor"]}, headers=headers
    ).json()
    assert [a["id"] for a in first["items"] + second["items"]] == list(reversed(seeded["site-b"]))


def test_a_nul_character_in_a_note_is_a_field_error(
    client: TestClient, tokens: dict[tuple[str, str], str], api_database_url: str
) -> None:
    with psycopg.connect(api_database_url) as conn:
        alert_id = insert_alert(conn, "site-a", space="b2")
    response = client.post(
        f"/api/v1/alerts/{alert_id}/ack",
        json={"note": "on my\u0000way"},
        headers=auth(tokens[("facility_manager", "site-a")]),
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "note"]
