"""Energy and carbon reports say when their days, or the coming year, have no State Council
holiday schedule: a note naming the days, the fallback rule and what it affects (clauses judged
on working days, not the energy and carbon figures), in the JSON, the CSV, the text of
`report carbon` and on stderr beside `report energy`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from clausewatch.cli import main
from energy.render import carbon_csv, carbon_out
from energy.reports import CALENDAR_AFFECTS, carbon_report
from rules.holidays import FALLBACK_RULE, OfficialCalendar, official_calendar
from rules.site import HolidayCalendar
from store import registry

pytestmark = pytest.mark.integration
HOUR = dt.timedelta(hours=1)


def test_a_carbon_report_made_on_2026_12_06_names_2027(
    conn: psycopg.Connection[Any], kit: Any
) -> None:
    site = kit.make_site()
    start = kit.local(2026, 11, 1)
    kit.insert_readings(conn, site, "em-main", "energy_kwh", [(start, 0), (start + HOUR, 10)])
    report = carbon_report(conn, site, start, kit.local(2026, 12, 1), today=dt.date(2026, 12, 6))
    out = carbon_out(report)
    (note,) = out.holiday_calendar
    assert (note.year, note.upcoming, note.fallback_rule) == (2027, True, FALLBACK_RULE)
    index = next(i for i, n in enumerate(out.notes) if n.startswith("holiday calendar:"))
    line, line_zh = out.notes[index], out.notes_zh[index]
    assert line_zh.startswith("节假日安排：")
    assert "尚无2027年国务院节假日安排（26天后开始）" in line_zh
    assert line_zh.endswith(CALENDAR_AFFECTS.zh)
    assert "no official holiday schedule for 2027, which starts in 26 day(s)" in line
    assert line.endswith(CALENDAR_AFFECTS.en)
    assert "the energy and carbon figures do not depend on working days" in carbon_csv(report)


def test_a_period_judged_without_a_schedule_is_named_with_its_days(
    conn: psycopg.Connection[Any], kit: Any, calendar_in_use: Callable[[OfficialCalendar], None]
) -> None:
    years = official_calendar().schedules
    calendar_in_use(OfficialCalendar(s for year, s in years.items() if year != 2026))
    site = kit.make_site()
    report = carbon_report(
        conn, site, kit.local(2026, 7, 1), kit.local(2026, 8, 1), today=dt.date(2026, 9, 1)
    )
    assert [n.message for n in report.holiday_calendar] == [
        "no official holiday schedule for 2026: 2026-07-01 to 2026-07-31 judged by the "
        f"fallback rule ({FALLBACK_RULE})"
    ]
    # A site whose working days are Monday to Friday anyway has nothing to be told.
    weekends = site.model_copy(
        update={"site": site.site.model_copy(update={"holidays": HolidayCalendar(kind="weekends")})}
    )
    report = carbon_report(
        conn, weekends, kit.local(2026, 7, 1), kit.local(2026, 8, 1), today=dt.date(2026, 9, 1)
    )
    assert report.holiday_calendar == []
    assert not any("holiday calendar" in n.en for n in report.notes)


def test_report_energy_warns_on_stderr(
    conn: psycopg.Connection[Any],
    kit: Any,
    energy_database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    site = kit.make_site()
    registry.sync_site(conn, site, actor="test", now=kit.local(2026, 1, 1))
    conn.commit()
    # 2099: a year no notice will be bundled for before this test is long retired.
    argv = ["report", "energy", "--database-url", energy_database_url, "--site", site.site.id]
    assert main([*argv, "--from", "2099-01-01", "--to", "2099-01-31", "--format", "csv"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("start,end,key,carrier,value,unit,estimated")
    assert "警告：无2099年国务院节假日安排：2099-01-01至" in captured.err
    assert "warning: no official holiday schedule for 2099: 2099-01-01 to " in captured.err
    assert f"judged by the fallback rule ({FALLBACK_RULE}); {CALENDAR_AFFECTS.en}" in captured.err
