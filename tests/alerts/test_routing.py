"""Routing policies (issue 20, alerts/routing.py): each matcher, the order routes are taken in,
grouping of one site's and clause's alerts into one message (group_wait, group_interval) with an
injected clock, per-route reminders and resolved notices, and the scenario that motivated it:
a gateway outage (every sensor behind it silent at once) is ONE message to the route's receiver,
a signed webhook checked by a local receiver."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from pydantic import ValidationError

from alerts import audit, notify, routing, webhooks
from alerts.record import record_outputs
from config import BUNDLED_DIR
from config.files import load_clause_file
from rules.engine import SiteEngine
from rules.site import SiteModel
from store.registry import sync_clauses, sync_site
from tests.alerts.conftest import SITE, T0, clause_file, ended, site_model, started
from tests.alerts.test_channels import (  # noqa: F401 (fixtures)
    FEISHU_SECRET,
    WECOM_KEY,
    Receiver,
    feishu,
    wecom,
)
from tests.alerts.test_webhooks import SECRET, VerifyingReceiver, receiver  # noqa: F401

CONFIRMED = T0 + dt.timedelta(minutes=15)
BASE = "https://cw.example.cn"


def _route(id: int = 1, **fields: Any) -> routing.Route:
    spec = routing.RouteSpec.model_validate({"receivers": ["r"], **fields})
    return routing.Route(
        id=id,
        name=spec.name,
        position=spec.position or 0,
        is_default=spec.default,
        sites=tuple(spec.sites),
        matchers=spec.match,
        receivers=tuple(spec.receivers),
        continue_matching=spec.continue_,
        group_wait_s=round(spec.group_wait),
        group_interval_s=round(spec.group_interval),
        repeat_interval_s=None,
        send_resolved=spec.send_resolved,
    )


ALERT = routing.AlertFacts(
    site="school-a",
    org=("shanghai", "xuhui", "education"),
    lineage=("b1-3f-301", "b1-3f", "b1"),
    domain="indoor_climate",
    severity="major",
    kind="violation",
)


# ---- each matcher (pure) ----


@pytest.mark.parametrize(
    ("match", "sites", "expected"),
    [
        ({}, [], True),
        ({"org": ["shanghai"]}, [], True),
        ({"org": ["shanghai", "xuhui"]}, [], True),
        ({"org": ["shanghai", "minhang"]}, [], False),
        ({"org": ["xuhui"]}, [], False),  # a prefix from the top, not any part
        ({}, ["school-a", "school-b"], True),
        ({}, ["school-b"], False),
        ({"spaces": ["b1-3f"]}, [], True),  # an ancestor: the subtree
        ({"spaces": ["b1-3f-301"]}, [], True),  # the space itself
        ({"spaces": ["b1-2f"]}, [], False),
        ({"domains": ["indoor_climate", "energy"]}, [], True),
        ({"domains": ["data_quality"]}, [], False),
        ({"severities": ["critical", "major"]}, [], True),
        ({"severities": ["critical"]}, [], False),
        ({"kinds": ["violation"]}, [], True),
        ({"kinds": ["data_quality"]}, [], False),
        ({"org": ["shanghai"], "severities": ["critical"]}, [], False),  # all must hold
    ],
)
def test_each_matcher(match: dict[str, Any], sites: list[str], expected: bool) -> None:
    route = _route(name="r1", sites=sites, match=match)
    assert routing.matches(route, ALERT) is expected


def test_routes_are_taken_in_order_until_one_without_continue() -> None:
    routes = [
        _route(id=4, name="all-critical", position=30, match={"severities": ["critical"]}),
        _route(
            id=3, name="district", position=10, match={"org": ["shanghai"]}, **{"continue": True}
        ),
        _route(id=2, name="school", position=20, sites=["school-a"]),
        _route(id=5, name="after", position=40),
        _route(id=1, name="fallback", default=True),
    ]
    assert [r.name for r in routing.select(routes, ALERT)] == ["district", "school"]
    elsewhere = routing.AlertFacts("school-z", ("beijing",), ("x",), None, "info", "violation")
    assert [r.name for r in routing.select(routes, elsewhere)] == ["after"]
    only_specific = [r for r in routes if r.name not in ("after",)]
    assert [r.name for r in routing.select(only_specific, elsewhere)] == ["fallback"]


def test_route_specs_are_checked() -> None:
    with pytest.raises(ValidationError, match="default route"):
        routing.RouteSpec.model_validate(
            {"name": "d", "default": True, "sites": ["a"], "receivers": ["r"]}
        )
    with pytest.raises(ValidationError, match="group_wait"):
        routing.RouteSpec.model_validate({"name": "w", "receivers": ["r"], "group_wait": "2h"})
    with pytest.raises(ValidationError):
        routing.RouteSpec.model_validate({"name": "Bad Name", "receivers": ["r"]})
    with pytest.raises(ValidationError):
        routing.RouteSpec.model_validate({"name": "n", "receivers": []})
    with pytest.raises(ValidationError, match="unique"):
        routing.RoutesFile.model_validate(
            {"routes": [{"name": "a", "receivers": ["r"]}, {"name": "a", "receivers": ["r"]}]}
        )
    spec = routing.RouteSpec.model_validate(
        {"name": "n", "receivers": ["r"], "group_wait": "45s", "group_interval": "10m"}
    )
    assert (spec.group_wait, spec.group_interval) == (45.0, 600.0)


# ---- stored routes, grouping with an injected clock ----


def _hook(conn: psycopg.Connection[Any], url: str, name: str = "district-hook") -> int:
    webhooks.allow(conn, "127.0.0.1", "the tests' own receivers", "test", now=T0)
    # Not broadcast: it hears only what a route sends it.
    target = webhooks.Target(name, url, SECRET, site=SITE, level=None, broadcast=False)
    return webhooks.add_target(conn, target, "test", now=T0)


def _add_route(conn: psycopg.Connection[Any], **fields: Any) -> int:
    spec = routing.RouteSpec.model_validate(
        {"name": "ops", "sites": [SITE], "receivers": ["district-hook"], **fields}
    )
    route_id = routing.add_route(conn, spec, "test", T0)
    conn.commit()
    return route_id


@pytest.mark.integration
def test_group_wait_then_group_interval(
    registered: psycopg.Connection[Any],
    receiver: VerifyingReceiver,  # noqa: F811
) -> None:
    conn = registered
    _hook(conn, receiver.url())
    _add_route(conn, group_wait="30s", group_interval="5m")
    now = CONFIRMED
    record_outputs(conn, site_model(), [started(T0)], now=now)
    conn.commit()
    assert notify.deliver_due(conn, now, public_base_url=BASE).messages == 0  # waiting
    # A second alert of the same site and clause within group_wait joins the first.
    later = now + dt.timedelta(seconds=20)
    record_outputs(conn, site_model(), [started(T0, device="th-301", space="b1-3f-301")], now=later)
    conn.commit()
    assert (
        notify.deliver_due(conn, now + dt.timedelta(seconds=29), public_base_url=BASE).messages == 0
    )
    sent_at = now + dt.timedelta(seconds=30)
    report = notify.deliver_due(conn, sent_at, public_base_url=BASE)
    assert (report.messages, report.delivered) == (1, 2)
    assert [r[3] for r in receiver.requests] == ["ok"]  # signed, and the signature checks out
    body = receiver.bodies[0]
    assert body["group"] == {
        "key": f"{SITE}/temp.cooling.min",
        "route": "ops",
        "site": SITE,
        "clause": "temp.cooling.min",
        "count": 2,
    }
    assert [n["alert"]["subject"]["device"] for n in body["notifications"]] == ["th-201", "th-301"]
    # The first notice is the message; the second names it and has no attempt of its own.
    rows = conn.execute(
        "SELECT n.id, n.sent_with, n.state, (SELECT count(*) FROM notification_attempts a"
        " WHERE a.notification_id = n.id) FROM notifications n ORDER BY n.id"
    ).fetchall()
    assert rows == [(1, None, "delivered", 1), (2, 1, "delivered", 0)]

    # The group ends (resolved) a minute later: the resolved notices wait for group_interval
    # after the last message, then go together as one.
    end = sent_at + dt.timedelta(minutes=1)
    record_outputs(
        conn,
        site_model(),
        [ended(end, T0), ended(end, T0, device="th-301", space="b1-3f-301")],
        now=end,
    )
    conn.commit()
    assert (
        notify.deliver_due(conn, end + dt.timedelta(minutes=3), public_base_url=BASE).messages == 0
    )
    report = notify.deliver_due(conn, sent_at + dt.timedelta(minutes=5), public_base_url=BASE)
    assert (report.messages, report.delivered) == (1, 2)
    assert [n["event"] for n in receiver.bodies[1]["notifications"]] == ["resolved", "resolved"]


@pytest.mark.integration
def test_a_route_without_send_resolved_and_with_its_own_reminders(
    registered: psycopg.Connection[Any],
    receiver: VerifyingReceiver,  # noqa: F811
) -> None:
    conn = registered
    _hook(conn, receiver.url())  # the target itself has no reminders
    _add_route(conn, group_wait=0, repeat_interval="1h", send_resolved=False)
    record_outputs(conn, site_model(), [started(T0)], now=CONFIRMED)
    conn.commit()
    assert notify.deliver_due(conn, CONFIRMED, public_base_url=BASE).delivered == 1
    hour = CONFIRMED + dt.timedelta(hours=1)
    assert notify.queue_reminders(conn, hour - dt.timedelta(seconds=1)) == 0
    assert notify.queue_reminders(conn, hour) == 1
    conn.commit()
    assert notify.deliver_due(conn, hour, public_base_url=BASE).delivered == 1
    assert receiver.bodies[-1]["event"] == "reminder"
    end = hour + dt.timedelta(minutes=10)
    record_outputs(conn, site_model(), [ended(end, T0)], now=end)
    conn.commit()
    assert notify.deliver_due(conn, end + dt.timedelta(hours=1), public_base_url=BASE).messages == 0
    events = [r[0] for r in conn.execute("SELECT event FROM notifications ORDER BY id")]
    assert events == ["raised", "reminder"]


@pytest.mark.integration
def test_a_groups_reminders_go_as_one_message(
    registered: psycopg.Connection[Any],
    receiver: VerifyingReceiver,  # noqa: F811
) -> None:
    conn = registered
    _hook(conn, receiver.url())
    _add_route(conn, group_wait="30s", repeat_interval="1h")
    now = CONFIRMED
    record_outputs(conn, site_model(), [started(T0)], now=now)
    later = now + dt.timedelta(seconds=20)
    record_outputs(conn, site_model(), [started(T0, device="th-301", space="b1-3f-301")], now=later)
    conn.commit()
    assert (
        notify.deliver_due(conn, now + dt.timedelta(seconds=30), public_base_url=BASE).messages == 1
    )
    hour = now + dt.timedelta(hours=1)
    assert notify.queue_reminders(conn, hour) == 1  # the first alert's notice is an hour old
    conn.commit()
    assert notify.deliver_due(conn, hour, public_base_url=BASE).messages == 0  # waits for the rest
    assert notify.queue_reminders(conn, hour + dt.timedelta(seconds=20)) == 1
    conn.commit()
    report = notify.deliver_due(conn, hour + dt.timedelta(seconds=30), public_base_url=BASE)
    assert (report.messages, report.delivered) == (1, 2)
    assert [n["event"] for n in receiver.bodies[-1]["notifications"]] == ["reminder", "reminder"]


@pytest.mark.integration
def test_routes_add_to_the_partys_and_broadcast_receivers_once_each(
    registered: psycopg.Connection[Any],
    receiver: VerifyingReceiver,  # noqa: F811
) -> None:
    conn = registered
    _hook(conn, receiver.url())
    broadcast = webhooks.Target("everyone", receiver.url(), SECRET, site=SITE, level=0)
    webhooks.add_target(conn, broadcast, "test", now=T0)
    _add_route(conn, receivers=["everyone", "district-hook"], match={"spaces": ["b1-2f"]})
    # The clause's domain does not match this second route: not taken.
    _add_route(conn, name="energy", receivers=["everyone"], match={"domains": ["energy"]})
    # A target of one site cannot serve a route for every site.
    spec = routing.RouteSpec.model_validate({"name": "any-site", "receivers": ["district-hook"]})
    with pytest.raises(routing.RouteInvalid, match="serves site"):
        routing.add_route(conn, spec, "test", T0)
    conn.rollback()
    record_outputs(conn, site_model(), [started(T0)], now=CONFIRMED)
    conn.commit()
    rows = conn.execute("SELECT target_name, route, group_key FROM notifications ORDER BY id")
    assert rows.fetchall() == [
        ("everyone", "ops", f"{SITE}/temp.cooling.min"),
        ("district-hook", "ops", f"{SITE}/temp.cooling.min"),
    ]
    # In another space the route does not match: the broadcast target alone, sent alone.
    record_outputs(
        conn, site_model(), [started(T0, device="th-301", space="b1-3f-301")], now=CONFIRMED
    )
    conn.commit()
    last = conn.execute("SELECT target_name, route, group_key FROM notifications WHERE id = 3")
    assert last.fetchone() == ("everyone", None, None)


@pytest.mark.integration
def test_routes_from_the_file_are_synced_and_changes_are_in_the_ledger(
    registered: psycopg.Connection[Any],
    receiver: VerifyingReceiver,  # noqa: F811
) -> None:
    conn = registered
    _hook(conn, receiver.url())
    _add_route(conn, name="from-api")
    spec = {"name": "ops-file", "sites": [SITE], "receivers": ["district-hook"]}
    first = routing.RoutesFile.model_validate({"routes": [spec]})
    assert routing.sync_file(conn, first, "config", T0) == ["added ops-file"]
    assert routing.sync_file(conn, first, "config", T0) == []  # unchanged: nothing written
    changed = routing.RoutesFile.model_validate({"routes": [{**spec, "group_wait": "1m"}]})
    assert routing.sync_file(conn, changed, "config", T0) == ["changed ops-file"]
    assert routing.sync_file(conn, routing.RoutesFile(), "config", T0) == ["removed ops-file"]
    conn.commit()
    assert [r["name"] for r in routing.route_rows(conn)] == ["from-api"]
    kinds = conn.execute(
        "SELECT kind FROM ledger WHERE entity LIKE 'route:%' ORDER BY seq"
    ).fetchall()
    assert [k[0] for k in kinds] == ["route.added", "route.added", "route.changed", "route.removed"]


# ---- the scenario: a gateway outage ----

SENSORS = 24


def _school_with_a_gateway() -> SiteModel:
    """One floor of sensors, all behind one gateway, and one sensor elsewhere that is not (so
    a silent floor is not the whole site), answered for by one party."""
    devices: list[dict[str, Any]] = [
        {
            "id": f"th-{n:02d}",
            "space": "b1-2f",
            "gateway": "gw-1",
            "metrics": {"temperature": {"unit": "°C"}, "humidity": {"unit": "%"}},
        }
        for n in range(SENSORS)
    ]
    devices.append(
        {
            "id": "th-live",
            "space": "b1",
            "metrics": {"temperature": {"unit": "°C"}, "humidity": {"unit": "%"}},
        }
    )
    return SiteModel.model_validate(
        {
            "site": {
                "id": SITE,
                "name": "测试楼",
                "timezone": "Asia/Shanghai",
                "org": ["shanghai", "xuhui", "education"],
            },
            "spaces": [
                {"id": "b1", "type": "building"},
                {"id": "b1-2f", "type": "floor", "parent": "b1"},
            ],
            "devices": devices,
            "parties": [{"id": "wang", "name": "王工"}],
            "assignments": [
                {"party": "wang", "space": "b1", "valid_from": "2026-01-01T00:00:00+08:00"}
            ],
        }
    )


def _gateway_outage(
    conn: psycopg.Connection[Any], url: str, *, status_reported: bool
) -> tuple[dt.datetime, int]:
    """The school, a district route for data-quality alerts to a signed webhook, and the
    gateway's sensors silent for 20 minutes while th-live goes on reporting; with
    `status_reported`, the gateway's status topic said `offline` (its MQTT will). Returns
    the time the outage was judged and how many alerts were raised."""
    site = _school_with_a_gateway()
    dq = load_clause_file(Path(BUNDLED_DIR) / "clauses" / "clausewatch-data-quality.yaml")
    sync_site(conn, site, "test", now=T0 - dt.timedelta(days=30))
    sync_clauses(conn, [dq, clause_file()], "test", now=T0 - dt.timedelta(days=30))
    conn.commit()
    _hook(conn, url)
    spec = routing.RouteSpec.model_validate(
        {
            "name": "district-data-quality",
            "sites": [SITE],
            "match": {"org": ["shanghai", "xuhui"], "domains": ["data_quality"]},
            "receivers": ["district-hook"],
            "group_wait": "30s",
            "group_interval": "5m",
        }
    )
    routing.add_route(conn, spec, "test", T0)
    conn.commit()

    stale = [c for c in dq.clauses if c.id == "dq.climate.stale"]
    engine = SiteEngine(site, stale, lateness=0, standards={"dq.climate.stale": dq.standard.code})
    start = T0.timestamp()
    for n in range(SENSORS):
        engine.observe(f"th-{n:02d}", start, None, {"temperature": 27.0, "humidity": 50.0})
    for minute in range(0, 21, 5):
        engine.observe("th-live", start + minute * 60, None, {"temperature": 27.0, "humidity": 50})
    engine.advance(start + 60)
    engine.drain()
    outage = start + 20 * 60
    if status_reported:
        conn.execute(
            "INSERT INTO device_status (site, device, online, received_at) VALUES (%s, 'gw-1',"
            " false, %s)",
            (SITE, dt.datetime.fromtimestamp(start + 90, dt.UTC)),
        )
    engine.advance(outage)
    now = dt.datetime.fromtimestamp(outage, dt.UTC)
    recorded = record_outputs(conn, site, engine.drain(), now=now)
    conn.commit()
    return now, recorded.raised


@pytest.mark.integration
def test_a_gateway_outage_is_one_message_to_the_routes_receiver(
    conn: psycopg.Connection[Any],
    receiver: VerifyingReceiver,  # noqa: F811
) -> None:
    """Its status unknown (no inhibition): every sensor's stale alert, grouped into one
    message that lists them all."""
    now, raised = _gateway_outage(conn, receiver.url(), status_reported=False)
    assert raised == SENSORS

    assert notify.deliver_due(conn, now, public_base_url=BASE).messages == 0  # group_wait
    report = notify.deliver_due(conn, now + dt.timedelta(seconds=30), public_base_url=BASE)
    assert (report.messages, report.delivered, report.failed) == (1, SENSORS, 0)
    assert len(receiver.requests) == 1 and receiver.requests[0][3] == "ok"
    body = receiver.bodies[0]
    assert body["group"]["count"] == SENSORS and body["group"]["route"] == "district-data-quality"
    devices = sorted(n["alert"]["subject"]["device"] for n in body["notifications"])
    assert devices == [f"th-{n:02d}" for n in range(SENSORS)]
    # Every alert's timeline says it was told, in that one message.
    told = conn.execute(
        "SELECT count(DISTINCT alert_id) FROM alert_timeline WHERE action = 'notified'"
    ).fetchone()
    assert told == (SENSORS,)
    note = conn.execute("SELECT note FROM alert_timeline WHERE action = 'notified' LIMIT 1")
    assert note.fetchone() == (
        "raised notice to level 0 delivered (webhook district-hook,"
        f" route district-data-quality, one message for {SENSORS} alerts)",
    )
    # The ledger and the records still agree (one entry per notice, each naming the message).
    conn.commit()
    checked = audit.audit(conn)
    assert checked.ok, checked.problems()


@pytest.mark.integration
def test_a_gateway_reported_offline_is_one_outage_alert_in_one_message(
    conn: psycopg.Connection[Any],
    receiver: VerifyingReceiver,  # noqa: F811
) -> None:
    """Its status `offline` (alerts/inhibition.py): the sensors' stale alerts are recorded but
    inhibited by one outage alert, and the route's receiver gets that one alert, once."""
    now, raised = _gateway_outage(conn, receiver.url(), status_reported=True)
    assert raised == SENSORS + 1  # the outage alert and the inhibited ones
    notify.deliver_due(conn, now, public_base_url=BASE)
    report = notify.deliver_due(conn, now + dt.timedelta(seconds=30), public_base_url=BASE)
    assert (report.messages, report.delivered) == (1, 1)
    assert len(receiver.requests) == 1 and receiver.requests[0][3] == "ok"
    body = receiver.bodies[0]
    assert body["event"] == "raised" and body["alert"]["subject"]["device"] == "gw-1"


