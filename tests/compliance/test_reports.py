"""Statistics and the quarterly report of a small scripted quarter, against figures computed by
hand; storing a report does not count toward the evaluated share; the CLI and the API produce
and serve reports; organisation roll-ups."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from fastapi.testclient import TestClient

from clausewatch.cli import main
from compliance.periods import BadPeriod, last_complete_quarter, quarter_bounds, report_bounds
from compliance.reports import generate_due_reports, generate_report
from compliance.statistics import org_statistics, site_statistics
from tests.compliance.conftest import PRIVATE_SITE, PUBLIC_SITE, add_alert, add_interval, auth

pytestmark = pytest.mark.integration
SHANGHAI = dt.timezone(dt.timedelta(hours=8))
Q3_START = dt.datetime(2026, 7, 1, tzinfo=SHANGHAI)
Q3_END = dt.datetime(2026, 10, 1, tzinfo=SHANGHAI)
T = dt.datetime(2026, 7, 6, 1, 0, tzinfo=dt.UTC)
NOW = dt.datetime(2026, 11, 22, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)


def script_quarter(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """The quarter of pub-site; the figures it must give are worked out in the test."""
    site = PUBLIC_SITE
    # test.temp.max: office-1 compliant 60 h then violating 20 h; office-2 compliant 100 h
    # then 20 h without usable data; 20 h compliant straddling the quarter's start (10 h in).
    add_interval(conn, site, "test.temp.max", "office-1", T, 60, "compliant", "th-1")
    add_interval(conn, site, "test.temp.max", "office-1", T + 60 * H, 20, "violating", "th-1")
    add_interval(conn, site, "test.temp.max", "office-2", T, 100, "compliant", "th-2")
    add_interval(conn, site, "test.temp.max", "office-2", T + 100 * H, 20, "not_assessable", "th-2")
    add_interval(
        conn, site, "test.temp.max", "office-2", T + 120 * H, 50, "outside_schedule", "th-2"
    )
    add_interval(
        conn, site, "test.temp.max", "office-1", Q3_START - 10 * H, 20, "compliant", "th-1"
    )
    # temp.cooling.min: 10 h violating and nothing else, so it always fires.
    add_interval(conn, site, "temp.cooling.min", "office-1", T + 200 * H, 10, "violating", "th-1")
    alerts = {
        "a1": add_alert(
            conn,
            site,
            "test.temp.max",
            started_at=T + 60 * H,
            state="closed",
            acknowledged_after=dt.timedelta(minutes=10),
            closed_after=2 * H,
            cause="设定温度过高",
            action="调整设定至 26℃",
        ),
        "a2": add_alert(
            conn,
            site,
            "test.temp.max",
            started_at=T + 70 * H,
            state="acknowledged",
            acknowledged_after=dt.timedelta(minutes=30),
            reopen_count=3,
        ),
        "a3": add_alert(  # closed before the quarter: counts nowhere
            conn,
            site,
            "test.temp.max",
            started_at=Q3_START - 30 * 24 * H,
            state="closed",
            acknowledged_after=H,
            closed_after=2 * H,
        ),
        "a4": add_alert(
            conn,
            site,
            "test.temp.max",
            severity="warning",
            started_at=T + 80 * H,
        ),
        "a5": add_alert(  # an overdue obligation, closed a day later
            conn,
            site,
            "toilet.cleaning",
            space="b1",
            severity="warning",
            started_at=T + 90 * H,
            state="closed",
            closed_after=24 * H,
            cause="保洁人员请假",
            action="安排替班",
        ),
    }
    conn.commit()
    return alerts


def test_quarter_bounds_and_the_last_complete_quarter() -> None:
    shanghai = ZoneInfo("Asia/Shanghai")
    start, end = quarter_bounds("2026Q3", shanghai)
    assert (start, end) == (Q3_START, Q3_END)
    assert quarter_bounds("2026Q4", shanghai)[1] == dt.datetime(2027, 1, 1, tzinfo=SHANGHAI)
    assert last_complete_quarter(NOW, shanghai) == "2026Q3"
    assert (
        last_complete_quarter(dt.datetime(2026, 12, 31, 16, 30, tzinfo=dt.UTC), shanghai)
        == "2026Q4"
    )
    for bad in ("2026Q5", "2026-07", "1900Q1"):
        with pytest.raises(BadPeriod):
            quarter_bounds(bad, shanghai)


def test_a_quarter_that_has_not_begun_is_refused(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(BadPeriod, match="has not begun"):
        generate_report(conn, PUBLIC_SITE, "2027Q1", "test", NOW)


def test_statistics_equal_hand_computed_figures(conn: psycopg.Connection[Any]) -> None:
    alerts = script_quarter(conn)
    stats = site_statistics(conn, PUBLIC_SITE, Q3_START, Q3_END, NOW)
    hours = 3600.0
    assert stats.compliant_s == pytest.approx(170 * hours)  # 60 + 100 + 10
    assert stats.violating_s == pytest.approx(30 * hours)  # 20 + 10
    assert stats.not_assessable_s == pytest.approx(20 * hours)
    assert stats.compliance_rate == pytest.approx(170 / 200)
    assert stats.data_completeness == pytest.approx(200 / 220)
    assert [(a.clause_id, a.severity, a.alerts) for a in stats.alerts_by_clause] == [
        ("test.temp.max", "major", 2),
        ("test.temp.max", "warning", 1),
        ("toilet.cleaning", "warning", 1),
    ]
    assert stats.alerts == 4
    assert stats.open_alerts == 2  # a2 acknowledged, a4 firing
    assert stats.acknowledged == 2
    assert stats.mean_time_to_acknowledge_s == pytest.approx((600 + 1800) / 2)
    assert stats.closed == 2
    assert stats.mean_time_to_close_s == pytest.approx((2 * hours + 24 * hours) / 2)
    health = stats.health
    assert [(p.party, p.alerts) for p in health.per_party] == [("wang", 4)]
    assert health.per_party[0].per_day == pytest.approx(4 / 92)  # July, August, September
    assert [a.id for a in health.chattering] == [alerts["a2"]]
    assert sorted(a.id for a in health.standing) == sorted([alerts["a2"], alerts["a4"]])
    assert [(c.clause_id, c.rate) for c in health.always_firing] == [("temp.cooling.min", 0.0)]
    assert "test.temp.max" in stats.clauses_in_force
    assert "test.temp.max" not in health.never_firing
    assert "temp.cooling.min" in health.never_firing  # violating time, yet no alert
    assert stats.evaluated_share == 0.0


def test_report_figures_and_the_evaluated_share(conn: psycopg.Connection[Any]) -> None:
    alerts = script_quarter(conn)
    report_id, report = generate_report(conn, PUBLIC_SITE, "2026Q3", "test", NOW)
    conn.commit()
    assert report.statistics.compliance_rate == pytest.approx(0.85)
    assert [c.id for c in report.worst_clauses] == ["temp.cooling.min", "test.temp.max"]
    assert [(s.id, s.rate) for s in report.worst_spaces] == [("office-1", pytest.approx(0.7))]
    assert [o.alert_id for o in report.overdue_obligations] == [alerts["a5"]]
    assert [r.alert_id for r in report.ledger] == [alerts["a5"], alerts["a1"]]
    assert report.ledger[1].corrective_action == "调整设定至 26℃"
    html, csv = conn.execute(
        "SELECT html, csv FROM evaluation_reports WHERE id = %s", (report_id,)
    ).fetchone() or ("", "")
    assert "85.0%" in html and "<svg" in html and "调整设定至 26℃" in html
    assert "summary,pub-site,compliance_rate,0.85" in csv
    # A generated report evaluates nothing (issue 21): only people do (test_evaluations.py).
    after = site_statistics(conn, PUBLIC_SITE, Q3_START, Q3_END, NOW)
    assert after.evaluated_share == 0.0
    assert after.evaluated_clauses == []


def test_quarter_end_job_makes_each_missing_report_once(conn: psycopg.Connection[Any]) -> None:
    made = generate_due_reports(conn, "scheduler", NOW)
    assert len(made) == 3  # demo-hq, pub-site, private-site: all synced before Q3 ended
    assert generate_due_reports(conn, "scheduler", NOW) == []
    periods = conn.execute("SELECT DISTINCT period FROM evaluation_reports").fetchall()
    assert periods == [("2026Q3",)]


def test_the_schedulers_reports_evaluate_nothing(conn: psycopg.Connection[Any]) -> None:
    """Issue 21: the quarter-end job writes a report for every site; no person evaluated any
    clause, so the evaluated share stays 0 % (it was 100 % by itself)."""
    assert len(generate_due_reports(conn, "scheduler", NOW)) == 3
    for site in ("demo-hq", PRIVATE_SITE, PUBLIC_SITE):
        stats = site_statistics(conn, site, Q3_START, Q3_END, NOW)
        assert stats.clauses_in_force
        assert (stats.evaluated_clauses, stats.evaluated_share) == ([], 0.0)


def test_report_command_writes_html_and_csv(
    conn: psycopg.Connection[Any], register_db_url: str, tmp_path: Path
) -> None:
    script_quarter(conn)
    code = main(
        [
            "report",
            "compliance",
            "--site",
            PUBLIC_SITE,
            "--period",
            "2026Q3",
            "--out-dir",
            str(tmp_path),
            "--database-url",
            register_db_url,
        ]
    )
    assert code == 0
    assert "<svg" in (tmp_path / f"{PUBLIC_SITE}-2026Q3.html").read_text(encoding="utf-8")
    assert "compliance_rate,0.85" in (tmp_path / f"{PUBLIC_SITE}-2026Q3.csv").read_text("utf-8-sig")
    bad = main(
        [
            "report",
            "compliance",
            "--site",
            "nowhere",
            "--period",
            "2026Q3",
            "--database-url",
            register_db_url,
        ]
    )
    assert bad == 2


def test_reports_api(conn: psycopg.Connection[Any], client: TestClient, admin_token: str) -> None:
    script_quarter(conn)
    made = client.post(
        "/api/v1/reports", json={"site": PUBLIC_SITE, "period": "2026Q3"}, headers=auth(admin_token)
    )
    assert made.status_code == 201, made.text
    report_id = made.json()["id"]
    listed = client.get("/api/v1/reports", params={"site": PUBLIC_SITE}, headers=auth(admin_token))
    assert [r["id"] for r in listed.json()] == [report_id]
    page = client.get(f"/api/v1/reports/{report_id}/html", headers=auth(admin_token))
    assert page.status_code == 200 and "<svg" in page.text
    table = client.get(f"/api/v1/reports/{report_id}/csv", headers=auth(admin_token))
    assert table.content.startswith("\ufeff".encode())
    figures = client.get(f"/api/v1/reports/{report_id}", headers=auth(admin_token)).json()
    assert figures["statistics"]["compliance_rate"] == pytest.approx(0.85)
    assert client.get("/api/v1/reports/999999", headers=auth(admin_token)).status_code == 404
    bad = client.post(
        "/api/v1/reports", json={"site": PUBLIC_SITE, "period": "2026Q9"}, headers=auth(admin_token)
    )
    assert bad.status_code == 422


def test_org_statistics_roll_up_and_respect_the_scope(conn: psycopg.Connection[Any]) -> None:
    script_quarter(conn)
    city = org_statistics(conn, ["jinan"], None, Q3_START, Q3_END, NOW)
    assert [c.path for c in city.children] == [["jinan", "lixia"], ["jinan", "shizhong"]]
    assert sorted(city.node.sites) == ["demo-hq", PRIVATE_SITE, PUBLIC_SITE]
    # Only pub-site has intervals in this test: the city's rate is its rate.
    assert city.node.compliance_rate == pytest.approx(0.85)
    assert city.node.alerts == 4
    scoped = org_statistics(conn, ["jinan"], [PRIVATE_SITE], Q3_START, Q3_END, NOW)
    assert scoped.node.sites == [PRIVATE_SITE] and scoped.node.alerts == 0
    district = org_statistics(conn, ["jinan", "lixia"], None, Q3_START, Q3_END, NOW)
    assert [c.path for c in district.children] == [
        ["jinan", "lixia", "demo-hq"],
        ["jinan", "lixia", PUBLIC_SITE],
    ]


def test_annual_report_with_its_quarters_energy_carbon_and_cost(
    conn: psycopg.Connection[Any], register_db_url: str, tmp_path: Path
) -> None:
    from decimal import Decimal

    from compliance.feedback import submit_feedback
    from energy.costs import Tariff, add_tariff
    from energy.summary import period_figures
    from store.batches import ReadingRow, write_readings

    after_year = dt.datetime(2027, 1, 5, tzinfo=dt.UTC)
    script_quarter(conn)
    quarter_id, _ = generate_report(conn, PUBLIC_SITE, "2026Q3", "test", NOW)
    # 信息反馈: one item from the public form in the year, counted in the annual report
    submit_feedback(
        conn, site=PUBLIC_SITE, space="office-2", category="too_cold", text="", photo=None,
        lang="zh", client="annual-test", now=dt.datetime(2026, 5, 6, tzinfo=dt.UTC),
    )  # fmt: skip
    _, annual = generate_report(conn, PUBLIC_SITE, "2026", "test", after_year, period_figures)
    assert annual.statistics.feedback.received == 1
    assert annual.kind == "year"
    assert annual.period_start == dt.datetime(2026, 1, 1, tzinfo=SHANGHAI)
    assert annual.period_end == dt.datetime(2027, 1, 1, tzinfo=SHANGHAI)
    assert [(q.period, q.report_id) for q in annual.quarters] == [("2026Q3", quarter_id)]
    assert annual.quarters[0].compliance_rate == pytest.approx(0.85)
    # the year counts all of the 20 h straddling the quarter's start (the quarter 10 h of it):
    # compliant 60 + 100 + 20 h, violating 20 + 10 h
    assert annual.statistics.compliance_rate == pytest.approx(180 / 210)
    assert annual.energy is not None and annual.energy.cost == 0  # pub-site has no meter

    # demo-hq: 3000 kWh on its main meter in March at the site's flat 0.8 yuan/kWh
    conn.execute("DELETE FROM energy_tariffs WHERE scope_id = 'demo-hq'")
    add_tariff(
        conn,
        Tariff(scope="site", scope_id="demo-hq", carrier="electricity",
               first_day=dt.date(2026, 1, 1), price=Decimal("0.8"), source="<b>价</b>"),
        added_by="test",
    )  # fmt: skip
    march = dt.datetime(2026, 3, 1, tzinfo=SHANGHAI)
    write_readings(
        conn,
        [
            ReadingRow("demo-hq", "em-main", "energy_kwh", (march + n * H).timestamp(),
                       float(v), None, (march + n * H).timestamp())
            for n, v in ((0, 0), (1, 1000), (2, 3000))
        ],
    )  # fmt: skip
    conn.commit()
    code = main(
        ["report", "compliance", "--site", "demo-hq", "--period", "2026", "--out-dir",
         str(tmp_path), "--database-url", register_db_url]
    )  # fmt: skip
    assert code == 0
    html = (tmp_path / "demo-hq-2026.html").read_text(encoding="utf-8")
    csv = (tmp_path / "demo-hq-2026.csv").read_text(encoding="utf-8-sig")
    assert "年度自评价报告" in html and "能源、碳排放与运行成本" in html
    assert "<b>2400.00</b>" in html  # the cost tile
    assert "信息反馈 · feedback from the public form" in html
    assert "size:A4" in html and "break-before:page" in html
    assert "<script" not in html and "<nav" not in html
    # each energy note in Chinese, then English (issue 19: they were English only)
    assert "小时无数据 · meter em-" in html
    assert "energy,demo-hq,cost,2400.00" in csv
    assert "energy,electricity,consumption,3000.000" in csv
    assert "feedback,demo-hq,received,0" in csv


def test_year_end_job_makes_the_annual_reports_after_the_quarters(
    conn: psycopg.Connection[Any],
) -> None:
    after_year = dt.datetime(2027, 1, 5, tzinfo=dt.UTC)
    made = generate_due_reports(conn, "scheduler", after_year)
    assert len(made) == 6  # 2026Q4 and 2026 of each of the three sites
    assert generate_due_reports(conn, "scheduler", after_year) == []
    rows = conn.execute(
        "SELECT period, figures -> 'quarters' -> 0 ->> 'period' FROM evaluation_reports"
        " WHERE site = %s ORDER BY id",
        (PUBLIC_SITE,),
    ).fetchall()
    assert rows == [("2026Q4", None), ("2026", "2026Q4")]
    with pytest.raises(BadPeriod):
        report_bounds("2026Q5", ZoneInfo("Asia/Shanghai"))
    assert report_bounds("2026", ZoneInfo("Asia/Shanghai"))[1].year == 2027
