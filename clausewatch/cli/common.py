"""Argument plumbing shared by the command-line areas: every command that reads the database takes
its URL from `database_argument` / `database_url` here."""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from clausewatch.settings import Settings


def database_argument(parser: argparse.ArgumentParser) -> None:
    """Add `--database-url`; left out, the setting CLAUSEWATCH_DATABASE_URL is used."""
    parser.add_argument("--database-url", help="PostgreSQL URL (default: CLAUSEWATCH_DATABASE_URL)")


def database_url(args: argparse.Namespace) -> str:
    """--database-url, else the setting. Neither set ends the command with exit code 2 and a
    message on stderr."""
    url: str | None = args.database_url or Settings().database_url
    if not url:
        print("no database: set CLAUSEWATCH_DATABASE_URL or pass --database-url", file=sys.stderr)
        raise SystemExit(2)
    return url


# What `--to` means in every command that takes one (issue 17: it was inclusive in some and
# exclusive in others): the last day of the period, included.
TO_HELP = "the last day included, YYYY-MM-DD (--from 2026-07-01 --to 2026-07-31 is July)"
TO_MOMENT_HELP = f"{TO_HELP}; or an ISO datetime with offset, the instant the period ends"


def day(text: str) -> dt.date:
    """An argparse type: a calendar day written YYYY-MM-DD."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date such as 2026-07-01") from exc