# ---- a group in each channel's format, Chinese first ----


@pytest.mark.integration
def test_a_group_in_a_wecom_robots_markdown(
    registered: psycopg.Connection[Any],
    wecom: Receiver,  # noqa: F811
) -> None:
    conn = registered
    webhooks.allow(conn, "127.0.0.1", "the tests' own receivers", "test", now=T0)
    url = wecom.url(f"/cgi-bin/webhook/send?key={WECOM_KEY}")
    target = webhooks.Target("wecom-1", url, "", site=SITE, kind="wecom", broadcast=False)
    webhooks.add_target(conn, target, "test", now=T0)
    _add_route(conn, receivers=["wecom-1"], group_wait=0)
    outputs = [started(T0), started(T0, device="th-301", space="b1-3f-301", value=23.5)]
    ids = record_outputs(conn, site_model(), outputs, now=CONFIRMED).alert_ids
    conn.commit()
    assert notify.deliver_due(conn, CONFIRMED, public_base_url=BASE).messages == 1
    text = orjson.loads(wecom.requests[0][2])["markdown"]["content"]
    assert text.startswith(
        "### [告警] 测试楼 (alerts-hq) 第三条 夏季室内空调温度设置不得低于26℃ (共 2 条)"
    )
    assert "> **告警数**：共 2 条" in text
    assert "- 1. [告警] 空间 b1-2f-201 / 设备 th-201 · 开始时间 2026-07-01 08:00" in text
    assert "- 2. [告警] 空间 b1-3f-301 / 设备 th-301" in text and "最差值 23.5 °C" in text
    for alert_id in ids:
        assert f"{BASE}/alerts/{alert_id}" in text


