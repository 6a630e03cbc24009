"""Per-user subscriptions (issue 20): a named user's own routes to their own contact points,
through the deployment's e-mail target. Real PostgreSQL, a real SMTP server (aiosmtpd) on
loopback."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
from typing import Any

import orjson
import psycopg
import pytest
from aiosmtpd.controller import Controller

from alerts import notify, routing, subscriptions, webhooks
from alerts.record import record_outputs
from api import users
from store import quiet
from tests.alerts import test_channels
from tests.alerts.conftest import SITE, T0, site_model, started
from tests.alerts.test_channels import (
    CONFIRMED,
    EMAIL_OPTIONS,
    SMTP_PASSWORD,
    _Mailbox,
    _smtp_url,
)

ADDRESS = "li.hua@cw.example.cn"
smtp_server = test_channels.smtp_server  # the SMTP server on loopback (aiosmtpd)
sms_gateway = test_channels.sms_gateway  # an SMS gateway on loopback that checks its key


def _mail_target(conn: psycopg.Connection[Any], controller: Controller) -> None:
    """The deployment's SMTP channel: serves every site, broadcasts to no one."""
    webhooks.allow(conn, "127.0.0.1", "the tests' own receivers", "test", now=T0)
    options = {**EMAIL_OPTIONS, "starttls": False}
    target = webhooks.Target(
        "mail", _smtp_url(controller), SMTP_PASSWORD, site=None, level=None, broadcast=False,
        kind="email", options=options,
    )  # fmt: skip
    webhooks.add_target(conn, target, "test", now=T0)


def _user(
    conn: psycopg.Connection[Any], sites: tuple[str, ...] = (SITE,)
) -> subscriptions.Subscriber:
    record = users.create_user(conn, "li.hua", "facility_manager", "correct horse 9", sites=sites)
    user = subscriptions.Subscriber(
        id=record.id, name=record.name, sites=record.sites, org=record.org
    )
    subscriptions.set_contacts(conn, user, subscriptions.Contacts(email=ADDRESS), "user:li.hua", T0)
    return user


def _subscribe(conn: psycopg.Connection[Any], user: subscriptions.Subscriber, **spec: Any) -> int:
    body = subscriptions.SubscriptionSpec.model_validate({"name": "cold-rooms", **spec})
    visible = frozenset(user.sites) if user.sites else None
    sub = subscriptions.add_subscription(conn, user, visible, body, "user:li.hua", T0)
    conn.commit()
    return sub


def _raise(conn: psycopg.Connection[Any]) -> notify.DeliveryReport:
    record_outputs(conn, site_model(), [started(T0)], now=CONFIRMED)
    conn.commit()
    # The route's group_wait (30 s by default) is over a minute later.
    return notify.deliver_due(conn, CONFIRMED + dt.timedelta(minutes=1))


def test_an_alert_matching_the_subscription_is_mailed_to_the_user_in_chinese(
    registered: psycopg.Connection[Any], smtp_server: tuple[Controller, _Mailbox]
) -> None:
    conn = registered
    controller, mailbox = smtp_server
    _mail_target(conn, controller)
    user = _user(conn)
    _subscribe(conn, user, sites=[SITE], match={"severities": ["critical", "major", "warning"]})
    report = _raise(conn)
    assert report.delivered == 1
    (envelope,) = mailbox.envelopes
    assert envelope.rcpt_tos == [ADDRESS]
    message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)  # type: ignore[arg-type]
    assert str(message["Subject"]).startswith("[告警] 测试楼 (alerts-hq) 第三条")
    (row,) = conn.execute("SELECT user_id, state, route FROM notifications").fetchall()
    assert row == (user.id, "delivered", f"user-{user.id}.cold-rooms")
    # The address is the user's own: neither the ledger nor the attempts carry it.
    ledger_text = conn.execute("SELECT string_agg(payload::text, ' ') FROM ledger").fetchone()
    attempts = conn.execute(
        "SELECT string_agg(coalesce(error, ''), ' ') FROM notification_attempts"
    ).fetchone()
    assert ADDRESS not in str(ledger_text) and ADDRESS not in str(attempts)


