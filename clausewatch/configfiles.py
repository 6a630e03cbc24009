"""Reading operator files (site models, clause configs) from disk, with errors that name the file
and the path inside it. `clausewatch check` lives here."""

from __future__ import annotations

from clausewatch.cli import Commands


def register(commands: Commands) -> None:
    """Adds `clausewatch check`. Filled in by the clause-model issue."""
