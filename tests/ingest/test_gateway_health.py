"""Issue 22: an edge gateway's health report on its status topic, through the real broker and
pipeline into PostgreSQL: the status is stored as from a bare `online`, the report of its
sources with it (GET /device-status), and a bare `offline` (its will) after it keeps the report."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from api.models import DeviceStatusPublic
from clausewatch.service import Service, ServiceOptions
from clausewatch.settings import Settings
from config.files import LoadedConfig
from store.registry import device_status_rows
from tests.ingest.test_pipeline_integration import CLAUSES, SITE
from tests.support import wait_for

pytestmark = pytest.mark.integration

HEALTH = {
    "status": "online",
    "sources": [
        {"device": "th-a", "kind": "opcua", "last_good": "2026-07-01T09:14:00.200+08:00",
         "errors": 12, "last_error": "opcua th-a (opc.tcp://10.0.3.7:4840/): TimeoutError()",
         "last_error_at": "2026-07-01T09:13:58.000+08:00"},
    ],
}  # fmt: skip


def test_a_gateways_health_report_is_stored_with_its_status(
    fresh_database_url: str,
    mqtt_url: str,
    topic_prefix: str,
    publish: Callable[[str, bytes], None],
) -> None:
    settings = Settings(
        database_url=fresh_database_url,
        mqtt_url=mqtt_url,
        topic_prefix=topic_prefix,
        mqtt_client_id=f"cw-health-{uuid.uuid4().hex[:8]}",
        flush_interval_s=0.05,
    )
    config = LoadedConfig(sites={"t-hq": SITE}, clause_files={Path("test.yaml"): CLAUSES})
    service = Service(settings, config, ServiceOptions(clock="data", serve_api=False))
    service.start()
    try:
        assert service.pool is not None
        pool = service.pool

        def statuses() -> list[DeviceStatusPublic]:
            with pool.connection() as conn:
                return [DeviceStatusPublic(**row) for row in device_status_rows(conn, None)]

        publish("t-hq/gw-1/status", orjson.dumps(HEALTH))
        [stored] = wait_for(statuses)
        assert (stored.device, stored.status, stored.sources) == (
            "gw-1",
            "online",
            HEALTH["sources"],
        )

        publish("t-hq/gw-1/status", b"offline")  # the will: the last report stays
        [stored] = wait_for(lambda: [s for s in statuses() if s.status == "offline"])
        assert stored.sources == HEALTH["sources"]
        with pool.connection() as conn:
            assert conn.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)
    finally:
        service.stop()
