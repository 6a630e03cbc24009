"""/api/v1/notification-routes (issue 20): what an admin of one site may do with routes, and
what every admin gets back for bad input. Who may call at all: tests/api/test_authorization.py."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from alerts import webhooks
from tests.api.conftest import T0, auth

pytestmark = pytest.mark.integration
URL = "/api/v1/notification-routes"


@pytest.fixture(scope="module")
def targets(api_database_url: str) -> None:
    with psycopg.connect(api_database_url) as conn:
        for name, site in (("district-wecom", None), ("site-a-mail", "site-a")):
            target = webhooks.Target(
                name, "https://hook.example.cn/x", "s" * 20, site=site, broadcast=False
            )
            webhooks.add_target(conn, target, "test", now=T0)
        conn.commit()


def _body(**fields: Any) -> dict[str, Any]:
    return {"name": "r", "sites": ["site-a"], "receivers": ["district-wecom"], **fields}


def test_a_site_admin_manages_routes_of_its_own_sites_only(
    client: TestClient, tokens: dict[tuple[str, str], str], targets: None
) -> None:
    scoped, unscoped = auth(tokens[("admin", "site-a")]), auth(tokens[("admin", "all")])
    made = client.post(
        URL,
        json=_body(name="a-climate", match={"domains": ["indoor_climate"]}, group_wait="2m"),
        headers=scoped,
    )
    assert made.status_code == 201, made.text
    route = made.json()
    assert (route["group_wait_s"], route["group_interval_s"], route["continue"]) == (
        120,
        300,
        False,
    )
    assert route["source"] == "api" and route["created_by"].startswith("token:")
    # A route for every site, the default route and another site's: unscoped admins only.
    for body in (
        _body(name="everywhere", sites=[]),
        _body(name="fallback", sites=[], default=True),
        _body(name="b-too", sites=["site-a", "site-b"]),
    ):
        assert client.post(URL, json=body, headers=scoped).status_code == 403, body
    everywhere = client.post(URL, json=_body(name="everywhere", sites=[]), headers=unscoped)
    assert everywhere.status_code == 201, everywhere.text
    # The site's admin does not see it, nor may it change or remove it (as if it did not exist).
    seen = [r["name"] for r in client.get(URL, headers=scoped).json()]
    assert "a-climate" in seen and "everywhere" not in seen
    global_id = everywhere.json()["id"]
    replaced = client.put(f"{URL}/{global_id}", json=_body(name="everywhere"), headers=scoped)
    assert replaced.status_code == 404
    assert client.delete(f"{URL}/{global_id}", headers=scoped).status_code == 404
    # Its own: replaced (keeping its place), then removed.
    own = route["id"]
    again = client.put(
        f"{URL}/{own}", json=_body(name="a-climate", receivers=["site-a-mail"]), headers=scoped
    )
    assert again.status_code == 200, again.text
    assert again.json()["receivers"] == ["site-a-mail"]
    assert again.json()["position"] == route["position"]
    assert client.delete(f"{URL}/{own}", headers=scoped).status_code == 204
    assert client.delete(f"{URL}/{global_id}", headers=unscoped).status_code == 204


def test_bad_routes_are_refused_with_a_reason(
    client: TestClient, tokens: dict[tuple[str, str], str], targets: None
) -> None:
    headers = auth(tokens[("admin", "all")])
    cases = [
        (_body(receivers=["nobody"]), 422, "no webhook target named ['nobody']"),
        (_body(sites=[], receivers=["site-a-mail"]), 422, "serves site site-a only"),
        (_body(sites=["site-z"]), 422, "unknown sites: ['site-z']"),
        (_body(group_wait="3h"), 422, "group_wait is at most 1h"),
        (_body(match={"colour": ["red"]}), 422, "colour"),
        (_body(receivers=[]), 422, "receivers"),
    ]
    for body, code, words in cases:
        response = client.post(URL, json=body, headers=headers)
        assert response.status_code == code, (body, response.text)
        assert words in response.text, response.text
    assert client.post(URL, json=_body(name="dup"), headers=headers).status_code == 201
    taken = client.post(URL, json=_body(name="dup"), headers=headers)
    assert taken.status_code == 409 and "dup" in taken.text
