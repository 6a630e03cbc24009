"""信息反馈 (issue 21): the public feedback form of a space, with no account or cookie: its
categories come from the clauses covering the space; a report becomes an item linked to the
space and those clauses, in the ledger by digest; bad input is refused with what to correct; the
rate limit holds per address and per space, across connections; facility managers triage it
within their scope; the statistics and the quarterly report count it. Real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import hashlib
import struct
import threading
import zlib
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.tokens import create_token
from compliance import feedback
from compliance.feedback import (
    ADDRESS_LIMIT,
    SPACE_LIMIT,
    RateLimited,
    categories_for,
    covering_clauses,
    submit_feedback,
)
from compliance.reports import build_report, render_csv, render_html
from compliance.statistics import org_statistics, site_statistics
from tests.compliance.conftest import PARTY_NAME, PRIVATE_SITE, PUBLIC_SITE, auth

pytestmark = pytest.mark.integration
FORM = f"/public/{PUBLIC_SITE}/feedback"


def png() -> bytes:
    """A real 1×1 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def post(
    client: TestClient,
    category: str,
    text: str = "",
    photo: tuple[str, bytes, str] | None = None,
    space: str = "office-1",
    lang: str = "zh",
) -> Any:
    data = {"space": space, "lang": lang, "category": category, "text": text}
    files = {"photo": photo} if photo else {"photo": ("", b"", "application/octet-stream")}
    return client.post(FORM, data=data, files=files, follow_redirects=False)


def submit(
    conn: psycopg.Connection[Any],
    client: str,
    now: dt.datetime,
    space: str = "office-2",
    category: str = "too_cold",
) -> int:
    """A report through the domain function, at an injected time."""
    return submit_feedback(
        conn,
        site=PUBLIC_SITE,
        space=space,
        category=category,
        text="",
        photo=None,
        lang="zh",
        client=client,
        now=now,
    )


def test_categories_follow_the_clauses_covering_the_space(conn: psycopg.Connection[Any]) -> None:
    day = dt.date(2026, 7, 1)
    office = categories_for(covering_clauses(conn, PUBLIC_SITE, "office-1", day))
    assert list(office) == ["too_cold", "too_hot", "other"]
    assert "temp.cooling.min" in office["too_cold"]  # 26 °C at least while cooling
    assert "temp.heating.max" in office["too_hot"] and "test.temp.max" in office["too_hot"]
    assert "temp.heating.max" not in office["too_cold"]
    toilet = categories_for(covering_clauses(conn, "demo-hq", "b1-2f-wc-east", day))
    assert toilet["not_cleaned"] == ["toilet.cleaning"]
    lift = categories_for(covering_clauses(conn, "demo-hq", "b1-lift-1", day))
    assert lift["lift"] == ["elevator.maintenance"]
    assert "not_cleaned" not in lift
    assert not any(c.startswith("dq.") for c in lift["other"])  # data quality is not a complaint


def test_the_form_speaks_chinese_and_english_and_names_no_room(client: TestClient) -> None:
    page = client.get(FORM, params={"space": "office-1"})
    assert page.status_code == 200
    assert "太冷" in page.text and "太热" in page.text and "未打扫" not in page.text
    assert "办公室" in page.text  # the type of the space
    for personal in ("一号办公室", PARTY_NAME, "set-cookie"):
        assert personal not in page.text
    assert "set-cookie" not in page.headers
    english = client.get(FORM, params={"space": "office-1", "lang": "en"})
    assert "Too cold" in english.text and "<html lang='en'>" in english.text
    data = client.get(f"/api/v1/public/{PUBLIC_SITE}/feedback", params={"space": "office-1"})
    assert data.json()["categories"] == ["too_cold", "too_hot", "other"]
    for site, space in ((PRIVATE_SITE, "office-1"), (PUBLIC_SITE, "office-9"), ("nope", "b1")):
        assert client.get(f"/public/{site}/feedback", params={"space": space}).status_code == 404
    assert client.get(FORM, params={"space": "../x"}).status_code == 422


