"""`clausewatch run --workers N`: sites dealt to workers whole, deterministically; two worker
processes each store their own sites' readings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import yaml

from ingest.workers import partition_sites
from rules.site import SiteModel
from tests.support import mqtt_publisher, wait_for


def site(site_id: str, devices: int) -> SiteModel:
    return SiteModel.model_validate(
        {
            "site": {"id": site_id, "name": site_id, "timezone": "Asia/Shanghai"},
            "spaces": [{"id": "b1", "type": "building"}],
            "devices": [
                {"id": f"s{i}", "space": "b1", "metrics": {"co2": {"unit": "ppm"}}}
                for i in range(devices)
            ],
        }
    )


def test_sites_are_dealt_whole_by_size_and_the_same_every_time() -> None:
    sites = {"a": site("a", 50), "b": site("b", 10), "c": site("c", 30), "d": site("d", 30)}
    parts = partition_sites(sites, 2)
    assert parts == [("a", "b"), ("c", "d")]  # 60 devices each, largest first
    assert partition_sites(dict(reversed(sites.items())), 2) == parts
    assert sorted(s for part in partition_sites(sites, 3) for s in part) == ["a", "b", "c", "d"]
    assert partition_sites(sites, 1) == [("a", "b", "c", "d")]


def test_more_workers_than_sites_is_refused() -> None:
    with pytest.raises(ValueError, match="owns whole sites"):
        partition_sites({"a": site("a", 1)}, 2)


@pytest.mark.integration
def test_two_workers_each_store_their_own_sites(
    fresh_database_url: str, mqtt_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    (tmp_path / "sites").mkdir()
    (tmp_path / "clauses").mkdir()
    for site_id in ("north", "south"):
        model = site(site_id, 2).model_dump(mode="json", by_alias=True, exclude_defaults=True)
        (tmp_path / "sites" / f"{site_id}.yaml").write_text(yaml.safe_dump(model))
    env = dict(os.environ)
    env.update(
        CLAUSEWATCH_DATABASE_URL=fresh_database_url,
        CLAUSEWATCH_MQTT_URL=mqtt_url,
        CLAUSEWATCH_CONFIG_DIR=str(tmp_path),
        CLAUSEWATCH_TOPIC_PREFIX=topic_prefix,
        CLAUSEWATCH_MQTT_CLIENT_ID=f"workers-{uuid.uuid4().hex[:8]}",
        CLAUSEWATCH_HTTP_PORT="0",
        CLAUSEWATCH_FLUSH_INTERVAL_S="0.05",
    )
    log = tmp_path / "service.log"
    with log.open("wb") as out:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "clausewatch", "run", "--workers", "2"],
            env=env,
            stdout=out,
            stderr=out,
        )
    try:
        wait_for(lambda: log.read_text().count("running: sites") == 2, 60, "two workers")
        text = log.read_text()
        assert "worker 0 running: sites north" in text or "worker 0 running: sites south" in text
        now_ms = int(time.time() * 1000)
        with mqtt_publisher(mqtt_url) as send:
            for site_id in ("north", "south"):
                for i in range(2):
                    body = orjson.dumps({"ts": now_ms, "seq": 1, "metrics": {"co2": 600 + i}})
                    send(f"{topic_prefix}/{site_id}/s{i}/telemetry", body)

        def stored() -> list[tuple[Any, ...]]:
            with psycopg.connect(fresh_database_url) as conn:
                return conn.execute(
                    "SELECT site, count(*) FROM readings GROUP BY 1 ORDER BY 1"
                ).fetchall()

        assert wait_for(lambda: stored() == [("north", 2), ("south", 2)], 30, "both sites")
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(60)
    assert supervisor.returncode == 0
