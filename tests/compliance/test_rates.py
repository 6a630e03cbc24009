"""Compliance figures recomputed by hand (issue 17, defects 1 and 2), through the real engine and
the real store: the engine judges a small site, its compliance intervals are written as the
pipeline writes them and its checkpoint as the checkpoint writer saves it; then
`compliance_report` (and the statistics and quarterly report built on it) must give the
figures worked out here in the comments.

- Data quality is reported apart: a sensor fault is not-assessable time for the clause that
  reads the sensor, never violating (or compliant) time of the site, and shows as
  `data_quality_s` (device time with at least one fault).
- A maintenance window makes the time it covers exempt: in no rate, shown as `exempt_s`
  (issue 20).
- A stretch still in progress counts: up to the site's data time (the checkpoint's
  watermark), cut at the period's end, never twice when a flush closed it after the checkpoint.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from clausewatch.cli import main
from compliance.public import PublicSite, render_public_html
from compliance.rates import compliance_report
from compliance.reports import build_report, render_csv, render_html
from compliance.statistics import org_statistics
from rules.clause import ClauseFile, ClauseVersion
from rules.engine import SiteEngine
from rules.site import SiteModel
from rules.verdicts import ComplianceInterval, Event
from store import quiet
from store.batches import write_compliance_intervals
from store.checkpoints import save_checkpoint
from store.migrate import migrate
from store.pool import connect
from store.registry import sync_clauses, sync_site
from tests.support import throwaway_database

pytestmark = pytest.mark.integration

SITE = "rates-site"
ZONE = ZoneInfo("Asia/Shanghai")
HOUR = 3600.0


def local(month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, minute, tzinfo=ZONE)


MODEL = SiteModel.model_validate(
    {
        "site": {"id": SITE, "name": "测试楼", "timezone": "Asia/Shanghai"},
        "spaces": [
            {"id": "b1", "type": "building"},
            {"id": "o1", "type": "office", "parent": "b1"},
            {"id": "wc1", "type": "toilet", "parent": "b1"},
        ],
        "devices": [
            # max_gap 15 min (the default): a reading holds that long.
            {
                "id": "th-1",
                "space": "o1",
                "metrics": {"temperature": {"unit": "°C", "range": [-20, 60]}},
            },
            {"id": "reader-1", "space": "wc1", "metrics": {}},
        ],
    }
)


def clause(clause_id: str, check: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "id": clause_id,
        "version": 1,
        "effective_from": "2020-01-01",
        "number": clause_id,
        "title": clause_id,
        "domain": "data_quality" if check["kind"] == "data_quality" else "test",
        "confidence": "A",
        "check": check,
        **fields,
    }


CLAUSES = ClauseFile.model_validate(
    {
        "standard": {"code": "RATES-1", "title": "figures by hand", "edition": "2026"},
        "clauses": [
            clause(
                "t.max",
                {"kind": "threshold", "metric": "temperature", "max": 26},
                applies_to={"space_types": ["office"]},
            ),
            clause(
                "t.max.for",
                {"kind": "threshold", "metric": "temperature", "max": 26, "for": "30m"},
                applies_to={"space_types": ["office"]},
            ),
            clause(
                "dq.stale",
                {
                    "kind": "data_quality",
                    "metrics": ["temperature"],
                    "stale_after": "15m",
                    "out_of_range": False,
                },
            ),
            clause(
                "dq.range",
                {"kind": "data_quality", "metrics": ["temperature"], "out_of_range": True},
            ),
            clause(
                "wc.clean",
                {"kind": "obligation", "event": "cleaning.completed", "every": "1d"},
                applies_to={"space_types": ["toilet"]},
                key=True,
            ),
        ],
    }
)


def versions(*ids: str) -> list[ClauseVersion]:
    return [c for c in CLAUSES.clauses if c.id in ids]


@pytest.fixture(scope="module")
def rates_db_url(pg_server_url: str) -> Iterator[str]:
    with throwaway_database(pg_server_url, "cw_rates") as url:
        migrate(url)
        with connect(url) as conn:
            sync_site(conn, MODEL, "test", now=local(1, 1))
            sync_clauses(conn, [CLAUSES], "test", now=local(1, 1))
            conn.commit()
        yield url


@pytest.fixture
def conn(rates_db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """The module's database without intervals or checkpoints of earlier tests."""
    with connect(rates_db_url) as connection:
        for table in (
            "compliance_intervals",
            "engine_checkpoints",
            "engine_checkpoint_parts",
            "engine_open_runs",
        ):
            if connection.execute("SELECT to_regclass(%s)", (table,)).fetchone() != (None,):
                connection.execute(f"DELETE FROM {table}")
        # Maintenance windows are never deleted (a trigger refuses): the tests' superuser
        # bypasses the trigger to start each test without them.
        connection.execute("SET session_replication_role = replica")
        connection.execute("DELETE FROM quiet_periods")
        connection.execute("RESET session_replication_role")
        connection.commit()
        yield connection


