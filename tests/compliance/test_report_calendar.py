"""The quarterly report says when its days, or the coming year, have no State Council holiday
schedule: a line naming the days and the fallback rule they are judged by, in the HTML, the CSV
and the stored figures; nothing for a year that has one."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from compliance.reports import generate_report
from rules.holidays import FALLBACK_RULE, FALLBACK_RULE_ZH, OfficialCalendar, official_calendar
from tests.compliance.conftest import PUBLIC_SITE

pytestmark = pytest.mark.integration
NOW = dt.datetime(2026, 12, 6, 4, 0, tzinfo=dt.UTC)  # 12:00 in Shanghai


def stored(conn: psycopg.Connection[Any], report_id: int) -> tuple[str, str, dict[str, Any]]:
    row = conn.execute(
        "SELECT html, csv, figures FROM evaluation_reports WHERE id = %s", (report_id,)
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def test_a_report_made_on_2026_12_06_names_2027_and_the_fallback_rule(
    conn: psycopg.Connection[Any],
) -> None:
    report_id, report = generate_report(conn, PUBLIC_SITE, "2026Q4", "test", NOW)
    (note,) = report.holiday_calendar
    assert (note.year, note.first, note.upcoming) == (2027, dt.date(2027, 1, 1), True)
    assert note.fallback_rule == FALLBACK_RULE
    html, csv, figures = stored(conn, report_id)
    assert "节假日安排 Holiday calendar:" in html
    assert "尚无2027年国务院节假日安排（26天后开始）" in html
    assert f"judged by the fallback rule ({FALLBACK_RULE})" in html
    assert "holiday_calendar,pub-site,2027-01-01/2027-12-31," in csv
    assert figures["holiday_calendar"][0]["message_zh"].startswith("尚无2027年国务院节假日安排")


def test_a_quarter_judged_without_a_schedule_is_named_with_its_days(
    conn: psycopg.Connection[Any], calendar_in_use: Callable[[OfficialCalendar], None]
) -> None:
    # As if the 2026 notice had never been typed in: the third quarter is judged Monday-Friday.
    years = official_calendar().schedules
    calendar_in_use(OfficialCalendar(s for year, s in years.items() if year != 2026))
    report_id, report = generate_report(conn, PUBLIC_SITE, "2026Q3", "test", NOW)
    messages = [n.message for n in report.holiday_calendar]
    assert messages[0] == (
        "no official holiday schedule for 2026: 2026-07-01 to 2026-09-30 judged by the fallback "
        f"rule ({FALLBACK_RULE})"
    )
    html, _, _ = stored(conn, report_id)
    assert f"无2026年国务院节假日安排：2026-07-01至2026-09-30{FALLBACK_RULE_ZH}" in html
    assert "clauses scheduled on working days are judged there by this rule" in html


def test_a_report_with_every_day_covered_says_nothing_of_the_calendar(
    conn: psycopg.Connection[Any],
) -> None:
    october = dt.datetime(2026, 10, 15, tzinfo=dt.UTC)  # 2027 is more than 60 days away
    report_id, report = generate_report(conn, PUBLIC_SITE, "2026Q3", "test", october)
    assert report.holiday_calendar == []
    html, csv, _ = stored(conn, report_id)
    assert "Holiday calendar" not in html and "holiday_calendar" not in csv
