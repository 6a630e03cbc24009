"""The alert desk through the API (issue 19): search and filters over the listing, history with
the cause and corrective action, the site's time zone on every alert, bulk acknowledge and
close (one note, one cause and action for the batch; refusals one by one), comments and
reassignment, each a timeline row and a ledger entry naming the person; and the alert's own
page address."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.models import MAX_BULK
from tests.api.conftest import T0, add_timeline, auth, insert_alert

pytestmark = pytest.mark.integration

CLOSE = {"cause": "设定温度被调到24℃", "corrective_action": "恢复26℃并锁定面板"}


def _ledger(url: str, alert_id: int, kind: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        return [
            orjson.loads(row[0])  # canonical JSON as text: what was hashed
            for row in conn.execute(
                "SELECT payload FROM ledger WHERE entity = %s AND kind = %s ORDER BY seq",
                (f"alert:{alert_id}", kind),
            )
        ]


def _resolve(url: str, alert_id: int, site: str = "site-a") -> None:
    """What the engine does when the condition clears (a day before T0: nothing to reverify)."""
    ended = T0 - dt.timedelta(hours=20)
    with psycopg.connect(url) as conn:
        conn.execute(
            "UPDATE alerts SET state = 'resolved', ended_at = %s WHERE id = %s", (ended, alert_id)
        )
        add_timeline(conn, alert_id, site, "resolved", ended)


def _ids(response: Any) -> list[int]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


@pytest.fixture(scope="module")
def desk(api_database_url: str) -> dict[str, int]:
    """Alerts of different clauses and spaces in site-a, one in site-b."""
    with psycopg.connect(api_database_url) as conn:
        made = {
            "room": insert_alert(conn, "site-a", space="room-1", severity="major"),
            "server": insert_alert(
                conn,
                "site-a",
                space="server",
                started_at=T0 + dt.timedelta(hours=1),
                clause_id="temp.heating.max",
            ),
            "other_site": insert_alert(conn, "site-b", space="room-1"),
        }
    return made


def test_search_finds_words_in_the_clause_subject_and_party(
    client: TestClient, tokens: dict[tuple[str, str], str], desk: dict[str, int]
) -> None:
    headers = auth(tokens[("viewer", "all")])

    def search(text: str, **more: str) -> list[int]:
        params = {"search": text, "since": T0.isoformat(), **more}
        return _ids(client.get("/api/v1/alerts", params=params, headers=headers))

    assert search("会议室", site="site-a") == [desk["room"]]  # the space's name
    assert search("SERVER") == [desk["server"]]  # the space's id, any case
    assert search("temp.heating") == [desk["server"]]  # the clause id
    assert set(search("王工 room-1")) == {desk["room"], desk["other_site"]}  # every word
    assert search("王工 nowhere") == []
    assert search("%") == []  # a LIKE wildcard is a character like any other
    assert search("th-1", severity="major") == [desk["room"]]  # with the other filters
    too_long = client.get("/api/v1/alerts", params={"search": "x" * 101}, headers=headers)
    assert too_long.status_code == 422
    assert too_long.json()["detail"][0]["loc"] == ["query", "search"]


def test_every_alert_carries_its_sites_time_zone(
    client: TestClient, tokens: dict[tuple[str, str], str], desk: dict[str, int]
) -> None:
    headers = auth(tokens[("viewer", "all")])
    listed = client.get("/api/v1/alerts", params={"since": T0.isoformat()}, headers=headers)
    assert {item["site_timezone"] for item in listed.json()["items"]} == {"Asia/Shanghai"}
    detail = client.get(f"/api/v1/alerts/{desk['room']}", headers=headers).json()
    assert detail["site_timezone"] == "Asia/Shanghai"


def test_bulk_acknowledge_does_the_allowed_and_refuses_the_rest_one_by_one(
    client: TestClient, tokens: dict[tuple[str, str], str], api_database_url: str
) -> None:
    with psycopg.connect(api_database_url) as conn:
        at = T0 - dt.timedelta(days=3)
        firing = [insert_alert(conn, "site-a", started_at=at, space="b1") for _ in range(3)]
        closed = insert_alert(conn, "site-a", started_at=at, space="b1", state="closed")
        elsewhere = insert_alert(conn, "site-b", started_at=at, space="b1")
    headers = auth(tokens[("facility_manager", "site-a")])
    batch = [*firing, closed, elsewhere, 2**62, firing[0]]
    response = client.post(
        "/api/v1/alerts/bulk/ack", json={"ids": batch, "note": "在处理"}, headers=headers
    )
    assert response.status_code == 200, response.text
    outcome = response.json()
    assert outcome["done"] == firing
    refused = {r["id"]: (r["status"], r["detail"]) for r in outcome["refused"]}
    assert refused[closed][0] == 409 and "closed" in refused[closed][1]
    assert refused[elsewhere] == (404, "alert not found")  # another site's: not even named
    assert refused[2**62] == (404, "alert not found")
    assert len(outcome["refused"]) == 3  # the repeated id was done once

    for alert_id in firing:
        detail = client.get(f"/api/v1/alerts/{alert_id}", headers=headers).json()
        assert detail["state"] == "acknowledged"
        assert detail["timeline"][-1]["action"] == "acknowledged"
        assert detail["timeline"][-1]["note"] == "在处理"
        [entry] = _ledger(api_database_url, alert_id, "alert.acknowledged")
        assert entry["actor"] == detail["timeline"][-1]["actor"]
        assert entry["actor"].startswith("token:")
    assert _ledger(api_database_url, closed, "alert.acknowledged") == []

    again = client.post("/api/v1/alerts/bulk/ack", json={"ids": firing[:1]}, headers=headers)
    assert again.json()["done"] == [] and again.json()["refused"][0]["status"] == 409


def test_bulk_close_uses_one_cause_and_action_and_lists_it_in_history(
    client: TestClient, tokens: dict[tuple[str, str], str], api_database_url: str
) -> None:
    with psycopg.connect(api_database_url) as conn:
        at = T0 - dt.timedelta(days=2)
        resolved = [insert_alert(conn, "site-a", started_at=at, space="server") for _ in range(2)]
        still_firing = insert_alert(conn, "site-a", started_at=at, space="server")
    for alert_id in resolved:
        _resolve(api_database_url, alert_id)
    headers = auth(tokens[("facility_manager", "site-a")])
    response = client.post(
        "/api/v1/alerts/bulk/close",
        json={"ids": [*resolved, still_firing], **CLOSE},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    outcome = response.json()
    assert outcome["done"] == resolved
    [refusal] = outcome["refused"]
    assert (refusal["id"], refusal["status"]) == (still_firing, 409)
    assert "still firing" in refusal["detail"]

    history = client.get(
        "/api/v1/alerts",
        params={"state": "closed", "site": "site-a", "space": "server", "until": T0.isoformat()},
        headers=headers,
    )
    assert response.status_code == 200
    items = history.json()["items"]
    assert sorted(item["id"] for item in items) == resolved
    for item in items:
        assert (item["cause"], item["corrective_action"]) == (
            CLOSE["cause"],
            CLOSE["corrective_action"],
        )
        assert item["closed_at"] is not None
        [entry] = _ledger(api_database_url, item["id"], "alert.closed")
        assert entry["cause"] == CLOSE["cause"]
    assert _ledger(api_database_url, still_firing, "alert.closed") == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ids": []}, "ids"),
        ({"ids": list(range(1, MAX_BULK + 2))}, "ids"),
        ({"ids": [0]}, "ids"),
        ({"ids": [1], "cause": " ", "corrective_action": "x"}, "cause"),
        ({"ids": [1], "cause": "x"}, "corrective_action"),
        ({"ids": [1], "cause": "x", "corrective_action": "y", "extra": 1}, "extra"),
    ],
)
def test_bad_bulk_bodies_are_field_errors(
    client: TestClient, tokens: dict[tuple[str, str], str], body: dict[str, Any], field: str
) -> None:
    headers = auth(tokens[("facility_manager", "all")])
    path = "/api/v1/alerts/bulk/close" if "cause" in body else "/api/v1/alerts/bulk/ack"
    response = client.post(path, json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][1] == field


def test_bulk_steps_need_the_right_to_act(
    client: TestClient, tokens: dict[tuple[str, str], str], desk: dict[str, int]
) -> None:
    headers = auth(tokens[("viewer", "all")])
    response = client.post("/api/v1/alerts/bulk/ack", json={"ids": [desk["room"]]}, headers=headers)
    assert response.status_code == 403


def test_comments_enter_the_timeline_and_the_ledger_in_any_state(
    client: TestClient, tokens: dict[tuple[str, str], str], api_database_url: str
) -> None:
    with psycopg.connect(api_database_url) as conn:
        alert_id = insert_alert(conn, "site-a", space="b1", state="closed")
    headers = auth(tokens[("facility_manager", "site-a")])
    url = f"/api/v1/alerts/{alert_id}/comments"
    response = client.post(url, json={"text": "  复查：面板已锁定  "}, headers=headers)
    assert response.status_code == 200, response.text
    last = response.json()["timeline"][-1]
    assert (last["action"], last["note"]) == ("commented", "复查：面板已锁定")
    [entry] = _ledger(api_database_url, alert_id, "alert.commented")
    assert (entry["actor"], entry["note"]) == (last["actor"], last["note"])

    assert client.post(url, json={"text": "   "}, headers=headers).status_code == 422
    assert client.post(url, json={"text": "x" * 4001}, headers=headers).status_code == 422
    viewer = auth(tokens[("viewer", "all")])
    assert client.post(url, json={"text": "x"}, headers=viewer).status_code == 403
    with psycopg.connect(api_database_url) as conn:
        other = insert_alert(conn, "site-b", space="b1")
    hidden = client.post(f"/api/v1/alerts/{other}/comments", json={"text": "x"}, headers=headers)
    assert hidden.status_code == 404


def test_reassignment_names_the_new_party_and_keeps_the_old_one_in_the_record(
    client: TestClient, tokens: dict[tuple[str, str], str], api_database_url: str
) -> None:
    with psycopg.connect(api_database_url) as conn:
        alert_id = insert_alert(conn, "site-a", space="b1", started_at=T0 - dt.timedelta(days=4))
        for site, party, name in (("site-a", "hvac-1", "暖通班组"), ("site-b", "only-b", "B")):
            conn.execute(
                "INSERT INTO parties (site, id, name, kind, created_by, created_at, updated_by,"
                " updated_at) VALUES (%s, %s, %s, 'contractor', 'test', %s, 'test', %s)"
                " ON CONFLICT DO NOTHING",
                (site, party, name, T0, T0),
            )
    headers = auth(tokens[("facility_manager", "site-a")])
    url = f"/api/v1/alerts/{alert_id}/reassign"
    response = client.post(url, json={"party": "hvac-1", "note": "暖通负责"}, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["responsible"] == {"party": "hvac-1", "name": "暖通班组"}
    last = body["timeline"][-1]
    assert (last["action"], last["note"]) == ("reassigned", "暖通负责")
    assert last["data"]["previous"] == {"party": "fm-1", "name": "王工"}
    [entry] = _ledger(api_database_url, alert_id, "alert.reassigned")
    assert entry["responsible"] == {"party": "hvac-1", "name": "暖通班组"}
    assert entry["actor"] == last["actor"]
    listed = client.get(
        "/api/v1/alerts", params={"search": "暖通班组", "site": "site-a"}, headers=headers
    )
    assert _ids(listed) == [alert_id]

    same = client.post(url, json={"party": "hvac-1"}, headers=headers)
    assert same.status_code == 409
    for party in ("nobody", "only-b"):  # another site's party is not this site's
        unknown = client.post(url, json={"party": party}, headers=headers)
        assert unknown.status_code == 422
        assert unknown.json()["detail"][0]["loc"] == ["body", "party"]
    bad = client.post(url, json={"party": "Not An Id"}, headers=headers)
    assert bad.status_code == 422


def test_a_closed_alert_is_not_reassigned(
    client: TestClient, tokens: dict[tuple[str, str], str], api_database_url: str
) -> None:
    with psycopg.connect(api_database_url) as conn:
        alert_id = insert_alert(conn, "site-a", space="b1", state="closed")
    response = client.post(
        f"/api/v1/alerts/{alert_id}/reassign",
        json={"party": "fm-1"},
        headers=auth(tokens[("facility_manager", "site-a")]),
    )
    assert response.status_code == 409
    assert "closed" in response.json()["detail"]


def test_each_alert_has_its_own_page(client: TestClient, desk: dict[str, int]) -> None:
    page = client.get(f"/alerts/{desk['room']}")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/dashboard.js"></script>' in page.text
    assert client.get("/alerts/0").status_code == 422
    assert client.get("/alerts/abc").status_code == 422
