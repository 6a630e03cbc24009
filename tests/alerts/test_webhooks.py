"""Webhooks (issue 18, findings 2 and 3): targets referenced by id and name, payloads signed with
the target's secret, addresses checked after DNS resolution and the connection pinned to the
address checked. The receivers are real HTTP servers on 127.0.0.1 that verify the signature the
way docs/alerts.md tells a receiver to (written here from the documentation, not with the
sender's code)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import http.server
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import psycopg
import pytest

from alerts import notify, outbound, webhooks
from alerts.record import record_outputs
from store import ledger
from store.registry import sync_site
from tests.alerts.conftest import SITE, T0, site_model, started, with_contacts
from tests.support import serve_http

pytestmark = pytest.mark.integration

CONFIRMED = T0 + dt.timedelta(minutes=15)
SECRET = "s3cret-of-the-receiver-0123456789"
TOKEN = "tok-" + "9" * 24  # the kind of token a chat robot's URL carries in its query


class VerifyingReceiver(http.server.ThreadingHTTPServer):
    """Answers 200 to a POST whose signature checks out and whose timestamp is within five
    minutes of its clock (`clock`, movable), 401 otherwise; keeps what arrived."""

    def __init__(self, secret: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.secret = secret
        self.clock: Callable[[], float] = time.time
        self.requests: list[tuple[dict[str, str], bytes, int, str]] = []
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/robot/send?access_token={TOKEN}"

    def verdict(self, headers: dict[str, str], body: bytes) -> str:
        """docs/alerts.md, "Signed payloads", step by step."""
        timestamp = headers.get("x-clausewatch-timestamp", "")
        signature = headers.get("x-clausewatch-signature", "")
        if not timestamp.isdigit() or not signature.startswith("sha256="):
            return "unsigned"
        if abs(self.clock() - int(timestamp)) > 300:
            return "stale"
        expected = hmac.new(
            self.secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest("sha256=" + expected, signature):
            return "forged"
        return "ok"

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [orjson.loads(body) for _, body, _, _ in self.requests]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: VerifyingReceiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = {k.lower(): v for k, v in self.headers.items()}
        verdict = self.server.verdict(headers, body)
        status = 200 if verdict == "ok" else 401
        with self.server.lock:
            self.server.requests.append((headers, body, status, verdict))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests assert on what arrived."""


@pytest.fixture
def receiver() -> Iterator[VerifyingReceiver]:
    server = VerifyingReceiver(SECRET)
    with serve_http(server):
        yield server


def _target(
    conn: psycopg.Connection[Any], url: str, *, name: str = "sms-gw", broadcast: bool = True
) -> int:
    target = webhooks.Target(name, url, SECRET, site=SITE, level=0, broadcast=broadcast)
    return webhooks.add_target(conn, target, "test", now=T0)


def _allow_loopback(conn: psycopg.Connection[Any]) -> None:
    webhooks.allow(conn, "127.0.0.1", "the tests' own receivers", "test", now=T0)


def _raise_alert(conn: psycopg.Connection[Any]) -> int:
    alert_id = record_outputs(conn, site_model(), [started(T0)], now=CONFIRMED).alert_ids[0]
    conn.commit()
    return alert_id


