"""The gateway reading a real pymodbus TCP server and publishing to a real broker: register types,
scale and offset, seq, batching, and the retained status topic."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from config import BUNDLED_DIR
from edge.config import GatewayConfig
from edge.gateway import Gateway

pytestmark = pytest.mark.integration

SITE_FILE = BUNDLED_DIR / "sites" / "demo-hq.yaml"


def words(fmt: str, value: float) -> list[int]:
    """Big-endian 16-bit words of `value` packed as `fmt` (struct format)."""
    raw = struct.pack(">" + fmt, value)
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def test_registers_are_read_scaled_stamped_and_published(
    tmp_path: Path, mqtt_url: str, topic_prefix: str, modbus_server, subscriber_factory
) -> None:
    server = modbus_server
    server.holding.update(dict(enumerate(words("I", 12345678))))  # uint32 at 0..1
    server.holding.update({10 + i: w for i, w in enumerate(words("f", 48.25))})  # float32 at 10
    server.input[5] = words("h", -215)[0]  # int16 at input 5
    config = GatewayConfig.model_validate(
        {
            "site": "demo-hq",
            "gateway": "gw-test",
            "broker": {"url": mqtt_url, "prefix": topic_prefix},
            "buffer": {"path": str(tmp_path / "buffer.sqlite")},
            "batch": {"size": 10, "interval": "0.2s"},
            "sources": [
                {"kind": "modbus_tcp", "device": "em-main", "host": "127.0.0.1",
                 "port": server.port, "interval": "0.1s",
                 "registers": [{"metric": "energy_kwh", "address": 0, "type": "uint32",
                                "scale": 0.01}]},
                {"kind": "modbus_tcp", "device": "th-201", "host": "127.0.0.1",
                 "port": server.port, "interval": "0.1s",
                 "registers": [
                     {"metric": "temperature", "table": "input", "address": 5, "type": "int16",
                      "scale": 0.1, "offset": 0.5, "decimals": 2},
                     {"metric": "humidity", "address": 10, "type": "float32"}]},
            ],
        }
    )  # fmt: skip
    subscriber = subscriber_factory(mqtt_url, f"{topic_prefix}/#")
    gateway = Gateway(config)
    gateway.start()
    try:
        assert subscriber.wait_for(lambda: len(subscriber.seqs("th-201")) >= 5, timeout=10)
        server.holding.update(dict(enumerate(words("I", 12345999))))
        assert subscriber.wait_for(
            lambda: any(v.get("energy_kwh") == 123459.99 for _, v in subscriber.values), timeout=10
        )
    finally:
        gateway.stop()
    by_device = {device: values for device, values in subscriber.values}
    assert by_device["th-201"] == {"temperature": -21.0, "humidity": 48.25}
    assert any(v == {"energy_kwh": 123456.78} for d, v in subscriber.values if d == "em-main")
    for device in ("th-201", "em-main"):
        seqs = subscriber.seqs(device)
        assert seqs == list(range(1, len(seqs) + 1))  # every reading once, in order
    assert subscriber.batches > 0 and subscriber.batches < len(subscriber.readings)
    assert ("gw-test", b"online") in [(d, p) for d, p, _ in subscriber.statuses]
    assert subscriber.wait_for(lambda: subscriber.statuses[-1][:2] == ("gw-test", b"offline"), 5)
    assert gateway.stats()["sample_errors"] == 0
    status = f"{topic_prefix}/demo-hq/gw-test/status"
    subscriber.client.publish(status, b"", qos=1, retain=True).wait_for_publish(5)  # tidy up


def test_site_file_checks_devices_and_metrics(tmp_path: Path) -> None:
    from config.documents import ConfigError
    from edge.config import load_gateway_config

    path = tmp_path / "gw.yaml"
    path.write_text(
        f"site: demo-hq\ngateway: gw\nsite_file: {SITE_FILE}\nbuffer: {{path: b.sqlite}}\n"
        "sources:\n  - {kind: simulated, device: th-201, metrics: {co2: {mean: 500}}}\n"
    )
    with pytest.raises(ConfigError, match=r"gw\.yaml: sources\[0\]: .* has no metric 'co2'"):
        load_gateway_config(path)
    path.write_text("site: demo-hq\ngateway: gw\nbuffer: {path: b.sqlite}\nsources: []\nextra: 1\n")
    with pytest.raises(ConfigError) as caught:
        load_gateway_config(path)
    assert [(p.where, p.line) for p in caught.value.problems] == [("sources", 4), ("extra", 5)]


def test_the_bundled_example_configuration_is_valid() -> None:
    from edge.config import load_gateway_config

    path = SITE_FILE.parents[1] / "edge" / "demo-gateway.yaml"
    config, site = load_gateway_config(path)
    assert site is not None and config.timezone == "Asia/Shanghai"
    assert {source.kind for source in config.sources} == {"modbus_tcp", "simulated"}
