"""Decoding MQTT messages: good readings and events become typed messages; every kind of bad
input becomes exactly one dead letter with its reason, and nothing raises."""

from __future__ import annotations

import datetime as dt
import math

import orjson
import pytest

from ingest.decode import (
    DEAD_LETTERS,
    RAW_CAP_BYTES,
    DeadLetter,
    Decoder,
    DeviceIndex,
    EventMessage,
    Limits,
    Reading,
    StatusMessage,
)
from ingest.topics import TopicError, TopicKind, parse_topic, topic_for

NOW = dt.datetime(2026, 7, 1, 9, 30, tzinfo=dt.UTC).timestamp()
DEVICES = DeviceIndex(
    {"hq": {"th-1": frozenset({"temperature", "humidity"}), "reader-1": frozenset()}}
)
TOPIC = "cw/hq/th-1/telemetry"


def decoder(**limits: float) -> Decoder:
    return Decoder(DEVICES, "cw", Limits(**limits))  # type: ignore[arg-type]


def decode_one(payload: bytes, topic: str = TOPIC, **limits: float) -> object:
    out = decoder(**limits).decode(topic, payload, NOW)
    assert len(out) == 1
    return out[0]


def dead_reason(payload: bytes, topic: str = TOPIC, **limits: float) -> str:
    out = decode_one(payload, topic, **limits)
    assert isinstance(out, DeadLetter), out
    assert out.topic == topic and out.received_at == NOW
    return out.reason


def test_reading_with_rfc3339_offset():
    reading = decode_one(
        b'{"ts": "2026-07-01T17:29:00+08:00", "seq": 7, "metrics": {"temperature": 25.4,'
        b' "humidity": 58}}'
    )
    assert reading == Reading(
        site="hq",
        device="th-1",
        ts=NOW - 60,
        seq=7,
        metrics={"temperature": 25.4, "humidity": 58.0},
        received_at=NOW,
        broker_stamped=False,
    )


def test_reading_with_epoch_ms_and_z_and_fraction():
    ms = int((NOW - 1.5) * 1000)
    assert decode_one(orjson.dumps({"ts": ms, "metrics": {"temperature": 1}})).ts == NOW - 1.5
    frac = decode_one(b'{"ts": "2026-07-01T09:29:59.250000001Z", "metrics": {"temperature": 1}}')
    assert frac.ts == NOW - 0.75


def test_the_topics_of_one_site_share_its_id():
    """A route is cached for each device's topic: the site's id is one string in all of them,
    not a copy split from each topic (issue 24: 54 bytes a device)."""
    decoding = decoder()
    reading = decoding.decode(TOPIC, b'{"metrics": {"temperature": 20}}', NOW)[0]
    event = decoding.decode(
        "cw/hq/reader-1/event", b'{"type": "cleaning.completed", "space": "wc-east"}', NOW
    )[0]
    assert isinstance(reading, Reading) and isinstance(event, EventMessage)
    assert reading.site == event.site == "hq"
    assert reading.site is event.site


def test_reading_without_ts_is_broker_stamped():
    reading = decode_one(b'{"metrics": {"temperature": 22}}')
    assert reading.ts == NOW and reading.broker_stamped and reading.seq is None


def test_array_payload_yields_each_item_and_dead_letters_only_the_bad_one():
    payload = orjson.dumps(
        [
            {"ts": int(NOW * 1000), "metrics": {"temperature": 20}},
            {"ts": int(NOW * 1000), "metrics": {"pressure": 1}},
            {"ts": int(NOW * 1000), "metrics": {"humidity": 50}},
        ]
    )
    out = decoder().decode(TOPIC, payload, NOW)
    assert [type(o) for o in out] == [Reading, DeadLetter, Reading]
    assert out[1].reason == "unknown_metric" and out[1].detail.startswith("item 1:")
    assert orjson.loads(out[1].payload) == {"ts": int(NOW * 1000), "metrics": {"pressure": 1}}


def test_event():
    out = decode_one(
        b'{"ts": "2026-07-01T17:30:00+08:00", "seq": 77, "type": "cleaning.completed",'
        b' "space": "wc-east", "actor": "staff-017", "attrs": {"checklist": "full"}}',
        topic="cw/hq/reader-1/event",
    )
    assert isinstance(out, EventMessage)
    assert out.site == "hq" and out.event.type == "cleaning.completed"
    assert out.event.device == "reader-1" and out.event.ts == NOW and out.event.seq == 77
    assert out.event.space == "wc-east" and out.event.attrs == {"checklist": "full"}


