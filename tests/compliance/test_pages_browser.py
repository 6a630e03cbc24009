"""The register and statistics pages in headless Chromium against the running API: a Chinese
search finds its clause, a click shows its versions and what changed; the statistics page shows
the organisation and the site's figures, with targets and attainment in Chinese and English.
Screenshots land in the artifacts folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compliance.conftest import PUBLIC_SITE
from tests.support import launch_chromium, skip_without_chromium

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def test_register_and_statistics_pages(
    live_api: str, admin_token: str, artifacts_dir: Path
) -> None:
    skip_without_chromium()
    from playwright.sync_api import expect

    with launch_chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{live_api}/register#token={admin_token}")
        expect(page.locator("#status")).to_contain_text("条")  # Chinese unless English chosen
        page.fill("input[name=q]", "甲醛")
        page.click("button[type=submit]")
        rows = page.locator("#results tbody tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("iaq.hcho")
        rows.first.click()
        detail = page.locator("#detail")
        expect(detail).to_contain_text("v2")
        expect(detail).to_contain_text("params.limit.default")
        page.screenshot(path=str(artifacts_dir / "register-hcho.png"), full_page=True)

        page.goto(f"{live_api}/statistics")
        page.fill("input[name=path]", "jinan")
        page.fill("input[name=site]", PUBLIC_SITE)
        page.click("button[type=submit]")
        expect(page.locator("#org")).to_contain_text("lixia")
        expect(page.locator("#site")).to_contain_text("告警系统健康度")
        # Targets of the plan and attainment, for the city and for the site (issue 21).
        city = page.locator("#org .attainment")
        expect(city).to_contain_text("目标与达标")
        expect(city).to_contain_text("标准实施效果评价比例")
        expect(city).to_contain_text("≥ 30.0%")
        expect(page.locator("#org table").last).to_contain_text("未达标指标")
        expect(page.locator("#site .attainment")).to_contain_text("关键标准实施覆盖率")
        expect(page.locator("#site")).to_contain_text("实施评价")
        page.screenshot(path=str(artifacts_dir / "statistics-jinan.png"), full_page=True)
        page.locator("#lang-toggle").click()
        expect(page.locator("#org .attainment h3")).to_have_text("Targets and attainment")
        expect(page.locator("#org .attainment")).to_contain_text("evaluated share")
