"""Named users (issue 19): signing in at /api/v1/session makes a server-side session whose
cookie is HttpOnly, SameSite=Strict, and `__Host-` + Secure over HTTPS; wrong passwords are
counted and lock a name (5 in 15 min) or an address out; a session ends at its expiry, after
its idle timeout, at sign-out, when its user is disabled or given a new password; every request
of a session that changes something needs its CSRF token; a user scoped to an organisation
sees a site registered after it signed in; and what a user does is recorded under their name
in the alert's timeline and in the ledger. Bearer tokens keep working as before."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.sessions import SessionPolicy
from api.users import LockoutPolicy, create_user, disable_user, set_password
from rules.site import SiteModel
from store import registry
from tests.api.conftest import T0, TEST_STREAM, auth, insert_alert, read_events, site_model

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def users(api_database_url: str) -> dict[str, str]:
    """name → password of the module's users."""
    made = {
        "wangfang": dict(role="facility_manager", display_name="王芳", sites=("site-a",)),
        "viewer-all": dict(role="viewer"),
        "pudong": dict(role="facility_manager", org=("shanghai", "pudong"), display_name="浦东"),
        "nowhere": dict(role="viewer", org=("beijing",)),
        "raced": dict(role="viewer"),
        "locked": dict(role="viewer"),
        "idle": dict(role="viewer"),
        "expired": dict(role="viewer"),
        "leaver": dict(role="viewer"),
        "changed": dict(role="viewer"),
    }
    with psycopg.connect(api_database_url) as conn:
        for name, options in made.items():
            create_user(conn, name, password=PASSWORD, **options)  # type: ignore[arg-type]
    return dict.fromkeys(made, PASSWORD)


def _app_client(
    url: str,
    *,
    base_url: str = "http://testserver",
    address: str = "10.0.0.1",
    policy: SessionPolicy | None = None,
) -> TestClient:
    app = create_app(url, stream=TEST_STREAM, session_policy=policy)
    return TestClient(app, base_url=base_url, client=(address, 50000))


@pytest.fixture
def browser(api_database_url: str, users: dict[str, str]) -> Iterator[TestClient]:
    """A client that keeps cookies, like a browser, from an address of its own."""
    with _app_client(api_database_url) as client:
        yield client


def sign_in(client: TestClient, name: str, password: str = PASSWORD) -> httpx.Response:
    return client.post("/api/v1/session", json={"name": name, "password": password})


def csrf(client: TestClient) -> dict[str, str]:
    token = client.cookies.get("cw_csrf") or client.cookies.get("__Host-cw_csrf")
    assert token
    return {"X-CSRF-Token": token}


def test_a_signed_in_user_reads_the_api_with_the_session_cookie(browser: TestClient) -> None:
    answer = sign_in(browser, "Wangfang")  # as a phone capitalises it
    assert answer.status_code == 200, answer.text
    me = answer.json()
    assert me["kind"] == "user" and me["role"] == "facility_manager"
    assert me["actor"] == "user:wangfang (王芳)"
    cookies = answer.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("cw_session="))
    assert "HttpOnly" in session and "SameSite=strict" in session and "Path=/" in session
    assert "Secure" not in session  # plain HTTP (the demo): a browser would drop it
    assert me["csrf_token"] == browser.cookies["cw_csrf"]
    assert answer.headers["cache-control"] == "no-store"
    csrf_cookie = next(c for c in cookies if c.startswith("cw_csrf="))
    assert "HttpOnly" not in csrf_cookie  # the pages read it
    # No token anywhere: the cookie is the credential, cut to the user's sites.
    assert [s["id"] for s in browser.get("/api/v1/sites").json()] == ["site-a"]
    assert browser.get("/api/v1/alerts", params={"site": "site-b"}).status_code == 403
    assert browser.get("/api/v1/session").json()["sites"] == ["site-a"]
    # A page with no token pasted sends "Bearer" and nothing else: that is no credential, and
    # the cookie decides (the energy page does so).
    empty = browser.get("/api/v1/sites", headers={"Authorization": "Bearer "})
    assert empty.status_code == 200


def test_over_https_the_cookies_are_host_prefixed_and_secure(
    api_database_url: str, users: dict[str, str]
) -> None:
    with _app_client(api_database_url, base_url="https://testserver", address="10.0.0.2") as c:
        answer = sign_in(c, "viewer-all")
        assert answer.status_code == 200
        for cookie in answer.headers.get_list("set-cookie"):
            assert cookie.startswith("__Host-cw_"), cookie
            assert "Secure" in cookie and "Path=/" in cookie and "Domain" not in cookie
        assert c.get("/api/v1/sites").status_code == 200


