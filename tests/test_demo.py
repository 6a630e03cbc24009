"""`clausewatch demo` end to end, as a user runs it: it comes up, the simulated building raises a
real alert visible through the API within a minute, and Ctrl-C stops everything cleanly and
revokes the admin token it printed and disables the user whose sign-in it printed.

Runs against the test PostgreSQL and broker (the same env vars a user would set), with a topic
prefix, client id and port of its own so it never meets another run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest

from api.tokens import token_digest
from clausewatch.embedded import free_port

pytestmark = pytest.mark.integration

ALERT_WITHIN_S = 60.0


def test_demo_raises_an_alert_within_a_minute_and_stops_cleanly_on_ctrl_c(
    fresh_database_url: str, mqtt_url: str, topic_prefix: str
) -> None:
    settings = {"CLAUSEWATCH_DATABASE_URL": fresh_database_url, "CLAUSEWATCH_MQTT_URL": mqtt_url}
    run_demo(settings, topic_prefix)


@pytest.mark.slow
def test_with_its_embedded_broker_the_demo_logs_in_and_shows_no_password(
    fresh_database_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    """No CLAUSEWATCH_MQTT_URL: the demo starts amqtt, open only to the service's and the
    simulator's logins (tests/service/test_embedded_broker.py), and still raises its alert."""
    lines = run_demo(
        {"CLAUSEWATCH_DATABASE_URL": fresh_database_url, "CLAUSEWATCH_DATA_DIR": str(tmp_path)},
        topic_prefix,
    )
    broker_line = next(line for line in lines if "MQTT broker (embedded)" in line)
    assert "mqtt://clausewatch:***@127.0.0.1:" in broker_line


def run_demo(settings: dict[str, str], topic_prefix: str) -> list[str]:
    """Runs `clausewatch demo` with these settings until its first alert (asserting one within
    ALERT_WITHIN_S), checks that no broker URL is on the simulator's command line, stops it
    with Ctrl-C, checks that the admin token it printed was revoked, and returns its output
    lines."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "CLAUSEWATCH_MQTT_URL"} | {
        **settings,
        "CLAUSEWATCH_TOPIC_PREFIX": topic_prefix,
        "CLAUSEWATCH_MQTT_CLIENT_ID": f"cw-demo-test-{uuid.uuid4().hex[:8]}",
        "CLAUSEWATCH_HTTP_PORT": str(port),
    }
    started = time.monotonic()
    demo = subprocess.Popen(
        [sys.executable, "-m", "clausewatch", "demo"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(line.decode(errors="replace") for line in demo.stdout),  # type: ignore[union-attr]
        daemon=True,
    )
    reader.start()
    try:
        token = None
        alerts: list[dict[str, object]] = []
        while time.monotonic() - started < ALERT_WITHIN_S:
            assert demo.poll() is None, "demo exited early:\n" + "".join(lines)
            if token is None:
                token = next(
                    (ln.split()[-1] for ln in list(lines) if "admin token (demo)" in ln), None
                )
            else:
                response = httpx.get(
                    f"http://127.0.0.1:{port}/api/v1/alerts",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=5,
                )
                assert response.status_code == 200, response.text
                alerts = response.json()["items"]
                if alerts:
                    break
            time.sleep(0.5)
        assert alerts, "no alert within a minute:\n" + "".join(lines)
        alert = alerts[0]
        assert alert["clause"]["standard"] and alert["clause"]["number"]
        assert alert["clause"]["version"] >= 1
        assert alert["responsible"]["name"]
        assert alert["state"] == "firing"
        # The printed sign-in works: the person's way in, no token needed (issue 19).
        login = next(ln for ln in list(lines) if "sign-in (demo)" in ln).split()
        user, password = login[login.index("user") + 1], login[login.index("password") + 1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as browser:
            signed_in = browser.post("/api/v1/session", json={"name": user, "password": password})
            assert signed_in.status_code == 200, signed_in.text
            assert browser.get("/api/v1/alerts").json()["items"]
        # The banner says the building lives on simulated time, the day its alerts carry.
        clock = next(ln for ln in list(lines) if ln.strip().startswith("simulated time"))
        day = clock.split(" lives on ", 1)[1].split()[0]
        assert str(alert["started_at"]).startswith(day[:7]), (clock, alert["started_at"])
        simulator = next(line for line in list(lines) if line.strip().startswith("simulator"))
        pid = int(simulator.rsplit("(pid ", 1)[1].rstrip(")\n"))
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert b"mqtt://" not in command_line, "a broker URL (and its password) on argv"
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            code = demo.wait(30)
        except subprocess.TimeoutExpired:
            demo.kill()
            raise
        reader.join(5)
    assert code == 0, "".join(lines)
    assert "clausewatch demo stopped." in "".join(lines)
    # The admin token it printed dies with it (issue 18, finding 11).
    assert token is not None
    with psycopg.connect(settings["CLAUSEWATCH_DATABASE_URL"]) as conn:
        row = conn.execute(
            "SELECT revoked_at IS NOT NULL FROM api_tokens WHERE token_hash = %s",
            (token_digest(token),),
        ).fetchone()
    assert row == (True,), "the demo's admin token is still live after Ctrl-C"
    with psycopg.connect(settings["CLAUSEWATCH_DATABASE_URL"]) as conn:
        row = conn.execute(
            "SELECT disabled_at IS NOT NULL FROM users WHERE name = 'demo'"
        ).fetchone()
    assert row == (True,), "the demo's user can still sign in after Ctrl-C"
    return lines
