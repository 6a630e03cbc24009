"""The thin slice on real parts: readings published to a real MQTT broker are decoded, judged by
the engine and stored in a real PostgreSQL as an alert that names the clause (standard, number,
version) and the responsible party; garbage becomes dead letters and ingestion goes on."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from clausewatch.service import Service, ServiceOptions
from clausewatch.settings import Settings
from config.files import LoadedConfig
from config.urls import MqttEndpoint
from ingest.mqtt import make_client
from rules.clause import ClauseFile
from rules.site import SiteModel
from tests.support import rows, wait_for

pytestmark = pytest.mark.integration

SITE = SiteModel.model_validate(
    {
        "site": {"id": "t-hq", "name": "Test office", "timezone": "Asia/Shanghai"},
        "spaces": [
            {"id": "b1", "type": "building"},
            {"id": "meeting-a", "type": "meeting", "parent": "b1"},
        ],
        "devices": [
            {
                "id": "th-a",
                "space": "meeting-a",
                "metrics": {
                    "temperature": {"unit": "°C", "range": [-20, 60]},
                    "humidity": {"unit": "%"},
                },
            },
            {
                "id": "ac-a",
                "space": "meeting-a",
                "metrics": {
                    "hvac_mode": {
                        "unit": "state",
                        "states": {"off": 0, "cooling": 1, "heating": 2, "fan": 3},
                    }
                },
            },
        ],
        "parties": [{"id": "li-wei", "name": "李伟 (facilities)"}],
        "assignments": [
            {"party": "li-wei", "space": "b1", "valid_from": "2020-01-01T00:00:00+08:00"}
        ],
    }
)

CLAUSES = ClauseFile.model_validate(
    {
        "standard": {
            "code": "建科〔2008〕115号",
            "title": "公共建筑室内温度控制管理办法",
            "edition": "2008",
        },
        "clauses": [
            {
                "id": "temp.cooling.min",
                "version": 1,
                "effective_from": "2008-07-01",
                "number": "第三条",
                "title": "夏季室内空调温度设置不得低于26℃",
                "domain": "indoor_climate",
                "confidence": "A",
                "params": {"limit": {"default": 26.0, "unit": "°C"}},
                "check": {
                    "kind": "threshold",
                    "metric": "temperature",
                    "min": "$limit",
                    "when": {"metric": "hvac_mode", "op": "==", "value": "cooling"},
                    "for": "1m",
                },
            }
        ],
    }
)


@pytest.fixture
def settings(fresh_database_url: str, mqtt_url: str, topic_prefix: str) -> Settings:
    return Settings(
        database_url=fresh_database_url,
        mqtt_url=mqtt_url,
        topic_prefix=topic_prefix,
        mqtt_client_id=f"cw-test-{uuid.uuid4().hex[:8]}",
        lateness_s=0,
        flush_interval_s=0.05,
    )


def start_service(settings: Settings) -> Service:
    config = LoadedConfig(sites={"t-hq": SITE}, clause_files={Path("test.yaml"): CLAUSES})
    running = Service(settings, config, ServiceOptions(clock="data", serve_api=False))
    running.start()
    return running


@pytest.fixture
def service(settings: Settings) -> Iterator[Service]:
    running = start_service(settings)
    try:
        yield running
    finally:
        running.stop()


def test_published_readings_raise_an_alert_with_provenance_and_responsible_party(
    service: Service, publish: Callable[[str, bytes], None]
) -> None:
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=3)
    stamp = start.astimezone(dt.timezone(dt.timedelta(hours=8))).isoformat()
    publish(
        "t-hq/ac-a/telemetry", orjson.dumps({"ts": stamp, "seq": 1, "metrics": {"hvac_mode": 1}})
    )
    for i in range(6):  # 24 °C every 30 s for 2.5 min: below 26 °C for longer than `for: 1m`
        ts_ms = int((start + dt.timedelta(seconds=30 * i)).timestamp() * 1000)
        body = {"ts": ts_ms, "seq": i + 1, "metrics": {"temperature": 24.0, "humidity": 55}}
        publish("t-hq/th-a/telemetry", orjson.dumps(body))

    alert = wait_for(
        lambda: rows(
            service.database_url,
            "SELECT standard, number, clause_id, clause_version, responsible_name, space,"
            " device, state, started_at, worst_value FROM alerts",
        )
    )
    assert len(alert) == 1
    standard, number, clause_id, version, responsible, space, device, state, started, worst = alert[
        0
    ]
    assert (standard, number, clause_id, version) == (
        "建科〔2008〕115号",
        "第三条",
        "temp.cooling.min",
        1,
    )
    assert responsible == "李伟 (facilities)"
    assert (space, device, state) == ("meeting-a", "th-a", "firing")
    assert started == start and worst == 24.0

    stored = wait_for(
        lambda: rows(service.database_url, "SELECT count(*) FROM readings")[0][0] == 13
    )
    assert stored


def test_garbage_is_dead_lettered_one_row_each_and_ingestion_goes_on(
    service: Service, publish: Callable[[str, bytes], None]
) -> None:
    publish("t-hq/th-a/telemetry", b'{"metrics": {"temperature": 2')
    publish("t-hq/th-a/telemetry", b'{"metrics": {"temperature": NaN}}')
    publish("t-hq/th-nowhere/telemetry", b'{"metrics": {"temperature": 22}}')
    publish("t-hq/th-a/status", b"x" * 10_000)  # issue 17: cut to 4 KiB, and says so
    publish("t-hq/th-a/telemetry", b'{"seq": 99, "metrics": {"temperature": 27.5}}')

    query = "SELECT reason, topic, octet_length(payload), truncated FROM dead_letters ORDER BY id"
    letters = wait_for(
        lambda: (found := rows(service.database_url, query)) and len(found) == 4 and found
    )
    reasons = sorted(reason for reason, *_ in letters)
    assert reasons == ["bad_status", "malformed_json", "non_finite", "unknown_device"]
    assert {(r, size, cut) for r, _, size, cut in letters if size > 100} == {
        ("bad_status", 4096, True)
    }
    assert [cut for _, _, size, cut in letters if size < 4096] == [False] * 3
    good = wait_for(lambda: rows(service.database_url, "SELECT value FROM readings WHERE seq = 99"))
    assert good == [(27.5,)]
    assert service.healthy


def test_retained_status_is_stored_per_device_and_a_bad_one_is_dead_lettered(
    mqtt_url: str, topic_prefix: str, settings: Settings
) -> None:
    """A gateway's retained will reaches a service that subscribes later; the gateway id need not
    be a device of the site. The latest status per (site, device) is kept with its time."""
    client = make_client(mqtt_url, f"gw-{uuid.uuid4().hex[:8]}")
    target = MqttEndpoint.parse(mqtt_url)
    client.connect(target.host, target.port)
    client.loop_start()
    gateway_topic = f"{topic_prefix}/t-hq/gw-b1/status"
    try:
        client.publish(gateway_topic, b"offline", qos=1, retain=True).wait_for_publish(10)
        running = start_service(settings)
        try:
            url = running.database_url
            status = "SELECT site, device, online FROM device_status"
            assert wait_for(lambda: rows(url, status)) == [("t-hq", "gw-b1", False)]
            before = rows(url, "SELECT received_at FROM device_status")[0][0]
            client.publish(gateway_topic, b"online", qos=1, retain=True).wait_for_publish(10)
            client.publish(f"{topic_prefix}/t-hq/th-a/status", b"on", qos=1).wait_for_publish(10)
            assert wait_for(lambda: rows(url, "SELECT reason, topic FROM dead_letters")) == [
                ("bad_status", f"{topic_prefix}/t-hq/th-a/status")
            ]
            stored = wait_for(
                lambda: rows(url, "SELECT online, received_at FROM device_status WHERE online")
            )
            assert stored[0][1] >= before
            assert rows(url, "SELECT count(*) FROM device_status")[0][0] == 1
        finally:
            running.stop()
    finally:
        client.publish(gateway_topic, b"", qos=1, retain=True).wait_for_publish(10)  # clear it
        client.loop_stop()
        client.disconnect()


def test_a_restart_loses_nothing_and_resumes_a_half_elapsed_duration(
    settings: Settings, publish: Callable[[str, bytes], None]
) -> None:
    """Readings published while the service is down wait in its persistent session; the engine
    resumes from its checkpoint, so a violation that began before the stop is confirmed after
    the restart with its true start time."""
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=5)

    def reading(seconds: int, seq: int) -> bytes:
        ts_ms = int((start + dt.timedelta(seconds=seconds)).timestamp() * 1000)
        return orjson.dumps({"ts": ts_ms, "seq": seq, "metrics": {"temperature": 23.0}})

    first = start_service(settings)
    try:
        publish(
            "t-hq/ac-a/telemetry",
            orjson.dumps(
                {"ts": int(start.timestamp() * 1000), "seq": 1, "metrics": {"hvac_mode": 1}}
            ),
        )
        publish("t-hq/th-a/telemetry", reading(0, 1))
        publish("t-hq/th-a/telemetry", reading(30, 2))  # half of `for: 1m`
        wait_for(lambda: rows(first.database_url, "SELECT count(*) FROM readings")[0][0] == 3)
        assert rows(first.database_url, "SELECT count(*) FROM alerts")[0][0] == 0
    finally:
        first.stop()

    for i in range(2, 6):  # published while no service runs: the broker keeps them
        publish("t-hq/th-a/telemetry", reading(30 * i, i + 1))

    second = start_service(settings)
    try:
        alert = wait_for(lambda: rows(second.database_url, "SELECT started_at, state FROM alerts"))
        assert alert == [(start, "firing")]
        wait_for(lambda: rows(second.database_url, "SELECT count(*) FROM readings")[0][0] == 7)
    finally:
        second.stop()


def test_with_the_wall_clock_the_scheduler_releases_broker_stamped_readings(
    settings: Settings, publish: Callable[[str, bytes], None]
) -> None:
    """`clausewatch run` mode: readings without ts are stamped on receipt, held for the
    lateness, and released by the scheduler's one-second clock ticks."""
    clause = CLAUSES.clauses[0]
    instant = clause.model_copy(update={"check": clause.check.model_copy(update={"for_": 0.0})})
    config = LoadedConfig(
        sites={"t-hq": SITE},
        clause_files={Path("test.yaml"): CLAUSES.model_copy(update={"clauses": (instant,)})},
    )
    running = Service(
        settings.model_copy(update={"lateness_s": 1.0}),
        config,
        ServiceOptions(clock="wall", serve_api=False),
    )
    running.start()
    try:
        publish("t-hq/ac-a/telemetry", b'{"metrics": {"hvac_mode": 1}}')
        publish("t-hq/th-a/telemetry", b'{"metrics": {"temperature": 22.5}}')
        alert = wait_for(
            lambda: rows(running.database_url, "SELECT worst_value, state FROM alerts"), 15
        )
        assert alert == [(22.5, "firing")]
        stamped = rows(
            running.database_url, "SELECT bool_and(broker_stamped), count(*) FROM readings"
        )
        assert stamped == [(True, 2)]
    finally:
        running.stop()
