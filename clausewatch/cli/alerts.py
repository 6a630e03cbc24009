"""Command-line entry points of this area (see clausewatch/cli.py):

clausewatch ledger verify [--database-url URL]
clausewatch report ledger --site S --from YYYY-MM-DD --to YYYY-MM-DD [--out FILE]
clausewatch webhook add URL [--site S] [--level N]
clausewatch webhook list
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import psycopg

from alerts import export
from clausewatch.cli import Commands
from clausewatch.cli.common import database_argument, database_url, day
from store import ledger
from store.pool import connect
from store.registry import UnknownSite


def register(commands: Commands) -> None:
    verify = commands.add(
        "ledger verify", "recompute the ledger's hash chain; exit 1 when it is broken"
    )
    database_argument(verify)
    verify.set_defaults(func=_verify)

    report = commands.add(
        "report ledger", "a period's alerts of a site as a 台账 (CSV, UTF-8 with BOM)"
    )
    database_argument(report)
    report.add_argument("--site", required=True)
    report.add_argument("--from", dest="first_day", required=True, type=day, help="YYYY-MM-DD")
    report.add_argument("--to", dest="last_day", required=True, type=day, help="YYYY-MM-DD")
    report.add_argument("--out", type=Path, help="file to write (default: standard output)")
    report.set_defaults(func=_report)

    add = commands.add("webhook add", "send alert notifications to a webhook (JSON POST)")
    database_argument(add)
    add.add_argument("url", type=_http_url)
    add.add_argument("--site", help="only this site's alerts (default: every site)")
    add.add_argument(
        "--level",
        type=int,
        help="only this escalation level, 0 = the responsible party (default: every level)",
    )
    add.add_argument("--added-by", default="cli")
    add.set_defaults(func=_webhook_add)

    listing = commands.add("webhook list", "webhook targets with their delivery counts")
    database_argument(listing)
    listing.set_defaults(func=_webhook_list)


def _verify(args: argparse.Namespace) -> int:
    url = database_url(args)
    try:
        with connect(url) as conn:
            verdict = ledger.verify(conn)
    except psycopg.Error as exc:
        print(f"cannot read the ledger: {exc}", file=sys.stderr)
        return 2
    if verdict.ok:
        tip = f", tip {verdict.tip_seq} {verdict.tip_hash}" if verdict.tip_seq else ""
        print(f"ok: {verdict.checked} entries{tip}")
        return 0
    print(
        f"BROKEN at entry {verdict.first_bad_seq}: {verdict.problem} "
        f"({verdict.checked} entries before it check out)"
    )
    return 1


def _report(args: argparse.Namespace) -> int:
    url = database_url(args)
    try:
        with connect(url) as conn:
            data = export.ledger_csv(conn, args.site, args.first_day, args.last_day)
    except (UnknownSite, ValueError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except psycopg.Error as exc:
        print(f"cannot read the alerts: {exc}", file=sys.stderr)
        return 2
    if args.out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        args.out.write_bytes(data)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _webhook_add(args: argparse.Namespace) -> int:
    url = database_url(args)
    with connect(url) as conn:
        row = conn.execute(
            "INSERT INTO webhook_targets (site, level, url, created_by, created_at)"
            " VALUES (%s, %s, %s, %s, now()) RETURNING id",
            (args.site, args.level, args.url, args.added_by),
        ).fetchone()
        conn.commit()
    assert row is not None
    print(f"webhook {row[0]}: {args.url}")
    return 0


def _webhook_list(args: argparse.Namespace) -> int:
    url = database_url(args)
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT t.id, coalesce(t.site, '*'), coalesce(t.level::text, '*'), t.url, t.enabled,"
            " count(n.id) FILTER (WHERE n.state = 'delivered'),"
            " count(n.id) FILTER (WHERE n.state = 'pending'),"
            " count(n.id) FILTER (WHERE n.state = 'failed')"
            " FROM webhook_targets t LEFT JOIN notifications n ON n.target_id = t.id"
            " GROUP BY t.id ORDER BY t.id"
        ).fetchall()
    print("id  site  level  enabled  delivered  pending  failed  url")
    for target_id, site, level, target_url, enabled, delivered, pending, failed in rows:
        print(
            f"{target_id}  {site}  {level}  {'yes' if enabled else 'no'}  {delivered}  "
            f"{pending}  {failed}  {target_url}"
        )
    return 0


def _http_url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"{text!r} is not an http:// or https:// URL")
    return text
