"""Overdue improvement actions escalate (限期整改, issue 21): when the deadline passes the
action's owner is told, then the site's escalation chain level by level after the configured
delays, through the notification queue and channels of alerts (here e-mail to a real SMTP
server, aiosmtpd, and the signed webhook to a local HTTP receiver). Each step is a ledger entry;
closing the action stops it (a queued message is withheld); the step is written in the
transaction that queues its messages, so running again, or in a new process, sends nothing
twice. Real PostgreSQL throughout."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import http.server
import socket
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session
from pydantic import ValidationError

from alerts import messages, notify, webhooks
from clausewatch.service import escalate_actions
from clausewatch.settings import Settings
from compliance.evaluations import PlannedAction, record_evaluation, update_action
from config import BUNDLED_DIR
from config.files import load_clause_file
from rules.site import SiteModel
from store.checkpoints import save_checkpoint
from store.migrate import migrate
from store.pool import connect
from store.registry import sync_clauses, sync_site
from tests.compliance.conftest import clause_file_with
from tests.support import serve_http, throwaway_database

pytestmark = pytest.mark.integration

SITE = "act-site"
SHANGHAI = dt.timezone(dt.timedelta(hours=8))
SYNCED_AT = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
EVALUATED_AT = dt.datetime(2026, 10, 10, 2, 0, tzinfo=dt.UTC)
DEADLINE = dt.datetime(2026, 10, 31, 18, 0, tzinfo=SHANGHAI)
DELAYS = (dt.timedelta(days=2), dt.timedelta(days=5))
BASE = "https://cw.example.cn"
SENDER = "actions@cw.example.cn"
WEBHOOK_SECRET = "action-webhook-secret-0123456789"


def _site() -> SiteModel:
    return SiteModel.model_validate(
        {
            "site": {"id": SITE, "name": "整改楼", "timezone": "Asia/Shanghai"},
            "spaces": [
                {"id": "b1", "type": "building"},
                {"id": "office-1", "type": "office", "parent": "b1", "name": "一号办公室"},
            ],
            "devices": [
                {
                    "id": "th-1",
                    "space": "office-1",
                    "metrics": {"temperature": {"unit": "°C", "range": [-20, 60]}},
                }
            ],
            "parties": [
                {
                    "id": "li",
                    "name": "李工",
                    "contacts": {"email": "li@cw.example.cn", "webhook": "mail"},
                },
                {
                    "id": "zhao",
                    "name": "赵科长",
                    "contacts": {"email": "zhao@cw.example.cn", "webhook": "mail"},
                },
                {
                    "id": "qian",
                    "name": "钱处长",
                    "contacts": {"email": "qian@cw.example.cn", "webhook": "mail"},
                },
            ],
            "assignments": [
                {"party": "li", "space": "b1", "valid_from": "2026-01-01T00:00:00+08:00"},
                {
                    "party": "zhao",
                    "space": "b1",
                    "role": "escalation",
                    "level": 1,
                    "valid_from": "2026-01-01T00:00:00+08:00",
                },
                {
                    "party": "qian",
                    "space": "b1",
                    "role": "escalation",
                    "level": 2,
                    "valid_from": "2026-01-01T00:00:00+08:00",
                },
            ],
        }
    )


class _Mailbox:
    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 OK"

    def recipients(self) -> list[str]:
        return [to for envelope in self.envelopes for to in envelope.rcpt_tos]


class _Receiver(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        assert self.headers["X-Clausewatch-Signature"]
        with self.server.lock:
            self.server.bodies.append(orjson.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture(scope="module")
def actions_db_url(pg_server_url: str) -> Iterator[str]:
    with throwaway_database(pg_server_url, "cw_actions") as url:
        migrate(url)
        with connect(url) as conn:
            sync_site(conn, _site(), "test", now=SYNCED_AT)
            files = [load_clause_file(p) for p in sorted((BUNDLED_DIR / "clauses").glob("*.yaml"))]
            sync_clauses(conn, [*files, clause_file_with()], "test", now=SYNCED_AT)
            webhooks.allow(conn, "127.0.0.1", "the tests' own receivers", "test", now=SYNCED_AT)
            conn.commit()
        yield url


@pytest.fixture
def smtp() -> Iterator[tuple[Controller, _Mailbox]]:
    mailbox = _Mailbox()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield controller, mailbox
    finally:
        controller.stop()


@pytest.fixture
def conn(
    actions_db_url: str, smtp: tuple[Controller, _Mailbox]
) -> Iterator[psycopg.Connection[Any]]:
    """The actions database emptied of history, with the e-mail target `mail` pointing at this
    test's SMTP server (the parties name it in contacts.webhook)."""
    controller, _ = smtp
    with connect(actions_db_url, autocommit=True) as admin:
        admin.execute(
            b"DELETE FROM notification_attempts; DELETE FROM notifications;"
            b" DELETE FROM improvement_actions; DELETE FROM evaluations;"
            b" DELETE FROM webhook_targets; DELETE FROM engine_checkpoints;"
        )
    with connect(actions_db_url) as connection:
        target = webhooks.Target(
            "mail",
            f"smtp://127.0.0.1:{controller.port}",
            "",
            site=SITE,
            broadcast=False,
            kind="email",
            options={"sender": SENDER, "starttls": False},
        )
        webhooks.add_target(connection, target, "test", now=SYNCED_AT)
        connection.commit()
        yield connection