def test_a_subscription_that_matches_nothing_sends_nothing(
    registered: psycopg.Connection[Any], smtp_server: tuple[Controller, _Mailbox]
) -> None:
    conn = registered
    controller, mailbox = smtp_server
    _mail_target(conn, controller)
    _subscribe(conn, _user(conn), match={"severities": ["info"]})
    assert _raise(conn).delivered == 0
    assert mailbox.envelopes == []
    assert conn.execute("SELECT count(*) FROM notifications").fetchone() == (0,)


def test_a_site_outside_the_users_scope_is_refused(
    registered: psycopg.Connection[Any], smtp_server: tuple[Controller, _Mailbox]
) -> None:
    conn = registered
    _mail_target(conn, smtp_server[0])
    user = _user(conn)
    with pytest.raises(subscriptions.OutOfScope):
        _subscribe(conn, user, sites=["other-site"])
    conn.rollback()
    assert routing.route_rows(conn) == []
    assert conn.execute("SELECT count(*) FROM notification_routes").fetchone() == (0,)


def test_a_disabled_user_gets_nothing(
    registered: psycopg.Connection[Any], smtp_server: tuple[Controller, _Mailbox]
) -> None:
    conn = registered
    controller, mailbox = smtp_server
    _mail_target(conn, controller)
    _subscribe(conn, _user(conn))
    assert users.disable_user(conn, "li.hua")
    conn.commit()
    report = _raise(conn)
    assert (report.delivered, report.withheld) == (0, 1)
    assert mailbox.envelopes == []
    assert conn.execute("SELECT state, last_error FROM notifications").fetchall() == [
        ("withheld", "the subscriber is disabled")
    ]


def test_a_user_whose_scope_no_longer_covers_the_site_gets_nothing(
    registered: psycopg.Connection[Any], smtp_server: tuple[Controller, _Mailbox]
) -> None:
    conn = registered
    controller, mailbox = smtp_server
    _mail_target(conn, controller)
    _subscribe(conn, _user(conn))  # no sites: every site the user sees
    conn.execute("UPDATE users SET sites = '{other-site}' WHERE name = 'li.hua'")
    conn.commit()
    report = _raise(conn)
    assert (report.delivered, report.withheld) == (0, 1)
    assert mailbox.envelopes == []


def test_a_silence_holds_back_the_users_message_too(
    registered: psycopg.Connection[Any], smtp_server: tuple[Controller, _Mailbox]
) -> None:
    conn = registered
    controller, mailbox = smtp_server
    _mail_target(conn, controller)
    _subscribe(conn, _user(conn))
    spec = quiet.Spec("silence", SITE, "site", None, T0, T0 + dt.timedelta(hours=2), "检修")
    quiet.create(conn, spec, "test", now=T0)
    conn.commit()
    report = _raise(conn)
    assert (report.delivered, report.silenced) == (0, 1)
    assert mailbox.envelopes == []


def test_an_sms_subscription_texts_the_users_mobile_through_the_gateway(
    registered: psycopg.Connection[Any],
    smtp_server: tuple[Controller, _Mailbox],
    sms_gateway: test_channels.Receiver,
) -> None:
    conn = registered
    _mail_target(conn, smtp_server[0])
    options = {**test_channels.SMS_OPTIONS, "to": ["13900000009"]}  # not for subscribers
    target = webhooks.Target(
        "sms", sms_gateway.url("/sms/send"), test_channels.SMS_KEY, site=None, level=None,
        broadcast=False, kind="sms", options=options,
    )  # fmt: skip
    webhooks.add_target(conn, target, "test", now=T0)
    user = _user(conn)
    subscriptions.set_contacts(
        conn, user, subscriptions.Contacts(email=ADDRESS, mobile="13800138000"), "test", T0
    )
    _subscribe(conn, user, channels=["sms"])
    assert _raise(conn).delivered == 1
    ((_, _, body, _),) = sms_gateway.requests
    assert orjson.loads(body)["PhoneNumbers"] == "13800138000"
    assert smtp_server[1].envelopes == []
