"""Implementation evaluations (issue 21): the evaluated share counts what a person evaluated,
never the reports the scheduler generates (0 % until someone evaluates); improvement actions are
tracked to closure and flagged overdue past their deadline; the API records the token's actor,
writes ledger entries and keeps a site-scoped token to its own sites."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.tokens import create_token
from compliance.evaluations import PlannedAction, record_evaluation
from compliance.reports import generate_due_reports, generate_report
from compliance.statistics import site_statistics
from tests.compliance.conftest import PRIVATE_SITE, PUBLIC_SITE, auth

pytestmark = pytest.mark.integration
SHANGHAI = dt.timezone(dt.timedelta(hours=8))
Q3_START = dt.datetime(2026, 7, 1, tzinfo=SHANGHAI)
Q3_END = dt.datetime(2026, 10, 1, tzinfo=SHANGHAI)
NOW = dt.datetime(2026, 11, 22, tzinfo=dt.UTC)
DEADLINE = dt.datetime(2026, 10, 31, 18, 0, tzinfo=SHANGHAI)


@pytest.fixture(scope="module")
def manager(register_db_url: str) -> tuple[str, str]:
    """A facility manager's token of pub-site alone, and the actor it is recorded as."""
    with psycopg.connect(register_db_url) as conn:
        token, record = create_token(conn, "facility_manager", (PUBLIC_SITE,), "王建国")
    return token, f"token:{record.id} (王建国)"


def evaluation_body(**changes: Any) -> dict[str, Any]:
    return {
        "site": PUBLIC_SITE,
        "clause_id": "test.temp.max",
        "period": "2026Q3",
        "method": "inspection",
        "findings": "二号办公室下午温度偏高，空调设定 27℃",
        "satisfaction": 3,
        "actions": [
            {"action": "调整空调设定至 26℃", "owner": "物业 李工", "deadline": DEADLINE.isoformat()}
        ],
        **changes,
    }


def test_the_evaluated_share_is_zero_until_a_person_evaluates(
    conn: psycopg.Connection[Any], client: TestClient, manager: tuple[str, str]
) -> None:
    # The scheduler writes a report for every site of the quarter: that evaluates nothing.
    assert len(generate_due_reports(conn, "scheduler", NOW)) == 3
    before = site_statistics(conn, PUBLIC_SITE, Q3_START, Q3_END, NOW)
    assert "test.temp.max" in before.clauses_in_force
    assert before.evaluated_clauses == []
    assert before.evaluated_share == 0.0

    token, actor = manager
    made = client.post("/api/v1/evaluations", json=evaluation_body(), headers=auth(token))
    assert made.status_code == 201, made.text
    recorded = made.json()
    assert recorded["evaluated_by"] == actor
    assert [a["state"] for a in recorded["actions"]] == ["open"]

    after = site_statistics(conn, PUBLIC_SITE, Q3_START, Q3_END, NOW)
    assert after.evaluated_clauses == ["test.temp.max"]
    assert after.evaluated_share == pytest.approx(1 / len(after.clauses_in_force))
    # The quarter after is not evaluated by it.
    later = site_statistics(conn, PUBLIC_SITE, Q3_END, Q3_END + dt.timedelta(days=30), NOW)
    assert later.evaluated_share == 0.0
    kinds = conn.execute(
        "SELECT kind, payload::jsonb ->> 'actor' FROM ledger WHERE entity IN (%s, %s) ORDER BY seq",
        (f"evaluation:{recorded['id']}", f"action:{recorded['actions'][0]['id']}"),
    ).fetchall()
    assert kinds == [("evaluation.recorded", actor), ("evaluation.action_set", actor)]


