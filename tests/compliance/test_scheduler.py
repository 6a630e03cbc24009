"""The service's scheduler carries the quarter-end report job, and running it through the
service's pool makes the missing reports of the last complete quarter."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from clausewatch.service import Service
from clausewatch.settings import Settings
from config.files import load_config_dir
from store.pool import make_pool
from tests.compliance.conftest import CONFIG

pytestmark = pytest.mark.integration


def test_the_service_schedules_and_runs_the_report_job(
    conn: psycopg.Connection[Any], register_db_url: str
) -> None:
    settings = Settings(database_url=register_db_url, mqtt_url="mqtt://127.0.0.1:1")
    service = Service(settings, load_config_dir(CONFIG))
    scheduler = service._make_scheduler()
    assert scheduler.get_job("evaluation_reports") is not None
    with make_pool(register_db_url) as pool:
        service.pool = pool
        service._evaluation_reports()
        service.pool = None
    made = conn.execute(
        "SELECT site, generated_by FROM evaluation_reports ORDER BY site"
    ).fetchall()
    assert made == [
        ("demo-hq", "scheduler"),
        ("private-site", "scheduler"),
        ("pub-site", "scheduler"),
    ]
