"""`mqtts://` end to end: a Mosquitto of this test's own with two TLS listeners (server
certificate only; client certificate required), certificates from a test CA made here with the
`openssl` command, and the project's three MQTT clients connecting through the one URL parser:
the service's subscriber (ingest/mqtt.py, its own network thread over paho's TLS socket), the edge
gateway's publisher and the simulator's publisher."""

from __future__ import annotations

import shutil
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from clausewatch.embedded import free_port
from edge.config import load_gateway_config
from edge.gateway import Gateway
from ingest.mqtt import IngressQueue, MqttSubscriber, ReceivedMessage
from simulators.publish import Publisher, PublishError
from tests.support import MOSQUITTO, Mosquitto, make_test_pki, run_as_root_line, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="needs Mosquitto"),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command"),
]


@dataclass
class TlsBroker:
    folder: Path  # ca.pem, server.pem/.key, client.pem/.key
    server_tls_port: int  # TLS, no client certificate asked
    mutual_tls_port: int  # TLS, a client certificate signed by the CA required


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[TlsBroker]:
    make_test_pki(tmp_path)
    broker = TlsBroker(tmp_path, free_port(), free_port())
    tls = f"cafile {tmp_path}/ca.pem\ncertfile {tmp_path}/server.pem\nkeyfile {tmp_path}/server.key"
    conf = textwrap.dedent(f"""\
        allow_anonymous true
        persistence false
        listener {broker.server_tls_port} 127.0.0.1
        {{tls}}
        listener {broker.mutual_tls_port} 127.0.0.1
        {{tls}}
        require_certificate true
        """).replace("{tls}", tls)  # fmt: skip
    (tmp_path / "mosquitto.conf").write_text(conf + run_as_root_line())
    mosquitto = Mosquitto(
        tmp_path / "mosquitto.conf",
        [broker.server_tls_port, broker.mutual_tls_port],
        tmp_path / "mosquitto.log",
    )
    mosquitto.start()
    try:
        yield broker
    finally:
        mosquitto.stop()


def test_subscriber_gateway_and_simulator_speak_mqtts(tls_broker: TlsBroker) -> None:
    folder = tls_broker.folder
    server_tls = f"mqtts://127.0.0.1:{tls_broker.server_tls_port}"
    prefix = f"tls{uuid.uuid4().hex[:6]}"

    # The service's subscriber, with a client certificate on the listener that requires one.
    inbox = IngressQueue(1000)
    subscriber = MqttSubscriber(
        f"mqtts://127.0.0.1:{tls_broker.mutual_tls_port}"
        f"?ca={folder}/ca.pem&cert={folder}/client.pem&key={folder}/client.key",
        f"cw-tls-{uuid.uuid4().hex[:8]}",
        [f"{prefix}/#"],
        inbox,
    )
    subscriber.start()
    received: list[ReceivedMessage] = []

    def arrived(topic: str, count: int = 1) -> bool:
        batch = inbox.get_many(1000, timeout=0.1)
        subscriber.ack([message.token for message in batch])
        received.extend(batch)
        return sum(message.topic == topic for message in received) >= count

    try:
        assert subscriber.wait_connected(10), "the subscriber did not connect over TLS"

        # The simulator's publisher: enough messages for many TLS records per socket read.
        topic = f"{prefix}/demo-hq/sim-1/telemetry"
        payloads = [b'{"seq": %d, "metrics": {"t": 1}, "pad": "%s"}' % (n, b"x" * 200)
                    for n in range(2000)]  # fmt: skip
        with Publisher(f"{server_tls}?ca={folder}/ca.pem", connect_timeout=10) as publisher:
            for payload in payloads:
                publisher.publish(topic, payload)
        wait_for(lambda: arrived(topic, len(payloads)), 20, "the simulator's messages")
        assert [m.payload for m in received if m.topic == topic] == payloads

        # The edge gateway's publisher, configured by a file whose ca= is relative to it.
        (folder / "gw.yaml").write_text(
            textwrap.dedent(f"""\
                site: demo-hq
                gateway: gw-tls
                broker: {{url: "{server_tls}?ca=ca.pem", prefix: {prefix}}}
                buffer: {{path: gw.sqlite}}
                batch: {{size: 1, interval: 0.05s}}
                sources:
                  - {{kind: simulated, device: th-201, interval: 0.05s,
                      metrics: {{temperature: {{mean: 22}}}}}}
                """)
        )  # fmt: skip
        config, _ = load_gateway_config(folder / "gw.yaml")
        gateway = Gateway(config)
        gateway.start()
        try:
            wait_for(lambda: arrived(f"{prefix}/demo-hq/th-201/telemetry"), 10, "gateway reading")
        finally:
            gateway.stop(drain_timeout=1)
    finally:
        subscriber.stop()
    assert f"{prefix}/demo-hq/gw-tls/status" in {message.topic for message in received}


def test_a_broker_the_ca_does_not_vouch_for_is_refused(tls_broker: TlsBroker) -> None:
    """Without `ca=` the system's CAs are used, and they do not know the test CA."""
    started = time.monotonic()
    with (
        pytest.raises(PublishError, match="no connection"),
        Publisher(f"mqtts://127.0.0.1:{tls_broker.server_tls_port}", connect_timeout=2),
    ):
        pass
    assert time.monotonic() - started < 10
