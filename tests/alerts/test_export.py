"""The 台账 export: a period's alerts as CSV a Chinese spreadsheet opens as is."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path
from typing import Any

import psycopg
import pytest

from alerts.export import HEADERS, ledger_csv
from alerts.lifecycle import acknowledge, close
from alerts.record import record_outputs
from clausewatch.cli import main
from store.registry import UnknownSite
from tests.alerts.conftest import T0, ended, site_model, started

pytestmark = pytest.mark.integration


def _period_with_one_closed_alert(conn: psycopg.Connection[Any]) -> int:
    end = T0 + dt.timedelta(minutes=40)
    alert_id = record_outputs(conn, site_model(), [started(T0), ended(end, T0)], now=end).alert_ids[
        0
    ]
    acknowledge(conn, alert_id, "wang", "已派人", now=end)
    close(conn, alert_id, "wang", "面板被调低", "恢复26℃并加锁", now=end + dt.timedelta(hours=1))
    # Next day, outside a one-day period.
    record_outputs(conn, site_model(), [started(T0 + dt.timedelta(days=1), device="x")], now=T0)
    conn.commit()
    return alert_id


def test_the_ledger_csv_has_a_bom_chinese_headers_and_the_whole_story(
    registered: psycopg.Connection[Any],
) -> None:
    alert_id = _period_with_one_closed_alert(registered)
    day = T0.date()  # 2026-07-01, 08:00 local
    data = ledger_csv(registered, "alerts-hq", day, day)
    assert data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert tuple(rows[0]) == HEADERS and len(rows) == 2
    row = dict(zip(HEADERS, rows[1], strict=True))
    assert row["告警编号"] == str(alert_id)
    assert (row["条款号"], row["责任方"], row["责任人"]) == ("第三条", "wang", "王工")
    assert row["开始时间"] == "2026-07-01 08:00:00"  # local time of the site
    assert (row["状态"], row["原因"], row["整改措施"]) == ("已关闭", "面板被调低", "恢复26℃并加锁")
    steps = row["处理过程"].splitlines()
    assert [s.split(" ")[2] for s in steps] == ["触发", "恢复", "确认", "关闭"]


def test_unknown_site_and_reversed_period_are_errors(registered: psycopg.Connection[Any]) -> None:
    with pytest.raises(UnknownSite):
        ledger_csv(registered, "nowhere", T0.date(), T0.date())
    with pytest.raises(ValueError, match="ends before"):
        ledger_csv(registered, "alerts-hq", T0.date(), T0.date() - dt.timedelta(days=1))


def test_report_ledger_command_writes_the_file(
    registered: psycopg.Connection[Any], alerts_db_url: str, tmp_path: Path
) -> None:
    _period_with_one_closed_alert(registered)
    out = tmp_path / "台账.csv"
    argv = ["report", "ledger", "--database-url", alerts_db_url, "--site", "alerts-hq"]
    assert main([*argv, "--from", "2026-07-01", "--to", "2026-07-02", "--out", str(out)]) == 0
    assert len(out.read_bytes().decode("utf-8-sig").strip().split("\r\n")) >= 3
    assert main([*argv[:-1], "nowhere", "--from", "2026-07-01", "--to", "2026-07-01"]) == 2


def test_formula_cells_in_the_ledger_csv_are_neutralised_numbers_stay_numbers(
    registered: psycopg.Connection[Any],
) -> None:
    """A close cause typed as a spreadsheet formula reaches the 台账 as text (a leading '), so
    Excel or WPS shows it instead of running it; ids and values stay plain numbers."""
    end = T0 + dt.timedelta(minutes=40)
    (alert_id,) = record_outputs(
        registered, site_model(), [started(T0), ended(end, T0)], now=end
    ).alert_ids
    cause = '=HYPERLINK("http://x","y")'
    close(registered, alert_id, "wang", cause, "@SUM(1+1)", now=end + dt.timedelta(hours=1))
    registered.commit()
    data = ledger_csv(registered, "alerts-hq", T0.date(), T0.date())
    (row,) = [
        dict(zip(HEADERS, r, strict=True))
        for r in list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))[1:]
    ]
    assert row["原因"] == "'" + cause
    assert row["整改措施"] == "'@SUM(1+1)"
    assert row["告警编号"] == str(alert_id)
    assert row["最差值"] == "23.8"
