"""Per-user subscriptions and contact points through the API (issue 20): a user's own, by
session; an unscoped admin's for anyone; a site outside the user's scope refused."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from alerts import webhooks
from api.app import create_app
from api.users import create_user
from tests.api.conftest import T0, TEST_STREAM, auth
from tests.api.test_users_sessions import PASSWORD, csrf, sign_in


@pytest.fixture(scope="module")
def prepared(api_database_url: str) -> str:
    with psycopg.connect(api_database_url) as conn:
        create_user(conn, "zhaolei", "facility_manager", PASSWORD, sites=("site-a",))
        create_user(conn, "qianmin", "viewer", PASSWORD, sites=("site-b",))
        target = webhooks.Target(
            "mail", "smtp://127.0.0.1:2525", "", site=None, level=None, broadcast=False,
            kind="email", options={"sender": "alerts@cw.example.cn"},
        )  # fmt: skip
        webhooks.add_target(conn, target, "test", now=T0)
    return api_database_url


@pytest.fixture
def browser(prepared: str) -> Iterator[TestClient]:
    app = create_app(prepared, stream=TEST_STREAM)
    with TestClient(app, client=("10.0.0.7", 50000)) as client:
        yield client


def test_contact_points_are_the_users_own_and_an_admins(
    browser: TestClient, tokens: dict[tuple[str, str], str]
) -> None:
    assert sign_in(browser, "zhaolei").status_code == 200
    bad = browser.put(
        "/api/v1/me/contacts", json={"email": "not an address"}, headers=csrf(browser)
    )
    assert bad.status_code == 422
    contacts = {"email": "zhao.lei@cw.example.cn", "mobile": "+8613800138000"}
    put = browser.put("/api/v1/me/contacts", json=contacts, headers=csrf(browser))
    assert put.status_code == 200, put.text
    assert browser.get("/api/v1/me/contacts").json() == contacts
    browser.delete("/api/v1/session", headers=csrf(browser))
    assert sign_in(browser, "qianmin").status_code == 200
    assert browser.get("/api/v1/me/contacts").json() == {"email": None, "mobile": None}
    # A token is no user; only an unscoped admin reads another user's contact points.
    admin = auth(tokens[("admin", "all")])
    scoped = auth(tokens[("admin", "site-a")])
    assert browser.get("/api/v1/me/contacts", headers=admin).status_code == 403
    assert browser.get("/api/v1/users/zhaolei/contacts", headers=scoped).status_code == 403
    assert browser.get("/api/v1/users/zhaolei/contacts", headers=admin).json() == contacts


def test_a_user_subscribes_within_their_scope_only(
    browser: TestClient, tokens: dict[tuple[str, str], str]
) -> None:
    assert sign_in(browser, "zhaolei").status_code == 200
    headers = csrf(browser)
    browser.put("/api/v1/me/contacts", json={"email": "zhao.lei@cw.example.cn"}, headers=headers)
    spec = {"name": "cold", "sites": ["site-b"], "match": {"severities": ["critical"]}}
    refused = browser.post("/api/v1/me/subscriptions", json=spec, headers=headers)
    assert refused.status_code == 403 and "site-b" in refused.json()["detail"]
    no_sms = browser.post(
        "/api/v1/me/subscriptions", json={**spec, "sites": ["site-a"], "channels": ["sms"]},
        headers=headers,
    )  # fmt: skip
    assert no_sms.status_code == 422
    made = browser.post(
        "/api/v1/me/subscriptions", json={**spec, "sites": ["site-a"]}, headers=headers
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert (body["name"], body["sites"], body["channels"]) == ("cold", ["site-a"], ["email"])
    again = browser.post(
        "/api/v1/me/subscriptions", json={**spec, "sites": ["site-a"]}, headers=headers
    )
    assert again.status_code == 409
    assert [s["id"] for s in browser.get("/api/v1/me/subscriptions").json()] == [body["id"]]
    # Not among the deployment's routes; the admin sees it under the user.
    admin = auth(tokens[("admin", "all")])
    assert browser.get("/api/v1/notification-routes", headers=admin).json() == []
    listed = browser.get("/api/v1/users/zhaolei/subscriptions", headers=admin).json()
    assert [s["id"] for s in listed] == [body["id"]]
    gone = browser.delete(f"/api/v1/me/subscriptions/{body['id']}", headers=headers)
    assert gone.status_code == 204
    assert browser.get("/api/v1/me/subscriptions").json() == []
