"""SIGKILL of the service while devices post over HTTP (issue 22): every post answered 200
before the kill is in PostgreSQL, whatever was in flight; what was not answered may or may
not be (the device posts it again, and the copy is absorbed)."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from config.broker import mosquitto_password_hash
from tests.faults.conftest import SENSORS, SITE_ID, query
from tests.support import wait_for

pytestmark = pytest.mark.integration

POSTERS = 4  # devices posting at once, each a bulk of BULK readings per request
BULK = 5


def test_sigkill_while_posting_loses_nothing_answered(
    fresh_database_url: str,
    own_broker: Any,
    config_dir: Path,
    tmp_path: Path,
    service_factory: Callable[..., Any],
) -> None:
    assert POSTERS <= SENSORS
    passwords = tmp_path / "device-passwords"
    passwords.write_text(
        "".join(f"{SITE_ID}/s{i}:{mosquitto_password_hash(f'pw-{i}')}\n" for i in range(POSTERS))
    )
    service = service_factory(fresh_database_url, own_broker.url, config_dir)
    service.env["CLAUSEWATCH_DEVICE_PASSWORD_FILE"] = str(passwords)
    base = f"http://127.0.0.1:{service.env['CLAUSEWATCH_HTTP_PORT']}"
    service.start()

    answered: list[tuple[str, int]] = []  # (device, seq) of every reading answered 200
    lock = threading.Lock()
    stop = threading.Event()

    def post(index: int) -> None:
        device = f"s{index}"
        token = base64.b64encode(f"{SITE_ID}/{device}:pw-{index}".encode()).decode()
        headers = {"Authorization": f"Basic {token}"}
        url = f"{base}/api/v1/ingest/{SITE_ID}/{device}/telemetry"
        seq = 0
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                now_ms = int(time.time() * 1000)
                body = [
                    {"ts": now_ms + i, "seq": seq + i, "metrics": {"co2": 600.0}}
                    for i in range(BULK)
                ]
                try:
                    answer = client.post(url, json=body, headers=headers)
                except httpx.HTTPError:
                    return  # the service is gone
                if answer.status_code == 200:
                    with lock:
                        answered.extend((device, seq + i) for i in range(BULK))
                seq += BULK

    threads = [threading.Thread(target=post, args=(i,)) for i in range(POSTERS)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(answered) >= 400, 60, "400 readings answered")
        service.kill()
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)

    stored = set(query(fresh_database_url, "SELECT device, seq FROM readings"))
    missing = set(answered) - stored
    assert not missing, f"{len(missing)} of {len(answered)} answered readings are not stored"
    assert len(answered) >= 400