def test_an_action_is_overdue_past_its_deadline_until_it_is_done(
    conn: psycopg.Connection[Any], client: TestClient, manager: tuple[str, str]
) -> None:
    evaluation = record_evaluation(
        conn,
        site=PUBLIC_SITE,
        clause_id="test.temp.max",
        period="2026Q3",
        method="survey",
        findings="问卷 40 份，满意度一般",
        satisfaction=2,
        actions=[PlannedAction("更换二号办公室温控器", "物业 李工", DEADLINE)],
        actor="token:9 (评价员)",
        now=NOW - dt.timedelta(days=40),
    )
    conn.commit()
    action_id = evaluation.actions[0].id
    window = (Q3_START, Q3_END + dt.timedelta(days=90))

    in_time = site_statistics(conn, PUBLIC_SITE, *window, DEADLINE - dt.timedelta(hours=1))
    assert [(a.id, a.overdue) for a in in_time.open_actions] == [(action_id, False)]
    assert in_time.overdue_actions == 0
    late = site_statistics(conn, PUBLIC_SITE, *window, DEADLINE + dt.timedelta(days=1))
    assert [(a.id, a.overdue) for a in late.open_actions] == [(action_id, True)]
    assert late.overdue_actions == 1
    # The quarter's report, made after the deadline, lists the evaluation and the overdue action.
    report_id, report = generate_report(conn, PUBLIC_SITE, "2026Q3", "test", NOW)
    conn.commit()
    assert [(e.id, e.actions[0].overdue) for e in report.evaluations] == [(evaluation.id, True)]
    html, csv = conn.execute(
        "SELECT html, csv FROM evaluation_reports WHERE id = %s", (report_id,)
    ).fetchone() or ("", "")
    assert "问卷 40 份，满意度一般" in html and "更换二号办公室温控器" in html
    assert "逾期 overdue" in html and "问卷调查" in html
    assert f"improvement_action,{action_id},state,overdue" in csv
    token, actor = manager
    listed = client.get("/api/v1/evaluations", headers=auth(token)).json()
    assert [(a["id"], a["overdue"]) for e in listed for a in e["actions"]] == [(action_id, True)]

    done = client.patch(
        f"/api/v1/evaluations/actions/{action_id}",
        json={"state": "done", "note": "已更换，复测 25.8℃"},
        headers=auth(token),
    )
    assert done.status_code == 200, done.text
    closed = done.json()
    assert (closed["state"], closed["done_by"], closed["overdue"]) == ("done", actor, False)
    assert closed["note"] == "已更换，复测 25.8℃"
    twice = client.patch(
        f"/api/v1/evaluations/actions/{action_id}", json={"state": "done"}, headers=auth(token)
    )
    assert twice.status_code == 409  # who closed it and when stay as recorded
    after = site_statistics(
        conn, PUBLIC_SITE, *window, dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    )
    assert after.open_actions == [] and after.overdue_actions == 0
    entry = conn.execute(
        "SELECT kind, payload::jsonb ->> 'actor' FROM ledger WHERE entity = %s ORDER BY seq DESC",
        (f"action:{action_id}",),
    ).fetchone()
    assert entry == ("evaluation.action_done", actor)


def test_scope_roles_and_bad_input(
    conn: psycopg.Connection[Any],
    client: TestClient,
    manager: tuple[str, str],
    register_db_url: str,
) -> None:
    token, _ = manager
    other = client.post(
        "/api/v1/evaluations", json=evaluation_body(site=PRIVATE_SITE), headers=auth(token)
    )
    assert other.status_code == 403
    with psycopg.connect(register_db_url) as setup:
        viewer, _ = create_token(setup, "viewer", (PUBLIC_SITE,), "viewer of pub-site")
    assert (
        client.post("/api/v1/evaluations", json=evaluation_body(), headers=auth(viewer)).status_code
        == 403
    )
    hidden = record_evaluation(
        conn,
        site=PRIVATE_SITE,
        clause_id="test.temp.max",
        period="2026Q3",
        method="records",
        findings="记录齐全",
        satisfaction=5,
        actions=[PlannedAction("补充巡检记录", "张三", DEADLINE)],
        actor="test",
        now=NOW,
    )
    conn.commit()
    patched = client.patch(
        f"/api/v1/evaluations/actions/{hidden.actions[0].id}",
        json={"state": "done"},
        headers=auth(token),
    )
    assert patched.status_code == 404
    assert client.get(f"/api/v1/evaluations/{hidden.id}", headers=auth(token)).status_code == 404
    assert client.get("/api/v1/evaluations", headers=auth(token)).json() == []
    for field, bad in (
        ("clause_id", "no.such.clause"),
        ("period", "2099Q1"),
        ("satisfaction", 6),
        ("method", "guess"),
        ("findings", "   "),
    ):
        answer = client.post(
            "/api/v1/evaluations", json=evaluation_body(**{field: bad}), headers=auth(token)
        )
        assert answer.status_code == 422, (field, answer.text)
        assert field in answer.text
    naive = evaluation_body(actions=[{"action": "x", "owner": "y", "deadline": "2026-10-31T18:00"}])
    assert client.post("/api/v1/evaluations", json=naive, headers=auth(token)).status_code == 422
