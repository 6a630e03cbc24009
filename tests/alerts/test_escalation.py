"""Unacknowledged alerts go up the escalation ladder on the clause's schedule (clock injected),
and webhooks deliver with retries, every attempt recorded."""

from __future__ import annotations

import datetime as dt
import http.server
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import pytest

from alerts import notify, webhooks
from alerts.escalation import escalate_due
from alerts.lifecycle import acknowledge
from alerts.record import record_outputs
from clausewatch.service import escalate
from store import ledger
from store.registry import sync_site
from tests.alerts.conftest import SITE, T0, site_model, started, with_contacts
from tests.support import serve_http

pytestmark = pytest.mark.integration

CONFIRMED = T0 + dt.timedelta(minutes=15)  # started() confirms 15 min after the start


class Receiver(http.server.ThreadingHTTPServer):
    """A webhook receiver on 127.0.0.1 that answers 500 to the first `failures` posts."""

    def __init__(self, failures: int) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.failures = failures
        self.bodies: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.bodies.append(body)
            status = 500 if len(self.server.bodies) <= self.server.failures else 200
            self.server.statuses.append(status)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test asserts on what arrived."""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(failures=2)
    with serve_http(server):
        yield server


def _target(
    conn: psycopg.Connection[Any],
    url: str,
    level: int | None = None,
    *,
    name: str = "hook",
    broadcast: bool = True,
) -> None:
    """A target of the site; the tests' receivers are on loopback, so it is allow-listed."""
    target = webhooks.Target(name, url, "a-test-secret-0123456789", "alerts-hq", level, broadcast)
    webhooks.add_target(conn, target, "test", now=T0)
    webhooks.allow(conn, "127.0.0.1", "the tests' receivers", "test", now=T0)


def test_escalation_follows_the_policy_with_an_injected_clock(
    registered: psycopg.Connection[Any],
) -> None:
    conn = registered
    alert_id = record_outputs(conn, site_model(), [started(T0)], now=CONFIRMED).alert_ids[0]
    assert escalate_due(conn, CONFIRMED + dt.timedelta(minutes=29)) == []
    assert escalate_due(conn, CONFIRMED + dt.timedelta(minutes=30)) == [(alert_id, 1)]
    assert escalate_due(conn, CONFIRMED + dt.timedelta(minutes=31)) == []
    assert escalate_due(conn, CONFIRMED + dt.timedelta(hours=2)) == [(alert_id, 2)]
    (level,) = conn.execute(
        "SELECT escalation_level FROM alerts WHERE id = %s", (alert_id,)
    ).fetchone() or (None,)
    assert level == 2
    notes = conn.execute(
        "SELECT note FROM alert_timeline WHERE alert_id = %s AND action = 'escalated' ORDER BY id",
        (alert_id,),
    ).fetchall()
    assert notes == [
        ("unacknowledged for 30 min: escalated to level 1 (赵科长)",),
        ("unacknowledged for 120 min: escalated to level 2 (陈主任)",),
    ]
    assert ledger.verify(conn).ok


def test_on_the_data_clock_escalation_follows_the_sites_data_time(
    registered: psycopg.Connection[Any],
) -> None:
    """The demo's building lives on simulated time: its alerts were raised months before the
    wall clock, and must not be escalated by wall-clock minutes that never passed there."""
    conn = registered
    alert_id = record_outputs(conn, site_model(), [started(T0)], now=CONFIRMED).alert_ids[0]
    conn.commit()
    assert escalate(conn, "data", [SITE]) == []  # no data time yet: nothing moves
    data_time = CONFIRMED + dt.timedelta(minutes=20)
    conn.execute(
        "INSERT INTO engine_checkpoints (site, state, watermark) VALUES (%s, '{}', %s)",
        (SITE, data_time.timestamp()),
    )
    assert escalate(conn, "data", [SITE]) == []  # 20 simulated minutes: not yet level 1
    conn.execute(
        "UPDATE engine_checkpoints SET watermark = %s WHERE site = %s",
        ((CONFIRMED + dt.timedelta(minutes=30)).timestamp(), SITE),
    )
    assert escalate(conn, "data", [SITE]) == [(alert_id, 1)]
    assert escalate(conn, "wall", [SITE]) == [(alert_id, 2)]  # months later on the wall clock


def test_an_acknowledged_alert_does_not_escalate(registered: psycopg.Connection[Any]) -> None:
    conn = registered
    alert_id = record_outputs(conn, site_model(), [started(T0)], now=CONFIRMED).alert_ids[0]
    acknowledge(conn, alert_id, "wang", "处理中", now=CONFIRMED + dt.timedelta(minutes=10))
    assert escalate_due(conn, CONFIRMED + dt.timedelta(hours=3)) == []


