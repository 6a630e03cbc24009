"""The gateway reading a BACnet/IP device simulated by bacpypes3 in the test, on loopback (the
device on 127.0.0.2, the gateway's client on 127.0.0.3, each on a free UDP port so neither
touches 47808), and publishing to a real broker: analog and binary present values mapped to the
site's devices and metrics, ts and seq, an unknown object (counted, the others still
published), a device instance that is not the one at the address, and a device that goes away
and comes back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from config import BUNDLED_DIR
from config.documents import ConfigError
from edge.config import GatewayConfig, load_gateway_config
from edge.gateway import Gateway
from tests.edge.conftest import BacnetDevice, free_udp_port
from tests.support import wait_for

pytestmark = pytest.mark.integration

SITE_FILE = BUNDLED_DIR / "sites" / "demo-hq.yaml"


def test_present_values_are_read_stamped_published_and_survive_a_device_restart(
    tmp_path: Path, mqtt_url: str, topic_prefix: str, bacnet_device: BacnetDevice,
    subscriber_factory,
) -> None:  # fmt: skip
    local = f"127.0.0.3:{free_udp_port('127.0.0.3')}"
    common = {"kind": "bacnet_ip", "address": bacnet_device.address, "device_instance": 1001,
              "local_address": local, "interval": "0.2s", "timeout": "1s"}  # fmt: skip
    config = GatewayConfig.model_validate(
        {
            "site": "demo-hq",
            "gateway": "gw-bacnet",
            "broker": {"url": mqtt_url, "prefix": topic_prefix},
            "buffer": {"path": str(tmp_path / "buffer.sqlite")},
            "batch": {"size": 10, "interval": "0.2s"},
            "sources": [
                {**common, "device": "th-202", "objects": [
                    {"metric": "temperature", "object": "analog-input,1", "unit": "°C"},
                    {"metric": "humidity", "object": "analog-value,2", "decimals": 1}]},
                {**common, "device": "ac-201", "objects": [
                    {"metric": "occupied", "object": "binary-value,3"},
                    {"metric": "hvac_mode", "object": "analog-value,99"}]},
                # The address answers, but as device 1001: this source reads nothing.
                {**common, "device": "th-203", "device_instance": 1002, "objects": [
                    {"metric": "temperature", "object": "analog-input,1"}]},
            ],
        }
    )  # fmt: skip
    subscriber = subscriber_factory(mqtt_url, f"{topic_prefix}/demo-hq/+/telemetry")
    started = time.time()
    gateway = Gateway(config)
    gateway.start()
    try:
        assert subscriber.wait_for(lambda: len(subscriber.seqs("ac-201")) >= 3, timeout=20)
        bacnet_device.set("temperature", 27.25)
        bacnet_device.set("occupied", "inactive")
        assert subscriber.wait_for(
            lambda: (
                ("th-202", {"temperature": 27.25, "humidity": 51.0}) in subscriber.values
                and ("ac-201", {"occupied": 0.0}) in subscriber.values
            ),
            timeout=10,
        )
        # The device goes away: reads fail and are counted; it comes back at the same address.
        bacnet_device.stop()
        th202 = gateway.samplers[0]
        errors = th202.errors
        wait_for(lambda: th202.errors >= errors + 2, 20, "failed reads")
        bacnet_device.set("temperature", 19.5)
        bacnet_device.start()
        assert subscriber.wait_for(
            lambda: ("th-202", {"temperature": 19.5, "humidity": 51.0}) in subscriber.values,
            timeout=20,
        )
    finally:
        gateway.stop()
    finished = time.time()
    assert ("th-202", {"temperature": 24.5, "humidity": 51.0}) in subscriber.values
    assert ("ac-201", {"occupied": 1.0}) in subscriber.values
    assert {tuple(v) for d, v in subscriber.values if d == "ac-201"} == {("occupied",)}
    assert "th-203" not in {d for d, _ in subscriber.values}
    assert gateway.samplers[1].errors >= 3  # analog-value,99 at every sample
    assert gateway.samplers[2].errors >= 3  # device 1002 is not at the address
    subscriber.check_once_in_order(("th-202", "ac-201"), started, finished)


def test_bacnet_mapping_errors_name_file_path_and_line(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text(
        f"site: demo-hq\ngateway: gw\nsite_file: {SITE_FILE}\nbuffer: {{path: b.sqlite}}\n"
        "sources:\n"
        "  - kind: bacnet_ip\n    device: th-202\n    address: 192.168.1.60\n"
        "    device_instance: 1001\n    objects:\n"
        "      - {metric: temperature, object: 'analog-input,1', unit: degF}\n"
        "      - {metric: humidity, object: 'analog-value,2', unit: '%'}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_gateway_config(path)
    assert [str(p) for p in caught.value.problems] == [
        f"{path}: sources[0].objects[0].unit: 'degF' is not the site model's unit of "
        "th-202.temperature ('°C') (line 11)"
    ]
    path.write_text(
        path.read_text("utf-8").replace("analog-value,2", "multi-state-value,2"), "utf-8"
    )
    with pytest.raises(ConfigError) as caught:
        load_gateway_config(path)
    assert [(p.where, p.line) for p in caught.value.problems] == [
        ("sources[0].objects[1].object", 12)
    ]


@pytest.mark.parametrize(
    ("name", "kind"), [("bacnet-gateway.yaml", "bacnet_ip"), ("opcua-gateway.yaml", "opcua")]
)
def test_the_bundled_examples_are_valid(name: str, kind: str) -> None:
    config, site = load_gateway_config(SITE_FILE.parents[1] / "edge" / name)
    assert site is not None and config.timezone == "Asia/Shanghai"
    assert {source.kind for source in config.sources} == {kind}


def test_cov_changes_arrive_before_the_next_poll_and_resubscribe_after_a_device_restart(
    tmp_path: Path, mqtt_url: str, topic_prefix: str, bacnet_device: BacnetDevice,
    subscriber_factory,
) -> None:  # fmt: skip
    """`mode: cov`: SubscribeCOV per object; a notification is published at once, long before
    the next poll (60 s); a renewal that gets no answer (every half lifetime) notices the
    device gone; once it is back it has forgotten the subscriptions, and the gateway makes
    them again."""
    local = f"127.0.0.3:{free_udp_port('127.0.0.3')}"
    config = GatewayConfig.model_validate(
        {
            "site": "demo-hq",
            "gateway": "gw-bacnet",
            "broker": {"url": mqtt_url, "prefix": topic_prefix},
            "buffer": {"path": str(tmp_path / "buffer.sqlite")},
            "batch": {"size": 10, "interval": "0.2s"},
            "sources": [
                {"kind": "bacnet_ip", "address": bacnet_device.address, "device_instance": 1001,
                 "local_address": local, "mode": "cov", "cov_lifetime": "4s", "interval": "60s",
                 "timeout": "1s",
                 "device": "th-202", "objects": [
                     {"metric": "temperature", "object": "analog-input,1", "unit": "°C"},
                     {"metric": "humidity", "object": "analog-value,2", "decimals": 1}]},
            ],
        }
    )  # fmt: skip
    subscriber = subscriber_factory(mqtt_url, f"{topic_prefix}/demo-hq/+/telemetry")
    gateway = Gateway(config)
    gateway.start()
    sampler = gateway.samplers[0]
    try:
        assert subscriber.wait_for(
            lambda: ("th-202", {"temperature": 24.5, "humidity": 51.0}) in subscriber.values,
            timeout=20,
        )
        wait_for(lambda: sampler.subscribed, 20, "COV subscriptions made")
        bacnet_device.set("temperature", 26.75)
        assert subscriber.wait_for(
            lambda: ("th-202", {"temperature": 26.75}) in subscriber.values, timeout=10
        )
        bacnet_device.stop()
        wait_for(lambda: not sampler.subscribed, 30, "the device's loss noticed")
        bacnet_device.start()
        wait_for(lambda: sampler.subscribed, 30, "subscribed again")
        bacnet_device.set("humidity", 60.0)
        assert subscriber.wait_for(
            lambda: ("th-202", {"humidity": 60.0}) in subscriber.values, timeout=10
        )
    finally:
        gateway.stop()
