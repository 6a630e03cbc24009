"""Broker URLs: the one parser of `CLAUSEWATCH_MQTT_URL` (the service), the edge gateway's
`broker.url` and `clausewatch simulate --mqtt-url`, and the one place a client is logged in.

    mqtt://[user[:password]@]host[:port][?protocol=5|311]
    mqtts://[user[:password]@]host[:port][?protocol=5|311][&ca=FILE][&cert=FILE&key=FILE]

- `mqtt://` is plain TCP (port 1883 by default), `mqtts://` TLS (port 8883); `tcp://` is an
  old spelling of `mqtt://`, still accepted.
- User name and password are percent-encoded (`s%40cret` for `s@cret`).
- `protocol`: the MQTT version of the service's subscriber, `5` (default) or `311`. The
  publishers (edge gateway, simulator) speak 3.1.1, which every broker accepts, whatever it says.
- `ca`: the CA certificate(s) (PEM) to verify the broker with, instead of the system's; `cert`
  and `key`: a client certificate and its private key (PEM), both or neither, for brokers that
  require one. TLS options only with `mqtts://`. The broker's certificate must name the host
  of the URL. Relative paths are relative to the working directory (in a gateway file: to the
  file's folder).

Anything else is an error: an unknown scheme or query parameter, no host, a port that is not a
number from 1 to 65535, a path. Errors never show the password.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

Version = Literal["5", "311"]

_SCHEMES = {"mqtt": False, "tcp": False, "mqtts": True}  # scheme -> TLS
_PORTS = {False: 1883, True: 8883}
_PARAMETERS = ("protocol", "ca", "cert", "key")


class MqttUrlError(ValueError):
    """A broker URL that cannot be used; the message shows the URL without its password."""


class MqttClient(Protocol):
    """What `MqttEndpoint.configure` calls on a client (paho's `Client` has both)."""

    def username_pw_set(self, username: str | None, password: str | None = None) -> None: ...

    def tls_set(
        self,
        ca_certs: str | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class MqttEndpoint:
    """A broker and how to log in to it, parsed from a URL (see the module docstring)."""

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    protocol: Version = "5"
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @classmethod
    def parse(cls, url: str) -> MqttEndpoint:
        """Raises MqttUrlError, saying what is wrong."""
        parts = urlsplit(url)
        shown = _without_password(url, parts.password)

        def refuse(problem: str) -> MqttUrlError:
            return MqttUrlError(f"MQTT URL {shown!r}: {problem}")

        if parts.scheme not in _SCHEMES:
            scheme = f"scheme {parts.scheme + '://'!r}" if parts.scheme else "no scheme"
            raise refuse(f"{scheme}: use mqtt:// or mqtts:// (TLS)")
        tls = _SCHEMES[parts.scheme]
        if not parts.hostname:
            raise refuse("no host")
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port == 0 or (port is None and parts.netloc.endswith(":")):
            raise refuse("the port must be a number from 1 to 65535")
        if parts.path not in ("", "/") or parts.fragment:
            raise refuse("a broker URL has no path (topics come from the topic prefix)")
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        if password is not None and username is None:
            raise refuse("a password needs a user name")
        query: dict[str, str] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name not in _PARAMETERS:
                raise refuse(f"unknown parameter {name!r} (known: {', '.join(_PARAMETERS)})")
            if name in query:
                raise refuse(f"{name}= is given twice")
            if not value:
                raise refuse(f"{name}= is empty")
            query[name] = value
        protocol: Version
        match query.get("protocol", "5"):
            case "5":
                protocol = "5"
            case "311":
                protocol = "311"
            case other:
                raise refuse(f"protocol must be 5 or 311, not {other!r}")
        files = [name for name in ("ca", "cert", "key") if name in query]
        if files and not tls:
            raise refuse(f"{files[0]}= is a TLS option: use mqtts://")
        if ("cert" in query) != ("key" in query):
            raise refuse("a client certificate needs both cert= and key=")
        return cls(
            host=parts.hostname,
            port=port or _PORTS[tls],
            username=username,
            password=password,
            tls=tls,
            protocol=protocol,
            ca_file=_path(query.get("ca")),
            cert_file=_path(query.get("cert")),
            key_file=_path(query.get("key")),
        )

    def url(self) -> str:
        """The URL again, normalised (scheme mqtt or mqtts, explicit port)."""
        return self._url(None if self.password is None else quote(self.password, safe=""))

    def redacted(self) -> str:
        """The URL for logs and messages: the password (if any) shown as `***`."""
        return self._url(None if self.password is None else "***")

    def _url(self, secret: str | None) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        host = f"[{self.host}]" if ":" in self.host else self.host
        login = ""
        if self.username is not None:
            login = quote(self.username, safe="") + (f":{secret}" if secret is not None else "")
            login += "@"
        query = [("protocol", "311")] if self.protocol == "311" else []
        query += [
            (name, str(path))
            for name, path in (
                ("ca", self.ca_file),
                ("cert", self.cert_file),
                ("key", self.key_file),
            )
            if path is not None
        ]
        tail = "&".join(f"{name}={quote(value, safe='/')}" for name, value in query)
        return f"{scheme}://{login}{host}:{self.port}" + (f"?{tail}" if tail else "")

    def relative_to(self, base: Path) -> MqttEndpoint:
        """This endpoint with relative ca/cert/key paths taken as relative to `base`."""

        def resolved(path: Path | None) -> Path | None:
            return base / path if path is not None else None

        return replace(
            self,
            ca_file=resolved(self.ca_file),
            cert_file=resolved(self.cert_file),
            key_file=resolved(self.key_file),
        )

    def configure(self, client: MqttClient) -> None:
        """Logs `client` in as the URL says and applies its TLS options (paho's `tls_set`:
        the broker's certificate verified against `ca` or the system's CAs, its name checked,
        the client certificate presented when given). Every client of the project (the
        service's subscriber, the edge gateway, the simulator, the tests) is set up here, so
        they all log in the same way. Raises MqttUrlError when a TLS file is missing or
        refused."""
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if not self.tls:
            return
        for name, path in (("ca", self.ca_file), ("cert", self.cert_file), ("key", self.key_file)):
            if path is not None and not path.is_file():
                raise MqttUrlError(f"MQTT URL {self.redacted()!r}: {name}={path}: no such file")
        try:
            client.tls_set(
                ca_certs=_text(self.ca_file),
                certfile=_text(self.cert_file),
                keyfile=_text(self.key_file),
            )
        except OSError as exc:  # ssl.SSLError too: not PEM, a key that does not fit the cert
            raise MqttUrlError(f"MQTT URL {self.redacted()!r}: TLS files refused: {exc}") from exc


def _path(value: str | None) -> Path | None:
    return Path(value) if value is not None else None


def _text(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def _without_password(url: str, password: str | None) -> str:
    if not password:
        return url
    return url.replace(f":{password}@", ":***@", 1)


def redact_url(url: str) -> str:
    """Any service URL (PostgreSQL or MQTT) as logs and messages may show it: the password, if
    any, as `***`; a URL too malformed to find it in is not shown at all."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return "(a malformed URL, not shown)"
    return _without_password(url, password)


def database_named(server_url: str, name: str) -> str:
    """The PostgreSQL URL of database `name` on the server of `server_url` (same login)."""
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
