"""`clausewatch broker files`: a Mosquitto configuration, password file, ACL file,
`credentials.csv` and, for the cluster mode's NATS servers, `nats-auth.conf` written from the
site model (the logins and rights of config/broker.py), so the
site model stays the one source of who may speak for a site (docs/broker.md).

Gateways come from the edge gateway files of the configuration directory (`edge/*.yaml`: their
`site` and `gateway`) and from `--gateway SITE/ID`. A re-run keeps the password of every login it
finds in the previous `credentials.csv` of OUT (provisioned devices keep working) unless
`--rotate` names it, or names none (then every password is new). Every file is written mode
0600, through a temporary file renamed into place.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from clausewatch.cli import Commands
from config import csvcells

if TYPE_CHECKING:
    from config.broker import GatewayRef, TlsListener

CREDENTIALS_COLUMNS = ("kind", "site", "id", "username", "password")
FILES = ("mosquitto.conf", "passwords", "acl", "credentials.csv", "nats-auth.conf")
PREFIX_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"  # as CLAUSEWATCH_TOPIC_PREFIX


class BrokerFilesError(Exception):
    """The command cannot write the files; the message says why."""


def register(commands: Commands) -> None:
    parser = commands.add(
        "broker files",
        "Write a Mosquitto configuration, password file, ACL file and credentials.csv from the "
        "site model: a login per device, gateway and the service, each allowed only its topics.",
    )
    parser.add_argument(
        "--config-dir",
        type=Path,
        help="sites/ and edge/ (default: CLAUSEWATCH_CONFIG_DIR, else the bundled configuration)",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder the files are written to")
    parser.add_argument("--prefix", help="topic prefix (default: CLAUSEWATCH_TOPIC_PREFIX or cw)")
    parser.add_argument(
        "--gateway",
        action="append",
        default=[],
        metavar="SITE/ID",
        help="an edge gateway besides those of edge/*.yaml (repeatable)",
    )
    parser.add_argument(
        "--service-user", default="clausewatch", help="the service's login (default clausewatch)"
    )
    parser.add_argument(
        "--rotate",
        nargs="*",
        metavar="USERNAME",
        help="new passwords for these logins (for every login when none is named); without "
        "it a re-run keeps the passwords of OUT/credentials.csv",
    )
    parser.add_argument(
        "--port", type=int, default=1883, help="plain listener on 127.0.0.1 (default 1883)"
    )
    parser.add_argument(
        "--tls-cert", type=Path, help="server certificate (PEM): adds a TLS listener"
    )
    parser.add_argument("--tls-key", type=Path, help="its private key (PEM)")
    parser.add_argument(
        "--tls-ca",
        type=Path,
        help="CA of client certificates (PEM): TLS clients must then present one signed by it",
    )
    parser.add_argument("--tls-port", type=int, default=8883, help="TLS listener (default 8883)")
    parser.add_argument("--tls-bind", help="address of the TLS listener (default: every address)")
    parser.add_argument(
        "--persistence-dir",
        type=Path,
        default=Path("/var/lib/mosquitto"),
        help="Mosquitto's persistence folder (default /var/lib/mosquitto)",
    )
    parser.add_argument(
        "--partitions",
        type=int,
        help="the cluster mode's partition count, for nats-auth.conf "
        "(default: CLAUSEWATCH_CLUSTER_PARTITIONS or 64)",
    )
    parser.set_defaults(func=_files, uses_holiday_calendar=False)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a run wrote: logins by kind and what happened to their passwords."""

    counts: dict[str, int]
    kept: int
    new: int
    rotated: int
    dropped: int
    hasher: str


def _files(args: argparse.Namespace) -> int:
    try:
        outcome = write_broker_files(args)
    except BrokerFilesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out.resolve()
    counts = ", ".join(f"{kind} {n}" for kind, n in outcome.counts.items())
    print(f"wrote {', '.join(FILES)} to {out} (mode 0600)")
    print(f"  logins: {counts}")
    print(
        f"  passwords: {outcome.kept} kept, {outcome.new} new, {outcome.rotated} rotated, "
        f"{outcome.dropped} dropped; hashed by {outcome.hasher}"
    )
    print(
        "Mosquitto reads the password and ACL files as the user it runs as: "
        f"chown mosquitto: {out}/passwords {out}/acl, then mosquitto -c {out}/mosquitto.conf. "
        "Give each device and gateway its line of credentials.csv, and the service "
        "its own (docs/broker.md). The cluster mode's NATS servers include nats-auth.conf; "
        "its workers log in as the service (docs/cluster.md)."
    )
    return 0


