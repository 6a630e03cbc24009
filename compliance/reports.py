"""Quarterly self-evaluation reports per site: the figures of `statistics.site_statistics`, the
worst clauses and spaces, overdue obligations and the ledger excerpt of closed alerts with
their corrective actions, attainment against the targets of the plan, the implementation
evaluations people recorded for the quarter with their improvement actions (overdue flagged),
the feedback received from the public form (by category, state and clause, time to triage);
printable HTML with inline SVG charts, and CSV; stored in `evaluation_reports` (every generation
is kept; the newest of a period is current). A generated report evaluates nothing: the evaluated
share counts only evaluations people recorded (compliance/evaluations.py).

Periods are calendar quarters in the site's timezone: "2026Q3" is [07-01 00:00, 10-01 00:00)
local time; an annual report's period is a calendar year, "2026". The annual self-evaluation
(年度自评价) has the same figures over the year, the year's quarterly reports, and the year's
energy, carbon and operating cost, which the caller supplies (`EnergySource`: energy/ is a
sibling package, so the composition root and the API hand in `energy.summary.period_figures`).
"""

from __future__ import annotations

import datetime as dt
import functools
import io
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel

from compliance.evaluations import METHOD_NAMES, Evaluation, list_evaluations
from compliance.feedback import CATEGORY_NAMES, STATE_NAMES
from compliance.periods import (
    BadPeriod,
    is_year,
    last_complete_quarter,
    last_complete_year,
    report_bounds,
)
from compliance.statistics import SiteStatistics, site_statistics
from config import csvcells
from config.templates import render
from rules.holidays import CalendarNote, site_calendar_notes
from store import registry

WORST = 5  # clauses and spaces listed as the worst
LEDGER_ROWS = 200  # the excerpt, newest closings first; the full 台账 is `report ledger`


class NamedCompliance(BaseModel):
    id: str
    name: str
    rate: float | None
    violating_s: float
    compliant_s: float


class OverdueObligation(BaseModel):
    alert_id: int
    clause_id: str
    number: str
    title: str
    space: str
    started_at: dt.datetime
    ended_at: dt.datetime | None
    state: str


class LedgerRow(BaseModel):
    alert_id: int
    clause_id: str
    standard: str
    number: str
    space: str
    severity: str
    started_at: dt.datetime
    closed_at: dt.datetime
    closed_by: str | None
    cause: str | None
    corrective_action: str | None


class QuarterLine(BaseModel):
    """A quarterly report of the year (the newest of its quarter)."""

    report_id: int
    period: str
    compliance_rate: float | None
    evaluated_share: float | None
    generated_at: dt.datetime


class EnergyCarrier(BaseModel):
    carrier: str
    unit: str
    consumption: Decimal
    kgce: Decimal | None
    tco2: Decimal | None
    cost: Decimal | None
    cost_estimated: Decimal | None


class EnergyFigures(BaseModel):
    """The period's energy, carbon and operating cost (energy.summary.period_figures)."""

    kgce: Decimal
    total_location_tco2: Decimal
    area_m2: Decimal | None
    occupants: int | None
    kgce_per_m2: Decimal | None
    kgce_per_person: Decimal | None
    cost: Decimal
    cost_billed: Decimal
    cost_estimated: Decimal
    cost_per_m2: Decimal | None
    cost_per_person: Decimal | None
    carriers: list[EnergyCarrier]
    notes: list[str]  # in English; notes_zh the same in Chinese, one for one
    notes_zh: list[str] = []  # empty in the reports stored before it was added


# (conn, site, since, until) -> the figures of EnergyFigures; raises ValueError when they
# cannot be made (the report then says why instead).
EnergySource = Callable[[psycopg.Connection[Any], str, dt.datetime, dt.datetime], Mapping[str, Any]]


