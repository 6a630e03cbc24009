"""Argument plumbing shared by the command-line areas: every command that reads the database takes
its URL from `database_argument` / `database_url` here, and every URL flag has a `-file` twin
(`url_arguments` / `url_from`), so a password need never be typed on a command line, where any
local user can read it (/proc/PID/cmdline) and shells keep it in their history."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from pydantic import ValidationError

from clausewatch.settings import Settings, read_secret_file, settings_problems


def url_arguments(parser: argparse.ArgumentParser, name: str, help: str) -> None:
    """Adds `--NAME-url URL` and `--NAME-url-file FILE` (the file holds the URL), one or the
    other."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(f"--{name}-url", help=help)
    group.add_argument(
        f"--{name}-url-file",
        type=Path,
        metavar="FILE",
        help=f"a file holding the --{name}-url (keeps its password off the command line)",
    )


def url_from(args: argparse.Namespace, name: str) -> str | None:
    """The URL of `--NAME-url`, else the content of `--NAME-url-file`, else None. Raises
    ValueError for a file that cannot be read or is empty."""
    url: str | None = getattr(args, f"{name}_url", None)
    path: Path | None = getattr(args, f"{name}_url_file", None)
    if url is None and path is not None:
        url = read_secret_file(path)
    return url


NO_DATABASE = (
    "no database: set CLAUSEWATCH_DATABASE_URL or CLAUSEWATCH_DATABASE_URL_FILE, "
    "or pass --database-url or --database-url-file"
)


def database_argument(parser: argparse.ArgumentParser) -> None:
    """Add `--database-url` / `--database-url-file`; left out, the setting
    CLAUSEWATCH_DATABASE_URL (or CLAUSEWATCH_DATABASE_URL_FILE) is used."""
    url_arguments(
        parser, "database", "PostgreSQL URL (default: CLAUSEWATCH_DATABASE_URL or its _FILE)"
    )


def database_url(args: argparse.Namespace) -> str:
    """--database-url(-file), else the setting (CLAUSEWATCH_DATABASE_URL or its _FILE). Neither
    set, or a file that cannot be read, ends the command with exit code 2 and a message on
    stderr."""
    try:
        url = url_from(args, "database") or Settings().database_url
    except ValidationError as exc:
        print(f"error: invalid settings: {settings_problems(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
    except ValueError as exc:  # a --database-url-file that cannot be read
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if not url:
        print(NO_DATABASE, file=sys.stderr)
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
