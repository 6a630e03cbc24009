"""The register page with a revision awaiting approval (issue 21), in headless Chromium against
the running API, on a phone (390×844) and at the desk (1440×900), in Chinese and in English:
the revision is listed with what it changes, who proposed it and its backtest; the clause's
row flags its review (复审) as due and its pending revision; the page never scrolls sideways.
Screenshots land in the artifacts folder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from compliance import site_revisions
from config.sitebook import site_diff
from config.sitefiles import ImportPlan
from store.pool import connect
from store.registry import site_model
from store.times import wall_now
from tests.compliance.conftest import PRIVATE_SITE
from tests.compliance.test_revisions import PASSWORD, api_client, db, propose, signed_in, token
from tests.support import launch_chromium, serve_app, skip_without_chromium

pytestmark = [pytest.mark.integration, pytest.mark.browser]
__all__ = ["api_client", "db", "signed_in"]

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


# The button, the state after approval, and what the status line says.
APPROVE = {
    "zh": ("批准", "已批准，待发布", "已批准"),
    "en": ("Approve", "approved, to publish", "approved"),
}


def _site_revision(db: str, proposer: str) -> int:
    """A pending revision of the site's model (its own model proposed as a new file's), as
    the proposer."""
    with connect(db) as conn:
        model = site_model(conn, PRIVATE_SITE)
        assert model is not None
        plan = ImportPlan(model, None, site_diff(None, model), Path(f"{PRIVATE_SITE}.yaml"), "")
        made = site_revisions.propose(
            conn, plan, f"{PRIVATE_SITE}.xlsx", "新增房间", proposer, wall_now()
        )
        conn.commit()
    return made.id


@pytest.mark.parametrize("viewport", sorted(VIEWPORTS))
def test_a_signed_in_admin_approves_from_the_register_page(
    db: str,
    live: str,
    signed_in: Callable[[str, str], TestClient],
    viewport: str,
    artifacts_dir: Path,
) -> None:
    """The proposer sees no approve button; another admin signed in sees one on each pending
    revision, a clause's and a site's, in Chinese and in English, and approving one records
    them as its approver."""
    skip_without_chromium()
    from playwright.sync_api import expect

    zhang = signed_in("zhang", "张工")
    made = zhang.post(
        "/api/v1/clause-revisions",
        json={
            "clause_id": "test.temp.max",
            "changes": {"params.limit.default": 28.5},
            "reason": "放宽",
            "backtest_days": 1,
        },
    )
    assert made.status_code == 201, made.text
    site_revision = _site_revision(db, "user:zhang (张工)")
    signed_in("li", "李处长")  # the second admin exists
    width, height = VIEWPORTS[viewport]
    with launch_chromium() as browser:
        for name, offered in (("zhang", 0), ("li", 2)):
            context = browser.new_context(viewport={"width": width, "height": height})
            page = context.new_page()
            page.goto(f"{live}/register")
            page.wait_for_url("**/login?next=*")
            page.fill("#login-name", name)
            page.fill("#login-password", PASSWORD)
            page.click("#login-submit")
            page.wait_for_url("**/register")
            rows = page.locator("#revision-list tbody tr")
            expect(rows).to_have_count(2)
            site_row = page.locator("#revision-list tr.site-revision")
            clause_row = page.locator("#revision-list tr.revision:not(.site-revision)")
            expect(site_row).to_contain_text(PRIVATE_SITE)
            expect(site_row).to_contain_text("新增房间")
            expect(clause_row).to_contain_text("test.temp.max")
            expect(page.locator("#revision-list button.approve")).to_have_count(offered)
            if name == "zhang":
                context.close()
                continue
            # Chinese on the phone's first look, English after the toggle; approve in the
            # language the viewport's turn gives (zh on the phone, en at the desk).
            lang = "zh" if viewport == "phone" else "en"
            if lang == "en":
                page.locator("#lang-toggle").click()
            label, state, said = APPROVE[lang]
            expect(clause_row.locator("button.approve")).to_have_text(label)
            expect(site_row.locator("button.approve")).to_have_text(label)
            wide = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
            assert wide <= 0, f"the page scrolls sideways by {wide} px on the {viewport}"
            page.screenshot(
                path=str(artifacts_dir / f"register-approve-{viewport}-{lang}.png"), full_page=True
            )
            clause_row.locator("button.approve").click()
            expect(clause_row).to_contain_text(state)
            expect(clause_row.locator("button.approve")).to_have_count(0)
            expect(page.locator("#status")).to_contain_text(said)
            if lang == "zh":  # then the other language shows the site's button in it
                page.locator("#lang-toggle").click()
                expect(site_row.locator("button.approve")).to_have_text(APPROVE["en"][0])
            context.close()
    with connect(db) as conn:
        approved = conn.execute(
            "SELECT state, approved_by FROM clause_revisions WHERE id = %s", (made.json()["id"],)
        ).fetchone()
        pending = conn.execute(
            "SELECT state FROM site_revisions WHERE id = %s", (site_revision,)
        ).fetchone()
    assert approved == ("approved", "user:li (李处长)")
    assert pending == ("pending",)