class EvaluationReport(BaseModel):
    site: str
    site_name: str
    period: str
    period_start: dt.datetime
    period_end: dt.datetime
    generated_at: dt.datetime
    statistics: SiteStatistics
    clause_titles: dict[str, str]
    worst_clauses: list[NamedCompliance]
    worst_spaces: list[NamedCompliance]
    overdue_obligations: list[OverdueObligation]
    ledger: list[LedgerRow]
    # Implementation evaluations people recorded for this quarter, with their actions as they
    # stood at `generated_at`.
    evaluations: list[Evaluation] = []
    # Days of the period (or the coming year) without the State Council's holiday schedule:
    # clauses scheduled on working days are judged there by the fallback rule.
    holiday_calendar: list[CalendarNote] = []
    # Annual reports ("year"): the year's quarterly reports, energy, carbon and cost (or why
    # they are missing).
    kind: Literal["quarter", "year"] = "quarter"
    quarters: list[QuarterLine] = []
    energy: EnergyFigures | None = None
    energy_missing: str | None = None


class StoredReport(BaseModel):
    id: int
    site: str
    period: str
    period_start: dt.datetime
    period_end: dt.datetime
    generated_by: str
    generated_at: dt.datetime
    compliance_rate: float | None
    evaluated_clauses: int


def build_report(
    conn: psycopg.Connection[Any],
    site: str,
    period: str,
    now: dt.datetime,
    energy: EnergySource | None = None,
) -> EvaluationReport:
    """Computes the report (nothing stored) of a quarter, or of a year with `energy` supplying
    its energy, carbon and cost figures. Raises UnknownSite, BadPeriod."""
    registered = registry.site_row(conn, site)
    if registered is None:
        raise registry.UnknownSite(site)
    name = registered.name
    holidays_kind = str(registered.info.get("holidays", {}).get("kind", "cn"))
    start, end = report_bounds(period, registered.zone())
    if start > now:
        # An empty report would still count the quarter as evaluated.
        raise BadPeriod(f"{period} has not begun")
    stats = site_statistics(conn, site, start, end, now)
    with conn.cursor(row_factory=dict_row) as cur:
        titles = {
            r["clause_id"]: f"{r['standard_code']} {r['number']} {r['title']}"
            for r in cur.execute(
                "SELECT DISTINCT ON (clause_id) clause_id, standard_code, number, title"
                " FROM clause_versions ORDER BY clause_id, version DESC"
            )
        }
        space_names = {
            r["id"]: r["name"] or r["id"]
            for r in cur.execute("SELECT id, name FROM spaces WHERE site = %s", (site,))
        }
        overdue = [
            OverdueObligation(**r)
            for r in cur.execute(
                "SELECT a.id AS alert_id, a.clause_id, a.number, a.title, a.space, a.started_at,"
                " a.ended_at, a.state FROM alerts a JOIN clause_versions v"
                " ON v.clause_id = a.clause_id AND v.version = a.clause_version"
                " WHERE a.site = %s AND a.started_at >= %s AND a.started_at < %s"
                " AND v.config -> 'check' ->> 'kind' = 'obligation' ORDER BY a.started_at, a.id",
                (site, start, end),
            )
        ]
        ledger = [
            LedgerRow(**r)
            for r in cur.execute(
                "SELECT id AS alert_id, clause_id, standard, number, space, severity, started_at,"
                " closed_at, closed_by, cause, corrective_action FROM alerts"
                " WHERE site = %s AND closed_at >= %s AND closed_at < %s"
                " ORDER BY closed_at DESC, id DESC LIMIT %s",
                (site, start, end, LEDGER_ROWS),
            )
        ]
    annual: dict[str, Any] = {}
    if is_year(period):
        annual = _annual(conn, site, start, end, now, energy)
    return EvaluationReport(
        **annual,
        site=site,
        site_name=name,
        period=period,
        period_start=start,
        period_end=end,
        generated_at=now,
        statistics=stats,
        clause_titles=titles,
        worst_clauses=_worst(
            [(c.clause_id, titles.get(c.clause_id, c.clause_id), c) for c in stats.clauses]
        ),
        worst_spaces=_worst(
            [(s.space, space_names.get(s.space, s.space), s) for s in stats.spaces]
        ),
        overdue_obligations=overdue,
        ledger=ledger,
        # their actions as they stand when the report is made (overdue by then)
        evaluations=list_evaluations(conn, [site], at=now, since=start, until=end),
        holiday_calendar=site_calendar_notes(
            holidays_kind,
            start.date(),
            (end - dt.timedelta(days=1)).date(),
            now.astimezone(start.tzinfo).date(),
        ),
    )


