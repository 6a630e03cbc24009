"""Who may speak on the broker, derived from the site model: one login per device, per edge
gateway and for the service, each with the topics it may publish to and read. Pure derivation
and text: `clausewatch broker files` (clausewatch/cli/broker.py) reads the configuration and
writes the files, `clausewatch demo` gives the same model to its embedded broker, and the docs
map it to EMQX and NATS (docs/broker.md).

The model (SPEC §2, "Identity"):
- a device `{site}/{device}` may publish only to `{prefix}/{site}/{device}/#` (its telemetry,
  events and status) and read nothing;
- a gateway `{site}/{gateway}` may publish to the topics of every device of its site, and its own
  status (`{prefix}/{site}/{gateway}/status`, its will), and read nothing; a site's `uplink` (the
  one login the whole site publishes through) gets the same login, without being listed;
- the service (`clausewatch` by default) may read `{prefix}/#` and publish nothing;
- a client without a login has no rights (the broker refuses it).

User names carry the site: device and gateway ids are unique within a site only, and a name with
exactly one `/` is a site's login while the service's name has none. Ids match
`[a-z0-9][a-z0-9_-]*`, so a name never holds a character Mosquitto's password file (`:`), its
ACL file (space) or an MQTT wildcard (`+`, `#`) would read differently.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rules.site import ID_PATTERN, SiteModel

Kind = Literal["device", "gateway", "service"]
KINDS: tuple[Kind, ...] = ("device", "gateway", "service")
SERVICE_USERNAME = "clausewatch"

# Mosquitto 2's PBKDF2-SHA512 password hashes (`$7$`), as `mosquitto_passwd` 2.0 writes them:
# a 12-byte salt and 101 iterations. The passwords are random (about 190 bits, below),
# so the iteration count adds nothing against guessing; it only costs time at every CONNECT.
PBKDF2_ITERATIONS = 101
PBKDF2_SALT_BYTES = 12
PBKDF2_HASH_BYTES = 64
# Passwords: 32 letters and digits (about 190 bits). Letters and digits only, so a password is
# the same in a URL, a shell and a spreadsheet (where a leading `-` would start a formula).
PASSWORD_CHARACTERS = 32
PASSWORD_ALPHABET = string.ascii_letters + string.digits


class IdentityError(ValueError):
    """Logins that cannot be derived: a gateway of an unknown site, a gateway named like a device
    of its site, a gateway listed twice."""


@dataclass(frozen=True, slots=True)
class Identity:
    """One broker login and its rights, as topic filters."""

    kind: Kind
    site: str  # "" for the service
    id: str
    username: str
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GatewayRef:
    """An edge gateway: its site and its id (`gateway:` of its configuration file)."""

    site: str
    id: str

    @classmethod
    def parse(cls, text: str) -> GatewayRef:
        """`SITE/ID`, as `clausewatch broker files --gateway` takes it. Raises IdentityError."""
        site, slash, gateway = text.partition("/")
        if not slash or not re.match(ID_PATTERN, site) or not re.match(ID_PATTERN, gateway):
            raise IdentityError(f"gateway {text!r}: write SITE/ID, for example demo-hq/gw-b1")
        return cls(site, gateway)


def site_username(site: str, id: str) -> str:
    """The login of a device or gateway of a site."""
    return f"{site}/{id}"


def device_topics(prefix: str, site: str, device: str) -> str:
    """Every topic of one device: telemetry, event, status."""
    return f"{prefix}/{site}/{device}/#"


def derive_identities(
    sites: Mapping[str, SiteModel],
    gateways: Iterable[GatewayRef],
    prefix: str,
    *,
    service_username: str = SERVICE_USERNAME,
) -> list[Identity]:
    """The service, then per site (in id order) its devices and its gateways (in id order).
    Raises IdentityError naming every gateway that cannot be given a login."""
    problems: list[str] = []
    by_site: dict[str, list[str]] = {site: [] for site in sites}
    for gateway in gateways:
        site = sites.get(gateway.site)
        if site is None:
            problems.append(f"gateway {gateway.id!r}: unknown site {gateway.site!r}")
        elif any(device.id == gateway.id for device in site.devices):
            problems.append(
                f"gateway {gateway.id!r} of site {gateway.site!r}: a device of that site has "
                "the same id (a gateway needs an id of its own: its status topic and login)"
            )
        elif gateway.id in by_site[gateway.site]:
            problems.append(f"gateway {gateway.id!r} of site {gateway.site!r} is listed twice")
        else:
            by_site[gateway.site].append(gateway.id)
    if problems:
        raise IdentityError("; ".join(problems))
    for site_id, model in sites.items():
        # A site's uplink (SiteInfo.uplink) speaks for the whole site: the login of a gateway.
        uplink = model.site.uplink
        if uplink is not None and uplink not in by_site[site_id]:
            by_site[site_id].append(uplink)
    if "/" in service_username or not service_username:
        raise IdentityError(f"service user name {service_username!r}: give one without '/'")
    identities = [
        Identity("service", "", service_username, service_username, subscribe=(f"{prefix}/#",))
    ]
    for site_id in sorted(sites):
        devices = sorted(device.id for device in sites[site_id].devices)
        for device in devices:
            identities.append(
                Identity(
                    "device",
                    site_id,
                    device,
                    site_username(site_id, device),
                    publish=(device_topics(prefix, site_id, device),),
                )
            )
        for gateway_id in sorted(by_site[site_id]):
            identities.append(
                Identity(
                    "gateway",
                    site_id,
                    gateway_id,
                    site_username(site_id, gateway_id),
                    publish=(
                        *(device_topics(prefix, site_id, device) for device in devices),
                        f"{prefix}/{site_id}/{gateway_id}/status",
                    ),
                )
            )
    return identities


def simulator_identity(
    sites: Mapping[str, SiteModel], prefix: str, username: str = "clausewatch-simulator"
) -> Identity:
    """The login of a simulated building (`clausewatch demo`'s simulator): it stands in for
    every device of `sites`, so it may publish what each of them may, and read nothing."""
    return Identity(
        "gateway",
        "",
        username,
        username,
        publish=tuple(
            device_topics(prefix, site_id, device.id)
            for site_id in sorted(sites)
            for device in sites[site_id].devices
        ),
    )


def new_password() -> str:
    """A random password of PASSWORD_CHARACTERS letters and digits (secrets module)."""
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_CHARACTERS))


def mosquitto_password_hash(password: str, salt: bytes | None = None) -> str:
    """The `$7$` (PBKDF2-SHA512) hash Mosquitto 2 reads from a password file, as
    `mosquitto_passwd` 2.0 writes it: `$7$<iterations>$<base64 salt>$<base64 hash>`."""
    salt = secrets.token_bytes(PBKDF2_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac(
        "sha512", password.encode(), salt, PBKDF2_ITERATIONS, PBKDF2_HASH_BYTES
    )
    encoded = (base64.b64encode(part).decode() for part in (salt, digest))
    return f"$7${PBKDF2_ITERATIONS}${'$'.join(encoded)}"


class PasswordFileError(ValueError):
    """A password file line that is not `user:hash` with a hash Mosquitto writes."""


# Iterations a `$7$` hash may ask for: Mosquitto writes 101; far more would let a tampered
# file make every check expensive.
MAX_PBKDF2_ITERATIONS = 1_000_000


def read_password_file(text: str) -> dict[str, str]:
    """User name → hash of a Mosquitto password file (`user:$7$...` lines, as
    `clausewatch broker files` or `mosquitto_passwd` write them; blank lines and `#` comments
    skipped). Raises PasswordFileError naming the first bad line (never its hash)."""
    hashes: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, colon, hashed = line.partition(":")
        if not colon or not user or not _parse_hash(hashed):
            raise PasswordFileError(
                f"line {number}: not `user:$7$...` (a Mosquitto 2 PBKDF2-SHA512 hash) "
                "nor `user:$6$...`"
            )
        hashes[user] = hashed
    return hashes


def _parse_hash(hashed: str) -> tuple[str, int, bytes, bytes] | None:
    """(scheme, iterations, salt, digest) of a `$7$` or `$6$` hash; None when malformed."""
    parts = hashed.split("$")
    try:
        if len(parts) == 5 and parts[:2] == ["", "7"] and parts[2].isdigit():
            iterations = int(parts[2])
            if not 1 <= iterations <= MAX_PBKDF2_ITERATIONS:
                return None
            salt, digest = (base64.b64decode(part, validate=True) for part in parts[3:])
            return ("7", iterations, salt, digest) if salt and digest else None
        if len(parts) == 4 and parts[:2] == ["", "6"]:
            salt, digest = (base64.b64decode(part, validate=True) for part in parts[2:])
            return ("6", 1, salt, digest) if salt and len(digest) == 64 else None
    except ValueError:
        return None
    return None


def verify_mosquitto_password(password: str, hashed: str) -> bool:
    """Whether `password` is the one `hashed` (a line's hash of a Mosquitto password file) was
    made from, compared in constant time. `$7$`: PBKDF2-SHA512 (Mosquitto 2); `$6$`:
    SHA-512 of password and salt (Mosquitto 1.x files)."""
    parsed = _parse_hash(hashed)
    if parsed is None:
        return False
    scheme, iterations, salt, digest = parsed
    if scheme == "7":
        computed = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, len(digest))
    else:
        computed = hashlib.sha512(password.encode() + salt).digest()
    return secrets.compare_digest(computed, digest)


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether an MQTT topic filter (`+` one level, `#` the rest) matches `topic`: the test
    the broker applies to an identity's rights, for input that does not come through it."""
    levels = topic.split("/")
    parts = topic_filter.split("/")
    for index, part in enumerate(parts):
        if part == "#":
            return index <= len(levels)
        if index >= len(levels) or (part != "+" and part != levels[index]):
            return False
    return len(parts) == len(levels)


def may_publish(identity: Identity, topic: str) -> bool:
    """Whether the broker lets `identity` publish to `topic`."""
    return any(topic_matches(topic_filter, topic) for topic_filter in identity.publish)


def mosquitto_acl(identities: Sequence[Identity]) -> str:
    """A Mosquitto ACL file: no topic line before the first `user`, so a client without a login
    (were one let in) has no rights; each login its `topic write` / `topic read` lines."""
    lines = [
        "# Written by `clausewatch broker files` from the site model; regenerate, do not edit.",
        "# Anonymous clients: no rights (and allow_anonymous is false).",
    ]
    for identity in identities:
        lines += ["", f"# {identity.kind}" + (f" of {identity.site}" if identity.site else "")]
        lines.append(f"user {identity.username}")
        lines += [f"topic write {topic}" for topic in identity.publish]
        lines += [f"topic read {topic}" for topic in identity.subscribe]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class TlsListener:
    """The TLS listener of a generated Mosquitto configuration."""

    port: int
    cert_file: Path
    key_file: Path
    bind: str | None = None  # None: every address
    # The CA that signs client certificates; given, every TLS client must present one (and
    # still log in with its user name and password).
    ca_file: Path | None = None


# Options of the shipped configuration that a generated one sets itself.
_REPLACED = ("listener", "allow_anonymous", "password_file", "acl_file", "per_listener_settings")
_REQUIRED = ("persistence", "persistence_location", "max_queued_messages", "message_size_limit")


def mosquitto_conf(
    shipped: str,
    *,
    password_file: Path,
    acl_file: Path,
    port: int,
    persistence_dir: Path,
    message_size_limit: int,
    tls: TlsListener | None = None,
) -> str:
    """A Mosquitto configuration: the broker behaviour of the shipped one (`shipped`, the text
    of config/bundled/mosquitto.conf: persistence, queue limits, message size) with its
    listener and anonymous access replaced by logins (`password_file`), topic rights
    (`acl_file`), a plain listener on 127.0.0.1 for clients on this host and, with `tls`, a
    TLS listener for devices and gateways on the network. Paths are written as given: pass
    absolute ones. Raises ValueError when `shipped` lacks a setting the result relies on."""
    kept: list[str] = []
    found: set[str] = set()
    lines = shipped.splitlines()
    while lines and lines[0].startswith("#"):  # the shipped file's own header
        lines.pop(0)
    for line in lines:
        words = line.split()
        option = words[0] if words and not words[0].startswith("#") else None
        if option in _REPLACED:
            continue
        if option is not None:
            found.add(option)
        if option == "persistence_location":
            line = f"persistence_location {persistence_dir}/"
        elif option == "message_size_limit":
            line = f"message_size_limit {message_size_limit}"
        kept.append(line)
    missing = [option for option in _REQUIRED if option not in found]
    if missing:
        raise ValueError(f"the shipped mosquitto.conf has no {', '.join(missing)}")
    while kept and not kept[0].strip():
        kept.pop(0)
    out = [
        "# Mosquitto 2.x for clausewatch, written by `clausewatch broker files` from the site",
        "# model: the broker behaviour of the shipped config/bundled/mosquitto.conf, logins for",
        "# every device, gateway and the service, and what each may publish or read. Regenerate",
        "# it (and the password and ACL files) when the site model changes; do not edit.",
        "",
        *kept,
        "",
        "# Logins and topic rights. Mosquitto reads these files after dropping privileges:",
        "# they must belong to the user it runs as (`user`, default mosquitto), mode 0600.",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {password_file}",
        f"acl_file {acl_file}",
        "",
        "# Clients on this host (the service).",
        f"listener {port} 127.0.0.1",
    ]
    if tls is not None:
        out += [
            "",
            "# Devices and gateways on the network: TLS.",
            f"listener {tls.port}" + (f" {tls.bind}" if tls.bind else ""),
            f"certfile {tls.cert_file}",
            f"keyfile {tls.key_file}",
        ]
        if tls.ca_file is not None:
            out += [f"cafile {tls.ca_file}", "require_certificate true"]
    return "\n".join(out) + "\n"
