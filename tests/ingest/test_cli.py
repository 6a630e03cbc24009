"""`clausewatch db upgrade` and `clausewatch db info` against a real, empty database."""

from __future__ import annotations

import pytest

from clausewatch.cli import main

pytestmark = pytest.mark.integration


def test_upgrade_then_info(empty_database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "info", "--database-url", empty_database_url]) == 0
    assert "schema version: none" in capsys.readouterr().out

    assert main(["db", "upgrade", "--database-url", empty_database_url]) == 0
    assert "applied 0001 core" in capsys.readouterr().out
    assert main(["db", "upgrade", "--database-url", empty_database_url]) == 0
    assert "schema is up to date" in capsys.readouterr().out

    assert main(["db", "info", "--database-url", empty_database_url]) == 0
    out = capsys.readouterr().out
    assert "postgresql:" in out
    assert "storage mode:   native" in out or "storage mode:   timescaledb" in out
    assert "readings               0" in out


def test_without_a_database_url_it_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CLAUSEWATCH_DATABASE_URL", raising=False)
    assert main(["db", "info"]) == 2
    assert "CLAUSEWATCH_DATABASE_URL" in capsys.readouterr().err


def test_an_unreachable_database_is_an_error_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = "postgresql://postgres@127.0.0.1:1/none?connect_timeout=1"
    assert main(["db", "upgrade", "--database-url", url]) == 1
    assert "migration failed" in capsys.readouterr().err
