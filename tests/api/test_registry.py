"""Registry reads and admin edits through the API: every edit lands in the ledger with the token
that made it, and the chain still verifies."""

from __future__ import annotations

import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import auth

pytestmark = pytest.mark.integration


def test_party_and_assignment_edits_are_recorded(
    client: TestClient, tokens: dict[tuple[str, str], str], api_database_url: str
) -> None:
    headers = auth(tokens[("admin", "site-a")])
    party = {"site": "site-a", "id": "zhao-li", "name": "赵丽", "contacts": {"phone": "138"}}
    created = client.post("/api/v1/parties", json=party, headers=headers)
    assert created.status_code == 201, created.text
    assert client.post("/api/v1/parties", json=party, headers=headers).status_code == 409
    changed = client.patch(
        "/api/v1/parties/site-a/zhao-li", json={"kind": "contractor"}, headers=headers
    )
    assert changed.json()["kind"] == "contractor"
    assert changed.json()["contacts"] == {"phone": "138"}

    assignment = {
        "site": "site-a",
        "party": "zhao-li",
        "space": "room-1",
        "domain": "indoor_climate",
        "valid_from": "2026-03-01T00:00:00+08:00",
    }
    added = client.post("/api/v1/assignments", json=assignment, headers=headers)
    assert added.status_code == 201, added.text
    assignment_id = added.json()["id"]
    ended = client.patch(
        f"/api/v1/assignments/{assignment_id}",
        json={"valid_to": "2026-06-01T00:00:00+08:00"},
        headers=headers,
    )
    assert ended.json()["valid_to"] == "2026-05-31T16:00:00Z"
    in_force = client.get(
        "/api/v1/assignments",
        params={"site": "site-a", "at": "2026-07-01T00:00:00+08:00"},
        headers=headers,
    ).json()
    assert assignment_id not in {a["id"] for a in in_force}

    with psycopg.connect(api_database_url) as conn:
        kinds = conn.execute(
            "SELECT kind, payload FROM ledger WHERE entity IN (%s, %s) ORDER BY seq",
            ("party:site-a/zhao-li", f"assignment:{assignment_id}"),
        ).fetchall()
    assert [kind for kind, _ in kinds] == [
        "party.added",
        "party.changed",
        "assignment.added",
        "assignment.ended",
    ]
    assert all('"actor":"token:' in payload for _, payload in kinds)
    verdict = client.get("/api/v1/ledger/verify", headers=auth(tokens[("admin", "all")])).json()
    assert verdict["ok"] is True and verdict["checked"] >= 4


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/parties", {"site": "site-a", "id": "Bad Id", "name": "x"}, "id"),
        ("/api/v1/parties", {"site": "site-a", "id": "ok", "name": "x", "role": "boss"}, "role"),
        ("/api/v1/parties", {"site": "site-a", "id": "ok", "name": "  "}, "name"),
        (
            "/api/v1/assignments",
            {"site": "site-a", "party": "fm-1", "space": "b1", "valid_from": "2026-01-01T00:00"},
            "valid_from",
        ),
        (
            "/api/v1/assignments",
            {
                "site": "site-a",
                "party": "fm-1",
                "space": "b1",
                "valid_from": "2026-02-01T00:00:00Z",
                "valid_to": "2026-01-01T00:00:00Z",
            },
            "valid_to",
        ),
    ],
)
def test_bad_registry_input_is_a_field_error(
    client: TestClient, tokens: dict[tuple[str, str], str], path: str, body: object, field: str
) -> None:
    response = client.post(path, json=body, headers=auth(tokens[("admin", "all")]))
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][-1] == field


def test_an_assignment_needs_a_known_party_and_space(
    client: TestClient, tokens: dict[tuple[str, str], str]
) -> None:
    headers = auth(tokens[("admin", "all")])
    base = {"site": "site-a", "valid_from": "2026-01-01T00:00:00Z"}
    nobody = client.post(
        "/api/v1/assignments", json={**base, "party": "nobody", "space": "b1"}, headers=headers
    )
    assert (nobody.status_code, nobody.json()["detail"]) == (404, "party not found")
    nowhere = client.post(
        "/api/v1/assignments", json={**base, "party": "fm-1", "space": "attic"}, headers=headers
    )
    assert (nowhere.status_code, nowhere.json()["detail"]) == (404, "space not found")


def test_device_status_lists_the_latest_status_of_the_tokens_sites(
    client: TestClient, tokens: dict[tuple[str, str], str], api_database_url: str
) -> None:
    with psycopg.connect(api_database_url) as conn:
        conn.execute(
            "INSERT INTO device_status (site, device, online, received_at) VALUES"
            " ('site-a', 'gw-1', false, '2026-07-01T08:00:00Z'),"
            " ('site-b', 'gw-2', true, '2026-07-01T08:00:00Z')"
            " ON CONFLICT DO NOTHING"
        )
    seen = client.get("/api/v1/device-status", headers=auth(tokens[("viewer", "site-a")]))
    assert seen.json() == [
        {
            "site": "site-a",
            "device": "gw-1",
            "status": "offline",
            "received_at": "2026-07-01T08:00:00Z",
            "sources": None,  # a gateway's health report of its sources: none sent here
        }
    ]


def test_a_last_done_date_is_set_by_an_admin_and_recorded(
    client: TestClient, tokens: dict[tuple[str, str], str], api_database_url: str
) -> None:
    """Issue 17, defect 4: an admin gives a space's last-done time of a task (or clause); the
    ledger names the token that set it."""
    headers = auth(tokens[("admin", "site-a")])
    url = "/api/v1/spaces/site-a/room-1/last-done/maintenance.done"
    body = {"done_at": "2026-06-28T09:00:00+08:00"}
    put = client.put(url, json=body, headers=headers)
    assert put.status_code == 200, put.text
    assert put.json()["done_at"] == "2026-06-28T01:00:00Z"
    assert (
        client.put(url, json={"done_at": "2026-06-28T09:00:00"}, headers=headers).status_code == 422
    )
    missing = client.put(url.replace("room-1", "nowhere"), json=body, headers=headers)
    assert missing.status_code == 404
    with psycopg.connect(api_database_url) as conn:
        (payload,) = conn.execute(
            "SELECT payload::jsonb FROM ledger WHERE entity = %s ORDER BY seq DESC LIMIT 1",
            ("last_done:site-a/room-1/maintenance.done",),
        ).fetchone() or (None,)
    assert payload is not None and payload["actor"].startswith("token:")
    assert payload["done_at"] == "2026-06-28T09:00:00+08:00"
