"""`clausewatch user create|list|disable|enable|reset-password`: named users who sign in at
/login (see api/users.py). Passwords are read from standard input, never from the command
line (where `ps` and the shell history would keep them)."""

from __future__ import annotations

import argparse
import re
import sys

import psycopg

from api.tokens import ROLES
from api.users import (
    MIN_PASSWORD,
    UserError,
    UserRecord,
    create_user,
    disable_user,
    enable_user,
    list_users,
    set_password,
)
from clausewatch.cli import Commands
from clausewatch.cli.common import database_argument, database_url
from rules.site import ID_PATTERN
from store import registry

PASSWORD_STDIN_HELP = (
    f"read the password (at least {MIN_PASSWORD} characters) from the first line of standard"
    " input, e.g. from a password manager: never give it on the command line"
)


def register(commands: Commands) -> None:
    create = commands.add("user create", "create a user who signs in at /login")
    create.add_argument("name", help="the sign-in name: a-z 0-9 . _ - (e.g. wangfang)")
    create.add_argument("--role", required=True, choices=ROLES)
    scope = create.add_mutually_exclusive_group()
    scope.add_argument(
        "--site",
        action="append",
        default=[],
        dest="sites",
        help="a site the user may see (repeat for several)",
    )
    scope.add_argument(
        "--org",
        help="an organisation path such as shanghai/pudong: every site whose site.org starts"
        " with it, sites added later included; neither --site nor --org: every site",
    )
    create.add_argument(
        "--display-name", default="", help="the person's name as records show it (王芳)"
    )
    create.add_argument(
        "--password-stdin", action="store_true", required=True, help=PASSWORD_STDIN_HELP
    )
    database_argument(create)
    create.set_defaults(func=_create)

    listing = commands.add("user list", "list users (never their passwords)")
    database_argument(listing)
    listing.set_defaults(func=_list)

    disable = commands.add("user disable", "disable a user; their sessions end at once")
    disable.add_argument("name")
    database_argument(disable)
    disable.set_defaults(func=_disable)

    enable = commands.add("user enable", "enable a disabled user again")
    enable.add_argument("name")
    database_argument(enable)
    enable.set_defaults(func=_enable)

    reset = commands.add(
        "user reset-password",
        "give a user a new password; their sessions end and their lockout is lifted",
    )
    reset.add_argument("name")
    reset.add_argument(
        "--password-stdin", action="store_true", required=True, help=PASSWORD_STDIN_HELP
    )
    database_argument(reset)
    reset.set_defaults(func=_reset)


def _password() -> str:
    line = sys.stdin.readline()
    return line.removesuffix("\n").removesuffix("\r")


def _org(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    parts = tuple(text.strip("/").split("/"))
    bad = [part for part in parts if not re.match(ID_PATTERN, part)]
    if bad:
        raise UserError(f"--org {text!r}: {bad[0]!r} is not an organisation id")
    return parts


def _describe(user: UserRecord) -> str:
    return f"{user.name} ({user.role}; {user.scope})"


def _create(args: argparse.Namespace) -> int:
    try:
        bad = [site for site in args.sites if not re.match(ID_PATTERN, site)]
        if bad:
            raise UserError(f"--site {bad[0]!r} is not a site id")
        org = _org(args.org)
        password = _password()
        with psycopg.connect(database_url(args)) as conn:
            user = create_user(
                conn,
                args.name,
                args.role,
                password,
                display_name=args.display_name,
                sites=tuple(args.sites),
                org=org,
            )
            seen = registry.sites_in_org(conn, org) if org else None
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"user {_describe(user)} created; actions are recorded as {user.actor}")
    if seen is not None:
        print(f"sites of {'/'.join(org)} now: {', '.join(seen) or 'none yet'}")
    return 0


def _list(args: argparse.Namespace) -> int:
    with psycopg.connect(database_url(args)) as conn:
        for user in list_users(conn):
            state = "enabled" if user.disabled_at is None else "disabled"
            print(f"{user.name}\t{user.role}\t{user.scope}\t{state}\t{user.display_name}")
    return 0


def _disable(args: argparse.Namespace) -> int:
    with psycopg.connect(database_url(args)) as conn:
        if not disable_user(conn, args.name):
            print(f"error: no enabled user named {args.name!r}", file=sys.stderr)
            return 1
    print(f"user {args.name} disabled; their sessions have ended")
    return 0


def _enable(args: argparse.Namespace) -> int:
    with psycopg.connect(database_url(args)) as conn:
        if not enable_user(conn, args.name):
            print(f"error: no disabled user named {args.name!r}", file=sys.stderr)
            return 1
    print(f"user {args.name} enabled")
    return 0


def _reset(args: argparse.Namespace) -> int:
    try:
        password = _password()
        with psycopg.connect(database_url(args)) as conn:
            if not set_password(conn, args.name, password):
                print(f"error: no user named {args.name!r}", file=sys.stderr)
                return 1
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"password of {args.name} changed; their sessions have ended")
    return 0
