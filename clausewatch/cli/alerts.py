"""Command-line entry points of this area (see clausewatch/cli.py):

clausewatch ledger verify [--database-url URL] [--anchors DIR] [--public-key FILE]...
clausewatch ledger keygen --out FILE
clausewatch ledger anchor [--database-url URL] [--key FILE] [--anchors DIR]
clausewatch report ledger --site S --from YYYY-MM-DD --to YYYY-MM-DD [--out FILE]
clausewatch webhook add NAME --url-file FILE [--kind KIND] [--secret-file FILE] [--site S]
                        [--level N] [--party-only] [--language zh|en] [--options-file F]
                        [--max-per-minute N] [--repeat-minutes N]
clausewatch webhook change NAME [--url-file FILE] [--secret-file FILE | --new-secret]
                        [--enable | --disable] [--language zh|en] [--options-file FILE]
                        [--max-per-minute N] [--repeat-minutes N]
clausewatch webhook list                              (kind, delivery counts, FAILING)
clausewatch webhook allow ENTRY [--note TEXT]        (a host name, an address or a network)
clausewatch webhook disallow ID
clausewatch webhook allowlist

Webhook targets and the allow-list are global data: these commands are for whoever holds the
database URL (the operator), as the API's are for admin tokens without a site scope. A
target's URL may carry a token and its secret is one, so both are read from files (or typed at
a prompt), never from the command line; `list` shows the URL as scheme, host and port only.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any

import psycopg

from alerts import channels, export, webhooks
from clausewatch.cli import Commands
from clausewatch.cli.common import TO_HELP, database_argument, database_url, day
from clausewatch.settings import Settings, read_secret_file
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

    add = commands.add(
        "webhook add",
        "a notification target: signed JSON webhook, WeCom/DingTalk/Feishu robot, e-mail, SMS",
    )
    database_argument(add)
    add.add_argument("name", help="the target's name (what a party's contacts.webhook names)")
    add.add_argument(
        "--kind", choices=channels.KINDS, default="webhook", help="its channel (default: webhook)"
    )
    _url_options(add, required=True)
    add.add_argument(
        "--secret-file",
        type=Path,
        help="the secret: a webhook's signing secret (default: a new one, printed once), a"
        " DingTalk or Feishu robot's, the SMTP password, an SMS gateway's key",
    )
    _channel_options(add)
    add.add_argument("--site", help="only this site's alerts (default: every site)")
    add.add_argument(
        "--level",
        type=int,
        help="only this escalation level, 0 = the responsible party (default: every level)",
    )
    add.add_argument(
        "--party-only",
        action="store_true",
        help="only the notifications of parties whose contacts.webhook names it",
    )
    add.add_argument("--added-by", default="cli")
    add.set_defaults(func=_webhook_add)

    change = commands.add("webhook change", "change a webhook target's URL, secret or state")
    database_argument(change)
    change.add_argument("name")
    _url_options(change, required=False)
    secret = change.add_mutually_exclusive_group()
    secret.add_argument("--secret-file", type=Path, help="a new signing secret, from a file")
    secret.add_argument(
        "--new-secret", action="store_true", help="a new random signing secret, printed once"
    )
    state = change.add_mutually_exclusive_group()
    state.add_argument("--enable", dest="enabled", action="store_true", default=None)
    state.add_argument("--disable", dest="enabled", action="store_false")
    _channel_options(change)
    change.add_argument("--changed-by", default="cli")
    change.set_defaults(func=_webhook_change)

    listing = commands.add("webhook list", "webhook targets with their delivery counts")
    database_argument(listing)
    listing.set_defaults(func=_webhook_list)

    allow = commands.add(
        "webhook allow",
        "let webhooks go to an internal host name, address or network (they are refused)",
    )
    database_argument(allow)
    allow.add_argument("entry", help="sms-gw.lan, 10.0.0.5 or 10.0.0.0/24")
    allow.add_argument("--note", default="")
    allow.add_argument("--added-by", default="cli")
    allow.set_defaults(func=_webhook_allow)

    disallow = commands.add("webhook disallow", "remove an allow-list entry (by its id)")
    database_argument(disallow)
    disallow.add_argument("id", type=int)
    disallow.add_argument("--removed-by", default="cli")
    disallow.set_defaults(func=_webhook_disallow)

    allowlist = commands.add("webhook allowlist", "the allow-list of internal webhook addresses")
    database_argument(allowlist)
    allowlist.set_defaults(func=_webhook_allowlist)


def _channel_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--language", choices=("zh", "en"), help="of the messages (default zh)")
    parser.add_argument(
        "--max-per-minute",
        type=int,
        help="messages a minute at most, the rest wait (default: the kind's, robots 20)",
    )
    parser.add_argument(
        "--repeat-minutes",
        type=int,
        help="remind of a firing alert nobody acknowledged every N minutes (default: never)",
    )
    parser.add_argument(
        "--options-file",
        type=Path,
        help="a JSON object: the kind's options (recipients, msgtype, SMS template;"
        " docs/alerts.md)",
    )


def _options_file(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: the options are a JSON object")
    return value


def _url_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    url = parser.add_mutually_exclusive_group(required=required)
    url.add_argument("--url-file", type=Path, help="a file holding the target's URL")
    url.add_argument(
        "--url-prompt", action="store_true", help="type the URL at a prompt (not echoed)"
    )


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
    try:
        target_url = _target_url(args)
        secret = read_secret_file(args.secret_file) if args.secret_file else None
        generated = secret is None and args.kind == "webhook"
        target = webhooks.Target(
            args.name,
            target_url or "",
            webhooks.new_secret() if generated else secret or "",
            site=args.site,
            level=args.level,
            broadcast=not args.party_only,
            kind=args.kind,
            language=args.language or "zh",
            options=_options_file(args.options_file) or {},
            max_per_minute=args.max_per_minute,
            repeat_interval_s=None if args.repeat_minutes is None else args.repeat_minutes * 60,
        )
        with connect(url) as conn:
            target_id = webhooks.add_target(conn, target, args.added_by)
            conn.commit()
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{target.kind} {target_id} {target.name}: {webhooks.shown_url(target.url)}")
    if generated:
        print(f"signing secret (shown once, give it to the receiver): {target.secret}")
    return 0


def _webhook_change(args: argparse.Namespace) -> int:
    url = database_url(args)
    changes: dict[str, Any] = {}
    try:
        target_url = _target_url(args)
        if target_url is not None:
            changes["url"] = target_url
        if args.secret_file:
            changes["secret"] = read_secret_file(args.secret_file)
        elif args.new_secret:
            changes["secret"] = webhooks.new_secret()
        if args.enabled is not None:
            changes["enabled"] = args.enabled
        if args.language is not None:
            changes["language"] = args.language
        if args.max_per_minute is not None:
            changes["max_per_minute"] = args.max_per_minute
        if args.repeat_minutes is not None:
            changes["repeat_interval_s"] = args.repeat_minutes * 60
        options = _options_file(args.options_file)
        if options is not None:
            changes["options"] = options
        with connect(url) as conn:
            target_id = webhooks.target_id_by_name(conn, args.name)
            if target_id is None:
                print(f"error: no webhook target named {args.name!r}", file=sys.stderr)
                return 2
            webhooks.change_target(conn, target_id, changes, args.changed_by)
            conn.commit()
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"webhook {target_id} {args.name}: changed {', '.join(sorted(changes)) or 'nothing'}")
    if args.new_secret:
        print(f"signing secret (shown once, give it to the receiver): {changes['secret']}")
    return 0


def _target_url(args: argparse.Namespace) -> str | None:
    if args.url_file is not None:
        return read_secret_file(args.url_file)
    if args.url_prompt:
        return getpass.getpass("URL of the webhook target: ").strip()
    return None


def _webhook_list(args: argparse.Namespace) -> int:
    url = database_url(args)
    with connect(url) as conn:
        rows = webhooks.target_rows(conn)
    print("id  name  kind  site  level  broadcast  enabled  delivered  pending  failed  url")
    for row in rows:
        site = row["site"] or "*"
        level = "*" if row["level"] is None else row["level"]
        print(
            f"{row['id']}  {row['name']}  {row['kind']}  {site}  {level}  "
            f"{_yes(row['broadcast'])}  {_yes(row['enabled'])}  {row['delivered']}  "
            f"{row['pending']}  {row['failed']}  {row['url']}"
        )
        if row["failed_attempts"]:
            state = "FAILING" if row["failing"] else "failed"
            print(
                f"    {state}: {row['failed_attempts']} attempt(s) in a row, the last at"
                f" {row['last_failure_at']:%Y-%m-%d %H:%M:%S%z}: {row['last_error']}"
            )
    return 0


def _webhook_allow(args: argparse.Namespace) -> int:
    url = database_url(args)
    try:
        with connect(url) as conn:
            entry_id, added = webhooks.allow(conn, args.entry, args.note, args.added_by)
            conn.commit()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"allow-list entry {entry_id}" + ("" if added else " (there already)"))
    return 0


def _webhook_disallow(args: argparse.Namespace) -> int:
    url = database_url(args)
    try:
        with connect(url) as conn:
            webhooks.disallow(conn, args.id, args.removed_by)
            conn.commit()
    except LookupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _webhook_allowlist(args: argparse.Namespace) -> int:
    url = database_url(args)
    with connect(url) as conn:
        rows = webhooks.allow_rows(conn)
    print("id  kind  entry  added by  note")
    for row in rows:
        print(f"{row['id']}  {row['kind']}  {row['entry']}  {row['created_by']}  {row['note']}")
    return 0


def _yes(value: bool) -> str:
    return "yes" if value else "no"
