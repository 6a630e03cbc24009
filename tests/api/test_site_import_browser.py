"""The site model page (/sites, issue 21) in real headless Chromium, on a phone (390×844) and
at the desk (1440×900), in Chinese and in English: a workbook with a mistake is answered with
the problem by sheet, row and column and nothing is written; a good one for a configured site
shows its dry run's diff and is proposed as a site revision (pending, approved by another admin
on the register page), nothing written; a new site's is applied at once. Nothing makes the page
wider than the screen. Screenshots land in test-artifacts/."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest

from api.app import create_app
from api.tokens import create_token
from compliance import site_revisions
from config import BUNDLED_DIR
from config.sitefiles import configured_site, site_yaml, workbook_bytes
from store.times import wall_now
from tests.api.conftest import TEST_STREAM, site_model
from tests.api.test_site_import import _blank, _book, _rows, _set
from tests.support import launch_chromium, serve_app, skip_without_chromium

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.integration, pytest.mark.browser]

VIEWPORTS = {"phone": (390, 844), "desk": (1440, 900)}
HEADING = {"zh": "站点模型：批量导入与导出", "en": "Site model: bulk import and export"}
LIVE = {"zh": "约一秒内", "en": "within"}  # the engines take the synced model without a restart
SPACES = {"zh": "空间", "en": "Spaces"}
APPLY = {"zh": "应用", "en": "Apply"}
PROPOSE = {"zh": "提交修订", "en": "Propose revision"}
# What the page says of a revision it proposed: its state, and who must act next, where.
PROPOSED = {
    "zh": ("待审批", "另一位管理员在登记表页面批准"),
    "en": ("awaiting approval", "another admin approves it on the register page"),
}
NEW_SITE = {"zh": "新站点", "en": "A new site"}


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("config")
    (directory / "clauses").mkdir()
    shutil.copy(BUNDLED_DIR / "clauses" / "gbt-18883.yaml", directory / "clauses")
    (directory / "sites").mkdir()
    model = site_model("site-a")
    model.devices[0].metrics["hvac_mode"] = (
        model.devices[0].metrics["hvac_mode"].model_copy(update={"unit": "-"})
    )
    (directory / "sites" / "site-a.yaml").write_text(site_yaml(model, "test"), encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def sites_api(api_database_url: str, config_dir: Path) -> Iterator[str]:
    app = create_app(api_database_url, stream=TEST_STREAM, config_dir=config_dir)
    with serve_app(app, "sites-api") as url:
        yield url


def _workbook(config_dir: Path, room: str, *, broken: bool = False) -> bytes:
    """site-a's workbook as configured now, with one room more (and, broken, a device in a
    room that does not exist)."""
    model, _ = configured_site(config_dir, "site-a")
    rows = _rows(workbook_bytes(model))
    rows["spaces"].append(_blank("spaces", id=room, type="office", parent="b1"))
    if broken:
        _set(rows["devices"][0], "devices", "space", "no-such-room")
    return _book(rows)


def _new_site(site: str) -> bytes:
    """The workbook of a site not configured yet: the site and one building."""
    return _book(
        {
            "site": [
                _blank(
                    "site",
                    id=site,
                    name="新楼",
                    timezone="Asia/Shanghai",
                    seasons="cooling=06-01..09-30",
                )
            ],
            "spaces": [_blank("spaces", id="b1", type="building")],
        }
    )


def _opened(browser: Browser, url: str, viewport: tuple[int, int], lang: str, bearer: str) -> Page:
    """The /sites page in a context of its own, signed with `bearer`, in `lang`."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    context.add_init_script(
        f"sessionStorage.setItem('clausewatch.token', {bearer!r});"
        f"localStorage.setItem('clausewatch.lang', {lang!r});"
    )
    page = context.new_page()
    page.goto(url + "/sites")
    expect(page.locator("h1")).to_have_text(HEADING[lang])
    return page


def _fits(page: Page, label: str) -> None:
    """Nothing makes the page wider than the screen."""
    widths = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"{label}: {widths[0]} px in {widths[1]}"


def _choose(page: Page, name: str, book: bytes) -> None:
    page.locator("#upload input[type=file]").set_input_files(
        files=[{"name": name, "mimeType": "application/octet-stream", "buffer": book}]
    )


