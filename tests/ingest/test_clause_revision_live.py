"""Live configuration (issue 21) on the real service (MQTT in, PostgreSQL out).

Done means: a clause revised from 26 °C to 26.5 °C with an effective date changes verdicts from
that day on, without a restart. 26.2 °C readings before the effective day are judged against
26 °C (compliant) and after it against 26.5 °C (violating); the revision goes through the
command line (propose, approve by another user, publish) while the service runs; the ledger
names proposer and approver; a clause that did not change keeps its state across the switch
(its firing alert is neither resolved nor raised again). And a site model synced while the
service runs (a device added) is decoded and judged without a restart."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest
import yaml

from api.users import create_user
from clausewatch.cli import main
from clausewatch.service import REVIEWS_DUE, Service, ServiceOptions
from clausewatch.settings import Settings
from compliance import site_revisions
from config.files import LoadedConfig
from config.sitefiles import plan_model, site_yaml
from rules.clause import ClauseFile
from rules.site import SiteModel
from store.pool import connect
from store.registry import sync_site
from tests.support import rows, wait_for

pytestmark = pytest.mark.integration

ZONE = ZoneInfo("Asia/Shanghai")
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
                    "humidity": {"unit": "%", "range": [0, 100]},
                },
            }
        ],
        "parties": [{"id": "li-wei", "name": "李伟"}],
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
                    "for": "1m",
                },
            },
            {
                "id": "humidity.max",
                "version": 1,
                "effective_from": "2008-07-01",
                "number": "附",
                "title": "相对湿度不高于60%",
                "domain": "indoor_climate",
                "confidence": "B",
                "check": {"kind": "threshold", "metric": "humidity", "max": 60, "for": "1m"},
            },
        ],
    }
)


@pytest.fixture
def service(fresh_database_url: str, mqtt_url: str, topic_prefix: str) -> Iterator[Service]:
    settings = Settings(
        database_url=fresh_database_url,
        mqtt_url=mqtt_url,
        topic_prefix=topic_prefix,
        mqtt_client_id=f"cw-test-{uuid.uuid4().hex[:8]}",
        lateness_s=0,
        flush_interval_s=0.05,
        # The effective day is tomorrow in Shanghai: readings of that day are sent now.
        max_future_skew_s=3 * 86400.0,
    )
    config = LoadedConfig(sites={"t-hq": SITE}, clause_files={Path("test.yaml"): CLAUSES})
    running = Service(settings, config, ServiceOptions(clock="data", serve_api=False))
    running.start()
    try:
        yield running
    finally:
        running.stop()


def cli(url: str, *args: str) -> None:
    assert main([*args, "--database-url", url]) == 0


def test_a_revision_published_while_running_changes_verdicts_from_its_day_on(
    service: Service,
    fresh_database_url: str,
    publish: Callable[[str, bytes], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = service.database_url
    # Both clauses took effect in 2008: their review (复审) is overdue, counted at start.
    wait_for(lambda: REVIEWS_DUE._value.get() == 2, what="the reviews-due gauge")
    effective = dt.datetime.now(ZONE).date() + dt.timedelta(days=1)
    midnight = dt.datetime.combine(effective, dt.time(), ZONE)
    seq = iter(range(1, 1000))

    def send(at: dt.datetime, temperature: float, humidity: float) -> None:
        body = {
            "ts": int(at.timestamp() * 1000),
            "seq": next(seq),
            "metrics": {"temperature": temperature, "humidity": humidity},
        }
        publish("t-hq/th-a/telemetry", orjson.dumps(body))

    # Before the effective day: 26.2 °C is compliant against 26 °C; humidity 70 % fires.
    for minute in range(-30, 0, 5):
        send(midnight + dt.timedelta(minutes=minute), 26.2, 70.0)
    humidity_alert = "SELECT id, state FROM alerts WHERE clause_id = 'humidity.max'"
    before = wait_for(lambda: rows(url, humidity_alert), what="the humidity alert")
    assert [state for _, state in before] == ["firing"]
    assert rows(url, "SELECT count(*) FROM alerts WHERE clause_id = 'temp.cooling.min'") == [(0,)]

    # The revision, through the command line, while the service runs, by two named users.
    with connect(fresh_database_url) as conn:
        create_user(conn, "zhang", "admin", "correct horse battery", display_name="张工")
        create_user(conn, "li", "admin", "correct horse battery", display_name="李处长")
        conn.commit()
    cli(
        fresh_database_url,
        "clause", "propose", "--clause", "temp.cooling.min",
        "--set", "params.limit.default=26.5", "--reason", "新办法：不得低于26.5℃",
        "--backtest-days", "1", "--user", "zhang",
    )  # fmt: skip
    revision = int(capsys.readouterr().out.split()[0].lstrip("#"))
    own = ["clause", "approve", str(revision), "--user", "zhang"]
    assert main([*own, "--database-url", fresh_database_url]) == 2
    assert "proposer" in capsys.readouterr().err
    cli(fresh_database_url, "clause", "approve", str(revision), "--user", "li")
    cli(
        fresh_database_url,
        "clause", "publish", str(revision), "--effective-from", effective.isoformat(),
        "--user", "li",
    )  # fmt: skip
    pipeline = service.pipeline
    assert pipeline is not None
    wait_for(
        lambda: any(c.id == "temp.cooling.min" and c.version == 2 for c in pipeline.clauses),
        what="the pipeline judging with version 2",
    )

    # From the effective day: the same 26.2 °C violates 26.5 °C.
    for minute in range(0, 30, 5):
        send(midnight + dt.timedelta(minutes=minute), 26.2, 70.0)
    alert = wait_for(
        lambda: rows(
            url,
            "SELECT clause_version, started_at, state FROM alerts"
            " WHERE clause_id = 'temp.cooling.min'",
        ),
        what="the 26.5 °C alert",
    )
    assert alert == [(2, midnight, "firing")]
    # 26.8 °C complies with 26.5 °C: the violation ends and its interval is stored.
    send(midnight + dt.timedelta(minutes=30), 26.8, 70.0)
    send(midnight + dt.timedelta(minutes=35), 26.8, 70.0)
    violating = (
        "SELECT start_ts, end_ts FROM compliance_intervals"
        " WHERE clause_id = 'temp.cooling.min' AND status = 'violating'"
    )
    assert wait_for(lambda: rows(url, violating), what="the violation's interval") == [
        (midnight, midnight + dt.timedelta(minutes=30))
    ]
    intervals = rows(
        url,
        "SELECT clause_version, status, min(start_ts), max(end_ts) FROM compliance_intervals"
        " WHERE clause_id = 'temp.cooling.min' AND status IN ('compliant', 'violating')"
        " GROUP BY clause_version, status ORDER BY clause_version, status",
    )
    assert [(v, s) for v, s, _, _ in intervals] == [(1, "compliant"), (2, "violating")]
    assert intervals[0][3] <= midnight and intervals[1][2] == midnight

    # The unchanged clause kept its state: the same alert, still firing, no second one.
    assert rows(url, humidity_alert) == before
    [published] = rows(url, "SELECT payload FROM ledger WHERE kind = 'clause_revision.published'")
    entry = orjson.loads(published[0])
    assert (entry["proposed_by"], entry["approved_by"], entry["published_by"]) == (
        "user:zhang (张工)",
        "user:li (李处长)",
        "user:li (李处长)",
    )
    assert entry["diff"] == [{"path": "params.limit.default", "before": 26.0, "after": 26.5}]


def test_a_site_model_synced_while_running_is_judged_without_a_restart(
    service: Service, publish: Callable[[str, bytes], None]
) -> None:
    """A device added to the site in the registry (as an applied site revision syncs it) is
    decoded and judged within seconds; the devices that stay keep their state."""
    url = service.database_url
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=30)

    def send(device: str, seq: int, minute: int) -> None:
        body = {
            "ts": int((start + dt.timedelta(minutes=minute)).timestamp() * 1000),
            "seq": seq,
            "metrics": {"temperature": 27.0, "humidity": 70.0},
        }
        publish(f"t-hq/{device}/telemetry", orjson.dumps(body))

    for minute in range(0, 10, 2):
        send("th-a", minute + 1, minute)
    alerts = "SELECT id, device, state FROM alerts WHERE clause_id = 'humidity.max' ORDER BY id"
    [before] = wait_for(lambda: rows(url, alerts), what="th-a's humidity alert")

    grown = SITE.model_copy(
        update={"devices": (*SITE.devices, SITE.devices[0].model_copy(update={"id": "th-b"}))}
    )
    with connect(url) as conn:
        sync_site(conn, grown, "config:import test.xlsx")
        conn.commit()
    pipeline = service.pipeline
    assert pipeline is not None
    wait_for(lambda: "th-b" in {d.id for d in pipeline.sites["t-hq"].devices}, what="th-b")

    for minute in range(10, 20, 2):
        send("th-b", minute + 1, minute)
        send("th-a", minute + 1, minute)
    found = wait_for(
        lambda: (found := rows(url, alerts)) and len(found) == 2 and found, what="th-b's alert"
    )
    assert found[0] == before and found[1][1:] == ("th-b", "firing")
    assert rows(url, "SELECT count(*) FROM dead_letters") == [(0,)]
    added = [
        orjson.loads(payload)
        for entity, payload in rows(
            url, "SELECT entity, payload FROM ledger WHERE kind = 'device.added'"
        )
        if entity.endswith("th-b")
    ]
    assert [entry["actor"] for entry in added] == ["config:import test.xlsx"]


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """The service's own configuration directory, holding its site and clause files."""
    (tmp_path / "sites").mkdir()
    (tmp_path / "clauses").mkdir()
    (tmp_path / "sites" / "t-hq.yaml").write_text(site_yaml(SITE, "test"), encoding="utf-8")
    (tmp_path / "clauses" / "test.yaml").write_text(
        yaml.safe_dump(CLAUSES.model_dump(mode="json", by_alias=True), allow_unicode=True),
        encoding="utf-8",
    )
    return tmp_path


