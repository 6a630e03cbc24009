"""The energy page on a phone (390×844) in headless Chromium: a bill file checked (its bad row
named), then imported as a workbook, and the bill shown beside its meter with the difference,
the manual figure flagged; nothing wider than the screen (issue 22). The operating cost in
Chinese and English: tiles, the cost by carrier and time-of-use period, a bill's cost beside
the tariff estimate (issue 21)."""

from __future__ import annotations

import datetime as dt
import io
import socket
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openpyxl
import psycopg
import pytest
import uvicorn

from api.app import create_app
from api.tokens import create_token
from energy.bills import import_bills
from energy.costs import Band, Tariff, add_tariff
from rules.site import SiteModel
from store import registry

pytestmark = [pytest.mark.integration, pytest.mark.browser]
CHROMIUM = Path("/usr/bin/chromium")
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
WIDTH = "() => [document.documentElement.scrollWidth, window.innerWidth]"


@pytest.fixture(scope="module")
def server(energy_database_url: str) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        create_app(energy_database_url), host="127.0.0.1", port=port, log_level="warning"
    )
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = dt.datetime.now() + dt.timedelta(seconds=30)
    while not instance.started:
        assert dt.datetime.now() < deadline, "the API did not start within 30 s"
        thread.join(0.05)
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(10)


def workbook(site: str) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "一月"
    sheet.append(
        ["站点", "能源", "起始日", "截止日", "数量", "单位", "费用", "类型", "表计", "空间"]
    )
    sheet.append([site, "电", dt.date(2023, 1, 1), dt.date(2023, 1, 31), 1.1, "MWh", 880, "账单",
                  "em-main", None])  # fmt: skip
    sheet.append([site, "热", dt.date(2023, 1, 1), dt.date(2023, 1, 31), 12.5, "GJ", None, "手工",
                  None, "b"])  # fmt: skip
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def test_import_on_a_phone(
    server: str, conn: psycopg.Connection[Any], kit: Any, artifacts_dir: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    site: SiteModel = kit.make_site(grid_region="national", max_gap="40d")
    registry.sync_site(conn, site, actor="test", now=kit.local(2023, 1, 1))
    jan, feb = kit.local(2023, 1, 1), kit.local(2023, 2, 1)
    kit.insert_readings(conn, site, "em-main", "energy_kwh", [(jan, 0), (feb, 1000)])
    plain, _ = create_token(conn, "energy_officer", (site.site.id,), "bills page test")
    conn.commit()
    sid = site.site.id
    header = "site,carrier,first_day,last_day,quantity,unit,kind"
    bad = f"{header}\n{sid},water,2023-01-01,x,5,m3,billed\n"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            context = browser.new_context(viewport={"width": 390, "height": 844})
            context.add_init_script("localStorage.setItem('clausewatch.lang', 'zh');")
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on(
                "console",
                lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None,
            )
            page.goto(f"{server}/energy?site={sid}&since=2023-01-01&until=2023-02-01#token={plain}")
            page.wait_for_selector("body[data-loaded=true]", timeout=30_000)

            files = page.locator("#bill-form input[name=file]")
            files.set_input_files(
                files=[{"name": "bad.csv", "mimeType": "text/csv", "buffer": bad.encode()}]
            )
            page.click("#bill-check")
            expect(page.locator(".bill-error")).to_have_count(1, timeout=10_000)
            assert "第 2 行 last_day" in page.locator(".bill-error").inner_text()

            files.set_input_files(
                files=[{"name": "一月.xlsx", "mimeType": XLSX, "buffer": workbook(sid)}]
            )
            page.click("#bill-apply")
            expect(page.locator("#bill-status")).to_contain_text("已保存", timeout=10_000)
            expect(page.locator("#bills tr")).to_have_count(3, timeout=10_000)
            bills = page.locator("#bills").inner_text()
            assert "-100.000" in bills and "与表计对照" in bills and "计入" in bills
            carriers = page.locator("#carriers").inner_text()
            assert "12.500" in carriers  # the manual heat, in its column
            assert "手工/估计" in page.locator("#summary").inner_text()
            seen = page.evaluate(WIDTH)
            assert seen[0] <= seen[1], f"{seen[0]} px wide in {seen[1]} px"
            assert not errors, errors
            page.screenshot(path=str(artifacts_dir / "energy-bills-phone.png"), full_page=True)
        finally:
            browser.close()


def test_cost_on_a_phone_in_chinese_and_english(
    server: str, conn: psycopg.Connection[Any], kit: Any, artifacts_dir: Path
) -> None:
    from playwright.sync_api import sync_playwright

    site: SiteModel = kit.make_site(grid_region="national", max_gap="40d")
    sid = site.site.id
    registry.sync_site(conn, site, actor="test", now=kit.local(2023, 1, 1))
    points = [(kit.local(2023, 1, 1), 0), (kit.local(2023, 1, 1, 12), 50)]
    points.append((kit.local(2023, 1, 2), 100))
    kit.insert_readings(conn, site, "em-main", "energy_kwh", points)
    valley = Band(band="valley", start="00:00", end="12:00", price=Decimal("0.3"))
    peak = Band(band="peak", start="12:00", end="24:00", price=Decimal("1"))
    add_tariff(
        conn,
        Tariff(scope="site", scope_id=sid, carrier="electricity", first_day=dt.date(2023, 1, 1),
               bands=(valley, peak)),
        added_by="test",
    )  # fmt: skip
    text = (
        "site,carrier,first_day,last_day,quantity,unit,cost,kind,device,reference\n"
        f"{sid},electricity,2023-01-01,2023-01-01,100,kWh,80,billed,em-main,<b>E-1</b>\n"
    )
    result = import_bills(
        conn, "c.csv", text.encode(), {sid: site}.get, actor="t",
        now=dt.datetime.now(dt.UTC), dry_run=False,
    )  # fmt: skip
    assert not result.errors
    plain, _ = create_token(conn, "energy_officer", (sid,), "cost page test")
    conn.commit()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            errors: list[str] = []
            for lang in ("zh", "en"):
                context = browser.new_context(viewport={"width": 390, "height": 844})
                context.add_init_script(f"localStorage.setItem('clausewatch.lang', '{lang}');")
                page = context.new_page()
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(
                    f"{server}/energy?site={sid}&since=2023-01-01&until=2023-01-02#token={plain}"
                )
                page.wait_for_selector("body[data-loaded=true]", timeout=30_000)
                summary = page.locator("#summary").inner_text()
                costs = page.locator("#costs").inner_text()
                bills = page.locator("#cost-bills").inner_text()
                # the bill's 80 yuan count; the tariff prices the day at 15 + 50 = 65
                assert "80.00" in summary and "0.08" in summary and "1.60" in summary
                assert "65.00" in costs and "50.00" in costs and "15.00" in costs
                assert "80.00" in bills and "65.00" in bills and "15.00" in bills
                assert "<b>E-1</b>" in bills  # the reference as text, never markup
                if lang == "zh":
                    assert "运行成本（元）" in summary and "谷" in costs and "峰" in costs
                    assert (
                        "账单费用与按价格估算对照" in page.locator("#cost-bills-title").inner_text()
                    )
                else:
                    assert "cost (yuan)" in summary and "valley" in costs and "peak" in costs
                seen = page.evaluate(WIDTH)
                assert seen[0] <= seen[1], f"{seen[0]} px wide in {seen[1]} px"
                assert not errors, errors
                page.screenshot(
                    path=str(artifacts_dir / f"energy-cost-phone-{lang}.png"), full_page=True
                )
                context.close()
        finally:
            browser.close()
