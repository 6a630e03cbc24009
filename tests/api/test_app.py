"""The app itself: no connection at import or creation, the dashboard and its files, and the
shape of an unexpected error (a logged 500 in the API's error shape, never a text page)."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from api.app import create_app

pytestmark = pytest.mark.integration


def test_creating_the_app_opens_nothing() -> None:
    app = create_app("postgresql://nobody@127.0.0.1:1/none")  # would fail to connect
    assert "/api/v1/alerts" in app.openapi()["paths"]


def test_dashboard_files_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "dashboard.js" in page.text
    assert client.get("/static/dashboard.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/docs").status_code == 200


def test_a_notifications_link_serves_the_dashboard(client: TestClient) -> None:
    """Issue 20: messages link to /alerts/{id}; the dashboard opens that alert."""
    page = client.get("/alerts/42")
    assert page.status_code == 200 and "dashboard.js" in page.text
    assert page.headers["content-type"].startswith("text/html")
    assert client.get("/alerts/not-a-number").status_code == 422
    assert "/alerts/" in client.get("/static/dashboard.js").text


def test_the_dashboard_links_every_page_and_each_is_served(client: TestClient) -> None:
    page = client.get("/").text
    for path in ("/energy", "/register", "/statistics", "/sites"):
        assert f'href="{path}"' in page, path
        served = client.get(path)
        assert served.status_code == 200 and served.headers["content-type"].startswith("text/html")


def test_an_unexpected_error_is_logged_and_answered_as_json(
    api_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(api_database_url)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    with TestClient(app, raise_server_exceptions=False) as client, caplog.at_level(logging.ERROR):
        response = client.get("/boom")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error; it has been logged"}
    assert any("GET /boom" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    "url",
    ["/api/v1/alerts?clause=a%00b", "/api/v1/alerts?space=%00", "/api/v1/clauses/x%00y/versions"],
)
def test_a_nul_character_in_the_url_is_bad_input_not_a_database_error(
    client: TestClient, tokens: dict[tuple[str, str], str], url: str
) -> None:
    admin = next(token for (role, _), token in tokens.items() if role == "admin")
    response = client.get(url, headers={"Authorization": f"Bearer {admin}"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"] == "NUL characters are not allowed"
