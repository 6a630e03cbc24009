"""Outbound HTTP to webhook targets: where the server may post (checked after DNS resolution, at
send time), how the connection is pinned to the address that was checked, and how a payload is
signed.

Address policy: every address a target's host resolves to must be one the public internet
routes; loopback, private (RFC 1918, unique local), link-local (cloud metadata at
169.254.169.254 included), multicast, unspecified, reserved and other special-purpose addresses
are refused, also inside IPv6 forms that embed an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`,
6to4, Teredo, NAT64 `64:ff9b::/96`). An unscoped admin may allow-list a host name or a network
(`webhook_allowlist`: an SMS gateway on the building's LAN); nothing else opens an internal
address. A host resolving to several addresses is refused when any of them is.

Pinning (no DNS rebinding): the host is resolved once, the addresses checked, and the connection
goes to the first of them (`PinnedTransport`): the name is still the `Host` header, the TLS
server name and what the certificate must match, but a second, different answer of the DNS
between the check and the connect is never asked for. Redirects are not followed (a 3xx is a
failed delivery), and proxies from the environment are not used.

Signature: `X-Clausewatch-Timestamp: <unix seconds>` and `X-Clausewatch-Signature:
sha256=<hex>`, the HMAC-SHA256 with the target's secret of the timestamp, a `.`, and the body
bytes exactly as sent. A receiver recomputes it, compares in constant time and refuses a
timestamp more than 5 minutes from its clock (docs/alerts.md, "Signed payloads").
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx
import psycopg

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# host, port -> the addresses the host resolves to (text); socket.getaddrinfo by default.
Resolver = Callable[[str, int], Sequence[str]]

TIMESTAMP_HEADER = "X-Clausewatch-Timestamp"
SIGNATURE_HEADER = "X-Clausewatch-Signature"
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class Refused(Exception):
    """A target the address policy does not allow. The message says which address and why,
    never the URL or its host: it is recorded on the alert's timeline, which every viewer of
    the site reads."""


def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in the order the system gives them."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise Refused(f"the target's host does not resolve ({exc.__class__.__name__})") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def refusal(address: Address) -> str | None:
    """Why the server may not post to `address` unless it is allow-listed, or None."""
    embedded = _embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
    if embedded is not None:
        reason = refusal(embedded)
        if reason is not None:
            return f"{reason} (embedded in {address})"
    for reason, test in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("not globally routable", not address.is_global),
    ):
        if test:
            return f"{address} is {'an' if reason[0] in 'aeiou' else 'a'} {reason} address"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


@dataclass(frozen=True, slots=True)
class AllowList:
    """What an unscoped admin opened: host names (exact, lower case) and networks."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[Network, ...] = ()

    def allows(self, host: str, address: Address) -> bool:
        if host.lower().rstrip(".") in self.hosts:
            return True
        candidates: list[Address] = [address]
        if isinstance(address, ipaddress.IPv6Address):
            embedded = _embedded_ipv4(address)
            if embedded is not None:
                candidates.append(embedded)
        return any(a in n for a in candidates for n in self.networks if a.version == n.version)


def parse_allow_entry(text: str) -> tuple[str, str]:
    """An allow-list entry as stored: ("network", "10.0.0.0/8") for an address or a network
    (a bare address is a /32 or /128), else ("host", "sms-gw.lan") for a host name. Raises
    ValueError for anything else."""
    value = text.strip().lower().rstrip(".")
    try:
        return "network", str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        pass
    labels = value.split(".")
    if (
        not value
        or len(value) > 253
        or not all(
            0 < len(label) <= 63
            and label.replace("-", "").isalnum()
            and label.isascii()
            and not label.startswith("-")
            and not label.endswith("-")
            for label in labels
        )
    ):
        raise ValueError(f"{text!r} is neither an address, a network (CIDR) nor a host name")
    return "host", value


def load_allow_list(conn: psycopg.Connection[Any]) -> AllowList:
    rows = conn.execute("SELECT kind, entry FROM webhook_allowlist").fetchall()
    return AllowList(
        hosts=frozenset(entry for kind, entry in rows if kind == "host"),
        networks=tuple(ipaddress.ip_network(entry) for kind, entry in rows if kind == "network"),
    )


@dataclass(frozen=True, slots=True)
class Destination:
    """A target URL checked against the policy: the host it names and the address it goes to."""

    url: httpx.URL
    host: str
    address: str


def check_destination(url: str, allow: AllowList, resolver: Resolver) -> Destination:
    """Resolves the URL's host once and checks every address; raises Refused (saying which
    address and why, never the URL's path or query) or returns where to connect."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise Refused("the target's URL is not valid") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise Refused("the target's URL is not an http(s) URL with a host")
    host = parsed.host
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return Destination(parsed, host, check_host(host, port, allow, resolver))


def check_host(host: str, port: int, allow: AllowList, resolver: Resolver) -> str:
    """Resolves `host` once and checks every address it resolves to (an SMTP server's too);
    returns the address to connect to, or raises Refused."""
    try:
        addresses = [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in resolver(host, port)]
    if not addresses:
        raise Refused("the target's host does not resolve")
    for address in addresses:
        reason = refusal(address)
        if reason is not None and not allow.allows(host, address):
            raise Refused(f"{reason}; an unscoped admin may allow-list it")
    return str(addresses[0])


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects every request to one address, whatever host the URL names (the name still
    travels in the Host header and as the TLS server name)."""

    def __init__(self, host: str, address: str) -> None:
        self._host = host
        self._address = address
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        if host.strip("[]").lower() != self._host.strip("[]").lower():
            raise httpcore.ConnectError(f"not the checked host: {host}")
        return self._backend.connect_tcp(
            self._address, port, timeout, local_address, socket_options
        )

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("no Unix sockets for webhooks")

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class PinnedTransport(httpx.HTTPTransport):
    """httpx's transport with its connection pool on `_PinnedBackend`: one checked address."""

    def __init__(self, destination: Destination) -> None:
        super().__init__(trust_env=False, retries=0)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=1,
            network_backend=_PinnedBackend(destination.host, destination.address),
        )


def post(
    destination: Destination, body: bytes, headers: dict[str, str], timeout: float
) -> httpx.Response:
    """POSTs `body` to `destination`'s checked address and reads the answer. Through the
    transport itself, not an `httpx.Client`: no redirect is followed, no proxy or `.netrc` from
    the environment applies, and nothing logs the URL (httpx's client logs every request's URL
    at INFO, a chat robot's token included). Raises httpx.HTTPError."""
    request = httpx.Request("POST", destination.url, content=body, headers=headers)
    request.extensions["timeout"] = httpx.Timeout(timeout).as_dict()
    with PinnedTransport(destination) as transport:
        response = transport.handle_request(request)
        try:
            response.read()
        finally:
            response.close()
    return response


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-Clausewatch-Signature` value of `body` sent at `timestamp` (unix seconds)."""
    message = str(timestamp).encode("ascii") + b"." + body
    return "sha256=" + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signed_headers(secret: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }
