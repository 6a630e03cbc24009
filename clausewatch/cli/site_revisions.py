"""Site revisions from the command line (compliance/site_revisions.py, docs/register.md "Site
revisions"): a site workbook proposed instead of applied at once, then approved by another named
user, published with an effective time (the service applies it then), or rolled back.

clausewatch site propose FILE --reason TEXT [--user NAME | --actor A] [--config-dir D]
clausewatch site approve REVISION --user NAME [--note TEXT]
clausewatch site reject REVISION --note TEXT [--user NAME | --actor A]
clausewatch site publish REVISION --effective-at 2026-12-01T08:00:00+08:00 [--user | --actor]
clausewatch site rollback REVISION [--user NAME | --actor A] [--config-dir D]
clausewatch site revisions [--site ID] [--state S] [--json]

Who acts: `--user NAME`, an enabled admin of the site (of every site, or the site among its
sites), recorded as the API records them; else `--actor A` (default cli:<login name>).
Approval needs `--user`, another person than the proposer.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from api.users import get_user
from clausewatch.cli import Commands
from clausewatch.cli.common import database_argument, database_url
from clausewatch.cli.revisions import run_step
from clausewatch.cli.site import FILE_HELP, config_argument, config_dir
from compliance import site_revisions
from compliance.revisions import RevisionError
from compliance.site_revisions import SiteRevision
from config.documents import ConfigError
from config.sitebook import WorkbookError
from config.sitefiles import plan_import, read_workbook
from store.pool import connect

STATES = ("pending", "approved", "rejected", "published", "applied", "failed", "rolled_back")


def register(commands: Commands) -> None:
    offer = commands.add(
        "site propose",
        "propose a site workbook as a revision of its site: checked as an import's dry run, "
        "stored pending, nothing written until approved, published and due",
    )
    offer.add_argument("file", type=Path, metavar="FILE", help=FILE_HELP)
    offer.add_argument("--reason", required=True)
    config_argument(offer)
    _common(offer, _propose)

    agree = commands.add(
        "site approve", "approve a pending site revision, as a named user other than its proposer"
    )
    agree.add_argument("revision", type=int)
    agree.add_argument("--note")
    _common(agree, _approve, user_required=True)

    refuse = commands.add("site reject", "reject a site revision that is not published")
    refuse.add_argument("revision", type=int)
    refuse.add_argument("--note", required=True)
    _common(refuse, _reject)

    out = commands.add(
        "site publish", "publish an approved site revision: the service applies it at that time"
    )
    out.add_argument("revision", type=int)
    out.add_argument(
        "--effective-at",
        required=True,
        type=_moment,
        help="when it applies, with its UTC offset (2026-12-01T08:00:00+08:00), later than now",
    )
    _common(out, _publish)

    back = commands.add(
        "site rollback",
        "withdraw a published site revision, or put back the model an applied one replaced",
    )
    back.add_argument("revision", type=int)
    config_argument(back)
    _common(back, _rollback)

    listing = commands.add("site revisions", "list site revisions, newest first")
    database_argument(listing)
    listing.add_argument("--site")
    listing.add_argument("--state", choices=STATES, action="append")
    listing.add_argument("--json", action="store_true", help="one JSON object a line")
    listing.set_defaults(func=_list)


def _moment(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("needs a UTC offset, for example +08:00")
    return moment


def _common(
    parser: argparse.ArgumentParser,
    func: Callable[[argparse.Namespace], int],
    *,
    user_required: bool = False,
) -> None:
    database_argument(parser)
    parser.add_argument(
        "--user", required=user_required, help="the named user acting (an admin of the site)"
    )
    if not user_required:
        parser.add_argument("--actor", help="who, for the ledger (default: cli:<login name>)")
    parser.set_defaults(func=func)


def _actor(conn: psycopg.Connection[Any], args: argparse.Namespace, site: str | None) -> str:
    """The named user's actor, or `--actor`; RevisionError when the user may not act."""
    if args.user:
        user = get_user(conn, args.user)
        if user is None or user.disabled_at is not None:
            raise RevisionError(f"no enabled user named {args.user!r}", 403)
        every_site = not user.sites and not user.org
        if user.role != "admin" or not (every_site or (site is not None and site in user.sites)):
            raise RevisionError(f"user {user.name} is not an admin of site {site}", 403)
        return user.actor
    return str(getattr(args, "actor", None) or f"cli:{getpass.getuser()}")


def _directory(args: argparse.Namespace) -> Path | None:
    given = config_dir(args)
    if given is None:
        print(
            "error: a site revision writes into a configuration directory: pass --config-dir or"
            " set CLAUSEWATCH_CONFIG_DIR",
            file=sys.stderr,
        )
    return given


def _propose(args: argparse.Namespace) -> int:
    directory = _directory(args)
    if directory is None:
        return 2
    try:
        plan = plan_import(read_workbook(args.file), directory, args.file.name)
    except (WorkbookError, ConfigError) as exc:
        print(f"error: {args.file}: {exc}", file=sys.stderr)
        return 1
    site = plan.model.site.id
    return _step(
        args,
        lambda conn, now: site_revisions.propose(
            conn, plan, args.file.name, args.reason, _actor(conn, args, site), now
        ),
    )


def _site_of(conn: psycopg.Connection[Any], revision_id: int) -> str | None:
    return site_revisions.revision_site(conn, revision_id)


def _approve(args: argparse.Namespace) -> int:
    return _step(
        args,
        lambda conn, now: site_revisions.approve(
            conn, args.revision, _actor(conn, args, _site_of(conn, args.revision)), args.note, now
        ),
    )


def _reject(args: argparse.Namespace) -> int:
    return _step(
        args,
        lambda conn, now: site_revisions.reject(
            conn, args.revision, _actor(conn, args, _site_of(conn, args.revision)), args.note, now
        ),
    )


def _publish(args: argparse.Namespace) -> int:
    return _step(
        args,
        lambda conn, now: site_revisions.publish(
            conn,
            args.revision,
            _actor(conn, args, _site_of(conn, args.revision)),
            args.effective_at,
            now,
        ),
    )


def _rollback(args: argparse.Namespace) -> int:
    directory = _directory(args)
    if directory is None:
        return 2
    return _step(
        args,
        lambda conn, now: site_revisions.rollback(
            conn, args.revision, _actor(conn, args, _site_of(conn, args.revision)), directory, now
        ),
    )


def _step(
    args: argparse.Namespace,
    work: Callable[[psycopg.Connection[Any], dt.datetime], SiteRevision],
) -> int:
    return run_step(args, work, _print)


def _list(args: argparse.Namespace) -> int:
    with connect(database_url(args)) as conn:
        found = site_revisions.list_revisions(
            conn, sites=None if args.site is None else [args.site], states=args.state
        )
    for revision in found:
        if args.json:
            print(revision.model_dump_json())
        else:
            _print(revision)
    return 0


def _print(revision: SiteRevision) -> None:
    line = (
        f"#{revision.id} {revision.site} {revision.state}: {revision.reason}"
        f" — proposed by {revision.proposed_by}"
    )
    if revision.approved_by:
        line += f", approved by {revision.approved_by}"
    if revision.effective_at is not None:
        line += f", applies at {revision.effective_at.isoformat()}"
    if revision.applied_at is not None:
        line += f", applied {revision.applied_at.isoformat()}"
    if revision.failure:
        line += f", not applied: {revision.failure}"
    if revision.rolled_back_by:
        line += f", rolled back by {revision.rolled_back_by}"
    print(line)
    for change in revision.diff:
        print(f"  {change}")
