"""Alerts and their timelines against the ledger (`alerts.audit`, part of `ledger verify`): a whole
lifecycle, run as the service role, checks out; each change made behind the service's back in
SQL (as the owner could) is named, with the alert and the row."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from alerts import notify, webhooks
from alerts.audit import audit
from alerts.escalation import escalate_due
from alerts.lifecycle import acknowledge, close, comment, reassign
from alerts.record import record_outputs
from store import ledger
from store.pool import connect
from store.registry import sync_clauses, sync_site
from store.roles import DEFAULT_SERVICE_ROLE, as_role
from tests.alerts.conftest import CLEANUP, T0, clause_file, ended, site_model, started

pytestmark = pytest.mark.integration

CONFIRMED = T0 + dt.timedelta(minutes=15)  # started() confirms 15 min after the start


def lifecycle(conn: psycopg.Connection[Any]) -> int:
    """Every kind of step an alert takes: raised, escalated, notified (failed), acknowledged,
    commented, reassigned, resolved, reopened, resolved again, closed. Returns its id."""
    target = webhooks.Target("hook", "http://127.0.0.1:9/unused", "a-test-secret-0123456789")
    webhooks.add_target(conn, target, "test", now=T0)
    alert_id = record_outputs(conn, site_model(), [started(T0)], now=CONFIRMED).alert_ids[0]
    assert escalate_due(conn, CONFIRMED + dt.timedelta(minutes=30)) == [(alert_id, 1)]
    conn.commit()
    now = CONFIRMED + dt.timedelta(minutes=30)
    for _ in range(notify.MAX_ATTEMPTS + 2):  # loopback, not allow-listed: each ends failed
        notify.deliver_due(conn, now)
        now += dt.timedelta(minutes=20)
    acknowledge(conn, alert_id, "wang", "已通知物业", now=CONFIRMED + dt.timedelta(minutes=40))
    comment(conn, alert_id, "wang", "风机盘管待检修", now=CONFIRMED + dt.timedelta(minutes=45))
    reassign(
        conn, alert_id, "wang", "li", "暖通由李工负责", now=CONFIRMED + dt.timedelta(minutes=50)
    )
    first_end = T0 + dt.timedelta(hours=2)
    record_outputs(conn, site_model(), [ended(first_end, T0)], now=first_end)
    again = T0 + dt.timedelta(minutes=150)
    record_outputs(conn, site_model(), [started(again)], now=again + dt.timedelta(minutes=15))
    second_end = T0 + dt.timedelta(hours=3)
    record_outputs(conn, site_model(), [ended(second_end, again)], now=second_end)
    close(
        conn,
        alert_id,
        "wang",
        "空调面板被调到22℃",
        "恢复26℃并锁定面板",
        now=second_end + dt.timedelta(hours=2),
    )
    conn.commit()
    actions = [
        a
        for (a,) in conn.execute(
            "SELECT action FROM alert_timeline WHERE alert_id = %s ORDER BY id", (alert_id,)
        )
    ]
    assert set(actions) == {
        "raised",
        "escalated",
        "notified",
        "acknowledged",
        "commented",
        "reassigned",
        "resolved",
        "reopened",
        "closed",
    }
    return alert_id


@pytest.fixture
def lived(registered: psycopg.Connection[Any]) -> Iterator[tuple[psycopg.Connection[Any], int]]:
    """One alert through its whole life, and a second one raised, committed; then the owner's
    connection, with the triggers a tamperer would switch off switched off."""
    conn = registered
    alert_id = lifecycle(conn)
    record_outputs(conn, site_model(), [started(T0, device="th-301", space="b1-3f-301")], now=T0)
    conn.commit()
    assert audit(conn).ok
    conn.rollback()
    conn.execute("SET session_replication_role = replica")
    yield conn, alert_id


def problems(conn: psycopg.Connection[Any]) -> list[str]:
    conn.commit()
    result = audit(conn)
    conn.rollback()
    assert result.chain.ok  # the ledger itself is untouched: only the records changed
    assert not result.ok
    return result.records.problems


def test_a_whole_lifecycle_as_the_service_role_checks_out(alerts_db_url: str) -> None:
    with connect(alerts_db_url, autocommit=True) as admin:
        admin.execute(CLEANUP.encode())
    with connect(as_role(alerts_db_url, DEFAULT_SERVICE_ROLE)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (DEFAULT_SERVICE_ROLE,)
        sync_site(conn, site_model(), "test", now=T0 - dt.timedelta(days=30))
        sync_clauses(conn, [clause_file()], "test", now=T0 - dt.timedelta(days=30))
        conn.commit()
        lifecycle(conn)
        result = audit(conn)
    assert result.ok, result.problems()
    assert (result.records.alerts, result.records.problem_count) == (1, 0)
    assert result.records.timeline == result.records.entries >= 9


def test_a_changed_timeline_note_is_named(lived: tuple[psycopg.Connection[Any], int]) -> None:
    conn, alert_id = lived
    (row_id,) = conn.execute(
        "UPDATE alert_timeline SET note = '已处理' WHERE alert_id = %s AND action = 'escalated'"
        " RETURNING id",
        (alert_id,),
    ).fetchone() or (None,)
    [problem] = problems(conn)
    assert f"timeline row {row_id} of alert {alert_id} (escalated" in problem
    assert problem.endswith(": note")


def test_changed_timeline_data_and_actor_are_named(
    lived: tuple[psycopg.Connection[Any], int],
) -> None:
    conn, alert_id = lived
    conn.execute(
        "UPDATE alert_timeline SET actor = 'li',"
        " data = jsonb_set(data, '{cause}', '\"传感器故障\"')"
        " WHERE alert_id = %s AND action = 'closed'",
        (alert_id,),
    )
    conn.execute(
        "UPDATE alert_timeline SET data = data - 'error'"
        " WHERE alert_id = %s AND action = 'notified'",
        (alert_id,),
    )
    found = problems(conn)
    assert any("(closed" in p and p.endswith("actor, data.cause") for p in found)
    assert any("(notified" in p and p.endswith("data.error") for p in found)


def test_a_deleted_and_an_added_timeline_row_are_named(
    lived: tuple[psycopg.Connection[Any], int],
) -> None:
    conn, alert_id = lived
    conn.execute(
        "DELETE FROM alert_timeline WHERE alert_id = %s AND action = 'acknowledged'", (alert_id,)
    )
    conn.execute(
        "INSERT INTO alert_timeline (alert_id, site, at, action, actor, note)"
        " VALUES (%s, 'alerts-hq', %s, 'acknowledged', 'li', '早已处理')",
        (alert_id, T0 + dt.timedelta(minutes=16)),
    )
    found = problems(conn)
    assert len(found) == 2
    assert "(acknowledged at 2026-07-01 00:16:00+00:00) has no ledger entry" in found[0]
    assert "(alert.acknowledged of alert" in found[1] and "has no timeline row" in found[1]


def test_changed_evidence_and_an_edited_closing_are_named(
    lived: tuple[psycopg.Connection[Any], int],
) -> None:
    conn, alert_id = lived
    conn.execute(
        "UPDATE alerts SET evidence = jsonb_set(evidence, '{0,value}', '26.5'),"
        " closed_by = 'li', cause = '无' WHERE id = %s",
        (alert_id,),
    )
    found = problems(conn)
    assert f"alert {alert_id} differs from its alert.raised entry" in found[0]
    assert found[0].endswith("evidence (its hash)")
    assert found[1].endswith("what its ledger entries record: closed_by, cause")


def test_an_alert_reopened_behind_the_ledgers_back_is_named(
    lived: tuple[psycopg.Connection[Any], int],
) -> None:
    conn, alert_id = lived
    conn.execute(
        "UPDATE alerts SET state = 'resolved', closed_at = NULL, closed_by = NULL,"
        " cause = NULL, corrective_action = NULL, escalation_level = 0 WHERE id = %s",
        (alert_id,),
    )
    [problem] = problems(conn)
    assert problem.endswith(
        "state, escalation_level, closed_at, closed_by, cause, corrective_action"
    )


def test_a_responsible_party_changed_behind_the_ledgers_back_is_named(
    lived: tuple[psycopg.Connection[Any], int],
) -> None:
    conn, alert_id = lived
    row = conn.execute("SELECT responsible_party FROM alerts WHERE id = %s", (alert_id,))
    assert row.fetchone() == ("li",)  # reassigned in its ledger: that checks out
    conn.execute(
        "UPDATE alerts SET responsible_party = 'wang', responsible_name = '王工' WHERE id = %s",
        (alert_id,),
    )
    [problem] = problems(conn)
    assert problem.endswith("what its ledger entries record: responsible")


def test_an_alert_without_its_entry_and_a_deleted_alert_are_named(
    lived: tuple[psycopg.Connection[Any], int],
) -> None:
    conn, alert_id = lived
    other = alert_id + 1
    conn.execute("DELETE FROM alert_timeline WHERE alert_id = %s", (other,))
    conn.execute("DELETE FROM notifications WHERE alert_id = %s", (other,))
    conn.execute("DELETE FROM alerts WHERE id = %s", (other,))
    (forged,) = conn.execute(
        "INSERT INTO alerts (site, clause_id, clause_version, content_hash, standard, number,"
        " title, domain, kind, severity, space, state, started_at, confirmed_at, updated_at)"
        " SELECT site, clause_id, clause_version, content_hash, standard, number, title, domain,"
        " kind, 'minor', space, 'closed', started_at, confirmed_at, updated_at FROM alerts"
        " WHERE id = %s RETURNING id",
        (alert_id,),
    ).fetchone() or (None,)
    found = problems(conn)
    assert any(p.startswith(f"alert {other} is in the ledger") for p in found)
    assert any(p.startswith(f"alert {forged} has no alert.raised entry") for p in found)


def test_a_ledger_without_alerts_checks_out(conn: psycopg.Connection[Any]) -> None:
    ledger.append(conn, [ledger.Entry("site.created", "site:x", {"n": 1})], T0)
    conn.commit()
    result = audit(conn)
    assert result.ok and result.records.alerts == 0