def test_a_field_check_in_reports_events_and_nothing_else():
    # rules.checkin.CHECKIN_REPORTER: no device of the site, the phone page's events only.
    body = b'{"ts": "2026-07-01T17:30:00+08:00", "type": "cleaning.completed", "space": "wc-east"}'
    out = decode_one(body, topic="cw/hq/checkin/event")
    assert isinstance(out, EventMessage)
    assert (out.event.device, out.event.space) == ("checkin", "wc-east")
    reading = b'{"metrics": {"temperature": 20}}'
    assert dead_reason(reading, topic="cw/hq/checkin/telemetry") == "unknown_device"
    assert dead_reason(body, topic="cw/nowhere/checkin/event") == "unknown_site"


def test_status():
    out = decode_one(b"offline", topic="cw/hq/th-1/status")
    assert out == StatusMessage("hq", "th-1", False, NOW)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"metrics": {"temperature": 1', "malformed_json"),
        (b"", "malformed_json"),
        (b'{"metrics": {"temperature": "\xff\xfe"}}', "invalid_utf8"),
        (b'{"metrics": {"temperature": NaN}}', "non_finite"),
        (b'{"metrics": {"temperature": Infinity}}', "non_finite"),
        (b'{"metrics": {"temperature": 1e999}}', "non_finite"),
        (b'{"metrics": {"temperature": null}}', "missing_value"),
        (b'{"metrics": {}}', "missing_value"),
        (b'{"ts": 1}', "missing_value"),
        (b'{"metrics": {"temperature": "25"}}', "bad_value"),
        (b'{"metrics": {"temperature": true}}', "bad_value"),
        (b'{"metrics": {"temperature": [1]}}', "bad_value"),
        (b'{"metrics": {"pressure": 1}}', "unknown_metric"),
        (b'{"metrics": {"Temp!": 1}}', "bad_id"),
        (b'{"metrics": {"temperature": 1}, "extra": 1}', "bad_shape"),
        (b'"hello"', "bad_shape"),
        (b'{"seq": -1, "metrics": {"temperature": 1}}', "bad_shape"),
        (b'{"seq": 1.5, "metrics": {"temperature": 1}}', "bad_shape"),
        (b'{"ts": "2026-07-01T09:30:00", "metrics": {"temperature": 1}}', "bad_timestamp"),
        (b'{"ts": "20260701T093000+0800", "metrics": {"temperature": 1}}', "bad_timestamp"),
        (b'{"ts": "2026-02-30T09:30:00Z", "metrics": {"temperature": 1}}', "bad_timestamp"),
        (b'{"ts": 1.5e12, "metrics": {"temperature": 1}}', "bad_timestamp"),
        (b'{"ts": "2026-07-01T09:40:00Z", "metrics": {"temperature": 1}}', "future_timestamp"),
        (b'{"ts": "2026-06-01T09:30:00Z", "metrics": {"temperature": 1}}', "too_old"),
        (b"[" * 5000 + b"]" * 5000, "too_deep"),
    ],
)
def test_bad_reading_is_one_dead_letter(payload: bytes, reason: str):
    assert dead_reason(payload) == reason


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("cw/nowhere/th-1/telemetry", "unknown_site"),
        ("cw/hq/th-9/telemetry", "unknown_device"),
        ("cw/HQ/th-1/telemetry", "bad_id"),
        ("cw/hq/-th/telemetry", "bad_id"),
        ("cw/hq/th-1/readings", "bad_topic"),
        ("cw/hq/th-1", "bad_topic"),
        ("other/hq/th-1/telemetry", "bad_topic"),
        ("cw/hq/th-1/telemetry/x", "bad_topic"),
    ],
)
def test_bad_topic_is_one_dead_letter(topic: str, reason: str):
    assert dead_reason(b'{"metrics": {"temperature": 1}}', topic) == reason


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"ts": 1}', "bad_shape"),
        (b'{"type": "Bad Type"}', "bad_shape"),
        (b'{"type": "patrol.done", "space": "Room 1"}', "bad_id"),
        (b'{"type": "patrol.done", "attrs": [1]}', "bad_shape"),
        (b'{"type": "patrol.done", "attrs": ' + b'{"a": ' * 20 + b"1" + b"}" * 21, "too_deep"),
    ],
)
def test_bad_event_is_one_dead_letter(payload: bytes, reason: str):
    assert dead_reason(payload, topic="cw/hq/reader-1/event") == reason


