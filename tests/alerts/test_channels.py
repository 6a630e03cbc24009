"""Notification channels (issue 20): each kind against a real receiver on 127.0.0.1 that checks
what the vendor checks, written here from the vendors' documentation (not with the sender's
code): DingTalk's `sign` query parameter, Feishu's `sign` in the body, WeCom's key in the URL,
an SMS gateway's template and key, and e-mail through a real SMTP server (aiosmtpd) with a
login. A robot refuses the way the real ones do: HTTP 200 with an error code."""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.header
import email.policy
import hashlib
import hmac
import http.server
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import psycopg
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from alerts import lifecycle, notify, webhooks
from alerts.record import record_outputs
from clausewatch.cli import main
from clausewatch.settings import Settings
from store.registry import sync_site
from tests.alerts.conftest import SITE, T0, ended, site_model, started, with_contacts
from tests.support import serve_http

pytestmark = pytest.mark.integration

CONFIRMED = T0 + dt.timedelta(minutes=15)
BASE = "https://cw.example.cn"
DING_SECRET = "SEC" + "d1" * 32
FEISHU_SECRET = "fs-secret-0123456789ab"
WECOM_KEY = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"
DING_TOKEN = "ding-token-" + "7" * 20
SMS_KEY = "sms-gateway-key-42"
SMTP_PASSWORD = "smtp-pass-1-xyz"
# What every message must say (the test site, clause and alert of tests/alerts/conftest.py):
# T0 is 08:00 in Asia/Shanghai.
EXPECTED_ZH = (
    "建科〔2008〕115号",
    "第三条 夏季室内空调温度设置不得低于26℃",
    "b1-2f-201",
    "th-201",
    "王工",
    "2026-07-01 08:00 (Asia/Shanghai, UTC+08:00)",
    "测试楼 (alerts-hq)",
    "标准",
    "责任方",
)

Verdict = Callable[[str, dict[str, str], bytes], dict[str, Any] | None]