def test_another_sites_form_cannot_sign_a_browser_in(browser: TestClient) -> None:
    """Login CSRF: a page elsewhere can post a form (or text/plain) to /api/v1/session without
    a preflight, never JSON; only a JSON body signs in."""
    body = json.dumps({"name": "viewer-all", "password": PASSWORD})
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        answer = browser.post("/api/v1/session", content=body, headers={"Content-Type": kind})
        assert answer.status_code == 422, (kind, answer.text)
        assert "set-cookie" not in answer.headers


def test_a_wrong_password_and_an_unknown_name_get_the_same_answer(browser: TestClient) -> None:
    wrong = sign_in(browser, "viewer-all", "not the password")
    unknown = sign_in(browser, "nobody-here", "not the password")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert "wrong user name or password" in wrong.json()["detail"]
    assert "set-cookie" not in wrong.headers
    assert browser.get("/api/v1/sites").status_code == 401


def test_five_failures_lock_the_name_out_for_fifteen_minutes(
    browser: TestClient, api_database_url: str
) -> None:
    for _ in range(5):
        assert sign_in(browser, "locked", "guess guess guess").status_code == 401
    refused = sign_in(browser, "locked")  # the right password, too late
    assert refused.status_code == 429
    assert "too many failed sign-ins for this user" in refused.json()["detail"]
    assert "try again after 20" in refused.json()["detail"]
    assert 0 < int(refused.headers["retry-after"]) <= 15 * 60
    # Another person at another address is locked out of that name too: the lock is the name's.
    with _app_client(api_database_url, address="10.0.0.9") as other:
        assert sign_in(other, "locked").status_code == 429
    # The window passes (the failures are moved back rather than waited for).
    with psycopg.connect(api_database_url) as conn:
        conn.execute(
            "UPDATE login_failures SET at = at - interval '15 minutes 1 second'"
            " WHERE user_name = 'locked'"
        )
    assert sign_in(browser, "locked").status_code == 200