def test_a_report_with_a_photo_becomes_an_item_of_the_space_and_its_clauses(
    conn: psycopg.Connection[Any], client: TestClient, admin_token: str
) -> None:
    image = png()
    sent = post(
        client, "too_hot", "会议太热\x1b[31m了\u202e\r\n空调不制冷", ("p.png", image, "text/plain")
    )
    assert sent.status_code == 303, sent.text
    assert sent.headers["location"] == f"{FORM}?space=office-1&lang=zh&sent=1"
    thanks = client.get(sent.headers["location"])
    assert "已收到" in thanks.text and "会议太热" not in thanks.text
    items = client.get("/api/v1/feedback", params={"site": PUBLIC_SITE}, headers=auth(admin_token))
    [item] = items.json()
    assert item["space"] == "office-1" and item["category"] == "too_hot"
    assert item["text"] == "会议太热[31m了\n空调不制冷"  # control and format characters removed
    assert "test.temp.max" in item["clauses"] and "temp.cooling.min" not in item["clauses"]
    assert (item["state"], item["photo"]) == ("new", "image/png")
    photo = client.get(f"/api/v1/feedback/{item['id']}/photo", headers=auth(admin_token))
    assert photo.content == image and photo.headers["content-type"] == "image/png"
    row = conn.execute(
        "SELECT payload FROM ledger WHERE entity = %s", (f"feedback:{item['id']}",)
    ).fetchone()
    assert row is not None
    assert "会议太热" not in row[0]  # what a person wrote stays removable: a digest only
    assert hashlib.sha256(item["text"].encode()).hexdigest() in row[0]
    assert hashlib.sha256(image).hexdigest() in row[0]
    # The public pages never show it.
    for url in (
        f"/public/{PUBLIC_SITE}",
        f"/api/v1/public/{PUBLIC_SITE}",
        f"{FORM}?space=office-1",
    ):
        assert "空调不制冷" not in client.get(url).text


