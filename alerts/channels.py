"""Notification channels: how one notification reaches one target, in the target kind's own
wire format and signing scheme.

- `webhook`: POST of the JSON payload (docs/alerts.md), `X-Clausewatch-Signature` = HMAC-SHA256
  of `timestamp.body` (alerts/outbound.py); delivered on 2xx.
- `wecom`: POST `{"msgtype": "markdown"|"text", ...}` to the robot's URL, its `key` in the
  query (no signature); delivered on 2xx with `errcode` 0.
- `dingtalk`: POST `{"msgtype": "markdown"|"text", ...}`, with `timestamp` (ms) and `sign` added
  to the query: base64 of HMAC-SHA256 keyed with the secret over `timestamp\nsecret`; 2xx with
  `errcode` 0.
- `feishu`: POST `{"timestamp", "sign", "msg_type": "post", "content"}`, `sign` = base64 of
  HMAC-SHA256 keyed with `timestamp\nsecret` over an empty message; 2xx with `code` 0.
- `email`: SMTP (`smtp://host:port`, STARTTLS unless `starttls: false`; `smtps://` TLS from the
  start), login when `username` is set (the secret is the password); every recipient accepted.
- `sms`: POST of the operator's body template (JSON or form) with its placeholders filled in;
  2xx (and `ok_field` = `ok_value` when set).

A chat robot answers HTTP 200 also when it refuses a message (bad signature, rate limit,
keyword missing): its reply's error code decides. Every host, an SMTP server's included, is
checked by the address policy and the allow-list (alerts/outbound.py) after resolution, and
the connection goes to the address checked. What a send returns as its error never holds the
URL, the secret or a password: it is recorded on the alert's timeline.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import hmac
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from alerts import messages, outbound

Kind = Literal["webhook", "wecom", "dingtalk", "feishu", "email", "sms"]
KINDS: tuple[Kind, ...] = ("webhook", "wecom", "dingtalk", "feishu", "email", "sms")
# A receiver should answer at once and do its work later; past this it counts as down.
REQUEST_TIMEOUT_S = 5.0
NOTIFICATION_HEADER = "X-Clausewatch-Notification"
# Messages a minute a receiver takes unless its target says otherwise: a WeCom or DingTalk
# robot refuses more than 20 a minute (errcode 45009 / 130101), a Feishu robot 100.
DEFAULT_PER_MINUTE: dict[str, int] = {"wecom": 20, "dingtalk": 20, "feishu": 100}
USER_AGENT = "clausewatch-notifier"
# The robots' own limits on a message (bytes of UTF-8): WeCom markdown 4096, text 2048;
# DingTalk 20000; Feishu about 30 KB for a request.
_MAX_BYTES: dict[tuple[str, str], int] = {
    ("wecom", "markdown"): 4096,
    ("wecom", "text"): 2048,
    ("dingtalk", "markdown"): 20000,
    ("dingtalk", "text"): 20000,
}
# A Feishu post's lines of a group's alerts stop at this many bytes (the request is limited to
# about 30 KB); the title, count and link come before them.
_FEISHU_ITEM_BYTES = 20000
# The values an SMS body template may use, `{name}` inside any string of the template.
SMS_PLACEHOLDERS = ("text", "title", "link", "alert_id", "site", "phones", "secret")
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
_EMAIL = re.compile(r"^[^@\s<>\"',;]{1,64}@[A-Za-z0-9.-]{1,253}$")
_PHONE = re.compile(r"^\+?[0-9][0-9 -]{3,30}$")


# ---- each kind's options (not secret: shown by the API and the command line) ----


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebhookOptions(_Options):
    pass


class RobotOptions(_Options):
    """WeCom and DingTalk robots: Markdown (default) or plain text."""

    msgtype: Literal["markdown", "text"] = "markdown"


class FeishuOptions(_Options):
    pass


EmailAddress = Annotated[str, StringConstraints(pattern=_EMAIL.pattern, max_length=320)]
Phone = Annotated[str, StringConstraints(pattern=_PHONE.pattern)]


class EmailOptions(_Options):
    """`sender`: the From address; `to`: fixed recipients (none: the party's contacts.email);
    `username`: log in with it and the target's secret; `starttls`: for smtp:// (default on);
    `ca_file`: a PEM file on the server's host with the CA that signed the SMTP server's
    certificate (an in-house CA), instead of the system's."""

    sender: EmailAddress
    to: Annotated[list[EmailAddress], Field(max_length=50)] = []
    username: Annotated[str, StringConstraints(min_length=1, max_length=320)] | None = None
    starttls: bool = True
    ca_file: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = None


TemplateValue = str | int | float | bool | None | list[Any] | dict[str, Any]


class SmsOptions(_Options):
    """`body`: the gateway's request body with `{placeholders}` (SMS_PLACEHOLDERS) in its
    strings; `form`: send it form-encoded (flat, string values) instead of JSON; `headers`:
    extra request headers (placeholders too, e.g. `Authorization: Bearer {secret}`); `to`: fixed
    phone numbers (none: the party's contacts.phone); `ok_field`/`ok_value`: a reply whose JSON
    field (dotted path) is not this value is a failed delivery (gateways answering 200)."""

    body: Annotated[dict[str, TemplateValue], Field(min_length=1, max_length=50)]
    form: bool = False
    headers: Annotated[
        dict[
            Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{1,64}$")],
            Annotated[str, StringConstraints(max_length=1024)],
        ],
        Field(max_length=20),
    ] = {}
    to: Annotated[list[Phone], Field(max_length=50)] = []
    ok_field: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.]{1,128}$")] | None = None
    ok_value: str | int | bool | None = None


