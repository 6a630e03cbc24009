"""The gateway with no broker to talk to: it keeps sampling into its buffer, and past the cap it
drops the oldest readings, counted."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from clausewatch.cli import main
from edge.config import GatewayConfig
from edge.gateway import Gateway


def test_without_a_broker_the_buffer_fills_to_its_cap_and_counts_what_it_drops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = GatewayConfig.model_validate(
        {
            "site": "demo-hq",
            "gateway": "gw-test",
            "broker": {"url": "mqtt://127.0.0.1:9"},  # discard port: nothing answers
            "buffer": {"path": str(tmp_path / "b.sqlite"), "cap": 40},
            "sources": [{"kind": "simulated", "device": "th-201", "interval": "0.01s",
                         "metrics": {"temperature": {"mean": 22}}}],
        }
    )  # fmt: skip
    gateway = Gateway(config)
    gateway.start()
    deadline = time.monotonic() + 10
    while gateway.stats()["dropped"] < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    with caplog.at_level(logging.WARNING, logger="clausewatch.edge"):
        gateway.stop(drain_timeout=0)
    stats = gateway.stats()
    assert stats["buffered"] == 40 and stats["dropped"] >= 20 and not stats["connected"]
    assert stats["sampled"] == stats["buffered"] + stats["dropped"]
    assert "oldest reading(s) dropped" in caplog.text
    # The newest are kept: the buffer holds the last 40 seqs.
    from edge.buffer import Buffer

    buffer = Buffer(tmp_path / "b.sqlite", cap=40)
    seqs = [row.seq for row in buffer.oldest(100)]
    assert seqs == list(range(stats["sampled"] - 39, stats["sampled"] + 1))


def test_edge_run_refuses_a_broken_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("site: demo-hq\ngateway: gw\nbuffer: {path: b.sqlite}\nsources: []\n")
    assert main(["edge", "run", str(path)]) == 2
    assert "sources" in capsys.readouterr().err


def test_an_unreachable_modbus_device_is_counted_and_sampling_goes_on(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = GatewayConfig.model_validate(
        {
            "site": "demo-hq",
            "gateway": "gw-test",
            "broker": {"url": "mqtt://127.0.0.1:9"},
            "buffer": {"path": str(tmp_path / "b.sqlite")},
            "sources": [
                {"kind": "modbus_tcp", "device": "em-main", "host": "127.0.0.1", "port": port,
                 "interval": "0.05s", "timeout": "0.2s",
                 "registers": [{"metric": "energy_kwh", "address": 0}]},
                {"kind": "simulated", "device": "th-201", "interval": "0.05s",
                 "metrics": {"temperature": {"mean": 22}}},
            ],
        }
    )  # fmt: skip
    gateway = Gateway(config)
    gateway.start()
    deadline = time.monotonic() + 10
    # Both counts, not the errors alone: on a loaded machine three failed connects can come
    # before the simulated source's thread has had its third turn.
    while time.monotonic() < deadline and (
        gateway.stats()["sample_errors"] < 3 or gateway.stats()["sampled"] < 3
    ):
        time.sleep(0.05)
    gateway.stop(drain_timeout=0)
    stats = gateway.stats()
    assert stats["sample_errors"] >= 3
    assert stats["sampled"] >= 3  # the other source was not held up
