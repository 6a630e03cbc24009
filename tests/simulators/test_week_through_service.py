"""The bundled `week-faults` scenario, as fast as possible for a simulated week, through the whole
service (broker, ingest, engine with the bundled clauses, PostgreSQL): the intended violations,
and only those, become alerts, and every injected fault lands where the manifest says.

The week is fixed (16–22 November 2026, heating season in Jinan) so the expectations do not
depend on the day the test runs; the service accepts old readings as the demo does.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

import orjson
import psycopg
import pytest

from clausewatch.service import Service, ServiceOptions
from clausewatch.settings import Settings
from compliance.rates import compliance_report
from config import BUNDLED_DIR
from config.files import load_config_dir
from simulators.runner import run_scenario
from simulators.scenario import load_scenario
from simulators.stream import Injected, ScheduledMessage
from store.pool import connect

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CST = dt.timezone(dt.timedelta(hours=8))
WEEK_START = dt.datetime(2026, 11, 16, 0, 0, tzinfo=CST)
# Which clause each intended violation breaks (in the heating season).
CLAUSE_OF = {
    "overheating": "temp.heating.max",
    "events_skipped": "toilet.cleaning",
    "electricity_overrun": "energy.electricity.monthly",
}


def rows(url: str, query: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def wait_until(probe: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.2)


def test_a_week_of_faults_lands_where_the_manifest_says(
    fresh_database_url: str, mqtt_url: str, topic_prefix: str
) -> None:
    config = load_config_dir(BUNDLED_DIR)
    site = config.sites["demo-hq"]
    week = load_scenario(BUNDLED_DIR / "scenarios" / "week-faults.yaml")
    settings = Settings(
        database_url=fresh_database_url,
        mqtt_url=mqtt_url,
        topic_prefix=topic_prefix,
        mqtt_client_id=f"cw-test-{uuid.uuid4().hex[:8]}",
        max_age_s=3 * 366 * 86400.0,
    )
    service = Service(settings, config, ServiceOptions(clock="data", serve_api=False))
    service.start()
    last: list[ScheduledMessage] = []

    def remember_last_reading(topic: str, message: ScheduledMessage) -> None:
        if message.channel == "telemetry":
            last[:] = [message]

    try:
        result = run_scenario(
            week, site, mqtt_url, topic_prefix,
            as_fast_as_possible=True, start=WEEK_START, until=WEEK_START + dt.timedelta(days=7),
            on_message=remember_last_reading,
        )  # fmt: skip
        final = orjson.loads(last[0].payload)
        wait_until(
            lambda: rows(
                fresh_database_url,
                "SELECT 1 FROM readings WHERE device = %s AND seq = %s",
                last[0].device,
                final["seq"],
            ),
            120,
            "the last reading stored",
        )
    finally:
        service.stop()
    manifest = result.manifest
    url = fresh_database_url

    def one(kind: str) -> Injected:
        [item] = manifest.of_kind(kind)
        return item

    def at(seconds: float | None) -> dt.datetime:
        assert seconds is not None
        return dt.datetime.fromtimestamp(seconds, dt.UTC)

    # Intended violations, and only those, are violation alerts.
    assert one("overcooling").expect == "outside_season"  # November: not judged, no alert
    violations = rows(
        url,
        "SELECT clause_id, space, min(started_at) FROM alerts WHERE kind <> 'data_quality'"
        " GROUP BY clause_id, space",
    )
    found = {(clause, space): started for clause, space, started in violations}
    expected = {
        (CLAUSE_OF[item.kind], item.space): item
        for item in manifest.injected
        if item.expect == "violation"
    }
    assert set(found) == set(expected)
    for key, item in expected.items():
        if item.kind != "electricity_overrun":  # a quota breaches later than the overrun starts
            assert at(item.start) <= found[key] <= at(item.end)

    # Faults: data-quality alerts and not-assessable time where the sensor failed ...
    quality = {
        (clause, device): started
        for clause, device, started in rows(
            url,
            "SELECT clause_id, device, min(started_at) FROM alerts WHERE kind = 'data_quality'"
            " GROUP BY clause_id, device",
        )
    }
    silent, spike, stuck, reset = one("silent"), one("spike"), one("stuck"), one("register_reset")
    future = one("future_clock")
    assert set(quality) == {
        ("dq.climate.stale", silent.device),
        ("dq.climate.range", spike.device),
        ("dq.climate.stuck", stuck.device),
        ("dq.meter.register", reset.device),
        ("dq.climate.stale", future.device),  # its future readings were refused: a gap
    }
    assert at(silent.start) < quality[("dq.climate.stale", silent.device)] < at(silent.end)
    assert at(stuck.start) < quality[("dq.climate.stuck", stuck.device)] < at(stuck.end)
    assert quality[("dq.climate.range", spike.device)] == at(spike.seqs[0] / 1000)
    assert quality[("dq.meter.register", reset.device)] == at(reset.seqs[0] / 1000)
    for item in (silent, spike):
        not_assessable = rows(
            url,
            "SELECT count(*) FROM compliance_intervals WHERE device = %s"
            " AND status = 'not_assessable' AND start_ts < %s AND end_ts > %s",
            item.device,
            at((item.end or item.start or 0) + 1),
            at(item.start),
        )
        assert not_assessable[0][0] > 0, f"{item.kind}: no not-assessable time"

    # ... dead letters for what cannot be read or is stamped in the future ...
    letters = dict(
        rows(
            url,
            "SELECT split_part(topic, '/', 3), count(*) FROM dead_letters GROUP BY 1",
        )
    )
    assert letters == {one("malformed").device: one("malformed").count, future.device: future.count}

    # ... late readings for what arrived out of order, and duplicates stored once.
    late = one("out_of_order")
    assert rows(url, "SELECT count(*) FROM late_readings WHERE device = %s", late.device) == [
        (len(late.seqs) * 2,)  # temperature and humidity
    ]
    duplicate = one("duplicate")
    stored = rows(
        url,
        "SELECT count(*), count(DISTINCT seq) FROM readings"
        " WHERE device = %s AND metric = 'temperature'",
        duplicate.device,
    )[0]
    assert stored[0] == stored[1] and duplicate.seqs

    # The week's compliance figures (issue 17): data quality apart from every rate, open
    # stretches counted up to the data time.
    week_end = WEEK_START + dt.timedelta(days=7)
    with connect(url) as conn:
        report = compliance_report(conn, ["demo-hq"], WEEK_START, week_end, now=week_end)
        [(watermark,)] = conn.execute("SELECT watermark FROM engine_checkpoints").fetchall()
    (figures,) = report.sites
    assert figures.data_time == figures.counted_until == at(watermark)
    assert at(final["seq"] / 1000 - 60) < figures.counted_until <= week_end
    # No data-quality clause among the rated ones; the site's rate is theirs, summed.
    assert not [c for c in report.clauses if c.clause_id.startswith("dq.")]
    compliant = sum(c.compliant_s for c in report.clauses)
    violating = sum(c.violating_s for c in report.clauses)
    assert (figures.compliant_s, figures.violating_s) == pytest.approx((compliant, violating))
    assert figures.rate == pytest.approx(compliant / (compliant + violating))
    # The silent sensor's fault is data-quality time: from 15 min (stale_after) after its last
    # reading to its first one after the silence, a sample interval (5 min) either side.
    faults = {item.device: item for item in report.data_quality}
    assert faults[silent.device].clauses == ["dq.climate.stale"]
    silence = (silent.end or 0) - (silent.start or 0) - 15 * 60
    assert abs(faults[silent.device].data_quality_s - silence) <= 5 * 60
    assert figures.data_quality_s == pytest.approx(sum(f.data_quality_s for f in faults.values()))
    # The electricity quota is breached from mid-week to the month's end: a stretch still open
    # at the end of the run, violating up to the data time.
    quota = {c.clause_id: c for c in report.clauses}["energy.electricity.monthly"]
    assert quota.violating_s > 0 and quota.rate is not None and quota.rate < 1
