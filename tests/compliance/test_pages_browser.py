"""The register and statistics pages in headless Chromium against the running API: a Chinese
search finds its clause, a click shows its versions and what changed; the statistics page shows
the organisation and the site's figures, with targets and attainment in Chinese and English.
Screenshots land in the artifacts folder."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import psycopg
import pytest

from compliance.statistics import site_statistics
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


def test_a_person_records_an_evaluation_and_closes_its_action(
    live_api: str, admin_token: str, conn: psycopg.Connection[Any], artifacts_dir: Path
) -> None:
    """Issue 21: on the statistics page the evaluated share is 0 % until a person records an
    evaluation with the form; its improvement action is then open, and a click records it done."""
    skip_without_chromium()
    from playwright.sync_api import expect

    now = dt.datetime.now(dt.UTC)
    in_force = site_statistics(conn, PUBLIC_SITE, now - dt.timedelta(days=30), now, now)
    share = f"{100 / len(in_force.clauses_in_force):.1f}%"
    with launch_chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{live_api}/statistics?site={PUBLIC_SITE}#token={admin_token}")
        evaluated = (
            page.locator("#site .attainment tr")
            .filter(has_text="标准实施效果评价比例")
            .locator("td")
        )
        expect(evaluated.nth(2)).to_have_text("0.0%")
        expect(evaluated.nth(3)).to_have_text("未达标")

        form = page.locator("#evaluate")
        form.locator("select[name=clause_id]").select_option("test.temp.max")
        form.locator("select[name=method]").select_option("survey")
        form.locator("select[name=satisfaction]").select_option("2")
        form.locator("textarea[name=findings]").fill("问卷 40 份：二号办公室午后偏热")
        form.locator("input[name=action]").fill("更换二号办公室温控器")
        form.locator("input[name=owner]").fill("物业 李工")
        form.locator("input[name=deadline]").fill("2027-01-15")
        form.locator("button[type=submit]").click()
        expect(page.locator("#status")).to_have_text("已记录评价")
        expect(evaluated.nth(2)).to_have_text(share)
        actions = page.locator("#site table.actions")
        expect(actions).to_contain_text("更换二号办公室温控器")
        expect(page.locator("#site")).to_contain_text("问卷调查")
        page.screenshot(path=str(artifacts_dir / "statistics-evaluated.png"), full_page=True)

        actions.locator("button").first.click()
        expect(page.locator("#status")).to_have_text("已记录完成")
        expect(actions).not_to_contain_text("更换二号办公室温控器")
    rows = conn.execute("SELECT state, done_by FROM improvement_actions").fetchall()
    assert [(state, by.endswith("(register tests)")) for state, by in rows] == [("done", True)]