_OPTIONS: dict[str, type[_Options]] = {
    "webhook": WebhookOptions,
    "wecom": RobotOptions,
    "dingtalk": RobotOptions,
    "feishu": FeishuOptions,
    "email": EmailOptions,
    "sms": SmsOptions,
}
_FORBIDDEN_HEADERS = {"host", "content-length", "content-type", "transfer-encoding", "connection"}


class InvalidConfig(ValueError):
    """A target's kind, URL, secret or options that cannot be used; `field` names which."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def parse_options(kind: str, options: Mapping[str, Any]) -> _Options:
    """The options of a `kind` target, checked; raises InvalidConfig("options", ...)."""
    model = _OPTIONS.get(kind)
    if model is None:
        raise InvalidConfig("kind", f"a target's kind is one of {', '.join(KINDS)}")
    try:
        size = len(orjson.dumps(dict(options)))
    except orjson.JSONEncodeError:  # integers past 64 bits: JSON has them, orjson does not
        raise InvalidConfig("options", "a target's options hold no integer past 64 bits") from None
    if size > 16384:
        raise InvalidConfig("options", "a target's options are at most 16 KB of JSON")
    try:
        parsed = model.model_validate(dict(options))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or kind}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidConfig("options", f"options of a {kind} target: {problems}") from None
    if isinstance(parsed, SmsOptions):
        _check_sms(parsed)
    return parsed


def _check_sms(options: SmsOptions) -> None:
    names = _placeholders(options.body) | _placeholders(options.headers)
    unknown = sorted(names - set(SMS_PLACEHOLDERS))
    if unknown:
        raise InvalidConfig(
            "options",
            f"unknown placeholders {unknown} in the SMS template; known: {list(SMS_PLACEHOLDERS)}",
        )
    if options.form and not all(isinstance(v, str) for v in options.body.values()):
        raise InvalidConfig("options", "a form-encoded SMS body has string values only")
    bad = sorted(h for h in options.headers if h.lower() in _FORBIDDEN_HEADERS)
    if bad:
        raise InvalidConfig("options", f"headers the sender sets itself: {bad}")
    if (options.ok_field is None) != (options.ok_value is None):
        raise InvalidConfig("options", "ok_field and ok_value go together")


def check_url(kind: str, url: str) -> None:
    """Raises InvalidConfig("url", ...) unless `url` suits a `kind` target."""
    if kind == "email":
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018 (parsing the port is the check)
        except ValueError:
            raise InvalidConfig("url", "not a valid port") from None
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise InvalidConfig("url", "an e-mail target's URL is smtp://host[:port] or smtps://")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise InvalidConfig(
                "url", "an SMTP URL is only scheme, host and port (the login is in the options)"
            )
        return
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise InvalidConfig("url", "not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidConfig("url", "an http:// or https:// URL with a host")
    if parsed.fragment:
        raise InvalidConfig("url", "a webhook URL has no #fragment")


def check_secret(kind: str, secret: str, min_webhook: int) -> None:
    """The generic webhook signs with at least `min_webhook` characters; DingTalk and Feishu
    robots need their signing secret (加签 / 签名校验); WeCom uses none (its key is in the
    URL); e-mail's is the password (empty: no login), SMS's what its template's {secret} is."""
    if secret and (not secret.isprintable() or secret != secret.strip()):
        raise InvalidConfig("secret", "a secret has printable characters, no surrounding spaces")
    if kind == "webhook" and len(secret) < min_webhook:
        raise InvalidConfig(
            "secret", f"a webhook's signing secret has at least {min_webhook} characters"
        )
    if kind in ("dingtalk", "feishu") and not secret:
        raise InvalidConfig("secret", f"a {kind} robot is sent signed: give its secret")
    if kind == "email" and not secret.isascii():
        raise InvalidConfig("secret", "an SMTP password is ASCII (SMTP logins carry no other)")
    if kind == "wecom" and secret:
        raise InvalidConfig("secret", "a WeCom robot has no secret (its key is in the URL)")


