"""`clausewatch run` as a process.

CLAUSEWATCH_LOG_LEVEL (issue 24): the service logs at INFO unless told otherwise; at DEBUG it
logs each checkpoint's capture and save window (bench/latency.py matches probes to them); a
level it does not know stops it with a message naming the setting.

SIGTERM and SIGINT stop it cleanly (exit 0, the service stopped) whenever they come, also while
it starts (once it has started) or just after it says it runs: the handlers were once installed
only after that line, and a SIGTERM in between killed the process (-15) without stopping the
service."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from clausewatch.cli import main
from clausewatch.service import Service, ServiceOptions
from clausewatch.settings import Settings
from config.files import LoadedConfig
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


def _service_env(
    database_url: str, mqtt_url: str, topic_prefix: str, folder: Path, **extra: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUSEWATCH_")}
    env.update(
        CLAUSEWATCH_DATABASE_URL=database_url,
        CLAUSEWATCH_MQTT_URL=mqtt_url,
        CLAUSEWATCH_CONFIG_DIR=str(_config_dir(folder / "config")),
        CLAUSEWATCH_TOPIC_PREFIX=topic_prefix,
        CLAUSEWATCH_MQTT_CLIENT_ID=f"process-{uuid.uuid4().hex[:8]}",
        CLAUSEWATCH_HTTP_PORT="0",
        **extra,
    )
    return env


def _run_until(env: dict[str, str], log: Path, line: str, signum: int) -> tuple[int, str]:
    """Starts `clausewatch run`, sends `signum` as soon as its log shows `line` and returns the
    exit code and the whole log."""
    with log.open("wb") as out:
        service = subprocess.Popen(
            [sys.executable, "-m", "clausewatch", "run"], env=env, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 60
        while line not in log.read_text() and service.poll() is None:
            assert time.monotonic() < deadline, f"no {line!r} within 60 s: {log.read_text()}"
            time.sleep(0.005)  # a short poll: the test means to signal at this moment
    finally:
        service.send_signal(signum)
        service.wait(60)
    return service.returncode, log.read_text()


@pytest.mark.integration
@pytest.mark.parametrize("level", ["DEBUG", None])
def test_debug_logs_the_checkpoint_windows(
    level: str | None, fresh_database_url: str, mqtt_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    extra = {} if level is None else {"CLAUSEWATCH_LOG_LEVEL": level}
    env = _service_env(fresh_database_url, mqtt_url, topic_prefix, tmp_path, **extra)
    # A site without a checkpoint gets one before the service says it runs.
    code, text = _run_until(env, tmp_path / "service.log", "clausewatch running", signal.SIGTERM)
    assert code == 0, text
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


@pytest.mark.integration
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("moment", ["MQTT connected", "clausewatch running"])
def test_a_signal_while_starting_or_just_after_stops_the_service_cleanly(
    signum: int,
    moment: str,
    fresh_database_url: str,
    mqtt_url: str,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    env = _service_env(fresh_database_url, mqtt_url, topic_prefix, tmp_path)
    code, text = _run_until(env, tmp_path / "service.log", moment, signum)
    assert code == 0, text
    assert "Traceback" not in text, text
    assert text.rstrip().endswith("INFO clausewatch: clausewatch stopped"), text


def test_a_service_whose_start_was_abandoned_before_its_scheduler_ran_still_stops(
    empty_database_url: str, mqtt_url: str, topic_prefix: str
) -> None:
    """A second signal abandons a start anywhere; stop() then stops what exists (a scheduler
    made but not started once made it raise)."""
    settings = Settings(
        database_url=empty_database_url,
        mqtt_url=mqtt_url,
        topic_prefix=topic_prefix,
        mqtt_client_id=f"abandoned-{uuid.uuid4().hex[:8]}",
    )
    service = Service(settings, LoadedConfig(sites={}, clause_files={}), ServiceOptions())
    service.scheduler = service._make_scheduler()
    service.stop()
    assert service.scheduler is None
    service.stop()  # and again: stop is idempotent


@pytest.mark.integration
def test_a_second_signal_abandons_a_start_that_hangs(
    mqtt_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    """A database that takes the connection and never answers: the first SIGTERM waits for the
    start, the second abandons it, and the process exits cleanly without a traceback."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.settimeout(30)
        port = silent.getsockname()[1]
        env = _service_env(f"postgresql://cw@127.0.0.1:{port}/cw", mqtt_url, topic_prefix, tmp_path)
        log = tmp_path / "service.log"
        with log.open("wb") as out:
            service = subprocess.Popen(
                [sys.executable, "-m", "clausewatch", "run"], env=env, stdout=out, stderr=out
            )
        try:
            taken, _ = silent.accept()  # and never answered
            service.send_signal(signal.SIGTERM)
            wait_for(lambda: "signal again" in log.read_text(), 30, log.read_text)
            service.send_signal(signal.SIGTERM)
            service.wait(30)
        finally:
            service.kill()
            taken.close()
    text = log.read_text()
    assert service.returncode == 0, text
    assert "INFO clausewatch: start abandoned" in text and "Traceback" not in text, text
