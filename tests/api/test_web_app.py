"""What the browser needs beyond the API (issue 19): the site's 台账 as a download a signed-in
person or a token can fetch, within its scope, and the installable web app's manifest and
service worker, served at the root with the headers that let a phone install it."""

from __future__ import annotations

import datetime as dt
import json

import psycopg
import pytest
from fastapi.testclient import TestClient

from api import STATIC_DIR
from tests.api.conftest import T0, auth, insert_alert

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ledger_alert(api_database_url: str) -> int:
    with psycopg.connect(api_database_url) as conn:
        return insert_alert(conn, "site-a", started_at=T0 + dt.timedelta(days=40))


def test_the_ledger_downloads_as_csv_for_the_days_asked(
    client: TestClient, tokens: dict[tuple[str, str], str], ledger_alert: int
) -> None:
    day = (T0 + dt.timedelta(days=40)).date().isoformat()
    response = client.get(
        "/api/v1/alerts/ledger.csv",
        params={"site": "site-a", "first_day": day, "last_day": day},
        headers=auth(tokens[("viewer", "site-a")]),
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"] == (
        f'attachment; filename="taizhang-site-a-{day}-{day}.csv"'
    )
    text = response.content.decode("utf-8-sig")
    lines = text.strip().split("\r\n")
    assert lines[0].startswith("告警编号,站点,标准")
    assert [line.split(",")[0] for line in lines[1:]] == [str(ledger_alert)]


def test_the_ledger_keeps_to_the_scope_and_a_bounded_period(
    client: TestClient, tokens: dict[tuple[str, str], str]
) -> None:
    headers = auth(tokens[("viewer", "site-a")])
    other = client.get(
        "/api/v1/alerts/ledger.csv",
        params={"site": "site-b", "first_day": "2026-07-01", "last_day": "2026-07-31"},
        headers=headers,
    )
    assert other.status_code == 403
    backwards = client.get(
        "/api/v1/alerts/ledger.csv",
        params={"site": "site-a", "first_day": "2026-07-31", "last_day": "2026-07-01"},
        headers=headers,
    )
    assert backwards.status_code == 422
    too_long = client.get(
        "/api/v1/alerts/ledger.csv",
        params={"site": "site-a", "first_day": "2025-01-01", "last_day": "2026-07-01"},
        headers=headers,
    )
    assert too_long.status_code == 422
    assert "366 days" in too_long.text
    last = client.get(  # its end, the next day's midnight, would not exist
        "/api/v1/alerts/ledger.csv",
        params={"site": "site-a", "first_day": "9999-12-31", "last_day": "9999-12-31"},
        headers=headers,
    )
    assert last.status_code == 422
    anonymous = client.get(
        "/api/v1/alerts/ledger.csv",
        params={"site": "site-a", "first_day": "2026-07-01", "last_day": "2026-07-31"},
    )
    assert anonymous.status_code == 401


def test_the_manifest_names_the_app_and_its_icons(client: TestClient) -> None:
    response = client.get("/manifest.webmanifest")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/manifest+json"
    assert response.headers["cache-control"] == "no-cache"
    manifest = json.loads(response.content)
    assert manifest["name"] == manifest["short_name"] == "条款守望"
    assert manifest["lang"] == "zh-CN"
    english = json.loads(client.get("/manifest.webmanifest", params={"lang": "en"}).content)
    assert english["name"] == english["short_name"] == "clausewatch"
    assert english["id"] == manifest["id"] == "/"  # one app, named in two languages
    assert english["icons"] == manifest["icons"]
    assert client.get("/manifest.webmanifest", params={"lang": "fr"}).status_code == 422
    assert manifest["start_url"] == "/" and manifest["scope"] == "/"
    assert manifest["display"] == "standalone"
    sizes = {icon["sizes"] for icon in manifest["icons"] if icon["type"] == "image/png"}
    assert {"192x192", "512x512"} <= sizes
    for icon in manifest["icons"]:
        served = client.get(icon["src"])
        assert served.status_code == 200, icon["src"]
        if icon["type"] == "image/png":
            assert served.content.startswith(b"\x89PNG")
            width = int.from_bytes(served.content[16:20], "big")
            assert f"{width}x{width}" == icon["sizes"]


def test_the_service_worker_is_served_at_the_root_and_never_stores_the_api(
    client: TestClient,
) -> None:
    response = client.get("/sw.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["service-worker-allowed"] == "/"
    # The only files it stores are the offline shell's, listed once; none under /api/.
    source = (STATIC_DIR / "sw.js").read_text(encoding="utf-8")
    shell = source[
        source.index("SHELL_FILES = [") : source.index("];", source.index("SHELL_FILES"))
    ]
    assert "/api/" not in shell
    assert source.count("cache.put") == 0 and source.count("cache.addAll(SHELL_FILES)") == 1
