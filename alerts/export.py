"""The 台账: one period's alerts of a site with clause, responsible party, timeline, cause and
corrective action, as CSV a spreadsheet opens correctly in Chinese (UTF-8 with BOM). Times are
local to the site; the period is [first_day 00:00, last_day 24:00) in the site's timezone and
takes the alerts that started in it."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import dict_row

from config import csvcells
from store import registry
from store.registry import UnknownSite

HEADERS = (
    "告警编号",
    "站点",
    "标准",
    "条款号",
    "条款标题",
    "条款标识",
    "条款版本",
    "条款内容哈希",
    "类别",
    "严重程度",
    "空间",
    "设备",
    "指标",
    "开始时间",
    "确认告警时间",
    "结束时间",
    "最差值",
    "单位",
    "责任方",
    "责任人",
    "未绑定责任方",
    "升级级别",
    "状态",
    "确认人",
    "确认时间",
    "确认说明",
    "关闭人",
    "关闭时间",
    "原因",
    "整改措施",
    "重复发生次数",
    "处理过程",
)
KIND = {"violation": "违规", "warning": "预警", "data_quality": "数据质量"}
SEVERITY = {"info": "提示", "warning": "一般", "major": "严重", "critical": "紧急"}
STATE = {"firing": "告警中", "acknowledged": "已确认", "resolved": "已恢复", "closed": "已关闭"}
ACTION = {
    "raised": "触发",
    "escalated": "升级",
    "acknowledged": "确认",
    "resolved": "恢复",
    "reopened": "重新触发",
    "closed": "关闭",
    "notified": "通知",
    "corrected": "更正",  # late input re-judged (alerts/record.correct_alerts)
}


def ledger_csv(
    conn: psycopg.Connection[Any], site: str, first_day: dt.date, last_day: dt.date
) -> bytes:
    """The 台账 of `site` for the days first_day..last_day (inclusive), UTF-8 with BOM. Raises
    UnknownSite for a site not in the registry and ValueError for a reversed period."""
    if last_day < first_day:
        raise ValueError("the period ends before it begins")
    registered = registry.site_row(conn, site)
    if registered is None:
        raise UnknownSite(f"no site {site!r}")
    zone = registered.zone()
    start = dt.datetime.combine(first_day, dt.time(0), zone)
    end = dt.datetime.combine(last_day + dt.timedelta(days=1), dt.time(0), zone)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT * FROM alerts WHERE site = %s AND started_at >= %s AND started_at < %s"
            " ORDER BY started_at, id",
            (site, start, end),
        )
        alerts = cur.fetchall()
        cur.execute(
            "SELECT t.alert_id, t.at, t.action, t.actor, t.note FROM alert_timeline t"
            " WHERE t.alert_id = ANY(%s) ORDER BY t.alert_id, t.id",
            ([a["id"] for a in alerts],),
        )
        timeline: dict[int, list[str]] = {}
        for step in cur.fetchall():
            line = f"{_local(step['at'], zone)} {ACTION.get(step['action'], step['action'])}"
            line += f" {step['actor']}"
            if step["note"]:
                line += f"：{step['note']}"
            timeline.setdefault(step["alert_id"], []).append(line)
    out = io.StringIO()
    writer = csvcells.writer(out, lineterminator="\r\n")
    writer.writerow(HEADERS)
    for alert in alerts:
        writer.writerow(_row(alert, timeline.get(alert["id"], []), zone))
    return out.getvalue().encode("utf-8-sig")


def _row(alert: dict[str, Any], steps: list[str], zone: ZoneInfo) -> list[str]:
    return [
        str(alert["id"]),
        alert["site"],
        alert["standard"],
        alert["number"],
        alert["title"],
        alert["clause_id"],
        str(alert["clause_version"]),
        alert["content_hash"],
        KIND.get(alert["kind"], alert["kind"]),
        SEVERITY.get(alert["severity"], alert["severity"]),
        alert["space"],
        alert["device"] or "",
        alert["metric"] or "",
        _local(alert["started_at"], zone),
        _local(alert["confirmed_at"], zone),
        _local(alert["ended_at"], zone),
        "" if alert["worst_value"] is None else f"{alert['worst_value']:g}",
        alert["unit"] or "",
        alert["responsible_party"] or "",
        alert["responsible_name"] or "",
        "是" if alert["unbound"] else "否",
        str(alert["escalation_level"]),
        STATE.get(alert["state"], alert["state"]),
        alert["acknowledged_by"] or "",
        _local(alert["acknowledged_at"], zone),
        alert["acknowledged_note"] or "",
        alert["closed_by"] or "",
        _local(alert["closed_at"], zone),
        alert["cause"] or "",
        alert["corrective_action"] or "",
        str(alert["reopen_count"]),
        "\n".join(steps),
    ]


def _local(at: dt.datetime | None, zone: ZoneInfo) -> str:
    return "" if at is None else at.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S")
