"""Engine outputs become alerts bound to who answers for them, with timeline and ledger."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import orjson
import psycopg
import pytest

from alerts.record import evidence_digest, evidence_intact, record_outputs
from rules.site import Assignment, SiteModel
from store import ledger
from store.pool import connect
from store.registry import add_assignment, end_assignment, sync_clauses, sync_site
from tests.alerts.conftest import T0, clause_file, clause_ref, ended, site_model, started

pytestmark = pytest.mark.integration


def _alert(conn: psycopg.Connection[Any], alert_id: int) -> dict[str, Any]:
    cur = conn.execute("SELECT * FROM alerts WHERE id = %s", (alert_id,))
    names = [c.name for c in cur.description or ()]
    row = cur.fetchone()
    assert row is not None
    return dict(zip(names, row, strict=True))


def _actions(conn: psycopg.Connection[Any], alert_id: int) -> list[str]:
    rows = conn.execute(
        "SELECT action FROM alert_timeline WHERE alert_id = %s ORDER BY id", (alert_id,)
    ).fetchall()
    return [r[0] for r in rows]


def test_sync_is_idempotent_and_records_changes(conn: psycopg.Connection[Any]) -> None:
    first = sync_site(conn, site_model(), "alice", now=T0)
    assert first.changes["space.added"] == 5
    assert first.changes["assignment.added"] == 3
    assert sync_site(conn, site_model(), "alice", now=T0).changed is False
    assert sync_clauses(conn, [clause_file()], "alice", now=T0).changes == {
        "clause_version.added": 1
    }
    assert sync_clauses(conn, [clause_file()], "alice", now=T0).changed is False
    changed = sync_clauses(conn, [clause_file(title="改过的标题")], "bob", now=T0)
    assert changed.changes == {"clause_version.changed": 1}
    kinds = [r[0] for r in conn.execute("SELECT kind FROM ledger ORDER BY seq").fetchall()]
    assert kinds.count("clause_version.changed") == 1
    assert ledger.verify(conn).ok


def test_binding_follows_a_reassignment_in_the_middle_of_a_day(
    registered: psycopg.Connection[Any],
) -> None:
    conn = registered
    noon = T0 + dt.timedelta(hours=4)  # 12:00 local
    (wang_row,) = conn.execute("SELECT id FROM assignments WHERE party = 'wang'").fetchall()
    end_assignment(conn, wang_row[0], noon, "admin", now=noon)
    li_assignment = add_assignment(
        conn,
        "alerts-hq",
        Assignment(party="li", space="b1-2f", valid_from=noon),
        "admin",
        now=noon,
    )
    morning, afternoon = T0 + dt.timedelta(hours=1), T0 + dt.timedelta(hours=6)
    result = record_outputs(
        conn,
        site_model(),
        [
            started(morning),
            ended(morning + dt.timedelta(minutes=40), morning),
            # Another subject, so the afternoon one is not a reopen of the morning one.
            started(afternoon, device="th-201b"),
        ],
        now=afternoon,
    )
    before, after = (_alert(conn, i) for i in result.alert_ids)
    assert (before["responsible_party"], before["responsible_name"]) == ("wang", "王工")
    assert (after["responsible_party"], after["responsible_name"]) == ("li", "李工")
    assert [c["party"] for c in after["escalation_chain"]] == ["zhao", "chen"]
    # A later reassignment never rewrites the snapshot.
    end_assignment(conn, li_assignment, afternoon, "admin", now=afternoon)
    assert _alert(conn, before["id"])["responsible_party"] == "wang"
    assert before["state"] == "resolved" and not before["unbound"]


def test_violation_without_a_responsible_party_is_flagged_unbound(
    registered: psycopg.Connection[Any],
) -> None:
    result = record_outputs(
        registered, site_model(), [started(T0, device="th-301", space="b1-3f-301")], now=T0
    )
    alert = _alert(registered, result.alert_ids[0])
    assert alert["unbound"] is True and alert["responsible_party"] is None
    assert [c["level"] for c in alert["escalation_chain"]] == [1, 2]


def test_refiring_within_the_window_reopens_instead_of_raising(
    registered: psycopg.Connection[Any],
) -> None:
    conn = registered
    first_start = T0
    first_end = T0 + dt.timedelta(minutes=30)
    result = record_outputs(
        conn, site_model(), [started(first_start), ended(first_end, first_start)], now=first_end
    )
    (alert_id,) = result.alert_ids
    again = first_end + dt.timedelta(minutes=20)  # within reopen_within (1 h)
    reopened = record_outputs(conn, site_model(), [started(again)], now=again)
    assert (reopened.raised, reopened.reopened, reopened.alert_ids) == (0, 1, [alert_id])
    alert = _alert(conn, alert_id)
    assert (alert["state"], alert["reopen_count"], alert["ended_at"]) == ("firing", 1, None)
    # A replayed start of what is already open changes nothing.
    assert record_outputs(conn, site_model(), [started(again)], now=again).ignored == 1
    later_end = again + dt.timedelta(minutes=10)
    record_outputs(conn, site_model(), [ended(later_end, again)], now=later_end)
    much_later = later_end + dt.timedelta(hours=2)
    fresh = record_outputs(conn, site_model(), [started(much_later)], now=much_later)
    assert fresh.raised == 1 and fresh.alert_ids != [alert_id]
    assert _actions(conn, alert_id) == ["raised", "resolved", "reopened", "resolved"]


def test_every_transition_is_in_the_ledger_with_the_evidence_hashed(
    registered: psycopg.Connection[Any],
) -> None:
    conn = registered
    result = record_outputs(conn, site_model(), [started(T0)], now=T0)
    alert = _alert(conn, result.alert_ids[0])
    (payload,) = conn.execute(
        "SELECT payload::jsonb FROM ledger WHERE entity = %s AND kind = 'alert.raised'",
        (f"alert:{alert['id']}",),
    ).fetchone() or (None,)
    assert payload["evidence_sha256"] == evidence_digest(alert)
    assert payload["clause"]["content_hash"] == clause_file().clauses[0].content_hash()
    assert payload["evidence"][0]["value"] == 24.1
    assert ledger.verify(conn).ok


def test_a_large_batch_is_recorded_in_one_call(registered: psycopg.Connection[Any]) -> None:
    outputs = []
    for i in range(500):
        at = T0 + dt.timedelta(minutes=i)
        outputs.append(started(at, device=f"d{i}"))
        if i % 2:
            outputs.append(ended(at + dt.timedelta(minutes=5), at, device=f"d{i}"))
    result = record_outputs(registered, site_model(), outputs, now=T0)
    assert (result.raised, result.resolved) == (500, 250)
    counts = registered.execute(
        "SELECT state, count(*) FROM alerts GROUP BY state ORDER BY state"
    ).fetchall()
    assert counts == [("firing", 250), ("resolved", 250)]
    assert ledger.verify(registered).checked >= 750


def test_changed_evidence_no_longer_matches_its_ledger_entry(
    registered: psycopg.Connection[Any],
) -> None:
    alert_id = record_outputs(registered, site_model(), [started(T0)], now=T0).alert_ids[0]
    assert evidence_intact(registered, alert_id) is True
    registered.execute(
        "UPDATE alerts SET evidence = jsonb_set(evidence, '{0,value}', '26.5') WHERE id = %s",
        (alert_id,),
    )
    assert evidence_intact(registered, alert_id) is False
    assert evidence_intact(registered, 999) is None


def test_each_timeline_row_wakes_the_live_stream(
    registered: psycopg.Connection[Any], alerts_db_url: str
) -> None:
    with connect(alerts_db_url, autocommit=True) as listener:
        listener.execute("LISTEN cw_alerts")
        record_outputs(registered, site_model(), [started(T0)], now=T0)
        registered.commit()
        (note,) = list(listener.notifies(timeout=10, stop_after=1))
    payload = orjson.loads(note.payload)
    assert (payload["site"], payload["action"]) == ("alerts-hq", "raised")
    (row_id,) = registered.execute("SELECT max(id) FROM alert_timeline").fetchone() or (None,)
    assert payload["id"] == row_id


def test_the_worst_value_is_kept_in_its_metrics_precision_and_unit(
    registered: psycopg.Connection[Any],
) -> None:
    """Issue 17: a worst value of 0.09000000000000005 (an average) and no unit reached every
    text. It is stored in the metric's precision (`decimals` of its MetricSpec, else six
    significant digits) with the metric's unit when the output has none."""
    model = site_model().model_dump(by_alias=True)
    model["devices"][1]["metrics"]["temperature"]["decimals"] = 1
    noisy = started(T0, value=0.09000000000000005)
    noisy = dataclasses.replace(noisy, unit=None)
    rounded = started(T0, device="th-301", space="b1-3f-301", value=24.149999)
    result = record_outputs(registered, SiteModel.model_validate(model), [noisy, rounded], now=T0)
    first, second = (_alert(registered, i) for i in result.alert_ids)
    assert (first["worst_value"], first["unit"]) == (0.09, "°C")
    assert (second["worst_value"], second["unit"]) == (24.1, "°C")


