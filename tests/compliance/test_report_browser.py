"""A quarterly report generated for the demo site, served by the API and rendered in headless
Chromium (Debian's, through playwright; never `playwright install`): its charts have size and
the screenshot lands in the artifacts folder."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from compliance.reports import generate_report
from tests.compliance.conftest import add_alert, add_interval, auth
from tests.support import launch_chromium, skip_without_chromium

pytestmark = [pytest.mark.integration, pytest.mark.browser]
SITE = "demo-hq"
T = dt.datetime(2026, 7, 6, 0, 30, tzinfo=dt.UTC)  # a Monday, 08:30 in Jinan
H = dt.timedelta(hours=1)


def _demo_quarter(conn: psycopg.Connection[Any]) -> None:
    """A plausible cooling quarter: offices mostly compliant, one over-cooled, a meeting room
    with stale CO2 data, a late toilet cleaning."""
    for n, (space, device) in enumerate(
        [("b1-2f-201", "th-201"), ("b1-2f-202", "th-202"), ("b1-3f-301", "th-301")]
    ):
        add_interval(conn, SITE, "temp.cooling.min", space, T, 400 - 60 * n, "compliant", device)
        add_interval(
            conn,
            SITE,
            "temp.cooling.min",
            space,
            T + (400 - 60 * n) * H,
            20 + 40 * n,
            "violating",
            device,
        )
    add_interval(conn, SITE, "iaq.co2", "b1-2f-meeting-a", T, 300, "compliant", "iaq-meeting-a")
    add_interval(
        conn,
        SITE,
        "iaq.co2",
        "b1-2f-meeting-a",
        T + 300 * H,
        30,
        "not_assessable",
        "iaq-meeting-a",
    )
    add_interval(conn, SITE, "iaq.hcho", "b1-2f-meeting-a", T, 320, "compliant", "iaq-meeting-a")
    add_interval(
        conn, SITE, "iaq.hcho", "b1-2f-meeting-a", T + 320 * H, 6, "violating", "iaq-meeting-a"
    )
    add_alert(
        conn,
        SITE,
        "temp.cooling.min",
        space="b1-3f-301",
        started_at=T + 280 * H,
        state="closed",
        acknowledged_after=dt.timedelta(minutes=12),
        closed_after=5 * H,
        cause="空调设定 22℃",
        action="设定恢复 26℃ 并锁定面板",
    )
    add_alert(
        conn,
        SITE,
        "iaq.hcho",
        space="b1-2f-meeting-a",
        severity="critical",
        started_at=T + 320 * H,
        state="acknowledged",
        acknowledged_after=dt.timedelta(minutes=40),
        reopen_count=4,
    )
    add_alert(
        conn,
        SITE,
        "toilet.cleaning",
        space="b1-2f-wc-east",
        severity="warning",
        started_at=T + 500 * H,
        state="closed",
        closed_after=3 * H,
        cause="保洁排班遗漏",
        action="补充排班表",
    )
    conn.commit()


def test_quarterly_report_renders_in_chromium(
    conn: psycopg.Connection[Any], client: TestClient, admin_token: str, artifacts_dir: Path
) -> None:
    skip_without_chromium()
    _demo_quarter(conn)
    report_id, report = generate_report(
        conn, SITE, "2026Q3", "browser test", dt.datetime(2026, 10, 1, 1, 0, tzinfo=dt.UTC)
    )
    conn.commit()
    page_html = client.get(f"/api/v1/reports/{report_id}/html", headers=auth(admin_token))
    assert page_html.status_code == 200
    with launch_chromium() as browser:
        page = browser.new_page(viewport={"width": 1100, "height": 1400})
        page.set_content(page_html.text, wait_until="load")
        assert "自评价报告 2026Q3" in page.locator("h1").inner_text()
        chart = page.locator("svg.chart").first
        box = chart.bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 50
        bars = page.locator("svg.chart").first.locator("rect")
        assert bars.count() == 2 * len([c for c in report.statistics.clauses if c.rate is not None])
        assert page.get_by_text("设定恢复 26℃ 并锁定面板").count() == 1
        shot = artifacts_dir / "report-demo-hq-2026Q3.png"
        page.screenshot(path=str(shot), full_page=True)

        # As served, under its own Content-Security-Policy: the inline style is allowed by its
        # hash and applies; nothing is refused.
        served = browser.new_page(viewport={"width": 1100, "height": 1400})
        refused: list[str] = []
        served.on(
            "console",
            lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
        )
        served.route(
            "http://127.0.0.1/report.html",
            lambda route: route.fulfill(
                status=200, headers=dict(page_html.headers), body=page_html.content
            ),
        )
        served.goto("http://127.0.0.1/report.html")
        assert served.evaluate("getComputedStyle(document.body).maxWidth") != "none"
        assert not refused, refused
    assert "style-src 'sha256-" in page_html.headers["content-security-policy"]
    assert shot.stat().st_size > 10_000


def test_annual_report_prints_to_a4_pdf(
    conn: psycopg.Connection[Any], client: TestClient, admin_token: str, artifacts_dir: Path
) -> None:
    """The annual self-evaluation of the demo site as Chromium prints it: A4 pages, its main
    parts each on a new page, nothing interactive."""
    from energy.summary import period_figures

    skip_without_chromium()
    _demo_quarter(conn)
    after_year = dt.datetime(2027, 1, 2, tzinfo=dt.UTC)
    generate_report(conn, SITE, "2026Q3", "browser test", after_year)
    report_id, report = generate_report(
        conn, SITE, "2026", "browser test", after_year, period_figures
    )
    conn.commit()
    assert report.energy is not None, report.energy_missing
    page_html = client.get(f"/api/v1/reports/{report_id}/html", headers=auth(admin_token))
    assert page_html.status_code == 200
    with launch_chromium() as browser:
        page = browser.new_page(viewport={"width": 1100, "height": 1400})
        page.set_content(page_html.text, wait_until="load")
        assert "年度自评价报告" in page.locator("h1").inner_text()
        assert page.get_by_text("设定恢复 26℃ 并锁定面板").count() == 1
        page.emulate_media(media="print")
        breaks = page.evaluate(
            "[...document.querySelectorAll('h2.page')].map(h => getComputedStyle(h).breakBefore)"
        )
        assert breaks and set(breaks) == {"page"}
        pdf = page.pdf(prefer_css_page_size=True)
        path = artifacts_dir / "report-demo-hq-2026.pdf"
        path.write_bytes(pdf)
    assert pdf.startswith(b"%PDF")
    # A4 is 595 x 842 points (Chromium writes 594.96 x 841.92); a page for each main part
    boxes = set(re.findall(rb"/MediaBox ?\[0 0 ([0-9.]+) ([0-9.]+)\]", pdf))
    assert {(round(float(w)), round(float(h))) for w, h in boxes} == {(595, 842)}
    assert len(re.findall(rb"/Type /Page\b(?!s)", pdf)) >= len(breaks) + 1