@pytest.mark.integration
def test_a_group_in_a_feishu_post_and_one_attempt_against_the_rate_limit(
    registered: psycopg.Connection[Any],
    feishu: Receiver,  # noqa: F811
) -> None:
    conn = registered
    webhooks.allow(conn, "127.0.0.1", "the tests' own receivers", "test", now=T0)
    target = webhooks.Target(
        "fs-1",
        feishu.url("/open-apis/bot/v2/hook/x"),
        FEISHU_SECRET,
        site=SITE,
        kind="feishu",
        broadcast=False,
        max_per_minute=1,
    )
    webhooks.add_target(conn, target, "test", now=T0)
    _add_route(conn, receivers=["fs-1"], group_wait=0)
    outputs = [started(T0), started(T0, device="th-301", space="b1-3f-301")]
    record_outputs(conn, site_model(), outputs, now=CONFIRMED)
    conn.commit()
    report = notify.deliver_due(conn, CONFIRMED, public_base_url=BASE)
    # One message: one attempt of the one a minute the receiver takes, nothing deferred.
    assert (report.messages, report.delivered, report.deferred) == (1, 2, 0)
    assert feishu.requests[0][3] == {"code": 0, "msg": "success", "data": {}}  # sign checked
    post = orjson.loads(feishu.requests[0][2])["content"]["post"]["zh_cn"]
    assert post["title"].endswith("(共 2 条)")
    texts = [part["text"] for paragraph in post["content"] for part in paragraph]
    assert texts[-2].startswith("1. [告警] 空间 b1-2f-201 / 设备 th-201")
    assert texts[-1].startswith("2. [告警] 空间 b1-3f-301 / 设备 th-301")


