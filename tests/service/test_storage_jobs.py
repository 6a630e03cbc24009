"""The service's storage jobs on real parts: partitions ahead, retention (also once at start) and
the rollup refresh run from its scheduler, in the process that owns the periodic jobs only."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable

import orjson
import pytest

from clausewatch.service import Service, ServiceOptions
from clausewatch.settings import Settings
from config.files import LoadedConfig
from rules.site import SiteModel
from store.batches import ReadingRow, write_readings
from store.migrate import migrate
from store.mode import FORCE_NATIVE_ENV, storage_mode
from store.partitions import ensure_partitions, partition_name
from store.pool import connect
from tests.support import rows, wait_for

pytestmark = pytest.mark.integration

SITE = SiteModel.model_validate(
    {
        "site": {"id": "j-hq", "name": "Jobs test office", "timezone": "Asia/Shanghai"},
        "spaces": [{"id": "room-1", "type": "office"}],
        "devices": [{"id": "th-1", "space": "room-1", "metrics": {"temperature": {"unit": "°C"}}}],
    }
)
CONFIG = LoadedConfig(sites={"j-hq": SITE}, clause_files={})
STORAGE_JOBS = {"partitions", "rollups", "retention", "timescale_jobs"}


@pytest.fixture
def settings(empty_database_url: str, mqtt_url: str, topic_prefix: str) -> Settings:
    return Settings(
        database_url=empty_database_url,
        mqtt_url=mqtt_url,
        topic_prefix=topic_prefix,
        mqtt_client_id=f"cw-jobs-{uuid.uuid4().hex[:8]}",
        flush_interval_s=0.05,
        retention_days=30,
    )


def test_storage_jobs_run_only_where_the_periodic_jobs_run(settings: Settings) -> None:
    def job_ids(options: ServiceOptions) -> set[str]:
        scheduler = Service(settings, CONFIG, options)._make_scheduler()
        return {job.id for job in scheduler.get_jobs()}

    assert job_ids(ServiceOptions(clock="data")) >= STORAGE_JOBS
    assert not STORAGE_JOBS & job_ids(ServiceOptions(clock="data", periodic_jobs=False))


def test_a_running_service_applies_retention_at_start_and_refreshes_rollups(
    settings: Settings, publish: Callable[[str, bytes], None]
) -> None:
    url = settings.database_url
    assert url is not None
    migrate(url)
    old_day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=60)
    with connect(url) as conn:
        native = storage_mode(conn) == "native"
        if native:  # a partition past the 30-day retention, for the job at start to drop
            ensure_partitions(conn, 0, today=old_day)
    # A closed hour (the refresh leaves the open one to queries) within the ingest's max age.
    hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    hour -= dt.timedelta(hours=2)
    values = [21.0, 22.0, 23.0, 26.0]

    service = Service(settings, CONFIG, ServiceOptions(clock="data", serve_api=False))
    service.start()
    try:
        if native:
            old = partition_name("readings", old_day)
            wait_for(lambda: rows(url, f"SELECT to_regclass('{old}') IS NULL")[0][0])
        for i, value in enumerate(values):
            ts_ms = int((hour + dt.timedelta(minutes=10 * i)).timestamp() * 1000)
            body = {"ts": ts_ms, "seq": i + 1, "metrics": {"temperature": value}}
            publish("j-hq/th-1/telemetry", orjson.dumps(body))
        wait_for(lambda: rows(url, "SELECT count(*) FROM readings")[0][0] == len(values))
        assert service.scheduler is not None
        # The every-minute job, due now rather than within the minute.
        service.scheduler.modify_job("rollups", next_run_time=dt.datetime.now(dt.UTC))
        hourly = wait_for(
            lambda: rows(
                url,
                "SELECT bucket, value_count, value_min, value_max, value_sum / value_count"
                " FROM readings_hourly WHERE site = 'j-hq' AND device = 'th-1'",
            )
        )
        assert hourly == [(hour, 4, 21.0, 26.0, 23.0)]
    finally:
        service.stop()


@pytest.mark.parametrize(
    "mode", ["native", pytest.param("timescaledb", marks=pytest.mark.timescale)]
)
def test_a_changed_retention_setting_takes_effect_at_the_next_start(
    mode: str,
    settings: Settings,
    timescale_server_status: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if mode == "native":
        monkeypatch.setenv(FORCE_NATIVE_ENV, "1")
    else:
        monkeypatch.delenv(FORCE_NATIVE_ENV, raising=False)
        if timescale_server_status is not None:
            pytest.skip(timescale_server_status)
    url = settings.database_url
    assert url is not None
    migrate(url)
    today = dt.datetime.now(dt.UTC).date()
    days_ago = {n: today - dt.timedelta(days=n) for n in (20, 60)}
    with connect(url) as conn:
        assert storage_mode(conn) == mode
        for day in days_ago.values():
            ensure_partitions(conn, 0, today=day)  # nothing under TimescaleDB

    def gone(n: int) -> bool:
        name = partition_name("readings", days_ago[n])
        return bool(rows(url, f"SELECT to_regclass('{name}') IS NULL")[0][0])

    def policies() -> list[tuple[str, str]]:
        return [
            (str(table), str(drop_after))
            for table, drop_after in rows(
                url,
                "SELECT hypertable_name, config->>'drop_after'"
                " FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'"
                " ORDER BY hypertable_name",
            )
        ]

    def start_with(retention_days: int) -> Service:
        changed = settings.model_copy(update={"retention_days": retention_days})
        service = Service(changed, CONFIG, ServiceOptions(clock="data", serve_api=False))
        service.start()
        return service

    service = start_with(30)
    try:
        if mode == "native":
            wait_for(lambda: gone(60))
            assert not gone(20)  # one transaction dropped all that was past 30 days
        else:
            thirty = [("events", "30 days"), ("readings", "30 days")]
            wait_for(lambda: policies() == thirty, what=lambda: f"policies: {policies()}")
    finally:
        service.stop()
    service = start_with(10)  # the setting changed between two starts
    try:
        if mode == "native":
            wait_for(lambda: gone(20))
        else:
            ten = [("events", "10 days"), ("readings", "10 days")]
            wait_for(lambda: policies() == ten, what=lambda: f"policies: {policies()}")
    finally:
        service.stop()


@pytest.mark.timescale
def test_the_service_runs_the_timescaledb_jobs_compression_and_refresh(
    timescale_server: str, settings: Settings
) -> None:
    # TimescaleDB 2.28.3 on PostgreSQL 15.20: every background job fails ("cannot drop portal
    # \"\" while it is being set up") and is rolled back, so nothing was compressed or
    # materialised unless the service ran the jobs itself (docs/storage.md, Modes).
    url = settings.database_url
    assert url is not None
    migrate(url)
    now = dt.datetime.now(dt.UTC)
    old = now - dt.timedelta(days=10)  # past the 8-day compression horizon
    hour = now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=2)  # closed
    times = [old] + [hour + dt.timedelta(minutes=10 * i) for i in range(3)]
    with connect(url) as conn:
        write_readings(
            conn,
            [
                ReadingRow("j-hq", "th-1", "temperature", t.timestamp(), 20.0 + i, i, 0.0)
                for i, t in enumerate(times)
            ],
        )
        conn.commit()
    ((schema, table),) = rows(
        url,
        "SELECT materialization_hypertable_schema, materialization_hypertable_name"
        " FROM timescaledb_information.continuous_aggregates WHERE view_name = 'readings_hourly'",
    )

    def compressed() -> list[tuple[object, ...]]:
        return rows(
            url,
            "SELECT range_start, is_compressed FROM timescaledb_information.chunks"
            " WHERE hypertable_name = 'readings' ORDER BY range_start",
        )

    def materialised() -> list[tuple[object, ...]]:
        # The materialised rows themselves: the view adds the newest hours from raw rows.
        return rows(
            url,
            f'SELECT bucket, value_count FROM "{schema}"."{table}"'
            f" WHERE device = 'th-1' AND bucket >= '{hour.isoformat()}' ORDER BY bucket",
        )

    def job_errors() -> str:
        return str(
            rows(
                url,
                "SELECT job_id, proc_name, err_message FROM timescaledb_information.job_errors"
                " ORDER BY start_time DESC LIMIT 5",
            )
        )

    service = Service(settings, CONFIG, ServiceOptions(clock="data", serve_api=False))
    service.start()
    try:  # the job runs once at start
        wait_for(
            lambda: compressed()[0][1],
            what=lambda: f"chunks {compressed()}; TimescaleDB's job errors {job_errors()}",
        )
        assert [c for _, c in compressed()] == [True, False]  # the recent day stays open
        wait_for(
            lambda: materialised() == [(hour, 3)],
            what=lambda: f"materialised {materialised()}; job errors {job_errors()}",
        )
    finally:
        service.stop()


def test_the_retention_job_deletes_old_dead_letters_and_stale_statuses(
    settings: Settings,
) -> None:
    url = settings.database_url
    assert url is not None
    migrate(url)
    now = dt.datetime.now(dt.UTC)
    with connect(url) as conn:
        for days in (1, 20):
            conn.execute(
                "INSERT INTO dead_letters (received_at, topic, payload, reason)"
                " VALUES (%s, %s, '\\x00', 'malformed_json')",
                (now - dt.timedelta(days=days), f"j-hq/d{days}/telemetry"),
            )
        for device, days in (("gw-1", 1), ("gw-2", 20)):
            conn.execute(
                "INSERT INTO device_status (site, device, online, received_at)"
                " VALUES ('j-hq', %s, true, %s)",
                (device, now - dt.timedelta(days=days)),
            )
        conn.commit()
    changed = settings.model_copy(
        update={"dead_letter_retention_days": 7, "device_status_retention_days": 10}
    )
    service = Service(changed, CONFIG, ServiceOptions(clock="data", serve_api=False))
    service.start()
    try:  # the retention job runs once at start
        wait_for(lambda: rows(url, "SELECT count(*) FROM dead_letters")[0][0] == 1)
        wait_for(lambda: rows(url, "SELECT device FROM device_status") == [("gw-1",)])
        assert rows(url, "SELECT topic FROM dead_letters") == [("j-hq/d1/telemetry",)]
    finally:
        service.stop()


def test_retention_settings_have_defaults_and_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defaults = Settings()
    assert (defaults.dead_letter_retention_days, defaults.device_status_retention_days) == (30, 400)
    monkeypatch.setenv("CLAUSEWATCH_DEAD_LETTER_RETENTION_DAYS", "14")
    monkeypatch.setenv("CLAUSEWATCH_DEVICE_STATUS_RETENTION_DAYS", "90")
    read = Settings()
    assert (read.dead_letter_retention_days, read.device_status_retention_days) == (14, 90)