class Receiver(http.server.ThreadingHTTPServer):
    """Keeps every POST (path with query, headers, body) and answers HTTP 200 with what
    `verdict(path, headers, body)` returns (a vendor's error) or `ok`."""

    def __init__(self, verdict: Verdict, ok: dict[str, Any]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.verdict = verdict
        self.ok = ok
        self.requests: list[tuple[str, dict[str, str], bytes, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = self.server.verdict(self.path, headers, body) or self.server.ok
        with self.server.lock:
            self.server.requests.append((self.path, headers, body, reply))
        data = orjson.dumps(reply)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


def _serve(verdict: Verdict, ok: dict[str, Any]) -> Iterator[Receiver]:
    server = Receiver(verdict, ok)
    with serve_http(server):
        yield server


# ---- the vendors' checks, from their documentation ----


def _dingtalk_verdict(path: str, headers: dict[str, str], body: bytes) -> dict[str, Any] | None:
    """DingTalk: `timestamp` (ms, within an hour) and `sign` = urlencode(base64(HMAC-SHA256(
    key=secret, "timestamp\\nsecret"))) in the query; a JSON body with msgtype."""
    query = parse_qs(urlsplit(path).query)
    if query.get("access_token") != [DING_TOKEN]:
        return {"errcode": 300001, "errmsg": "token is not exist"}
    timestamp = query.get("timestamp", [""])[0]
    if not timestamp.isdigit() or abs(int(timestamp) - time.time() * 1000) > 3600_000:
        return {"errcode": 310000, "errmsg": "invalid timestamp"}
    digest = hmac.new(
        DING_SECRET.encode(), f"{timestamp}\n{DING_SECRET}".encode(), hashlib.sha256
    ).digest()
    if query.get("sign") != [base64.b64encode(digest).decode()]:
        return {"errcode": 310000, "errmsg": "sign not match"}
    if headers.get("content-type", "").split(";")[0] != "application/json":
        return {"errcode": 40035, "errmsg": "content-type"}
    message = orjson.loads(body)
    if message.get("msgtype") not in ("text", "markdown"):
        return {"errcode": 40035, "errmsg": "msgtype"}
    return None


def _feishu_verdict(path: str, headers: dict[str, str], body: bytes) -> dict[str, Any] | None:
    """Feishu: body `timestamp` (s, within an hour) and `sign` = base64(HMAC-SHA256(key=
    "timestamp\\nsecret", empty message))."""
    message = orjson.loads(body)
    timestamp = str(message.get("timestamp", ""))
    if not timestamp.isdigit() or abs(int(timestamp) - time.time()) > 3600:
        return {"code": 19021, "msg": "sign match fail or timestamp is not within one hour"}
    key = f"{timestamp}\n{FEISHU_SECRET}".encode()
    expected = base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
    if message.get("sign") != expected:
        return {"code": 19021, "msg": "sign match fail or timestamp is not within one hour"}
    if message.get("msg_type") != "post":
        return {"code": 19002, "msg": "params error"}
    return None


def _wecom_verdict(path: str, headers: dict[str, str], body: bytes) -> dict[str, Any] | None:
    """WeCom: the key in the query; markdown content at most 4096 bytes."""
    if parse_qs(urlsplit(path).query).get("key") != [WECOM_KEY]:
        return {"errcode": 93000, "errmsg": "invalid webhook url"}
    message = orjson.loads(body)
    if message.get("msgtype") != "markdown":
        return {"errcode": 40008, "errmsg": "invalid message type"}
    if len(message["markdown"]["content"].encode()) > 4096:
        return {"errcode": 40058, "errmsg": "content exceed max length"}
    return None


def _sms_verdict(path: str, headers: dict[str, str], body: bytes) -> dict[str, Any] | None:
    if headers.get("authorization") != f"Bearer {SMS_KEY}":
        return {"code": "InvalidAccessKeyId"}
    message = orjson.loads(body)
    if message.get("key") != SMS_KEY or not message.get("PhoneNumbers"):
        return {"code": "isv.MOBILE_NUMBER_ILLEGAL"}
    return None


@pytest.fixture
def dingtalk() -> Iterator[Receiver]:
    yield from _serve(_dingtalk_verdict, {"errcode": 0, "errmsg": "ok"})


@pytest.fixture
def feishu() -> Iterator[Receiver]:
    yield from _serve(_feishu_verdict, {"code": 0, "msg": "success", "data": {}})


@pytest.fixture
def wecom() -> Iterator[Receiver]:
    yield from _serve(_wecom_verdict, {"errcode": 0, "errmsg": "ok"})


@pytest.fixture
def sms_gateway() -> Iterator[Receiver]:
    yield from _serve(_sms_verdict, {"code": "OK", "message": "OK"})


# ---- helpers ----


def _allow_loopback(conn: psycopg.Connection[Any]) -> None:
    webhooks.allow(conn, "127.0.0.1", "the tests' own receivers", "test", now=T0)


def _add(conn: psycopg.Connection[Any], kind: str, url: str, secret: str = "", **kw: Any) -> int:
    target = webhooks.Target(kind + "-1", url, secret, site=SITE, level=0, kind=kind, **kw)  # type: ignore[arg-type]
    return webhooks.add_target(conn, target, "test", now=T0)


def _raise_and_deliver(conn: psycopg.Connection[Any]) -> notify.DeliveryReport:
    record_outputs(conn, site_model(), [started(T0)], now=CONFIRMED)
    conn.commit()
    return notify.deliver_due(conn, CONFIRMED, public_base_url=BASE)


def _alert_id(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT id FROM alerts").fetchone()
    assert row is not None
    return int(row[0])


def _notification(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    row = conn.execute("SELECT state, attempts, last_error FROM notifications").fetchone()
    assert row is not None
    return tuple(row)


def _says_everything(text: str, conn: psycopg.Connection[Any]) -> None:
    for fact in EXPECTED_ZH:
        assert fact in text, fact
    assert f"{BASE}/alerts/{_alert_id(conn)}" in text


# ---- the chat robots ----


def test_dingtalk_robot_gets_a_signed_chinese_markdown_message(
    registered: psycopg.Connection[Any], dingtalk: Receiver
) -> None:
    conn = registered
    _allow_loopback(conn)
    _add(conn, "dingtalk", dingtalk.url(f"/robot/send?access_token={DING_TOKEN}"), DING_SECRET)
    assert _raise_and_deliver(conn).delivered == 1
    ((_, _, body, reply),) = dingtalk.requests
    assert reply == {"errcode": 0, "errmsg": "ok"}
    message = orjson.loads(body)
    assert message["msgtype"] == "markdown"
    assert message["markdown"]["title"].startswith("[告警] 测试楼 (alerts-hq) 第三条")
    _says_everything(message["markdown"]["text"], conn)
    assert _notification(conn) == ("delivered", 1, None)


def test_dingtalk_refusal_inside_http_200_is_a_failed_attempt_without_secrets(
    registered: psycopg.Connection[Any], dingtalk: Receiver
) -> None:
    conn = registered
    _allow_loopback(conn)
    wrong = "SEC" + "00" * 32
    _add(conn, "dingtalk", dingtalk.url(f"/robot/send?access_token={DING_TOKEN}"), wrong)
    report = _raise_and_deliver(conn)
    assert (report.delivered, report.retrying) == (0, 1)
    assert dingtalk.requests[0][3]["errcode"] == 310000
    state, attempts, error = _notification(conn)
    assert (state, attempts) == ("pending", 1)
    assert error == "robot refused: code 310000: sign not match"
    recorded = conn.execute(
        "SELECT string_agg(coalesce(error, ''), ' ') FROM notification_attempts"
    ).fetchone()
    ledger_text = conn.execute("SELECT string_agg(payload, ' ') FROM ledger").fetchone()
    assert recorded is not None and ledger_text is not None
    for secret in (wrong, DING_TOKEN):
        assert secret not in recorded[0] and secret not in ledger_text[0]


def test_feishu_robot_gets_a_signed_post_message(
    registered: psycopg.Connection[Any], feishu: Receiver
) -> None:
    conn = registered
    _allow_loopback(conn)
    _add(conn, "feishu", feishu.url("/open-apis/bot/v2/hook/abc-def"), FEISHU_SECRET)
    assert _raise_and_deliver(conn).delivered == 1
    ((_, _, body, reply),) = feishu.requests
    assert reply["code"] == 0
    post = orjson.loads(body)["content"]["post"]["zh_cn"]
    text = post["title"] + "\n" + orjson.dumps(post["content"]).decode()
    _says_everything(text, conn)
    assert post["content"][-1][0]["tag"] == "a"


def test_feishu_wrong_secret_is_refused_with_code_19021(
    registered: psycopg.Connection[Any], feishu: Receiver
) -> None:
    conn = registered
    _allow_loopback(conn)
    _add(conn, "feishu", feishu.url("/open-apis/bot/v2/hook/abc-def"), "another-secret-xyz")
    assert _raise_and_deliver(conn).retrying == 1
    assert _notification(conn)[2].startswith("robot refused: code 19021")


def test_wecom_robot_gets_markdown_with_the_key_in_the_url(
    registered: psycopg.Connection[Any], wecom: Receiver
) -> None:
    conn = registered
    _allow_loopback(conn)
    _add(conn, "wecom", wecom.url(f"/cgi-bin/webhook/send?key={WECOM_KEY}"))
    assert _raise_and_deliver(conn).delivered == 1
    ((_, _, body, _),) = wecom.requests
    _says_everything(orjson.loads(body)["markdown"]["content"], conn)


def test_wecom_error_code_is_a_failed_attempt(
    registered: psycopg.Connection[Any], wecom: Receiver
) -> None:
    conn = registered
    _allow_loopback(conn)
    _add(conn, "wecom", wecom.url("/cgi-bin/webhook/send?key=wrong-key"))
    assert _raise_and_deliver(conn).retrying == 1
    assert _notification(conn)[2] == "robot refused: code 93000: invalid webhook url"


def test_english_when_the_target_says_so(
    registered: psycopg.Connection[Any], wecom: Receiver
) -> None:
    conn = registered
    _allow_loopback(conn)
    _add(conn, "wecom", wecom.url(f"/cgi-bin/webhook/send?key={WECOM_KEY}"), language="en")
    assert _raise_and_deliver(conn).delivered == 1
    text = orjson.loads(wecom.requests[0][2])["markdown"]["content"]
    assert "**Standard**" in text and "**Responsible**: 王工" in text and "标准" not in text
    assert "2026-07-01 08:00 (Asia/Shanghai, UTC+08:00)" in text


# ---- SMS ----

SMS_OPTIONS = {
    "body": {
        "key": "{secret}",
        "PhoneNumbers": "{phones}",
        "SignName": "clausewatch",
        "TemplateParam": {"text": "{text}", "link": "{link}", "alert": "{alert_id}"},
    },
    "headers": {"Authorization": "Bearer {secret}"},
    "ok_field": "code",
    "ok_value": "OK",
}


def test_sms_gateway_gets_the_template_filled_in_for_the_partys_phone(
    registered: psycopg.Connection[Any], sms_gateway: Receiver
) -> None:
    conn = registered
    # The responsible party's phone (the target has no fixed numbers).
    sync_site(conn, with_contacts("wang", {"phone": "13900000001"}), "test", now=T0)
    _allow_loopback(conn)
    _add(conn, "sms", sms_gateway.url("/sms/send"), SMS_KEY, options=SMS_OPTIONS)
    assert _raise_and_deliver(conn).delivered == 1
    ((_, headers, body, reply),) = sms_gateway.requests
    assert reply["code"] == "OK" and headers["authorization"] == f"Bearer {SMS_KEY}"
    sent = orjson.loads(body)
    assert sent["PhoneNumbers"] == "13900000001" and sent["SignName"] == "clausewatch"
    assert sent["TemplateParam"]["alert"] == str(_alert_id(conn))
    text = sent["TemplateParam"]["text"]
    for fact in ("建科〔2008〕115号", "b1-2f-201", "王工", "2026-07-01 08:00 (Asia/Shanghai"):
        assert fact in text
    assert sent["TemplateParam"]["link"] == f"{BASE}/alerts/{_alert_id(conn)}"


def test_sms_gateway_refusal_in_its_reply_is_a_failed_attempt(
    registered: psycopg.Connection[Any], sms_gateway: Receiver
) -> None:
    conn = registered
    _allow_loopback(conn)
    options = {**SMS_OPTIONS, "to": ["13900000002"]}
    _add(conn, "sms", sms_gateway.url("/sms/send"), "not-the-key", options=options)
    assert _raise_and_deliver(conn).retrying == 1
    assert _notification(conn)[2] == "gateway answered code = 'InvalidAccessKeyId'"


def test_sms_without_a_phone_number_fails_at_once(
    registered: psycopg.Connection[Any], sms_gateway: Receiver
) -> None:
    conn = registered
    _allow_loopback(conn)
    _add(conn, "sms", sms_gateway.url("/sms/send"), SMS_KEY, options=SMS_OPTIONS)
    assert _raise_and_deliver(conn).failed == 1
    assert sms_gateway.requests == []


def test_sms_template_with_an_unknown_placeholder_is_refused(
    registered: psycopg.Connection[Any],
) -> None:
    options = {"body": {"to": "{phones}", "x": "{__class__}", "y": "{password}"}}
    with pytest.raises(webhooks.TargetInvalid, match="unknown placeholders") as caught:
        _add(registered, "sms", "https://sms.example.cn/send", SMS_KEY, options=options)
    assert caught.value.field == "options"


# ---- e-mail ----


class _Mailbox:
    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.logins: list[tuple[str, str]] = []

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 OK"

    def authenticate(
        self, server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        login = (data.login.decode(), data.password.decode())
        self.logins.append(login)
        return AuthResult(success=login == ("alerts@cw.example.cn", SMTP_PASSWORD), handled=False)


def _free_port() -> int:
    """A free port (aiosmtpd's controller needs one up front)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def smtp_server() -> Iterator[tuple[Controller, _Mailbox]]:
    mailbox = _Mailbox()
    port = _free_port()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=mailbox.authenticate,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield controller, mailbox
    finally:
        controller.stop()


def _smtp_url(controller: Controller) -> str:
    return f"smtp://127.0.0.1:{controller.port}"


EMAIL_OPTIONS = {"sender": "alerts@cw.example.cn", "username": "alerts@cw.example.cn"}


def test_email_with_chinese_subject_and_body_to_the_partys_address(
    registered: psycopg.Connection[Any], smtp_server: tuple[Controller, _Mailbox]
) -> None:
    conn = registered
    controller, mailbox = smtp_server
    sync_site(conn, with_contacts("wang", {"email": "wang@cw.example.cn"}), "test", now=T0)
    _allow_loopback(conn)
    options = {**EMAIL_OPTIONS, "starttls": False}
    _add(conn, "email", _smtp_url(controller), SMTP_PASSWORD, options=options)
    assert _raise_and_deliver(conn).delivered == 1
    assert mailbox.logins == [("alerts@cw.example.cn", SMTP_PASSWORD)]
    (envelope,) = mailbox.envelopes
    assert envelope.mail_from == "alerts@cw.example.cn"
    assert envelope.rcpt_tos == ["wang@cw.example.cn"]
    raw = envelope.original_content
    assert isinstance(raw, bytes)
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()  # Subject RFC 2047-encoded, body base64: any mail system carries it
    assert b"Subject: =?utf-8?" in head
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert str(message["Subject"]).startswith("[告警] 测试楼 (alerts-hq) 第三条")
    assert "标准：建科〔2008〕115号" in message.get_content()  # full-width colon in Chinese
    assert message.get_content_type() == "text/plain"
    assert message.get_content_charset() == "utf-8"
    assert message["X-Clausewatch-Notification"] == "1"
    _says_everything(message.get_content(), conn)


def test_email_login_refused_is_a_failed_attempt_without_the_password(
    registered: psycopg.Connection[Any], smtp_server: tuple[Controller, _Mailbox]
) -> None:
    conn = registered
    controller, mailbox = smtp_server
    _allow_loopback(conn)
    options = {**EMAIL_OPTIONS, "starttls": False, "to": ["ops@cw.example.cn"]}
    _add(conn, "email", _smtp_url(controller), "wrong-password", options=options)
    assert _raise_and_deliver(conn).retrying == 1
    error = _notification(conn)[2]
    assert error.startswith("SMTP 535"), error
    assert "wrong-password" not in error
    assert mailbox.envelopes == []


def test_an_smtp_server_on_loopback_is_refused_unless_allow_listed(
    registered: psycopg.Connection[Any], smtp_server: tuple[Controller, _Mailbox]
) -> None:
    conn = registered
    controller, mailbox = smtp_server
    options = {**EMAIL_OPTIONS, "starttls": False, "to": ["ops@cw.example.cn"]}
    _add(conn, "email", _smtp_url(controller), SMTP_PASSWORD, options=options)
    assert _raise_and_deliver(conn).failed == 1
    assert _notification(conn)[2].startswith("refused: 127.0.0.1 is a loopback address")
    assert mailbox.envelopes == [] and mailbox.logins == []


def _self_signed(tmp_path: Path) -> ssl.SSLContext:
    """A TLS server context with a certificate for 127.0.0.1 no client trusts."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return context


@pytest.mark.parametrize("starttls", [True, False])
def test_the_smtp_password_never_goes_to_an_unverified_or_clear_connection(
    registered: psycopg.Connection[Any], tmp_path: Path, starttls: bool
) -> None:
    """STARTTLS verifies the server's certificate against its host name (a self-signed one
    fails before any login); without STARTTLS a server that requires it offers no login, and
    the password is not sent at all."""
    conn = registered
    mailbox = _Mailbox()
    port = _free_port()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=mailbox.authenticate,
        tls_context=_self_signed(tmp_path),
        require_starttls=True,
    )
    controller.start()
    try:
        _allow_loopback(conn)
        options = {**EMAIL_OPTIONS, "starttls": starttls, "to": ["ops@cw.example.cn"]}
        _add(conn, "email", f"smtp://127.0.0.1:{port}", SMTP_PASSWORD, options=options)
        assert _raise_and_deliver(conn).retrying == 1
    finally:
        controller.stop()
    error = _notification(conn)[2]
    expected = "SSLCertVerificationError" if starttls else "offers no PLAIN or LOGIN login"
    assert expected in error, error
    assert mailbox.logins == [] and mailbox.envelopes == []


def test_email_over_starttls_with_an_in_house_ca_and_a_login(
    registered: psycopg.Connection[Any], tmp_path: Path
) -> None:
    conn = registered
    mailbox = _Mailbox()
    port = _free_port()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        authenticator=mailbox.authenticate,
        tls_context=_self_signed(tmp_path),
        require_starttls=True,
    )
    controller.start()
    try:
        _allow_loopback(conn)
        options = {
            **EMAIL_OPTIONS,
            "to": ["ops@cw.example.cn"],
            "ca_file": str(tmp_path / "cert.pem"),  # the self-signed certificate is its own CA
        }
        _add(conn, "email", f"smtp://127.0.0.1:{port}", SMTP_PASSWORD, options=options)
        assert _raise_and_deliver(conn).delivered == 1
    finally:
        controller.stop()
    assert mailbox.logins == [("alerts@cw.example.cn", SMTP_PASSWORD)]
    (envelope,) = mailbox.envelopes
    assert envelope.rcpt_tos == ["ops@cw.example.cn"]


def test_the_public_base_url_setting() -> None:
    assert Settings(public_base_url="https://cw.example.cn/").alert_link_base() == (
        "https://cw.example.cn"
    )
    assert Settings(http_host="0.0.0.0", http_port=8080).alert_link_base() == (
        "http://127.0.0.1:8080"
    )
    with pytest.raises(ValidationError):
        Settings(public_base_url="javascript:alert(1)")


# ---- resolved and closed notices ----


def test_resolved_and_closed_notices_go_to_whoever_was_told_of_the_alert(
    registered: psycopg.Connection[Any], wecom: Receiver, feishu: Receiver
) -> None:
    conn = registered
    _allow_loopback(conn)
    _add(conn, "wecom", wecom.url(f"/cgi-bin/webhook/send?key={WECOM_KEY}"))
    # A robot for level 1 only: never told of this alert (not escalated), so told nothing.
    other = webhooks.Target(
        "fs", feishu.url("/hook/x"), FEISHU_SECRET, site=SITE, level=1, kind="feishu"
    )
    webhooks.add_target(conn, other, "test", now=T0)
    alert_id = record_outputs(conn, site_model(), [started(T0)], now=CONFIRMED).alert_ids[0]
    conn.commit()
    assert notify.deliver_due(conn, CONFIRMED, public_base_url=BASE).delivered == 1

    end = T0 + dt.timedelta(hours=1)
    record_outputs(conn, site_model(), [ended(end, T0)], now=end)
    conn.commit()
    assert notify.deliver_due(conn, end, public_base_url=BASE).delivered == 1
    resolved = orjson.loads(wecom.requests[-1][2])["markdown"]["content"]
    assert resolved.startswith("### [已恢复] 测试楼 (alerts-hq) 第三条")
    assert "**结束时间**：2026-07-01 09:00 (Asia/Shanghai, UTC+08:00)" in resolved
    assert f"{BASE}/alerts/{alert_id}" in resolved

    closed_at = end + dt.timedelta(hours=2)
    lifecycle.close(conn, alert_id, "王工", "设定温度被调低", "恢复26℃并锁定面板", now=closed_at)
    conn.commit()
    assert notify.deliver_due(conn, closed_at, public_base_url=BASE).delivered == 1
    closed = orjson.loads(wecom.requests[-1][2])["markdown"]["content"]
    assert closed.startswith("### [已关闭]")
    assert "**原因分析**：设定温度被调低" in closed and "**整改措施**：恢复26℃并锁定面板" in closed
    events = conn.execute("SELECT event, target_name FROM notifications ORDER BY id").fetchall()
    assert events == [("raised", "wecom-1"), ("resolved", "wecom-1"), ("closed", "wecom-1")]
    assert feishu.requests == []


def test_a_notice_that_cannot_be_put_into_words_fails_without_blocking_the_queue(
    registered: psycopg.Connection[Any], wecom: Receiver
) -> None:
    conn = registered
    _allow_loopback(conn)
    _add(conn, "wecom", wecom.url(f"/cgi-bin/webhook/send?key={WECOM_KEY}"))
    alert_id = record_outputs(conn, site_model(), [started(T0)], now=CONFIRMED).alert_ids[0]
    # A notice made by hand without the alert's summary, queued before the real one.
    notice = notify.AlertNotice(alert_id, SITE, "raised", 0, None, {"id": alert_id})
    notify.queue(conn, [notice], T0)
    conn.commit()
    report = notify.deliver_due(conn, CONFIRMED, public_base_url=BASE)
    assert (report.failed, report.delivered) == (1, 1)
    assert len(wecom.requests) == 1


def test_reminders_repeat_until_someone_acknowledges(
    registered: psycopg.Connection[Any], wecom: Receiver
) -> None:
    conn = registered
    _allow_loopback(conn)
    url = wecom.url(f"/cgi-bin/webhook/send?key={WECOM_KEY}")
    _add(conn, "wecom", url, repeat_interval_s=3600)
    alert_id = record_outputs(conn, site_model(), [started(T0)], now=CONFIRMED).alert_ids[0]
    conn.commit()
    notify.deliver_due(conn, CONFIRMED, public_base_url=BASE)
    assert notify.queue_reminders(conn, CONFIRMED + dt.timedelta(minutes=59)) == 0
    hour = CONFIRMED + dt.timedelta(hours=1)
    assert notify.queue_reminders(conn, hour) == 1
    assert notify.queue_reminders(conn, hour) == 0  # the reminder is now the latest notice
    conn.commit()
    assert notify.deliver_due(conn, hour, public_base_url=BASE).delivered == 1
    text = orjson.loads(wecom.requests[-1][2])["markdown"]["content"]
    assert text.startswith("### [未确认提醒] 测试楼 (alerts-hq) 第三条")
    lifecycle.acknowledge(conn, alert_id, "王工", "在处理", now=hour + dt.timedelta(minutes=5))
    conn.commit()
    assert notify.queue_reminders(conn, hour + dt.timedelta(hours=2)) == 0


# ---- rate limit per receiver ----


def test_a_receivers_rate_limit_holds_messages_back_without_dropping_them(
    registered: psycopg.Connection[Any], wecom: Receiver
) -> None:
    conn = registered
    _allow_loopback(conn)
    url = wecom.url(f"/cgi-bin/webhook/send?key={WECOM_KEY}")
    _add(conn, "wecom", url, max_per_minute=1)
    outputs = [started(T0), started(T0, device="th-301", space="b1-3f-301")]
    record_outputs(conn, site_model(), outputs, now=CONFIRMED)
    conn.commit()
    first = notify.deliver_due(conn, CONFIRMED, public_base_url=BASE)
    assert (first.delivered, first.deferred) == (1, 1)
    assert len(wecom.requests) == 1
    waiting = conn.execute(
        "SELECT attempts, next_attempt_at FROM notifications WHERE state = 'pending'"
    ).fetchone()
    assert waiting == (0, CONFIRMED + dt.timedelta(minutes=1))  # no attempt spent on waiting
    assert notify.deliver_due(conn, CONFIRMED + dt.timedelta(seconds=59)).delivered == 0
    later = notify.deliver_due(conn, CONFIRMED + dt.timedelta(minutes=1), public_base_url=BASE)
    assert (later.delivered, later.deferred) == (1, 0)
    assert len(wecom.requests) == 2


def test_robots_have_their_vendors_rate_limit_by_default(
    registered: psycopg.Connection[Any], wecom: Receiver
) -> None:
    """20 messages a minute to a WeCom robot (more are refused with errcode 45009)."""
    conn = registered
    _allow_loopback(conn)
    _add(conn, "wecom", wecom.url(f"/cgi-bin/webhook/send?key={WECOM_KEY}"))
    record_outputs(conn, site_model(), [started(T0)], now=CONFIRMED)
    conn.execute(  # 20 attempts in the last minute, as a burst of alerts leaves them
        "INSERT INTO notification_attempts (notification_id, at, status, error, duration_ms)"
        " SELECT 1, %s, 200, NULL, 1.0 FROM generate_series(1, 20)",
        (CONFIRMED - dt.timedelta(seconds=30),),
    )
    conn.commit()
    assert notify.deliver_due(conn, CONFIRMED, public_base_url=BASE).deferred == 1
    assert wecom.requests == []


# ---- a receiver that keeps failing is shown ----


def test_a_receiver_that_keeps_failing_is_shown_as_failing(
    registered: psycopg.Connection[Any],
    wecom: Receiver,
    alerts_db_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    conn = registered
    _allow_loopback(conn)
    target_id = _add(conn, "wecom", wecom.url("/cgi-bin/webhook/send?key=revoked"))
    _raise_and_deliver(conn)
    (row,) = webhooks.target_rows(conn)
    assert (row["failed_attempts"], row["failing"]) == (1, False)
    now = CONFIRMED
    for _ in range(webhooks.FAILING_AFTER - 1):
        now += dt.timedelta(hours=1)
        notify.deliver_due(conn, now, public_base_url=BASE)
    (row,) = webhooks.target_rows(conn)
    assert row["id"] == target_id and row["kind"] == "wecom"
    assert (row["failed_attempts"], row["failing"]) == (webhooks.FAILING_AFTER, True)
    assert row["last_error"] == "robot refused: code 93000: invalid webhook url"
    assert row["last_success_at"] is None and "revoked" not in row["url"]
    assert main(["webhook", "list", "--database-url", alerts_db_url]) == 0
    listed = capsys.readouterr().out
    assert "FAILING: 3 attempt(s) in a row" in listed and "code 93000" in listed
    assert "revoked" not in listed
    # Back in order (the key fixed): the next success clears the streak.
    webhooks.change_target(
        conn, target_id, {"url": wecom.url(f"/cgi-bin/webhook/send?key={WECOM_KEY}")}, "test"
    )
    conn.commit()
    notify.deliver_due(conn, now + dt.timedelta(hours=1), public_base_url=BASE)
    (row,) = webhooks.target_rows(conn)
    assert (row["failed_attempts"], row["failing"], row["delivered"]) == (0, False, 1)
