"""`POST /ingest/{site}/{device}/telemetry|event`: readings and events over HTTP, for devices and
systems that cannot speak MQTT (issue 22; docs/api.md "HTTP ingest").

The body is an MQTT payload exactly as the device would publish it on
`{prefix}/{site}/{device}/telemetry|event` (one object, or an array of them: a bulk). It goes
through the same decode, dedupe, dead letters, engines and flush as a message from the broker
(`submit`, wired by the service to `ingest.direct.DirectIngress`), and the answer comes only
after the flush holding it committed: a 200 means its rows are in PostgreSQL.

Who may post is who may publish (config/broker.py): the device logs in with HTTP Basic and its
broker login (`{site}/{device}`, the password of credentials.csv), checked against the hashes of
the broker's password file, and may post only where the broker would let it publish. One
credential per device, provisioned, rotated and revoked in one place (`clausewatch broker files`).

Before the body is read: 401 without a valid login, 403 outside its rights, 503 when this
process does not run the pipeline of that site, 413 over the byte limit. Then: 422 for a body
that is not JSON or an empty array, 413 for more items than the limit, 503 with Retry-After when
the pipeline cannot take more now or did not commit in time.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal, Protocol, cast

import orjson
from fastapi import APIRouter, HTTPException, Path, Request, status
from pydantic import BaseModel

from api.models import problems
from config.broker import (
    Identity,
    PasswordFileError,
    may_publish,
    mosquitto_password_hash,
    read_password_file,
    verify_mosquitto_password,
)

log = logging.getLogger(__name__)

router = APIRouter(tags=["ingest"])
PathId = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
REALM = 'Basic realm="clausewatch ingest", charset="UTF-8"'
MAX_AUTHORIZATION_CHARS = 1024


class IngestBusy(Exception):
    """`submit` cannot take the message now (queue full, too many waiting): 503."""

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


class DeadLetterView(Protocol):
    @property
    def reason(self) -> str: ...
    @property
    def detail(self) -> str: ...


class DeliveryView(Protocol):
    """What `submit`'s future resolves to (ingest.direct.Delivery)."""

    @property
    def outcome(self) -> str | None: ...
    @property
    def readings(self) -> int: ...
    @property
    def values(self) -> int: ...
    @property
    def events(self) -> int: ...
    @property
    def dead_letters(self) -> Sequence[DeadLetterView]: ...


# Raises IngestBusy; the future resolves once the message's flush is settled.
Submit = Callable[[str, bytes], "concurrent.futures.Future[Any]"]


class LastDoneView(Protocol):
    """What the pipeline made of a last-done time (ingest.pipeline.LastDoneDecision)."""

    @property
    def kind(self) -> str: ...  # "input" or "baseline"
    @property
    def events(self) -> frozenset[str]: ...
    @property
    def instances(self) -> int: ...


# (site, space, task, epoch seconds): hands a last-done time to the pipeline thread; the future
# resolves to a LastDoneView between two flushes.
LastDone = Callable[[str, str, str, float], "concurrent.futures.Future[Any]"]


class DevicePasswords:
    """The hashes of the broker's password file (`clausewatch broker files` writes it), read
    again whenever the file changes (a `--rotate` takes effect without a restart). A file that
    cannot be read keeps the hashes read before and logs why."""

    def __init__(self, path: FilePath) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None
        self._hashes: dict[str, str] = {}
        self.reload()

    def reload(self) -> None:
        try:
            info = os.stat(self.path)
            key = (info.st_ino, info.st_mtime_ns, info.st_size)
            if key == self._seen:
                return
            hashes = read_password_file(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, PasswordFileError) as exc:
            with self._lock:
                if self._seen != (-1, -1, -1):
                    log.error("device password file %s unusable: %s", self.path, exc)
                self._seen = (-1, -1, -1)
            return
        with self._lock:
            self._hashes, self._seen = hashes, key

    def hash_of(self, username: str) -> str | None:
        self.reload()
        return self._hashes.get(username)


# Checked when the user name is unknown, so that answer takes as long as a wrong password.
_DECOY_HASH = mosquitto_password_hash("not a password")


@dataclass
class HttpIngest:
    """What the route needs, given by the service (`create_app(..., ingest=...)`)."""

    submit: Submit
    prefix: str
    identities: Mapping[str, Identity]  # by user name (config.broker.derive_identities)
    passwords: DevicePasswords | None  # None: no password file configured, every post is 503
    sites: frozenset[str]  # the sites whose pipeline runs in this process
    other_sites: frozenset[str] = field(default_factory=frozenset)  # of other worker processes
    max_bytes: int = 256 * 1024
    max_items: int = 10_000
    commit_timeout_s: float = 30.0
    # The engines follow the data's own time (a replay, the demo's simulated building), not the
    # wall clock: a field check-in is then stamped with its site's data time (checkins.py).
    data_clock: bool = False
    last_done: LastDone | None = None  # the pipeline's request_last_done


class Accepted(BaseModel):
    """What the flush committed of the body."""

    readings: int  # readings (objects) stored and judged
    values: int  # metric values in them
    events: int
    dead_letters: list[RejectedItem]  # items stored as dead letters, with the reason


