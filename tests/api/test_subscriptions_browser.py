"""A facility manager sets their e-mail address and subscribes to critical alerts of their site
at /me (我的订阅), on the phone (390×844) and at the desk (1440×900), in Chinese and English, in
real headless Chromium against the served app (issue 20); a site outside their scope is refused
in the page; the subscription is stored as theirs and removed from the page.

Screenshots land in test-artifacts/."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from alerts import webhooks
from api.users import create_user
from tests.api.conftest import T0
from tests.support import launch_chromium, wait_for

pytestmark = [pytest.mark.browser]

VIEWPORTS = {"phone": (390, 844), "desk": (1440, 900)}
PASSWORD = "correct horse battery"
TITLE = {"zh": "我的订阅", "en": "My subscriptions"}
SUBSCRIBED = {"zh": "已订阅", "en": "Subscribed"}
FAILED = {"zh": "操作失败", "en": "That did not work"}
WIDTH = "() => [document.documentElement.scrollWidth, window.innerWidth]"
WRITE_MS = 20_000  # how long the page may wait for the server's answer to a write


def test_a_user_subscribes_at_me_on_the_phone_and_at_the_desk(
    live_api: str, api_database_url: str, artifacts_dir: Path
) -> None:
    from playwright.sync_api import expect

    with psycopg.connect(api_database_url) as conn:
        create_user(conn, "sunli", "facility_manager", PASSWORD, sites=("site-a",))
        target = webhooks.Target(
            "mail", "smtp://127.0.0.1:2525", "", site=None, level=None, broadcast=False,
            kind="email", options={"sender": "alerts@cw.example.cn"},
        )  # fmt: skip
        webhooks.add_target(conn, target, "test", now=T0)
    problems: list[str] = []
    failed: list[str] = []
    with launch_chromium() as browser:
        for where, (width, height) in VIEWPORTS.items():
            for lang in ("zh", "en"):
                context = browser.new_context(viewport={"width": width, "height": height})
                context.add_init_script(f"localStorage.setItem('clausewatch.lang', {lang!r});")
                page = context.new_page()
                page.on("pageerror", lambda error: problems.append(f"error: {error}"))
                # Told only with a failure: leaving a page aborts its requests in flight.
                page.on(
                    "requestfailed",
                    lambda request: failed.append(f"{request.url} {request.failure}"),
                )
                page.goto(live_api + "/me")
                page.wait_for_url("**/login?next=%2Fme")
                page.fill("#login-name", "sunli")
                page.fill("#login-password", PASSWORD)
                page.click("#login-submit")
                page.wait_for_url(live_api + "/me")
                expect(page.locator("[data-me=title]")).to_have_text(TITLE[lang])
                page.fill("#me-email", "sun.li@cw.example.cn")
                page.click("#contacts-save")
                # The status comes with the server's answer to a write: on a loaded CI machine
                # that took longer than Playwright's 5 s once (cause not found: see the note on
                # issue 24); the page's errors and failed requests are told with a failure.
                try:
                    expect(page.locator("#contacts-status")).not_to_be_empty(timeout=WRITE_MS)
                except AssertionError as exc:
                    raise AssertionError(f"{exc}\n{problems}, failed: {failed}") from exc
                # Another site than the user's: refused, said in the page.
                page.fill("#sub-name", f"b-{where}-{lang}")
                page.fill("#sub-site", "site-b")
                page.click("#subscribe")
                expect(page.locator("#subscribe-status")).to_contain_text(
                    FAILED[lang], timeout=WRITE_MS
                )
                expect(page.locator("#subscribe-status")).to_contain_text("site-b")
                page.fill("#sub-site", "site-a")
                page.fill("#sub-name", f"a-{where}-{lang}")
                page.click("#subscribe")
                expect(page.locator("#subscribe-status")).to_have_text(
                    SUBSCRIBED[lang], timeout=WRITE_MS
                )
                item = page.locator("#subscriptions li", has_text=f"a-{where}-{lang}")
                expect(item).to_contain_text("site-a")
                scroll, inner = page.evaluate(WIDTH)
                if scroll > inner:
                    problems.append(f"/me at {where} in {lang}: {scroll} px in {inner} px")
                page.screenshot(
                    path=str(artifacts_dir / f"page-me-{where}-{lang}.png"), full_page=True
                )
                item.get_by_role("button").click()
                expect(item).to_have_count(0)
                context.close()
    assert problems == []
    with psycopg.connect(api_database_url) as conn:
        assert conn.execute(
            "SELECT count(*) FROM notification_routes WHERE owner_user IS NOT NULL"
        ).fetchone() == (0,)
        assert conn.execute(
            "SELECT email FROM user_contacts JOIN users ON users.id = user_contacts.user_id"
            " WHERE users.name = 'sunli'"
        ).fetchall() == [("sun.li@cw.example.cn",)]


def test_an_address_typed_while_the_page_loads_is_not_overwritten(
    live_api: str, api_database_url: str
) -> None:
    """The stored contacts arrive after the person began typing (held back here, as a slow
    network or a loaded server does): what they typed stays, and is what is saved."""
    from playwright.sync_api import Route, expect

    with psycopg.connect(api_database_url) as conn:
        create_user(conn, "zhouqi", "facility_manager", PASSWORD, sites=("site-a",))
    held: list[Route] = []
    with launch_chromium() as browser:
        context = browser.new_context(viewport={"width": 390, "height": 844})
        page = context.new_page()
        page.goto(live_api + "/login?next=%2Fme")
        page.fill("#login-name", "zhouqi")
        page.fill("#login-password", PASSWORD)
        page.route(
            "**/api/v1/me/contacts",
            lambda route: held.append(route) if route.request.method == "GET" else route.fallback(),
        )
        page.click("#login-submit")
        page.wait_for_url(live_api + "/me")
        # Polled with the page's own timer, so playwright hands the request to the handler.
        wait_for(lambda: held or page.wait_for_timeout(50), 20, "the contacts asked for")
        page.fill("#me-email", "zhou.qi@cw.example.cn")
        held[0].continue_()
        expect(page.locator("body")).to_have_attribute("data-loaded", "true")
        expect(page.locator("#me-email")).to_have_value("zhou.qi@cw.example.cn")
        page.click("#contacts-save")
        expect(page.locator("#contacts-status")).not_to_be_empty()
        context.close()
    with psycopg.connect(api_database_url) as conn:
        assert conn.execute(
            "SELECT email FROM user_contacts JOIN users ON users.id = user_contacts.user_id"
            " WHERE users.name = 'zhouqi'"
        ).fetchall() == [("zhou.qi@cw.example.cn",)]
