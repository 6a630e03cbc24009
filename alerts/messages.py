"""What a person reads of a notification: a title and lines of text, in Chinese (default) or
English, made from a notification's payload (alerts/notify.py: event, level, party, alert), the
site's time zone and the link to the alert. The channels (alerts/channels.py) put these into
their own formats (Markdown for the chat robots, plain text for e-mail and SMS).

Every value is one line: line breaks inside names, titles or reasons become spaces, so a value
cannot add lines (or Markdown headings) of its own. No I/O here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Language = Literal["zh", "en"]
LANGUAGES: tuple[Language, ...] = ("zh", "en")
# A reason or title longer than this is cut (with "…"): a chat message stays readable, and an
# SMS stays a few segments long.
MAX_VALUE_CHARS = 300

_EVENTS: dict[str, dict[Language, str]] = {
    "raised": {"zh": "告警", "en": "Alert"},
    "escalated": {"zh": "升级告警", "en": "Escalated alert"},
    "reminder": {"zh": "未确认提醒", "en": "Reminder, unacknowledged"},
    "resolved": {"zh": "已恢复", "en": "Resolved"},
    "closed": {"zh": "已关闭", "en": "Closed"},
    "action_overdue": {"zh": "整改逾期", "en": "Improvement action overdue"},
    "action_escalated": {"zh": "整改逾期升级", "en": "Overdue improvement action escalated"},
}
_SEVERITIES: dict[str, dict[Language, str]] = {
    "critical": {"zh": "严重", "en": "critical"},
    "major": {"zh": "重要", "en": "major"},
    "warning": {"zh": "警告", "en": "warning"},
    "info": {"zh": "提示", "en": "info"},
}
_KINDS: dict[str, dict[Language, str]] = {
    "violation": {"zh": "违规", "en": "violation"},
    "warning": {"zh": "预警", "en": "warning"},
    "data_quality": {"zh": "数据质量", "en": "data quality"},
}
_LABELS: dict[str, dict[Language, str]] = {
    "standard": {"zh": "标准", "en": "Standard"},
    "clause": {"zh": "条款", "en": "Clause"},
    "subject": {"zh": "对象", "en": "Subject"},
    "severity": {"zh": "级别", "en": "Severity"},
    "responsible": {"zh": "责任方", "en": "Responsible"},
    "notified": {"zh": "通知对象", "en": "Notified"},
    "started": {"zh": "开始时间", "en": "Started"},
    "ended": {"zh": "结束时间", "en": "Ended"},
    "cause": {"zh": "原因分析", "en": "Cause"},
    "action": {"zh": "整改措施", "en": "Corrective action"},
    "worst": {"zh": "最差值", "en": "Worst value"},
    "reason": {"zh": "原因", "en": "Reason"},
    "link": {"zh": "详情", "en": "Details"},
    "count": {"zh": "告警数", "en": "Alerts"},
    "improvement": {"zh": "整改措施", "en": "Improvement action"},
    "owner": {"zh": "责任人", "en": "Owner"},
    "deadline": {"zh": "整改期限", "en": "Deadline"},
    "period": {"zh": "评价期间", "en": "Evaluated"},
}
_GROUP: dict[Language, str] = {"zh": "共 {n} 条", "en": "{n} alerts"}
_UPDATE: dict[Language, str] = {"zh": "告警组更新", "en": "Alert group update"}
# An SMS names this many subjects of a group at most (then "…").
SHORT_SUBJECTS = 5
_SPACE: dict[Language, str] = {"zh": "空间", "en": "space"}
_DEVICE: dict[Language, str] = {"zh": "设备", "en": "device"}
_UNBOUND: dict[Language, str] = {"zh": "未指定", "en": "none assigned"}
_LEVEL: dict[Language, str] = {"zh": "第 {level} 级", "en": "level {level}"}


@dataclass(frozen=True, slots=True)
class Rendered:
    """A notification as text: `title` (an e-mail's subject, a chat card's title), `lines`
    (label, value) in order, the `link` to the alert and a one-line `short` text (SMS). A
    group's message (`render_group`) also has `items`, one line per alert, after the link (so a
    channel's size limit cuts the list, never the link)."""

    title: str
    lines: tuple[tuple[str, str], ...]
    link: str
    short: str
    colon: str = "："  # between a label and its value: full width in Chinese
    items: tuple[str, ...] = ()

    def plain(self) -> str:
        body = "\n".join(f"{label}{self.colon}{value}" for label, value in self.lines)
        items = "".join(f"\n{item}" for item in self.items)
        return f"{self.title}\n{body}{items}"

    def markdown(self) -> str:
        body = "\n".join(f"> **{label}**{self.colon}{value}  " for label, value in self.lines[:-1])
        label, link = self.lines[-1]
        items = "".join(f"\n- {item}" for item in self.items)
        return f"### {self.title}\n{body}\n\n[{label}]({link})" + (f"\n{items}" if items else "")


