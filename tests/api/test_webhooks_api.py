"""`/webhooks` and `/webhook-allowlist` for admin tokens without a site scope: a target's URL is
shown as scheme, host and port, its secret never; bad input is 422, a taken name 409."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient

from tests.api.conftest import auth

TOKEN = "tok-" + uuid.uuid4().hex
SECRET = "secret-" + uuid.uuid4().hex


def test_targets_are_shown_without_their_url_and_secret(
    client: TestClient, tokens: dict[tuple[str, str], str]
) -> None:
    admin = auth(tokens[("admin", "all")])
    name = f"robot-{uuid.uuid4().hex[:6]}"
    body = {
        "name": name,
        "url": f"https://oapi.example.com/robot/send?access_token={TOKEN}",
        "secret": SECRET,
        "site": "site-a",
        "level": 0,
    }
    created = client.post("/api/v1/webhooks", json=body, headers=admin)
    assert created.status_code == 201, created.text
    shown = created.json()
    assert (shown["name"], shown["url"], shown["site"], shown["broadcast"]) == (
        name,
        "https://oapi.example.com/…",
        "site-a",
        True,
    )
    assert client.post("/api/v1/webhooks", json=body, headers=admin).status_code == 409
    changed = client.patch(
        f"/api/v1/webhooks/{shown['id']}",
        json={"url": "https://sms.example.org:8443/x?key=k", "site": None, "enabled": False},
        headers=admin,
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["url"], changed.json()["site"], changed.json()["enabled"]) == (
        "https://sms.example.org:8443/…",
        None,
        False,
    )
    listed = client.get("/api/v1/webhooks", headers=admin)
    assert name in listed.text and TOKEN not in listed.text and SECRET not in listed.text
    for bad in (
        {"url": "ftp://example.org/x"},
        {"secret": "short"},
        {"name": "Not A Name"},
        {"site": "nowhere"},
    ):
        response = client.post(
            "/api/v1/webhooks",
            json=body | {"name": f"n-{uuid.uuid4().hex[:6]}"} | bad,
            headers=admin,
        )
        assert response.status_code in (404, 422), (bad, response.text)
    assert client.patch("/api/v1/webhooks/999999", json={}, headers=admin).status_code == 404


def test_channel_targets_kind_options_and_health(
    client: TestClient, tokens: dict[tuple[str, str], str]
) -> None:
    """Issue 20: a target's kind, language and options are shown (its secret never); options
    that do not fit its kind are 422 naming the field; health fields come with every target."""
    admin = auth(tokens[("admin", "all")])
    name = f"mail-{uuid.uuid4().hex[:6]}"
    body = {
        "name": name,
        "kind": "email",
        "url": "smtp://smtp.example.cn:587",
        "secret": SECRET,
        "language": "en",
        "options": {"sender": "alerts@example.cn", "to": ["ops@example.cn"]},
        "max_per_minute": 5,
        "repeat_interval_s": 3600,
    }
    created = client.post("/api/v1/webhooks", json=body, headers=admin)
    assert created.status_code == 201, created.text
    shown = created.json()
    assert (shown["kind"], shown["language"], shown["url"]) == (
        "email",
        "en",
        "smtp://smtp.example.cn:587/…",
    )
    assert shown["options"] == body["options"] and SECRET not in created.text
    assert (shown["max_per_minute"], shown["repeat_interval_s"]) == (5, 3600)
    assert (shown["failing"], shown["failed_attempts"], shown["last_error"]) == (False, 0, None)
    changed = client.patch(
        f"/api/v1/webhooks/{shown['id']}",
        json={"options": {"sender": "alerts@example.cn"}, "language": "zh"},
        headers=admin,
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["options"], changed.json()["language"]) == (
        {"sender": "alerts@example.cn"},
        "zh",
    )
    for bad, field in (
        ({"options": {"sender": "alerts@example.cn", "bcc": ["x@example.cn"]}}, "options"),
        ({"options": {}}, "options"),  # an e-mail target needs its sender
        # JSON allows it; the stored options (jsonb, written with orjson) do not: a 500 before
        ({"options": {"sender": "alerts@example.cn", "port": 2**64}}, "options"),
        ({"url": "https://smtp.example.cn"}, "url"),
        (
            {
                "kind": "dingtalk",
                "url": "https://oapi.dingtalk.com/robot/send",
                "secret": "",
                "options": {},
            },
            "secret",
        ),
        (
            {"kind": "sms", "url": "https://sms.example.cn", "options": {"body": {"t": "{x}"}}},
            "options",
        ),
        ({"kind": "fax"}, "kind"),
        ({"max_per_minute": 0}, "max_per_minute"),
        ({"repeat_interval_s": 30}, "repeat_interval_s"),
    ):
        response = client.post(
            "/api/v1/webhooks",
            json=body | {"name": f"n-{uuid.uuid4().hex[:6]}"} | bad,
            headers=admin,
        )
        assert response.status_code == 422, (bad, response.text)
        assert response.json()["detail"][0]["loc"][-1] == field, (bad, response.text)


def test_the_allow_list(client: TestClient, tokens: dict[tuple[str, str], str]) -> None:
    admin = auth(tokens[("admin", "all")])
    added = client.post(
        "/api/v1/webhook-allowlist", json={"entry": "192.168.7.8", "note": "gw"}, headers=admin
    )
    assert added.status_code == 201, added.text
    assert (added.json()["kind"], added.json()["entry"]) == ("network", "192.168.7.8/32")
    again = client.post("/api/v1/webhook-allowlist", json={"entry": "192.168.7.8"}, headers=admin)
    assert again.status_code == 409
    bad = client.post("/api/v1/webhook-allowlist", json={"entry": "a b"}, headers=admin)
    assert bad.status_code == 422
    entry_id = added.json()["id"]
    assert client.delete(f"/api/v1/webhook-allowlist/{entry_id}", headers=admin).status_code == 204
    assert client.delete(f"/api/v1/webhook-allowlist/{entry_id}", headers=admin).status_code == 404
    scoped = auth(tokens[("admin", "site-a")])
    assert client.get("/api/v1/webhook-allowlist", headers=scoped).status_code == 403