class Judged:
    """The engine over MODEL, stored as the pipeline stores it."""

    def __init__(self, conn: psycopg.Connection[Any], *clause_ids: str) -> None:
        self.conn = conn
        self.engine = SiteEngine(MODEL, versions(*clause_ids), lateness=0.0)

    def temperatures(
        self, first: dt.datetime, last: dt.datetime, value: float, every_min: int = 5
    ) -> None:
        """A reading of th-1 every `every_min` minutes from `first` to `last`, both included."""
        t = first
        while t <= last:
            self.engine.observe("th-1", t.timestamp(), None, {"temperature": value})
            self.engine.advance(t.timestamp())
            t += dt.timedelta(minutes=every_min)

    def cleaned(self, at: dt.datetime) -> None:
        self.advance(at)
        event = Event("reader-1", at.timestamp(), "cleaning.completed", "wc1", "staff-1")
        self.engine.observe_event(event)

    def advance(self, to: dt.datetime) -> None:
        self.engine.advance(to.timestamp())

    def flush(self) -> None:
        """What a flush writes: the compliance intervals closed so far."""
        closed = [o for o in self.engine.drain() if isinstance(o, ComplianceInterval)]
        write_compliance_intervals(self.conn, closed)
        self.conn.commit()

    def checkpoint(self) -> None:
        """What the checkpoint writer saves after a flush (ingest/checkpoint_writer.py)."""
        checkpoint = self.engine.snapshot_changes()
        header = {k: v for k, v in checkpoint.items() if k != "parts"}
        save_checkpoint(
            self.conn,
            SITE,
            header,
            header["clock"],
            parts=checkpoint["parts"],
            replace_parts=header["full"],
        )
        self.conn.commit()


def figures(item: Any) -> tuple[float, float, float]:
    return (item.compliant_s, item.violating_s, item.not_assessable_s)


# ---- defect 1: data quality ----


def silent_day(conn: psycopg.Connection[Any]) -> None:
    """th-1 on Monday 6 July, a reading every 5 minutes from 08:00 to 18:00: 24 °C, except
    - 09:55 reads 70 °C, outside the sensor's range (-20…60): a range fault until the next good
      reading; then th-1 is silent until 13:00 (stale from 09:55 + 15 min = 10:10);
    - 27 °C from 15:00 to 15:55, above t.max's 26 °C: violating [15:00, 16:00).
    The data time is 18:00 (the last reading; lateness 0)."""
    day = Judged(conn, "t.max", "dq.stale", "dq.range")
    day.temperatures(local(7, 6, 8), local(7, 6, 9, 50), 24.0)
    day.temperatures(local(7, 6, 9, 55), local(7, 6, 9, 55), 70.0)
    day.temperatures(local(7, 6, 13), local(7, 6, 14, 55), 24.0)
    day.temperatures(local(7, 6, 15), local(7, 6, 15, 55), 27.0)
    day.temperatures(local(7, 6, 16), local(7, 6, 18), 24.0)
    day.flush()
    day.checkpoint()


