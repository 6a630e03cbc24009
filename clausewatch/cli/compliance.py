"""Command-line entry points of the register (see clausewatch/cli.py):

clausewatch report compliance --site S --period 2026Q3|2026 [--out-dir DIR]
clausewatch backtest CLAUSE_FILE --site S --from YYYY-MM-DD --to YYYY-MM-DD [--clause ID] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import psycopg

from clausewatch.cli import Commands
from clausewatch.cli.common import TO_HELP, database_argument, database_url, day
from compliance.backtest import BacktestError, BacktestRun, backtest, load_site
from compliance.periods import BadPeriod
from compliance.reports import generate_report
from config.documents import ConfigError
from config.files import load_clause_file
from energy.summary import period_figures
from store.pool import connect
from store.registry import UnknownSite


def register(commands: Commands) -> None:
    report = commands.add(
        "report compliance",
        "a site's quarterly or annual self-evaluation report: stored in the database, written"
        " as HTML and CSV",
    )
    database_argument(report)
    report.add_argument("--site", required=True)
    report.add_argument(
        "--period", required=True, help="a quarter such as 2026Q3, or a year such as 2026 (annual)"
    )
    report.add_argument("--out-dir", type=Path, default=Path("."), help="default: here")
    report.add_argument("--by", default="cli", help="recorded as who generated it")
    report.set_defaults(func=_report)

    run = commands.add(
        "backtest",
        "judge the clauses of a clause file over a site's stored history, beside the versions"
        " in force",
    )
    database_argument(run)
    run.add_argument("clause_file", type=Path)
    run.add_argument("--site", required=True)
    run.add_argument("--from", dest="first_day", required=True, type=day, help="YYYY-MM-DD")
    run.add_argument("--to", dest="last_day", required=True, type=day, help=TO_HELP)
    run.add_argument("--clause", help="only this clause id of the file")
    run.add_argument("--json", action="store_true", help="print the results as JSON lines")
    run.set_defaults(func=_backtest)


def _report(args: argparse.Namespace) -> int:
    url = database_url(args)
    try:
        with connect(url) as conn:
            report_id, report = generate_report(
                conn, args.site, args.period, args.by, dt.datetime.now(dt.UTC), period_figures
            )
            html, csv = conn.execute(
                "SELECT html, csv FROM evaluation_reports WHERE id = %s", (report_id,)
            ).fetchone() or ("", "")
            conn.commit()
    except UnknownSite:
        print(f"unknown site {args.site!r}", file=sys.stderr)
        return 2
    except BadPeriod as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except psycopg.Error as exc:
        print(f"cannot produce the report: {exc}", file=sys.stderr)
        return 2
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / f"{args.site}-{args.period}"
    stem.with_suffix(".html").write_text(html, encoding="utf-8")
    stem.with_suffix(".csv").write_text(csv, encoding="utf-8-sig")
    stats = report.statistics
    rate = "–" if stats.compliance_rate is None else f"{stats.compliance_rate:.1%}"
    if stats.counted_until is not None and stats.counted_until < report.period_end:
        # The quarter's data is not all judged yet: say up to when the figures count.
        zone = report.period_end.tzinfo
        rate += f" (counted up to {stats.counted_until.astimezone(zone):%Y-%m-%d %H:%M})"
    print(
        f"report {report_id}: {args.site} {args.period} compliance {rate},"
        f" {stats.alerts} alerts, {len(stats.clauses_in_force)} clauses evaluated;"
        f" wrote {stem}.html and {stem}.csv"
    )
    return 0


def _backtest(args: argparse.Namespace) -> int:
    url = database_url(args)
    try:
        clause_file = load_clause_file(args.clause_file)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    versions = [c for c in clause_file.clauses if args.clause in (None, c.id)]
    if not versions:
        print(f"no clause {args.clause!r} in {args.clause_file}", file=sys.stderr)
        return 2
    try:
        with connect(url) as conn:
            zone = load_site(conn, args.site).zone()
            since = dt.datetime.combine(args.first_day, dt.time(), zone)
            until = dt.datetime.combine(args.last_day + dt.timedelta(days=1), dt.time(), zone)
            results = [backtest(conn, args.site, version, since, until) for version in versions]
    except BacktestError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except psycopg.Error as exc:
        print(f"cannot read the history: {exc}", file=sys.stderr)
        return 2
    for result in results:
        if args.json:
            print(result.model_dump_json())
            continue
        print(
            f"{result.candidate.clause_id} at {result.site},"
            f" {args.first_day} – {args.last_day}: {result.readings} readings,"
            f" {result.events} events"
        )
        print(_line("candidate", result.candidate))
        print(
            _line("in force", result.in_force)
            if result.in_force is not None
            else "  in force   : no version in force"
        )
    return 0


def _line(label: str, run: BacktestRun) -> str:
    rate = "–" if run.compliance_rate is None else f"{run.compliance_rate:.1%}"
    return (
        f"  {label:<10} : v{run.version} would raise {run.alerts} alerts"
        f" ({run.violations} violations), compliance {rate}"
    )
