"""One product for a signed-in person (issue 19), in real headless Chromium at 390×844 and
1440×900, in Chinese and in English, with no token anywhere:

- the energy page has no token field, opens on the month of the site's data clock (the demo's
  building lives on simulated time), judges quotas at that time, checks a bill file (the
  session's CSRF token goes with the upload) and downloads the 台账 for the period shown;
- the statistics page covers the 30 days up to the data clock, opens a stored quarterly
  report's HTML and downloads its CSV;
- the pages' titles speak the chosen language only.

And the installable web app: Chromium reads a valid manifest with its icons, the service
worker takes the site, and with the server down a page opens as the offline shell, which
says it is offline."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest

from api.app import create_app
from api.users import create_user
from compliance.reports import generate_report
from tests.api.conftest import TEST_STREAM, insert_alert
from tests.support import launch_chromium, serve_app

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

pytestmark = [pytest.mark.integration, pytest.mark.browser]

VIEWPORTS = {"phone": (390, 844), "desk": (1440, 900)}
PASSWORD = "correct horse battery"
DATA_TIME = dt.datetime(2026, 9, 30, 6, 0, tzinfo=dt.UTC)  # 14:00 on 30 September in Shanghai
TITLES = {
    "zh": {"energy": "能耗与碳排放 · 条款守望", "statistics": "统计 · 条款守望"},
    "en": {"energy": "Energy and carbon · clausewatch", "statistics": "Statistics · clausewatch"},
}
CHECKED = {"zh": "已检查，未保存", "en": "checked, nothing stored"}
BILL = (
    "site,meter,period_start,period_end,quantity,unit\nsite-a,nowhere,2026-09-01,2026-09-30,1,kWh\n"
)
WIDTH = "() => [document.documentElement.scrollWidth, window.innerWidth]"


@pytest.fixture(scope="module")
def person(api_database_url: str) -> tuple[str, int]:
    """An energy officer of site-a, an alert of 30 September, a stored Q3 report and the
    site's data clock on 30 September (the watermark of its engine's checkpoint)."""
    with psycopg.connect(api_database_url) as conn:
        create_user(
            conn, "liming", "energy_officer", PASSWORD, display_name="李明", sites=("site-a",)
        )
        insert_alert(conn, "site-a", started_at=DATA_TIME - dt.timedelta(hours=2))
        conn.execute(
            "INSERT INTO engine_checkpoints (site, state, watermark) VALUES ('site-a', '{}', %s)"
            " ON CONFLICT (site) DO UPDATE SET watermark = EXCLUDED.watermark",
            (DATA_TIME.timestamp(),),
        )
        report_id, _ = generate_report(conn, "site-a", "2026Q3", "test", DATA_TIME)
        conn.commit()
    return "liming", report_id


def _sign_in(context: BrowserContext, base: str, name: str) -> None:
    """Signs in as the sign-in page does (POST /api/v1/session): the context gets the cookies."""
    answer = context.request.post(
        base + "/api/v1/session", data={"name": name, "password": PASSWORD}
    )
    assert answer.status == 200, answer.text()


def test_a_signed_in_person_works_every_page_without_a_token(
    live_api: str, person: tuple[str, int], artifacts_dir: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    name, report_id = person
    problems: list[str] = []
    with launch_chromium() as browser:
        for where, (width, height) in VIEWPORTS.items():
            for lang in ("zh", "en"):
                context = browser.new_context(
                    viewport={"width": width, "height": height}, accept_downloads=True
                )
                context.add_init_script(f"localStorage.setItem('clausewatch.lang', {lang!r});")
                _sign_in(context, live_api, name)
                page = context.new_page()
                page.on("pageerror", lambda error: problems.append(f"error: {error}"))

                page.goto(live_api + "/energy?site=site-a")
                expect(page.locator("body")).to_have_attribute("data-loaded", "true")
                assert page.locator("input[name=token]").count() == 0
                # The data clock's month, not the wall clock's.
                expect(page.locator("input[name=since]")).to_have_value("2026-09-01")
                expect(page.locator("input[name=until]")).to_have_value("2026-10-01")
                expect(page).to_have_title(TITLES[lang]["energy"])
                scroll, inner = page.evaluate(WIDTH)
                if scroll > inner:
                    problems.append(f"energy at {where} in {lang}: {scroll} px in {inner} px")

                # A bill file checked from the page: the upload carries the CSRF token.
                page.set_input_files(
                    "#bill-form input[name=file]",
                    files=[{"name": "bills.csv", "mimeType": "text/csv", "buffer": BILL.encode()}],
                )
                page.click("#bill-check")
                expect(page.locator("#bill-status")).to_contain_text(CHECKED[lang])

                # The 台账 of the period shown, downloaded by the signed-in person.
                with page.expect_download() as download:
                    page.click("#csv-ledger")
                saved = tmp_path / f"ledger-{where}-{lang}.csv"
                download.value.save_as(saved)
                assert download.value.suggested_filename == (
                    "taizhang-site-a-2026-09-01-2026-09-30.csv"
                )
                lines = saved.read_bytes().decode("utf-8-sig").strip().split("\r\n")
                assert lines[0].startswith("告警编号") and len(lines) == 2, lines

                # The stored quarterly report: its HTML opens, its CSV downloads.
                page.goto(live_api + "/statistics?site=site-a")
                expect(page).to_have_title(TITLES[lang]["statistics"])
                # The 30 days up to the data clock's day, not up to today.
                expect(page.locator("input[name=since]")).to_have_value("2026-09-01")
                expect(page.locator("input[name=until]")).to_have_value("2026-10-01")
                html = page.locator(f"#reports a[href='/api/v1/reports/{report_id}/html']")
                expect(html).to_be_visible(timeout=10_000)
                with context.expect_page() as opened:
                    html.click()
                report = opened.value
                report.wait_for_load_state()
                assert report.url.endswith(f"/api/v1/reports/{report_id}/html")
                expect(report.locator("body")).to_contain_text("site-a")
                report.close()
                with page.expect_download() as download:
                    page.click(f"#reports a[href='/api/v1/reports/{report_id}/csv']")
                assert download.value.suggested_filename == f"report-{report_id}.csv"
                context.close()
    assert not problems, "\n".join(problems)


def test_the_web_app_installs_and_says_when_it_is_offline(
    api_database_url: str, artifacts_dir: Path
) -> None:
    from playwright.sync_api import expect

    with launch_chromium() as browser:
        context = browser.new_context(viewport={"width": 390, "height": 844})
        page = context.new_page()
        with serve_app(create_app(api_database_url, stream=TEST_STREAM), "web-app") as base:
            page.goto(base + "/login")
            # Chromium's own reading of the manifest: parsed without errors, icons found.
            session = context.new_cdp_session(page)
            manifest = session.send("Page.getAppManifest")
            assert manifest["errors"] == [], manifest["errors"]
            assert manifest["url"] == base + "/manifest.webmanifest"
            assert '"short_name": "条款守望"' in manifest["data"]
            # In English the app is named clausewatch (the language chosen on the pages).
            page.evaluate("localStorage.setItem('clausewatch.lang', 'en')")
            page.reload()
            english = session.send("Page.getAppManifest")
            assert english["errors"] == [], english["errors"]
            assert english["url"] == base + "/manifest.webmanifest?lang=en"
            assert '"short_name": "clausewatch"' in english["data"]
            scope = page.evaluate("async () => (await navigator.serviceWorker.ready).scope")
            assert scope == base + "/"
            # The worker controls the next load, and has stored the offline shell.
            page.reload()
            page.wait_for_function("navigator.serviceWorker.controller !== null")
            stored = page.evaluate(
                "async () => (await (await caches.open('clausewatch-shell-v1')).keys())"
                ".map((r) => new URL(r.url).pathname)"
            )
            assert "/static/offline.html" in stored
            assert not [path for path in stored if path.startswith("/api/")]
        # The server is down: a page opens as the offline shell, which says so.
        for path in ("/", "/energy"):
            page.goto(base + path)
            expect(page.locator("#offline")).to_contain_text("离线")
            expect(page.locator("#offline")).to_contain_text("Offline")
        page.screenshot(path=str(artifacts_dir / "page-offline-phone.png"))
        context.close()
