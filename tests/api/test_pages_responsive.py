"""Every page on a facility manager's phone (390×844) and at the desk (1440×900), in Chinese and
in English, in real headless Chromium against the running service with a live alert (issue 19):

- no page is wider than the screen (the page never scrolls sideways; wide tables and charts
  scroll inside their own box);
- the navigation is the same on every page, each link on one line and big enough to tap
  (44 px high on the phone, WCAG 2.5.8's 24 px at the desk), and it always leads back to the
  dashboard;
- the page speaks the language chosen on any page (one choice, kept in localStorage);
- tapping an alert in the list brings its detail into view (on the phone as a full-screen panel
  with a way back to the list).

Screenshots of each page at both widths land in test-artifacts/.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import psycopg
import pytest

from api.tokens import create_token
from clausewatch.service import Service
from tests.api.test_dashboard_browser import SITE, VIOLATION, _publish, service
from tests.support import launch_chromium

pytestmark = [pytest.mark.integration, pytest.mark.browser]
__all__ = ["service"]  # the running service with the dashboard test's clause

VIEWPORTS = {"phone": (390, 844), "desk": (1440, 900)}
TAP_MIN = {"phone": 44, "desk": 24}
TODAY = dt.date.today()
PAGES = {
    "dashboard": "/",
    "energy": f"/energy?site={SITE}&since={TODAY.replace(day=1)}&until={TODAY}",
    "register": "/register",
    "statistics": f"/statistics?site={SITE}",
}
# What the shared navigation calls the dashboard, per language: the page is in that language.
HOME = {"zh": "告警", "en": "Alerts"}
# Text each page writes itself (headings, table heads), in each language: no page mixes them.
PROBES = {
    "dashboard": (".list h2", {"zh": "告警", "en": "Alerts"}),
    "energy": ("#carriers th", {"zh": "品种", "en": "carrier"}),
    "register": ("#results th", {"zh": "标准", "en": "Standard"}),
    "statistics": ("#site .attainment h3", {"zh": "目标与达标", "en": "Targets and attainment"}),
}
# The statistics page's attainment table: each figure of the plan against its target (issue 21).
ATTAINMENT = {"zh": ("标准达标率", "≥ 90.0%"), "en": ("compliance rate", "≥ 90.0%")}

MEASURE = """() => {
  const links = [...document.querySelectorAll("nav.site-nav a")];
  return {
    lang: document.documentElement.lang,
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    links: links.map((a) => {
      const box = a.getBoundingClientRect();
      const style = getComputedStyle(a);
      const lineHeight = parseFloat(style.lineHeight) || parseFloat(style.fontSize) * 1.5;
      const range = document.createRange();
      range.selectNodeContents(a);
      const lines = new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size;
      return { href: a.getAttribute("href"), text: a.textContent.trim(), height: box.height,
               width: box.width, visible: box.width > 0 && box.height > 0, lines, lineHeight };
    }),
  };
}"""


def _problems(name: str, where: str, lang: str, seen: dict[str, Any]) -> list[str]:
    found = []
    label = f"{name} at {where} in {lang}"
    if seen["scrollWidth"] > seen["innerWidth"]:
        found.append(f"{label}: {seen['scrollWidth']} px wide in {seen['innerWidth']} px")
    if not seen["lang"].startswith(lang):
        found.append(f"{label}: <html lang={seen['lang']!r}>")
    links = seen["links"]
    if not any(link["href"] == "/" and link["visible"] for link in links):
        found.append(f"{label}: no visible link back to the dashboard in nav.site-nav")
    for link in links:
        if link["lines"] > 1:
            found.append(f"{label}: nav link {link['text']!r} wraps over {link['lines']} lines")
        if link["height"] < TAP_MIN[where]:
            found.append(f"{label}: nav link {link['text']!r} is {link['height']:.0f} px high")
    if not any(link["text"] == HOME[lang] for link in links):
        found.append(f"{label}: nav does not say {HOME[lang]!r}: {[x['text'] for x in links]}")
    return found


def test_every_page_fits_the_phone_and_the_desk_in_both_languages(
    service: Service, mqtt_url: str, topic_prefix: str, artifacts_dir: Path
) -> None:
    from playwright.sync_api import expect

    with psycopg.connect(service.database_url) as conn:
        token, _ = create_token(conn, "admin", (), "responsive pages test")
    _publish(mqtt_url, topic_prefix, VIOLATION)

    problems: list[str] = []
    refused: list[str] = []
    with launch_chromium() as browser:
        for where, (width, height) in VIEWPORTS.items():
            for lang in ("zh", "en"):
                context = browser.new_context(viewport={"width": width, "height": height})
                context.add_init_script(
                    f"sessionStorage.setItem('clausewatch.token', {token!r});"
                    f"if (!localStorage.getItem('clausewatch.lang'))"
                    f" localStorage.setItem('clausewatch.lang', {lang!r});"
                )
                page = context.new_page()
                page.on(
                    "console",
                    lambda m: refused.append(m.text) if "Content Security" in m.text else None,
                )
                for name, path in PAGES.items():
                    page.goto(service.api_url + path)
                    if name == "dashboard":
                        expect(page.locator("li.alert").first).to_be_visible(timeout=20_000)
                    else:  # no stream: the page has drawn what it fetched
                        page.wait_for_load_state("networkidle")
                    page.screenshot(
                        path=str(artifacts_dir / f"page-{name}-{where}-{lang}.png"),
                        full_page=True,
                    )
                    problems += _problems(name, where, lang, page.evaluate(MEASURE))
                    selector, words = PROBES[name]
                    said = page.locator(selector).first.text_content(timeout=10_000)
                    if said != words[lang]:
                        problems.append(f"{name} in {lang}: {selector} says {said!r}")
                    if name == "statistics":
                        table = page.locator("#site .attainment table").text_content() or ""
                        for word in ATTAINMENT[lang]:
                            if word not in table:
                                problems.append(f"statistics in {lang}: no {word!r} in {table!r}")

                # A tap on an alert shows its detail where the eye is.
                page.goto(service.api_url + "/")
                page.locator("li.alert").first.click()
                heading = page.locator("#detail-title")
                expect(heading).not_to_have_text("")
                box = heading.bounding_box()
                assert box is not None
                if not (box["y"] >= 0 and box["y"] + box["height"] <= height):
                    problems.append(
                        f"detail at {where} in {lang}: its heading is at y={box['y']:.0f} px, "
                        f"outside the {height} px screen"
                    )
                panel = page.locator("#detail").bounding_box()
                assert panel is not None
                if where == "phone" and not (panel["y"] <= 0 and panel["height"] >= height):
                    # however long the list, the detail cannot end up below it
                    problems.append(
                        f"detail at {where} in {lang}: not a full-screen panel "
                        f"(top {panel['y']:.0f} px, {panel['height']:.0f} px high)"
                    )
                seen = page.evaluate(MEASURE)
                if seen["scrollWidth"] > seen["innerWidth"]:
                    problems.append(f"detail at {where} in {lang}: {seen['scrollWidth']} px wide")
                page.screenshot(path=str(artifacts_dir / f"page-detail-{where}-{lang}.png"))
                back = page.locator("#detail-back")
                if where == "phone" and not back.is_visible():
                    problems.append(f"detail at {where} in {lang}: no back control")
                elif where == "phone":  # the full-screen panel goes back to the list
                    back.click()
                    expect(page.locator("#detail")).to_be_hidden()
                    expect(page.locator("li.alert").first).to_be_in_viewport()
                # The language button of any page switches every page.
                other = "en" if lang == "zh" else "zh"
                page.goto(service.api_url + PAGES["statistics"])
                page.locator("#lang-toggle").click()
                expect(page.locator("html")).to_have_attribute(
                    "lang", "en" if other == "en" else "zh-CN"
                )
                selector, words = PROBES["statistics"]
                expect(page.locator(selector).first).to_have_text(words[other])
                page.goto(service.api_url + "/")
                expect(page.locator(".list h2")).to_have_text(PROBES["dashboard"][1][other])
                context.close()
        # Before sign-in: the token form fits the phone too.
        page = browser.new_page(viewport={"width": 390, "height": 844})
        page.goto(service.api_url + "/#token")  # the token form (people sign in at /login)
        expect(page.locator("#token-input")).to_be_visible()
        seen = page.evaluate(MEASURE)
        if seen["scrollWidth"] > seen["innerWidth"]:
            problems.append(f"sign-in at phone: {seen['scrollWidth']} px wide")
        page.screenshot(path=str(artifacts_dir / "page-sign-in-phone.png"))
        page.close()
    assert not problems, "\n".join(problems)
    assert not refused, refused


# Every control's top on every animation frame while it can be seen; `window.controlMoves` keeps
# those that moved after showing within the first screen, with each position they took.
RECORD_CONTROL_MOVES = """
window.controlMoves = {};
const firstTops = new Map();
const frame = () => {
  const controls = document.querySelectorAll("body button, body input, body select, body a[href]");
  controls.forEach((node) => {
    const box = node.getBoundingClientRect();
    if (box.height === 0 || !node.checkVisibility({ visibilityProperty: true })) return;
    const top = Math.round(box.top + window.scrollY);
    if (!firstTops.has(node)) firstTops.set(node, top);
    const first = firstTops.get(node);
    if (top !== first && first < window.innerHeight) {
      const label = node.id || node.name || node.textContent.trim();
      const name = `${node.tagName.toLowerCase()} ${label}`;
      window.controlMoves[name] = [...new Set([...(window.controlMoves[name] || [first]), top])];
    }
  });
  requestAnimationFrame(frame);
};
requestAnimationFrame(frame);
"""


def test_no_page_moves_its_controls_under_a_finger_while_it_loads(
    service: Service, artifacts_dir: Path
) -> None:
    """On a phone over a slow network (300 ms a request), what a page shows first stays where
    it is: the shared navigation and the page's language came after the first paint and moved
    every control of the first screen down by 114-135 px (a tap meant for the site field lands
    on the navigation). Controls further down may move as the charts and tables above them
    arrive."""
    with psycopg.connect(service.database_url) as conn:
        token, _ = create_token(conn, "admin", (), "moves test")
    pages = {**PAGES, "sites": "/sites", "users": "/users", "check-in sheet": "/checkin/sheet"}
    del pages["dashboard"]  # tests/api/test_alert_desk_browser.py: its own late parts
    moved: dict[str, Any] = {}
    width, height = VIEWPORTS["phone"]
    with launch_chromium() as browser:
        for signed_in in (True, False):
            context = browser.new_context(viewport={"width": width, "height": height})
            if signed_in:
                context.add_init_script(f"sessionStorage.setItem('clausewatch.token', {token!r});")
            context.add_init_script(RECORD_CONTROL_MOVES)
            page = context.new_page()
            cdp = context.new_cdp_session(page)
            cdp.send("Network.enable")
            cdp.send(
                "Network.emulateNetworkConditions",
                {
                    "offline": False,
                    "latency": 300,
                    "downloadThroughput": -1,
                    "uploadThroughput": -1,
                },
            )
            for name, path in pages.items() if signed_in else {"sign-in": "/login"}.items():
                page.goto(service.api_url + path)
                page.wait_for_load_state("networkidle")
                moves = page.evaluate("window.controlMoves")
                if moves:
                    moved[name] = moves
                    page.screenshot(path=str(artifacts_dir / f"moves-{name}.png"))
            context.close()
    assert not moved, moved
