"""The evidence of an alert as its clause judges it (issue 19), through GET /alerts/{id} against
real PostgreSQL: a monthly electricity quota shows consumption per day per m² against the
kWh/m² limit (not the meter's register), with a meter replacement counted as nothing; an
obligation shows when the task was last done, when it was due, how long it was overdue and the
task's events from every source; a threshold alert names the raw reading at its worst value.
Every expected number is worked out by hand in the test."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.types.json import Jsonb

from api.tokens import create_token
from rules.site import SiteModel
from store import registry
from store.batches import EventRow, ReadingRow, write_events, write_readings
from tests.api.conftest import T0, add_timeline, auth, insert_alert

pytestmark = pytest.mark.integration

SITE = "site-e"
CST = dt.timezone(dt.timedelta(hours=8))


def evidence_site() -> SiteModel:
    """A building of 1000 m² with its main electricity meter, a lift and a public toilet."""
    return SiteModel.model_validate(
        {
            "site": {"id": SITE, "name": "证据楼", "timezone": "Asia/Shanghai"},
            "spaces": [
                {"id": "bldg", "type": "building", "area_m2": 1000},
                {"id": "lift-1", "type": "elevator", "parent": "bldg", "name": "1号电梯"},
                {"id": "lift-2", "type": "elevator", "parent": "bldg"},
                {"id": "wc-1", "type": "toilet", "parent": "bldg", "name": "一层卫生间"},
            ],
            "devices": [
                {
                    "id": "em-1",
                    "space": "bldg",
                    "metrics": {
                        "energy_kwh": {
                            "unit": "kWh",
                            "cumulative": True,
                            "carrier": "electricity",
                            "max_gap": "1d",
                        }
                    },
                },
                {"id": "lift-ctl-1", "space": "lift-1", "metrics": {"load": {"unit": "kg"}}},
            ],
        }
    )


@pytest.fixture(scope="module")
def evidence_token(api_database_url: str) -> str:
    with psycopg.connect(api_database_url) as conn:
        registry.sync_site(conn, evidence_site(), actor="test", now=T0)
        token, _ = create_token(conn, "viewer", (SITE,), "evidence test")
    return token


def evidence_alert(
    conn: psycopg.Connection[Any],
    *,
    clause: str,
    space: str,
    device: str | None,
    metric: str | None,
    started_at: dt.datetime,
    ended_at: dt.datetime | None,
    worst: float | None,
    unit: str | None,
    params: dict[str, float],
    evidence: list[dict[str, Any]],
) -> int:
    """An alert of `clause` as alerts/record.py records the engine's output."""
    row = conn.execute(
        "INSERT INTO alerts (site, clause_id, clause_version, content_hash, standard, number,"
        " title, domain, key, kind, severity, space, device, metric, reason, state, started_at,"
        " ended_at, confirmed_at, worst_value, unit, params, evidence, updated_at)"
        " SELECT %(site)s, clause_id, version, content_hash, standard_code, number, title,"
        " domain, key, 'violation', 'warning', %(space)s, %(device)s, %(metric)s, 'test',"
        " %(state)s, %(at)s, %(ended)s, %(at)s, %(worst)s, %(unit)s, %(params)s, %(evidence)s,"
        " %(at)s FROM clause_versions WHERE clause_id = %(clause)s"
        " ORDER BY version DESC LIMIT 1 RETURNING id",
        {
            "site": SITE,
            "space": space,
            "device": device,
            "metric": metric,
            "state": "firing" if ended_at is None else "resolved",
            "at": started_at,
            "ended": ended_at,
            "worst": worst,
            "unit": unit,
            "params": Jsonb(params),
            "evidence": Jsonb(evidence),
            "clause": clause,
        },
    ).fetchone()
    assert row is not None
    add_timeline(conn, row[0], SITE, "raised", started_at)
    return int(row[0])