def test_a_data_quality_fault_is_not_assessable_time_never_a_violation(
    conn: psycopg.Connection[Any],
) -> None:
    silent_day(conn)
    report = compliance_report(conn, [SITE], local(7, 6, 8), local(7, 7), now=local(7, 7))
    # t.max: compliant [08:00, 09:55) + [13:00, 15:00) + [16:00, 18:00) = 6900 + 7200 + 7200;
    # violating [15:00, 16:00); not assessable [09:55, 13:00) (the range fault, then silence).
    (t_max,) = report.clauses  # the data-quality clauses are no compliance clauses
    assert t_max.clause_id == "t.max"
    assert figures(t_max) == (21300.0, 3600.0, 11100.0)
    assert t_max.rate == pytest.approx(21300 / 24900)
    (site,) = report.sites
    assert figures(site) == figures(t_max)
    assert site.rate == t_max.rate  # not (21300 + 25800 + 24900) / (... + 11100 + 10200)
    assert site.not_assessable_share == pytest.approx(11100 / 36000)
    # Data-quality time: th-1 had a fault from 09:55 (range) and from 10:10 (stale) until the
    # reading at 13:00: the union, 11100 s, not the sum 11100 + 10200 of the two clauses.
    assert site.data_quality_s == 11100.0
    (device,) = report.data_quality
    assert (device.device, device.space, device.data_quality_s) == ("th-1", "o1", 11100.0)
    assert device.clauses == ["dq.range", "dq.stale"]
    (office,) = report.spaces
    assert (office.space, office.rate, office.data_quality_s) == ("o1", t_max.rate, 11100.0)
    # Counted up to the data time, 18:00, not to the period's end.
    assert site.counted_until == local(7, 6, 18)
    # The statistics, the organisation level and the quarterly report carry them as they are.
    node = org_statistics(conn, [], [SITE], local(7, 6, 8), local(7, 7), now=local(7, 7)).node
    assert (node.compliance_rate, node.data_quality_s) == (t_max.rate, 11100.0)
    assert node.counted_until == local(7, 6, 18)
    quarter = build_report(conn, SITE, "2026Q3", now=local(7, 7))
    assert quarter.statistics.data_quality == report.data_quality
    assert "data_quality,th-1,data_quality_s,11100.0" in render_csv(quarter)
    assert "<td>th-1</td><td>o1</td><td>3.1 h</td><td>dq.range, dq.stale</td>" in render_html(
        quarter
    )


def test_a_site_with_only_data_quality_time_has_no_rate(conn: psycopg.Connection[Any]) -> None:
    silent_day(conn)
    report = compliance_report(
        conn, [SITE], local(7, 6, 8), local(7, 7), now=local(7, 7), clause="dq.stale"
    )
    (site,) = report.sites
    assert site.rate is None and figures(site) == (0.0, 0.0, 0.0)
    assert site.data_quality_s == 10200.0  # [10:10, 13:00), dq.stale alone
    assert report.clauses == []


# ---- defect 2: open stretches ----


def overdue_since_12_april(conn: psycopg.Connection[Any]) -> Judged:
    """wc1 must be cleaned at least once a day (every 1d, no grace, no schedule). The engine
    starts on 1 January 00:00; wc1 is cleaned at 09:00 every day up to 11 April, then never:
    overdue from 12 April 09:00. The data time is 15 April 12:00. The only interval closed is
    the compliant one, [1 Jan 00:00, 12 Apr 09:00); the overdue stretch is still open."""
    judged = Judged(conn, "wc.clean")
    judged.advance(local(1, 1))
    day = local(1, 1, 9)
    while day <= local(4, 11, 9):
        judged.cleaned(day)
        day += dt.timedelta(days=1)
    judged.advance(local(4, 15, 12))
    judged.flush()
    judged.checkpoint()
    return judged


COMPLIANT_TO_12_APRIL = (31 + 28 + 31 + 11) * 86400 + 9 * HOUR  # 1 Jan 00:00 - 12 Apr 09:00
OVERDUE_TO_DATA_TIME = 3 * 86400 + 3 * HOUR  # 12 Apr 09:00 - 15 Apr 12:00