def alert_link(public_base_url: str, alert_id: int) -> str:
    return f"{public_base_url.rstrip('/')}/alerts/{alert_id}"


def action_link(public_base_url: str, site: str) -> str:
    """Where an improvement action is followed up: the site's statistics page (its open
    actions, each with a button that records it done)."""
    return f"{public_base_url.rstrip('/')}/statistics?site={quote(site, safe='')}"


def local_time(value: str | None, timezone: str | None) -> str:
    """An ISO time as the site's wall clock with its zone: `2026-07-01 09:15 (Asia/Shanghai,
    UTC+08:00)`; UTC when the zone is unknown."""
    if not value:
        return "-"
    moment = dt.datetime.fromisoformat(value)
    try:
        zone: dt.tzinfo = ZoneInfo(timezone) if timezone else dt.UTC
    except (ZoneInfoNotFoundError, ValueError):
        zone, timezone = dt.UTC, None
    local = moment.astimezone(zone)
    offset = local.strftime("%z")
    return f"{local:%Y-%m-%d %H:%M} ({timezone or 'UTC'}, UTC{offset[:3]}:{offset[3:]})"


def render(
    payload: dict[str, Any],
    *,
    timezone: str | None,
    link: str,
    language: Language = "zh",
    site_name: str | None = None,
) -> Rendered:
    """The text of a notification payload (`notify.notification_rows`); `site_name`: the
    site's name, shown before its id."""
    alert = payload["alert"]
    clause = alert["clause"]
    subject = alert["subject"]
    event = _EVENTS.get(payload["event"], {"zh": payload["event"], "en": payload["event"]})
    severity = _SEVERITIES.get(
        alert["severity"], {"zh": alert["severity"], "en": alert["severity"]}
    )
    kind = _KINDS.get(alert["kind"], {"zh": alert["kind"], "en": alert["kind"]})
    where = _where(subject, language)
    responsible = alert["responsible"]
    who = _one(responsible.get("name") or responsible.get("party") or _UNBOUND[language])
    party = payload.get("party") or {}
    notified = _LEVEL[language].format(level=payload["level"])
    if party.get("name"):
        notified = f"{_one(party['name'])} ({notified})"
    clause_text = _one(f"{clause['number']} {clause['title']}")
    colon, comma, semicolon = ("：", "，", "；") if language == "zh" else (": ", ", ", "; ")
    site = _one(f"{site_name} ({alert['site']})" if site_name else alert["site"])
    title = _one(f"[{event[language]}] {site} {clause_text}")
    lines: list[tuple[str, str]] = [
        (_LABELS["standard"][language], _one(clause["standard"])),
        (_LABELS["clause"][language], f"{clause_text} (v{clause['version']})"),
        (_LABELS["subject"][language], f"{site} {where}"),
        (_LABELS["severity"][language], f"{severity[language]} · {kind[language]}"),
        (_LABELS["responsible"][language], who),
        (_LABELS["notified"][language], notified),
        (_LABELS["started"][language], local_time(alert["started_at"], timezone)),
    ]
    if alert.get("ended_at"):
        lines.append((_LABELS["ended"][language], local_time(alert["ended_at"], timezone)))
    if alert.get("worst_value") is not None:
        lines.append((_LABELS["worst"][language], f"{alert['worst_value']} {alert['unit'] or ''}"))
    if alert.get("reason"):
        lines.append((_LABELS["reason"][language], _one(alert["reason"])))
    for key, label in (("cause", "cause"), ("corrective_action", "action")):
        if alert.get(key):
            lines.append((_LABELS[label][language], _one(alert[key])))
    lines.append((_LABELS["link"][language], link))
    short = (
        f"{event[language]}{colon}{site} {where}{comma}{_one(clause['standard'])} {clause_text}"
        f"{semicolon}{_LABELS['responsible'][language]} {who}{semicolon}"
        f"{local_time(alert['started_at'], timezone)}{semicolon}{link}"
    )
    return Rendered(title=title, lines=tuple(lines), link=link, short=short, colon=colon)