def meter_readings(conn: psycopg.Connection[Any], points: list[tuple[dt.datetime, float]]) -> None:
    write_readings(
        conn,
        [
            ReadingRow(SITE, "em-1", "energy_kwh", at.timestamp(), value, None, at.timestamp())
            for at, value in points
        ],
    )


def subject_event(
    at: dt.datetime,
    kind: str,
    *,
    device: str,
    space: str | None,
    actor: str | None = None,
    attrs: dict[str, Any] | None = None,
) -> EventRow:
    return EventRow(
        SITE, device, at.timestamp(), kind, space, actor, None, attrs or {}, at.timestamp()
    )


JULY = dt.datetime(2026, 7, 1, tzinfo=CST)  # the month of the quota alert, in the site's zone
DAY = dt.timedelta(days=1)
LAST = dt.datetime(2026, 6, 14, 10, 0, tzinfo=CST)  # the lift was last maintained
DUE = LAST + dt.timedelta(days=15)  # every 15 d, no schedule, no grace
DONE = DUE + dt.timedelta(days=2, hours=6, minutes=30)  # maintained again


def quota_alert(conn: psycopg.Connection[Any]) -> int:
    """The meter's July register (a replacement on the 3rd) and the monthly quota's alert."""
    july, day = JULY, DAY
    meter_readings(
        conn,
        [
            (july - dt.timedelta(hours=6), 9_900.0),  # June: only the edge's neighbour
            (july, 10_000.0),
            (july + day, 12_000.0),  # 1 July: 2000 kWh = 2.0 kWh/m²
            (july + 2 * day, 15_000.0),  # 2 July: 3000 kWh = 3.0 kWh/m²
            # 3 July: the meter is replaced at noon (register back to 100): the morning
            # counts nothing, the afternoon 1000 kWh = 1.0 kWh/m².
            (july + 2 * day + dt.timedelta(hours=12), 100.0),
            (july + 3 * day, 1_100.0),
            (july + 3 * day + dt.timedelta(hours=6), 1_600.0),  # after the alert's end
        ],
    )
    return evidence_alert(
        conn,
        clause="energy.electricity.monthly",
        space="bldg",
        device="em-1",
        metric="energy_kwh",
        started_at=july + 2 * day + dt.timedelta(hours=20),
        ended_at=july + 3 * day,
        worst=6_000.0,  # the engine's consumption of the month, in kWh
        unit="kWh",
        params={"limit": 5.62, "area_m2": 1000.0, "budget": 5620.0},
        evidence=[],
    )


def lift_alert(conn: psycopg.Connection[Any]) -> int:
    """The lift's maintenance events from its controller and a check-in, and the overdue
    maintenance alert they show."""
    last, due, done = LAST, DUE, DONE
    write_events(
        conn,
        [
            # The controller of lift-1 (its events name no space: the device's counts).
            subject_event(
                last - dt.timedelta(days=14),
                "maintenance.done",
                device="lift-ctl-1",
                space=None,
            ),
            # A check-in by a person on the lift's page, with a note.
            subject_event(
                last,
                "maintenance.done",
                device="checkin",
                space="lift-1",
                actor="user:li",
                attrs={"note": "润滑、调整"},
            ),
            subject_event(done, "maintenance.done", device="lift-ctl-1", space=None),
            # Not this lift's task: another type, another lift, too early.
            subject_event(
                last + dt.timedelta(days=3),
                "cleaning.completed",
                device="checkin",
                space="lift-1",
            ),
            subject_event(
                last + dt.timedelta(days=4),
                "maintenance.done",
                device="checkin",
                space="lift-2",
            ),
            subject_event(
                last - dt.timedelta(days=40),
                "maintenance.done",
                device="checkin",
                space="lift-1",
            ),
        ],
    )
    return evidence_alert(
        conn,
        clause="elevator.maintenance",
        space="lift-1",
        device=None,
        metric=None,
        started_at=due,
        ended_at=done,
        worst=None,
        unit=None,
        params={},
        # What the engine keeps: the last event it judged with (rules/_obligations.py).
        evidence=[
            {
                "ts": last.timestamp(),
                "device": "lift-1",
                "metric": "maintenance.done",
                "value": 1.0,
            }
        ],
    )


