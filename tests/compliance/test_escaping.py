"""Text that people and clause files put into clausewatch comes out of the HTML pages as text,
never as markup: a party's name, a site's and a space's name, a clause's standard, number and
title, an alert's close cause and corrective action, the actor of an alert step, an evaluation's
findings and its improvement action and owner each carry a `<script>` and an attribute breaker
(`"><img onerror>`), and the quarterly report and the public page (the one facing the internet)
are rendered through the code that serves them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from alerts import lifecycle
from api.app import create_app
from api.auth import Principal
from api.tokens import create_token
from rules.clause import ClauseFile
from rules.site import SiteModel
from store.batches import EventRow, write_events
from store.migrate import migrate
from store.pool import connect
from store.registry import sync_clauses, sync_site
from tests.compliance.conftest import SYNCED_AT, TEST_CLAUSE, add_alert, add_interval, auth
from tests.support import throwaway_database

pytestmark = pytest.mark.integration
SITE = "xss-site"
SCRIPT = "<script>alert(1)</script>"
BREAKER = "\"'><img src=x onerror=alert(1)>"


def hostile(field: str) -> str:
    """A value that is markup unless escaped, tagged `[field]` so a failure names the field."""
    return f"[{field}]{SCRIPT}{BREAKER}"


def tag(value: str) -> str:
    return value.removesuffix(SCRIPT + BREAKER)


SITE_NAME, SPACE_NAME, PARTY_NAME = hostile("site"), hostile("space"), hostile("party")
STANDARD, NUMBER, TITLE = hostile("standard"), hostile("number"), hostile("title")
CAUSE, ACTION, EVENT_ACTOR = hostile("cause"), hostile("action"), hostile("event-actor")
# An implementation evaluation's findings, and its improvement action and owner (issue 21).
FINDINGS, IMPROVEMENT, OWNER = hostile("findings"), hostile("improvement"), hostile("owner")
Q3 = dt.datetime(2026, 7, 6, 1, 0, tzinfo=dt.UTC)  # a day inside 2026Q3 in Asia/Shanghai
H = dt.timedelta(hours=1)


def _site() -> SiteModel:
    return SiteModel.model_validate(
        {
            "site": {"id": SITE, "name": SITE_NAME, "timezone": "Asia/Shanghai", "public": True},
            "spaces": [
                {"id": "b1", "type": "building"},
                {"id": "office-1", "type": "office", "parent": "b1", "name": SPACE_NAME},
                {"id": "wc-1", "type": "toilet", "parent": "b1"},
            ],
            "devices": [
                {
                    "id": "th-1",
                    "space": "office-1",
                    "metrics": {"temperature": {"unit": "°C", "range": [-20, 60]}},
                },
                {"id": "reader-1", "space": "wc-1", "metrics": {}},
            ],
            # add_alert names the responsible party "wang"
            "parties": [{"id": "wang", "name": PARTY_NAME, "contacts": {"phone": "13912345678"}}],
            "assignments": [
                {"party": "wang", "space": "b1", "valid_from": "2026-01-01T00:00:00+08:00"}
            ],
        }
    )


def _clauses() -> ClauseFile:
    cleaning = {
        **TEST_CLAUSE,
        "id": "xss.cleaning",
        "title": TITLE,
        "applies_to": {"space_types": ["toilet"]},
        "params": {},
        "check": {"kind": "obligation", "event": "cleaning.completed", "every": "2h"},
    }
    return ClauseFile.model_validate(
        {
            "standard": {"code": STANDARD, "title": hostile("standard-title"), "edition": "2020"},
            "clauses": [
                {**TEST_CLAUSE, "id": "xss.temp", "number": NUMBER, "title": TITLE},
                cleaning,
            ],
        }
    )


@pytest.fixture(scope="module")
def hostile_db(pg_server_url: str) -> Iterator[str]:
    """A database of its own (the other compliance tests count every site in theirs) holding a
    public site and a clause file full of markup, a quarter of history and a closed alert."""
    with throwaway_database(pg_server_url, "cw_escaping") as url:
        migrate(url)
        with connect(url) as conn:
            sync_site(conn, _site(), "test", now=SYNCED_AT)
            sync_clauses(conn, [_clauses()], "test", now=SYNCED_AT)
            _history(conn)
            conn.commit()
        yield url


def _history(conn: psycopg.Connection[Any]) -> None:
    recent = dt.datetime.now(dt.UTC).replace(microsecond=0) - 48 * H  # for the public page
    for start in (Q3, recent):
        add_interval(conn, SITE, "xss.temp", "office-1", start, 30, "compliant", "th-1")
        add_interval(conn, SITE, "xss.temp", "office-1", start + 30 * H, 10, "violating", "th-1")
    alert = add_alert(
        conn,
        SITE,
        "xss.temp",
        started_at=Q3 + 30 * H,
        state="resolved",
        ended_after=10 * H,
        responsible_name=PARTY_NAME,
    )
    # The facility manager's token is named after the person: its actor is what the report shows.
    _, token = create_token(conn, "facility_manager", (SITE,), PARTY_NAME)
    actor = Principal(token.id, token.role, frozenset(token.sites), token.label).actor
    lifecycle.close(conn, alert, actor, CAUSE, ACTION, now=Q3 + 41 * H)
    add_alert(  # an overdue cleaning: the report lists it with the clause title
        conn,
        SITE,
        "xss.cleaning",
        space="wc-1",
        severity="warning",
        started_at=Q3 + 50 * H,
        responsible_name=PARTY_NAME,
    )
    write_events(
        conn,
        [
            EventRow(
                SITE,
                "reader-1",
                (Q3 + 52 * H).timestamp(),
                "cleaning.completed",
                "wc-1",
                EVENT_ACTOR,
                1,
                {},
                (Q3 + 52 * H).timestamp(),
            )
        ],
    )


@pytest.fixture(scope="module")
def hostile_client(hostile_db: str) -> Iterator[TestClient]:
    with TestClient(create_app(hostile_db)) as client:
        yield client


class _Document(HTMLParser):
    """The elements and the text of a page, as a browser's tokenizer sees them."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attributes: list[str] = []
        self.text: list[str] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes += [name for name, _ in attrs]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def assert_inert(page: str, shown: list[str], hidden: list[str]) -> None:
    """No injected element or attribute; each of `shown` is on the page as text, escaped in
    the source; none of `hidden` is on the page in any form."""
    assert SCRIPT not in page and "<img" not in page
    document = _Document(page)
    assert not {"script", "img"} & document.tags, document.tags
    assert "onerror" not in document.attributes
    text = "".join(document.text)
    for value in shown:
        assert value in text, f"{tag(value)} is not shown as text"
        assert tag(value) + "&lt;script&gt;alert(1)&lt;/script&gt;" in page, tag(value)
    for value in hidden:
        assert tag(value) not in page


