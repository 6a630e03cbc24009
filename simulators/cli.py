"""Command-line entry points of this area (see clausewatch/cli.py)."""

from __future__ import annotations

from clausewatch.cli import Commands


def register(commands: Commands) -> None:
    """Adds this area's subcommands. Filled in by the issue that builds the area."""
