"""People acting on alerts: each transition, and each refused one with its 4xx class."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest

from alerts.lifecycle import (
    AlertNotFound,
    IncompleteInput,
    TransitionRefused,
    acknowledge,
    close,
)
from alerts.record import record_outputs
from store import ledger
from tests.alerts.conftest import T0, ended, site_model, started

pytestmark = pytest.mark.integration

START = T0
END = T0 + dt.timedelta(minutes=45)


def _raise(conn: psycopg.Connection[Any], *, resolved: bool) -> int:
    outputs: list[Any] = [started(START)]
    if resolved:
        outputs.append(ended(END, START))
    return record_outputs(conn, site_model(), outputs, now=START).alert_ids[0]


def _actions(conn: psycopg.Connection[Any], alert_id: int) -> list[tuple[str, str]]:
    return conn.execute(
        "SELECT action, actor FROM alert_timeline WHERE alert_id = %s ORDER BY id", (alert_id,)
    ).fetchall()


def test_acknowledge_resolve_close(registered: psycopg.Connection[Any]) -> None:
    conn = registered
    alert_id = _raise(conn, resolved=False)
    acked = acknowledge(
        conn, alert_id, "wang", "已通知物业调高设定温度", now=START + dt.timedelta(minutes=20)
    )
    assert (acked["state"], acked["acknowledged_by"]) == ("acknowledged", "wang")
    record_outputs(conn, site_model(), [ended(END, START)], now=END)
    closed = close(
        conn,
        alert_id,
        "wang",
        "空调面板被调到22℃",
        "恢复26℃并锁定面板",
        now=END + dt.timedelta(hours=2),
    )
    assert (closed["state"], closed["cause"], closed["corrective_action"]) == (
        "closed",
        "空调面板被调到22℃",
        "恢复26℃并锁定面板",
    )
    assert _actions(conn, alert_id) == [
        ("raised", "engine"),
        ("acknowledged", "wang"),
        ("resolved", "engine"),
        ("closed", "wang"),
    ]
    kinds = conn.execute(
        "SELECT kind FROM ledger WHERE entity = %s ORDER BY seq", (f"alert:{alert_id}",)
    ).fetchall()
    assert [k[0] for k in kinds] == [
        "alert.raised",
        "alert.acknowledged",
        "alert.resolved",
        "alert.closed",
    ]
    assert ledger.verify(conn).ok


def test_an_alert_can_resolve_before_it_is_acknowledged(
    registered: psycopg.Connection[Any],
) -> None:
    alert_id = _raise(registered, resolved=True)
    acked = acknowledge(registered, alert_id, "wang", "", now=END + dt.timedelta(minutes=1))
    assert (acked["state"], acked["acknowledged_by"]) == ("resolved", "wang")


def test_close_needs_both_cause_and_corrective_action(
    registered: psycopg.Connection[Any],
) -> None:
    alert_id = _raise(registered, resolved=True)
    later = END + dt.timedelta(hours=2)
    with pytest.raises(IncompleteInput) as no_cause:
        close(registered, alert_id, "wang", "  ", "恢复26℃", now=later)
    assert no_cause.value.fields == ("cause",) and no_cause.value.http_status == 422
    with pytest.raises(IncompleteInput) as neither:
        close(registered, alert_id, "wang", None, "", now=later)
    assert neither.value.fields == ("cause", "corrective_action")


def test_close_of_a_firing_alert_is_refused(registered: psycopg.Connection[Any]) -> None:
    alert_id = _raise(registered, resolved=False)
    with pytest.raises(TransitionRefused, match="still firing") as refused:
        close(registered, alert_id, "wang", "原因", "措施", now=END)
    assert refused.value.http_status == 409


def test_close_before_reverification_is_refused_then_accepted(
    registered: psycopg.Connection[Any],
) -> None:
    alert_id = _raise(registered, resolved=True)
    too_early = END + dt.timedelta(minutes=59)  # reverify_for is 1 h
    with pytest.raises(TransitionRefused, match="requires 1 h of compliance") as refused:
        close(registered, alert_id, "wang", "原因", "措施", now=too_early)
    assert "possible from" in refused.value.message
    closed = close(registered, alert_id, "wang", "原因", "措施", now=END + dt.timedelta(hours=1))
    assert closed["state"] == "closed"


def test_reverification_reads_the_compliance_intervals(
    registered: psycopg.Connection[Any],
) -> None:
    conn = registered
    alert_id = _raise(conn, resolved=True)
    # After the resolution: 30 min compliant, then 2 h of no data (not assessable).
    for start, minutes, status in (
        (END, 30, "compliant"),
        (END + dt.timedelta(minutes=30), 120, "not_assessable"),
    ):
        conn.execute(
            "INSERT INTO compliance_intervals (site, clause_id, clause_version, content_hash,"
            " space, device, start_ts, end_ts, status)"
            " VALUES ('alerts-hq', 'temp.cooling.min', 1, 'h', 'b1-2f-201', 'th-201', %s, %s, %s)",
            (start, start + dt.timedelta(minutes=minutes), status),
        )
    with pytest.raises(TransitionRefused, match="30 min of compliant time"):
        close(conn, alert_id, "wang", "原因", "措施", now=END + dt.timedelta(hours=3))


def test_a_new_violation_after_resolution_blocks_closing(
    registered: psycopg.Connection[Any],
) -> None:
    conn = registered
    alert_id = _raise(conn, resolved=True)
    # Past the reopen window, so it is a new alert rather than a reopen.
    again = END + dt.timedelta(hours=2)
    record_outputs(conn, site_model(), [started(again)], now=again)
    with pytest.raises(TransitionRefused, match="violated the clause again"):
        close(conn, alert_id, "wang", "原因", "措施", now=again + dt.timedelta(hours=2))


def test_ack_of_a_closed_alert_and_second_ack_are_refused(
    registered: psycopg.Connection[Any],
) -> None:
    conn = registered
    alert_id = _raise(conn, resolved=False)
    acknowledge(conn, alert_id, "wang", "收到", now=START + dt.timedelta(minutes=20))
    with pytest.raises(TransitionRefused, match="already acknowledged by wang"):
        acknowledge(conn, alert_id, "li", "", now=START + dt.timedelta(minutes=21))
    record_outputs(conn, site_model(), [ended(END, START)], now=END)
    close(conn, alert_id, "wang", "原因", "措施", now=END + dt.timedelta(hours=1))
    with pytest.raises(TransitionRefused, match="closed alert cannot be acknowledged"):
        acknowledge(conn, alert_id, "wang", "", now=END + dt.timedelta(hours=2))
    with pytest.raises(TransitionRefused, match="already closed"):
        close(conn, alert_id, "wang", "原因", "措施", now=END + dt.timedelta(hours=2))


def test_unknown_alert_and_missing_actor(registered: psycopg.Connection[Any]) -> None:
    with pytest.raises(AlertNotFound) as missing:
        acknowledge(registered, 999, "wang", "", now=END)
    assert missing.value.http_status == 404
    with pytest.raises(IncompleteInput):
        acknowledge(registered, 999, " ", "", now=END)