@pytest.mark.integration
def test_a_large_group_fits_each_robots_limit_with_title_count_and_link(
    registered: psycopg.Connection[Any],
    wecom: Receiver,  # noqa: F811
    feishu: Receiver,  # noqa: F811
) -> None:
    conn = registered
    webhooks.allow(conn, "127.0.0.1", "the tests' own receivers", "test", now=T0)
    for target in (
        webhooks.Target(
            "wecom-1",
            wecom.url(f"/cgi-bin/webhook/send?key={WECOM_KEY}"),
            "",
            site=SITE,
            kind="wecom",
            broadcast=False,
        ),
        webhooks.Target(
            "fs-1",
            feishu.url("/hook/x"),
            FEISHU_SECRET,
            site=SITE,
            kind="feishu",
            broadcast=False,
        ),
    ):
        webhooks.add_target(conn, target, "test", now=T0)
    _add_route(conn, receivers=["wecom-1", "fs-1"], group_wait=0)
    many = 200
    outputs = [started(T0, device=f"th-{n:03d}") for n in range(many)]
    first = record_outputs(conn, site_model(), outputs, now=CONFIRMED).alert_ids[0]
    conn.commit()
    report = notify.deliver_due(conn, CONFIRMED, public_base_url=BASE)
    assert (report.messages, report.delivered, report.failed) == (2, 2 * many, 0)
    text = orjson.loads(wecom.requests[0][2])["markdown"]["content"]  # ≤ 4096 bytes: accepted
    assert "(共 200 条)" in text and f"[详情]({BASE}/alerts/{first})" in text
    assert text.endswith("…")
    body = feishu.requests[0][2]
    assert len(body) < 30_000 and feishu.requests[0][3]["code"] == 0
    paragraphs = orjson.loads(body)["content"]["post"]["zh_cn"]["content"]
    assert paragraphs[-1] == [{"tag": "text", "text": "…"}]


