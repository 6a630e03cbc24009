"""The public page: opt-in, no token needed, figures per clause, and no personal data — no
party names, contacts, actors or raw readings, asserted on the HTML and the JSON."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from store.batches import ReadingRow, write_readings
from tests.compliance.conftest import (
    PARTY_EMAIL,
    PARTY_NAME,
    PARTY_PHONE,
    PRIVATE_SITE,
    PUBLIC_SITE,
    add_alert,
    add_interval,
)

pytestmark = pytest.mark.integration
RAW_VALUE = 29.8765  # a reading that must not appear


def _history(conn: psycopg.Connection[Any]) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    start = now - dt.timedelta(days=3)
    add_interval(conn, PUBLIC_SITE, "test.temp.max", "office-1", start, 30, "compliant", "th-1")
    add_interval(
        conn,
        PUBLIC_SITE,
        "test.temp.max",
        "office-1",
        start + dt.timedelta(hours=30),
        10,
        "violating",
        "th-1",
    )
    add_alert(
        conn,
        PUBLIC_SITE,
        "test.temp.max",
        started_at=start + dt.timedelta(hours=30),
        state="closed",
        acknowledged_after=dt.timedelta(minutes=5),
        closed_after=dt.timedelta(hours=2),
        cause="设定过低",
        action="调回 26℃",
    )
    add_alert(conn, PUBLIC_SITE, "test.temp.max", started_at=now - dt.timedelta(hours=1))
    write_readings(
        conn,
        [
            ReadingRow(
                PUBLIC_SITE,
                "th-1",
                "temperature",
                now.timestamp() - 60,
                RAW_VALUE,
                1,
                now.timestamp(),
            )
        ],
    )
    conn.commit()


def test_public_page_has_figures_and_no_personal_data(
    conn: psycopg.Connection[Any], client: TestClient
) -> None:
    _history(conn)
    page = client.get(f"/public/{PUBLIC_SITE}")  # no token
    assert page.status_code == 200
    html = page.text
    assert "办公室室内温度不得高于28℃" in html  # the clause, by title
    assert "75.0%" in html  # 30 h compliant of 40 h assessable
    for personal in (PARTY_NAME, PARTY_PHONE, PARTY_EMAIL, "wang", "token:", "调回", "设定过低"):
        assert personal not in html, personal
    assert str(RAW_VALUE) not in html and "29.8" not in html
    for room in ("office-1", "一号办公室"):  # spaces can name a person's office
        assert room not in html
    data = client.get(f"/api/v1/public/{PUBLIC_SITE}")
    assert data.status_code == 200
    text = data.text
    for personal in (PARTY_NAME, PARTY_PHONE, PARTY_EMAIL, "wang", "token:", str(RAW_VALUE)):
        assert personal not in text, personal
    assert data.json()["open_alerts"] == 1


def test_sites_that_did_not_opt_in_have_no_public_page(client: TestClient) -> None:
    for site in (PRIVATE_SITE, "demo-hq", "no-such-site"):
        assert client.get(f"/public/{site}").status_code == 404
        assert client.get(f"/api/v1/public/{site}").status_code == 404
