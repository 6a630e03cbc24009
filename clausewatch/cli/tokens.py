"""`clausewatch token create|rotate|revoke|list`: API bearer tokens (see api/tokens.py)."""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys

import psycopg

from api.tokens import (
    DEFAULT_LIFETIME,
    LIFETIME_HELP,
    ROLES,
    TokenRecord,
    create_token,
    list_tokens,
    parse_lifetime,
    revoke_token,
    rotate_token,
)
from clausewatch.cli import Commands
from clausewatch.cli.common import database_argument, database_url
from rules.site import ID_PATTERN


def register(commands: Commands) -> None:
    create = commands.add("token create", "create an API token; prints it once")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument(
        "--site",
        action="append",
        default=[],
        dest="sites",
        help="a site the token may see (repeat for several); none means every site",
    )
    create.add_argument("--label", default="", help="who or what the token is for")
    create.add_argument(
        "--expires-in",
        help=f"how long the token lives: {LIFETIME_HELP}; default {DEFAULT_LIFETIME.days}d",
    )
    database_argument(create)
    create.set_defaults(func=_create)

    rotate = commands.add(
        "token rotate",
        "replace a token by a new one with its role, sites and label; the old one stops working"
        " at once; prints the new one once",
    )
    rotate.add_argument("id", type=int)
    rotate.add_argument(
        "--expires-in",
        help=f"how long the new token lives: {LIFETIME_HELP}; default as long as the old one",
    )
    database_argument(rotate)
    rotate.set_defaults(func=_rotate)

    revoke = commands.add("token revoke", "revoke an API token by its id")
    revoke.add_argument("id", type=int)
    database_argument(revoke)
    revoke.set_defaults(func=_revoke)

    listing = commands.add("token list", "list API tokens (never their values)")
    database_argument(listing)
    listing.set_defaults(func=_list)


def _expires_in(args: argparse.Namespace) -> dt.timedelta | None:
    """--expires-in as a lifetime, None when not given; a bad one ends the command (exit 2)."""
    if args.expires_in is None:
        return None
    try:
        return parse_lifetime(args.expires_in)
    except ValueError as exc:
        print(f"error: --expires-in: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _describe(record: TokenRecord) -> str:
    scope = ", ".join(record.sites) or "all sites"
    return f"({record.role}; {scope}; expires {_when(record.expires_at)})"


def _when(at: dt.datetime) -> str:
    return f"{at.astimezone(dt.UTC):%Y-%m-%d %H:%M}Z"


def _create(args: argparse.Namespace) -> int:
    bad = [site for site in args.sites if not re.match(ID_PATTERN, site)]
    if bad:
        print(f"error: --site {bad[0]!r} is not a site id", file=sys.stderr)
        return 2
    lifetime = _expires_in(args) or DEFAULT_LIFETIME
    url = database_url(args)
    with psycopg.connect(url) as conn:
        token, record = create_token(conn, args.role, tuple(args.sites), args.label, lifetime)
    print(f"token {record.id} {_describe(record)}; shown only now:", file=sys.stderr)
    print(token)
    return 0


def _rotate(args: argparse.Namespace) -> int:
    lifetime = _expires_in(args)
    url = database_url(args)
    with psycopg.connect(url) as conn:
        rotated = rotate_token(conn, args.id, lifetime)
        if rotated is None:
            print(f"error: no unrevoked token with id {args.id}", file=sys.stderr)
            return 1
    token, record = rotated
    print(
        f"token {record.id} replaces token {args.id} {_describe(record)}; token {args.id} no"
        " longer works; the new one is shown only now:",
        file=sys.stderr,
    )
    print(token)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    url = database_url(args)
    with psycopg.connect(url) as conn:
        if not revoke_token(conn, args.id):
            print(f"error: no live token with id {args.id}", file=sys.stderr)
            return 1
    print(f"token {args.id} revoked")
    return 0


def _list(args: argparse.Namespace) -> int:
    url = database_url(args)
    with psycopg.connect(url) as conn:
        for record in list_tokens(conn):
            if record.replaced_by is not None and record.revoked_at is not None:
                state = f"rotated to {record.replaced_by} {_when(record.revoked_at)}"
            elif record.revoked_at is not None:
                state = f"revoked {_when(record.revoked_at)}"
            elif record.expired:
                state = f"expired {_when(record.expires_at)}"
            else:
                state = f"live, expires {_when(record.expires_at)}"
            sites = ",".join(record.sites) or "*"
            print(f"{record.id}\t{record.role}\t{sites}\t{state}\t{record.label}")
    return 0
