"""Targets of the plan per organisation node and attainment per site, district and city
(issue 21): defaults 90 % / 95 % / 30 %, a node's own targets inherited below it, the sites that
pull a figure below its target named, lowest first; the report states its attainment; only
unscoped admins set targets, and the ledger names who did."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.tokens import create_token
from compliance.reports import generate_report
from compliance.statistics import org_statistics, site_statistics
from compliance.targets import FigureAttainment, Targets, set_targets
from tests.compliance.conftest import PRIVATE_SITE, PUBLIC_SITE, add_interval, auth

pytestmark = pytest.mark.integration
SHANGHAI = dt.timezone(dt.timedelta(hours=8))
Q3_START = dt.datetime(2026, 7, 1, tzinfo=SHANGHAI)
Q3_END = dt.datetime(2026, 10, 1, tzinfo=SHANGHAI)
T = dt.datetime(2026, 7, 6, 1, 0, tzinfo=dt.UTC)
NOW = dt.datetime(2026, 11, 22, tzinfo=dt.UTC)


def quarter(conn: psycopg.Connection[Any]) -> None:
    """pub-site (jinan/lixia) complies 85 % of the time, private-site (jinan/shizhong) 100 %."""
    add_interval(conn, PUBLIC_SITE, "test.temp.max", "office-1", T, 85, "compliant", "th-1")
    add_interval(
        conn, PUBLIC_SITE, "test.temp.max", "office-1", T + dt.timedelta(hours=85), 15,
        "violating", "th-1",
    )  # fmt: skip
    add_interval(conn, PRIVATE_SITE, "test.temp.max", "office-1", T, 100, "compliant", "th-1")
    conn.commit()


def figure(figures: list[FigureAttainment], name: str) -> FigureAttainment:
    return next(f for f in figures if f.figure == name)


def test_city_attainment_against_the_plan_names_the_sites_below(
    conn: psycopg.Connection[Any],
) -> None:
    quarter(conn)
    city = org_statistics(conn, ["jinan"], None, Q3_START, Q3_END, NOW)
    attained = city.node.attainment
    assert attained.targets_from is None  # nothing set: the plan's defaults
    assert attained.targets == Targets(
        compliance_rate=0.90, key_clause_coverage=0.95, evaluated_share=0.30
    )
    rate = figure(attained.figures, "compliance_rate")
    assert rate.name_zh == "标准达标率"
    assert rate.value == pytest.approx(185 / 200)
    assert (rate.target, rate.met) == (0.90, True)
    assert [(s.site, s.value) for s in rate.below] == [(PUBLIC_SITE, pytest.approx(0.85))]
    share = figure(attained.figures, "evaluated_share")
    assert share.name_zh == "标准实施效果评价比例"
    assert (share.value, share.met) == (0.0, False)  # nobody evaluated anything
    assert sorted(s.site for s in share.below) == ["demo-hq", PRIVATE_SITE, PUBLIC_SITE]
    # The districts: lixia falls short on the rate, shizhong does not.
    lixia, shizhong = city.children
    assert figure(lixia.attainment.figures, "compliance_rate").met is False
    assert [s.site for s in figure(lixia.attainment.figures, "compliance_rate").below] == [
        PUBLIC_SITE
    ]
    assert figure(shizhong.attainment.figures, "compliance_rate").met is True
    # A site-scoped view counts only its own sites.
    scoped = org_statistics(conn, ["jinan"], [PRIVATE_SITE], Q3_START, Q3_END, NOW)
    assert figure(scoped.node.attainment.figures, "compliance_rate").below == []


def test_a_districts_own_targets_hold_for_its_sites(conn: psycopg.Connection[Any]) -> None:
    quarter(conn)
    set_targets(
        conn,
        ["jinan", "lixia"],
        Targets(compliance_rate=0.80, key_clause_coverage=0.5, evaluated_share=0.0),
        "test",
        NOW,
    )
    conn.commit()
    district = org_statistics(conn, ["jinan", "lixia"], None, Q3_START, Q3_END, NOW)
    assert district.node.attainment.targets_from == ["jinan", "lixia"]
    assert figure(district.node.attainment.figures, "compliance_rate").met is True
    assert figure(district.node.attainment.figures, "evaluated_share").met is True
    site = site_statistics(conn, PUBLIC_SITE, Q3_START, Q3_END, NOW)
    assert site.attainment.targets_from == ["jinan", "lixia"]  # inherited by the unit
    assert figure(site.attainment.figures, "compliance_rate").target == 0.80
    # The city keeps the plan's.
    city = org_statistics(conn, ["jinan"], None, Q3_START, Q3_END, NOW)
    assert city.node.attainment.targets_from is None


def test_the_report_states_targets_and_attainment(conn: psycopg.Connection[Any]) -> None:
    quarter(conn)
    report_id, report = generate_report(conn, PUBLIC_SITE, "2026Q3", "test", NOW)
    conn.commit()
    rate = figure(report.statistics.attainment.figures, "compliance_rate")
    assert (rate.value, rate.met) == (pytest.approx(0.85), False)
    html, csv = conn.execute(
        "SELECT html, csv FROM evaluation_reports WHERE id = %s", (report_id,)
    ).fetchone() or ("", "")
    assert "标准达标率" in html and "≥ 90.0%" in html and "关键标准实施覆盖率" in html
    assert "target,compliance_rate,target,0.9" in csv
    assert "target,compliance_rate,met,false" in csv


def test_targets_api_is_for_unscoped_admins_and_ledgered(
    conn: psycopg.Connection[Any], client: TestClient, admin_token: str, register_db_url: str
) -> None:
    body = {
        "path": "jinan/lixia",
        "compliance_rate": 0.92,
        "key_clause_coverage": 0.96,
        "evaluated_share": 0.4,
    }
    with psycopg.connect(register_db_url) as setup:
        scoped_admin, _ = create_token(setup, "admin", (PUBLIC_SITE,), "admin of pub-site")
    refused = client.put("/api/v1/statistics/targets", json=body, headers=auth(scoped_admin))
    assert refused.status_code == 403
    put = client.put("/api/v1/statistics/targets", json=body, headers=auth(admin_token))
    assert put.status_code == 200, put.text
    assert put.json()["path"] == ["jinan", "lixia"]
    listed = client.get("/api/v1/statistics/targets", headers=auth(scoped_admin)).json()
    assert [(t["path"], t["targets"]["evaluated_share"]) for t in listed] == [
        (["jinan", "lixia"], 0.4)
    ]
    org = client.get(
        "/api/v1/statistics/org", params={"path": "jinan/lixia"}, headers=auth(admin_token)
    ).json()
    assert org["node"]["attainment"]["targets"]["compliance_rate"] == 0.92
    for bad in ({**body, "compliance_rate": 1.5}, {**body, "path": "Jinan"}):
        answer = client.put("/api/v1/statistics/targets", json=bad, headers=auth(admin_token))
        assert answer.status_code == 422
    gone = client.delete(
        "/api/v1/statistics/targets", params={"path": "jinan/lixia"}, headers=auth(admin_token)
    )
    assert gone.status_code == 204
    again = client.delete(
        "/api/v1/statistics/targets", params={"path": "jinan/lixia"}, headers=auth(admin_token)
    )
    assert again.status_code == 404
    kinds = conn.execute(
        "SELECT kind FROM ledger WHERE entity = 'target:jinan/lixia' ORDER BY seq"
    ).fetchall()
    assert kinds[-2:] == [("target.set",), ("target.cleared",)]
