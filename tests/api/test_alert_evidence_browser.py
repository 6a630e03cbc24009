"""The evidence of a meter alert and of an obligation alert in real headless Chromium (issue
19), on a phone (390×844) and at the desk (1440×900), in Chinese and in English: the monthly
electricity quota as consumption per day in kWh/m² against its limit in kWh/m² (not the meter's
register), the lift's maintenance as its events with the last done and due times and the
overdue stretch, with the numbers in words. The page never scrolls sideways. Screenshots land
in test-artifacts/."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from api.tokens import create_token
from store.batches import ReadingRow, write_readings
from tests.api.conftest import insert_alert
from tests.api.test_alert_evidence import evidence_token as evidence_token  # the fixture
from tests.api.test_alert_evidence import lift_alert, quota_alert
from tests.support import launch_chromium, skip_without_chromium

pytestmark = [pytest.mark.integration, pytest.mark.browser]

VIEWPORTS = {"phone": (390, 844), "desk": (1440, 900)}
MINUTE = dt.timedelta(minutes=1)
WORDS = {
    "zh": {
        "y": "用量 (kWh/m²)",
        "bars": "每日用量",
        "meter": "本期累计 6 kWh/m² / 限值 5.62 kWh/m²",
        "area": "面积 1000 m²",
        "limit": "限值 5.62 kWh/m²",
        "overdue": "已逾期 2天6小时",
        "last": "上次完成 2026-06-14 10:00:00 GMT+8",
        "due": "应完成 2026-06-29 10:00:00 GMT+8",
    },
    "en": {
        "y": "consumption (kWh/m²)",
        "bars": "per day",
        "meter": "cumulative 6 kWh/m² / limit 5.62 kWh/m²",
        "area": "area 1000 m²",
        "limit": "limit 5.62 kWh/m²",
        "overdue": "overdue by 2 d 6 h",
        "last": "Last done 2026-06-14 10:00:00 GMT+8",
        "due": "due 2026-06-29 10:00:00 GMT+8",
    },
}
WIDTH = "() => [document.documentElement.scrollWidth, window.innerWidth]"
# What the chart was told to draw (Apache ECharts' own reading of its options).
CHART_OPTION = """() => {
  const option = echarts.getInstanceByDom(document.getElementById("chart")).getOption();
  return {
    y: option.yAxis[0].name,
    series: option.series.map((s) => ({
      name: s.name, type: s.type,
      data: s.data.map((d) => (Array.isArray(d) ? d[1] : d.value[0])),
      lines: s.markLine ? s.markLine.data.map((d) => d.name) : [],
      areas: s.markArea ? s.markArea.data.map((d) => d[0].name) : [],
      marked: s.markPoint && s.markPoint.data.length ? s.markPoint.data[0].value : null,
    })),
  };
}"""


@pytest.fixture(scope="module")
def shown(api_database_url: str, evidence_token: str) -> dict[str, int]:
    skip_without_chromium()
    with psycopg.connect(api_database_url) as conn:
        return {"meter": quota_alert(conn), "lift": lift_alert(conn)}


@pytest.mark.parametrize("lang", ["zh", "en"])
@pytest.mark.parametrize("where", list(VIEWPORTS))
def test_meter_and_obligation_evidence_explain_themselves(
    live_api: str,
    evidence_token: str,
    shown: dict[str, int],
    artifacts_dir: Path,
    where: str,
    lang: str,
) -> None:
    from playwright.sync_api import expect

    width, height = VIEWPORTS[where]
    words = WORDS[lang]
    problems: list[str] = []
    with launch_chromium() as browser:
        context = browser.new_context(viewport={"width": width, "height": height})
        context.add_init_script(
            f"sessionStorage.setItem('clausewatch.token', {evidence_token!r});"
            f"localStorage.setItem('clausewatch.lang', {lang!r});"
        )
        page = context.new_page()
        refused: list[str] = []
        page.on("pageerror", lambda error: refused.append(str(error)))
        page.on(
            "response",
            lambda r: (
                refused.append(f"{r.status} {r.url}")
                if r.status >= 400 and not r.url.endswith("/favicon.ico")
                else None
            ),
        )

        # The monthly electricity quota: consumption per day per m², not the register.
        page.goto(f"{live_api}/alerts/{shown['meter']}")
        expect(page.locator("#detail")).to_have_attribute("data-alert-id", str(shown["meter"]))
        expect(page.locator("#chart svg")).to_have_count(1)
        expect(page.locator("#chart-worst")).to_contain_text(words["meter"])
        expect(page.locator("#chart-worst")).to_contain_text(words["area"])
        option: dict[str, Any] = page.evaluate(CHART_OPTION)
        assert option["y"] == words["y"], option
        bars, cumulative, _pro_rata = option["series"]
        assert bars["type"] == "bar" and bars["name"] == words["bars"], option
        assert bars["data"] == pytest.approx([2.0, 3.0, 1.0]), option
        assert cumulative["data"] == pytest.approx([0.0, 2.0, 5.0, 6.0]), option
        assert cumulative["lines"][0] == words["limit"], option
        assert cumulative["marked"] == "6", option  # the alert's 6000 kWh / 1000 m²
        _fits(page, f"meter at {where} in {lang}", problems)
        page.locator("#chart").scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts_dir / f"evidence-meter-{where}-{lang}.png"))

        # The lift's maintenance: last done, due, overdue by, its events from every source.
        page.goto(f"{live_api}/alerts/{shown['lift']}")
        expect(page.locator("#detail")).to_have_attribute("data-alert-id", str(shown["lift"]))
        expect(page.locator("#chart svg")).to_have_count(1)
        expect(page.locator("#detail-worst")).to_have_text(words["overdue"])
        text = page.locator("#chart-worst")
        for part in ("last", "due", "overdue"):
            expect(text).to_contain_text(words[part])
        events = page.locator("#evidence-events li")
        expect(events).to_have_count(3)
        expect(events.nth(1)).to_contain_text("user:li · 润滑、调整")  # the check-in
        option = page.evaluate(CHART_OPTION)
        (marks,) = option["series"]
        assert marks["type"] == "scatter" and len(marks["data"]) == 3, option
        assert marks["areas"] == [words["overdue"]], option
        assert len(marks["lines"]) == 2, option  # due, last done
        _fits(page, f"obligation at {where} in {lang}", problems)
        page.locator("#chart").scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts_dir / f"evidence-obligation-{where}-{lang}.png"))
        context.close()
    assert not problems, "\n".join(problems)
    assert not refused, refused


def _fits(page: Any, label: str, problems: list[str]) -> None:
    scroll, inner = page.evaluate(WIDTH)
    if scroll > inner:
        problems.append(f"{label}: {scroll} px wide in {inner} px")


def test_a_chart_of_five_minute_means_marks_the_stored_worst_reading(
    live_api: str, api_database_url: str, artifacts_dir: Path
) -> None:
    """Three hours of readings are drawn as 5-minute means; the worst one (24.1 °C, 100 min in)
    is not among the readings the engine kept (those show 24.1 at 4 min): the pin is on the
    stored reading, at its time."""
    from playwright.sync_api import expect

    skip_without_chromium()
    start = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(hours=4)
    values = {minute: 25.0 for minute in range(0, 181)}
    values[100] = 24.1
    with psycopg.connect(api_database_url) as conn:
        write_readings(
            conn,
            [
                ReadingRow(
                    "site-a",
                    "th-1",
                    "temperature",
                    (start + dt.timedelta(minutes=m)).timestamp(),
                    v,
                    None,
                    0,
                )
                for m, v in values.items()
            ],
        )
        alert = insert_alert(conn, "site-a", space="evidence-means", started_at=start)
        conn.execute(
            "UPDATE alerts SET state = 'resolved', ended_at = %s WHERE id = %s",
            (start + dt.timedelta(hours=3), alert),
        )
        token, _ = create_token(conn, "viewer", ("site-a",), "evidence means test")
    with launch_chromium() as browser:
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        context.add_init_script(
            f"sessionStorage.setItem('clausewatch.token', {token!r});"
            "localStorage.setItem('clausewatch.lang', 'zh');"
        )
        page = context.new_page()
        page.goto(f"{live_api}/alerts/{alert}")
        expect(page.locator("#chart svg")).to_have_count(1)
        expect(page.locator("#chart-worst")).to_contain_text("24.1 °C")
        pin = page.evaluate(
            """() => {
              const option = echarts.getInstanceByDom(document.getElementById("chart")).getOption();
              return {
                names: option.series.map((s) => s.name),
                coord: option.series.find((s) => s.type === "scatter").markPoint.data[0].coord,
              };
            }"""
        )
        assert pin["names"][0] == "5分钟均值", pin  # the means, with their min and max
        worst_at = (start + dt.timedelta(minutes=100)).timestamp() * 1000
        assert pin["coord"] == [worst_at, 24.1], pin
        page.locator("#chart").scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts_dir / "evidence-means-desk-zh.png"))
        context.close()


METRIC_WORDS = {
    "zh": {"y": "温度 (°C)", "limit": "限值 26 °C", "subject": " / th-1 / 温度"},
    "en": {"y": "temperature (°C)", "limit": "limit 26 °C", "subject": " / th-1 / temperature"},
}


def test_the_chart_names_its_metric_in_the_pages_language(
    live_api: str, api_database_url: str, artifacts_dir: Path
) -> None:
    """Issue 19: the y axis said "temperature (°C)" on the Chinese page. The metric, the limit
    line and the alert's subject are named in the page's language (api/static/metrics.js)."""
    from playwright.sync_api import expect

    skip_without_chromium()
    start = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(hours=1)
    with psycopg.connect(api_database_url) as conn:
        write_readings(
            conn,
            [
                ReadingRow("site-a", "th-1", "temperature", (start + m * MINUTE).timestamp(),
                           24.5 - 0.01 * m, None, 0)
                for m in range(30)
            ],
        )  # fmt: skip
        alert = insert_alert(conn, "site-a", space="evidence-metric", started_at=start)
        token, _ = create_token(conn, "viewer", ("site-a",), "metric names test")
    problems: list[str] = []
    with launch_chromium() as browser:
        for lang, words in METRIC_WORDS.items():
            for where, (width, height) in VIEWPORTS.items():
                context = browser.new_context(viewport={"width": width, "height": height})
                context.add_init_script(
                    f"sessionStorage.setItem('clausewatch.token', {token!r});"
                    f"localStorage.setItem('clausewatch.lang', {lang!r});"
                )
                page = context.new_page()
                page.goto(f"{live_api}/alerts/{alert}")
                expect(page.locator("#chart svg")).to_have_count(1)
                option = page.evaluate(CHART_OPTION)
                label = f"{where} in {lang}"
                if option["y"] != words["y"]:
                    problems.append(f"{label}: y axis {option['y']!r}")
                if option["series"][0]["lines"] != [words["limit"]]:
                    problems.append(f"{label}: limit lines {option['series'][0]['lines']!r}")
                subject = page.locator("#detail-subject").inner_text()
                if not subject.endswith(words["subject"]):
                    problems.append(f"{label}: subject {subject!r}")
                page.locator("#chart").scroll_into_view_if_needed()
                page.screenshot(path=str(artifacts_dir / f"evidence-metric-{where}-{lang}.png"))
                context.close()
    assert not problems, problems


def test_the_chart_plots_only_its_metrics_evidence(
    live_api: str, api_database_url: str, artifacts_dir: Path
) -> None:
    """A clause over temperature and humidity keeps readings of both as evidence; a chart of
    temperature in °C plots the temperature ones only (a humidity of 51 % is no temperature)."""
    from playwright.sync_api import expect

    skip_without_chromium()
    start = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(minutes=30)
    with psycopg.connect(api_database_url) as conn:
        alert = insert_alert(conn, "site-a", space="evidence-two-metrics", started_at=start)
        humidity = [
            {
                "ts": start.timestamp() + 60 * i,
                "device": "th-1",
                "metric": "humidity",
                "value": 51.0,
            }
            for i in range(3)
        ]
        conn.execute(
            "UPDATE alerts SET evidence = evidence || %s WHERE id = %s", (Jsonb(humidity), alert)
        )
        token, _ = create_token(conn, "viewer", ("site-a",), "evidence metrics test")
    with launch_chromium() as browser:
        context = browser.new_context(viewport={"width": 390, "height": 844})
        context.add_init_script(
            f"sessionStorage.setItem('clausewatch.token', {token!r});"
            "localStorage.setItem('clausewatch.lang', 'zh');"
        )
        page = context.new_page()
        page.goto(f"{live_api}/alerts/{alert}")
        expect(page.locator("#chart svg")).to_have_count(1)
        option = page.evaluate(CHART_OPTION)
        [dots] = [s for s in option["series"] if s["type"] == "scatter"]
        assert dots["data"] and 51.0 not in dots["data"], option
        assert all(value < 26 for value in dots["data"]), option  # 24.5 down to 24.1 °C
        context.close()
