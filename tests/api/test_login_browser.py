"""A facility manager signs in at /login on the phone (390×844) and at the desk (1440×900), in
Chinese and in English, in real headless Chromium against the served app (issue 19): the
dashboard then opens with the session cookie alone (no token pasted) and shows the user's
alerts; an acknowledgement made there is recorded under the person's name; the other pages
read the API with the same cookie; a wrong password says so in the page's language; signing
out leads back to /login and the dashboard asks to sign in again.

Screenshots of the sign-in page and the dashboard after it land in test-artifacts/."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from api.users import create_user
from tests.api.conftest import insert_alert
from tests.support import launch_chromium

pytestmark = [pytest.mark.browser]

VIEWPORTS = {"phone": (390, 844), "desk": (1440, 900)}
PASSWORD = "correct horse battery"
WRONG = {"zh": "用户名或密码错误", "en": "Wrong user name or password"}
ALERTS = {"zh": "告警", "en": "Alerts"}
SIGN_IN = {"zh": "登录", "en": "Sign in"}
WIDTH = "() => [document.documentElement.scrollWidth, window.innerWidth]"


def test_a_user_signs_in_and_sees_the_dashboard_on_the_phone_and_at_the_desk(
    live_api: str, api_database_url: str, artifacts_dir: Path
) -> None:
    from playwright.sync_api import expect

    with psycopg.connect(api_database_url) as conn:
        create_user(
            conn, "wangfang", "facility_manager", PASSWORD, display_name="王芳", sites=("site-a",)
        )
        insert_alert(conn, "site-a")
    problems: list[str] = []
    refused: list[str] = []
    with launch_chromium() as browser:
        for where, (width, height) in VIEWPORTS.items():
            for lang in ("zh", "en"):
                context = browser.new_context(viewport={"width": width, "height": height})
                context.add_init_script(
                    f"if (!localStorage.getItem('clausewatch.lang'))"
                    f" localStorage.setItem('clausewatch.lang', {lang!r});"
                )
                page = context.new_page()
                page.on(
                    "console",
                    lambda m: refused.append(m.text) if "Content Security" in m.text else None,
                )
                page.on("pageerror", lambda error: refused.append(f"error: {error}"))
                # Not signed in: the dashboard sends the person to the sign-in page.
                page.goto(live_api + "/")
                page.wait_for_url("**/login?next=%2F")
                expect(page.locator("#login-submit")).to_have_text(SIGN_IN[lang])
                expect(page.locator("html")).to_have_attribute(
                    "lang", "zh-CN" if lang == "zh" else "en"
                )
                page.fill("#login-name", "wangfang")
                page.fill("#login-password", "not my password")
                page.click("#login-submit")
                expect(page.locator("#login-error")).to_have_text(WRONG[lang])
                scroll, inner = page.evaluate(WIDTH)
                if scroll > inner:
                    problems.append(f"/login at {where} in {lang}: {scroll} px in {inner} px")
                page.screenshot(path=str(artifacts_dir / f"page-login-{where}-{lang}.png"))

                page.fill("#login-password", PASSWORD)
                page.click("#login-submit")
                page.wait_for_url(live_api + "/")
                expect(page.locator("#app")).to_be_visible()
                expect(page.locator(".list h2")).to_have_text(ALERTS[lang])
                expect(page.locator("li.alert").first).to_be_visible(timeout=20_000)
                expect(page.locator("#connection")).to_have_attribute("data-state", "live")
                expect(page.locator("#token-form")).to_be_hidden()
                assert page.evaluate("sessionStorage.getItem('clausewatch.token')") is None
                scroll, inner = page.evaluate(WIDTH)
                if scroll > inner:
                    problems.append(f"dashboard at {where} in {lang}: {scroll} px in {inner} px")
                page.screenshot(
                    path=str(artifacts_dir / f"page-dashboard-signed-in-{where}-{lang}.png")
                )
                if (where, lang) == ("desk", "zh"):
                    # Acknowledging from the page (the session's CSRF token goes with it) is
                    # recorded under the person's name.
                    page.locator("li.alert").first.click()
                    page.fill("#ack-note", "到现场看过")
                    page.click("#ack-button")
                    expect(page.locator("#timeline")).to_contain_text("user:wangfang (王芳)")
                    expect(page.locator("#action-error")).to_have_text("")
                # The other pages read the API with the same cookie.
                page.goto(live_api + "/register")
                expect(page.locator("#results tbody tr").first).to_be_visible(timeout=10_000)
                page.goto(live_api + "/statistics?site=site-a")
                expect(page.locator("#site h3").first).to_be_visible(timeout=10_000)

                # Signing out ends the session; the dashboard asks to sign in again.
                page.click("#sign-out")
                page.wait_for_url("**/login")
                page.goto(live_api + "/")
                page.wait_for_url("**/login?next=%2F")
                context.close()
    assert not problems, "\n".join(problems)
    assert not refused, refused
