"""Clause revisions from the command line (compliance/revisions.py, docs/register.md):

clausewatch clause propose --clause ID --set PATH=VALUE [--set ...] --reason TEXT
                           [--backtest-days N] [--user NAME | --actor A]
clausewatch clause approve REVISION --user NAME [--note TEXT]
clausewatch clause reject REVISION --note TEXT [--user NAME | --actor A]
clausewatch clause publish REVISION --effective-from YYYY-MM-DD [--user NAME | --actor A]
clausewatch clause rollback REVISION [--effective-from YYYY-MM-DD] [--user NAME | --actor A]
clausewatch clause revisions [--clause ID] [--state S] [--json]

Who acts: `--user NAME`, a named user (clausewatch user create) who is an admin of every site,
recorded as the API records them (user:NAME (display name)); else `--actor A` (default
cli:<login name>). Approval needs `--user`, another person than the proposer. A running
service picks a publication up within a second.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
import yaml
from pydantic import ValidationError

from api.models import RevisionProposal
from api.users import get_user
from clausewatch.cli import Commands
from clausewatch.cli.common import database_argument, database_url, day
from compliance.revisions import (
    Revision,
    RevisionError,
    approve,
    list_revisions,
    propose,
    publish,
    reject,
    rollback,
)
from store.pool import connect

STATES = ("pending", "approved", "rejected", "published", "rolled_back")


_R = TypeVar("_R")  # a clause or a site revision


def register(commands: Commands) -> None:
    offer = commands.add(
        "clause propose", "propose a change to a clause: validated and backtested, then pending"
    )
    offer.add_argument("--clause", required=True, help="clause id, e.g. temp.cooling.min")
    offer.add_argument(
        "--set",
        dest="changes",
        action="append",
        required=True,
        metavar="PATH=VALUE",
        help="e.g. params.limit.default=26.5 (VALUE read as YAML: 26.5, true, 10m); repeatable",
    )
    offer.add_argument("--reason", required=True)
    offer.add_argument("--backtest-days", type=int, default=7, help="history replayed (1-92)")
    _common(offer, _propose)

    agree = commands.add(
        "clause approve", "approve a pending revision, as a named user other than its proposer"
    )
    agree.add_argument("revision", type=int)
    agree.add_argument("--note")
    _common(agree, _approve, user_required=True)

    refuse = commands.add("clause reject", "reject a revision that is not published")
    refuse.add_argument("revision", type=int)
    refuse.add_argument("--note", required=True)
    _common(refuse, _reject)

    out = commands.add("clause publish", "publish an approved revision from a later day")
    out.add_argument("revision", type=int)
    out.add_argument("--effective-from", required=True, type=day, help="YYYY-MM-DD, after today")
    _common(out, _publish)

    back = commands.add("clause rollback", "take a published revision back")
    back.add_argument("revision", type=int)
    back.add_argument(
        "--effective-from",
        type=day,
        help="the day the revised content applies again (not needed before it came into force)",
    )
    _common(back, _rollback)

    listing = commands.add("clause revisions", "list clause revisions, newest first")
    database_argument(listing)
    listing.add_argument("--clause")
    listing.add_argument("--state", choices=STATES, action="append")
    listing.add_argument("--json", action="store_true", help="one JSON object a line")
    listing.set_defaults(func=_list)


def _common(
    parser: argparse.ArgumentParser,
    func: Callable[[argparse.Namespace], int],
    *,
    user_required: bool = False,
) -> None:
    database_argument(parser)
    parser.add_argument(
        "--user",
        required=user_required,
        help="the named user acting (an enabled admin of every site)",
    )
    if not user_required:
        parser.add_argument("--actor", help="who, for the ledger (default: cli:<login name>)")
    parser.set_defaults(func=func)


def _actor(conn: psycopg.Connection[Any], args: argparse.Namespace) -> str:
    """The named user's actor, or `--actor`; RevisionError when the user may not act."""
    if args.user:
        user = get_user(conn, args.user)
        if user is None or user.disabled_at is not None:
            raise RevisionError(f"no enabled user named {args.user!r}", 403)
        if user.role != "admin" or user.sites or user.org:
            raise RevisionError(
                f"user {user.name} is not an admin of every site: revisions change every site",
                403,
            )
        return user.actor
    return str(getattr(args, "actor", None) or f"cli:{getpass.getuser()}")