def _action(conn: psycopg.Connection[Any], owner: str = "li") -> int:
    evaluation = record_evaluation(
        conn,
        site=SITE,
        clause_id="test.temp.max",
        period="2026Q3",
        method="inspection",
        findings="一号办公室下午温度偏高",
        satisfaction=2,
        actions=[PlannedAction("调整空调设定至 26℃", owner, DEADLINE)],
        actor="user:wang (王主任)",
        now=EVALUATED_AT,
    )
    conn.commit()
    return evaluation.actions[0].id


def _round(conn: psycopg.Connection[Any], now: dt.datetime) -> list[tuple[int, int]]:
    taken = escalate_actions(conn, "wall", [SITE], DELAYS, now=now)
    conn.commit()
    return taken


def _deliver(conn: psycopg.Connection[Any], now: dt.datetime) -> notify.DeliveryReport:
    return notify.deliver_due(conn, now, public_base_url=BASE)


def _steps(conn: psycopg.Connection[Any], action_id: int) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT kind, payload::jsonb ->> 'level', payload::jsonb #>> '{party,party}',"
        " payload::jsonb ->> 'actor' FROM ledger WHERE entity = %s AND kind LIKE 'action.%%'"
        " ORDER BY seq",
        (f"action:{action_id}",),
    ).fetchall()