def test_an_overdue_obligation_counts_up_to_the_data_time(conn: psycopg.Connection[Any]) -> None:
    overdue_since_12_april(conn)
    report = compliance_report(conn, [SITE], local(1, 1), local(4, 16), now=local(4, 16))
    (site,) = report.sites
    assert figures(site) == (COMPLIANT_TO_12_APRIL, OVERDUE_TO_DATA_TIME, 0.0)
    assert site.rate == pytest.approx(8_758_800 / (8_758_800 + 270_000))
    assert site.rate is not None and site.rate < 1.0
    assert site.counted_until == local(4, 15, 12)
    (clean,) = report.clauses
    assert figures(clean) == figures(site)
    # From 13 April on only the open run judges wc.clean: it is active all the same.
    later = compliance_report(conn, [SITE], local(4, 13), local(4, 16), now=local(4, 16))
    assert figures(later.sites[0]) == (0.0, 2 * 86400 + 12 * HOUR, 0.0)
    gaps = {gap.clause_id: gap.missing for gap in later.sites[0].coverage.gaps}
    assert "active" not in gaps["wc.clean"]


def test_a_period_ending_before_the_data_time_cuts_the_open_stretch(
    conn: psycopg.Connection[Any],
) -> None:
    overdue_since_12_april(conn)
    report = compliance_report(conn, [SITE], local(4, 1), local(4, 14), now=local(4, 16))
    (site,) = report.sites
    # compliant [1 Apr, 12 Apr 09:00), violating [12 Apr 09:00, 14 Apr 00:00)
    assert figures(site) == (11 * 86400 + 9 * HOUR, 39 * HOUR, 0.0)
    assert site.counted_until == local(4, 14)


def test_a_stretch_closed_after_the_checkpoint_is_counted_once(
    conn: psycopg.Connection[Any],
) -> None:
    judged = overdue_since_12_april(conn)
    # wc1 is cleaned at 13:00 and a flush stores the closed overdue interval
    # [12 Apr 09:00, 15 Apr 13:00) before the next checkpoint is saved.
    judged.cleaned(local(4, 15, 13))
    judged.advance(local(4, 15, 14))
    judged.flush()
    report = compliance_report(conn, [SITE], local(1, 1), local(4, 16), now=local(4, 16))
    (site,) = report.sites
    # Still up to the checkpoint's data time, 12:00, and the overdue time once (not twice).
    assert site.counted_until == local(4, 15, 12)
    assert figures(site) == (COMPLIANT_TO_12_APRIL, OVERDUE_TO_DATA_TIME, 0.0)
    judged.checkpoint()  # data time 14:00: compliant again since 13:00
    report = compliance_report(conn, [SITE], local(1, 1), local(4, 16), now=local(4, 16))
    (site,) = report.sites
    assert site.counted_until == local(4, 15, 14)
    assert figures(site) == (COMPLIANT_TO_12_APRIL + HOUR, OVERDUE_TO_DATA_TIME + HOUR, 0.0)


def test_a_stretch_still_being_decided_is_not_counted_yet(conn: psycopg.Connection[Any]) -> None:
    """t.max.for needs 30 min above 26 °C: at the data time, 18:00, th-1 has read 27 °C since
    17:45, so whether [17:45, 18:00) is violating (or compliant) is not known yet."""
    day = Judged(conn, "t.max.for")
    day.temperatures(local(7, 6, 8), local(7, 6, 17, 40), 24.0)
    day.temperatures(local(7, 6, 17, 45), local(7, 6, 18), 27.0)
    day.flush()
    day.checkpoint()
    report = compliance_report(conn, [SITE], local(7, 6), local(7, 7), now=local(7, 7))
    (site,) = report.sites
    assert figures(site) == (9 * HOUR + 45 * 60, 0.0, 0.0)  # [08:00, 17:45)
    assert site.counted_until == local(7, 6, 18)