def _annual(
    conn: psycopg.Connection[Any],
    site: str,
    start: dt.datetime,
    end: dt.datetime,
    now: dt.datetime,
    energy: EnergySource | None,
) -> dict[str, Any]:
    """The parts only an annual report has."""
    with conn.cursor(row_factory=dict_row) as cur:
        quarters = [
            QuarterLine(**r)
            for r in cur.execute(
                "SELECT DISTINCT ON (period) id AS report_id, period,"
                " (figures -> 'statistics' ->> 'compliance_rate')::float8 AS compliance_rate,"
                " (figures -> 'statistics' ->> 'evaluated_share')::float8 AS evaluated_share,"
                " generated_at FROM evaluation_reports WHERE site = %s AND period ~ 'Q'"
                " AND period_start >= %s AND period_end <= %s ORDER BY period, id DESC",
                (site, start, end),
            )
        ]
    figures: EnergyFigures | None = None
    missing: str | None = None
    if energy is None:
        missing = "能耗、碳排放与运行成本未计算 / energy, carbon and cost were not computed"
    else:
        try:
            figures = EnergyFigures.model_validate(dict(energy(conn, site, start, min(end, now))))
        except ValueError as exc:
            missing = f"能耗、碳排放与运行成本无法计算 / energy, carbon and cost: {exc}"
    return {
        "kind": "year",
        "quarters": quarters,
        "energy": figures,
        "energy_missing": missing,
    }


def _worst(items: list[tuple[str, str, Any]]) -> list[NamedCompliance]:
    """The lowest rates first (ties: most violating time); items without a rate left out."""
    rated = [
        NamedCompliance(
            id=key, name=name, rate=f.rate, violating_s=f.violating_s, compliant_s=f.compliant_s
        )
        for key, name, f in items
        if f.rate is not None and f.rate < 1.0
    ]
    rated.sort(key=lambda n: (n.rate, -n.violating_s, n.id))
    return rated[:WORST]


def generate_report(
    conn: psycopg.Connection[Any],
    site: str,
    period: str,
    actor: str,
    now: dt.datetime,
    energy: EnergySource | None = None,
) -> tuple[int, EvaluationReport]:
    """Builds, renders and stores a report; returns its id. Does not commit."""
    report = build_report(conn, site, period, now, energy)
    row = conn.execute(
        "INSERT INTO evaluation_reports (site, period, period_start, period_end, clauses,"
        " figures, html, csv, generated_by, generated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            site,
            period,
            report.period_start,
            report.period_end,
            report.statistics.clauses_in_force,
            Jsonb(report.model_dump(mode="json")),
            render_html(report),
            render_csv(report),
            actor,
            now,
        ),
    ).fetchone()
    assert row is not None
    return int(row[0]), report


def generate_due_reports(
    conn: psycopg.Connection[Any],
    actor: str,
    now: dt.datetime,
    energy: EnergySource | None = None,
) -> list[int]:
    """The scheduler's period-end job: for each site that existed before its last complete
    quarter (and year) ended and has no report of it, produce one; the quarter first, so the
    annual report lists it. Idempotent, so it may run often and catches up after downtime.
    Commits each report."""
    made = []
    for registered in registry.site_rows(conn):
        site, zone = registered.id, registered.zone()
        for period in (last_complete_quarter(now, zone), last_complete_year(now, zone)):
            _, end = report_bounds(period, zone)
            if registered.created_at >= end:
                continue
            exists = conn.execute(
                "SELECT 1 FROM evaluation_reports WHERE site = %s AND period = %s",
                (site, period),
            ).fetchone()
            if exists is None:
                report_id, _ = generate_report(conn, site, period, actor, now, energy)
                conn.commit()
                made.append(report_id)
    return made


def list_reports(conn: psycopg.Connection[Any], sites: list[str] | None) -> list[StoredReport]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT id, site, period, period_start, period_end, generated_by, generated_at,"
            " (figures -> 'statistics' ->> 'compliance_rate')::float8 AS compliance_rate,"
            " jsonb_array_length(figures -> 'statistics' -> 'evaluated_clauses')"
            " AS evaluated_clauses FROM evaluation_reports"
            " WHERE %(sites)s::text[] IS NULL OR site = ANY(%(sites)s)"
            " ORDER BY period_start DESC, site, id DESC",
            {"sites": sites},
        ).fetchall()
    return [StoredReport(**row) for row in rows]


