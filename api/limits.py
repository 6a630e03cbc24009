"""Request bodies are bounded and paid for before they are read (issue 18, finding 7).

FastAPI reads a route's whole body (and validates it) before it solves the route's dependencies,
the token check among them: unchecked, anyone could make the service hold any body in memory.
`BodyGate` is an ASGI middleware in front of the app that, for every request with a body:

1. refuses a declared `Content-Length` over `max_body_bytes` with 413 at once;
2. under `/api/`, checks the bearer token or the user's session and its CSRF header
   (api.auth.authenticate_connection) before a byte of the body is read: 401 (403) otherwise,
   and the principal is handed to the route's dependency so it is looked up once (HTTP ingest,
   `/api/v1/ingest/`, checks its device login itself first; signing in, `OPEN_BODY_PATHS`,
   has the credential in its body, which may be at most `OPEN_BODY_BYTES`);
3. counts the bytes of the body as the app reads them (a chunked body declares no length) and
   stops at the limit with 413.

The public feedback form (`POST /public/{site}/feedback`, no token) may carry a photo: its body
may reach `PUBLIC_FORM_MAX_BYTES` (the photo's limit and room for the fields) even where the
service-wide limit is lower; the site workbook an admin imports (`POST /api/v1/sites/import`)
may reach `SITE_WORKBOOK_MAX_BYTES`, its sender's token or session checked before it is read.

Refusals carry `Connection: close`, as does any answer given before the body was read to its
end: the server then closes the connection instead of reading the rest to throw it away.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import anyio
from fastapi import HTTPException, status
from fastapi.responses import JSONResponse
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import authenticate_connection
from compliance.feedback import PHOTO_MAX_BYTES

DEFAULT_MAX_BODY_BYTES = 2 * 1024 * 1024
GUARDED_PREFIX = "/api/"  # every route that takes a body is here, and needs a token
# ...but for HTTP ingest, whose devices log in with their broker login (api/routers/ingest.py):
# that route checks the login before it reads the body, and bounds the body itself.
DEVICE_LOGIN_PREFIX = "/api/v1/ingest/"
OPEN_BODY_PATHS = frozenset({"/api/v1/session"})  # signing in: a name and a password
OPEN_BODY_BYTES = 4096
CLOSE = (b"connection", b"close")
# The public feedback form with its photo (compliance/feedback.py): the photo and 64 KiB more.
PUBLIC_FORM = re.compile(r"^/public/[^/]+/feedback$")
PUBLIC_FORM_MAX_BYTES = PHOTO_MAX_BYTES + 64 * 1024
# A check-in's photo (api/routers/checkins.py), the body itself: as large as a photo may be.
PHOTO_UPLOAD = re.compile(r"^/api/v1/checkin-photos/?$")
# The site workbook an admin imports or proposes as a site revision (api/routers/sites.py): a
# district's thousands of rooms and devices, compressed, even where the service-wide limit is
# lower. Its sender is checked first.
SITE_WORKBOOK_PATHS = frozenset({"/api/v1/sites/import", "/api/v1/site-revisions"})
SITE_WORKBOOK_MAX_BYTES = 16 * 1024 * 1024


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a body grows past the limit. FastAPI re-raises an
    HTTPException met while reading a body, so the app answers it as a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(status.HTTP_413_CONTENT_TOO_LARGE, too_large(limit))


def too_large(limit: int) -> str:
    return f"request body over {limit} bytes ({limit / 1048576:g} MiB), the most this service reads"


class BodyGate:
    def __init__(self, app: ASGIApp, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared, chunked = _framing(scope["headers"])
        if declared is None and not chunked:
            await _refuse(scope, receive, send, 400, "Content-Length is not a number")
            return
        if declared == 0 and not chunked:
            await self.app(scope, receive, send)  # no body: nothing to guard
            return
        path: str = scope["path"]
        limit = self.limit
        if path in OPEN_BODY_PATHS:
            limit = OPEN_BODY_BYTES
        elif PUBLIC_FORM.match(path):
            limit = max(self.limit, PUBLIC_FORM_MAX_BYTES)
        elif PHOTO_UPLOAD.match(path):
            limit = max(self.limit, PHOTO_MAX_BYTES)
        elif path in SITE_WORKBOOK_PATHS:
            limit = max(self.limit, SITE_WORKBOOK_MAX_BYTES)
        if declared is not None and declared > limit:
            await _refuse(scope, receive, send, 413, too_large(limit))
            return
        guarded = path.startswith(GUARDED_PREFIX) and not path.startswith(DEVICE_LOGIN_PREFIX)
        if guarded and path not in OPEN_BODY_PATHS:
            try:
                principal = await anyio.to_thread.run_sync(
                    authenticate_connection, scope["app"].state.pool, HTTPConnection(scope)
                )
            except HTTPException as refused:
                await _refuse(
                    scope, receive, send, refused.status_code, refused.detail, refused.headers
                )
                return
            scope.setdefault("state", {})["principal"] = principal
        await self._counted(scope, receive, send, limit)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        received = 0
        complete = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, complete
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
                complete = not message.get("more_body", False)
            return message

        async def closing_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if not complete:  # answered before the body ended: do not read the rest
                    message = {**message, "headers": [*message.get("headers", []), CLOSE]}
            await send(message)

        try:
            await self.app(scope, counting_receive, closing_send)
        except BodyTooLarge as refused:
            # Met outside a route's body reading (FastAPI answers those itself).
            if not started:
                await _refuse(scope, receive, send, 413, str(refused.detail))


def _framing(headers: list[tuple[bytes, bytes]]) -> tuple[int | None, bool]:
    """(declared length: 0 when none, None when unreadable; chunked?)."""
    declared: int | None = 0
    chunked = False
    for name, value in headers:
        if name == b"content-length":
            text = value.strip()
            declared = int(text) if text.isdigit() and len(text) <= 18 else None
        elif name == b"transfer-encoding":
            chunked = True
    return declared, chunked


async def _refuse(
    scope: Scope,
    receive: Receive,
    send: Send,
    status_code: int,
    detail: Any,
    headers: Mapping[str, str] | None = None,
) -> None:
    response = JSONResponse(
        {"detail": detail}, status_code, headers={**(headers or {}), "Connection": "close"}
    )
    await response(scope, receive, send)
