"""Issue 17: `--to` means one thing in every command, and its --help says so."""

from __future__ import annotations

import argparse

from clausewatch.cli import build_parser
from clausewatch.cli.common import TO_HELP


def _commands(
    parser: argparse.ArgumentParser, path: str = ""
) -> dict[str, argparse.ArgumentParser]:
    found = {path: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(_commands(sub, f"{path} {name}".strip()))
    return found


def test_every_to_is_the_last_day_included_and_says_so() -> None:
    with_to = {}
    for path, parser in _commands(build_parser()).items():
        for action in parser._actions:
            if "--to" in action.option_strings:
                with_to[path] = action.help or ""
    assert {"report ledger", "report carbon", "report energy", "backtest"} <= set(with_to)
    assert "energy green-power add" in with_to
    for path, text in with_to.items():
        assert text.startswith(TO_HELP), path
