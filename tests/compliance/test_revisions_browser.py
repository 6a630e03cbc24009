"""The register page with a revision awaiting approval (issue 21), in headless Chromium against
the running API, on a phone (390×844) and at the desk (1440×900), in Chinese and in English:
the revision is listed with what it changes, who proposed it and its backtest; the clause's
row flags its review (复审) as due and its pending revision; the page never scrolls sideways.
Screenshots land in the artifacts folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from api.app import create_app
from tests.compliance.test_revisions import api_client, db, propose, token
from tests.support import launch_chromium, serve_app, skip_without_chromium

pytestmark = [pytest.mark.integration, pytest.mark.browser]
__all__ = ["api_client", "db"]

VIEWPORTS = {"phone": (390, 844), "desk": (1440, 900)}
TEXT = {
    "zh": ("待审批与待发布的修订", "待审批", "提议人", "待复审", "待审批修订 1 项", "回测"),
    "en": (
        "Revisions awaiting approval or publication",
        "awaiting approval",
        "Proposed by",
        "due",
        "1 pending revision",
        "Backtest",
    ),
}


@pytest.fixture
def live(db: str) -> Iterator[str]:
    with serve_app(create_app(db), "revisions-api") as url:
        yield url


@pytest.mark.parametrize("viewport", sorted(VIEWPORTS))
def test_the_register_shows_a_pending_revision(
    api_client: object, db: str, live: str, viewport: str, artifacts_dir: Path
) -> None:
    skip_without_chromium()
    from playwright.sync_api import expect

    proposer = token(db, "张工")
    made = propose(api_client, proposer)  # type: ignore[arg-type]
    assert made.status_code == 201, made.text
    width, height = VIEWPORTS[viewport]
    with launch_chromium() as browser:
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(f"{live}/register#token={proposer}")
        for lang in ("zh", "en"):
            heading, state, proposed, due, pending, backtest = TEXT[lang]
            if lang == "en":
                page.locator("#lang-toggle").click()
            box = page.locator("#revisions")
            expect(box).to_be_visible()
            expect(box.locator("h2")).to_have_text(heading)
            row = box.locator("tbody tr")
            expect(row).to_have_count(1)
            expect(row).to_contain_text("test.temp.max")
            expect(row).to_contain_text("params.limit.default: 28 → 28.5")
            expect(row).to_contain_text(state)
            expect(row).to_contain_text(f"{proposed}: token:")
            expect(row).to_contain_text(backtest)
            clause = page.locator("#results tbody tr").filter(has_text="test.temp.max")
            expect(clause).to_contain_text(due)
            expect(clause).to_contain_text(pending)
            expect(clause).to_contain_text("2025-01-01")
            wide = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
            assert wide <= 0, f"the page scrolls sideways by {wide} px on the {viewport}"
            page.screenshot(
                path=str(artifacts_dir / f"register-revision-{viewport}-{lang}.png"),
                full_page=True,
            )
