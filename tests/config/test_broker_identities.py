"""Broker logins derived from the site model (config/broker.py), without a broker: who gets a
login, what each may publish and read, and the Mosquitto files' text. The files at work in a real
Mosquitto: tests/service/test_broker_files.py."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest

from config import BUNDLED_DIR
from config.broker import (
    GatewayRef,
    Identity,
    IdentityError,
    TlsListener,
    derive_identities,
    mosquitto_acl,
    mosquitto_conf,
    mosquitto_password_hash,
    new_password,
)
from rules.site import SiteModel


def site(site_id: str, *devices: str) -> SiteModel:
    return SiteModel.model_validate(
        {
            "site": {"id": site_id, "name": site_id, "timezone": "Asia/Shanghai"},
            "spaces": [{"id": "b1", "type": "building"}],
            "devices": [
                {"id": d, "space": "b1", "metrics": {"temperature": {"unit": "°C"}}}
                for d in devices
            ],
        }
    )


SITES = {"hq": site("hq", "th-1", "th-2"), "annex": site("annex", "th-1")}


def by_username(identities: list[Identity]) -> dict[str, Identity]:
    return {identity.username: identity for identity in identities}


def test_each_device_publishes_only_its_own_topics_and_reads_nothing() -> None:
    logins = by_username(derive_identities(SITES, [], "cw"))
    assert logins["hq/th-1"] == Identity("device", "hq", "th-1", "hq/th-1", ("cw/hq/th-1/#",), ())
    assert logins["annex/th-1"].publish == ("cw/annex/th-1/#",)  # same id, other site: own login
    assert logins["hq/th-2"].subscribe == ()


def test_the_service_only_reads_and_a_gateway_publishes_for_the_devices_of_its_site() -> None:
    identities = derive_identities(SITES, [GatewayRef("hq", "gw-1")], "cw")
    assert [i.username for i in identities] == [
        "clausewatch", "annex/th-1", "hq/th-1", "hq/th-2", "hq/gw-1",
    ]  # fmt: skip
    service, gateway = identities[0], identities[-1]
    assert (service.kind, service.publish, service.subscribe) == ("service", (), ("cw/#",))
    assert gateway.kind == "gateway"
    assert gateway.publish == ("cw/hq/th-1/#", "cw/hq/th-2/#", "cw/hq/gw-1/status")
    assert gateway.subscribe == ()


def test_a_sites_uplink_gets_a_gateways_login() -> None:
    linked = site("hq", "th-1").model_copy(
        update={"site": SITES["hq"].site.model_copy(update={"uplink": "hq-link"})}
    )
    for gateways in ([], [GatewayRef("hq", "hq-link")]):  # listed or not: one login
        identities = derive_identities({"hq": linked}, gateways, "cw")
        uplink = [i for i in identities if i.id == "hq-link"]
        assert uplink == [
            Identity(
                "gateway", "hq", "hq-link", "hq/hq-link", ("cw/hq/th-1/#", "cw/hq/hq-link/status")
            )
        ]


@pytest.mark.parametrize(
    ("gateways", "message"),
    [
        ([GatewayRef("nowhere", "gw-1")], "unknown site 'nowhere'"),
        ([GatewayRef("hq", "th-1")], "a device of that site has the same id"),
        ([GatewayRef("hq", "gw-1"), GatewayRef("hq", "gw-1")], "listed twice"),
    ],
)
def test_a_gateway_that_cannot_have_a_login_is_refused(
    gateways: list[GatewayRef], message: str
) -> None:
    with pytest.raises(IdentityError, match=message):
        derive_identities(SITES, gateways, "cw")


def test_gateway_references_are_site_slash_id() -> None:
    assert GatewayRef.parse("demo-hq/gw-b1") == GatewayRef("demo-hq", "gw-b1")
    for bad in ("gw-b1", "demo-hq/", "Demo/gw", "a/b/c"):
        with pytest.raises(IdentityError, match="SITE/ID"):
            GatewayRef.parse(bad)


def test_the_acl_gives_anonymous_clients_nothing_and_each_login_its_topics() -> None:
    acl = mosquitto_acl(derive_identities(SITES, [GatewayRef("hq", "gw-1")], "cw"))
    rules = [line for line in acl.splitlines() if line and not line.startswith("#")]
    assert rules[0] == "user clausewatch"  # nothing before the first user: anonymous has no rights
    assert rules[1] == "topic read cw/#"
    assert rules[rules.index("user hq/th-2") + 1 :][:2] == [
        "topic write cw/hq/th-2/#",
        "user hq/gw-1",
    ]
    assert not any(line.startswith("topic readwrite") or "pattern" in line for line in rules)


def test_password_hashes_are_what_mosquitto_passwd_2_writes() -> None:
    salt = bytes(range(12))
    hashed = mosquitto_password_hash("s3cret", salt)
    match = re.fullmatch(r"\$7\$101\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)", hashed)
    assert match is not None
    assert base64.b64decode(match[1]) == salt
    assert base64.b64decode(match[2]) == hashlib.pbkdf2_hmac("sha512", b"s3cret", salt, 101, 64)
    assert mosquitto_password_hash("s3cret") != mosquitto_password_hash("s3cret")  # fresh salt


def test_passwords_are_random_letters_and_digits() -> None:
    passwords = {new_password() for _ in range(100)}
    assert len(passwords) == 100
    assert all(re.fullmatch(r"[A-Za-z0-9]{32}", p) for p in passwords)


SHIPPED = (BUNDLED_DIR / "mosquitto.conf").read_text()


def generated(shipped: str = SHIPPED, tls: TlsListener | None = None) -> list[list[str]]:
    """The option lines of a configuration generated from `shipped`, split into words."""
    conf = mosquitto_conf(
        shipped,
        password_file=Path("/etc/cw/passwords"),
        acl_file=Path("/etc/cw/acl"),
        port=1883,
        persistence_dir=Path("/srv/cw"),
        message_size_limit=1000,
        tls=tls,
    )
    return [line.split() for line in conf.splitlines() if line and not line.startswith("#")]


def test_the_generated_configuration_keeps_the_shipped_behaviour_and_refuses_anonymous() -> None:
    found = generated()
    for kept in (
        ["persistence", "true"],
        ["persistence_location", "/srv/cw/"],
        ["max_queued_messages", "0"],
        ["max_inflight_messages", "20000"],
        ["message_size_limit", "1000"],
        ["persistent_client_expiration", "7d"],
        ["allow_anonymous", "false"],
        ["password_file", "/etc/cw/passwords"],
        ["acl_file", "/etc/cw/acl"],
    ):
        assert kept in found, kept
    assert ["allow_anonymous", "true"] not in found
    assert [words for words in found if words[0] == "listener"] == [
        ["listener", "1883", "127.0.0.1"]
    ]
    assert found[-1] == ["listener", "1883", "127.0.0.1"]  # listeners after the global options


def test_certificate_files_add_a_tls_listener() -> None:
    tls = TlsListener(8883, Path("/t/server.pem"), Path("/t/server.key"), ca_file=Path("/t/ca.pem"))
    found = generated(tls=tls)
    tail = found[found.index(["listener", "8883"]) :]
    assert tail == [
        ["listener", "8883"],
        ["certfile", "/t/server.pem"],
        ["keyfile", "/t/server.key"],
        ["cafile", "/t/ca.pem"],
        ["require_certificate", "true"],
    ]


def test_a_shipped_configuration_without_persistence_is_refused() -> None:
    text = "\n".join(line for line in SHIPPED.splitlines() if not line.startswith("persistence"))
    with pytest.raises(ValueError, match="persistence"):
        generated(text)
