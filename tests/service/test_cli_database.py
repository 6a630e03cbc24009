"""Every command that reads the database takes its URL the same way (clausewatch/cli/common.py):
`--database-url` (or `--database-url-file`), else CLAUSEWATCH_DATABASE_URL (or its _FILE), else
it stops with one message and exit code 2."""

from __future__ import annotations

import pytest

from clausewatch.cli import main
from clausewatch.cli.common import NO_DATABASE


@pytest.mark.parametrize(
    "command",
    [
        ["db", "info"],
        ["db", "upgrade"],
        ["token", "list"],
        ["token", "revoke", "1"],
        ["token", "create", "--role", "viewer"],
        ["energy", "factor", "list"],
        ["ledger", "verify"],
        ["ledger", "anchor"],
    ],
)
def test_without_a_database_every_command_says_so_the_same_way(
    command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CLAUSEWATCH_DATABASE_URL", raising=False)
    monkeypatch.delenv("CLAUSEWATCH_MIGRATION_DATABASE_URL", raising=False)
    for name in ("DATABASE_URL", "MIGRATION_DATABASE_URL"):
        monkeypatch.delenv(f"CLAUSEWATCH_{name}_FILE", raising=False)
    assert main(command) == 2
    assert capsys.readouterr().err == NO_DATABASE + "\n"
