"""Secrets stay out of command lines and logs (issue 18, finding 8): the service's child
processes (the --workers processes, the demo's simulator) get the database and broker URLs
through their environment, never their argv (any local user may read /proc/PID/cmdline); every
URL setting can be read from a file (`*_FILE`, `--*-url-file`); a broker that refuses the login
is logged without the password."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from clausewatch.cli import main
from clausewatch.embedded import free_port
from clausewatch.settings import Settings
from rules.site import SiteModel
from tests.support import Mosquitto, run_as_root_line, wait_for

PASSWORD = "pw-" + uuid.uuid4().hex  # nothing else in a log or a command line looks like it
USER = "svc"


class PasswordBroker(Mosquitto):
    """Mosquitto on a free port that admits only USER with PASSWORD."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        passwords = folder / "passwords"
        subprocess.run(
            ["mosquitto_passwd", "-b", "-c", str(passwords), USER, PASSWORD],
            check=True,
            capture_output=True,
        )
        passwords.chmod(0o600)
        conf = folder / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous false\n"
            f"password_file {passwords}\nlog_type error\n" + run_as_root_line()
        )
        super().__init__(conf, [self.port], folder / "mosquitto.log")

    def url(self, password: str = PASSWORD) -> str:
        return f"mqtt://{USER}:{password}@127.0.0.1:{self.port}"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PasswordBroker]:
    folder = tmp_path / "broker"
    folder.mkdir()
    running = PasswordBroker(folder)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def _config_dir(folder: Path) -> Path:
    (folder / "sites").mkdir(parents=True)
    (folder / "clauses").mkdir()
    for site_id in ("north", "south"):
        model = SiteModel.model_validate(
            {
                "site": {"id": site_id, "name": site_id, "timezone": "Asia/Shanghai"},
                "spaces": [{"id": "b1", "type": "building"}],
                "devices": [{"id": "s1", "space": "b1", "metrics": {"co2": {"unit": "ppm"}}}],
            }
        )
        dumped = model.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        (folder / "sites" / f"{site_id}.yaml").write_text(yaml.safe_dump(dumped))
    return folder


def _service_env(folder: Path, topic_prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUSEWATCH_")}
    env.update(
        CLAUSEWATCH_CONFIG_DIR=str(_config_dir(folder)),
        CLAUSEWATCH_TOPIC_PREFIX=topic_prefix,
        CLAUSEWATCH_MQTT_CLIENT_ID=f"secrets-{uuid.uuid4().hex[:8]}",
        CLAUSEWATCH_HTTP_PORT="0",
    )
    return env


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its last ')'
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()


@pytest.mark.integration
def test_workers_get_the_urls_through_their_environment_not_their_command_line(
    broker: PasswordBroker, fresh_database_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    log = tmp_path / "service.log"
    mqtt_url = broker.url()
    with log.open("wb") as out:
        supervisor = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "clausewatch",
                "run",
                "--workers",
                "2",
                "--database-url",
                fresh_database_url,
                "--mqtt-url",
                mqtt_url,
            ],
            env=_service_env(tmp_path / "config", topic_prefix),
            stdout=out,
            stderr=out,
        )
    try:
        wait_for(
            lambda: log.read_text().count("MQTT connected") == 2,
            60,
            lambda: f"two workers logged in:\n{log.read_text()}",
        )
        workers = _children(supervisor.pid)
        assert len(workers) == 2
        for pid in workers:
            cmdline = _cmdline(pid)
            assert "--worker-index" in cmdline
            assert PASSWORD not in cmdline and fresh_database_url not in cmdline, cmdline
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(60)
    assert supervisor.returncode == 0
    assert PASSWORD not in log.read_text()


@pytest.mark.integration
def test_the_demo_simulator_gets_the_broker_url_through_its_environment(
    broker: PasswordBroker,
) -> None:
    from clausewatch.cli.service import _start_simulator

    settings = Settings(mqtt_url=broker.url(), topic_prefix=f"t{uuid.uuid4().hex[:10]}")
    simulator = _start_simulator(settings, broker.url(), speed=None)
    try:
        assert PASSWORD not in " ".join(map(str, simulator.args))
        if simulator.poll() is None:
            assert PASSWORD not in _cmdline(simulator.pid)
    finally:
        simulator.terminate()
        simulator.wait(15)


@pytest.mark.integration
def test_a_refused_login_is_logged_without_the_password(
    broker: PasswordBroker, fresh_database_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    wrong = "wrong-" + PASSWORD
    env = _service_env(tmp_path / "config", topic_prefix)
    env.update(CLAUSEWATCH_DATABASE_URL=fresh_database_url, CLAUSEWATCH_MQTT_URL=broker.url(wrong))
    log = tmp_path / "service.log"
    with log.open("wb") as out:
        service = subprocess.Popen(
            [sys.executable, "-m", "clausewatch", "run"], env=env, stdout=out, stderr=out
        )
    try:
        wait_for(lambda: "not reachable yet" in log.read_text(), 60, lambda: log.read_text())
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(60)
    text = log.read_text()
    assert "not reachable yet" in text and f"{USER}:***@127.0.0.1:{broker.port}" in text
    assert PASSWORD not in text


def test_urls_are_read_from_files_named_by_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "db").write_text("postgresql://cw:db-secret@db.example:5432/cw\n")
    (tmp_path / "mqtt").write_text("mqtt://svc:mqtt-secret@broker.example:1883")
    monkeypatch.delenv("CLAUSEWATCH_DATABASE_URL", raising=False)
    monkeypatch.delenv("CLAUSEWATCH_MQTT_URL", raising=False)
    monkeypatch.setenv("CLAUSEWATCH_DATABASE_URL_FILE", str(tmp_path / "db"))
    monkeypatch.setenv("CLAUSEWATCH_MQTT_URL_FILE", str(tmp_path / "mqtt"))
    settings = Settings()
    assert settings.database_url == "postgresql://cw:db-secret@db.example:5432/cw"
    assert settings.mqtt_url == "mqtt://svc:mqtt-secret@broker.example:1883"
    assert "secret" not in repr(settings) and "secret" not in str(settings)


def test_a_url_and_its_file_together_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "db").write_text("postgresql://127.0.0.1:1/none")
    monkeypatch.setenv("CLAUSEWATCH_DATABASE_URL", "postgresql://127.0.0.1:1/other")
    monkeypatch.setenv("CLAUSEWATCH_DATABASE_URL_FILE", str(tmp_path / "db"))
    assert main(["db", "info"]) == 2
    assert capsys.readouterr().err == (
        "error: invalid settings: set CLAUSEWATCH_DATABASE_URL or CLAUSEWATCH_DATABASE_URL_FILE,"
        " not both\n"
    )


def test_a_missing_secret_file_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CLAUSEWATCH_DATABASE_URL", raising=False)
    monkeypatch.setenv("CLAUSEWATCH_DATABASE_URL_FILE", str(tmp_path / "absent"))
    assert main(["db", "info"]) == 2
    error = capsys.readouterr().err
    problem = f"cannot read {tmp_path / 'absent'}: No such file or directory"
    assert error == f"error: invalid settings: {problem}\n"
    assert main(["run"]) == 2  # the service's settings fail the same way
    assert capsys.readouterr().err == f"error: invalid settings: {problem}\n"


@pytest.mark.integration
def test_flags_take_urls_from_files(
    fresh_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "database-url"
    secret.write_text(fresh_database_url + "\n")
    assert main(["db", "upgrade", "--database-url-file", str(secret)]) == 0
    assert main(["token", "list", "--database-url-file", str(secret)]) == 0
