"""Field check-ins end to end (issue 19), in real headless Chromium against the running service
(wall clock, real pipeline, PostgreSQL and broker):

- the printable sheet has one QR code per space whose obligations take a check-in (the toilet
  and the lift; not the office), each labelled in Chinese with the space and its task, and each
  code, decoded from the pixels the browser drew (zxing-cpp), is the URL of that space's page;
  printed, it is A4 with the navigation left out;
- a cleaner opens the decoded URL on a phone (390×844, Chinese), signs in as herself (a named
  user), ticks 已清洁, adds a note and a photo and taps submit twice: one check-in, one event,
  through the pipeline, recorded under her name; the toilet's overdue cleaning alert resolves,
  and its detail shows the check-in with who did it and the photo, which the manager, signed in
  on her phone, opens in place.
Screenshots land in test-artifacts/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import zxingcpp

from api.tokens import create_token
from api.users import create_user
from clausewatch.service import Service
from tests.api.test_checkin_photos import png
from tests.api.test_checkins import SITE, started
from tests.support import auth, launch_chromium, rows, skip_without_chromium, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.browser]
PASSWORD = "correct horse battery"

# The pixels of the QR code <img> of a sheet card as the browser drew it, in grey levels.
PIXELS = """(img) => {
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const g = canvas.getContext("2d");
  g.fillStyle = "#fff"; g.fillRect(0, 0, canvas.width, canvas.height);
  g.drawImage(img, 0, 0);
  const rgba = g.getImageData(0, 0, canvas.width, canvas.height).data;
  const grey = [];
  for (let i = 0; i < rgba.length; i += 4) grey.push(rgba[i]);
  return { width: canvas.width, height: canvas.height, grey };
}"""


def decode_qr(drawn: dict[str, Any]) -> str:
    """The text of the one QR code in the drawn pixels (zxing-cpp)."""
    pixels = memoryview(bytes(drawn["grey"])).cast("B", (drawn["height"], drawn["width"]))
    found = zxingcpp.read_barcodes(pixels, formats=zxingcpp.BarcodeFormat.QRCode)
    assert len(found) == 1, f"{len(found)} QR codes decoded"
    text: str = found[0].text
    return text


def sign_in(page: Any, name: str) -> None:
    """On /login, where a page sends a person who is not signed in."""
    page.wait_for_url("**/login?next=*")
    page.fill("#login-name", name)
    page.fill("#login-password", PASSWORD)
    page.click("#login-submit")


def alert_state(url: str) -> tuple[int, str] | None:
    found = rows(url, "SELECT id, state FROM alerts WHERE clause_id = 'toilet.cleaning'")
    return (int(found[0][0]), str(found[0][1])) if found else None


@pytest.fixture
def service(fresh_database_url: str, mqtt_url: str, topic_prefix: str) -> Iterator[Service]:
    skip_without_chromium()
    with started(fresh_database_url, mqtt_url, topic_prefix, "wall") as running:
        yield running


def test_a_cleaners_check_in_from_the_qr_sheet_clears_the_overdue_toilet(
    service: Service, artifacts_dir: Path
) -> None:
    from playwright.sync_api import expect

    base = service.api_url
    url = service.database_url
    with psycopg.connect(url) as conn:
        manager, _ = create_token(conn, "facility_manager", (SITE,), "王丽")
        cleaner, _ = create_token(conn, "facility_manager", (SITE,), "保洁班组")
        # The cleaner and the manager are named users, who sign in on their phones.
        for name, display in (("liufang", "刘芳"), ("wangli", "王丽")):
            create_user(
                conn, name, "facility_manager", PASSWORD, display_name=display, sites=(SITE,)
            )
        viewer, _ = create_token(conn, "viewer", (SITE,), "viewer")

    # The toilet is overdue from the start: the engine raises the alert by the passage of time.
    alert = wait_for(lambda: alert_state(url), 30, "the overdue cleaning alert")
    alert_id, state = alert
    assert state == "firing"

    with launch_chromium() as browser:
        # 1. The printable sheet of the site, at the desk.
        desk = browser.new_page(viewport={"width": 1440, "height": 900}, locale="zh-CN")
        refused: list[str] = []
        desk.on(
            "console",
            lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
        )
        desk.goto(f"{base}/checkin/sheet?site={SITE}#token={manager}")
        cards = desk.locator("article.qr-card")
        expect(cards).to_have_count(2)
        assert sorted(cards.evaluate_all("(cs) => cs.map((c) => c.dataset.space)")) == [
            "b1-2f-wc-east",
            "b1-lift-1",
        ]
        toilet_card = desk.locator("article.qr-card[data-space=b1-2f-wc-east]")
        expect(toilet_card.locator("h2")).to_have_text("二层东卫生间")
        expect(toilet_card.locator(".tasks")).to_have_text("已清洁")
        expect(toilet_card.locator(".path")).to_have_text("主楼 › 二层")
        expect(desk.locator("article.qr-card[data-space=b1-lift-1] .tasks")).to_have_text("已维保")
        decoded = {}
        for space in ("b1-2f-wc-east", "b1-lift-1"):
            img = desk.locator(f"article.qr-card[data-space={space}] img")
            expect(img).to_have_js_property("complete", True)
            decoded[space] = decode_qr(img.evaluate(PIXELS))
            assert decoded[space] == f"{base}/checkin/{SITE}/{space}"
        # Printed: A4, the navigation and the form left out, three codes a row.
        desk.emulate_media(media="print")
        expect(desk.locator(".site-header")).to_be_hidden()
        expect(desk.locator(".controls-bar")).to_be_hidden()
        columns = desk.locator("#sheet").evaluate(
            "(g) => getComputedStyle(g).gridTemplateColumns.split(' ').length"
        )
        assert columns == 3
        pdf = desk.pdf(prefer_css_page_size=True, print_background=True)
        assert pdf.startswith(b"%PDF")
        (artifacts_dir / "checkin-sheet.pdf").write_bytes(pdf)
        boxes = re.findall(rb"/MediaBox \[0 0 ([\d.]+) ([\d.]+)\]", pdf)
        # Every page is A4 (210 × 297 mm: 595 × 842 points); both codes fit on one page.
        assert [(round(float(w)), round(float(h))) for w, h in boxes] == [(595, 842)]
        desk.screenshot(path=str(artifacts_dir / "checkin-sheet-print.png"), full_page=True)
        desk.emulate_media(media="screen")
        desk.screenshot(path=str(artifacts_dir / "checkin-sheet-1440.png"), full_page=True)
        desk.set_viewport_size({"width": 390, "height": 844})  # the sheet on a phone
        expect(cards).to_have_count(2)
        assert desk.evaluate("document.documentElement.scrollWidth") <= 390
        desk.screenshot(path=str(artifacts_dir / "checkin-sheet-390.png"), full_page=True)
        assert refused == []

        # 2. The cleaner scans the toilet's code on a phone: the decoded URL opens the page.
        phone = browser.new_context(
            viewport={"width": 390, "height": 844}, locale="zh-CN", has_touch=True
        ).new_page()
        phone.on(
            "console",
            lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
        )
        phone.goto(decoded["b1-2f-wc-east"])
        sign_in(phone, "liufang")  # not signed in yet: to /login, then back to the space
        phone.wait_for_url(decoded["b1-2f-wc-east"])
        expect(phone.locator("#space-name")).to_have_text("二层东卫生间")
        expect(phone.locator("#tasks label.task")).to_have_count(1)
        expect(phone.locator("#tasks label.task")).to_have_text("已清洁")
        expect(phone.locator("#tasks input[value='cleaning.completed']")).to_be_checked()
        expect(phone.locator("#submit")).to_have_text("提交签到")
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width} px wide"
        phone.click("#lang-toggle")  # English, and back: the product's one language choice
        expect(phone.locator("#tasks label.task")).to_have_text("cleaned")
        expect(phone.locator("#submit")).to_have_text("Check in")
        phone.click("#lang-toggle")
        expect(phone.locator("#submit")).to_have_text("提交签到")
        phone.fill("#note", "已补充洗手液")
        phone.set_input_files(
            "#photo", files=[{"name": "现场.jpg.png", "mimeType": "image/png", "buffer": png(8, 8)}]
        )
        phone.screenshot(path=str(artifacts_dir / "checkin-phone-390.png"), full_page=True)
        # A double tap: one check-in.
        phone.locator("#submit").dblclick()
        expect(phone.locator("#result")).to_have_attribute("data-state", "done", timeout=20_000)
        expect(phone.locator("#result")).to_contain_text("已签到")
        expect(phone.locator("#recent li")).to_have_count(1)
        expect(phone.locator("#recent li")).to_contain_text("刘芳")
        phone.screenshot(path=str(artifacts_dir / "checkin-phone-done-390.png"), full_page=True)
        assert refused == []

        assert rows(url, "SELECT count(*) FROM checkins")[0][0] == 1
        events = rows(
            url,
            "SELECT device, space, actor, attrs->>'note' FROM events"
            " WHERE type = 'cleaning.completed'",
        )
        assert len(events) == 1
        device, space, actor, note = events[0]
        assert (device, space, note) == ("checkin", "b1-2f-wc-east", "已补充洗手液")
        assert actor == "user:liufang (刘芳)"

        # 3. The overdue alert resolves, and its evidence is the check-in.
        wait_for(lambda: alert_state(url) == (alert_id, "resolved"), 30, "the alert resolving")
        detail = httpx.get(f"{base}/api/v1/alerts/{alert_id}", headers=auth(manager)).json()
        assert [c["task"] for c in detail["checkins"]] == ["cleaning.completed"]
        checkin = detail["checkins"][0]
        assert (checkin["actor"], checkin["note"]) == ("user:liufang (刘芳)", "已补充洗手液")
        photo = httpx.get(base + checkin["photo_url"], headers=auth(viewer))
        assert photo.status_code == 200 and photo.headers["content-type"] == "image/png"

        # The manager sees it on the phone, in the alert's own page, and opens the photo.
        phone = browser.new_context(
            viewport={"width": 390, "height": 844}, locale="zh-CN", has_touch=True
        ).new_page()
        phone.goto(f"{base}/alerts/{alert_id}")
        sign_in(phone, "wangli")
        phone.wait_for_url(f"{base}/alerts/{alert_id}")
        expect(phone.locator("#detail-state")).to_have_attribute("data-state", "resolved")
        item = phone.locator("#checkins li")
        expect(item).to_have_count(1)
        expect(item).to_contain_text("已清洁")
        expect(item).to_contain_text("已补充洗手液")
        item.locator("button").click()
        expect(item.locator("img.checkin-photo")).to_have_count(1)
        phone.screenshot(path=str(artifacts_dir / "checkin-alert-390.png"), full_page=True)
        assert refused == []

    # The same event id again (a retry after a lost answer) is the same check-in, one event.
    event_id = rows(url, "SELECT event_id FROM checkins")[0][0]
    again = httpx.post(
        f"{base}/api/v1/checkins/{SITE}/b1-2f-wc-east",
        json={"event_id": str(event_id), "task": "cleaning.completed"},
        headers=auth(cleaner),
        timeout=30,
    )
    assert again.status_code == 200, again.text
    assert rows(url, "SELECT count(*) FROM events WHERE type = 'cleaning.completed'")[0][0] == 1
