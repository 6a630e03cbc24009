"""How the API is served: uvicorn with the connection limits of docs/api.md ("Limits"). The
service (clausewatch/service.py) and the tests serve the app through `server_config`.

uvicorn bounds the idle time between two requests of a kept-alive connection
(`timeout_keep_alive`), the size of a request head (`h11_max_incomplete_event_size`) and the
connections it serves at once (`limit_concurrency`: 503 beyond), but has no deadline for a
request head: a client may open a connection and send nothing, or send its head a byte at a
time, and hold the connection for ever. `HeadDeadlineProtocol` adds that deadline to uvicorn's
h11 protocol: from the moment a connection opens, or the first byte of a later request on it
arrives, the whole head must be in within `header_timeout_s`, else the connection is closed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol


@dataclass(frozen=True, slots=True)
class ServerLimits:
    header_timeout_s: float = 10.0  # a request head must arrive within this
    keep_alive_s: int = 5  # an idle kept-alive connection is closed after this
    max_connections: int = 200  # connections served at once (open streams count); 503 beyond
    max_head_bytes: int = 16 * 1024  # request line and headers


def server_config(
    app: Any,
    host: str,
    port: int,
    limits: ServerLimits | None = None,
    *,
    log_level: str = "warning",
) -> uvicorn.Config:
    limits = limits or ServerLimits()
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        lifespan="on",
        http=head_deadline_protocol(limits.header_timeout_s),
        ws="none",  # no WebSocket routes: no upgrade path to attack
        timeout_keep_alive=limits.keep_alive_s,
        limit_concurrency=limits.max_connections,
        h11_max_incomplete_event_size=limits.max_head_bytes,
        server_header=False,
    )


class HeadDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head (see the module
    docstring). Made per deadline by `head_deadline_protocol`."""

    header_timeout_s: float = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:
            # Part of a head (or the first bytes of the next request after a response: the
            # keep-alive timer stopped when they came); the deadline runs from the first byte.
            if self._head_timer is None:
                self._arm()
        else:
            self._disarm()  # the head is in

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_late)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def head_deadline_protocol(header_timeout_s: float) -> type[HeadDeadlineProtocol]:
    return type(
        "HeadDeadlineProtocol", (HeadDeadlineProtocol,), {"header_timeout_s": header_timeout_s}
    )
