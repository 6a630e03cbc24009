"""The alert desk in real headless Chromium (issue 19), on a facility manager's phone (390×844)
and at the desk (1440×900), in Chinese and in English: open the desk, see a new alert arrive and
announce itself in the tab title, filter and search, open an alert at its own address
/alerts/{id}, read its times in the site's zone, acknowledge, comment, reassign, close it with
cause and action once it resolved, find it in the history tab with both shown, and acknowledge
a batch. The page never scrolls sideways. Screenshots land in test-artifacts/."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import psycopg
import pytest

from api.tokens import create_token
from tests.api.conftest import T0, add_timeline, insert_alert
from tests.support import launch_chromium, skip_without_chromium, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.browser]

VIEWPORTS = {"phone": (390, 844), "desk": (1440, 900)}
WORDS = {
    "zh": {"acknowledge": "确认", "history": "历史（已关闭）", "cause": "原因", "done": "已处理 1"},
    "en": {
        "acknowledge": "Acknowledge",
        "history": "History (closed)",
        "cause": "Cause",
        "done": "done 1",
    },
}
WIDTH = "() => [document.documentElement.scrollWidth, window.innerWidth]"
# What the evidence chart was told to draw (Apache ECharts' own reading of its options).
CHART_OPTION = """() => {
  const option = echarts.getInstanceByDom(document.getElementById("chart")).getOption();
  const evidence = option.series.find((s) => s.type === "scatter");
  return {
    x: option.xAxis[0].name, y: option.yAxis[0].name,
    worst: evidence.markPoint.data[0].value,
    limits: option.series[0].markLine.data.map((d) => d.name),
  };
}"""
# Chromium's notifications (granted below) go to the desktop, which a test cannot read: the page
# keeps a copy of what it asked the browser to show.
RECORD_NOTIFICATIONS = """
const Shown = window.Notification;
window.shownNotifications = [];
window.Notification = class extends Shown {
  constructor(title, options) {
    super(title, options);
    window.shownNotifications.push({ title, tag: options && options.tag });
  }
};
"""


def _fits(page: Any, label: str, problems: list[str]) -> None:
    scroll, inner = page.evaluate(WIDTH)
    if scroll > inner:
        problems.append(f"{label}: {scroll} px wide in {inner} px")


@pytest.fixture(scope="module")
def desk_token(api_database_url: str) -> str:
    skip_without_chromium()
    with psycopg.connect(api_database_url) as conn:
        conn.execute(
            "INSERT INTO parties (site, id, name, kind, created_by, created_at, updated_by,"
            " updated_at) VALUES ('site-a', 'hvac-1', '暖通班组', 'contractor', 'test', %s,"
            " 'test', %s) ON CONFLICT DO NOTHING",
            (T0, T0),
        )
        token, _ = create_token(conn, "facility_manager", ("site-a",), "desk browser test")
    return token


@pytest.mark.parametrize("lang", ["zh", "en"])
@pytest.mark.parametrize("where", list(VIEWPORTS))
def test_a_facility_manager_works_the_desk(
    live_api: str,
    api_database_url: str,
    desk_token: str,
    artifacts_dir: Path,
    where: str,
    lang: str,
) -> None:
    from playwright.sync_api import expect

    width, height = VIEWPORTS[where]
    tag = f"desk-{where}-{lang}"  # this run's spaces: the search finds them and nothing else
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    with psycopg.connect(api_database_url) as conn:
        main = insert_alert(conn, "site-a", space=tag, started_at=now - dt.timedelta(hours=3))
        other = insert_alert(
            conn, "site-a", space=f"{tag}-b", started_at=now - dt.timedelta(hours=4)
        )
    problems: list[str] = []
    with launch_chromium() as browser:
        context = browser.new_context(viewport={"width": width, "height": height})
        context.grant_permissions(["notifications"], origin=live_api)
        context.add_init_script(RECORD_NOTIFICATIONS)
        context.add_init_script(
            f"sessionStorage.setItem('clausewatch.token', {desk_token!r});"
            f"if (!localStorage.getItem('clausewatch.lang'))"
            f" localStorage.setItem('clausewatch.lang', {lang!r});"
        )
        page = context.new_page()
        refused: list[str] = []
        # Script errors, and answers of 400 and above (the browser's own favicon probe aside).
        page.on("pageerror", lambda error: refused.append(str(error)))
        page.on(
            "response",
            lambda r: (
                refused.append(f"{r.status} {r.url}")
                if r.status >= 400 and not r.url.endswith("/favicon.ico")
                else None
            ),
        )
        page.goto(live_api + "/")
        expect(page.locator(f'li.alert[data-alert-id="{main}"]')).to_be_visible(timeout=15_000)
        expect(page).to_have_title("clausewatch")
        expect(page.locator("#sound-toggle")).not_to_be_checked()  # off until switched on
        expect(page.locator("#notify-permission")).to_be_hidden()  # granted already

        # A new alert arrives on the stream: a row, and the tab title counts it.
        with psycopg.connect(api_database_url) as conn:
            fresh = insert_alert(
                conn, "site-a", space=f"{tag}-c", started_at=now - dt.timedelta(hours=1)
            )
        expect(page.locator(f'li.alert[data-alert-id="{fresh}"]')).to_be_visible(timeout=15_000)
        expect(page).to_have_title(re.compile(r"^\(1\) clausewatch$"))
        shown = page.evaluate("window.shownNotifications")
        assert [n["tag"] for n in shown] == [f"clausewatch-alert-{fresh}"], shown
        assert "夏季室内空调温度设置不得低于26℃" in shown[0]["title"]
        row = page.locator(f'li.alert[data-alert-id="{fresh}"]')
        expect(row).to_contain_text("王工")  # the responsible party on the row
        expect(row).to_contain_text("GMT+8")  # the site's zone on its time
        _fits(page, f"desk at {where} in {lang}", problems)

        # Filter: search this run's spaces, of one severity.
        page.fill("#f-search", tag)
        if where == "phone":  # the search shows; the other filters are one tap away
            expect(page.locator("#f-severity")).to_be_hidden()
            page.click("#filters-toggle")
        page.select_option("#f-severity", "warning")
        offered = page.locator("#clause-options option")  # typing a clause offers the clauses
        expect(offered.first).to_be_attached()
        assert "temp.cooling.min" in offered.evaluate_all("os => os.map((o) => o.value)")
        page.click("#f-apply")
        expect(page.locator("li.alert")).to_have_count(3)
        page.screenshot(path=str(artifacts_dir / f"desk-filtered-{where}-{lang}.png"))

        # Its own address opens the alert (as a notification's link would).
        page.goto(f"{live_api}/alerts/{main}")
        expect(page.locator("#detail")).to_have_attribute("data-alert-id", str(main))
        expect(page.locator("#detail-timezone")).to_have_text("Asia/Shanghai")
        expect(page.locator("#detail-started")).to_contain_text("GMT+8")
        heading = page.locator("#detail-title").bounding_box()
        assert heading is not None and 0 <= heading["y"] < height
        # The evidence chart: axes with the zone and the unit, the worst raw reading marked.
        expect(page.locator("#chart svg")).to_have_count(1)
        expect(page.locator("#chart-worst")).to_contain_text("24.1 °C")
        option = page.evaluate(CHART_OPTION)
        assert option["x"].endswith("(Asia/Shanghai GMT+8)"), option
        # The metric and the limit in the page's language (api/static/metrics.js).
        axis, limit = {"zh": ("温度", "限值"), "en": ("temperature", "limit")}[lang]
        assert option["y"] == f"{axis} (°C)", option
        assert option["worst"] == 24.1 and option["limits"] == [f"{limit} 26 °C"], option
        expect(page.locator("#ack-button")).to_have_text(WORDS[lang]["acknowledge"])
        page.fill("#ack-note", "已通知运维")
        page.click("#ack-button")
        expect(page.locator("#detail-state")).to_have_attribute("data-state", "acknowledged")
        page.fill("#comment-text", "风机盘管待检修")
        page.click("#comment-button")
        expect(page.locator("#timeline li[data-action=commented]")).to_contain_text(
            "风机盘管待检修"
        )
        page.select_option("#reassign-party", "hvac-1")
        page.click("#reassign-button")
        expect(page.locator("#detail-responsible")).to_contain_text("暖通班组")
        expect(page.locator("#timeline li[data-action=reassigned]")).to_contain_text("暖通班组")
        _fits(page, f"detail at {where} in {lang}", problems)

        # The engine sees the condition clear: the open detail follows the stream.
        ended = now - dt.timedelta(hours=2)
        with psycopg.connect(api_database_url) as conn:
            conn.execute(
                "UPDATE alerts SET state = 'resolved', ended_at = %s WHERE id = %s", (ended, main)
            )
            add_timeline(conn, main, "site-a", "resolved", ended)
        expect(page.locator("#detail-state")).to_have_attribute(
            "data-state", "resolved", timeout=15_000
        )
        page.fill("#close-cause", "会议室空调设定温度被调到24℃")
        page.fill("#close-action", "设定温度恢复26℃并锁定面板")
        page.click("#close-button")
        expect(page.locator("#detail-state")).to_have_attribute("data-state", "closed")
        expect(page.locator("#detail-closure")).to_be_visible()
        expect(page.locator("#detail-cause")).to_have_text("会议室空调设定温度被调到24℃")
        expect(page.locator("#detail-action")).to_have_text("设定温度恢复26℃并锁定面板")
        for step in ("#ack-form", "#close-form", "#reassign-form"):  # nothing left to do
            expect(page.locator(step)).to_be_hidden()
        expect(page.locator("#comment-form")).to_be_visible()  # but to comment
        page.screenshot(path=str(artifacts_dir / f"desk-closed-{where}-{lang}.png"))

        # History: the closed alert with its cause and action.
        if where == "phone":
            page.click("#detail-back")
            expect(page.locator("#detail")).to_be_hidden()
            expect(page).to_have_url(live_api + "/")
        history = page.locator('.tabs [data-tab="closed"]')
        expect(history).to_have_text(WORDS[lang]["history"])
        history.click()
        page.fill("#f-search", tag)
        page.click("#f-apply")
        closed = page.locator(f'li.alert[data-alert-id="{main}"]')
        expect(closed).to_have_attribute("data-state", "closed")
        expect(closed.locator(".closure")).to_contain_text("会议室空调设定温度被调到24℃")
        expect(closed.locator(".closure")).to_contain_text("设定温度恢复26℃并锁定面板")
        expect(closed.locator(".closure")).to_contain_text(WORDS[lang]["cause"])
        expect(page.locator("li.alert")).to_have_count(1)
        _fits(page, f"history at {where} in {lang}", problems)
        page.screenshot(path=str(artifacts_dir / f"desk-history-{where}-{lang}.png"))

        # A batch: the open tab, tick the other alert, acknowledge the selection.
        page.click('.tabs [data-tab="open"]')
        expect(page.locator(f'li.alert[data-alert-id="{other}"]')).to_be_visible()
        page.locator(f'li.alert[data-alert-id="{other}"] input.pick').check()
        page.click("#bulk-ack")
        expect(page.locator("#bulk-result")).to_contain_text(WORDS[lang]["done"])
        expect(page.locator(f'li.alert[data-alert-id="{other}"]')).to_have_attribute(
            "data-state", "acknowledged"
        )
        # Resolved, it closes in a batch with one cause and action.
        with psycopg.connect(api_database_url) as conn:
            conn.execute(
                "UPDATE alerts SET state = 'resolved', ended_at = %s WHERE id = %s", (ended, other)
            )
            add_timeline(conn, other, "site-a", "resolved", ended)
        row = page.locator(f'li.alert[data-alert-id="{other}"]')
        expect(row).to_have_attribute("data-state", "resolved", timeout=15_000)
        row.locator("input.pick").check()
        page.fill("#bulk-cause", "同一台空调面板")
        page.fill("#bulk-action", "面板已锁定")
        page.click("#bulk-close")
        expect(page.locator("#bulk-result")).to_contain_text(WORDS[lang]["done"])
        expect(row).to_have_count(0)  # no longer open: in the history
        page.click('.tabs [data-tab="closed"]')
        expect(row).to_have_attribute("data-state", "closed")
        expect(row.locator(".closure")).to_contain_text("面板已锁定")
        context.close()
    assert not problems, "\n".join(problems)
    assert not refused, refused


# Where the filter's apply button is on every animation frame while it is shown: what a finger
# aiming at it meets (a late banner or row of tiles moving it is a tap on something else).
RECORD_APPLY_TOPS = """
window.applyTops = [];
const frame = () => {
  const button = document.getElementById("f-apply");
  const box = button && button.getBoundingClientRect();
  if (box && box.height > 0) window.applyTops.push(Math.round(box.top + window.scrollY));
  requestAnimationFrame(frame);
};
requestAnimationFrame(frame);
"""


@pytest.mark.parametrize("where", list(VIEWPORTS))
def test_the_filters_stay_put_while_the_page_fills_in(
    live_api: str, desk_token: str, where: str
) -> None:
    """The holiday-calendar banner and the site tiles' figures arrive after the list: they must
    not move the controls under a user's finger (two CI runs clicked the filter's apply button,
    hit what a late row of tiles had moved there, and listed 57 unfiltered alerts)."""
    from playwright.sync_api import expect

    held: list[Any] = []
    with launch_chromium() as browser:
        width, height = VIEWPORTS[where]
        context = browser.new_context(viewport={"width": width, "height": height})
        context.add_init_script(
            f"sessionStorage.setItem('clausewatch.token', {desk_token!r});" + RECORD_APPLY_TOPS
        )
        page = context.new_page()
        page.route("**/healthz", lambda route: held.append(route))
        page.route("**/compliance?*", lambda route: held.append(route))
        with page.expect_request("**/sites"):
            page.goto(live_api + "/")
        with page.expect_response("**/healthz"):  # the calendar, and a banner when one is due
            for route in [r for r in held if r.request.url.endswith("/healthz")]:
                route.continue_()
        page.unroute("**/healthz")
        expect(page.locator("#connection")).to_have_attribute("data-state", "live")
        for route in [r for r in held if "/compliance?" in r.request.url]:
            route.continue_()
        page.unroute("**/compliance?*")
        tiles = page.locator("#sites .tile .rate")
        expect(tiles).to_have_count(1)  # the token's one site
        expect(tiles.filter(has_text="…")).to_have_count(0)  # every site's figures are in
        frames = page.evaluate("window.applyTops.length")
        wait_for(lambda: page.evaluate("window.applyTops.length") > frames + 30)  # frames after
        tops = page.evaluate("window.applyTops")
        assert len(set(tops)) == 1, f"the apply button moved: {sorted(set(tops))}"
        context.close()


def test_the_list_pages_on_and_opening_a_new_alert_clears_the_count(
    live_api: str, api_database_url: str, desk_token: str
) -> None:
    from playwright.sync_api import expect

    tag = "desk-pages"
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    with psycopg.connect(api_database_url) as conn:
        for i in range(53):  # more than a page (50)
            insert_alert(conn, "site-a", space=tag, started_at=now - dt.timedelta(days=2, hours=i))
    with launch_chromium() as browser:
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        context.add_init_script(f"sessionStorage.setItem('clausewatch.token', {desk_token!r});")
        page = context.new_page()
        page.goto(live_api + "/")
        expect(page.locator("#connection")).to_have_attribute("data-state", "live")
        page.fill("#f-search", tag)
        page.click("#f-apply")
        expect(page.locator("li.alert")).to_have_count(50)
        page.click("#more")
        expect(page.locator("li.alert")).to_have_count(53)
        expect(page.locator("#more")).to_be_hidden()

        with psycopg.connect(api_database_url) as conn:
            fresh = insert_alert(conn, "site-a", space=tag, started_at=now)
        expect(page).to_have_title("(1) clausewatch", timeout=15_000)
        page.locator(f'li.alert[data-alert-id="{fresh}"]').click()
        expect(page).to_have_url(f"{live_api}/alerts/{fresh}")
        expect(page).to_have_title("clausewatch")
        page.go_back()  # the address says the list: the detail's alert is no longer selected
        expect(page).to_have_url(live_api + "/")
        page.go_forward()
        expect(page.locator("#detail")).to_have_attribute("data-alert-id", str(fresh))
        context.close()


def test_load_more_waits_for_the_new_filters_first_page(
    live_api: str, api_database_url: str, desk_token: str
) -> None:
    """The "Load more" button continues the list on screen: while a new filter's first page is
    on its way, the button the old list showed must not fetch the old list's next page under
    the new filter (a CI run saw 50 unfiltered rows plus 7 filtered ones: 57 where 53 were
    searched for)."""
    from playwright.sync_api import expect

    tag = "desk-race"
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    with psycopg.connect(api_database_url) as conn:
        for i in range(53):  # more than a page (50) of them, and more than a page unfiltered
            insert_alert(conn, "site-a", space=tag, started_at=now - dt.timedelta(days=3, hours=i))
    held: list[Any] = []
    with launch_chromium() as browser:
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        context.add_init_script(f"sessionStorage.setItem('clausewatch.token', {desk_token!r});")
        page = context.new_page()
        page.goto(live_api + "/")
        expect(page.locator("li.alert")).to_have_count(50)  # the unfiltered first page
        expect(page.locator("#more")).to_be_visible()
        # The searched first page is held back (the real server answers it once released).
        page.route(
            lambda url: f"search={tag}" in url and "cursor=" not in url,
            lambda route: route.continue_() if held else held.append(route),
        )
        page.fill("#f-search", tag)
        with page.expect_request(lambda request: f"search={tag}" in request.url):
            page.click("#f-apply")
        expect(page.locator("#more")).to_be_hidden()
        expect(page.locator("#alerts")).to_have_attribute("aria-busy", "true")
        held[0].continue_()
        expect(page.locator("#alerts")).to_have_attribute("aria-busy", "false")
        rows = page.locator("li.alert")
        expect(rows).to_have_count(50)
        page.click("#more")
        expect(rows).to_have_count(53)
        assert all(tag in text for text in rows.all_inner_texts())
        context.close()


def test_an_outage_alert_lists_what_it_inhibits_and_each_names_it(
    live_api: str, api_database_url: str, desk_token: str, artifacts_dir: Path
) -> None:
    from playwright.sync_api import expect

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    with psycopg.connect(api_database_url) as conn:
        outage = insert_alert(conn, "site-a", space="outage-b1", started_at=now)
        member = insert_alert(conn, "site-a", space="outage-b1-2f", started_at=now)
        # As alerts/record.py records them (docs/alerts.md, "Inhibition").
        conn.execute(
            "UPDATE alerts SET outage = 'gateway', device = 'gw-1' WHERE id = %s", (outage,)
        )
        conn.execute("UPDATE alerts SET inhibited_by = %s WHERE id = %s", (outage, member))
    with launch_chromium() as browser:
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        context.add_init_script(
            f"sessionStorage.setItem('clausewatch.token', {desk_token!r});"
            "localStorage.setItem('clausewatch.lang', 'zh');"
        )
        page = context.new_page()
        page.goto(f"{live_api}/alerts/{outage}")
        expect(page.locator("#detail")).to_have_attribute("data-alert-id", str(outage))
        expect(page.locator("#detail-inhibits-label")).to_have_text("抑制的告警")
        expect(page.locator("#detail-inhibits")).to_have_text(f"#{member} th-1 (告警中)")
        expect(page.locator("#detail-inhibited")).to_be_hidden()
        page.screenshot(path=str(artifacts_dir / "desk-outage-zh.png"))
        # In the list, the inhibited alert says by which.
        row = page.locator(f'li.alert[data-alert-id="{member}"] .inhibited')
        expect(row).to_have_text(f"被抑制于 #{outage}")
        page.goto(f"{live_api}/alerts/{member}")
        expect(page.locator("#detail")).to_have_attribute("data-alert-id", str(member))
        expect(page.locator("#detail-inhibited")).to_have_text(f"#{outage}")
        expect(page.locator("#detail-inhibits")).to_be_hidden()