# The renderings stored with each report: the figures (EvaluationReport as JSON), HTML, CSV.
ReportPart = Literal["figures", "html", "csv"]


def stored_report_part(
    conn: psycopg.Connection[Any], report_id: int, part: ReportPart
) -> tuple[str, Any] | None:
    """The site of a stored report and one of its renderings; None for an unknown id."""
    if part not in get_args(ReportPart):
        raise ValueError(f"not a stored part of a report: {part!r}")
    row = conn.execute(
        f"SELECT site, {part} FROM evaluation_reports WHERE id = %s", (report_id,)
    ).fetchone()
    return None if row is None else (row[0], row[1])


# ---- rendering ----


def _local(moment: dt.datetime | None, zone: ZoneInfo) -> str:
    return "–" if moment is None else moment.astimezone(zone).strftime("%Y-%m-%d %H:%M")


SEVERITY_COLOURS = {
    "critical": "#b71c1c",
    "major": "#e65100",
    "warning": "#f9a825",
    "info": "#1565c0",
}


# What a missing holiday schedule affects in this report.
CALENDAR_AFFECTS = (
    "clauses scheduled on working days are judged there by this rule"
    " / 期间按工作日安排的条款依此规则判断"
)


def render_html(report: EvaluationReport) -> str:
    """A self-contained printable page (templates/report.html: inline CSS and SVG, no scripts,
    nothing fetched). Layout and charts are the template's; this passes the figures."""
    stats = report.statistics
    zone = report.period_start.tzinfo
    assert isinstance(zone, ZoneInfo)
    severities = dict.fromkeys(SEVERITY_COLOURS, 0)
    for row in stats.alerts_by_clause:
        severities[row.severity] = severities.get(row.severity, 0) + row.alerts
    return render(
        "compliance",
        "report.html",
        report=report,
        zone=str(zone),
        local=functools.partial(_local, zone=zone),
        # the rate chart: clauses with assessable time, worst first
        rated=sorted(
            (c for c in stats.clauses if c.rate is not None), key=lambda c: (c.rate, c.clause_id)
        ),
        severities=severities,  # the severity chart: alerts started in the period
        colours=SEVERITY_COLOURS,
        calendar_affects=CALENDAR_AFFECTS,
        methods=METHOD_NAMES,
        feedback_categories=CATEGORY_NAMES,
        feedback_states=STATE_NAMES,
        actions=[action for e in report.evaluations for action in e.actions],
    )


