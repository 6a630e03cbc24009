"""The site model page (/sites, issue 21) in real headless Chromium, on a phone (390×844) and
at the desk (1440×900), in Chinese and in English: a workbook with a mistake is answered with
the problem by sheet, row and column and nothing is written; a good one shows its dry run's
diff, and applying it writes the site file, with the note that the engines take it at restart;
nothing makes the page wider than the screen. Screenshots land in test-artifacts/."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from api.app import create_app
from api.tokens import create_token
from config import BUNDLED_DIR
from config.sitefiles import configured_site, site_yaml, workbook_bytes
from tests.api.conftest import TEST_STREAM, site_model
from tests.api.test_site_import import _blank, _book, _rows, _set
from tests.support import launch_chromium, serve_app, skip_without_chromium

pytestmark = [pytest.mark.integration, pytest.mark.browser]

VIEWPORTS = {"phone": (390, 844), "desk": (1440, 900)}
HEADING = {"zh": "站点模型：批量导入与导出", "en": "Site model: bulk import and export"}
LIVE = {"zh": "约一秒内", "en": "within"}  # the engines take the synced model without a restart
SPACES = {"zh": "空间", "en": "Spaces"}


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


def test_a_workbook_is_checked_then_applied_on_the_phone_and_at_the_desk(
    sites_api: str, api_database_url: str, config_dir: Path, artifacts_dir: Path
) -> None:
    skip_without_chromium()
    from playwright.sync_api import expect

    with psycopg.connect(api_database_url) as conn:
        token, _ = create_token(conn, "admin", ("site-a",), "导入 admin")
    site_file = config_dir / "sites" / "site-a.yaml"
    with launch_chromium() as browser:
        for where, (width, height) in VIEWPORTS.items():
            for lang in ("zh", "en"):
                room = f"room-{where}-{lang}"
                context = browser.new_context(viewport={"width": width, "height": height})
                context.add_init_script(
                    f"sessionStorage.setItem('clausewatch.token', {token!r});"
                    f"localStorage.setItem('clausewatch.lang', {lang!r});"
                )
                page = context.new_page()
                page.goto(sites_api + "/sites")
                expect(page.locator("h1")).to_have_text(HEADING[lang])
                expect(page.locator("#controls select option")).to_have_count(1)  # site-a
                expect(page.locator("#apply-note")).to_contain_text(LIVE[lang])
                before = site_file.read_text(encoding="utf-8")
                upload = page.locator("#upload input[type=file]")
                upload.set_input_files(
                    files=[
                        {
                            "name": "site-a.xlsx",
                            "mimeType": "application/octet-stream",
                            "buffer": _workbook(config_dir, room, broken=True),
                        }
                    ]
                )
                page.click("#dry-run")
                problem = page.locator("#problems tr.problem", has_text="devices")
                expect(problem.first).to_be_visible()
                expect(problem.first.locator("td").nth(0)).to_have_text("devices")
                expect(problem.first.locator("td").nth(1)).to_have_text("3")
                expect(problem.first.locator("td").nth(2)).to_have_text("space")
                expect(page.locator("#apply")).to_be_disabled()
                assert site_file.read_text(encoding="utf-8") == before
                upload.set_input_files(
                    files=[
                        {
                            "name": "site-a.xlsx",
                            "mimeType": "application/octet-stream",
                            "buffer": _workbook(config_dir, room),
                        }
                    ]
                )
                page.click("#dry-run")
                spaces = page.locator("#diff tr[data-kind=space]")
                expect(spaces).to_contain_text(SPACES[lang])
                expect(spaces.locator("td").first).to_contain_text(room)
                expect(page.locator("#apply")).to_be_enabled()
                widths = page.evaluate(
                    "() => [document.documentElement.scrollWidth, window.innerWidth]"
                )
                assert widths[0] <= widths[1], f"{where} {lang}: {widths[0]} px in {widths[1]}"
                page.screenshot(
                    path=str(artifacts_dir / f"page-sites-{where}-{lang}.png"), full_page=True
                )
                assert site_file.read_text(encoding="utf-8") == before  # a dry run
                page.click("#apply")
                expect(page.locator("#status")).to_contain_text(LIVE[lang])
                assert room in site_file.read_text(encoding="utf-8")
                context.close()
