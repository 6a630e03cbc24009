"""Command-line entry points of notification routes (alerts/routing.py, issue 20):

clausewatch route list [--site S]
clausewatch route sync [--config-dir DIR] [--by NAME]

`route sync` applies the config directory's routes.yaml now, as the service does at start (the
service reads the routes at every notice, so no restart is needed): the file's routes are added,
changed or removed to match it; routes made through the API stay.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from alerts import routing
from clausewatch.cli import Commands
from clausewatch.cli.common import database_argument, database_url
from clausewatch.service import load_routes
from clausewatch.settings import Settings
from config import BUNDLED_DIR
from config.documents import ConfigError
from store.pool import connect
from store.times import wall_now


def register(commands: Commands) -> None:
    listing = commands.add("route list", "the notification routes, in the order they are tried")
    database_argument(listing)
    listing.add_argument("--site", help="only the routes that name this site")
    listing.set_defaults(func=_list)

    sync = commands.add(
        "route sync", "apply the config directory's routes.yaml now (as the service does at start)"
    )
    database_argument(sync)
    sync.add_argument(
        "--config-dir", type=Path, help="default: CLAUSEWATCH_CONFIG_DIR, else the bundled one"
    )
    sync.add_argument("--by", default="config", help="recorded in the ledger as who changed them")
    sync.set_defaults(func=_sync)


def _list(args: argparse.Namespace) -> int:
    with connect(database_url(args)) as conn:
        rows = routing.route_rows(conn)
    for row in rows:
        if args.site is None or args.site in row["sites"]:
            print(_line(row))
    return 0


def _sync(args: argparse.Namespace) -> int:
    directory = args.config_dir or Settings().config_dir or BUNDLED_DIR
    try:
        routes = load_routes(directory)
    except ConfigError as exc:
        print(f"error: {directory / 'routes.yaml'} is invalid:\n{exc}", file=sys.stderr)
        return 1
    with connect(database_url(args)) as conn:
        try:
            changes = routing.sync_file(conn, routes, args.by, wall_now())
        except routing.RouteInvalid as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        conn.commit()
    print("; ".join(changes) if changes else "routes unchanged")
    return 0


def _line(row: dict[str, Any]) -> str:
    """`  10 xuhui-district (file): org=shanghai,xuhui → xh-district-wecom (continue) · ...`"""
    if row["default"]:
        what = "default"
    else:
        parts = [f"sites={','.join(row['sites'])}"] if row["sites"] else []
        parts += [f"{k}={','.join(v)}" for k, v in row["match"].items() if v]
        what = ", ".join(parts) or "every alert"
    then = " (continue)" if row["continue"] else ""
    repeat = row["repeat_interval_s"]
    reminders = "the target's reminders" if repeat is None else f"repeat {repeat} s"
    resolved = "resolved notices" if row["send_resolved"] else "no resolved notices"
    return (
        f"{row['position']:>5} {row['name']} ({row['source']}): {what}"
        f" → {', '.join(row['receivers'])}{then}"
        f" · group_wait {row['group_wait_s']} s, group_interval {row['group_interval_s']} s,"
        f" {reminders}, {resolved}"
    )