def test_the_owner_is_told_at_the_deadline_then_the_chain_after_each_delay(
    conn: psycopg.Connection[Any], smtp: tuple[Controller, _Mailbox]
) -> None:
    _, mailbox = smtp
    action_id = _action(conn)
    assert _round(conn, DEADLINE - dt.timedelta(minutes=1)) == []

    past = DEADLINE + dt.timedelta(hours=1)
    assert _round(conn, past) == [(action_id, 0)]
    assert _deliver(conn, past).delivered == 1
    assert mailbox.recipients() == ["li@cw.example.cn"]
    message = email.message_from_bytes(
        mailbox.envelopes[0].original_content or b"", policy=email.policy.default
    )
    assert str(message["Subject"]).startswith("[整改逾期] 整改楼 (act-site)")
    body = message.get_content()
    for fact in (
        "调整空调设定至 26℃",
        "第九条 办公室室内温度不得高于28℃",
        "李工",
        "2026-10-31 18:00 (Asia/Shanghai, UTC+08:00)",
        f"{BASE}/statistics?site={SITE}",
    ):
        assert fact in body, fact

    # Not yet the first delay: nothing more, however often the job runs.
    assert _round(conn, DEADLINE + DELAYS[0] - dt.timedelta(minutes=1)) == []
    assert _round(conn, past) == []

    later = DEADLINE + DELAYS[0] + dt.timedelta(minutes=1)
    assert _round(conn, later) == [(action_id, 1)]
    assert _deliver(conn, later).delivered == 1
    assert mailbox.recipients()[1:] == ["zhao@cw.example.cn"]
    second = email.message_from_bytes(
        mailbox.envelopes[1].original_content or b"", policy=email.policy.default
    )
    assert str(second["Subject"]).startswith("[整改逾期升级] 整改楼 (act-site)")
    assert "赵科长 (第 1 级)" in second.get_content()

    assert _steps(conn, action_id) == [
        ("action.overdue", "0", "li", "escalation"),
        ("action.escalated", "1", "zhao", "escalation"),
    ]
    # Every attempt of each message has its own ledger entry, naming the action.
    delivered = conn.execute(
        "SELECT count(*) FROM ledger WHERE kind = 'notification.delivered'"
        " AND payload::jsonb ->> 'action' = %s",
        (str(action_id),),
    ).fetchone()
    assert delivered == (2,)


def test_a_service_that_was_down_catches_up_step_by_step(
    conn: psycopg.Connection[Any], smtp: tuple[Controller, _Mailbox]
) -> None:
    _, mailbox = smtp
    action_id = _action(conn)
    much_later = DEADLINE + dt.timedelta(days=30)
    assert _round(conn, much_later) == [(action_id, 0), (action_id, 1), (action_id, 2)]
    assert _deliver(conn, much_later).delivered == 3
    assert sorted(mailbox.recipients()) == [
        "li@cw.example.cn",
        "qian@cw.example.cn",
        "zhao@cw.example.cn",
    ]
    assert [step[:3] for step in _steps(conn, action_id)] == [
        ("action.overdue", "0", "li"),
        ("action.escalated", "1", "zhao"),
        ("action.escalated", "2", "qian"),
    ]
    # The chain has no more steps: nothing more, ever.
    assert _round(conn, much_later + dt.timedelta(days=300)) == []


def test_closing_the_action_stops_escalation_and_withholds_what_was_queued(
    conn: psycopg.Connection[Any], smtp: tuple[Controller, _Mailbox]
) -> None:
    _, mailbox = smtp
    action_id = _action(conn)
    past = DEADLINE + dt.timedelta(hours=1)
    assert _round(conn, past) == [(action_id, 0)]
    update_action(conn, action_id, "done", "已调整", "user:li (李工)", past)
    conn.commit()
    report = _deliver(conn, past)
    assert report.withheld == 1 and report.delivered == 0
    assert mailbox.envelopes == []
    state = conn.execute(
        "SELECT state, last_error FROM notifications WHERE action_id = %s", (action_id,)
    ).fetchone()
    assert state == ("withheld", "the action was closed before the message went")
    assert _round(conn, DEADLINE + dt.timedelta(days=30)) == []
    assert len(_steps(conn, action_id)) == 1

    # Reopened, it escalates again from where it stopped.
    update_action(conn, action_id, "open", "复查仍偏高", "user:wang (王主任)", past)
    conn.commit()
    assert _round(conn, DEADLINE + dt.timedelta(days=30)) == [(action_id, 1), (action_id, 2)]