def test_a_room_cold_every_afternoon_is_one_alert_a_day_not_one_a_break(
    conn: psycopg.Connection[Any],
) -> None:
    """Flap control (issue 20): the gap reopen_within allows (1 h) is schedule time. The clause
    judges 08:30–12:00 and 14:00–17:30 (Asia/Shanghai; T0 is 08:00 on 1 July). Cold from
    11:00 until the lunch break ends the violation at 12:00, cold again from 14:00: the lunch
    break is outside the schedule, so no time passed, and the alert reopens. The next day's
    cold afternoon is 3.5 h of schedule time later (08:30–12:00): a new alert."""
    windows = [{"start": "08:30", "end": "12:00"}, {"start": "14:00", "end": "17:30"}]
    scheduled = clause_file(schedule={"windows": windows})
    sync_site(conn, site_model(), "test", now=T0 - dt.timedelta(days=30))
    sync_clauses(conn, [scheduled], "test", now=T0 - dt.timedelta(days=30))
    conn.commit()
    ref = clause_ref(scheduled.clauses[0])

    def hours(h: float) -> dt.datetime:
        return T0 + dt.timedelta(hours=h)

    def record(*outputs: Any) -> Any:
        outputs = tuple(dataclasses.replace(o, clause=ref) for o in outputs)
        return record_outputs(conn, site_model(), outputs, now=hours(40))

    morning = record(started(hours(3)), ended(hours(4), hours(3)))  # 11:00–12:00
    (alert_id,) = morning.alert_ids
    afternoon = record(started(hours(6)), ended(hours(9.5), hours(6)))  # 14:00–17:30
    assert (afternoon.raised, afternoon.reopened, afternoon.alert_ids) == (0, 1, [alert_id])
    next_day = record(started(hours(30)))  # 2 July 14:00
    assert next_day.raised == 1 and next_day.alert_ids != [alert_id]
    assert _actions(conn, alert_id) == ["raised", "resolved", "reopened", "resolved"]


class _Walked(list[Any]):
    """A site model's device list that counts the walks over it."""

    walks = 0

    def __iter__(self) -> Any:
        self.walks += 1
        return super().__iter__()


def test_recording_a_batch_does_not_walk_every_device_of_the_site(
    registered: psycopg.Connection[Any],
) -> None:
    """Issue 24: each batch carrying a violation's start or end went over every device of the
    site (to find its metric's unit and precision): 45.6 ms a batch at 100,000 devices, in the
    commit every alert waits for."""
    model = site_model()
    record_outputs(registered, model, [started(T0)], now=T0)
    devices = _Walked(model.devices)
    model.__dict__["devices"] = devices
    later = T0 + dt.timedelta(hours=1)
    result = record_outputs(
        registered,
        model,
        [ended(later, T0), started(later, device="th-301", space="b1-3f-301", value=24.149999)],
        now=later,
    )
    assert (result.raised, result.resolved) == (1, 1)
    assert _alert(registered, result.alert_ids[0])["unit"] == "°C"
    assert devices.walks == 0
