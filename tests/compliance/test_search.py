"""The register: Chinese and ASCII search, filters, statuses, version changes, where a clause
applies; through the API with a token."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from compliance.register import (
    DOCUMENT,
    RegisterQuery,
    clause_detail,
    config_changes,
    has_trigrams,
    like_pattern,
    search_register,
)
from tests.compliance.conftest import PUBLIC_SITE, auth

pytestmark = pytest.mark.integration
TODAY = dt.date(2026, 11, 22)


def ids(conn: psycopg.Connection[Any], **query: Any) -> list[str]:
    return [e.clause_id for e in search_register(conn, RegisterQuery(**query), TODAY)]


def test_a_chinese_term_finds_its_clause(conn: psycopg.Connection[Any]) -> None:
    assert "iaq.hcho" in ids(conn, q="甲醛")
    found = ids(conn, q="室内温度")
    assert "temp.cooling.min" in found  # 公共建筑室内温度控制管理办法
    assert "test.temp.max" in found
    assert "iaq.hcho" not in found


def test_every_word_must_match_and_case_does_not_matter(conn: psycopg.Connection[Any]) -> None:
    assert ids(conn, q="HCHO") == ["iaq.hcho"]
    assert ids(conn, q="室内温度 28℃") == ["test.temp.max"]
    assert ids(conn, q="甲醛 nothing-like-this") == []


def test_like_wildcards_in_a_query_are_literal(conn: psycopg.Connection[Any]) -> None:
    assert like_pattern("50%_a") == "%50\\%\\_a%"
    assert ids(conn, q="t%p") == []  # as a wildcard it would match "temp"


def test_filters_on_domain_key_confidence_and_status(conn: psycopg.Connection[Any]) -> None:
    everything = search_register(conn, RegisterQuery(), TODAY)
    assert len(everything) >= 10
    hcho = next(e for e in everything if e.clause_id == "iaq.hcho")
    assert hcho.status == "in_force" and hcho.versions == 2 and hcho.version == 2
    assert all(
        e.domain == hcho.domain
        for e in search_register(conn, RegisterQuery(domain=hcho.domain), TODAY)
    )
    assert "test.temp.max" in ids(conn, key=True, confidence="B")
    assert "test.temp.max" not in ids(conn, key=False)
    # Before 2020 the test clause was planned; the hcho clause's 2022 edition too.
    early = dt.date(2019, 6, 1)
    planned = [e.clause_id for e in search_register(conn, RegisterQuery(status="planned"), early)]
    assert "test.temp.max" in planned
    assert "test.temp.max" not in ids(conn, status="planned")


def test_version_changes_name_the_changed_leaves() -> None:
    before = {
        "version": 1,
        "params": {"limit": {"default": 0.1, "unit": "mg/m3"}},
        "check": {"kind": "threshold", "max": "$limit"},
        "title": "a",
    }
    after = {
        "version": 2,
        "params": {"limit": {"default": 0.08, "unit": "mg/m3"}},
        "check": {"kind": "threshold", "max": "$limit", "for": 600},
        "title": "a",
    }
    changes = {c.path: (c.before, c.after) for c in config_changes(before, after)}
    assert changes == {"params.limit.default": (0.1, 0.08), "check.for": (None, 600)}


def test_detail_shows_versions_changes_and_where_it_applies(conn: psycopg.Connection[Any]) -> None:
    now = dt.datetime(2026, 11, 22, tzinfo=dt.UTC)
    detail = clause_detail(conn, "iaq.hcho", ["demo-hq", PUBLIC_SITE], now)
    assert [v.version for v in detail.versions] == [1, 2]
    assert [v.status for v in detail.versions] == ["superseded", "in_force"]
    assert detail.versions[0].changes == []
    assert any(c.path.startswith("params.") for c in detail.versions[1].changes)
    sites = {s.site: s for s in detail.sites}
    assert sites[PUBLIC_SITE].data_sources == []  # it applies, but nothing there measures HCHO
    demo = sites["demo-hq"]
    assert {s.device for s in demo.data_sources} == {"iaq-meeting-a", "iaq-meeting-b"}
    test = clause_detail(conn, "test.temp.max", [PUBLIC_SITE], now).sites[0]
    assert test.spaces == ["office-1", "office-2"]
    assert [p.party for p in test.responsible] == ["wang"]
    assert test.open_alerts == 0


def test_register_api(client: TestClient, admin_token: str) -> None:
    answer = client.get("/api/v1/register", params={"q": "甲醛"}, headers=auth(admin_token))
    assert answer.status_code == 200
    assert [e["clause_id"] for e in answer.json()] == ["iaq.hcho"]
    assert client.get("/api/v1/register").status_code == 401
    detail = client.get("/api/v1/register/iaq.hcho", headers=auth(admin_token))
    assert detail.status_code == 200 and len(detail.json()["versions"]) == 2
    missing = client.get("/api/v1/register/no.such.clause", headers=auth(admin_token))
    assert missing.status_code == 404
    assert client.get("/register").status_code == 200


def test_the_trigram_index_serves_chinese_terms(conn: psycopg.Connection[Any]) -> None:
    if not has_trigrams(conn):
        pytest.skip("this PostgreSQL has no pg_trgm: search scans instead")
    conn.execute("SET LOCAL enable_seqscan = off")  # a few dozen rows: force the planner's hand
    plan = conn.execute(
        f"EXPLAIN SELECT clause_id FROM clause_versions WHERE {DOCUMENT} LIKE %s",
        (like_pattern("室内温度"),),
    ).fetchall()
    assert any("clause_versions_document_trgm" in line for (line,) in plan)
    conn.rollback()