def test_a_step_is_taken_once_across_restarts_and_rollbacks(
    conn: psycopg.Connection[Any], actions_db_url: str, smtp: tuple[Controller, _Mailbox]
) -> None:
    _, mailbox = smtp
    action_id = _action(conn)
    past = DEADLINE + dt.timedelta(hours=1)
    # A round that dies before its commit leaves neither the step nor a message.
    assert escalate_actions(conn, "wall", [SITE], DELAYS, now=past) == [(action_id, 0)]
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM notifications").fetchone() == (0,)
    assert _round(conn, past) == [(action_id, 0)]
    assert _deliver(conn, past).delivered == 1
    # A new process (its own connection) finds the step taken and the message sent.
    with connect(actions_db_url) as other:
        assert escalate_actions(other, "wall", [SITE], DELAYS, now=past) == []
        other.commit()
        assert notify.deliver_due(other, past, public_base_url=BASE).messages == 0
    assert mailbox.recipients() == ["li@cw.example.cn"]
    row = conn.execute(
        "SELECT overdue_step FROM improvement_actions WHERE id = %s", (action_id,)
    ).fetchone()
    assert row == (1,)


def test_an_owner_who_is_no_party_reaches_the_sites_broadcast_targets_as_signed_json(
    conn: psycopg.Connection[Any],
) -> None:
    receiver = _Receiver()
    with serve_http(receiver):
        webhooks.add_target(
            conn,
            webhooks.Target("ops", receiver.url(), WEBHOOK_SECRET, site=SITE, level=0),
            "test",
            now=SYNCED_AT,
        )
        conn.commit()
        action_id = _action(conn, owner="物业 周工")
        past = DEADLINE + dt.timedelta(hours=1)
        assert _round(conn, past) == [(action_id, 0)]
        assert _deliver(conn, past).delivered == 1
    (body,) = receiver.bodies
    assert body["event"] == "action_overdue"
    assert body["level"] == 0
    assert body["party"] is None
    assert body["action"]["id"] == action_id
    assert body["action"]["owner"] == "物业 周工"
    assert body["action"]["clause"]["id"] == "test.temp.max"
    assert dt.datetime.fromisoformat(body["action"]["deadline"]) == DEADLINE


def test_on_the_data_clock_each_site_escalates_at_its_own_data_time(
    conn: psycopg.Connection[Any],
) -> None:
    action_id = _action(conn)
    # No data time yet: no step, whatever the wall clock says.
    assert escalate_actions(conn, "data", [SITE], DELAYS) == []
    save_checkpoint(conn, SITE, {}, watermark=(DEADLINE + dt.timedelta(hours=1)).timestamp())
    conn.commit()
    assert escalate_actions(conn, "data", [SITE], DELAYS) == [(action_id, 0)]


def test_the_delays_are_configured_in_days_each_later_than_the_one_before() -> None:
    assert Settings().action_escalation_delays() == (dt.timedelta(days=3), dt.timedelta(days=7))
    configured = Settings(action_escalation_days=[1, 2.5])
    assert configured.action_escalation_delays() == (dt.timedelta(days=1), dt.timedelta(hours=60))
    for wrong in ([7, 3], [0], [1] * 9):
        with pytest.raises(ValidationError):
            Settings(action_escalation_days=wrong)


def test_an_action_notice_reads_in_english_for_an_english_target() -> None:
    payload = {
        "event": "action_escalated",
        "level": 1,
        "party": {"id": "zhao", "name": "赵科长", "kind": "person", "contacts": {}},
        "action": {
            "id": 7,
            "site": SITE,
            "evaluation": 3,
            "period": "2026Q3",
            "clause": {"id": "c", "standard": "TEST-1", "number": "第九条", "title": "温度"},
            "action": "调整空调\n设定",
            "owner": "李工",
            "deadline": DEADLINE.isoformat(),
        },
    }
    link = messages.action_link(BASE, SITE)
    text = messages.render_action(
        payload, timezone="Asia/Shanghai", link=link, language="en", site_name="整改楼"
    )
    assert text.title == "[Overdue improvement action escalated] 整改楼 (act-site) 第九条 温度"
    assert ("Improvement action", "调整空调 设定") in text.lines  # one line, whatever it holds
    assert ("Notified", "赵科长 (level 1)") in text.lines
    assert ("Deadline", "2026-10-31 18:00 (Asia/Shanghai, UTC+08:00)") in text.lines
    assert text.short.endswith(f"{BASE}/statistics?site={SITE}")