@pytest.fixture
def wall_service(
    fresh_database_url: str, mqtt_url: str, topic_prefix: str, config_dir: Path
) -> Iterator[Service]:
    settings = Settings(
        database_url=fresh_database_url,
        mqtt_url=mqtt_url,
        topic_prefix=topic_prefix,
        mqtt_client_id=f"cw-test-{uuid.uuid4().hex[:8]}",
        lateness_s=0,
        flush_interval_s=0.05,
        config_dir=config_dir,
    )
    config = LoadedConfig(sites={"t-hq": SITE}, clause_files={Path("test.yaml"): CLAUSES})
    running = Service(settings, config, ServiceOptions(clock="wall", serve_api=False))
    running.start()
    try:
        yield running
    finally:
        running.stop()


def test_a_site_revision_reaches_the_running_engines_at_its_effective_time(
    wall_service: Service, config_dir: Path, fresh_database_url: str
) -> None:
    """A device added by a site revision (proposed, approved by another person, published for
    a few seconds ahead) is judged by the running engines from that time on, not before."""
    grown = SITE.model_copy(
        update={"devices": (*SITE.devices, SITE.devices[0].model_copy(update={"id": "th-b"}))}
    )
    now = dt.datetime.now(dt.UTC)
    effective = now + dt.timedelta(seconds=4)
    with connect(fresh_database_url) as conn:
        plan = plan_model(grown, config_dir, "t-hq.xlsx")
        revision = site_revisions.propose(conn, plan, "t-hq.xlsx", "加设备", "user:zhang", now)
        site_revisions.approve(conn, revision.id, "user:li (李处长)", None, now)
        site_revisions.publish(conn, revision.id, "user:li (李处长)", effective, now)
        conn.commit()
    pipeline = wall_service.pipeline
    assert pipeline is not None
    assert "th-b" not in {d.id for d in pipeline.sites["t-hq"].devices}
    wait_for(lambda: "th-b" in {d.id for d in pipeline.sites["t-hq"].devices}, what="th-b")
    assert dt.datetime.now(dt.UTC) >= effective
    assert "th-b" in (config_dir / "sites" / "t-hq.yaml").read_text(encoding="utf-8")
    url = wall_service.database_url
    [(applied,)] = rows(url, "SELECT payload FROM ledger WHERE kind = 'site_revision.applied'")
    entry = orjson.loads(applied)
    assert (entry["proposed_by"], entry["approved_by"]) == ("user:zhang", "user:li (李处长)")