def render_action(
    payload: dict[str, Any],
    *,
    timezone: str | None,
    link: str,
    language: Language = "zh",
    site_name: str | None = None,
) -> Rendered:
    """The text of an overdue improvement action's notice (`notify.queue_actions`): the
    action, its clause, owner and deadline, who is told at which level, and the link."""
    action = payload["action"]
    clause = action["clause"]
    event = _event(payload["event"])[language]
    colon, semicolon = ("：", "；") if language == "zh" else (": ", "; ")
    site = _one(f"{site_name} ({action['site']})" if site_name else action["site"])
    clause_text = _one(f"{clause['number']} {clause['title']}")
    party = payload.get("party") or {}
    notified = _LEVEL[language].format(level=payload["level"])
    if party.get("name"):
        notified = f"{_one(party['name'])} ({notified})"
    deadline = local_time(action["deadline"], timezone)
    lines = (
        (_LABELS["improvement"][language], _one(action["action"])),
        (_LABELS["standard"][language], _one(clause["standard"])),
        (_LABELS["clause"][language], clause_text),
        (_LABELS["subject"][language], site),
        (_LABELS["period"][language], _one(action["period"])),
        (_LABELS["owner"][language], _one(action["owner"])),
        (_LABELS["deadline"][language], deadline),
        (_LABELS["notified"][language], notified),
        (_LABELS["link"][language], link),
    )
    short = (
        f"{event}{colon}{site} {_one(action['action'])}{semicolon}"
        f"{_LABELS['owner'][language]} {_one(action['owner'])}{semicolon}"
        f"{_LABELS['deadline'][language]} {deadline}{semicolon}{link}"
    )
    return Rendered(
        title=_one(f"[{event}] {site} {clause_text}"),
        lines=lines,
        link=link,
        short=short,
        colon=colon,
    )


def render_group(
    payloads: list[dict[str, Any]],
    *,
    timezone: str | None,
    public_base_url: str,
    language: Language = "zh",
    site_name: str | None = None,
) -> Rendered:
    """One message for the notices of a group (one site and clause, alerts/routing.py): the
    standard, clause and site once, the count, and every alert on a line of its own with its
    notice (raised, resolved, ...), subject, start, end, worst value, responsible party and
    link."""
    first = payloads[0]
    alert = first["alert"]
    clause = alert["clause"]
    events = {p["event"] for p in payloads}
    event = _event(first["event"])[language] if len(events) == 1 else _UPDATE[language]
    severity = _SEVERITIES.get(
        alert["severity"], {"zh": alert["severity"], "en": alert["severity"]}
    )
    kind = _KINDS.get(alert["kind"], {"zh": alert["kind"], "en": alert["kind"]})
    colon, comma, semicolon = ("：", "，", "；") if language == "zh" else (": ", ", ", "; ")
    site = _one(f"{site_name} ({alert['site']})" if site_name else alert["site"])
    clause_text = _one(f"{clause['number']} {clause['title']}")
    count = _GROUP[language].format(n=len(payloads))
    title = _one(f"[{event}] {site} {clause_text} ({count})")
    link = alert_link(public_base_url, alert["id"])
    party = first.get("party") or {}
    notified = _LEVEL[language].format(level=first["level"])
    if party.get("name"):
        notified = f"{_one(party['name'])} ({notified})"
    lines = (
        (_LABELS["standard"][language], _one(clause["standard"])),
        (_LABELS["clause"][language], f"{clause_text} (v{clause['version']})"),
        (_LABELS["subject"][language], site),
        (_LABELS["severity"][language], f"{severity[language]} · {kind[language]}"),
        (_LABELS["notified"][language], notified),
        (_LABELS["count"][language], count),
        (_LABELS["link"][language], link),
    )
    items: list[str] = []
    wheres: list[str] = []
    for n, payload in enumerate(payloads, 1):
        each = payload["alert"]
        where = _where(each["subject"], language)
        wheres.append(where)
        responsible = each["responsible"]
        who = _one(responsible.get("name") or responsible.get("party") or _UNBOUND[language])
        parts = [
            f"{n}. [{_event(payload['event'])[language]}] {where}",
            f"{_LABELS['started'][language]} {local_time(each['started_at'], timezone)}",
        ]
        if each.get("ended_at"):
            parts.append(f"{_LABELS['ended'][language]} {local_time(each['ended_at'], timezone)}")
        if each.get("worst_value") is not None:
            worst = f"{each['worst_value']} {each['unit'] or ''}".rstrip()
            parts.append(f"{_LABELS['worst'][language]} {worst}")
        parts.append(f"{_LABELS['responsible'][language]} {who}")
        parts.append(alert_link(public_base_url, each["id"]))
        items.append(" · ".join(parts))
    named = ("、" if language == "zh" else ", ").join(wheres[:SHORT_SUBJECTS])
    if len(wheres) > SHORT_SUBJECTS:
        named += "…"
    short = (
        f"{event}{colon}{site}{comma}{_one(clause['standard'])} {clause_text}{semicolon}"
        f"{count}{colon}{named}{semicolon}{link}"
    )
    return Rendered(
        title=title, lines=lines, link=link, short=short, colon=colon, items=tuple(items)
    )


def _event(event: str) -> dict[Language, str]:
    return _EVENTS.get(event, {"zh": event, "en": event})


def _where(subject: dict[str, Any], language: Language) -> str:
    where = f"{_SPACE[language]} {_one(subject['space'])}"
    if subject.get("device"):
        where += f" / {_DEVICE[language]} {_one(subject['device'])}"
    return where


def _one(value: Any) -> str:
    """A value as one line of at most MAX_VALUE_CHARS characters."""
    text = " ".join(str(value).split())
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"
