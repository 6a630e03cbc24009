"""The `clausewatch` command. Each area registers its own subcommands (a module of this package
each), so this file only lists the areas and builds nested command groups ("db upgrade",
"report carbon") on request."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from pydantic import ValidationError

# Modules exposing `register(commands: Commands)`. Each command parser gets `func(args) -> int`.
COMMAND_MODULES = (
    "clausewatch.cli.service",  # demo, run
    "clausewatch.cli.check",  # check, test-clauses
    "clausewatch.cli.db",  # db upgrade, db info
    "clausewatch.cli.tokens",  # token create
    "clausewatch.cli.users",  # user create
    "clausewatch.cli.alerts",  # ledger verify, report ledger
    "clausewatch.cli.energy",  # report carbon
    "clausewatch.cli.simulate",  # simulate
    "clausewatch.cli.edge",  # edge run
    "clausewatch.cli.broker",  # broker files
    "clausewatch.cli.compliance",  # report compliance, backtest
    "clausewatch.cli.revisions",  # clause propose|approve|reject|publish|rollback|revisions
    "clausewatch.cli.quiet",  # silence add|list|cancel, maintenance add|list|cancel
    "clausewatch.cli.routes",  # route list, route sync
    "clausewatch.cli.site",  # site export, site import, site template
    "clausewatch.cli.site_revisions",  # site propose|approve|reject|publish|rollback|revisions
    "clausewatch.cli.cluster",  # cluster status, cluster mapping
)


class Commands:
    """Creates command parsers by path, making the intermediate groups once."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self._groups: dict[tuple[str, ...], argparse._SubParsersAction[argparse.ArgumentParser]] = {
            (): parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
        }

    def add(self, path: str, help: str) -> argparse.ArgumentParser:
        """`add("db upgrade", ...)` returns the parser of `clausewatch db upgrade`."""
        words = tuple(path.split())
        for depth in range(1, len(words)):
            prefix = words[:depth]
            if prefix not in self._groups:
                group = self._groups[prefix[:-1]].add_parser(
                    prefix[-1], help=f"{prefix[-1]} commands"
                )
                self._groups[prefix] = group.add_subparsers(
                    dest="_".join(prefix), required=True, metavar="COMMAND"
                )
        return self._groups[words[:-1]].add_parser(words[-1], help=help, description=help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clausewatch",
        description="Quantitative facility standards as live, enforced, traceable checks.",
    )
    commands = Commands(parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "uses_holiday_calendar", True) and not _use_holiday_calendar(args):
        return 2
    try:
        return int(args.func(args) or 0)
    except SystemExit as exit_:  # a command that stops early (no database URL): its code
        if isinstance(exit_.code, int):
            return exit_.code
        if exit_.code is not None:
            print(exit_.code, file=sys.stderr)
        return 1
    except ValidationError as exc:
        if exc.title != "Settings":
            raise
        # A setting from the environment that cannot be used (a *_FILE that cannot be read...)
        from clausewatch.settings import settings_problems

        print(f"error: invalid settings: {settings_problems(exc)}", file=sys.stderr)
        return 2


def _use_holiday_calendar(args: argparse.Namespace) -> bool:
    """Every command judges working days (schedules, reports, simulations) with the official
    holiday schedules: the bundled ones, with the configuration directory's holidays/ folder
    (--config-dir, else CLAUSEWATCH_CONFIG_DIR) replacing or adding years. False, with the
    problems on stderr, when a file there is invalid. Commands that load holiday files
    themselves (`check`) set `uses_holiday_calendar=False`."""
    from config.documents import ConfigError
    from config.holidays import install_official_calendar

    config_dir = getattr(args, "config_dir", None) or os.environ.get("CLAUSEWATCH_CONFIG_DIR")
    try:
        install_official_calendar(config_dir or None)
    except ConfigError as exc:
        print(f"error: the holiday schedules are invalid:\n{exc}", file=sys.stderr)
        return False
    return True
