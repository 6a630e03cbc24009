"""Command-line entry points of silences and maintenance windows (store/quiet.py, issue 20):

clausewatch silence add --site S [--space X | --device D | --clause C] --until TIME
                        [--from TIME] --reason TEXT [--by NAME]
clausewatch silence list [--site S] [--all]
clausewatch silence cancel ID [--by NAME]
clausewatch maintenance add | list | cancel   (the same arguments)

Times are RFC 3339 (2026-07-06T13:00+08:00); without an offset, UTC. Whoever holds the
database URL is the operator: a maintenance window may begin in the past here (retroactive,
marked so in the row and the ledger), as through the API with an unscoped admin token.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from clausewatch.cli import Commands
from clausewatch.cli.common import database_argument, database_url
from store import quiet
from store.pool import connect
from store.times import wall_now

WHAT = {"silence": "silence", "maintenance": "maintenance window"}


def register(commands: Commands) -> None:
    for kind in quiet.KINDS:
        what = WHAT[kind]
        add = commands.add(
            f"{kind} add",
            "hold back the notifications of a scope's alerts"
            if kind == "silence"
            else "declare planned works: the time they cover is exempt from compliance rates",
        )
        database_argument(add)
        add.add_argument("--site", required=True)
        scope = add.add_mutually_exclusive_group()
        scope.add_argument("--space", help="a space and its subtree")
        scope.add_argument("--device")
        scope.add_argument("--clause")
        add.add_argument("--from", dest="starts_at", type=_time, help="default: now")
        add.add_argument("--until", dest="ends_at", type=_time, required=True)
        add.add_argument("--reason", required=True)
        add.add_argument("--by", default="cli", help="recorded as who set it")
        add.set_defaults(func=_add, kind=kind)

        listing = commands.add(f"{kind} list", f"the {what}s not over yet (--all: every one)")
        database_argument(listing)
        listing.add_argument("--site")
        listing.add_argument("--all", action="store_true")
        listing.set_defaults(func=_list, kind=kind)

        cancel = commands.add(f"{kind} cancel", f"end a {what} now")
        database_argument(cancel)
        cancel.add_argument("id", type=int)
        cancel.add_argument("--by", default="cli", help="recorded as who cancelled it")
        cancel.set_defaults(func=_cancel, kind=kind)


def _time(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time: {text!r}") from exc
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _add(args: argparse.Namespace) -> int:
    scope: quiet.Scope = "site"
    target = None
    for name in ("space", "device", "clause"):
        if getattr(args, name):
            scope, target = name, getattr(args, name)
    now = wall_now()
    spec = quiet.Spec(
        args.kind, args.site, scope, target, args.starts_at or now, args.ends_at, args.reason
    )
    with connect(database_url(args)) as conn:
        try:
            row = quiet.create(conn, spec, args.by, now, may_backdate=True)
        except quiet.QuietError as exc:
            print(exc.message, file=sys.stderr)
            return 1
        conn.commit()
    print(_line(row))
    return 0


def _list(args: argparse.Namespace) -> int:
    with connect(database_url(args)) as conn:
        sites = None if args.site is None else [args.site]
        rows = quiet.rows(conn, args.kind, sites, wall_now(), include_ended=args.all)
    for row in rows:
        print(_line(row))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    with connect(database_url(args)) as conn:
        try:
            row = quiet.cancel(conn, args.kind, args.id, args.by, wall_now())
        except quiet.QuietError as exc:
            print(exc.message, file=sys.stderr)
            return 1
        conn.commit()
    print(_line(row))
    return 0


def _line(row: dict[str, object]) -> str:
    scope = "site" if row["target"] is None else f"{row['scope']} {row['target']}"
    state = f" cancelled by {row['cancelled_by']}" if row["cancelled_by"] else ""
    back = " (retroactive)" if row["retroactive"] else ""
    return (
        f"{row['kind']} {row['id']}: {row['site']} {scope}"
        f" {_iso(row['starts_at'])} – {_iso(row['effective_end'])}{back}{state}"
        f" · {row['reason']} · set by {row['created_by']}"
    )


def _iso(value: object) -> str:
    return value.isoformat() if isinstance(value, dt.datetime) else str(value)