def test_a_monthly_electricity_quota_shows_daily_consumption_per_m2_against_its_limit(
    api_database_url: str, client: TestClient, evidence_token: str
) -> None:
    july, day = JULY, DAY
    with psycopg.connect(api_database_url) as conn:
        alert = quota_alert(conn)
    body = client.get(f"/api/v1/alerts/{alert}", headers=auth(evidence_token)).json()
    meter = body["meter"]
    assert body["obligation"] is None and body["worst_reading"] is None
    assert meter["unit"] == "kWh/m²" and meter["register_unit"] == "kWh"
    assert meter["area_m2"] == 1000.0 and meter["limit"] == pytest.approx(5.62)
    assert meter["period"] == "month" and meter["bucket"] == "day"
    assert dt.datetime.fromisoformat(meter["period_start"]) == july
    assert dt.datetime.fromisoformat(meter["period_end"]) == dt.datetime(2026, 8, 1, tzinfo=CST)
    starts = [dt.datetime.fromisoformat(b["start"]) for b in meter["buckets"]]
    assert starts == [july, july + day, july + 2 * day]
    assert [b["value"] for b in meter["buckets"]] == pytest.approx([2.0, 3.0, 1.0])
    assert [b["cumulative"] for b in meter["buckets"]] == pytest.approx([2.0, 5.0, 6.0])
    assert not any(b["estimated"] for b in meter["buckets"])  # every reading on an edge
    assert [dt.datetime.fromisoformat(r) for r in meter["resets"]] == [
        july + 2 * day + dt.timedelta(hours=12)
    ]
    assert meter["missing_hours"] == pytest.approx(12.0)  # the morning across the replacement
    assert meter["gaps"] == []


def test_an_overdue_lift_maintenance_shows_last_done_due_and_overdue_by(
    api_database_url: str, client: TestClient, evidence_token: str
) -> None:
    last, due, done = LAST, DUE, DONE
    with psycopg.connect(api_database_url) as conn:
        alert = lift_alert(conn)
    body = client.get(f"/api/v1/alerts/{alert}", headers=auth(evidence_token)).json()
    duty = body["obligation"]
    assert body["meter"] is None
    assert duty["event"] == "maintenance.done" and duty["every_s"] == 15 * 86_400
    assert duty["per"] is None and duty["grace_s"] == 0
    assert dt.datetime.fromisoformat(duty["last_done_at"]) == last
    assert dt.datetime.fromisoformat(duty["due_at"]) == due
    assert dt.datetime.fromisoformat(duty["done_at"]) == done
    assert duty["overdue_s"] == 2 * 86_400 + 6 * 3600 + 30 * 60  # 2 d 6 h 30 min
    # The window: one cadence (15 d) before the last done time to 15 d after the end.
    assert dt.datetime.fromisoformat(duty["since"]) == last - dt.timedelta(days=15)
    assert dt.datetime.fromisoformat(duty["until"]) == done + dt.timedelta(days=15)
    events = [
        (dt.datetime.fromisoformat(e["ts"]), e["device"], e["actor"], e["attrs"])
        for e in duty["events"]
    ]
    assert events == [
        (last - dt.timedelta(days=14), "lift-ctl-1", None, {}),
        (last, "checkin", "user:li", {"note": "润滑、调整"}),
        (done, "lift-ctl-1", None, {}),
    ]


