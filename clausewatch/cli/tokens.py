"""`clausewatch token create|revoke|list`: API bearer tokens (see api/tokens.py)."""

from __future__ import annotations

import argparse
import re
import sys

import psycopg

from api.tokens import ROLES, create_token, list_tokens, revoke_token
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
    database_argument(create)
    create.set_defaults(func=_create)

    revoke = commands.add("token revoke", "revoke an API token by its id")
    revoke.add_argument("id", type=int)
    database_argument(revoke)
    revoke.set_defaults(func=_revoke)

    listing = commands.add("token list", "list API tokens (never their values)")
    database_argument(listing)
    listing.set_defaults(func=_list)


def _create(args: argparse.Namespace) -> int:
    bad = [site for site in args.sites if not re.match(ID_PATTERN, site)]
    if bad:
        print(f"error: --site {bad[0]!r} is not a site id", file=sys.stderr)
        return 2
    url = database_url(args)
    with psycopg.connect(url) as conn:
        token, record = create_token(conn, args.role, tuple(args.sites), args.label)
    scope = ", ".join(record.sites) or "all sites"
    print(f"token {record.id} ({record.role}; {scope}); shown only now:", file=sys.stderr)
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
            state = f"revoked {record.revoked_at:%Y-%m-%d}" if record.revoked_at else "live"
            sites = ",".join(record.sites) or "*"
            print(f"{record.id}\t{record.role}\t{sites}\t{state}\t{record.label}")
    return 0