def test_bad_status():
    assert dead_reason(b"maybe", topic="cw/hq/th-1/status") == "bad_status"


def test_status_of_a_gateway_that_is_not_a_device_of_the_site():
    """SPEC §2: gateways publish their will on their own id, which the site model need not list."""
    assert decode_one(b"online", topic="cw/hq/gw-b1/status") == StatusMessage(
        "hq", "gw-b1", True, NOW
    )
    assert dead_reason(b"up", topic="cw/hq/gw-b1/status") == "bad_status"
    assert dead_reason(b"online", topic="cw/nowhere/gw-b1/status") == "unknown_site"
    assert dead_reason(b"online", topic="cw/hq/GW/status") == "bad_id"


def test_oversized_payload_is_rejected_before_parsing_and_raw_bytes_are_capped():
    payload = b'{"metrics": {"temperature": 1}, "pad": "' + b"x" * 100_000 + b'"}'
    letter = decode_one(payload, max_payload_bytes=65_536)
    assert letter.reason == "oversized" and len(letter.payload) == RAW_CAP_BYTES
    assert letter.truncated


def test_huge_array_is_one_dead_letter():
    payload = orjson.dumps([{"metrics": {"temperature": 1}}] * 50)
    assert dead_reason(payload, max_items=10) == "too_many_items"


def test_nested_attrs_within_limit_are_kept():
    attrs = b'{"a": {"b": {"c": [1, 2, {"d": 3}]}}}'
    out = decode_one(b'{"type": "refuel", "attrs": ' + attrs + b"}", "cw/hq/reader-1/event")
    assert out.event.attrs == orjson.loads(attrs)


def test_dead_letters_are_counted_by_reason():
    before = DEAD_LETTERS.labels("non_finite")._value.get()
    dead_reason(b'{"metrics": {"temperature": NaN}}')
    assert DEAD_LETTERS.labels("non_finite")._value.get() == before + 1


def test_parse_topic():
    assert parse_topic("cw/hq/th-1/event", "cw").kind is TopicKind.EVENT
    assert topic_for("cw", "hq", "th-1", "telemetry") == TOPIC
    with pytest.raises(TopicError):
        parse_topic(TOPIC, "other")


def test_values_are_finite_floats():
    reading = decode_one(b'{"metrics": {"temperature": -0.0, "humidity": 100}}')
    assert all(isinstance(v, float) and math.isfinite(v) for v in reading.metrics.values())


def test_a_gateways_health_report_is_its_status():
    """Issue 22: an edge gateway reports its sources' health on its status topic as JSON; the
    status it carries is stored like a bare online/offline."""
    health = {
        "status": "online",
        "sources": [
            {"device": "th-1", "kind": "opcua", "last_good": None, "errors": 3,
             "last_error": "opcua th-1 (opc.tcp://10.0.0.5:4840/): TimeoutError()",
             "last_error_at": "2026-07-01T09:00:00.000+08:00"},
        ],
    }  # fmt: skip
    topic = "cw/hq/gw-b1/status"
    out = decode_one(orjson.dumps(health), topic=topic)
    assert out == StatusMessage("hq", "gw-b1", True, NOW, orjson.dumps(health["sources"]))
    assert decode_one(b'{"status": "offline"}', topic=topic) == StatusMessage(
        "hq", "gw-b1", False, NOW
    )
    for bad in (b'{"status": "up"}', b'{"status": "online", "x": 1}', b'{"sources": []}',
                b'{"status": "online", "sources": {}}', b'{"status": "online", "sources": [1]}',
                orjson.dumps({"status": "online", "sources": [{}] * 1001})):  # fmt: skip
        assert dead_reason(bad, topic=topic) == "bad_status", bad
    assert dead_reason(b'{"status": ', topic=topic) == "malformed_json"


def test_the_last_done_reporter_sends_events_only_for_every_known_site():
    """A last-done time set through the API enters as an event of the reserved reporter
    `last-done` (rules.site.LAST_DONE_REPORTER), no device of the site."""
    body = b'{"ts": "2026-07-01T17:20:00+08:00", "type": "cleaning.completed", "space": "wc1"}'
    out = decode_one(body, topic="cw/hq/last-done/event")
    assert isinstance(out, EventMessage) and out.event.device == "last-done"
    telemetry = b'{"metrics": {"temperature": 20}}'
    assert dead_reason(telemetry, topic="cw/hq/last-done/telemetry") == "unknown_device"
    assert dead_reason(body, topic="cw/nowhere/last-done/event") == "unknown_site"
