"""Reports past raw retention (issue 17, defect 6): the raw readings older than the retention are
dropped, and a report for their period must give the very figures it gave before — from the
durable hourly register summaries — or refuse with an error naming retention, never a 200 with
another figure."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.tokens import create_token
from clausewatch.cli import main
from energy.render import carbon_csv, energy_csv, meter_out
from energy.reports import RetentionError, carbon_report, energy_series
from store import registry
from store.batches import PartitionCache, ReadingRow, write_readings
from store.migrate import migrate
from store.mode import storage_mode
from store.partitions import apply_retention
from store.pool import connect
from store.rollups import refresh_rollups

pytestmark = pytest.mark.integration

TODAY = dt.date(2026, 12, 6)  # 400 days of retention keep 2025-11-01 onwards


def _series(kit: Any, start: dt.datetime, end: dt.datetime, seed: int) -> list[Any]:
    """A register read about every 15 min with jitter, decimal values, a few long silences
    (gaps over the 1 h max_gap, some across local midnight) and one reset."""
    rng = random.Random(seed)
    points = []
    at, value = start - dt.timedelta(minutes=7), 1000.25
    while at < end:
        points.append((at, round(value, 2)))
        step = rng.choice([900, 900, 900, 840, 960, 1800, 37])
        if rng.random() < 0.01:
            step = rng.randint(4000, 30000)  # a silence
        at += dt.timedelta(seconds=step)
        value += rng.randint(0, 900) / 100
        if rng.random() < 0.002:
            value = rng.randint(0, 50) / 10  # meter replaced
    return points


def _figures(
    conn: psycopg.Connection[Any], site: Any, since: dt.datetime, until: dt.datetime
) -> tuple[str, ...]:
    report = carbon_report(conn, site, since, until, today=TODAY)
    zone = site.site.timezone
    meters = [meter_out(line, zone).model_dump_json() for line in report.meters]
    outputs = [carbon_csv(report), *meters]
    for bucket in ("day", "hour"):
        points, lines, _, _ = energy_series(conn, site, since, until, bucket, by="meter")  # type: ignore[arg-type]
        outputs.append(energy_csv(points, zone))
        outputs.extend(meter_out(line, zone).model_dump_json() for line in lines)
    return tuple(outputs)


@pytest.fixture
def db(fresh_database_url: str) -> str:
    migrate(fresh_database_url)
    return fresh_database_url


def test_a_report_past_raw_retention_equals_the_one_made_before(db: str, kit: Any) -> None:
    site = kit.make_site(grid_region="national")
    june, july = kit.local(2025, 6, 1), kit.local(2025, 7, 1)
    # a period across the retention cut-off: partly summaries, partly raw rows
    october, december = kit.local(2025, 10, 20), kit.local(2025, 11, 10)
    with connect(db) as conn:
        registry.sync_site(conn, site, actor="test", now=june)
        for n, (device, metric) in enumerate(
            [("em-main", "energy_kwh"), ("em-f1", "energy_kwh"), ("gm", "gas_m3")]
        ):
            for a, b in ((june, july), (october, december)):
                kit.insert_readings(conn, site, device, metric, _series(kit, a, b, n))
        conn.commit()
        refresh_rollups(conn, now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        conn.commit()
        # a late reading (an edge backlog) in an hour already summarised: summarised again
        series = _series(kit, june, july, 0)
        (a, va), (b, vb) = series[500], series[501]
        late = a + (b - a) / 3
        kit.insert_readings(conn, site, "em-main", "energy_kwh", [(late, (va + vb) / 2)])
        conn.commit()
        refresh_rollups(conn, now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        conn.commit()
        before_june = _figures(conn, site, june, july)
        before_autumn = _figures(conn, site, october, december)
        assert "carrier,electricity" in before_june[0]

        dropped = apply_retention(conn, 400, today=TODAY)
        conn.commit()
        assert dropped
        left = conn.execute("SELECT min(ts) FROM readings").fetchone()
        assert left is not None and left[0] >= dt.datetime(2025, 11, 1, tzinfo=dt.UTC)

        assert _figures(conn, site, june, july) == before_june
        assert _figures(conn, site, october, december) == before_autumn


def test_a_period_gone_before_it_was_summarised_is_refused_naming_retention(
    empty_database_url: str, kit: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # An installation from before the summaries: retention had dropped May 2025 already.
    migrate(empty_database_url, target=7)
    site = kit.make_site(grid_region="national")
    may, june, july = kit.local(2025, 5, 1), kit.local(2025, 6, 1), kit.local(2025, 7, 1)
    with connect(empty_database_url) as conn:
        points = _series(kit, may, july, 1)
        days = {
            (at - dt.timedelta(days=1) + dt.timedelta(days=d)).date()
            for at, _ in points[:1]
            for d in range(64)
        }
        cache = PartitionCache()
        if storage_mode(conn) == "native":  # as the service of the day made them
            for day in days:
                start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
                end = start + dt.timedelta(days=1)
                conn.execute(
                    f"CREATE TABLE readings_p{day:%Y%m%d} PARTITION OF readings"
                    f" FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
                )
            cache.days["readings"] = days
        rows = [
            ReadingRow(site.site.id, "em-main", "energy_kwh", at.timestamp(), v, None, 0.0)
            for at, v in points
        ]
        write_readings(conn, rows, cache)
        conn.execute("DELETE FROM readings WHERE ts < %s", (june,))
        conn.commit()
    migrate(empty_database_url)
    with connect(empty_database_url) as conn:
        registry.sync_site(conn, site, actor="test", now=may)
        plain, _ = create_token(conn, "energy_officer", [site.site.id])
        conn.commit()
        with pytest.raises(RetentionError, match="retention"):
            carbon_report(conn, site, may, june, today=TODAY)
        # June is still there and summarised by the migration: it survives the retention
        before = _figures(conn, site, june, july)
        apply_retention(conn, 400, today=TODAY)
        conn.commit()
        assert _figures(conn, site, june, july) == before

    with TestClient(create_app(empty_database_url)) as client:
        for path in ("/api/v1/carbon", "/api/v1/energy"):
            answer = client.get(
                path,
                params={"site": site.site.id, "since": "2025-05-01", "until": "2025-06-01"},
                headers={"Authorization": f"Bearer {plain}"},
            )
            assert answer.status_code == 409, answer.text
            message = answer.json()["detail"]
            assert "retention" in message
    capsys.readouterr()
    common = ["--database-url", empty_database_url, "--site", site.site.id]
    period = ["--from", "2025-05-01", "--to", "2025-06-01"]
    assert main(["report", "carbon", *common, *period]) != 0
    assert f"error: {message}" in capsys.readouterr().err
    assert main(["report", "energy", *common, *period]) != 0
    assert message in capsys.readouterr().err


def test_the_cost_past_raw_retention(db: str, kit: Any) -> None:
    """Time-of-use periods on whole hours price the hourly summaries as they priced the raw
    readings; a period starting at half past cannot be priced from them: the cost says so and
    the energy and carbon figures stand."""
    from decimal import Decimal

    from energy.costs import RETENTION_ZH, Band, Tariff, add_tariff, cost_or_note
    from energy.render import cost_out

    june, july = kit.local(2025, 6, 1), kit.local(2025, 7, 1)
    whole, half = kit.make_site(grid_region="national"), kit.make_site(grid_region="national")
    starts = {whole.site.id: "08:00", half.site.id: "08:30"}
    with connect(db) as conn:
        for site in (whole, half):
            registry.sync_site(conn, site, actor="test", now=june)
            kit.insert_readings(conn, site, "em-main", "energy_kwh", _series(kit, june, july, 7))
            at = starts[site.site.id]
            bands = (
                Band(band="valley", start="00:00", end=at, price=Decimal("0.3")),
                Band(band="peak", start=at, end="24:00", price=Decimal("1.05")),
            )
            add_tariff(
                conn,
                Tariff(scope="site", scope_id=site.site.id, carrier="electricity",
                       first_day=dt.date(2025, 1, 1), bands=bands),
                added_by="test",
            )  # fmt: skip
        conn.commit()
        refresh_rollups(conn, now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        conn.commit()

        def cost(site: Any) -> tuple[str, str]:
            report = carbon_report(conn, site, june, july, today=TODAY)
            priced = cost_or_note(conn, site, report)
            shown = "" if priced is None else cost_out(priced, "Asia/Shanghai").model_dump_json()
            said_zh.extend(n.zh for n in report.notes)
            return shown, carbon_csv(report)

        said_zh: list[str] = []

        before_whole, before_half = cost(whole), cost(half)
        assert '"band":"valley"' in before_whole[0] and '"band":"valley"' in before_half[0]
        apply_retention(conn, 400, today=TODAY)
        conn.commit()
        assert cost(whole) == before_whole
        said_zh.clear()
        after_half, carbon_half = cost(half)
        assert after_half == ""
        assert "operating cost not computed" in carbon_half
        assert f"运行成本未计算：{RETENTION_ZH}" in said_zh
        assert "retention" in carbon_half
        # the energy and carbon figures are those made before
        assert carbon_half.split("note,")[0] == before_half[1].split("note,")[0]