def test_the_quarterly_report_counts_the_open_stretch_and_says_up_to_when(
    conn: psycopg.Connection[Any],
) -> None:
    overdue_since_12_april(conn)
    report = build_report(conn, SITE, "2026Q2", now=local(4, 15, 12))
    stats = report.statistics
    # compliant [1 Apr 00:00, 12 Apr 09:00), violating [12 Apr 09:00, 15 Apr 12:00)
    assert (stats.compliant_s, stats.violating_s) == (11 * 86400 + 9 * HOUR, 270_000.0)
    assert stats.compliance_rate == pytest.approx(982_800 / (982_800 + 270_000))
    assert stats.counted_until == local(4, 15, 12)
    assert [c.id for c in report.worst_clauses] == ["wc.clean"]
    page = render_html(report)
    assert "counted up to 2026-04-15 12:00: the data time" in page
    assert "summary,rates-site,counted_until,2026-04-15T04:00:00+00:00" in render_csv(report)


def test_the_report_command_says_up_to_when_it_counts(
    conn: psycopg.Connection[Any], rates_db_url: str, tmp_path: Path, capsys: Any
) -> None:
    overdue_since_12_april(conn)
    conn.execute("DELETE FROM evaluation_reports")
    conn.commit()
    arguments = ["report", "compliance", "--site", SITE, "--period", "2026Q2"]
    code = main([*arguments, "--out-dir", str(tmp_path), "--database-url", rates_db_url])
    assert code == 0
    # compliant [1 Apr, 12 Apr 09:00), violating [12 Apr 09:00, 15 Apr 12:00): 78.4 %
    assert "compliance 78.4% (counted up to 2026-04-15 12:00)" in capsys.readouterr().out


# ---- issue 20: maintenance windows make the time they cover exempt ----


def cold_afternoon(conn: psycopg.Connection[Any]) -> None:
    """th-1 on Monday 6 July, a reading every 5 minutes from 08:00 to 18:00: 24 °C, except
    27 °C (above t.max's 26 °C) from 13:00 to 16:55: violating [13:00, 17:00). Data time 18:00:
    compliant [08:00, 13:00) and [17:00, 18:00), 6 h; violating 4 h; rate 0.6."""
    day = Judged(conn, "t.max")
    day.temperatures(local(7, 6, 8), local(7, 6, 12, 55), 24.0)
    day.temperatures(local(7, 6, 13), local(7, 6, 16, 55), 27.0)
    day.temperatures(local(7, 6, 17), local(7, 6, 18), 24.0)
    day.flush()
    day.checkpoint()


def window(
    conn: psycopg.Connection[Any],
    scope: quiet.Scope,
    target: str | None,
    start: dt.datetime,
    end: dt.datetime,
) -> dict[str, Any]:
    """A maintenance window declared on 7 July, after the day it covers (retroactive)."""
    row = quiet.create(
        conn,
        quiet.Spec("maintenance", SITE, scope, target, start, end, "空调检修 chiller repair"),
        "token:1 (admin)",
        now=local(7, 7, 9),
        may_backdate=True,
    )
    conn.commit()
    return row


