"""`clausewatch demo` end to end, as a user runs it: it comes up, the simulated building raises a
real alert visible through the API within a minute, and Ctrl-C stops everything cleanly.

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

import httpx
import pytest

from clausewatch.embedded import free_port

pytestmark = pytest.mark.integration

ALERT_WITHIN_S = 60.0


def test_demo_raises_an_alert_within_a_minute_and_stops_cleanly_on_ctrl_c(
    fresh_database_url: str, mqtt_url: str, topic_prefix: str
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "CLAUSEWATCH_DATABASE_URL": fresh_database_url,
        "CLAUSEWATCH_MQTT_URL": mqtt_url,
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