def test_guesses_sent_at_once_get_no_more_than_five_tries(
    live_api: str, users: dict[str, str]
) -> None:
    def guess(number: int) -> int:
        body = {"name": "raced", "password": f"guess number {number}"}
        return httpx.post(live_api + "/api/v1/session", json=body, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = sorted(pool.map(guess, range(10)))
    assert answers == [401] * 5 + [429] * 5


def test_too_many_failures_from_one_address_lock_that_address_out(
    api_database_url: str, users: dict[str, str]
) -> None:
    policy = SessionPolicy(lockout=LockoutPolicy(per_user=5, per_client=3))
    with _app_client(api_database_url, address="10.0.0.3", policy=policy) as client:
        for name in ("spray-1", "spray-2", "spray-3"):  # one guess each at many names
            assert sign_in(client, name, "password123").status_code == 401
        refused = sign_in(client, "viewer-all")
        assert refused.status_code == 429
        assert "for this address" in refused.json()["detail"]
    with _app_client(api_database_url, address="10.0.0.4", policy=policy) as elsewhere:
        assert sign_in(elsewhere, "viewer-all").status_code == 200


def test_a_session_ends_at_its_expiry_and_when_idle_too_long(
    browser: TestClient, api_database_url: str
) -> None:
    assert sign_in(browser, "expired").status_code == 200
    assert browser.get("/api/v1/sites").status_code == 200
    with psycopg.connect(api_database_url) as conn:
        conn.execute(
            "UPDATE user_sessions s SET created_at = s.created_at - interval '13 hours',"
            " expires_at = now() - interval '1 second', last_seen_at = now()"
            " FROM users u WHERE u.id = s.user_id AND u.name = 'expired'"
        )
    ended = browser.get("/api/v1/sites")
    assert ended.status_code == 401
    assert "your session has ended" in ended.json()["detail"]

    browser.cookies.clear()
    assert sign_in(browser, "idle").status_code == 200
    with psycopg.connect(api_database_url) as conn:
        # 29 minutes without a request: still live, and the request counts as activity.
        conn.execute(
            "UPDATE user_sessions s SET last_seen_at = now() - interval '29 minutes'"
            " FROM users u WHERE u.id = s.user_id AND u.name = 'idle'"
        )
    assert browser.get("/api/v1/sites").status_code == 200
    with psycopg.connect(api_database_url) as conn:
        conn.execute(
            "UPDATE user_sessions s SET last_seen_at = now() - interval '31 minutes'"
            " FROM users u WHERE u.id = s.user_id AND u.name = 'idle'"
        )
    assert browser.get("/api/v1/sites").status_code == 401


def test_disabling_a_user_or_changing_the_password_ends_their_sessions(
    browser: TestClient, api_database_url: str
) -> None:
    assert sign_in(browser, "leaver").status_code == 200
    with psycopg.connect(api_database_url) as conn:
        assert disable_user(conn, "leaver")
    assert browser.get("/api/v1/sites").status_code == 401
    assert sign_in(browser, "leaver").status_code == 401  # and cannot sign in again

    assert sign_in(browser, "changed").status_code == 200
    with psycopg.connect(api_database_url) as conn:
        assert set_password(conn, "changed", "a brand new passphrase")
    assert browser.get("/api/v1/sites").status_code == 401
    assert sign_in(browser, "changed").status_code == 401
    assert sign_in(browser, "changed", "a brand new passphrase").status_code == 200


def test_signing_out_needs_the_csrf_token_and_ends_the_session(browser: TestClient) -> None:
    assert sign_in(browser, "viewer-all").status_code == 200
    session_cookie = browser.cookies["cw_session"]
    refused = browser.delete("/api/v1/session")
    assert refused.status_code == 403
    assert "X-CSRF-Token" in refused.json()["detail"]
    answer = browser.delete("/api/v1/session", headers=csrf(browser))
    assert answer.status_code == 204
    assert browser.get("/api/v1/sites").status_code == 401
    # The old cookie, replayed, is dead on the server (not only cleared in this browser).
    replay = httpx.Cookies({"cw_session": session_cookie})
    browser.cookies = replay
    assert browser.get("/api/v1/sites").status_code == 401


def test_a_sessions_changes_without_the_csrf_token_are_refused(
    browser: TestClient, api_database_url: str
) -> None:
    with psycopg.connect(api_database_url) as conn:
        alert_id = insert_alert(conn, "site-a")
    assert sign_in(browser, "wangfang").status_code == 200
    path = f"/api/v1/alerts/{alert_id}/ack"
    # What another site's form or script could make the browser send: the cookie only.
    for headers in ({}, {"X-CSRF-Token": "forged"}):
        refused = browser.post(path, json={"note": "x"}, headers=headers)
        assert refused.status_code == 403, refused.text
        assert "X-CSRF-Token" in refused.json()["detail"]
    refused = browser.post(path, headers={"X-CSRF-Token": "forged"})  # no body either
    assert refused.status_code in (403, 422)
    with psycopg.connect(api_database_url) as conn:
        (state,) = conn.execute("SELECT state FROM alerts WHERE id = %s", (alert_id,)).fetchone()
    assert state == "firing"
    done = browser.post(path, json={"note": "on my way"}, headers=csrf(browser))
    assert done.status_code == 200, done.text


def test_a_bearer_token_needs_no_csrf_token(
    client: TestClient, tokens: dict[tuple[str, str], str], api_database_url: str
) -> None:
    with psycopg.connect(api_database_url) as conn:
        alert_id = insert_alert(conn, "site-a")
    answer = client.post(
        f"/api/v1/alerts/{alert_id}/ack",
        json={"note": "machine"},
        headers=auth(tokens[("facility_manager", "site-a")]),
    )
    assert answer.status_code == 200, answer.text
    assert (
        client.get("/api/v1/session", headers=auth(tokens[("viewer", "all")])).json()["kind"]
        == "token"
    )


def _with_org(site: str, org: tuple[str, ...]) -> SiteModel:
    model = site_model(site)
    return model.model_copy(update={"site": model.site.model_copy(update={"org": org})})


def test_an_org_user_sees_every_site_of_the_org_including_one_added_later(
    browser: TestClient, api_database_url: str
) -> None:
    with psycopg.connect(api_database_url) as conn:
        registry.sync_site(conn, _with_org("pd-1", ("shanghai", "pudong", "unit-1")), "test", T0)
        registry.sync_site(conn, _with_org("xh-1", ("shanghai", "xuhui")), "test", T0)
        xuhui_alert = insert_alert(conn, "xh-1")
    assert sign_in(browser, "pudong").status_code == 200
    assert [s["id"] for s in browser.get("/api/v1/sites").json()] == ["pd-1"]

    # A site of the district registered while the user is signed in: seen at the next request.
    with psycopg.connect(api_database_url) as conn:
        registry.sync_site(conn, _with_org("pd-2", ("shanghai", "pudong")), "test", T0)
        later_alert = insert_alert(conn, "pd-2")
    assert [s["id"] for s in browser.get("/api/v1/sites").json()] == ["pd-1", "pd-2"]
    assert browser.get(f"/api/v1/alerts/{later_alert}").status_code == 200
    assert browser.get(f"/api/v1/alerts/{xuhui_alert}").status_code == 404
    assert browser.get("/api/v1/alerts", params={"site": "xh-1"}).status_code == 403
    me = browser.get("/api/v1/session").json()
    assert me["org"] == ["shanghai", "pudong"] and me["sites"] == ["pd-1", "pd-2"]
    # Scoped: what spans every site stays closed to it.
    assert browser.get("/api/v1/ledger/verify").status_code == 403

    # An organisation with no site yet sees nothing (not everything).
    browser.cookies.clear()
    assert sign_in(browser, "nowhere").status_code == 200
    assert browser.get("/api/v1/sites").json() == []
    assert browser.get("/api/v1/alerts").json()["items"] == []
    assert browser.get("/api/v1/compliance").json()["sites"] == []
    assert browser.get("/api/v1/reports").json() == []


def test_what_a_user_does_is_recorded_under_their_name(
    browser: TestClient, api_database_url: str
) -> None:
    with psycopg.connect(api_database_url) as conn:
        alert_id = insert_alert(conn, "site-a", state="resolved")
    assert sign_in(browser, "wangfang").status_code == 200
    acked = browser.post(
        f"/api/v1/alerts/{alert_id}/ack", json={"note": "看过了"}, headers=csrf(browser)
    )
    assert acked.status_code == 200, acked.text
    detail = browser.get(f"/api/v1/alerts/{alert_id}").json()
    actors = {entry["action"]: entry["actor"] for entry in detail["timeline"]}
    assert actors["acknowledged"] == "user:wangfang (王芳)"
    with psycopg.connect(api_database_url) as conn:
        row = conn.execute(
            "SELECT payload::jsonb->>'actor' FROM ledger WHERE kind = 'alert.acknowledged'"
            " AND entity = %s",
            (f"alert:{alert_id}",),
        ).fetchone()
    assert row == ("user:wangfang (王芳)",)


def test_the_stream_follows_a_users_session_and_ends_with_it(
    live_api: str, users: dict[str, str], api_database_url: str
) -> None:
    with httpx.Client(base_url=live_api, timeout=10) as client:
        answer = client.post("/api/v1/session", json={"name": "wangfang", "password": PASSWORD})
        assert answer.status_code == 200
        token = answer.json()["csrf_token"]
        with client.stream("GET", "/api/v1/stream") as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            read_events(lines, 1, kinds=("hello",))
            with psycopg.connect(api_database_url) as conn:
                insert_alert(conn, "site-b")  # not the user's site: never sent
                mine = insert_alert(conn, "site-a")
            event = read_events(lines, 1)[0]
            assert json.loads(event.data)["alert"]["id"] == mine
            out = client.delete("/api/v1/session", headers={"X-CSRF-Token": token})
            assert out.status_code == 204
            # The stream's credential check (every second in tests) ends it; heartbeats come
            # every second, so the deadline is checked between lines.
            deadline = time.monotonic() + 10
            for _line in lines:
                assert time.monotonic() < deadline, "the stream outlived its session"


def test_the_user_commands(api_database_url: str) -> None:
    def run(*args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "clausewatch",
                "user",
                *args,
                "--database-url",
                api_database_url,
            ],
            input=password,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    made = run(
        "create",
        "lifang",
        "--role",
        "energy_officer",
        "--org",
        "shanghai/pudong",
        "--display-name",
        "李芳",
        "--password-stdin",
        password="a long password 1\n",
    )
    assert made.returncode == 0, made.stderr
    assert "user:lifang (李芳)" in made.stdout
    short = run("create", "shorty", "--role", "viewer", "--password-stdin", password="short\n")
    assert short.returncode == 2 and "at least 10 characters" in short.stderr
    both = run("create", "x", "--role", "viewer", "--site", "a", "--org", "b", "--password-stdin")
    assert both.returncode == 2  # argparse: one scope only
    listed = run("list")
    assert any(
        line.startswith("lifang\tenergy_officer\torg shanghai/pudong\tenabled")
        for line in listed.stdout.splitlines()
    ), listed.stdout
    assert "long password" not in listed.stdout
    reset = run("reset-password", "lifang", "--password-stdin", password="another password 2\n")
    assert reset.returncode == 0, reset.stderr
    assert run("disable", "lifang").returncode == 0
    assert run("disable", "lifang").returncode == 1
    with psycopg.connect(api_database_url) as conn:
        row: Any = conn.execute(
            "SELECT disabled_at IS NOT NULL, password_hash LIKE '$argon2id$%' FROM users"
            " WHERE name = 'lifang'"
        ).fetchone()
    assert row == (True, True)