def test_a_maintenance_window_over_the_violating_afternoon_makes_it_exempt(
    conn: psycopg.Connection[Any],
) -> None:
    cold_afternoon(conn)
    before = compliance_report(conn, [SITE], local(7, 6), local(7, 7), now=local(7, 7, 9))
    assert figures(before.sites[0]) == (6 * HOUR, 4 * HOUR, 0.0)
    assert before.sites[0].rate == pytest.approx(0.6)
    assert before.sites[0].exempt_s == 0.0
    # Planned works on the building (o1's parent) over the afternoon, and a second window on
    # th-1 overlapping it by an hour: the overlap counts once.
    row = window(conn, "space", "b1", local(7, 6, 13), local(7, 6, 17))
    assert row["retroactive"] is True
    window(conn, "device", "th-1", local(7, 6, 16), local(7, 6, 17, 30))
    report = compliance_report(conn, [SITE], local(7, 6), local(7, 7), now=local(7, 7, 9))
    (site,) = report.sites
    # The afternoon is exempt: the rate is the rate of the time left, all compliant.
    assert figures(site) == (5.5 * HOUR, 0.0, 0.0)
    assert site.exempt_s == 4.5 * HOUR
    assert site.rate == 1.0
    (space,) = report.spaces
    (clause_figures,) = report.clauses
    for item in (space, clause_figures):
        assert (figures(item), item.exempt_s, item.rate) == (
            (5.5 * HOUR, 0.0, 0.0),
            4.5 * HOUR,
            1.0,
        )
    entry = conn.execute(
        "SELECT payload::jsonb FROM ledger WHERE entity = %s", (f"maintenance:{row['id']}",)
    ).fetchone()
    assert entry is not None and entry[0]["retroactive"] is True
    assert entry[0]["actor"] == "token:1 (admin)"


def test_a_window_elsewhere_or_cancelled_before_it_began_exempts_nothing(
    conn: psycopg.Connection[Any],
) -> None:
    cold_afternoon(conn)
    window(conn, "space", "wc1", local(7, 6, 13), local(7, 6, 17))  # another room
    window(conn, "clause", "t.max.for", local(7, 6, 13), local(7, 6, 17))  # another clause
    later = quiet.create(
        conn,
        quiet.Spec("maintenance", SITE, "site", None, local(7, 8), local(7, 9), "planned"),
        "token:1 (admin)",
        now=local(7, 7, 9),
    )
    quiet.cancel(conn, "maintenance", later["id"], "token:1 (admin)", now=local(7, 7, 10))
    conn.commit()
    report = compliance_report(conn, [SITE], local(7, 6), local(7, 10), now=local(7, 10))
    assert (figures(report.sites[0]), report.sites[0].exempt_s) == ((6 * HOUR, 4 * HOUR, 0.0), 0.0)


def test_only_an_administrator_declares_a_window_that_began_in_the_past(
    conn: psycopg.Connection[Any],
) -> None:
    spec = quiet.Spec("maintenance", SITE, "site", None, local(7, 6, 13), local(7, 7, 17), "x")
    with pytest.raises(quiet.NotAllowed):
        quiet.create(conn, spec, "token:2", now=local(7, 7, 9))
    conn.rollback()
    # Declared within the grace of its start it is not retroactive.
    fresh = quiet.create(conn, spec, "token:2", now=local(7, 6, 13, 10))
    assert fresh["retroactive"] is False
    conn.rollback()


def test_the_statistics_and_the_quarterly_report_show_the_exempt_time(
    conn: psycopg.Connection[Any],
) -> None:
    cold_afternoon(conn)
    window(conn, "site", None, local(7, 6, 13), local(7, 6, 17))
    conn.execute("DELETE FROM evaluation_reports")
    conn.commit()
    report = build_report(conn, SITE, "2026Q3", now=local(7, 7, 9))
    stats = report.statistics
    assert (stats.compliant_s, stats.violating_s, stats.exempt_s) == (6 * HOUR, 0.0, 4 * HOUR)
    assert stats.compliance_rate == 1.0
    assert "summary,rates-site,exempt_s,14400.0" in render_csv(report)
    node = org_statistics(conn, [], [SITE], local(7, 6), local(7, 7), now=local(7, 7, 9)).node
    assert (node.exempt_s, node.compliance_rate) == (4 * HOUR, 1.0)
    assert "维护豁免 exempt for planned maintenance 4.0" in render_html(report)
    # The public page says so too, so its rate is not misread.
    view = PublicSite(
        site=SITE,
        name="测试楼",
        since=local(7, 1),
        until=local(7, 7, 9),
        counted_until=None,
        compliance_rate=1.0,
        exempt_s=stats.exempt_s,
        key_clause_coverage=None,
        open_alerts=0,
        clauses=[],
    )
    assert "维护豁免 exempt for planned maintenance<b>4.0 h</b>" in render_public_html(view)
