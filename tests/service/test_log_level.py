"""CLAUSEWATCH_LOG_LEVEL (issue 24): the service logs at INFO unless told otherwise; at DEBUG it
logs each checkpoint's capture and save window (bench/latency.py matches probes to them); a
level it does not know stops it with a message naming the setting."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from clausewatch.cli import main
from tests.support import wait_for

WINDOW = r"from \d+\.\d{6} for \d+\.\d ms"


def test_an_unknown_log_level_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CLAUSEWATCH_LOG_LEVEL", "LOUD")
    assert main(["run"]) == 2
    assert capsys.readouterr().err == (
        "error: invalid settings: CLAUSEWATCH_LOG_LEVEL: "
        "Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'\n"
    )


def _config_dir(folder: Path) -> Path:
    (folder / "sites").mkdir(parents=True)
    (folder / "clauses").mkdir()
    site = {
        "site": {"id": "north", "name": "North", "timezone": "Asia/Shanghai"},
        "spaces": [{"id": "b1", "type": "building"}],
        "devices": [{"id": "s1", "space": "b1", "metrics": {"co2": {"unit": "ppm"}}}],
    }
    (folder / "sites" / "north.yaml").write_text(yaml.safe_dump(site))
    return folder


@pytest.mark.integration
@pytest.mark.parametrize("level", ["DEBUG", None])
def test_debug_logs_the_checkpoint_windows(
    level: str | None, fresh_database_url: str, mqtt_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUSEWATCH_")}
    env.update(
        CLAUSEWATCH_DATABASE_URL=fresh_database_url,
        CLAUSEWATCH_MQTT_URL=mqtt_url,
        CLAUSEWATCH_CONFIG_DIR=str(_config_dir(tmp_path / "config")),
        CLAUSEWATCH_TOPIC_PREFIX=topic_prefix,
        CLAUSEWATCH_MQTT_CLIENT_ID=f"loglevel-{uuid.uuid4().hex[:8]}",
        CLAUSEWATCH_HTTP_PORT="0",
    )
    if level is not None:
        env["CLAUSEWATCH_LOG_LEVEL"] = level
    log = tmp_path / "service.log"
    with log.open("wb") as out:
        service = subprocess.Popen(
            [sys.executable, "-m", "clausewatch", "run"], env=env, stdout=out, stderr=out
        )
    try:
        # A site without a checkpoint gets one before the service says it runs.
        wait_for(lambda: "clausewatch running" in log.read_text(), 60, log.read_text)
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(60)
    text = log.read_text()
    assert service.returncode == 0, text
    captured = re.findall(rf"DEBUG ingest.pipeline: checkpoint captured: 1 site\(s\), \d+ "
                          rf"part\(s\), {WINDOW} \(\d+\.\d ms busy\)", text)  # fmt: skip
    saved = re.findall(
        rf"DEBUG ingest.checkpoint_writer: checkpoint saved: 1 site\(s\), \d+ part\(s\), {WINDOW}",
        text,
    )
    if level == "DEBUG":
        assert captured and saved, text
    else:  # INFO by default
        assert not captured and not saved and " DEBUG " not in text, text
        assert " INFO clausewatch: clausewatch running" in text
