"""`/silences` and `/maintenance` (issue 20): who may set them where, bounded input with clear
4xx answers, retroactive windows for unscoped admins only, and the alert showing its silence."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
from fastapi.testclient import TestClient

from store.times import wall_now
from tests.api.conftest import auth, insert_alert


def _iso(delta_h: float) -> str:
    return (wall_now() + dt.timedelta(hours=delta_h)).isoformat()


def _body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "site": "site-a",
        "scope": "space",
        "target": "b1",
        "ends_at": _iso(2),
        "reason": "会议室空调更换",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def test_a_facility_manager_silences_its_own_sites_only(
    client: TestClient, tokens: dict[tuple[str, str], str]
) -> None:
    manager = auth(tokens[("facility_manager", "site-a")])
    created = client.post("/api/v1/silences", json=_body(), headers=manager)
    assert created.status_code == 201, created.text
    silence = created.json()
    assert (silence["kind"], silence["scope"], silence["target"], silence["active"]) == (
        "silence",
        "space",
        "b1",
        True,
    )
    assert silence["created_by"].endswith("(facility_manager of a)")
    other = client.post("/api/v1/silences", json=_body(site="site-b"), headers=manager)
    assert other.status_code == 403
    viewer = auth(tokens[("viewer", "site-a")])
    assert client.post("/api/v1/silences", json=_body(), headers=viewer).status_code == 403
    listed = client.get("/api/v1/silences", headers=viewer).json()["items"]
    assert silence["id"] in [item["id"] for item in listed]
    assert client.get("/api/v1/silences?site=site-b", headers=viewer).status_code == 403
    # Site b's silences are not site a's to see or cancel.
    admin = auth(tokens[("admin", "all")])
    theirs = client.post("/api/v1/silences", json=_body(site="site-b"), headers=admin).json()
    assert theirs["id"] not in [item["id"] for item in listed]
    assert (
        client.post(f"/api/v1/silences/{theirs['id']}/cancel", headers=manager).status_code == 404
    )
    cancelled = client.post(f"/api/v1/silences/{silence['id']}/cancel", headers=manager)
    assert cancelled.status_code == 200 and cancelled.json()["active"] is False
    again = client.post(f"/api/v1/silences/{silence['id']}/cancel", headers=manager)
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]
    listed = client.get("/api/v1/silences", headers=viewer).json()["items"]
    assert silence["id"] not in [item["id"] for item in listed]
    ended = client.get("/api/v1/silences?include_ended=true", headers=viewer).json()["items"]
    assert silence["id"] in [item["id"] for item in ended]


def test_bad_input_is_a_clear_4xx(client: TestClient, tokens: dict[tuple[str, str], str]) -> None:
    manager = auth(tokens[("facility_manager", "all")])
    cases: list[tuple[dict[str, Any], int, str]] = [
        (_body(ends_at=_iso(-1), starts_at=_iso(-2)), 422, "already be over"),
        (_body(starts_at=_iso(3)), 422, "after starts_at"),
        (_body(target=None), 422, "target is required"),
        (_body(scope="site"), 422, "target is required"),
        (_body(target="no-such-room"), 404, "space 'no-such-room' not found"),
        (_body(scope="clause", target="no.such.clause"), 404, "clause"),
        (_body(site="nowhere"), 404, "site 'nowhere' not found"),
        (_body(ends_at=_iso(24 * 100)), 422, "90 days"),
        (_body(reason="x" * 501), 422, "reason"),
        (_body(reason="  "), 422, "reason"),
        (_body(scope="floor"), 422, "scope"),
        (_body(extra=1), 422, "extra"),
        (_body(ends_at="tomorrow"), 422, "ends_at"),
    ]
    for body, code, words in cases:
        answer = client.post("/api/v1/silences", json=body, headers=manager)
        assert answer.status_code == code, (body, answer.text)
        assert words in answer.text, (body, answer.text)
    assert client.get("/api/v1/silences?limit=501", headers=manager).status_code == 422
    assert client.post("/api/v1/silences/0/cancel", headers=manager).status_code == 422
    assert client.post("/api/v1/silences/99999/cancel", headers=manager).status_code == 404


def test_only_an_unscoped_admin_declares_a_window_that_began_in_the_past(
    client: TestClient, tokens: dict[tuple[str, str], str]
) -> None:
    past = _body(scope="site", target=None, starts_at=_iso(-5), ends_at=_iso(-1))
    for who in (("facility_manager", "all"), ("admin", "site-a")):
        refused = client.post("/api/v1/maintenance", json=past, headers=auth(tokens[who]))
        assert refused.status_code == 403, who
        assert "only an administrator" in refused.json()["detail"]
    admin = auth(tokens[("admin", "all")])
    window = client.post("/api/v1/maintenance", json=past, headers=admin)
    assert window.status_code == 201, window.text
    assert (window.json()["retroactive"], window.json()["active"]) == (True, False)
    # In advance, anyone who may act on the site's alerts.
    ahead = _body(starts_at=_iso(24), ends_at=_iso(30))
    manager = auth(tokens[("facility_manager", "site-a")])
    planned = client.post("/api/v1/maintenance", json=ahead, headers=manager)
    assert planned.status_code == 201 and planned.json()["retroactive"] is False
    listed = client.get("/api/v1/maintenance", headers=manager).json()["items"]
    assert [item["id"] for item in listed] == [planned.json()["id"]]
    cancelled = client.post(f"/api/v1/maintenance/{planned.json()['id']}/cancel", headers=manager)
    assert cancelled.status_code == 200
    figures = client.get("/api/v1/compliance?site=site-a", headers=manager).json()
    assert figures["sites"][0]["exempt_s"] == 0.0


def test_the_alert_shows_the_silence_holding_back_its_messages(
    client: TestClient, tokens: dict[tuple[str, str], str], api_database_url: str
) -> None:
    with psycopg.connect(api_database_url) as conn:
        alert_id = insert_alert(conn, "site-a", space="room-1")
    reader = auth(tokens[("viewer", "site-a")])
    assert client.get(f"/api/v1/alerts/{alert_id}", headers=reader).json()["silenced_by"] is None
    manager = auth(tokens[("facility_manager", "site-a")])
    body = _body(scope="device", target="th-1")
    silence = client.post("/api/v1/silences", json=body, headers=manager).json()
    detail = client.get(f"/api/v1/alerts/{alert_id}", headers=reader).json()
    assert detail["silenced_by"] == silence["id"]
    client.post(f"/api/v1/silences/{silence['id']}/cancel", headers=manager)
    assert client.get(f"/api/v1/alerts/{alert_id}", headers=reader).json()["silenced_by"] is None