def test_group_rendering_in_english_and_as_sms_text() -> None:
    from alerts import messages

    def payload(n: int, event: str) -> dict[str, Any]:
        return {
            "event": event,
            "level": 0,
            "party": None,
            "alert": {
                "id": n,
                "site": SITE,
                "clause": {
                    "id": "c",
                    "version": 1,
                    "standard": "GB 1",
                    "number": "4.1",
                    "title": "t",
                },
                "subject": {"space": f"s{n}", "device": None},
                "kind": "violation",
                "severity": "major",
                "started_at": T0.isoformat(),
                "ended_at": None,
                "worst_value": None,
                "unit": None,
                "responsible": {"party": None, "name": None},
            },
        }

    group = [payload(n, "raised") for n in range(1, 8)] + [payload(8, "resolved")]
    zh = messages.render_group(group, timezone="Asia/Shanghai", public_base_url=BASE)
    assert zh.title.startswith("[告警组更新]") and zh.title.endswith("(共 8 条)")
    assert zh.short.startswith("告警组更新：alerts-hq，GB 1 4.1 t；共 8 条：空间 s1、空间 s2")
    assert "…；" in zh.short and zh.short.endswith(f"{BASE}/alerts/1")
    en = messages.render_group(group, timezone=None, public_base_url=BASE, language="en")
    assert en.title == "[Alert group update] alerts-hq 4.1 t (8 alerts)"
    assert en.items[-1].startswith("8. [Resolved] space s8 · Started 2026-07-01 00:00 (UTC")
    assert len(en.items) == 8 and en.plain().count("\n") == len(en.lines) + len(en.items)


