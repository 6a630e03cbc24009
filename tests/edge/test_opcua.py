"""The gateway reading a real asyncua server on loopback and publishing to a real broker: node
ids mapped to the site's devices and metrics, scale and booleans, ts and seq, an unknown node
id (counted, the other nodes still published), and a server that goes away and comes back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from config import BUNDLED_DIR
from config.documents import ConfigError
from edge.config import GatewayConfig, load_gateway_config
from edge.gateway import Gateway
from tests.edge.conftest import OpcUaServer
from tests.support import wait_for

SITE_FILE = BUNDLED_DIR / "sites" / "demo-hq.yaml"


def gateway_config(tmp_path: Path, mqtt_url: str, prefix: str, server: OpcUaServer) -> dict:
    ns = server.ns
    return {
        "site": "demo-hq",
        "gateway": "gw-opcua",
        "broker": {"url": mqtt_url, "prefix": prefix},
        "buffer": {"path": str(tmp_path / "buffer.sqlite")},
        "batch": {"size": 10, "interval": "0.2s"},
        "sources": [
            {"kind": "opcua", "device": "th-202", "url": server.url, "interval": "0.2s",
             "timeout": "2s",
             "nodes": [
                 {"metric": "temperature", "node": f"ns={ns};s=Room202.Temperature",
                  "unit": "°C"},
                 {"metric": "humidity", "node": f"ns={ns};s=Room202.Humidity", "scale": 0.5},
             ]},
            {"kind": "opcua", "device": "ac-201", "url": server.url, "interval": "0.2s",
             "timeout": "2s",
             "nodes": [
                 {"metric": "occupied", "node": f"ns={ns};s=Ahu1.Running"},
                 {"metric": "hvac_mode", "node": f"ns={ns};s=No.Such.Node"},
             ]},
        ],
    }  # fmt: skip


@pytest.mark.integration
def test_nodes_are_read_stamped_and_published_and_survive_a_server_restart(
    tmp_path: Path, mqtt_url: str, topic_prefix: str, opcua_server: OpcUaServer,
    subscriber_factory,
) -> None:  # fmt: skip
    config = GatewayConfig.model_validate(
        gateway_config(tmp_path, mqtt_url, topic_prefix, opcua_server)
    )
    subscriber = subscriber_factory(mqtt_url, f"{topic_prefix}/demo-hq/+/telemetry")
    started = time.time()
    gateway = Gateway(config)
    gateway.start()
    try:
        assert subscriber.wait_for(lambda: len(subscriber.seqs("ac-201")) >= 3, timeout=20)
        opcua_server.set("Temperature", 27.5)
        assert subscriber.wait_for(
            lambda: ("th-202", {"temperature": 27.5, "humidity": 27.75}) in subscriber.values,
            timeout=10,
        )
        # The server goes away: reads fail and are counted; it comes back on the same port.
        opcua_server.stop()
        errors = gateway.stats()["sample_errors"]
        wait_for(lambda: gateway.stats()["sample_errors"] >= errors + 4, 20, "failed reads")
        opcua_server.start()
        opcua_server.set("Temperature", 19.0)
        assert subscriber.wait_for(
            lambda: ("th-202", {"temperature": 19.0, "humidity": 27.75}) in subscriber.values,
            timeout=20,
        )
    finally:
        gateway.stop()
    finished = time.time()
    assert ("th-202", {"temperature": 25.25, "humidity": 27.75}) in subscriber.values
    # The unknown node is left out, the boolean is 1; no reading of ac-201 carries hvac_mode.
    assert {tuple(v) for d, v in subscriber.values if d == "ac-201"} == {("occupied",)}
    assert {v["occupied"] for d, v in subscriber.values if d == "ac-201"} == {1.0}
    subscriber.check_once_in_order(("th-202", "ac-201"), started, finished)
    assert {d for d, _ in subscriber.values} == {"th-202", "ac-201"}


def write_config(tmp_path: Path, sources: str) -> Path:
    path = tmp_path / "gw.yaml"
    path.write_text(
        f"site: demo-hq\ngateway: gw\nsite_file: {SITE_FILE}\nbuffer: {{path: b.sqlite}}\n"
        f"sources:\n{sources}",
        encoding="utf-8",
    )
    return path


def test_a_unit_other_than_the_site_models_is_an_error_naming_file_path_and_line(
    tmp_path: Path,
) -> None:
    path = write_config(
        tmp_path,
        "  - kind: opcua\n    device: em-main\n    url: opc.tcp://10.0.0.5:4840\n    nodes:\n"
        "      - {metric: energy_kwh, node: 'ns=2;s=Meter.Energy', unit: Wh}\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_gateway_config(path)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}: sources[0].nodes[0].unit: 'Wh' is not the site model's unit of "
        "em-main.energy_kwh ('kWh') (line 10)"
    ]


def test_a_malformed_node_id_and_url_are_errors(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        "  - kind: opcua\n    device: th-202\n    url: http://10.0.0.5\n    nodes:\n"
        "      - {metric: temperature, node: Room202.Temperature}\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_gateway_config(path)
    assert [(p.where, p.line) for p in caught.value.problems] == [
        ("sources[0].url", 8),
        ("sources[0].nodes[0].node", 10),
    ]
    assert "not an OPC UA node id" in str(caught.value.problems[1])


@pytest.mark.integration
def test_subscribed_nodes_publish_a_change_before_the_next_poll_and_resubscribe_after_a_restart(
    tmp_path: Path, mqtt_url: str, topic_prefix: str, opcua_server: OpcUaServer,
    subscriber_factory,
) -> None:  # fmt: skip
    """`mode: subscribe`: a data change reaches the broker within the subscription's publishing
    interval, long before the next poll (60 s here); the poll still runs, so an unchanging
    value keeps arriving and the stale-data rules stay quiet; after the server restarts the
    gateway subscribes again."""
    raw = gateway_config(tmp_path, mqtt_url, topic_prefix, opcua_server)
    source = raw["sources"][0]
    source.update(mode="subscribe", interval="60s", publishing_interval="0.1s")
    raw["sources"] = [source]
    config = GatewayConfig.model_validate(raw)
    subscriber = subscriber_factory(mqtt_url, f"{topic_prefix}/demo-hq/+/telemetry")
    gateway = Gateway(config)
    gateway.start()
    try:
        # The first poll at start; the subscription's initial values are the same.
        assert subscriber.wait_for(
            lambda: ("th-202", {"temperature": 25.25, "humidity": 27.75}) in subscriber.values,
            timeout=20,
        )
        wait_for(lambda: gateway.samplers[0].subscribed, 20, "subscription made")
        opcua_server.set("Temperature", 28.5)
        assert subscriber.wait_for(
            lambda: ("th-202", {"temperature": 28.5}) in subscriber.values, timeout=10
        )
        opcua_server.stop()
        wait_for(lambda: not gateway.samplers[0].subscribed, 20, "subscription lost")
        opcua_server.start()
        wait_for(lambda: gateway.samplers[0].subscribed, 30, "subscribed again")
        opcua_server.set("Humidity", 40.0)
        assert subscriber.wait_for(
            lambda: ("th-202", {"humidity": 20.0}) in subscriber.values, timeout=10
        )
    finally:
        gateway.stop()


def test_subscribe_mode_needs_a_publishing_interval_shorter_than_the_poll(
    tmp_path: Path, opcua_server: OpcUaServer
) -> None:
    raw = gateway_config(tmp_path, "mqtt://127.0.0.1:1883", "cw", opcua_server)
    raw["sources"][0].update(mode="subscribe", interval="1s", publishing_interval="5s")
    with pytest.raises(ValueError, match="publishing_interval"):
        GatewayConfig.model_validate(raw)