def test_an_open_cleaning_obligation_is_overdue_until_now_from_its_last_stored_event(
    api_database_url: str, client: TestClient, evidence_token: str
) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    cleaned = now - dt.timedelta(hours=5)
    due = now - dt.timedelta(hours=3)
    with psycopg.connect(api_database_url) as conn:
        cleaning = subject_event(cleaned, "cleaning.completed", device="checkin", space="wc-1")
        write_events(conn, [cleaning])
        alert = evidence_alert(
            conn,
            clause="toilet.cleaning",
            space="wc-1",
            device=None,
            metric=None,
            started_at=due,
            ended_at=None,
            worst=None,
            unit=None,
            params={},
            evidence=[],  # judging began with no event: the engine kept none
        )
    before = dt.datetime.now(dt.UTC)
    body = client.get(f"/api/v1/alerts/{alert}", headers=auth(evidence_token)).json()
    after = dt.datetime.now(dt.UTC)
    duty = body["obligation"]
    assert dt.datetime.fromisoformat(duty["last_done_at"]) == cleaned
    assert duty["done_at"] is None and duty["grace_s"] == 15 * 60
    until = dt.datetime.fromisoformat(duty["overdue_until"])
    assert before <= until <= after  # overdue until now
    assert duty["overdue_s"] == pytest.approx((until - due).total_seconds())
    assert [e["type"] for e in duty["events"]] == ["cleaning.completed"]


def test_a_threshold_alert_names_the_raw_reading_at_its_worst_value(
    api_database_url: str, client: TestClient, tokens: dict[tuple[str, str], str]
) -> None:
    start = T0 + dt.timedelta(days=30)
    with psycopg.connect(api_database_url) as conn:
        write_readings(
            conn,
            [
                ReadingRow("site-a", "th-1", "temperature", (start + m).timestamp(), v, None, 0)
                for m, v in [
                    (dt.timedelta(minutes=-30), 20.0),  # before the alert: not its worst
                    (dt.timedelta(minutes=0), 24.5),
                    (dt.timedelta(minutes=40), 24.12),  # the worst, as 24.1 in its precision
                    (dt.timedelta(minutes=41), 24.3),
                ]
            ],
        )
        alert = insert_alert(conn, "site-a", started_at=start)  # worst 24.1 °C
        conn.execute(
            "UPDATE alerts SET state = 'resolved', ended_at = %s WHERE id = %s",
            (start + dt.timedelta(hours=1), alert),
        )
    body = client.get(f"/api/v1/alerts/{alert}", headers=auth(tokens[("viewer", "site-a")]))
    worst = body.json()["worst_reading"]
    assert worst["value"] == 24.12 and worst["metric"] == "temperature"
    assert dt.datetime.fromisoformat(worst["ts"]) == start + dt.timedelta(minutes=40)
    assert body.json()["meter"] is None and body.json()["obligation"] is None


def test_a_data_quality_alert_names_the_raw_reading_it_is_about(
    api_database_url: str, client: TestClient, tokens: dict[tuple[str, str], str]
) -> None:
    start = T0 + dt.timedelta(days=40)
    with psycopg.connect(api_database_url) as conn:
        write_readings(
            conn,
            [
                ReadingRow("site-a", "th-1", "temperature", (start + m).timestamp(), v, None, 0)
                for m, v in [
                    (dt.timedelta(minutes=0), 23.0),
                    (dt.timedelta(minutes=2), 85.0),  # out of the sensor's range [-20, 60]
                    (dt.timedelta(minutes=3), 23.1),
                ]
            ],
        )
        alert = insert_alert(conn, "site-a", started_at=start, clause_id="dq.climate.range")
        conn.execute("UPDATE alerts SET worst_value = 85.0 WHERE id = %s", (alert,))
    body = client.get(f"/api/v1/alerts/{alert}", headers=auth(tokens[("viewer", "site-a")]))
    worst = body.json()["worst_reading"]
    assert worst["value"] == 85.0
    assert dt.datetime.fromisoformat(worst["ts"]) == start + dt.timedelta(minutes=2)