@pytest.mark.parametrize(
    ("category", "text", "photo", "said"),
    [
        ("too_warm", "", None, "请选择遇到的问题类型"),
        ("not_cleaned", "", None, "请选择遇到的问题类型"),  # not offered in an office
        ("other", "  ", None, "请简单说明"),
        ("too_cold", "冷" * 1001, None, "不超过 1000 个字"),
        ("too_cold", "", ("a.gif", b"GIF89a" + b"\x00" * 20, "image/png"), "JPEG、PNG 或 WebP"),
        (
            "too_cold",
            "",
            ("a.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * (5 << 20), "image/png"),
            "5 MB",
        ),
    ],
)
def test_bad_input_is_refused_with_what_to_correct(
    conn: psycopg.Connection[Any],
    client: TestClient,
    category: str,
    text: str,
    photo: tuple[str, bytes, str] | None,
    said: str,
) -> None:
    answer = post(client, category, text, photo)
    assert answer.status_code == 422
    assert said in answer.text and "role='alert'" in answer.text
    if text.strip() and len(text) < 50:
        assert text in answer.text  # the person's text is kept
    assert conn.execute("SELECT count(*) FROM feedback_items").fetchone() == (0,)


def test_bodies_and_spaces_out_of_bounds(client: TestClient) -> None:
    huge = ("a.jpg", b"\xff\xd8\xff" + b"\x00" * (6 << 20), "image/jpeg")
    assert post(client, "too_cold", photo=huge).status_code == 413
    assert post(client, "too_cold", space="office-9").status_code == 404
    assert post(client, "too_cold", space="x" * 200).status_code == 404
    many = {f"f{i}": "x" for i in range(20)}
    assert client.post(FORM, data=many).status_code == 400
    closed = client.post(f"/public/{PRIVATE_SITE}/feedback", data={"space": "office-1"})
    assert closed.status_code == 404


def test_the_rate_limit_per_address_says_when_to_try_again(
    register_db_url: str, client: TestClient
) -> None:
    for n in range(ADDRESS_LIMIT.submissions):
        assert post(client, "too_cold", f"第 {n} 次").status_code == 303
    refused = post(client, "too_cold", "again")
    assert refused.status_code == 429
    assert "提交过于频繁，请 10 分钟后再试" in refused.text
    assert 590 <= int(refused.headers["retry-after"]) <= 600
    english = post(client, "too_cold", "again", lang="en")
    assert english.status_code == 429 and "try again in 10 min" in english.text
    # Another address is not held back (and the space's own limit is higher).
    with TestClient(create_app(register_db_url), client=("198.51.100.7", 40000)) as other:
        assert post(other, "too_cold").status_code == 303
    with TestClient(create_app(register_db_url), client=("2001:db8::1", 40000)) as six:
        for _ in range(ADDRESS_LIMIT.submissions):
            assert post(six, "too_hot").status_code == 303
    with TestClient(create_app(register_db_url), client=("2001:db8::2", 40000)) as same_64:
        assert post(same_64, "too_hot").status_code == 429  # one /64 is one client


def test_the_rate_limit_per_space_and_its_window(conn: psycopg.Connection[Any]) -> None:
    now = dt.datetime(2026, 7, 1, 2, 0, tzinfo=dt.UTC)
    for n in range(SPACE_LIMIT.submissions):
        submit(conn, f"192.0.2.{n}", now)
    conn.commit()
    with pytest.raises(RateLimited) as refused:
        submit(conn, "192.0.2.200", now + dt.timedelta(minutes=3))
    assert (refused.value.scope, refused.value.retry_after_s) == ("space", 7 * 60)
    conn.rollback()
    later = now + SPACE_LIMIT.window + dt.timedelta(seconds=1)
    submit(conn, "192.0.2.200", later)
    conn.commit()
    stored = conn.execute("SELECT count(*) FROM feedback_hits").fetchone()
    assert stored == (2,)  # the window's rows only: older ones were removed


def test_the_limit_holds_across_connections_at_once(
    conn: psycopg.Connection[Any], register_db_url: str
) -> None:
    """Eight processes' worth of connections submitting from one address at the same moment:
    exactly the limit gets in."""
    now = dt.datetime(2026, 7, 1, 3, 0, tzinfo=dt.UTC)
    start = threading.Barrier(8)
    outcomes: list[str] = []

    def one() -> None:
        with psycopg.connect(register_db_url) as conn:
            start.wait(timeout=30)
            try:
                submit(conn, "203.0.113.9", now, space="office-1")
                conn.commit()
                outcomes.append("stored")
            except RateLimited:
                conn.rollback()
                outcomes.append("limited")

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == ["limited"] * 3 + ["stored"] * ADDRESS_LIMIT.submissions


def _token(conn: psycopg.Connection[Any], role: str, *sites: str) -> str:
    token, _ = create_token(conn, role, sites, f"{role} feedback")
    conn.commit()
    return token


def test_facility_managers_triage_within_their_scope(
    conn: psycopg.Connection[Any], client: TestClient
) -> None:
    assert post(client, "too_cold", "冷").status_code == 303
    [item_id] = [r[0] for r in conn.execute("SELECT id FROM feedback_items").fetchall()]
    manager = _token(conn, "facility_manager", PUBLIC_SITE)
    elsewhere = _token(conn, "facility_manager", PRIVATE_SITE)
    viewer = _token(conn, "viewer", PUBLIC_SITE)
    url = f"/api/v1/feedback/{item_id}"
    assert client.patch(url, json={"state": "triaged"}, headers=auth(viewer)).status_code == 403
    assert client.patch(url, json={"state": "triaged"}, headers=auth(elsewhere)).status_code == 404
    assert client.get(url, headers=auth(elsewhere)).status_code == 404
    listed = client.get("/api/v1/feedback", headers=auth(elsewhere)).json()
    assert listed == []
    early = client.patch(url, json={"state": "resolved"}, headers=auth(manager))
    assert early.status_code == 409 and "triaged" in early.json()["detail"]
    step = client.patch(url, json={"state": "triaged", "note": " 已派维修 "}, headers=auth(manager))
    assert step.status_code == 200, step.text
    assert step.json()["triaged_at"] is not None
    done = client.patch(url, json={"state": "resolved", "note": "温度已调"}, headers=auth(manager))
    body = done.json()
    assert body["state"] == "resolved"
    assert [(s["state"], s["note"]) for s in body["steps"]] == [
        ("triaged", "已派维修"),
        ("resolved", "温度已调"),
    ]
    assert all(s["actor"].startswith("token:") for s in body["steps"])
    again = client.patch(url, json={"state": "rejected"}, headers=auth(manager))
    assert again.status_code == 409
    bad = client.patch(url, json={"state": "new"}, headers=auth(manager))
    assert bad.status_code == 422
    kinds = [
        r[0]
        for r in conn.execute(
            "SELECT kind FROM ledger WHERE entity = %s ORDER BY seq", (f"feedback:{item_id}",)
        ).fetchall()
    ]
    assert kinds == ["feedback.received", "feedback.triaged", "feedback.resolved"]
    filtered = client.get(
        "/api/v1/feedback",
        params={"state": "resolved", "category": "too_cold"},
        headers=auth(manager),
    )
    assert [i["id"] for i in filtered.json()] == [item_id]
    assert (
        client.get("/api/v1/feedback", params={"state": "new"}, headers=auth(manager)).json() == []
    )


def test_statistics_and_the_quarterly_report_count_feedback(
    conn: psycopg.Connection[Any],
) -> None:
    received = dt.datetime(2026, 7, 2, 1, 0, tzinfo=dt.UTC)
    ids = [
        submit(conn, f"192.0.2.{n}", received + dt.timedelta(minutes=n), space, category)
        for n, (space, category) in enumerate(
            [("office-1", "too_cold"), ("office-1", "too_hot"), ("office-2", "too_hot")]
        )
    ]
    # The first triaged after 2 h and resolved; the second rejected after 4 h (minus a minute).
    feedback.triage(conn, ids[0], "triaged", "", "token:1 (fm)", received + dt.timedelta(hours=2))
    feedback.triage(
        conn, ids[0], "resolved", "ok", "token:1 (fm)", received + dt.timedelta(hours=3)
    )
    feedback.triage(
        conn,
        ids[1],
        "rejected",
        "重复",
        "token:1 (fm)",
        received + dt.timedelta(hours=4, minutes=1),
    )
    conn.commit()
    since = dt.datetime(2026, 6, 30, 16, 0, tzinfo=dt.UTC)  # 2026Q3 in Asia/Shanghai
    until = dt.datetime(2026, 9, 30, 16, 0, tzinfo=dt.UTC)
    at = received + dt.timedelta(days=1)
    counts = site_statistics(conn, PUBLIC_SITE, since, until, at).feedback
    assert counts.received == 3
    assert counts.by_category == dict(too_cold=1, too_hot=2, not_cleaned=0, lift=0, other=0)
    assert counts.by_state == {"new": 1, "triaged": 0, "resolved": 1, "rejected": 1}
    assert counts.triaged == 2 and counts.mean_time_to_triage_s == 3 * 3600
    assert counts.by_clause["test.temp.max"] == 2
    # As of an earlier time: states then.
    then = site_statistics(
        conn, PUBLIC_SITE, since, until, received + dt.timedelta(hours=2, minutes=30)
    )
    assert then.feedback.by_state == {"new": 2, "triaged": 1, "resolved": 0, "rejected": 0}
    org = org_statistics(conn, ["jinan"], None, since, until, at).node
    assert (org.feedback, org.feedback_new, org.mean_time_to_triage_s) == (3, 1, 3 * 3600)
    report = build_report(conn, PUBLIC_SITE, "2026Q3", at)
    html = render_html(report)
    assert "信息反馈" in html and "3 received" in html and "3.0 h" in html
    assert "太热 Too hot</td><td>2" in html
    csv = render_csv(report)
    assert f"feedback,{PUBLIC_SITE},received,3" in csv
    assert "feedback_state,rejected,items,1" in csv
    assert f"feedback,{PUBLIC_SITE},mean_time_to_triage_s,10800.0" in csv
