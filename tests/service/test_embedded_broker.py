"""The demo's embedded broker (amqtt, clausewatch/embedded.py) lets in only its logins, each with
its rights from the identity model: the demo's service only reads, its simulator publishes only
for the devices of the configured sites, and nobody else gets in, with or without a user name.
amqtt acknowledges a forbidden publish and drops it (it keeps the connection), and forwards one
client's messages in order: a forbidden message sent before an allowed one would arrive first."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clausewatch.embedded import EmbeddedBroker
from config import BUNDLED_DIR
from config.broker import derive_identities, simulator_identity
from config.files import load_config_dir
from tests.support import Client, mqtt_clients, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def connect() -> Iterator[Callable[..., Client]]:
    with mqtt_clients() as connect:
        yield connect


@pytest.fixture(scope="module")
def demo_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    sites = load_config_dir(BUNDLED_DIR).sites
    service = derive_identities(sites, [], "cw")[0]
    broker = EmbeddedBroker(
        tmp_path_factory.mktemp("amqtt"), logins=[service, simulator_identity(sites, "cw")]
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def anonymous(url: str, login: str = "") -> str:
    """`url` with `login` (user[:password]) instead of its own."""
    scheme, rest = url.split("://")
    return f"{scheme}://{login + '@' if login else ''}{rest.split('@', 1)[1]}"


def test_only_its_logins_get_in(
    demo_broker: EmbeddedBroker, connect: Callable[..., Client]
) -> None:
    service = demo_broker.url_for("clausewatch")
    for url in (
        anonymous(service),
        anonymous(service, "clausewatch"),  # a user name without the password
        anonymous(service, "clausewatch:guessed"),
        anonymous(service, "someone:else"),
    ):
        assert connect(url).refused is not None, url
    assert connect(service).refused is None
    assert connect(demo_broker.url_for("clausewatch-simulator")).refused is None
    assert demo_broker.url == service
    assert "127.0.0.1" in service
    assert (demo_broker.data_dir / "amqtt-passwords").stat().st_mode & 0o777 == 0o600


def test_the_service_reads_and_the_simulator_publishes_for_the_sites_devices_only(
    demo_broker: EmbeddedBroker, connect: Callable[..., Client]
) -> None:
    service = connect(demo_broker.url_for("clausewatch"), subscribe="cw/#")
    simulator = connect(demo_broker.url_for("clausewatch-simulator"))
    connect(demo_broker.url_for("clausewatch")).publish("cw/demo-hq/th-201/telemetry")
    for topic in ("cw/other-site/th-201/telemetry", "cw/demo-hq/gw-b1/status", "cw/x", "other"):
        simulator.publish(topic)  # acknowledged (MQTT 3.1.1), and dropped
    allowed = ["cw/demo-hq/th-202/event", "cw/demo-hq/th-201/telemetry"]
    for topic in allowed:
        simulator.publish(topic)
    wait_for(lambda: len(service.topics()) == 2, 20, "the simulator's messages")
    assert service.topics() == allowed


def test_the_simulator_may_not_subscribe(
    demo_broker: EmbeddedBroker, connect: Callable[..., Client]
) -> None:
    simulator = connect(demo_broker.url_for("clausewatch-simulator"))
    reasons: list[object] = []
    simulator.client.on_subscribe = lambda c, u, mid, codes, props: reasons.extend(codes)
    simulator.client.subscribe("cw/#", qos=1)
    wait_for(lambda: reasons, 10, "SUBACK")
    assert [getattr(code, "is_failure", None) for code in reasons] == [True]


def test_without_logins_one_login_may_do_everything(
    tmp_path: Path, connect: Callable[..., Client]
) -> None:
    """The tests' broker on a machine without Mosquitto: any topic, but still no anonymous."""
    broker = EmbeddedBroker(tmp_path)
    broker.start()
    try:
        assert connect(anonymous(broker.url)).refused is not None
        watcher = connect(broker.url, subscribe="#")
        connect(broker.url).publish("anything/at/all")
        wait_for(watcher.topics, 20, "the message")
        assert watcher.topics() == ["anything/at/all"]
    finally:
        broker.stop()