def write_broker_files(args: argparse.Namespace) -> Outcome:
    """The command's work; raises BrokerFilesError for anything the operator must fix."""
    from clausewatch.settings import Settings
    from config import BUNDLED_DIR
    from config.broker import (
        GatewayRef,
        IdentityError,
        derive_identities,
        mosquitto_acl,
        mosquitto_conf,
        new_password,
    )
    from config.documents import ConfigError
    from config.files import load_config_dir
    from ingest.nats_auth import nats_authorization

    settings = Settings()
    directory: Path = args.config_dir or settings.config_dir or BUNDLED_DIR
    prefix: str = args.prefix or settings.topic_prefix
    if not re.match(PREFIX_PATTERN, prefix):
        raise BrokerFilesError(f"--prefix {prefix!r}: lower-case letters, digits, _ and -")
    try:
        config = load_config_dir(directory)
        gateways = _edge_gateways(directory, prefix)
        gateways += [GatewayRef.parse(text) for text in args.gateway]
        identities = derive_identities(
            config.sites, gateways, prefix, service_username=args.service_user
        )
    except ConfigError as exc:
        raise BrokerFilesError(f"configuration in {directory} is invalid:\n{exc}") from exc
    except IdentityError as exc:
        raise BrokerFilesError(str(exc)) from exc
    tls = _tls_listener(args)

    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    previous = _read_credentials(out / "credentials.csv")
    usernames = {identity.username for identity in identities}
    rotate: set[str] = set(usernames if args.rotate == [] else args.rotate or ())
    unknown = sorted(rotate - usernames)
    if unknown:
        raise BrokerFilesError(f"--rotate: no such login: {', '.join(unknown)}")
    passwords: dict[str, str] = {}
    kept = new = rotated = 0
    for identity in identities:
        old = previous.get(identity.username)
        if old is not None and identity.username not in rotate:
            passwords[identity.username] = old
            kept += 1
        else:
            passwords[identity.username] = new_password()
            new += old is None
            rotated += old is not None
    logins = [(identity.username, passwords[identity.username]) for identity in identities]

    hasher = _write_password_file(out / "passwords", logins)
    _write_private(out / "acl", mosquitto_acl(identities))
    shipped = (BUNDLED_DIR / "mosquitto.conf").read_text()
    conf = mosquitto_conf(
        shipped,
        password_file=out / "passwords",
        acl_file=out / "acl",
        port=args.port,
        persistence_dir=args.persistence_dir.resolve(),
        message_size_limit=settings.max_payload_bytes,
        tls=tls,
    )
    _write_private(out / "mosquitto.conf", conf)
    partitions: int = args.partitions or settings.cluster_partitions
    _write_private(out / "nats-auth.conf", nats_authorization(identities, passwords, partitions))
    table = io.StringIO()
    # The project's one CSV writer: ids and passwords (letters and digits) pass unchanged.
    writer = csvcells.writer(table, lineterminator="\n")
    writer.writerow(CREDENTIALS_COLUMNS)
    for identity in identities:
        writer.writerow(
            [
                identity.kind,
                identity.site,
                identity.id,
                identity.username,
                passwords[identity.username],
            ]
        )
    _write_private(out / "credentials.csv", table.getvalue())

    counts: dict[str, int] = {}
    for identity in identities:
        counts[identity.kind] = counts.get(identity.kind, 0) + 1
    dropped = len(set(previous) - usernames)
    return Outcome(counts, kept, new, rotated, dropped, hasher)


