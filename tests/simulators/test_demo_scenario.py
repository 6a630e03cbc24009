"""The bundled `demo` scenario as `clausewatch demo` runs it (its own start and speed, through the
service with the bundled clauses): the over-cooled meeting room becomes a temp.cooling.min alert
within seconds, whatever today's date."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest

from clausewatch.service import Service, ServiceOptions
from clausewatch.settings import Settings
from config import BUNDLED_DIR
from config.files import load_config_dir
from simulators.runner import SimulatorThread
from simulators.scenario import load_scenario

pytestmark = pytest.mark.integration


def test_the_demo_raises_an_over_cooling_alert_within_seconds(
    fresh_database_url: str, mqtt_url: str, topic_prefix: str
) -> None:
    config = load_config_dir(BUNDLED_DIR)
    settings = Settings(
        database_url=fresh_database_url,
        mqtt_url=mqtt_url,
        topic_prefix=topic_prefix,
        mqtt_client_id=f"cw-test-{uuid.uuid4().hex[:8]}",
        max_age_s=3 * 366 * 86400.0,  # as the demo: the scenario starts in the cooling season
    )
    service = Service(settings, config, ServiceOptions(clock="data", serve_api=False))
    service.start()
    demo = load_scenario(BUNDLED_DIR / "scenarios" / "demo.yaml")
    simulator = SimulatorThread(demo, config.sites["demo-hq"], mqtt_url, topic_prefix)
    started = time.monotonic()
    simulator.start()
    try:
        deadline = started + 60
        alert: list[tuple[str, str]] = []
        while not alert and time.monotonic() < deadline and simulator.is_alive():
            with psycopg.connect(fresh_database_url) as conn:
                alert = conn.execute(
                    "SELECT space, device FROM alerts WHERE clause_id = 'temp.cooling.min'"
                ).fetchall()
            time.sleep(0.5)
        elapsed = time.monotonic() - started
    finally:
        simulator.stop()
        service.stop()
    assert simulator.error is None
    assert alert == [("b1-2f-meeting-a", "th-meeting-a")]
    assert elapsed < 45, f"the over-cooling alert took {elapsed:.0f} s"
