"""The service end to end as the service role, given one superuser URL (as the demo and the tests
run it): readings raise an alert, people act on it, the scheduler anchors the ledger at start, and
`clausewatch ledger verify` finds chain, anchors and records in order."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from alerts.anchors import generate_key
from alerts.lifecycle import acknowledge
from clausewatch.cli import main
from clausewatch.service import Service, ServiceOptions
from clausewatch.settings import Settings
from config.files import LoadedConfig
from store.roles import DEFAULT_SERVICE_ROLE
from tests.ingest.test_pipeline_integration import CLAUSES, SITE
from tests.support import rows, wait_for

pytestmark = pytest.mark.integration


def test_the_service_runs_as_the_service_role_and_anchors_its_ledger(
    fresh_database_url: str,
    mqtt_url: str,
    topic_prefix: str,
    tmp_path: Path,
    publish: Callable[[str, bytes], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = tmp_path / "ledger.key"
    generate_key(key)
    folder = tmp_path / "anchors"
    settings = Settings(
        database_url=fresh_database_url,
        mqtt_url=mqtt_url,
        topic_prefix=topic_prefix,
        mqtt_client_id=f"cw-roles-{uuid.uuid4().hex[:8]}",
        lateness_s=0,
        flush_interval_s=0.05,
        ledger_key_file=key,
        ledger_anchor_dir=folder,
    )
    config = LoadedConfig(sites={"t-hq": SITE}, clause_files={Path("test.yaml"): CLAUSES})
    service = Service(settings, config, ServiceOptions(clock="data", serve_api=False))
    service.start()
    try:
        assert service.pool is not None and service.scheduler is not None
        with service.pool.connection() as conn:
            assert conn.execute("SELECT current_user").fetchone() == (DEFAULT_SERVICE_ROLE,)
        assert service.scheduler.get_job("ledger_anchor") is not None
        # The registry sync at start is in the ledger, and anchored at start.
        wait_for(lambda: any(folder.glob("ledger-anchor-*.json")), timeout=30)

        start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=3)
        cooling = {"ts": int(start.timestamp() * 1000), "seq": 1, "metrics": {"hvac_mode": 1}}
        publish("t-hq/ac-a/telemetry", orjson.dumps(cooling))
        for i in range(6):
            ts_ms = int((start + dt.timedelta(seconds=30 * i)).timestamp() * 1000)
            body = {"ts": ts_ms, "seq": i + 1, "metrics": {"temperature": 24.0}}
            publish("t-hq/th-a/telemetry", orjson.dumps(body))
        [(alert_id,)] = wait_for(lambda: rows(service.database_url, "SELECT id FROM alerts"))
        with service.pool.connection() as conn:
            acknowledge(conn, alert_id, "li-wei", "调高了设定温度")
        service.scheduler.modify_job("ledger_anchor", next_run_time=dt.datetime.now(dt.UTC))
        wait_for(lambda: len(list(folder.glob("ledger-anchor-*.json"))) == 2, timeout=30)
    finally:
        service.stop()

    capsys.readouterr()
    code = main(["ledger", "verify", "--database-url", fresh_database_url,
                 "--anchors", str(folder), "--public-key", f"{key}.pub"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "anchors: ok, 2 checked" in out
    assert "records: ok, 1 alerts and 2 timeline rows" in out