def _edge_gateways(directory: Path, prefix: str) -> list[GatewayRef]:
    """The gateways of `directory/edge/*.yaml`, each checked to publish under `prefix`."""
    from config.broker import GatewayRef
    from config.files import yaml_files
    from edge.config import load_gateway_config

    found: list[GatewayRef] = []
    for path in yaml_files(directory / "edge"):
        gateway, _ = load_gateway_config(path)
        if gateway.broker.prefix != prefix:
            raise BrokerFilesError(
                f"{path}: the gateway publishes under prefix {gateway.broker.prefix!r}, these "
                f"files are for {prefix!r} (--prefix)"
            )
        found.append(GatewayRef(gateway.site, gateway.gateway))
    return found


def _tls_listener(args: argparse.Namespace) -> TlsListener | None:
    from config.broker import TlsListener

    given = {"--tls-cert": args.tls_cert, "--tls-key": args.tls_key, "--tls-ca": args.tls_ca}
    if not any(given.values()):
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise BrokerFilesError("a TLS listener needs both --tls-cert and --tls-key")
    for flag, path in given.items():
        if path is not None and not path.is_file():
            raise BrokerFilesError(f"{flag} {path}: no such file")
    return TlsListener(
        port=args.tls_port,
        cert_file=args.tls_cert.resolve(),
        key_file=args.tls_key.resolve(),
        bind=args.tls_bind,
        ca_file=args.tls_ca.resolve() if args.tls_ca else None,
    )


def _read_credentials(path: Path) -> dict[str, str]:
    """username -> password of a previous run; {} when there is none. Raises
    BrokerFilesError for a file this command did not write (rather than replacing every
    password provisioned from it)."""
    if not path.exists():
        return {}
    with path.open(newline="") as file:
        reader = csv.reader(file)
        header = next(reader, None)
        if header is None or tuple(header) != CREDENTIALS_COLUMNS:
            raise BrokerFilesError(
                f"{path}: not a credentials.csv of this command (columns "
                f"{','.join(CREDENTIALS_COLUMNS)}); move it away to start afresh"
            )
        passwords: dict[str, str] = {}
        for number, row in enumerate(reader, start=2):
            if len(row) != len(CREDENTIALS_COLUMNS) or not row[4]:
                raise BrokerFilesError(f"{path}, line {number}: expected 5 columns")
            passwords[row[3]] = row[4]
    return passwords


def _write_private(path: Path, text: str) -> None:
    """`text` into `path`, mode 0600, replacing it at once (a temporary file renamed)."""
    temporary = path.with_name(f".{path.name}.tmp")
    _create_private(temporary, text)
    os.replace(temporary, path)


def _create_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        os.fchmod(file.fileno(), 0o600)  # an older file of that name may have had another mode
        file.write(text)


def _write_password_file(path: Path, logins: Sequence[tuple[str, str]]) -> str:
    """Mosquitto's password file for `logins`; says what hashed the passwords. With
    `mosquitto_passwd` on PATH it hashes a private plain-text file in place (`-U`), so the
    passwords never appear on a command line; without it, the `$7$` hashes of
    config.broker.mosquitto_password_hash, the format `mosquitto_passwd` 2.0 writes."""
    from config.broker import mosquitto_password_hash

    temporary = path.with_name(f".{path.name}.tmp")
    program = shutil.which("mosquitto_passwd")
    if program is None:
        _create_private(
            temporary,
            "".join(f"{user}:{mosquitto_password_hash(secret)}\n" for user, secret in logins),
        )
        hasher = "clausewatch ($7$, PBKDF2-SHA512)"
    else:
        _create_private(temporary, "".join(f"{user}:{secret}\n" for user, secret in logins))
        result = subprocess.run([program, "-U", str(temporary)], capture_output=True, text=True)
        hashed = temporary.read_text().splitlines()
        if (
            result.returncode != 0
            or len(hashed) != len(logins)
            or not all(
                line.startswith(f"{user}:$") for line, (user, _) in zip(hashed, logins, strict=True)
            )
        ):
            temporary.unlink()
            raise BrokerFilesError(
                f"{program} -U failed: {result.stderr.strip() or 'the file was not hashed'}"
            )
        hasher = program
    os.replace(temporary, path)
    return hasher