def test_quarterly_report_escapes_what_people_and_clause_files_wrote(
    hostile_db: str, hostile_client: TestClient
) -> None:
    with connect(hostile_db) as conn:
        token, _ = create_token(conn, "admin", (), "escaping test")
        conn.commit()
    evaluation = {
        "site": SITE,
        "clause_id": "xss.temp",
        "period": "2026Q3",
        "method": "inspection",
        "findings": FINDINGS,
        "satisfaction": 2,
        "actions": [
            {"action": IMPROVEMENT, "owner": OWNER, "deadline": "2026-10-31T18:00:00+08:00"}
        ],
    }
    evaluated = hostile_client.post("/api/v1/evaluations", json=evaluation, headers=auth(token))
    assert evaluated.status_code == 201, evaluated.text
    made = hostile_client.post(
        "/api/v1/reports", json={"site": SITE, "period": "2026Q3"}, headers=auth(token)
    )
    assert made.status_code == 201, made.text
    page = hostile_client.get(f"/api/v1/reports/{made.json()['id']}/html", headers=auth(token))
    assert page.status_code == 200
    assert_inert(
        page.text,
        # the party's name as part of the actor that closed the alert
        shown=[
            *(SITE_NAME, SPACE_NAME, PARTY_NAME, STANDARD, NUMBER, TITLE, CAUSE, ACTION),
            *(FINDINGS, IMPROVEMENT, OWNER),
        ],
        hidden=[EVENT_ACTOR],
    )


def test_annual_report_escapes_what_people_and_clause_files_wrote(
    hostile_db: str, hostile_client: TestClient
) -> None:
    with connect(hostile_db) as conn:
        token, _ = create_token(conn, "admin", (), "annual escaping test")
        conn.commit()
    evaluation = {
        "site": SITE,
        "clause_id": "xss.temp",
        "period": "2026Q2",
        "method": "inspection",
        "findings": FINDINGS,
        "satisfaction": 3,
        "actions": [
            {"action": IMPROVEMENT, "owner": OWNER, "deadline": "2026-07-31T18:00:00+08:00"}
        ],
    }
    evaluated = hostile_client.post("/api/v1/evaluations", json=evaluation, headers=auth(token))
    assert evaluated.status_code == 201, evaluated.text
    made = hostile_client.post(
        "/api/v1/reports", json={"site": SITE, "period": "2026"}, headers=auth(token)
    )
    assert made.status_code == 201, made.text
    page = hostile_client.get(f"/api/v1/reports/{made.json()['id']}/html", headers=auth(token))
    assert page.status_code == 200 and "年度自评价报告" in page.text
    assert_inert(
        page.text,
        shown=[
            *(SITE_NAME, SPACE_NAME, PARTY_NAME, STANDARD, NUMBER, TITLE, CAUSE, ACTION),
            *(FINDINGS, IMPROVEMENT, OWNER),
        ],
        hidden=[EVENT_ACTOR],
    )
    table = hostile_client.get(f"/api/v1/reports/{made.json()['id']}/csv", headers=auth(token))
    assert "\n=" not in table.text and ",=" not in table.text  # no cell read as a formula


def test_public_page_escapes_what_it_shows_and_shows_nothing_personal(
    hostile_client: TestClient,
) -> None:
    page = hostile_client.get(f"/public/{SITE}")
    assert page.status_code == 200
    assert_inert(
        page.text,
        shown=[SITE_NAME, STANDARD, NUMBER, TITLE],
        hidden=[SPACE_NAME, PARTY_NAME, CAUSE, ACTION, EVENT_ACTOR],
    )
