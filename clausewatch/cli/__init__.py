"""The `clausewatch` command. Each area registers its own subcommands (a module of this package
each), so this file only lists the areas and builds nested command groups ("db upgrade",
"report carbon") on request."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

# Modules exposing `register(commands: Commands)`. Each command parser gets `func(args) -> int`.
COMMAND_MODULES = (
    "clausewatch.cli.service",  # demo, run
    "clausewatch.cli.check",  # check, test-clauses
    "clausewatch.cli.db",  # db upgrade, db info
    "clausewatch.cli.tokens",  # token create
    "clausewatch.cli.alerts",  # ledger verify, report ledger
    "clausewatch.cli.energy",  # report carbon
    "clausewatch.cli.simulate",  # simulate
    "clausewatch.cli.edge",  # edge run
    "clausewatch.cli.compliance",  # report compliance, backtest
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
    return int(args.func(args) or 0)