# ---- signatures ----


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk's `sign`: base64 of HMAC-SHA256 keyed with the secret over `timestamp\\nsecret`
    (URL-encoded where it goes into the query)."""
    message = f"{timestamp_ms}\n{secret}".encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def feishu_sign(secret: str, timestamp_s: int) -> str:
    """Feishu's `sign`: base64 of HMAC-SHA256 keyed with `timestamp\\nsecret` over nothing."""
    key = f"{timestamp_s}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


# ---- sending ----


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt: the status (HTTP, or SMTP reply code) if an answer came, the error (None:
    delivered) and whether no retry can help."""

    status: int | None
    error: str | None
    final: bool = False


def send(
    row: Mapping[str, Any],
    allow: outbound.AllowList,
    resolver: outbound.Resolver,
    public_base_url: str,
) -> Outcome:
    """Sends one notification (`row`: id, kind, url, secret, options, language, payload,
    timezone, site_name) to its target; with `group` in the row (the payloads of a group's
    notices, alerts/routing.py), one message for all of them: the generic webhook gets
    `{"group": {...}, "notifications": [payload, ...]}`, the others `messages.render_group`."""
    kind = row["kind"]
    try:
        options = parse_options(kind, row["options"])
    except InvalidConfig as exc:  # stored before a check was added: no retry helps
        return Outcome(None, f"the target's {exc.field} cannot be used: {exc}", True)
    payload = row["payload"]
    try:
        group = row.get("group")
        if kind == "webhook":
            body = orjson.dumps(_group_payload(row, group) if group else payload)
            headers = outbound.signed_headers(row["secret"], int(time.time()), body)
            return _post(row, row["url"], body, headers, allow, resolver, None)
        try:
            rendered = (
                messages.render_group(
                    group,
                    timezone=row["timezone"],
                    public_base_url=public_base_url,
                    language=row["language"],
                    site_name=row.get("site_name"),
                )
                if group
                else messages.render_action(
                    payload,
                    timezone=row["timezone"],
                    link=messages.action_link(public_base_url, payload["action"]["site"]),
                    language=row["language"],
                    site_name=row.get("site_name"),
                )
                if "action" in payload
                else messages.render(
                    payload,
                    timezone=row["timezone"],
                    link=messages.alert_link(public_base_url, payload["alert"]["id"]),
                    language=row["language"],
                    site_name=row.get("site_name"),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            # Never retried (and never left pending, where it would block the queue).
            return Outcome(None, f"the notice cannot be put into words: {exc!r}", True)
        if isinstance(options, EmailOptions):
            return _send_mail(row, options, rendered, allow, resolver)
        if isinstance(options, SmsOptions):
            return _send_sms(row, options, rendered, allow, resolver)
        if isinstance(options, RobotOptions):
            return _send_robot(row, options.msgtype, rendered, allow, resolver)
        return _send_feishu(row, rendered, allow, resolver)
    except outbound.Refused as exc:
        return Outcome(None, f"refused: {exc}", True)


def _group_payload(row: Mapping[str, Any], group: list[dict[str, Any]]) -> dict[str, Any]:
    """The generic webhook's body for a group: what groups them, then each notice's payload."""
    return {
        "group": {
            "key": row["group_key"],
            "route": row["route"],
            "site": row["site"],
            "clause": group[0]["alert"]["clause"]["id"],
            "count": len(group),
        },
        "notifications": group,
    }


def _send_robot(
    row: Mapping[str, Any],
    msgtype: str,
    rendered: messages.Rendered,
    allow: outbound.AllowList,
    resolver: outbound.Resolver,
) -> Outcome:
    kind = row["kind"]
    limit = _MAX_BYTES[(kind, msgtype)]
    url = row["url"]
    if kind == "wecom":
        text = rendered.markdown() if msgtype == "markdown" else rendered.plain()
        body: dict[str, Any] = {"msgtype": msgtype, msgtype: {"content": _clip(text, limit)}}
    else:
        if msgtype == "markdown":
            content = {"title": rendered.title, "text": _clip(rendered.markdown(), limit)}
        else:
            content = {"content": _clip(rendered.plain(), limit)}
        body = {"msgtype": msgtype, msgtype: content}
        timestamp = int(time.time() * 1000)
        signed = httpx.URL(url).copy_merge_params(
            {"timestamp": str(timestamp), "sign": dingtalk_sign(row["secret"], timestamp)}
        )
        url = str(signed)
    return _post(row, url, orjson.dumps(body), _json_headers(), allow, resolver, _robot_error)


def _send_feishu(
    row: Mapping[str, Any],
    rendered: messages.Rendered,
    allow: outbound.AllowList,
    resolver: outbound.Resolver,
) -> Outcome:
    timestamp = int(time.time())
    paragraphs: list[list[dict[str, str]]] = [
        [{"tag": "text", "text": f"{label}{rendered.colon}{value}"}]
        for label, value in rendered.lines[:-1]
    ]
    label, link = rendered.lines[-1]
    paragraphs.append([{"tag": "a", "text": label, "href": link}])
    budget = _FEISHU_ITEM_BYTES
    for item in rendered.items:
        budget -= len(item.encode())
        if budget < 0:
            paragraphs.append([{"tag": "text", "text": "…"}])
            break
        paragraphs.append([{"tag": "text", "text": item}])
    locale = "zh_cn" if row["language"] == "zh" else "en_us"
    body = {
        "timestamp": str(timestamp),
        "sign": feishu_sign(row["secret"], timestamp),
        "msg_type": "post",
        "content": {"post": {locale: {"title": rendered.title, "content": paragraphs}}},
    }
    return _post(
        row, row["url"], orjson.dumps(body), _json_headers(), allow, resolver, _robot_error
    )


def _send_sms(
    row: Mapping[str, Any],
    options: SmsOptions,
    rendered: messages.Rendered,
    allow: outbound.AllowList,
    resolver: outbound.Resolver,
) -> Outcome:
    phones = _subscriber(row, "user_mobile")
    if phones is None:
        phones = list(options.to) or _party_contact(row, "phone", _PHONE)
    if not phones:
        return Outcome(
            None, "no phone number: the target has none and the party no contacts.phone", True
        )
    subject = row["payload"].get("alert") or row["payload"]["action"]
    values = {
        "text": rendered.short,
        "title": rendered.title,
        "link": rendered.link,
        # An improvement action's notice has no alert: its action's id (alerts/notify.py).
        "alert_id": str(subject["id"]),
        "site": str(subject["site"]),
        "phones": ",".join(phones),
        "secret": row["secret"],
    }
    filled = fill_template(options.body, values)
    headers = _json_headers()
    if options.form:
        body = str(httpx.QueryParams(filled)).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    else:
        body = orjson.dumps(filled)
    for name, value in options.headers.items():
        text = str(fill_template(value, values))
        if not text.isprintable():
            return Outcome(None, f"the SMS header {name} is not printable once filled in", True)
        headers[name] = text

    def check(response: httpx.Response) -> str | None:
        if options.ok_field is None:
            return None
        found: Any = _reply(response)
        for part in options.ok_field.split("."):
            found = found.get(part) if isinstance(found, dict) else None
        if found != options.ok_value:
            return f"gateway answered {options.ok_field} = {str(found)[:100]!r}"
        return None

    return _post(row, row["url"], body, headers, allow, resolver, check)


def fill_template(template: Any, values: Mapping[str, str]) -> Any:
    """`template` with every `{name}` of its strings replaced by `values[name]` (text only:
    nothing is evaluated, and a value is data inside the JSON or form encoding, never syntax)."""
    if isinstance(template, str):
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)
    if isinstance(template, dict):
        return {k: fill_template(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [fill_template(v, values) for v in template]
    return template


def _placeholders(template: Any) -> set[str]:
    if isinstance(template, str):
        return set(_PLACEHOLDER.findall(template))
    if isinstance(template, dict):
        return set().union(*(_placeholders(v) for v in template.values()), set())
    if isinstance(template, list):
        return set().union(*(_placeholders(v) for v in template), set())
    return set()


def _post(
    row: Mapping[str, Any],
    url: str,
    body: bytes,
    headers: dict[str, str],
    allow: outbound.AllowList,
    resolver: outbound.Resolver,
    check: Callable[[httpx.Response], str | None] | None,
) -> Outcome:
    """POSTs to the checked address; `check(response)` -> error for a 2xx that is a refusal."""
    destination = outbound.check_destination(url, allow, resolver)
    headers[NOTIFICATION_HEADER] = str(row["id"])
    headers["User-Agent"] = USER_AGENT
    try:
        response = outbound.post(destination, body, headers, REQUEST_TIMEOUT_S)
    except httpx.HTTPError as exc:
        # Exceptions may quote the request's URL: never recorded (it may hold a token).
        text = str(exc)
        for secret in (str(destination.url), row["url"], row["secret"]):
            if secret:
                text = text.replace(secret, "(hidden)")
        return Outcome(None, f"{type(exc).__name__}: {text}")
    if not response.is_success:
        return Outcome(response.status_code, f"HTTP {response.status_code}")
    error = check(response) if check is not None else None
    return Outcome(response.status_code, error)


def _reply(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None


def _robot_error(response: httpx.Response) -> str | None:
    """A robot's refusal inside an HTTP 200: WeCom and DingTalk `errcode`/`errmsg`, Feishu
    `code`/`msg` (older replies: `StatusCode`/`StatusMessage`)."""
    reply = _reply(response)
    if not isinstance(reply, dict):
        return "the robot's reply is not a JSON object"
    if "errcode" in reply:
        code, message = reply.get("errcode"), reply.get("errmsg")
    else:
        code = reply.get("code", reply.get("StatusCode"))
        message = reply.get("msg", reply.get("StatusMessage"))
    if code == 0:
        return None
    return f"robot refused: code {code}: {str(message)[:200]}"


def _json_headers() -> dict[str, str]:
    return {"Content-Type": "application/json; charset=utf-8"}


def _clip(text: str, max_bytes: int) -> str:
    data = text.encode()
    if len(data) <= max_bytes:
        return text
    return data[: max_bytes - 3].decode(errors="ignore") + "…"


def _subscriber(row: Mapping[str, Any], key: str) -> list[str] | None:
    """A subscriber's notice (alerts/subscriptions.py) goes to that user's contact point only:
    None for other notices, [] when the user has no such contact point."""
    if row.get("user_id") is None:
        return None
    value = row.get(key)
    return [value] if isinstance(value, str) and value else []


def _party_contact(row: Mapping[str, Any], key: str, pattern: re.Pattern[str]) -> list[str]:
    party = row["payload"].get("party") or {}
    value = (party.get("contacts") or {}).get(key)
    return [value] if isinstance(value, str) and pattern.fullmatch(value) else []


# ---- e-mail ----


class _PinnedSMTP(smtplib.SMTP):
    """SMTP to one checked address; the host name stays what STARTTLS verifies."""

    def __init__(self, host: str, address: str, timeout: float) -> None:
        self._address = address
        super().__init__(timeout=timeout)
        self._host = host  # what STARTTLS checks the certificate against (smtplib sets it
        # only when connecting from __init__)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return socket.create_connection((self._address, port), timeout)


class _PinnedSMTPS(smtplib.SMTP_SSL):
    """SMTP over TLS from the start, to one checked address; the certificate must match the
    host name."""

    def __init__(self, address: str, timeout: float, context: ssl.SSLContext) -> None:
        self._address = address
        super().__init__(timeout=timeout, context=context)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        raw = socket.create_connection((self._address, port), timeout)
        return self.context.wrap_socket(raw, server_hostname=host)


def mail_message(
    options: EmailOptions, recipients: list[str], rendered: messages.Rendered, notification: int
) -> EmailMessage:
    """The e-mail of a notification: UTF-8 text, the subject encoded for any mail system
    (RFC 2047), a Message-ID receivers can drop duplicates by."""
    message = EmailMessage()
    message["From"] = email.utils.formataddr(("clausewatch", options.sender))
    message["To"] = ", ".join(recipients)
    message["Subject"] = rendered.title
    message["Date"] = email.utils.format_datetime(dt.datetime.now(dt.UTC))
    domain = options.sender.rsplit("@", 1)[1]
    message["Message-ID"] = f"<notification-{notification}@{domain}>"
    message[NOTIFICATION_HEADER] = str(notification)
    message.set_content(rendered.plain() + "\n", charset="utf-8", cte="base64")
    return message


def _login(client: smtplib.SMTP, username: str, password: str) -> None:
    """One login, PLAIN if the server offers it, else LOGIN (never CRAM-MD5: it needs the
    password kept in the clear on the server). One mechanism only: smtplib's `login` tries the
    next after a refusal, which some servers count as more failed logins."""
    client.ehlo_or_helo_if_needed()
    offered = client.esmtp_features.get("auth", "").upper().split()
    client.user, client.password = username, password
    if "PLAIN" in offered:
        client.auth("PLAIN", client.auth_plain)
    elif "LOGIN" in offered:
        client.auth("LOGIN", client.auth_login)
    else:
        raise smtplib.SMTPNotSupportedError("the server offers no PLAIN or LOGIN login")


def _send_mail(
    row: Mapping[str, Any],
    options: EmailOptions,
    rendered: messages.Rendered,
    allow: outbound.AllowList,
    resolver: outbound.Resolver,
) -> Outcome:
    recipients = _subscriber(row, "user_email")
    if recipients is None:
        recipients = list(options.to) or _party_contact(row, "email", _EMAIL)
    if not recipients:
        return Outcome(
            None, "no recipient: the target has none and the party no contacts.email", True
        )
    parts = urlsplit(row["url"])
    host = parts.hostname or ""
    implicit_tls = parts.scheme == "smtps"
    port = parts.port or (465 if implicit_tls else 25)
    address = outbound.check_host(host, port, allow, resolver)
    message = mail_message(options, recipients, rendered, int(row["id"]))
    context = ssl.create_default_context(cafile=options.ca_file)
    client: smtplib.SMTP = (
        _PinnedSMTPS(address, REQUEST_TIMEOUT_S, context)
        if implicit_tls
        else _PinnedSMTP(host, address, REQUEST_TIMEOUT_S)
    )
    try:
        with client:
            client.connect(host, port)
            if not implicit_tls and options.starttls:
                client.starttls(context=context)
            if options.username is not None:
                _login(client, options.username, row["secret"])
            refused = client.send_message(message, options.sender, recipients)
    except smtplib.SMTPResponseException as exc:
        text = (
            exc.smtp_error.decode(errors="replace")
            if isinstance(exc.smtp_error, bytes)
            else str(exc.smtp_error)
        )
        return Outcome(exc.smtp_code, f"SMTP {exc.smtp_code}: {text[:200]}")
    except smtplib.SMTPRecipientsRefused as exc:
        return Outcome(None, f"SMTP: every recipient refused ({len(exc.recipients)})")
    except (smtplib.SMTPException, OSError, ValueError) as exc:
        text = str(exc).replace(row["secret"], "(hidden)") if row["secret"] else str(exc)
        return Outcome(None, f"{type(exc).__name__}: {text[:200]}")
    if refused:
        return Outcome(250, f"SMTP: {len(refused)} of {len(recipients)} recipients refused")
    return Outcome(250, None)