def test_a_workbook_is_checked_then_proposed_or_applied_on_the_phone_and_at_the_desk(
    sites_api: str, api_database_url: str, config_dir: Path, artifacts_dir: Path
) -> None:
    skip_without_chromium()
    from playwright.sync_api import expect

    with psycopg.connect(api_database_url) as conn:
        token, _ = create_token(conn, "admin", ("site-a",), "导入 admin")
        every, _ = create_token(conn, "admin", (), "建站 admin")
    site_file = config_dir / "sites" / "site-a.yaml"
    with launch_chromium() as browser:
        for where, (width, height) in VIEWPORTS.items():
            for lang in ("zh", "en"):
                # A configured site: checked, then proposed as a revision; nothing written.
                room = f"room-{where}-{lang}"
                page = _opened(browser, sites_api, (width, height), lang, token)
                expect(page.locator("#controls select option")).to_have_count(1)  # site-a
                expect(page.locator("#apply-note")).to_contain_text(LIVE[lang])
                expect(page.locator("#apply-note")).to_contain_text(PROPOSED[lang][1])
                before = site_file.read_text(encoding="utf-8")
                _choose(page, "site-a.xlsx", _workbook(config_dir, room, broken=True))
                page.click("#dry-run")
                problem = page.locator("#problems tr.problem", has_text="devices")
                expect(problem.first).to_be_visible()
                expect(problem.first.locator("td").nth(0)).to_have_text("devices")
                expect(problem.first.locator("td").nth(1)).to_have_text("3")
                expect(problem.first.locator("td").nth(2)).to_have_text("space")
                expect(page.locator("#apply")).to_be_disabled()
                assert site_file.read_text(encoding="utf-8") == before
                _choose(page, "site-a.xlsx", _workbook(config_dir, room))
                page.fill("#upload input[name=reason]", f"新增房间 {room}")
                page.click("#dry-run")
                spaces = page.locator("#diff tr[data-kind=space]")
                expect(spaces).to_contain_text(SPACES[lang])
                expect(spaces.locator("td").first).to_contain_text(room)
                expect(page.locator("#apply")).to_be_enabled()
                expect(page.locator("#apply")).to_have_text(PROPOSE[lang])
                _fits(page, f"{where} {lang}")
                page.screenshot(
                    path=str(artifacts_dir / f"page-sites-{where}-{lang}.png"), full_page=True
                )
                page.click("#apply")
                state, who = PROPOSED[lang]
                expect(page.locator("#status")).to_contain_text(who)
                expect(page.locator("#status")).to_contain_text(state)
                proposed = page.locator("#revision")
                expect(proposed).to_have_attribute("data-state", "pending")
                expect(proposed.locator("a[href='/register']")).to_be_visible()
                expect(page.locator("#apply")).to_be_disabled()
                _fits(page, f"{where} {lang}")
                page.screenshot(
                    path=str(artifacts_dir / f"page-sites-revision-{where}-{lang}.png"),
                    full_page=True,
                )
                assert site_file.read_text(encoding="utf-8") == before
                with psycopg.connect(api_database_url) as conn:
                    [revision] = site_revisions.list_revisions(
                        conn, sites=["site-a"], states=["pending"]
                    )
                    assert revision.reason == f"新增房间 {room}"
                    assert f"#{revision.id}" in (page.locator("#status").text_content() or "")
                    # closed, so the next turn may propose again (one open revision a site)
                    site_revisions.reject(conn, revision.id, "user:test", "测试", wall_now())
                page.context.close()

                # A new site: nothing to approve against, applied at once.
                site = f"new-{where}-{lang}"
                page = _opened(browser, sites_api, (width, height), lang, every)
                _choose(page, f"{site}.xlsx", _new_site(site))
                page.click("#dry-run")
                expect(page.locator("#diff")).to_contain_text(NEW_SITE[lang])
                expect(page.locator("#apply")).to_have_text(APPLY[lang])
                page.click("#apply")
                expect(page.locator("#status")).to_contain_text(LIVE[lang])
                assert (config_dir / "sites" / f"{site}.yaml").exists()
                _fits(page, f"{where} {lang}")
                page.screenshot(
                    path=str(artifacts_dir / f"page-sites-new-{where}-{lang}.png"), full_page=True
                )
                page.context.close()
