"""User management in the browser (issue 19: users were managed from the command line only),
in real headless Chromium against the served app, on the phone (390×844) and at the desk
(1440×900), in Chinese and in English: an administrator of every site signs in at /login, opens
/users, creates a cleaner for one site, disables and enables them again, and gives them a new
password, which they then sign in with; a disabled user cannot sign in; the page never scrolls
sideways. A site-scoped administrator is told the page is not theirs. Each change is in the
ledger under the administrator's name, without the password."""

from __future__ import annotations

from pathlib import Path

import httpx
import psycopg
import pytest

from api.users import create_user
from tests.support import launch_chromium

pytestmark = [pytest.mark.integration, pytest.mark.browser]

VIEWPORTS = {"phone": (390, 844), "desk": (1440, 900)}
PASSWORD = "correct horse battery"
WIDTH = "() => [document.documentElement.scrollWidth, window.innerWidth]"
WORDS = {
    "zh": {"title": "用户管理", "role": "保洁（仅签到）", "disabled": "已停用", "enable": "启用",
           "refused": "只有全部站点的管理员可以管理用户。"},
    "en": {"title": "Users", "role": "cleaner (check-ins only)", "disabled": "disabled",
           "enable": "Enable", "refused": "Only an administrator of every site manages users."},
}  # fmt: skip


def sign_in(base: str, name: str, password: str) -> int:
    with httpx.Client(base_url=base, timeout=30) as client:
        answer = client.post("/api/v1/session", json={"name": name, "password": password})
        return answer.status_code


def test_an_administrator_manages_users_in_the_browser(
    live_api: str, api_database_url: str, artifacts_dir: Path
) -> None:
    from playwright.sync_api import expect

    with psycopg.connect(api_database_url) as conn:
        create_user(conn, "chief", "admin", PASSWORD, display_name="主任")
        create_user(conn, "site-admin", "admin", PASSWORD, sites=("site-a",))
    problems: list[str] = []
    with launch_chromium() as browser:
        for where, (width, height) in VIEWPORTS.items():
            for lang, words in WORDS.items():
                context = browser.new_context(viewport={"width": width, "height": height})
                context.add_init_script(f"localStorage.setItem('clausewatch.lang', {lang!r});")
                page = context.new_page()
                page.on("pageerror", lambda error: problems.append(f"error: {error}"))
                page.goto(live_api + "/users")
                page.wait_for_url("**/login?next=%2Fusers")
                page.fill("#login-name", "chief")
                page.fill("#login-password", PASSWORD)
                page.click("#login-submit")
                page.wait_for_url(live_api + "/users")
                expect(page.locator("#title")).to_have_text(words["title"])
                expect(page.locator("li[data-user=chief]")).to_be_visible()

                name = f"clean-{where}-{lang}"
                page.fill("#new-name", name)
                page.fill("#new-display", "保洁刘")
                page.select_option("#new-role", "cleaner")
                page.select_option("#new-scope", "sites")
                page.fill("#new-where", "site-a")
                page.fill("#new-password", "first password 1")
                page.click("#create")
                row = page.locator(f"li[data-user={name}]")
                expect(row).to_contain_text(words["role"])
                expect(row).to_contain_text("site-a")
                assert sign_in(live_api, name, "first password 1") == 200

                row.locator("button").click()
                expect(row).to_have_attribute("data-enabled", "false")
                expect(row).to_contain_text(words["disabled"])
                expect(row.locator("button")).to_have_text(words["enable"])
                if sign_in(live_api, name, "first password 1") != 401:
                    problems.append(f"{name}: a disabled user signed in")
                row.locator("button").click()
                expect(row).to_have_attribute("data-enabled", "true")

                page.select_option("#reset-user", name)
                page.fill("#reset-password", "second password 2")
                page.click("#reset")
                expect(page.locator("#reset-status")).to_contain_text(name)
                assert sign_in(live_api, name, "second password 2") == 200
                scroll, inner = page.evaluate(WIDTH)
                if scroll > inner:
                    problems.append(f"/users at {where} in {lang}: {scroll} px in {inner} px")
                page.screenshot(
                    path=str(artifacts_dir / f"page-users-{where}-{lang}.png"), full_page=True
                )
                context.close()

                # An administrator of one site: the page says it is not theirs.
                context = browser.new_context(viewport={"width": width, "height": height})
                context.add_init_script(f"localStorage.setItem('clausewatch.lang', {lang!r});")
                page = context.new_page()
                page.goto(live_api + "/login?next=%2Fusers")
                page.fill("#login-name", "site-admin")
                page.fill("#login-password", PASSWORD)
                page.click("#login-submit")
                page.wait_for_url(live_api + "/users")
                expect(page.locator("#status")).to_have_text(words["refused"])
                expect(page.locator("#users li")).to_have_count(0)
                context.close()
    assert not problems, problems
    with psycopg.connect(api_database_url) as conn:
        entries = conn.execute(
            "SELECT kind, payload FROM ledger WHERE entity = %s ORDER BY seq",
            ("user:clean-desk-zh",),
        ).fetchall()
    assert [kind for kind, _ in entries] == [
        "user.created",
        "user.disabled",
        "user.enabled",
        "user.password_set",
    ]
    assert all("user:chief (主任)" in payload for _, payload in entries)
    assert not any("password 1" in p or "password 2" in p for _, p in entries)