# ---- the documented example (docs/alerts.md, "Example: a district with three sites") ----

DOCS = Path(__file__).resolve().parents[2] / "docs" / "alerts.md"


def _documented_routes_yaml() -> str:
    section = DOCS.read_text(encoding="utf-8").split("#### Example: a district with three sites")[1]
    block = next(b for b in section.split("```yaml")[1:] if "routes:" in b)
    return block.split("```")[0]


def test_the_documented_district_example(tmp_path: Path) -> None:
    from clausewatch.service import load_routes

    (tmp_path / "routes.yaml").write_text(_documented_routes_yaml(), encoding="utf-8")
    routes_file = load_routes(tmp_path)
    routes = [
        _route(id=n, **spec.model_dump(by_alias=True, exclude_none=True) | {"position": n * 10})
        for n, spec in enumerate(routes_file.routes)
    ]
    district = ("shanghai", "xuhui", "education")

    def receivers(
        site: str, org: tuple[str, ...], lineage: tuple[str, ...], **kw: str
    ) -> list[str]:
        facts = routing.AlertFacts(
            site=site,
            org=org,
            lineage=lineage,
            domain=kw.get("domain", "indoor_climate"),
            severity=kw.get("severity", "major"),
            kind=kw.get("kind", "violation"),
        )
        taken = routing.select(routes, facts)
        return [name for route in taken for name in route.receivers]

    room = ("xh1-b1-server-room", "xh1-b1")
    assert receivers("xh-school-1", district, room) == ["xh-district-wecom", "xh-school-1-mail"]
    assert receivers("xh-school-2", district, ("c101",)) == ["xh-district-wecom"]
    critical = receivers("xh-school-2", district, ("c101",), severity="critical")
    assert critical == ["xh-district-wecom", "xh-duty-sms"]
    library = ("shanghai", "xuhui", "culture")
    stale = receivers("xh-library", library, ("r1",), kind="data_quality", severity="warning")
    assert stale == ["xh-district-wecom", "xh-it-desk"]
    assert receivers("mh-school-9", ("shanghai", "minhang"), ("x",)) == ["ops-mail"]
    sms = next(r for r in routes if r.name == "xuhui-critical-sms")
    assert (sms.group_wait_s, sms.send_resolved) == (0, False)