def test_a_service_that_was_down_catches_up_level_by_level(
    registered: psycopg.Connection[Any],
) -> None:
    conn = registered
    alert_id = record_outputs(conn, site_model(), [started(T0)], now=CONFIRMED).alert_ids[0]
    _target(conn, "http://127.0.0.1:9/unused")
    taken = escalate_due(conn, CONFIRMED + dt.timedelta(hours=5))
    assert taken == [(alert_id, 1), (alert_id, 2)]
    parties = conn.execute(
        "SELECT level, party FROM notifications WHERE event = 'escalated' ORDER BY id"
    ).fetchall()
    assert parties == [(1, "zhao"), (2, "chen")]


def test_a_webhook_that_fails_twice_then_succeeds_has_three_attempts(
    registered: psycopg.Connection[Any], receiver: Receiver
) -> None:
    conn = registered
    _target(conn, receiver.url, level=0)
    alert_id = record_outputs(conn, site_model(), [started(T0)], now=CONFIRMED).alert_ids[0]
    conn.commit()
    now = CONFIRMED
    assert notify.deliver_due(conn, now).retrying == 1
    assert notify.deliver_due(conn, now).retrying == 0  # the retry is not due yet
    now += dt.timedelta(seconds=notify.BACKOFF_BASE_S)
    assert notify.deliver_due(conn, now).retrying == 1
    now += dt.timedelta(seconds=2 * notify.BACKOFF_BASE_S)
    assert notify.deliver_due(conn, now).delivered == 1
    attempts = conn.execute(
        "SELECT a.status, a.error, a.at FROM notification_attempts a"
        " JOIN notifications n ON n.id = a.notification_id WHERE n.alert_id = %s ORDER BY a.id",
        (alert_id,),
    ).fetchall()
    assert [(a[0], a[1]) for a in attempts] == [(500, "HTTP 500"), (500, "HTTP 500"), (200, None)]
    assert [a[2] for a in attempts] == [
        CONFIRMED,
        CONFIRMED + dt.timedelta(seconds=30),
        CONFIRMED + dt.timedelta(seconds=90),
    ]
    assert receiver.statuses == [500, 500, 200]
    body = receiver.bodies[-1]
    assert (body["event"], body["alert"]["id"], body["party"]["name"]) == (
        "raised",
        alert_id,
        "王工",
    )
    assert body["alert"]["clause"]["number"] == "第三条"
    (state,) = conn.execute("SELECT state FROM notifications").fetchone() or (None,)
    assert state == "delivered"


def test_a_webhook_that_never_answers_ends_failed_and_visible(
    registered: psycopg.Connection[Any],
) -> None:
    conn = registered
    _target(conn, "http://127.0.0.1:9/nobody-listens")  # the discard port: refused
    alert_id = record_outputs(conn, site_model(), [started(T0)], now=CONFIRMED).alert_ids[0]
    conn.commit()
    now = CONFIRMED
    for _ in range(notify.MAX_ATTEMPTS):
        notify.deliver_due(conn, now)
        now += dt.timedelta(days=1)
    row = conn.execute("SELECT state, attempts, last_error FROM notifications").fetchone()
    assert row is not None and row[:2] == ("failed", notify.MAX_ATTEMPTS)
    assert "ConnectError" in row[2]
    (note,) = conn.execute(
        "SELECT note FROM alert_timeline WHERE alert_id = %s AND action = 'notified'", (alert_id,)
    ).fetchone() or (None,)
    assert note.startswith(f"raised notice to level 0 failed after {notify.MAX_ATTEMPTS} attempts")
    assert conn.execute(
        "SELECT count(*) FROM ledger WHERE kind = 'notification.failed'"
    ).fetchone() == (1,)


def test_a_party_with_its_own_webhook_is_notified_there(
    registered: psycopg.Connection[Any], receiver: Receiver
) -> None:
    conn = registered
    receiver.failures = 0
    _target(conn, receiver.url, name="wang-phone", broadcast=False)
    sync_site(conn, with_contacts("wang", {"webhook": "wang-phone"}), "admin", now=T0)
    record_outputs(conn, site_model(), [started(T0)], now=CONFIRMED)
    conn.commit()
    assert notify.deliver_due(conn, CONFIRMED).delivered == 1
    row = conn.execute("SELECT target_id, target_name, state FROM notifications").fetchone()
    assert row == (1, "wang-phone", "delivered")
    assert receiver.bodies[0]["party"]["contacts"] == {"webhook": "wang-phone"}
