"""`clausewatch run` is the production service: it refuses to start without a database and a
broker, saying which setting is missing, instead of silently starting embedded parts."""

from __future__ import annotations

import pytest

from clausewatch.cli import main


def test_run_refuses_to_start_without_database_and_broker(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CLAUSEWATCH_DATABASE_URL", raising=False)
    monkeypatch.delenv("CLAUSEWATCH_MQTT_URL", raising=False)
    assert main(["run"]) == 2
    error = capsys.readouterr().err
    assert "CLAUSEWATCH_DATABASE_URL and CLAUSEWATCH_MQTT_URL" in error


def test_run_names_the_one_missing_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CLAUSEWATCH_MQTT_URL", raising=False)
    assert main(["run", "--database-url", "postgresql://127.0.0.1:1/none"]) == 2
    error = capsys.readouterr().err
    assert "CLAUSEWATCH_MQTT_URL" in error and "DATABASE_URL" not in error
