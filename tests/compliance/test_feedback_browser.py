"""信息反馈 in headless Chromium (issue 21): an occupant's phone (390×844) opens a space's
feedback form, in Chinese and in English, without an account or a cookie, chooses what is wrong,
writes a line, attaches a photo and sends it; a facility manager then accepts and resolves it
on the statistics page's triage panel. Screenshots land in the artifacts folder."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Any

import psycopg
import pytest

from compliance.feedback import PHOTO_MAX_BYTES
from tests.compliance.conftest import PUBLIC_SITE
from tests.compliance.test_feedback import png
from tests.support import launch_chromium, skip_without_chromium

pytestmark = [pytest.mark.integration, pytest.mark.browser]
PHONE = {"width": 390, "height": 844}
# The page's width and its smallest tap target (radio choices, the text field, the buttons).
LAYOUT = """() => ({
    width: document.documentElement.scrollWidth,
    smallest: Math.min(...[...document.querySelectorAll('label.choice, textarea, button')]
        .map((e) => e.getBoundingClientRect().height)),
})"""


@pytest.mark.parametrize(
    ("lang", "choice", "send", "thanks"),
    [("zh", "太热", "提交", "已收到"), ("en", "Too hot", "Send", "Received, thank you")],
)
def test_an_occupant_reports_from_the_phone(
    live_api: str,
    conn: psycopg.Connection[Any],
    artifacts_dir: Path,
    tmp_path: Path,
    lang: str,
    choice: str,
    send: str,
    thanks: str,
) -> None:
    skip_without_chromium()
    from playwright.sync_api import expect

    photo = tmp_path / "room.png"
    photo.write_bytes(png())
    with launch_chromium() as browser:
        context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
        page = context.new_page()
        page.goto(f"{live_api}/public/{PUBLIC_SITE}/feedback?space=office-1&lang={lang}")
        expect(page.locator("label.choice")).to_have_count(3)  # too cold, too hot, other
        layout = page.evaluate(LAYOUT)
        assert layout["width"] <= PHONE["width"] and layout["smallest"] >= 44, layout
        page.screenshot(path=str(artifacts_dir / f"feedback-form-{lang}.png"), full_page=True)
        page.get_by_text(choice, exact=True).click()
        page.fill("textarea[name=text]", "空调太冷" if lang == "zh" else "The air is stuffy")
        page.set_input_files("input[name=photo]", str(photo))
        page.get_by_role("button", name=send).click()
        expect(page.locator(".done")).to_contain_text(thanks)
        page.screenshot(path=str(artifacts_dir / f"feedback-sent-{lang}.png"), full_page=True)
        assert context.cookies() == []  # nothing was set
        # Back to the form: the other language is one tap away.
        page.locator("a[href*='space=office-1']").last.click()
        expect(page.locator("label.choice")).to_have_count(3)
        page.locator("a.lang").click()
        expect(page.locator("html")).to_have_attribute("lang", "en" if lang == "zh" else "zh-CN")
    rows = conn.execute(
        "SELECT i.category, i.lang, p.content_type FROM feedback_items i"
        " JOIN feedback_photos p ON p.item_id = i.id"
    ).fetchall()
    assert rows == [("too_hot", lang, "image/png")]


def noisy_png(side: int) -> bytes:
    """A PNG of random pixels: it does not compress, so its size is about 3 × side² bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + os.urandom(side * 3) for _ in range(side))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows, 1))
        + chunk(b"IEND", b"")
    )


def test_a_photo_over_the_limit_is_shrunk_on_the_phone_before_it_is_sent(
    live_api: str, conn: psycopg.Connection[Any]
) -> None:
    skip_without_chromium()
    from playwright.sync_api import expect

    big = noisy_png(1400)
    assert len(big) > PHOTO_MAX_BYTES
    with launch_chromium() as browser:
        page = browser.new_page(viewport=PHONE)
        page.goto(f"{live_api}/public/{PUBLIC_SITE}/feedback?space=office-1")
        page.get_by_text("其他问题", exact=True).click()
        page.set_input_files(
            "input[name=photo]", {"name": "big.png", "mimeType": "image/png", "buffer": big}
        )
        expect(page.locator("#photo-note")).to_have_text("照片较大，已自动压缩。")
        page.get_by_role("button", name="提交").click()
        expect(page.locator(".done")).to_be_visible()
    row = conn.execute("SELECT content_type, size FROM feedback_photos").fetchone()
    assert row is not None and row[0] == "image/jpeg" and row[1] <= PHOTO_MAX_BYTES, row


def test_a_facility_manager_triages_on_the_statistics_page(
    live_api: str, admin_token: str, conn: psycopg.Connection[Any], artifacts_dir: Path
) -> None:
    skip_without_chromium()
    from playwright.sync_api import expect

    with launch_chromium() as browser:
        phone = browser.new_page(viewport=PHONE)
        phone.goto(f"{live_api}/public/{PUBLIC_SITE}/feedback?space=office-2")
        phone.get_by_text("太冷", exact=True).click()
        phone.fill("textarea[name=text]", "二号办公室空调太冷")
        phone.set_input_files(
            "input[name=photo]", {"name": "a.png", "mimeType": "image/png", "buffer": png()}
        )
        phone.get_by_role("button", name="提交").click()
        expect(phone.locator(".done")).to_be_visible()

        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{live_api}/statistics?site={PUBLIC_SITE}#token={admin_token}")
        panel = page.locator("#feedback")
        row = panel.locator("tr[data-item]")
        expect(row).to_have_count(1)
        expect(row).to_contain_text("二号办公室空调太冷")
        expect(row).to_contain_text("待分拣")
        expect(page.locator("#site .tiles")).to_contain_text("信息反馈")
        row.get_by_role("button", name="照片").click()
        expect(row.locator("img.feedback-photo")).to_be_visible()
        row.locator("input[name=note]").fill("已派维修 张工")
        row.locator("button[data-state=triaged]").click()
        expect(page.locator("#status")).to_have_text("已记录")
        expect(row).to_contain_text("已受理")
        page.screenshot(path=str(artifacts_dir / "feedback-triage.png"), full_page=True)
        row.locator("input[name=note]").fill("温度已调至 26℃")
        row.locator("button[data-state=resolved]").click()
        expect(page.locator("#status")).to_have_text("已记录")
        expect(row).to_have_count(0)
        expect(panel).to_contain_text("无。")
    steps = conn.execute("SELECT state, note, actor FROM feedback_steps ORDER BY at").fetchall()
    assert [(s, n) for s, n, _ in steps] == [
        ("triaged", "已派维修 张工"),
        ("resolved", "温度已调至 26℃"),
    ]
    assert all(actor.startswith("token:") for _, _, actor in steps)