def render_csv(report: EvaluationReport) -> str:
    """One table: section, subject, field, value (UTF-8; the API adds a BOM for Excel)."""
    out = io.StringIO()
    writer = csvcells.writer(out, lineterminator="\n")
    writer.writerow(["section", "subject", "field", "value"])
    stats = report.statistics
    summary: dict[str, Any] = {
        "period": report.period,
        "period_start": report.period_start.isoformat(),
        "period_end": report.period_end.isoformat(),
        "counted_until": None if stats.counted_until is None else stats.counted_until.isoformat(),
        "compliance_rate": stats.compliance_rate,
        "compliant_s": stats.compliant_s,
        "violating_s": stats.violating_s,
        "not_assessable_s": stats.not_assessable_s,
        "exempt_s": stats.exempt_s,
        "data_completeness": stats.data_completeness,
        "data_quality_s": stats.data_quality_s,
        "key_clause_coverage": stats.coverage.rate,
        "key_clauses_in_force": stats.coverage.key_clauses_in_force,
        "key_clauses_covered": stats.coverage.covered,
        "clauses_in_force": len(stats.clauses_in_force),
        "evaluated_share": stats.evaluated_share,
        "alerts": stats.alerts,
        "open_alerts": stats.open_alerts,
        "mean_time_to_acknowledge_s": stats.mean_time_to_acknowledge_s,
        "mean_time_to_close_s": stats.mean_time_to_close_s,
    }
    for field, value in summary.items():
        writer.writerow(["summary", report.site, field, "" if value is None else value])
    for note in report.holiday_calendar:
        writer.writerow(
            [
                "holiday_calendar",
                report.site,
                f"{note.first}/{note.last}",
                f"{note.message_zh} / {note.message}; {CALENDAR_AFFECTS}",
            ]
        )
    for clause in stats.clauses:
        for field in ("rate", "compliant_s", "violating_s", "not_assessable_s", "exempt_s"):
            value = getattr(clause, field)
            writer.writerow(["clause", clause.clause_id, field, "" if value is None else value])
    for space in stats.spaces:
        for field in (
            "rate",
            "compliant_s",
            "violating_s",
            "not_assessable_s",
            "exempt_s",
            "data_quality_s",
        ):
            value = getattr(space, field)
            writer.writerow(["space", space.space, field, "" if value is None else value])
    for device in stats.data_quality:
        writer.writerow(["data_quality", device.device, "data_quality_s", device.data_quality_s])
        writer.writerow(["data_quality", device.device, "clauses", " ".join(device.clauses)])
    for count in stats.alerts_by_clause:
        writer.writerow(["alerts", count.clause_id, count.severity, count.alerts])
    for figure in stats.attainment.figures:
        writer.writerow(["target", figure.figure, "target", figure.target])
        writer.writerow(
            ["target", figure.figure, "met", "" if figure.met is None else str(figure.met).lower()]
        )
    for evaluation in report.evaluations:
        subject = f"{evaluation.id} {evaluation.clause_id}"
        writer.writerow(["evaluation", subject, "method", evaluation.method])
        writer.writerow(["evaluation", subject, "satisfaction", evaluation.satisfaction])
        writer.writerow(["evaluation", subject, "findings", evaluation.findings])
        writer.writerow(["evaluation", subject, "evaluated_by", evaluation.evaluated_by])
        for action in evaluation.actions:
            writer.writerow(
                [
                    "improvement_action",
                    action.id,
                    "state",
                    "overdue" if action.overdue else action.state,
                ]
            )
            writer.writerow(["improvement_action", action.id, "owner", action.owner])
            writer.writerow(
                ["improvement_action", action.id, "deadline", action.deadline.isoformat()]
            )
    feedback = stats.feedback
    writer.writerow(["feedback", report.site, "received", feedback.received])
    writer.writerow(["feedback", report.site, "triaged", feedback.triaged])
    writer.writerow(
        [
            "feedback",
            report.site,
            "mean_time_to_triage_s",
            "" if feedback.mean_time_to_triage_s is None else feedback.mean_time_to_triage_s,
        ]
    )
    for section, counts in (
        ("feedback_category", feedback.by_category),
        ("feedback_state", feedback.by_state),
        ("feedback_clause", feedback.by_clause),
    ):
        for subject, items in counts.items():
            writer.writerow([section, subject, "items", items])
    for q in report.quarters:
        for field in ("compliance_rate", "evaluated_share", "report_id"):
            value = getattr(q, field)
            writer.writerow(["quarter", q.period, field, "" if value is None else value])
    if report.energy is not None:
        e = report.energy
        for field in (
            "kgce", "total_location_tco2", "area_m2", "occupants", "kgce_per_m2",
            "kgce_per_person", "cost", "cost_billed", "cost_estimated", "cost_per_m2",
            "cost_per_person",
        ):  # fmt: skip
            value = getattr(e, field)
            writer.writerow(["energy", report.site, field, "" if value is None else value])
        for c in e.carriers:
            for field in ("consumption", "unit", "kgce", "tco2", "cost", "cost_estimated"):
                value = getattr(c, field)
                writer.writerow(["energy", c.carrier, field, "" if value is None else value])
        for line in e.notes:
            writer.writerow(["energy_note", report.site, "", line])
    elif report.kind == "year":
        writer.writerow(["energy_note", report.site, "missing", report.energy_missing or ""])
    for o in report.overdue_obligations:
        writer.writerow(["overdue_obligation", o.clause_id, o.space, o.started_at.isoformat()])
    for r in report.ledger:
        writer.writerow(["ledger", r.alert_id, "cause", r.cause or ""])
        writer.writerow(["ledger", r.alert_id, "corrective_action", r.corrective_action or ""])
    return out.getvalue()
