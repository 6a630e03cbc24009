"""Command-line entry points of this area (see clausewatch/cli.py):

clausewatch ledger verify [--database-url URL] [--anchors DIR] [--public-key FILE]...
clausewatch ledger keygen --out FILE
clausewatch ledger anchor [--database-url URL] [--key FILE] [--anchors DIR]
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
from clausewatch.cli.common import TO_HELP, database_argument, database_url, day
from clausewatch.settings import Settings
from store.pool import connect
from store.registry import UnknownSite


def register(commands: Commands) -> None:
    verify = commands.add(
        "ledger verify",
        "check the ledger's hash chain against its signed anchors, and alerts and their "
        "timelines against the ledger; exit 1 on any problem",
    )
    database_argument(verify)
    verify.add_argument(
        "--anchors",
        type=Path,
        help="folder of signed anchors (default: CLAUSEWATCH_LEDGER_ANCHOR_DIR)",
    )
    verify.add_argument(
        "--public-key",
        type=Path,
        action="append",
        help="public key the anchors are signed with; repeat while a key is being replaced "
        "(default: CLAUSEWATCH_LEDGER_PUBLIC_KEY_FILE, else the key file's .pub)",
    )
    verify.set_defaults(func=_verify)

    keygen = commands.add(
        "ledger keygen",
        "make the Ed25519 key that signs ledger anchors: FILE (private, mode 0600) and FILE.pub",
    )
    keygen.add_argument("--out", type=Path, required=True, help="the private key file to write")
    keygen.set_defaults(func=_keygen)

    anchor = commands.add(
        "ledger anchor", "sign the ledger's tip now and write it to the anchor folder"
    )
    database_argument(anchor)
    anchor.add_argument(
        "--key", type=Path, help="private key (default: CLAUSEWATCH_LEDGER_KEY_FILE)"
    )
    anchor.add_argument(
        "--anchors", type=Path, help="anchor folder (default: CLAUSEWATCH_LEDGER_ANCHOR_DIR)"
    )
    anchor.set_defaults(func=_anchor)

    report = commands.add(
        "report ledger", "a period's alerts of a site as a 台账 (CSV, UTF-8 with BOM)"
    )
    database_argument(report)
    report.add_argument("--site", required=True)
    report.add_argument("--from", dest="first_day", required=True, type=day, help="YYYY-MM-DD")
    report.add_argument("--to", dest="last_day", required=True, type=day, help=TO_HELP)
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
    from alerts.anchors import AnchorError, AnchorSource
    from alerts.audit import audit

    url = database_url(args)
    settings = Settings()
    folder: Path | None = args.anchors or settings.ledger_anchor_dir
    keys = args.public_key or [k for k in (settings.ledger_public_key(),) if k is not None]
    anchors = None
    if folder is not None:
        if not keys:
            print(
                "anchors need a public key: --public-key FILE or CLAUSEWATCH_LEDGER_KEY_FILE",
                file=sys.stderr,
            )
            return 2
        try:
            anchors = AnchorSource(folder, tuple(keys)).load()
        except AnchorError as exc:
            print(f"cannot read the anchors: {exc}", file=sys.stderr)
            return 2
    try:
        with connect(url) as conn:
            result = audit(conn, anchors)
    except psycopg.Error as exc:
        print(f"cannot read the ledger: {exc}", file=sys.stderr)
        return 2
    chain = result.chain
    if chain.ok:
        tip = f", tip {chain.tip_seq} {chain.tip_hash}" if chain.tip_seq else ""
        print(f"chain:   ok, {chain.checked} entries{tip}")
    else:
        print(
            f"chain:   BROKEN at {result.chain_problem()} "
            f"({chain.checked} entries before it check out)"
        )
    if anchors is None:
        print(
            "anchors: none given (--anchors, CLAUSEWATCH_LEDGER_ANCHOR_DIR): a tail cut off or "
            "a chain rewritten with recomputed hashes would not show"
        )
    elif anchors.problems:
        print(f"anchors: {len(anchors.problems)} PROBLEMS in {anchors.folder}")
        for problem in anchors.problems:
            print(f"  - {problem}")
    elif anchors.latest is None:
        print(f"anchors: none yet in {anchors.folder}")
    elif chain.ok:
        print(
            f"anchors: ok, {len(anchors.anchors)} checked; the newest, "
            f"{anchors.latest.describe()}, matches the chain"
        )
    else:
        print(f"anchors: {len(anchors.anchors)} signed anchors read; the chain does not match")
    records = result.records
    covered = (
        f"{records.alerts} alerts and {records.timeline} timeline rows against "
        f"{records.entries} ledger entries"
    )
    if records.problem_count == 0:
        print(f"records: ok, {covered}")
    else:
        print(f"records: {records.problem_count} PROBLEMS, {covered}")
        for problem in records.problems:
            print(f"  - {problem}")
        if records.problem_count > len(records.problems):
            print(f"  ... and {records.problem_count - len(records.problems)} more")
    return 0 if result.ok else 1


def _keygen(args: argparse.Namespace) -> int:
    from alerts.anchors import AnchorError, generate_key

    try:
        public = generate_key(args.out)
    except (AnchorError, OSError) as exc:
        print(f"no key written: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} (private key, mode 600) and {public} (public key)")
    print(
        "Keep the private key off the database host's disks and backups; give the service "
        f"CLAUSEWATCH_LEDGER_KEY_FILE={args.out}, and whoever verifies {public}."
    )
    return 0


def _anchor(args: argparse.Namespace) -> int:
    import datetime as dt

    from alerts.anchors import AnchorError, anchor_tip

    url = database_url(args)
    settings = Settings()
    key: Path | None = args.key or settings.ledger_key_file
    folder: Path | None = args.anchors or settings.ledger_anchor_dir
    if key is None or folder is None:
        print(
            "an anchor needs a key and a folder: --key / CLAUSEWATCH_LEDGER_KEY_FILE and "
            "--anchors / CLAUSEWATCH_LEDGER_ANCHOR_DIR",
            file=sys.stderr,
        )
        return 2
    try:
        with connect(url) as conn:
            written = anchor_tip(conn, key, folder, dt.datetime.now(dt.UTC))
            conn.commit()
    except AnchorError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except psycopg.Error as exc:
        print(f"cannot read the ledger: {exc}", file=sys.stderr)
        return 2
    if written is None:
        print("the newest anchor already holds the ledger's tip: nothing written")
    else:
        print(f"wrote {folder / written.file}: {written.describe()}")
    return 0


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
