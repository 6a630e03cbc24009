"""Issue 22: each source of the gateway reports its health (last good read, error count, last
error) on the gateway's retained status topic. A real asyncua server goes away and comes back;
a node that does not exist counts errors while the source's other values still come in."""

from __future__ import annotations

import datetime as dt
import math
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge.config import GatewayConfig
from edge.gateway import Gateway
from edge.sources import redacted
from tests.edge.conftest import OpcUaServer
from tests.edge.test_opcua import gateway_config

pytestmark = pytest.mark.integration


def reports(subscriber: Any) -> list[dict[str, dict[str, Any]]]:
    """Every health report seen so far: device -> its source's entry."""
    found = []
    for device, payload, _ in list(subscriber.statuses):
        if device == "gw-opcua" and payload.startswith(b"{"):
            body = orjson.loads(payload)
            assert body["status"] == "online"
            found.append({entry["device"]: entry for entry in body["sources"]})
    return found


def when(stamp: str | None) -> float:
    """Epoch seconds of a reported time; never (-inf) for null."""
    return -math.inf if stamp is None else dt.datetime.fromisoformat(stamp).timestamp()


def test_a_source_that_goes_away_and_comes_back_is_reported_on_the_status_topic(
    tmp_path: Path, mqtt_url: str, topic_prefix: str, opcua_server: OpcUaServer,
    subscriber_factory: Any,
) -> None:  # fmt: skip
    raw = gateway_config(tmp_path, mqtt_url, topic_prefix, opcua_server)
    config = GatewayConfig.model_validate({**raw, "status_interval": "0.3s"})
    status_topic = f"{topic_prefix}/demo-hq/gw-opcua/status"
    subscriber = subscriber_factory(mqtt_url, status_topic)
    gateway = Gateway(config)
    gateway.start()
    try:

        def latest(condition: Any) -> dict[str, dict[str, Any]]:
            assert subscriber.wait_for(lambda: any(map(condition, reports(subscriber))), 20)
            return next(r for r in reversed(reports(subscriber)) if condition(r))

        healthy = latest(lambda r: r["th-202"]["last_good"] is not None)
        assert healthy["th-202"]["errors"] == 0 and healthy["th-202"]["last_error"] is None
        assert healthy["th-202"]["kind"] == "opcua"
        # ac-201 reads one node that does not exist: errors, yet its good node keeps coming.
        partial = latest(lambda r: r["ac-201"]["errors"] >= 1 and r["ac-201"]["last_good"])
        assert "No.Such.Node" in partial["ac-201"]["last_error"]

        opcua_server.stop()
        gone_at = time.time()
        down = latest(
            lambda r: r["th-202"]["errors"] >= 2 and when(r["th-202"]["last_error_at"]) >= gone_at
        )
        assert opcua_server.url in down["th-202"]["last_error"]
        assert when(down["th-202"]["last_good"]) < when(down["th-202"]["last_error_at"])

        opcua_server.start()
        back = latest(
            lambda r: when(r["th-202"]["last_good"]) > when(r["th-202"]["last_error_at"]) >= gone_at
        )
        # The count and the last error are kept: what happened stays visible after recovery.
        assert back["th-202"]["errors"] >= down["th-202"]["errors"]
        assert opcua_server.url in back["th-202"]["last_error"]
    finally:
        gateway.stop()
    assert subscriber.wait_for(lambda: subscriber.statuses[-1][1] == b"offline", 5)
    subscriber.client.publish(status_topic, b"", qos=1, retain=True).wait_for_publish(5)


def test_a_password_in_a_source_url_is_not_reported() -> None:
    assert redacted("opc.tcp://plc:s3cret@10.0.3.7:4840/x") == "opc.tcp://plc:***@10.0.3.7:4840/x"
    assert redacted("opc.tcp://10.0.3.7:4840/x") == "opc.tcp://10.0.3.7:4840/x"
    assert redacted("opc.tcp://plc@10.0.3.7:4840/") == "opc.tcp://plc@10.0.3.7:4840/"