class RejectedItem(BaseModel):
    reason: str  # dead-letter reason code (docs/api.md)
    detail: str


Accepted.model_rebuild()


@router.post(
    "/ingest/{site}/{device}/{kind}",
    responses=problems(401, 403, 413, 503),
)
async def post_ingest(
    request: Request,
    site: PathId,
    device: PathId,
    kind: Annotated[Literal["telemetry", "event"], Path()],
) -> Accepted:
    """One MQTT payload (an object, or an array of them) of `device`, answered after commit.
    Log in with HTTP Basic: the device's broker login `{site}/{device}` and its password."""
    ingest = cast(HttpIngest, request.app.state.ingest)
    if ingest.passwords is None:
        raise _unavailable(
            "HTTP ingest has no device logins: CLAUSEWATCH_DEVICE_PASSWORD_FILE is not set", None
        )
    identity = _authenticate(ingest, request.headers.get("authorization"))
    topic = f"{ingest.prefix}/{site}/{device}/{kind}"
    if not may_publish(identity, topic):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"login {identity.username!r} may not post for {site}/{device}",
        )
    if site not in ingest.sites:
        where = (
            "is judged by another ingest worker (clausewatch run --workers): post it to a "
            "service running one worker, or publish it over MQTT"
            if site in ingest.other_sites
            else "is not judged by this service"
        )
        raise _unavailable(f"site {site!r} {where}", 60)
    body = await _read_body(request, ingest.max_bytes)
    _check_frame(body, ingest.max_items)
    delivery = await deliver(ingest, topic, body)
    rejected = [RejectedItem(reason=d.reason, detail=d.detail) for d in delivery.dead_letters]
    if not delivery.readings and not delivery.events:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [
                {"loc": ["body"], "msg": f"{r.reason}: {r.detail}", "type": "value_error"}
                for r in rejected
            ],
        )
    return Accepted(
        readings=delivery.readings,
        values=delivery.values,
        events=delivery.events,
        dead_letters=rejected,
    )


async def deliver(ingest: HttpIngest, topic: str, body: bytes) -> DeliveryView:
    """Puts `body` on the pipeline as a message of `topic` and waits for the commit of the
    flush holding it: the one way HTTP enters the pipeline (devices here, field check-ins in
    api/routers/checkins.py, last-done times in api/routers/registry.py). 503 when busy, not
    committed in time or stopped, 500 when the
    database refused the flush."""
    try:
        future = ingest.submit(topic, body)
    except IngestBusy as busy:
        raise _unavailable(f"ingest is busy ({busy.detail}); try again", busy.retry_after) from None
    try:
        delivery = cast(
            DeliveryView,
            await asyncio.wait_for(asyncio.wrap_future(future), ingest.commit_timeout_s),
        )
    except TimeoutError:
        raise _unavailable(
            f"not committed within {ingest.commit_timeout_s:g} s (the database may be "
            "unavailable): it may still be stored; post it again, the copy is absorbed when "
            "it carries ts (and seq)",
            5,
        ) from None
    if delivery.outcome == "rejected":
        raise HTTPException(
            status.HTTP_500_INTERNAL_SERVER_ERROR,
            "the database refused the batch holding this body; its rows were kept as dead "
            "letters (reason store_rejected) and logged",
        )
    if delivery.outcome != "committed":
        raise _unavailable("the service stopped before committing this body; post it again", 5)
    return delivery


def _authenticate(ingest: HttpIngest, authorization: str | None) -> Identity:
    if authorization is None:
        raise _unauthorized("log in with HTTP Basic: the device's broker login and password")
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic" or len(encoded) > MAX_AUTHORIZATION_CHARS:
        raise _unauthorized("log in with HTTP Basic: the device's broker login and password")
    try:
        username, colon, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise _unauthorized("the Basic credentials are not base64 of UTF-8 user:password") from None
    assert ingest.passwords is not None
    hashed = ingest.passwords.hash_of(username) if colon else None
    identity = ingest.identities.get(username)
    # Unknown login or none: check a decoy, so the answer takes as long as a wrong password.
    good = verify_mosquitto_password(password, hashed or _DECOY_HASH)
    if hashed is None or identity is None or not good:
        raise _unauthorized("unknown login or wrong password")
    return identity


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(f"body of {int(declared)} bytes, limit {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(f"body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _check_frame(body: bytes, max_items: int) -> None:
    """What is wrong with the body as a whole is answered, not stored: not JSON, an empty array,
    too many items. What is wrong with one item becomes a dead letter, as from MQTT."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _unprocessable(f"the body is not JSON: {exc}") from None
    if isinstance(parsed, list):
        if not parsed:
            raise _unprocessable("an empty array: post one object or an array of them")
        if len(parsed) > max_items:
            raise _too_large(f"{len(parsed)} items in one body, limit {max_items}")
    elif not isinstance(parsed, dict):
        raise _unprocessable("the body is one JSON object or an array of them")


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": REALM})


def _unavailable(detail: str, retry_after: int | None) -> HTTPException:
    headers = None if retry_after is None else {"Retry-After": str(retry_after)}
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail, headers=headers)


def _too_large(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, detail)


def _unprocessable(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        [{"loc": ["body"], "msg": detail, "type": "value_error"}],
    )