def _outcome(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    row = conn.execute("SELECT state, attempts, last_error FROM notifications").fetchone()
    assert row is not None
    return tuple(row)


def test_a_delivered_payload_is_signed_with_the_targets_secret(
    registered: psycopg.Connection[Any],
    receiver: VerifyingReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    conn = registered
    _allow_loopback(conn)
    target_id = _target(conn, receiver.url())
    alert_id = _raise_alert(conn)
    with caplog.at_level(logging.DEBUG):
        assert notify.deliver_due(conn, CONFIRMED).delivered == 1
    assert caplog.records and TOKEN not in caplog.text  # httpcore logs at DEBUG, not the URL
    ((headers, body, status, verdict),) = receiver.requests
    assert (status, verdict) == (200, "ok")
    assert abs(int(headers["x-clausewatch-timestamp"]) - time.time()) < 60
    assert headers["content-type"] == "application/json"
    assert orjson.loads(body)["alert"]["id"] == alert_id
    # What the timeline and the ledger keep of it: the target's id and name, never its URL.
    (data,) = conn.execute(
        "SELECT data FROM alert_timeline WHERE action = 'notified' AND alert_id = %s", (alert_id,)
    ).fetchone() or (None,)
    assert (data["target"], data["target_name"], data["outcome"]) == (
        target_id,
        "sms-gw",
        "delivered",
    )
    _assert_no_url_or_secret_stored(conn, receiver)


def test_a_receiver_refuses_a_stale_timestamp_and_a_changed_body(
    registered: psycopg.Connection[Any], receiver: VerifyingReceiver
) -> None:
    conn = registered
    _allow_loopback(conn)
    _target(conn, receiver.url())
    _raise_alert(conn)
    receiver.clock = lambda: time.time() + 600  # the request arrives ten minutes "late"
    report = notify.deliver_due(conn, CONFIRMED)
    assert report.retrying == 1
    assert [r[2:] for r in receiver.requests] == [(401, "stale")]
    assert _outcome(conn) == ("pending", 1, "HTTP 401")
    # A body changed on the way (same headers) does not verify either.
    receiver.clock = time.time
    headers, body, _, _ = receiver.requests[0]
    assert receiver.verdict(headers, body.replace(b'"raised"', b'"closed"')) == "forged"
    assert receiver.verdict(headers, body) == "ok"
    # The retry is signed afresh and gets through.
    assert notify.deliver_due(conn, CONFIRMED + dt.timedelta(minutes=1)).delivered == 1


def test_loopback_is_refused_unless_allow_listed(
    registered: psycopg.Connection[Any], receiver: VerifyingReceiver
) -> None:
    conn = registered
    _target(conn, receiver.url())
    alert_id = _raise_alert(conn)
    report = notify.deliver_due(conn, CONFIRMED)
    assert (report.delivered, report.failed) == (0, 1)  # failed at once: a retry cannot help
    state, attempts, error = _outcome(conn)
    assert (state, attempts) == ("failed", 1)
    assert error.startswith("refused: 127.0.0.1 is a loopback address")
    assert receiver.requests == []
    (note,) = conn.execute(
        "SELECT note FROM alert_timeline WHERE alert_id = %s AND action = 'notified'", (alert_id,)
    ).fetchone() or (None,)
    assert "failed after 1 attempt (webhook sms-gw): refused: 127.0.0.1 is a loopback" in note
    assert conn.execute(
        "SELECT count(*) FROM ledger WHERE kind = 'notification.failed'"
    ).fetchone() == (1,)
    # Allow-listed by an (unscoped) admin, the next alert's notice gets through.
    _allow_loopback(conn)
    record_outputs(conn, site_model(), [started(T0, device="th-202")], now=CONFIRMED)
    conn.commit()
    assert notify.deliver_due(conn, CONFIRMED).delivered == 1
    assert [r[3] for r in receiver.requests] == ["ok"]


def test_an_allow_listed_host_name_may_resolve_to_loopback(
    registered: psycopg.Connection[Any], receiver: VerifyingReceiver
) -> None:
    conn = registered
    webhooks.allow(conn, "LocalHost", "", "test", now=T0)
    _target(conn, receiver.url("localhost"))
    _raise_alert(conn)
    assert notify.deliver_due(conn, CONFIRMED).delivered == 1


def test_a_name_the_system_resolves_to_loopback_is_refused(
    registered: psycopg.Connection[Any], receiver: VerifyingReceiver
) -> None:
    conn = registered
    _target(conn, receiver.url("localhost"))  # /etc/hosts: 127.0.0.1 (and ::1)
    _raise_alert(conn)
    assert notify.deliver_due(conn, CONFIRMED).failed == 1
    assert "is a loopback address" in _outcome(conn)[2]
    assert receiver.requests == []


def test_a_name_resolving_to_a_private_address_is_refused(
    registered: psycopg.Connection[Any],
) -> None:
    conn = registered
    _target(conn, f"https://hooks.example.org/robot/send?access_token={TOKEN}")
    _raise_alert(conn)

    def lan(host: str, port: int) -> list[str]:
        assert (host, port) == ("hooks.example.org", 443)
        return ["10.20.30.40"]

    assert notify.deliver_due(conn, CONFIRMED, resolver=lan).failed == 1
    assert _outcome(conn)[2].startswith("refused: 10.20.30.40 is a private address")


def test_one_internal_address_among_public_ones_is_refused(
    registered: psycopg.Connection[Any],
) -> None:
    conn = registered
    _target(conn, "https://hooks.example.org/x")
    _raise_alert(conn)
    both = notify.deliver_due(conn, CONFIRMED, resolver=lambda h, p: ["93.184.215.14", "::1"])
    assert both.failed == 1
    assert _outcome(conn)[2].startswith("refused: ::1 is a loopback address")


def test_the_connection_goes_to_the_address_that_was_checked(
    registered: psycopg.Connection[Any], receiver: VerifyingReceiver
) -> None:
    """DNS rebinding: the name is resolved once; a second answer (to an address that would have
    been refused) is never asked for. The name travels in the Host header."""
    conn = registered
    webhooks.allow(conn, "127.0.0.1/32", "", "test", now=T0)
    _target(conn, receiver.url("hooks.test"))
    _raise_alert(conn)
    answers = iter([["127.0.0.1"], ["169.254.169.254"]])
    asked: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        asked.append(host)
        return next(answers)

    assert notify.deliver_due(conn, CONFIRMED, resolver=rebinding).delivered == 1
    assert asked == ["hooks.test"]
    assert receiver.requests[0][0]["host"] == f"hooks.test:{receiver.port}"


def test_a_party_names_its_target_and_an_unknown_name_fails_visibly(
    registered: psycopg.Connection[Any], receiver: VerifyingReceiver
) -> None:
    conn = registered
    _allow_loopback(conn)
    _target(conn, receiver.url(), name="wang-phone", broadcast=False)
    sync_site(conn, with_contacts("wang", {"webhook": "wang-phone"}), "admin", now=T0)
    _raise_alert(conn)
    assert notify.deliver_due(conn, CONFIRMED).delivered == 1
    assert receiver.bodies[0]["party"]["contacts"] == {"webhook": "wang-phone"}
    later = T0 + dt.timedelta(hours=1)
    sync_site(conn, with_contacts("wang", {"webhook": "no-such-target"}), "admin", now=later)
    record_outputs(conn, site_model(), [started(T0, device="th-202")], now=CONFIRMED)
    conn.commit()
    assert notify.deliver_due(conn, CONFIRMED).failed == 1
    (error,) = conn.execute(
        "SELECT last_error FROM notifications WHERE state = 'failed'"
    ).fetchone() or (None,)
    assert error == f"no enabled webhook target named 'no-such-target' for site {SITE}"


def test_a_target_that_is_not_broadcast_gets_only_its_parties(
    registered: psycopg.Connection[Any], receiver: VerifyingReceiver
) -> None:
    conn = registered
    _allow_loopback(conn)
    _target(conn, receiver.url(), name="wang-phone", broadcast=False)
    _raise_alert(conn)
    assert conn.execute("SELECT count(*) FROM notifications").fetchone() == (0,)


def test_a_site_file_may_not_hold_a_webhook_url() -> None:
    model = site_model().model_dump(mode="json")
    model["parties"][0]["contacts"] = {"webhook": "https://x.example/hook?access_token=t"}
    with pytest.raises(ValueError, match="names a webhook target"):
        type(site_model()).model_validate(model)


def test_rotating_the_secret_and_the_url_leaves_no_trace_of_them(
    registered: psycopg.Connection[Any], receiver: VerifyingReceiver
) -> None:
    conn = registered
    target_id = _target(conn, "https://old.example.com/hook?key=old-key-value")
    webhooks.change_target(
        conn, target_id, {"url": receiver.url(), "secret": SECRET + "-v2"}, "admin", now=T0
    )
    conn.commit()
    (payload,) = conn.execute(
        "SELECT payload FROM ledger WHERE kind = 'webhook_target.changed'"
    ).fetchone() or (None,)
    facts = orjson.loads(payload)
    assert facts["changed"] == ["secret", "url"]
    assert facts["url"] == f"http://127.0.0.1:{receiver.port}/…"
    everything = "".join(str(r[0]) for r in conn.execute("SELECT payload FROM ledger"))
    assert "old-key-value" not in everything and SECRET not in everything
    assert TOKEN not in everything
    assert webhooks.target_rows(conn)[0]["url"] == f"http://127.0.0.1:{receiver.port}/…"


def _assert_no_url_or_secret_stored(
    conn: psycopg.Connection[Any], receiver: VerifyingReceiver
) -> None:
    """Nothing but webhook_targets holds the URL's token or the secret."""
    stored = [
        *(str(r[0]) for r in conn.execute("SELECT payload FROM ledger")),
        *(str(r) for r in conn.execute("SELECT note, data FROM alert_timeline")),
        *(str(r) for r in conn.execute("SELECT * FROM notifications")),
        *(str(r) for r in conn.execute("SELECT * FROM notification_attempts")),
    ]
    for text in stored:
        assert TOKEN not in text and SECRET not in text and "/robot/send" not in text, text
    assert ledger.verify(conn).ok


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:169.254.169.254", "link-local"),
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("2002:a00:1::1", "private"),  # 6to4 of 10.0.0.1
        ("100.64.0.1", "not globally routable"),  # carrier-grade NAT
        ("240.0.0.1", "reserved"),
    ],
)
def test_the_address_policy(address: str, reason: str | None) -> None:
    found = outbound.refusal(ipaddress.ip_address(address))
    if reason is None:
        assert found is None
    else:
        assert found is not None and reason in found, found


def test_allow_list_entries_are_networks_or_host_names() -> None:
    assert outbound.parse_allow_entry("10.0.0.5") == ("network", "10.0.0.5/32")
    assert outbound.parse_allow_entry("192.168.0.0/16") == ("network", "192.168.0.0/16")
    assert outbound.parse_allow_entry("SMS-GW.lan.") == ("host", "sms-gw.lan")
    for bad in ("", "http://x", "a b", "-x.lan", "x/33"):
        with pytest.raises(ValueError):
            outbound.parse_allow_entry(bad)
    allowed = outbound.AllowList(networks=(ipaddress.ip_network("10.0.0.0/8"),))
    assert allowed.allows("any", ipaddress.ip_address("::ffff:10.1.1.1"))
    assert not allowed.allows("any", ipaddress.ip_address("192.168.1.1"))
