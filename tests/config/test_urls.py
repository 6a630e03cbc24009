"""Broker URLs (config/urls.py): the one parser the service, the edge gateway and the simulator
use, every bad input refused with a reason, and the password kept out of messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.urls import MqttEndpoint, MqttUrlError


def test_defaults_credentials_and_protocol() -> None:
    assert MqttEndpoint.parse("mqtt://127.0.0.1") == MqttEndpoint("127.0.0.1", 1883)
    assert MqttEndpoint.parse("tcp://broker:1884/") == MqttEndpoint("broker", 1884)
    url = MqttEndpoint.parse("mqtts://ingest:s%40cret@broker.example:8884?protocol=311")
    assert (url.host, url.port, url.username, url.password) == (
        "broker.example",
        8884,
        "ingest",
        "s@cret",
    )
    assert url.tls and url.protocol == "311"
    assert MqttEndpoint.parse("mqtts://broker.example").port == 8883
    assert MqttEndpoint.parse("mqtt://[::1]:1883").host == "::1"
    assert MqttEndpoint.parse("mqtt://user@host").username == "user"


def test_tls_files() -> None:
    url = MqttEndpoint.parse("mqtts://host?ca=/etc/cw/ca.pem&cert=c.pem&key=c.key")
    assert (url.ca_file, url.cert_file, url.key_file) == (
        Path("/etc/cw/ca.pem"),
        Path("c.pem"),
        Path("c.key"),
    )
    moved = url.relative_to(Path("/srv/gw"))
    assert (moved.ca_file, moved.cert_file, moved.key_file) == (
        Path("/etc/cw/ca.pem"),
        Path("/srv/gw/c.pem"),
        Path("/srv/gw/c.key"),
    )


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://broker:1883", "scheme 'http://': use mqtt:// or mqtts://"),
        ("ssl://broker:8883", "scheme 'ssl://'"),
        ("broker:1883", "scheme 'broker://'"),
        ("127.0.0.1:1883", "no scheme"),
        ("mqtt://", "no host"),
        ("mqtt://:1883", "no host"),
        ("mqtt://user:pw@", "no host"),
        ("mqtt://broker:port", "the port must be a number from 1 to 65535"),
        ("mqtt://broker:0", "the port must be a number"),
        ("mqtt://broker:65536", "the port must be a number"),
        ("mqtt://broker:", "the port must be a number"),
        ("mqtt://broker/cw", "a broker URL has no path"),
        ("mqtt://broker#x", "a broker URL has no path"),
        ("mqtt://:pw@broker", "a password needs a user name"),
        ("mqtt://broker?protocol=4", "protocol must be 5 or 311, not '4'"),
        ("mqtt://broker?protocol", "protocol= is empty"),
        ("mqtt://broker?protocol=5&protocol=311", "protocol= is given twice"),
        ("mqtt://broker?qos=1", "unknown parameter 'qos' (known: protocol, ca, cert, key)"),
        ("mqtt://broker?ca=ca.pem", "ca= is a TLS option: use mqtts://"),
        ("mqtts://broker?cert=c.pem", "a client certificate needs both cert= and key="),
        ("mqtts://broker?ca=ca.pem&key=c.key", "a client certificate needs both cert= and key="),
    ],
)
def test_bad_urls_are_refused_with_a_reason(url: str, reason: str) -> None:
    with pytest.raises(MqttUrlError, match="^MQTT URL .*: " + _literal(reason)):
        MqttEndpoint.parse(url)


def _literal(text: str) -> str:
    import re

    return re.escape(text)


def test_the_password_stays_out_of_errors_and_logs() -> None:
    with pytest.raises(MqttUrlError) as caught:
        MqttEndpoint.parse("mqtt://ingest:hunter2@broker?bad=1")
    assert "hunter2" not in str(caught.value) and "ingest:***@broker" in str(caught.value)
    url = MqttEndpoint.parse("mqtts://ingest:hunter2@broker?protocol=311&ca=/ca.pem")
    assert url.redacted() == "mqtts://ingest:***@broker:8883?protocol=311&ca=/ca.pem"
    assert "hunter2" not in repr(url)
    assert MqttEndpoint.parse("mqtt://u@h").redacted() == "mqtt://u@h:1883"


@pytest.mark.parametrize(
    "url",
    [
        "mqtt://h:1883",
        "mqtts://a%20b:p%40ss%3Aw@[::1]:8884?protocol=311&ca=/x%20y/ca.pem&cert=c+d.pem&key=k",
        "mqtt://user@host:1?protocol=311",
    ],
)
def test_url_round_trips(url: str) -> None:
    endpoint = MqttEndpoint.parse(url)
    assert MqttEndpoint.parse(endpoint.url()) == endpoint


class Client:
    """Records what configure() asks of a paho client."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[object, ...]]] = []

    def username_pw_set(self, username: str | None, password: str | None = None) -> None:
        self.calls.append(("login", (username, password)))

    def tls_set(
        self, ca_certs: str | None = None, certfile: str | None = None, keyfile: str | None = None
    ) -> None:
        self.calls.append(("tls", (ca_certs, certfile, keyfile)))


def test_configure_logs_in_and_applies_tls(tmp_path: Path) -> None:
    for name in ("ca.pem", "c.pem", "c.key"):
        (tmp_path / name).write_text("-")
    client = Client()
    MqttEndpoint.parse("mqtt://u:p@h").configure(client)
    assert client.calls == [("login", ("u", "p"))]
    client = Client()
    url = f"mqtts://h?ca={tmp_path}/ca.pem&cert={tmp_path}/c.pem&key={tmp_path}/c.key"
    MqttEndpoint.parse(url).configure(client)
    assert client.calls == [
        ("tls", (f"{tmp_path}/ca.pem", f"{tmp_path}/c.pem", f"{tmp_path}/c.key"))
    ]
    client = Client()
    MqttEndpoint.parse("mqtts://h").configure(client)
    assert client.calls == [("tls", (None, None, None))]  # the system's CAs


def test_configure_names_a_missing_tls_file(tmp_path: Path) -> None:
    with pytest.raises(MqttUrlError, match=r"ca=.*missing\.pem: no such file"):
        MqttEndpoint.parse(f"mqtts://u:pw@h?ca={tmp_path}/missing.pem").configure(Client())


def test_configure_names_files_tls_refuses(tmp_path: Path) -> None:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    (tmp_path / "ca.pem").write_text("not a certificate\n")
    client = paho.Client(CallbackAPIVersion.VERSION2)
    with pytest.raises(MqttUrlError, match="TLS files refused"):
        MqttEndpoint.parse(f"mqtts://h?ca={tmp_path}/ca.pem").configure(client)
