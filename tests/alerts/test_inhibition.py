"""Inhibition (issue 20): a gateway that goes offline with 20 devices behind it is one alert and
one notification, not twenty; the inhibited device alerts are recorded and visible from it;
the gateway's return resolves it; a device still silent then notifies on its own; a device that
goes stale while its gateway is online raises its own alert as before. Driven through the real
pipeline (its ingress queue, the engine, the flush transaction with `record_outputs` and the
status hook) on a real PostgreSQL, with the notifications delivered to a local receiver that
checks their signatures."""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pydantic
import pytest
from fastapi.testclient import TestClient

from alerts import escalation, inhibition, notify, reads, webhooks
from alerts.audit import audit
from api.app import create_app
from api.tokens import create_token
from clausewatch.service import release, sync_registry
from config.files import LoadedConfig
from ingest.mqtt import IngressQueue, ReceivedMessage
from ingest.pipeline import Pipeline
from rules.clause import ClauseFile
from rules.site import SiteModel
from store.migrate import migrate
from store.pool import make_pool
from tests.alerts.test_webhooks import SECRET, VerifyingReceiver
from tests.api.conftest import TEST_STREAM
from tests.support import auth, config_pipeline, serve_http, wait_for

pytestmark = pytest.mark.integration

SITE_ID = "inh-hq"
GATEWAY = "gw-1"
BEHIND = [f"th-{i:02d}" for i in range(20)]
# Six hours ago on a whole minute: the scenario's times are in the past of the wall clock that
# stamps the notifications the pipeline queues, so they are due when the test delivers.
T0 = float(int(time.time()) // 60 * 60 - 6 * 3600)
STALE_AFTER = 15 * 60


def site_model(uplink: str | None = None) -> SiteModel:
    return SiteModel.model_validate(
        {
            "site": {
                "id": SITE_ID,
                "name": "Inhibition test office",
                "timezone": "Asia/Shanghai",
                **({"uplink": uplink} if uplink else {}),
            },
            "spaces": [
                {"id": "b1", "type": "building"},
                {"id": "f2", "type": "floor", "parent": "b1"},
                {"id": "f3", "type": "floor", "parent": "b1"},
            ],
            "devices": [
                *(
                    {
                        "id": device,
                        "space": "f2" if i < 10 else "f3",
                        "gateway": GATEWAY,
                        "metrics": {"temperature": {"unit": "°C"}},
                    }
                    for i, device in enumerate(BEHIND)
                ),
                # Connected on its own (no gateway).
                {"id": "th-solo", "space": "f3", "metrics": {"temperature": {"unit": "°C"}}},
            ],
            "parties": [{"id": "wang", "name": "王工"}, {"id": "zhao", "name": "赵科长"}],
            "assignments": [
                {"party": "wang", "space": "b1", "valid_from": "2020-01-01T00:00:00+08:00"},
                {
                    "party": "zhao",
                    "space": "b1",
                    "role": "escalation",
                    "level": 1,
                    "valid_from": "2020-01-01T00:00:00+08:00",
                },
            ],
        }
    )


CLAUSES = ClauseFile.model_validate(
    {
        "standard": {"code": "CW-DQ", "title": "data quality", "edition": "1"},
        "clauses": [
            {
                "id": "dq.climate.stale",
                "version": 1,
                "effective_from": "2024-01-01",
                "number": "DQ-1",
                "title": "温湿度传感器 15 分钟无数据",
                "domain": "data_quality",
                "confidence": "A",
                "severity": "warning",
                "check": {
                    "kind": "data_quality",
                    "metrics": ["temperature"],
                    "stale_after": "15m",
                    "out_of_range": False,
                    "register_backwards": False,
                },
                "escalation": [{"after": "1h", "to_level": 1}],
            }
        ],
    }
)


def at(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(T0 + seconds, dt.UTC)


class Building:
    """The site's devices and gateway, speaking into a running pipeline (its ingress queue, as
    the MQTT subscriber would), and the scheduler's clock (`advance`)."""

    def __init__(self, pipeline: Pipeline, inbox: IngressQueue, url: str) -> None:
        self.pipeline = pipeline
        self.inbox = inbox
        self.url = url
        self.seq = 0
        self.sent = 0  # readings put
        self.statuses: dict[str, bool] = {}  # the last status put per source

    def _put(self, topic: str, payload: bytes, received: float) -> None:
        self.seq += 1
        message = ReceivedMessage(topic, payload, T0 + received, (1, self.seq, 1))
        self.inbox.put(message, threading.Event())

    def readings(self, devices: list[str], offset: float) -> None:
        for device in devices:
            body = {"ts": int((T0 + offset) * 1000), "metrics": {"temperature": 25.0}}
            self._put(f"cw/{SITE_ID}/{device}/telemetry", orjson.dumps(body), offset)
            self.sent += 1

    def status(self, source: str, online: bool, offset: float) -> None:
        self._put(f"cw/{SITE_ID}/{source}/status", b"online" if online else b"offline", offset)
        self.statuses[source] = online

    def advance(self, offset: float) -> None:
        """The scheduler's clock moves to `offset`, once everything put before is committed
        (as with a live broker, where time passes while messages arrive)."""
        self.settled("SELECT count(*) FROM readings", [(self.sent,)])
        self.settled(
            "SELECT device, online FROM device_status ORDER BY device",
            sorted(self.statuses.items()),
        )
        self.pipeline.request_advance(T0 + offset)

    def settled(self, query: str, expected: Any) -> None:
        """Waits until `query` answers `expected` (the pipeline commits on its own thread)."""

        def probe() -> bool:
            with psycopg.connect(self.url) as conn:
                return conn.execute(query).fetchall() == expected

        wait_for(probe, what=lambda: f"{query!r} never answered {expected!r}")


@pytest.fixture
def receiver() -> Iterator[VerifyingReceiver]:
    server = VerifyingReceiver(SECRET)
    with serve_http(server):
        yield server


@pytest.fixture
def building(
    fresh_database_url: str, receiver: VerifyingReceiver, request: pytest.FixtureRequest
) -> Iterator[Callable[[SiteModel], Building]]:
    migrate(fresh_database_url)
    pool = make_pool(fresh_database_url)
    started: list[Pipeline] = []

    def start(site: SiteModel) -> Building:
        config = LoadedConfig(sites={SITE_ID: site}, clause_files={Path("dq.yaml"): CLAUSES})
        sync_registry(fresh_database_url, config)
        with psycopg.connect(fresh_database_url) as conn:
            webhooks.allow(conn, "127.0.0.1", "the test's receiver", "test", now=at(0))
            target = webhooks.Target(
                "duty-room",
                f"http://127.0.0.1:{receiver.port}/hook",
                SECRET,
                site=SITE_ID,
                level=None,
                broadcast=True,
            )
            webhooks.add_target(conn, target, "test", now=at(0))
            conn.commit()
        inbox = IngressQueue(1000)
        pipeline = config_pipeline(
            pool,
            config,
            inbox,
            on_status=inhibition.source_status,
            lateness=0,
            flush_interval=0.05,
            clock="wall",
            checkpoint_interval=3600,
        )
        pipeline.start()
        started.append(pipeline)
        return Building(pipeline, inbox, fresh_database_url)

    yield start
    for pipeline in started:
        pipeline.stop()
    pool.close()


def deliver(url: str) -> notify.DeliveryReport:
    with psycopg.connect(url) as conn:
        return notify.deliver_due(conn, dt.datetime.now(dt.UTC))


def alerts_by_device(url: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(url) as conn:
        return {row["device"]: row for row in reads.alert_rows(conn, limit=1000)}


def test_a_gateway_outage_is_one_alert_and_one_notification(
    building: Callable[[SiteModel], Building], receiver: VerifyingReceiver
) -> None:
    b = building(site_model())
    b.status(GATEWAY, True, 0)
    b.readings([*BEHIND, "th-solo"], 0)
    b.advance(60)
    b.status(GATEWAY, False, 120)  # its will: the gateway is gone, and so are its devices' data
    b.readings(["th-solo"], 600)
    b.advance(STALE_AFTER + 60)  # every device behind it is stale now; th-solo is not
    b.settled("SELECT count(*) FROM alerts", [(21,)])

    found = alerts_by_device(b.url)
    outage = found.pop(GATEWAY)
    assert "th-solo" not in found and sorted(found) == BEHIND
    with psycopg.connect(b.url) as conn:
        detail = reads.alert_detail_row(conn, outage["id"])
        assert detail is not None
        assert (detail["outage"], detail["inhibited_by"]) == ("gateway", None)
        # Raised from the gateway's offline report, on the space holding every device behind it,
        # bound to whoever answers for that space, and naming the devices.
        assert (detail["space"], detail["responsible_party"]) == ("b1", "wang")
        assert detail["started_at"] == at(120)
        assert detail["reason"].startswith("网关 gw-1 离线，其后 20 台设备无数据")
        assert all(device in detail["reason"] for device in BEHIND)
        # The inhibited device alerts are recorded as usual and visible from it.
        inhibited = reads.inhibited_alerts(conn, outage["id"])
        assert sorted(a["device"] for a in inhibited) == BEHIND
        assert {a["state"] for a in inhibited} == {"firing"}
        members = conn.execute(
            "SELECT DISTINCT inhibited_by FROM alerts WHERE device <> %s", (GATEWAY,)
        ).fetchall()
        assert members == [(outage["id"],)]
        (data,) = conn.execute(
            "SELECT data FROM alert_timeline WHERE action = 'raised' AND alert_id = %s",
            (inhibited[0]["id"],),
        ).fetchone() or (None,)
        assert data["inhibited_by"] == outage["id"]
        token, _ = create_token(conn, "viewer", (SITE_ID,), "the desk")
        conn.commit()
    # The alert desk's API shows the same both ways.
    with TestClient(create_app(b.url, stream=TEST_STREAM)) as client:
        headers = auth(token)
        shown = client.get(f"/api/v1/alerts/{outage['id']}", headers=headers).json()
        assert (shown["outage"], shown["inhibited_by"]) == ("gateway", None)
        assert [each["device"] for each in shown["inhibits"]] == BEHIND
        member = client.get(f"/api/v1/alerts/{inhibited[0]['id']}", headers=headers).json()
        assert (member["inhibited_by"], member["inhibits"]) == (outage["id"], [])

    # One notification, of the gateway's alert.
    assert deliver(b.url).delivered == 1
    ((_, body, status, verdict),) = receiver.requests
    assert (status, verdict) == (200, "ok")
    sent = orjson.loads(body)
    assert (sent["event"], sent["alert"]["id"]) == ("raised", outage["id"])
    assert sent["alert"]["subject"]["device"] == GATEWAY

    # Escalation goes through the outage alert only.
    with psycopg.connect(b.url) as conn:
        steps = escalation.escalate_due(conn, at(STALE_AFTER + 3700))
        conn.commit()
    assert steps == [(outage["id"], 1)]

    # The gateway comes back with all but one of its devices: its alert resolves at its return,
    # the devices' alerts end with their data; the resolved notice goes to whoever was told.
    back = STALE_AFTER + 2 * 3600
    for offset in range(1200, back, 600):  # th-solo, on its own, keeps reporting meanwhile
        b.readings(["th-solo"], offset)
    b.status(GATEWAY, True, back)
    b.readings([*BEHIND[:-1], "th-solo"], back + 1)
    b.advance(back + 2)
    b.settled(
        "SELECT device, state FROM alerts WHERE state <> 'resolved' ORDER BY device",
        [(BEHIND[-1], "firing")],
    )
    with psycopg.connect(b.url) as conn:
        ended = conn.execute("SELECT ended_at FROM alerts WHERE id = %s", (outage["id"],))
        assert ended.fetchone() == (at(back),)
    assert deliver(b.url).delivered == 2  # resolved; escalated to level 1 (赵科长)
    assert sorted(orjson.loads(r[1])["event"] for r in receiver.requests[1:]) == [
        "escalated",
        "resolved",
    ]

    # The one device still silent is released once its gateway has been back a while, and
    # then notifies on its own.
    with psycopg.connect(b.url) as conn:
        # On the data clock (the demo's building) the release waits for the site's own time:
        # 60 s after the return there, whatever the wall clock says.
        conn.execute(
            "INSERT INTO engine_checkpoints (site, state, watermark) VALUES (%s, '{}', %s)"
            " ON CONFLICT (site) DO UPDATE SET watermark = excluded.watermark",
            (SITE_ID, at(back + 60).timestamp()),
        )
        assert release(conn, "data", [SITE_ID]) == []
        assert inhibition.release_due(conn, at(back + 60)) == []
        (released,) = inhibition.release_due(conn, at(back) + inhibition.RELEASE_AFTER)
        conn.commit()
        row = conn.execute(
            "SELECT device, inhibited_by FROM alerts WHERE id = %s", (released,)
        ).fetchone()
        assert row == (BEHIND[-1], None)
        actions = conn.execute(
            "SELECT action FROM alert_timeline WHERE alert_id = %s ORDER BY id", (released,)
        ).fetchall()
        assert actions == [("raised",), ("released",)]
    assert deliver(b.url).delivered == 1
    last = orjson.loads(receiver.requests[-1][1])
    assert (last["event"], last["alert"]["id"]) == ("raised", released)
    # Every step is in the ledger, and the records match it.
    with psycopg.connect(b.url, autocommit=True) as conn:
        verdict = audit(conn)
    assert verdict.ok, verdict.problems


def test_a_device_going_stale_behind_an_online_gateway_raises_its_own_alert(
    building: Callable[[SiteModel], Building], receiver: VerifyingReceiver
) -> None:
    b = building(site_model())
    b.status(GATEWAY, True, 0)
    b.readings([*BEHIND, "th-solo"], 0)
    b.readings([*BEHIND[1:], "th-solo"], 600)  # th-00 falls silent; its gateway is online
    b.advance(STALE_AFTER + 60)
    b.settled("SELECT device, inhibited_by, outage FROM alerts", [("th-00", None, None)])
    assert deliver(b.url).delivered == 1
    sent = orjson.loads(receiver.requests[0][1])
    assert sent["alert"]["subject"]["device"] == "th-00"


def test_a_site_uplink_outage_is_one_site_wide_alert(
    building: Callable[[SiteModel], Building], receiver: VerifyingReceiver
) -> None:
    b = building(site_model(uplink="site-link"))
    b.status("site-link", True, 0)
    b.status(GATEWAY, True, 0)
    b.readings([*BEHIND, "th-solo"], 0)
    # The site's link goes; its gateway's will may or may not get through: the uplink decides.
    b.status("site-link", False, 120)
    b.status(GATEWAY, False, 125)
    b.advance(STALE_AFTER + 60)
    b.settled("SELECT count(*) FROM alerts", [(22,)])
    found = alerts_by_device(b.url)
    outage = found.pop("site-link")
    assert outage["reason"].startswith("站点上行链路 site-link 离线，全部 21 台设备无数据")
    with psycopg.connect(b.url) as conn:
        assert conn.execute(
            "SELECT outage, count(*) FROM alerts GROUP BY outage ORDER BY outage"
        ).fetchall() == [("site", 1), (None, 21)]
        assert len(reads.inhibited_alerts(conn, outage["id"])) == 21
    assert deliver(b.url).delivered == 1


def test_every_device_of_the_site_without_data_at_once_is_one_site_wide_alert(
    building: Callable[[SiteModel], Building], receiver: VerifyingReceiver
) -> None:
    b = building(site_model())
    b.status(GATEWAY, True, 0)
    b.readings([*BEHIND, "th-solo"], 0)
    # The building's link goes down: the gateway's will arrives, th-solo just falls silent.
    b.status(GATEWAY, False, 120)
    b.advance(STALE_AFTER + 60)
    b.settled("SELECT count(*) FROM alerts", [(22,)])
    with psycopg.connect(b.url) as conn:
        ((outage_id, outage, device, reason),) = conn.execute(
            "SELECT id, outage, device, reason FROM alerts WHERE outage IS NOT NULL"
        ).fetchall()
        assert (outage, device) == ("site", None)
        assert reason.startswith(f"站点 {SITE_ID} 全部 21 台设备无数据")
        members = reads.inhibited_alerts(conn, outage_id)
        assert sorted(m["device"] for m in members) == sorted([*BEHIND, "th-solo"])
        started = conn.execute("SELECT started_at FROM alerts WHERE id = %s", (outage_id,))
        assert started.fetchone() == (at(120),)  # the first sign of the outage
    assert deliver(b.url).delivered == 1
    assert orjson.loads(receiver.requests[0][1])["alert"]["id"] == outage_id

    # The link is back: the gateway reports online, every device sends again.
    back = STALE_AFTER + 600
    b.status(GATEWAY, True, back)
    b.readings([*BEHIND, "th-solo"], back + 1)
    b.advance(back + 2)
    b.settled("SELECT count(*) FROM alerts WHERE state <> 'resolved'", [(0,)])
    with psycopg.connect(b.url) as conn:
        ended = conn.execute("SELECT ended_at FROM alerts WHERE id = %s", (outage_id,))
        assert ended.fetchone() == (at(back),)
    assert deliver(b.url).delivered == 1
    assert orjson.loads(receiver.requests[1][1])["event"] == "resolved"
    with psycopg.connect(b.url, autocommit=True) as conn:
        verdict = audit(conn)
    assert verdict.ok, verdict.problems


def test_an_outage_whose_devices_all_have_data_again_resolves_without_its_status(
    building: Callable[[SiteModel], Building], receiver: VerifyingReceiver
) -> None:
    b = building(site_model())
    b.status(GATEWAY, True, 0)
    b.readings([*BEHIND, "th-solo"], 0)
    b.readings(["th-solo"], 600)
    b.status(GATEWAY, False, 120)
    b.advance(STALE_AFTER + 60)
    b.settled("SELECT count(*) FROM alerts WHERE outage = 'gateway'", [(1,)])
    # Its data comes back, but its `online` is lost: the outage ends with the last device's.
    b.readings(["th-solo"], 1500)
    b.readings(BEHIND, 1501)
    b.advance(1502)
    b.settled("SELECT count(*) FROM alerts WHERE state <> 'resolved'", [(0,)])
    with psycopg.connect(b.url) as conn:
        ended = conn.execute("SELECT ended_at FROM alerts WHERE outage = 'gateway'")
        assert ended.fetchone() == (at(1501),)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"gateway": "th-00"}, "devices[0].gateway: a device cannot be its own gateway"),
        ({"gateway": "site-link"}, "is the site's uplink, which every device is behind"),
    ],
)
def test_the_site_model_checks_gateways(change: dict[str, str], problem: str) -> None:
    raw = site_model(uplink="site-link").model_dump(by_alias=True, exclude_defaults=True)
    raw["devices"][0].update(change)
    with pytest.raises(pydantic.ValidationError, match=re.escape(problem)):
        SiteModel.model_validate(raw)


def test_gateways_may_not_form_a_cycle_nor_the_uplink_be_a_device() -> None:
    raw = site_model().model_dump(by_alias=True, exclude_defaults=True)
    raw["devices"][0]["gateway"] = "th-01"
    raw["devices"][1]["gateway"] = "th-00"
    with pytest.raises(pydantic.ValidationError, match="the gateways form a cycle"):
        SiteModel.model_validate(raw)
    raw = site_model().model_dump(by_alias=True, exclude_defaults=True)
    raw["site"]["uplink"] = "th-solo"
    with pytest.raises(
        pydantic.ValidationError, match=re.escape("site.uplink: 'th-solo' is a device")
    ):
        SiteModel.model_validate(raw)


def test_what_a_device_is_behind() -> None:
    raw = site_model(uplink="site-link").model_dump(by_alias=True, exclude_defaults=True)
    raw["devices"][1]["gateway"] = "th-00"  # th-01 reaches gw-1 through th-00
    site = SiteModel.model_validate(raw)
    assert site.sources_of("th-01") == ["th-00", GATEWAY, "site-link"]
    assert site.sources_of("th-solo") == ["site-link"]
    assert site.behind("th-00") == ["th-00", "th-01"]
    assert len(site.behind("site-link")) == 21
