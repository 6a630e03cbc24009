"""The alert desk's silences and maintenance panel (issue 20) in real headless Chromium, on a
facility manager's phone (390×844) and at the desk (1440×900), in Chinese and in English: the
panel speaks the page's language, a silence set in the form appears in the list (who set it,
until when), a bad target is answered in words, cancelling removes it, and nothing makes the
page wider than the screen. Screenshots land in test-artifacts/."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import psycopg
import pytest

from api.tokens import create_token
from tests.support import launch_chromium, skip_without_chromium

pytestmark = [pytest.mark.integration, pytest.mark.browser]

VIEWPORTS = {"phone": (390, 844), "desk": (1440, 900)}
HEADING = {"zh": "静默与维护窗口", "en": "Silences and maintenance"}
CANCEL = {"zh": "取消", "en": "Cancel"}
# The form's datetime-local field is in the browser's zone: this machine's, as here.
TOMORROW = (dt.datetime.now() + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
DAY_AFTER = (dt.datetime.now() + dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
MAINTENANCE = {"zh": "维护", "en": "maintenance"}


def test_the_desk_sets_and_cancels_a_silence_on_the_phone_and_at_the_desk(
    live_api: str, api_database_url: str, artifacts_dir: Path
) -> None:
    skip_without_chromium()
    from playwright.sync_api import expect

    with psycopg.connect(api_database_url) as conn:
        token, _ = create_token(conn, "facility_manager", ("site-a",), "值班 王工")
    with launch_chromium() as browser:
        for where, (width, height) in VIEWPORTS.items():
            for lang in ("zh", "en"):
                context = browser.new_context(viewport={"width": width, "height": height})
                context.add_init_script(
                    f"sessionStorage.setItem('clausewatch.token', {token!r});"
                    f"localStorage.setItem('clausewatch.lang', {lang!r});"
                )
                page = context.new_page()
                page.goto(live_api + "/")
                expect(page.locator("#quiet-title")).to_have_text(HEADING[lang])
                expect(page.locator("#quiet-site option")).to_have_count(1)  # site-a only
                page.select_option("#quiet-scope", "space")
                page.fill("#quiet-target", "no-such-room")
                page.fill("#quiet-until", TOMORROW)
                page.fill("#quiet-reason", f"{where} {lang} 会议室空调更换")
                page.click("#quiet-add")
                expect(page.locator("#quiet-error")).to_contain_text("no-such-room")
                page.fill("#quiet-target", "b1")
                page.click("#quiet-add")
                item = page.locator(".quiet-item", has_text=f"{where} {lang}")
                expect(item).to_contain_text("site-a / b1")
                expect(item).to_contain_text("值班 王工")
                expect(page.locator("#quiet-error")).to_have_text("")
                widths = page.evaluate(
                    "() => [document.documentElement.scrollWidth, window.innerWidth]"
                )
                assert widths[0] <= widths[1], f"{where} {lang}: {widths[0]} px in {widths[1]}"
                button = item.locator("button")
                expect(button).to_have_text(CANCEL[lang])
                box = button.bounding_box()
                assert box is not None and box["height"] >= (44 if where == "phone" else 24)
                page.locator("#quiet").screenshot(
                    path=str(artifacts_dir / f"page-quiet-{where}-{lang}.png")
                )
                button.click()
                expect(item).to_have_count(0)
                # Planned works announced for tomorrow: a maintenance window, from and until.
                page.select_option("#quiet-kind", "maintenance")
                page.select_option("#quiet-scope", "site")
                page.fill("#quiet-from", TOMORROW)
                page.fill("#quiet-until", DAY_AFTER)
                page.fill("#quiet-reason", f"{where} {lang} 停电检修")
                page.click("#quiet-add")
                planned = page.locator(".quiet-item", has_text=f"{where} {lang} 停电检修")
                expect(planned).to_contain_text(MAINTENANCE[lang])
                expect(planned.locator(".title")).to_have_text("site-a")
                planned.locator("button").click()
                expect(planned).to_have_count(0)
                context.close()