def test_a_routes_file_that_does_not_check_out_names_the_line(tmp_path: Path) -> None:
    from clausewatch.service import load_routes
    from config.documents import ConfigError

    (tmp_path / "routes.yaml").write_text(
        "routes:\n  - name: a\n    receivers: [x]\n    match: {colour: [red]}\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError) as raised:
        load_routes(tmp_path)
    assert "routes.yaml" in str(raised.value) and "colour" in str(raised.value)
    assert load_routes(tmp_path / "missing").routes == []


def test_clausewatch_check_checks_routes_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from clausewatch.cli import main

    (tmp_path / "routes.yaml").write_text(_documented_routes_yaml(), encoding="utf-8")
    assert main(["check", str(tmp_path), str(tmp_path / "routes.yaml")]) == 0
    assert "5 notification route(s)" in capsys.readouterr().out
    (tmp_path / "routes.yaml").write_text(
        "routes:\n  - name: all\n    receivers: [ops-mail]\n    group_wait: 2h\n", encoding="utf-8"
    )
    assert main(["check", str(tmp_path)]) == 1
    assert "routes.yaml: routes[0]: group_wait is at most 1h (line 2)" in capsys.readouterr().out


@pytest.mark.integration
def test_route_sync_applies_routes_yaml_without_a_restart_and_route_list_shows_them(
    registered: psycopg.Connection[Any],
    alerts_db_url: str,
    receiver: VerifyingReceiver,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from clausewatch.cli import main

    _hook(registered, receiver.url())
    registered.commit()
    db = ["--database-url", alerts_db_url]
    (tmp_path / "routes.yaml").write_text(
        "routes:\n"
        "  - name: hq\n"
        f"    sites: [{SITE}]\n"
        "    match: {severities: [major, critical]}\n"
        "    receivers: [district-hook]\n"
        "    continue: true\n"
        "    repeat_interval: 1h\n",
        encoding="utf-8",
    )
    sync = ["route", "sync", "--config-dir", str(tmp_path), *db]
    assert main(sync) == 0
    assert capsys.readouterr().out.strip() == "added hq"
    assert main(sync) == 0
    assert capsys.readouterr().out.strip() == "routes unchanged"
    assert main(["route", "list", *db]) == 0
    assert capsys.readouterr().out.strip() == (
        "0 hq (file): sites=alerts-hq, severities=major,critical → district-hook (continue)"
        " · group_wait 30 s, group_interval 300 s, repeat 3600 s, resolved notices"
    )
    # The next alert goes by the route at once: the service reads routes at every notice.
    record_outputs(registered, site_model(), [started(T0)], now=CONFIRMED)
    registered.commit()
    assert registered.execute("SELECT route FROM notifications").fetchall() == [("hq",)]
    (tmp_path / "routes.yaml").write_text("routes:\n  - name: hq\n    receivers: []\n")
    assert main(sync) == 1
    assert "routes[0].receivers" in capsys.readouterr().err
    (tmp_path / "routes.yaml").write_text("routes:\n  - name: hq\n    receivers: [nobody]\n")
    assert main(sync) == 1
    assert "route 'hq': no webhook target named ['nobody']" in capsys.readouterr().err


@pytest.mark.integration
def test_a_start_with_a_route_to_no_receiver_fails_in_one_line(
    registered: psycopg.Connection[Any], alerts_db_url: str, tmp_path: Path
) -> None:
    from clausewatch.service import sync_registry
    from config.files import LoadedConfig

    (tmp_path / "routes.yaml").write_text("routes:\n  - name: hq\n    receivers: [nobody]\n")
    with pytest.raises(RuntimeError, match=r"routes.yaml: route 'hq': no webhook target named"):
        sync_registry(alerts_db_url, LoadedConfig(directory=tmp_path))
    assert routing.route_rows(registered) == []
