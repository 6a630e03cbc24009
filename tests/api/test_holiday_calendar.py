"""A year without the State Council's holiday schedule is said plainly by the API: `/healthz`
carries it (status still ok) and the dashboard shows a banner naming the year and the fallback
rule, on a phone (390×844) and on a desktop, in Chinese and in English."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import api.routers.health
from rules.holidays import (
    FALLBACK_RULE,
    FALLBACK_RULE_ZH,
    HolidaySchedule,
    OfficialCalendar,
    official_calendar,
)
from tests.support import launch_chromium, skip_without_chromium

pytestmark = pytest.mark.integration

TODAY = dt.date(2026, 12, 6)


@pytest.fixture
def on_2026_12_06(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api.routers.health, "today_in_china", lambda: TODAY)


@pytest.mark.usefixtures("on_2026_12_06")
def test_healthz_names_2027_and_the_fallback_rule_and_stays_ok(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["database"]) == ("ok", "ok")
    calendar = body["holiday_calendar"]
    assert calendar["complete"] is False
    assert calendar["years_with_data"] == list(range(2004, 2027))
    assert calendar["years_without_data"] == []
    assert calendar["next_year_without_data"] == 2027
    assert (calendar["fallback_rule"], calendar["fallback_rule_zh"]) == (
        FALLBACK_RULE,
        FALLBACK_RULE_ZH,
    )
    assert calendar["warnings"] == [
        "no official holiday schedule for 2027, which starts in 26 day(s): from 2027-01-01 "
        f"working days will be judged by the fallback rule ({FALLBACK_RULE}) until "
        "holidays/2027.yaml is added from the State Council notice"
    ]
    assert calendar["warnings_zh"][0].startswith("尚无2027年国务院节假日安排（26天后开始）")


def test_healthz_names_a_judged_year_without_a_schedule(
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    calendar_in_use: Callable[[OfficialCalendar], None],
) -> None:
    monkeypatch.setattr(api.routers.health, "today_in_china", lambda: dt.date(2027, 3, 1))
    body = client.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["holiday_calendar"]["years_without_data"] == [2027]
    assert body["holiday_calendar"]["warnings"] == [
        "no official holiday schedule for 2027: 2027-01-01 to 2027-12-31 judged by the "
        f"fallback rule ({FALLBACK_RULE})"
    ]
    # With the notice typed in, nothing to say.
    schedule = {
        "year": 2027,
        "source": {"title": "test - an invented arrangement for 2027"},
        "holidays": [{"name": "元旦", "from": "2027-01-01", "to": "2027-01-01"}],
    }
    calendar_in_use(
        OfficialCalendar(
            [*official_calendar().schedules.values(), HolidaySchedule.model_validate(schedule)]
        )
    )
    calendar = client.get("/healthz").json()["holiday_calendar"]
    assert calendar["complete"] is True and calendar["warnings"] == []


@pytest.mark.browser
@pytest.mark.usefixtures("on_2026_12_06")
@pytest.mark.parametrize(("width", "height", "name"), [(390, 844, "phone"), (1280, 900, "desktop")])
def test_the_dashboard_shows_a_banner_for_2027(
    live_api: str,
    tokens: dict[tuple[str, str], str],
    artifacts_dir: Path,
    width: int,
    height: int,
    name: str,
) -> None:
    skip_without_chromium()
    from playwright.sync_api import expect

    with launch_chromium() as browser:
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(live_api + "/#token")  # the token form (people sign in at /login)
        banner = page.locator("#calendar-banner")
        expect(banner).to_be_visible()  # before signing in too
        expect(banner).to_contain_text("尚无2027年国务院节假日安排（26天后开始）")
        expect(banner).to_contain_text(FALLBACK_RULE_ZH)
        box = banner.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
        # Every line of it fits the viewport: it wraps, nothing runs off the side.
        assert page.evaluate(
            "(width) => [...document.querySelectorAll('#calendar-banner p')].every("
            "(p) => p.scrollWidth <= p.clientWidth && p.getBoundingClientRect().right <= width)",
            width,
        )
        page.fill("#token-input", tokens[("viewer", "all")])
        page.click("#token-form button[type=submit]")
        expect(page.locator("#app")).to_be_visible()
        expect(banner).to_be_visible()
        page.click("#lang-toggle")
        expect(banner).to_contain_text("no official holiday schedule for 2027")
        expect(banner).to_contain_text(FALLBACK_RULE)
        page.screenshot(path=str(artifacts_dir / f"dashboard-holiday-banner-{name}.png"))