def _propose(args: argparse.Namespace) -> int:
    changes: dict[str, Any] = {}
    for item in args.changes:
        path, sep, text = item.partition("=")
        if not sep:
            print(f"--set {item!r}: PATH=VALUE", file=sys.stderr)
            return 2
        try:
            changes[path.strip()] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            changes[path.strip()] = text
    try:
        body = RevisionProposal(
            clause_id=args.clause,
            changes=changes,
            reason=args.reason,
            backtest_days=args.backtest_days,
        )
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            print(f"{where}: {error['msg']}", file=sys.stderr)
        return 2
    return _step(
        args,
        lambda conn, now: propose(
            conn,
            body.clause_id,
            body.changes,
            body.reason,
            _actor(conn, args),
            now,
            backtest_days=body.backtest_days,
        ),
    )


def _approve(args: argparse.Namespace) -> int:
    return _step(
        args, lambda conn, now: approve(conn, args.revision, _actor(conn, args), args.note, now)
    )


def _reject(args: argparse.Namespace) -> int:
    return _step(
        args, lambda conn, now: reject(conn, args.revision, _actor(conn, args), args.note, now)
    )


def _publish(args: argparse.Namespace) -> int:
    return _step(
        args,
        lambda conn, now: publish(
            conn, args.revision, _actor(conn, args), args.effective_from, now
        ),
    )


def _rollback(args: argparse.Namespace) -> int:
    return _step(
        args,
        lambda conn, now: rollback(
            conn, args.revision, _actor(conn, args), args.effective_from, now
        ),
    )


def run_step(
    args: argparse.Namespace,
    work: Callable[[psycopg.Connection[Any], dt.datetime], _R],
    show: Callable[[_R], None],
) -> int:
    """One step of a revision's workflow in a transaction of its own: shown when committed,
    exit 2 with the reason when refused (clause and site revisions alike)."""
    try:
        with connect(database_url(args)) as conn:
            revision = work(conn, dt.datetime.now(dt.UTC))
            conn.commit()
    except RevisionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except psycopg.Error as exc:
        print(f"error: the database refused: {exc}", file=sys.stderr)
        return 2
    show(revision)
    return 0


def _step(
    args: argparse.Namespace,
    work: Callable[[psycopg.Connection[Any], dt.datetime], Revision],
) -> int:
    return run_step(args, work, _print)


def _list(args: argparse.Namespace) -> int:
    with connect(database_url(args)) as conn:
        found = list_revisions(conn, clause_id=args.clause, states=args.state)
    for revision in found:
        if args.json:
            print(revision.model_dump_json())
        else:
            _print(revision)
    return 0


def _print(revision: Revision) -> None:
    changes = "; ".join(f"{c.path}: {c.before} → {c.after}" for c in revision.diff)
    line = (
        f"#{revision.id} {revision.clause_id} v{revision.based_on} {revision.state}:"
        f" {changes} — proposed by {revision.proposed_by}"
    )
    if revision.approved_by:
        line += f", approved by {revision.approved_by}"
    if revision.version is not None:
        line += f", published as v{revision.version} from {revision.effective_from}"
    if revision.rolled_back_by:
        line += f", rolled back by {revision.rolled_back_by}"
    print(line)
    for tested in revision.backtest:
        before = "–" if tested.in_force_rate is None else f"{tested.in_force_rate:.1%}"
        after = "–" if tested.candidate_rate is None else f"{tested.candidate_rate:.1%}"
        print(
            f"  backtest {tested.site}: compliance {before} → {after},"
            f" alerts {tested.in_force_alerts} → {tested.candidate_alerts}"
        )
