"""`GET /api/v1/stream`: the alert timeline as Server-Sent Events.

The table `alert_timeline` is the source of truth and its bigserial id is the SSE event id. A
notification on channel `cw_alerts` only wakes the readers (`AlertFeed`); each stream then reads
the rows after the last id it sent, filtered to the token's sites. A reconnecting client sends
`Last-Event-ID` and gets every row after it, so nothing is missed; a fallback poll covers a
lost LISTEN connection.

Ids are handed out before commit, so concurrent writers can commit id 12 before id 11. A reader
that sees 12 first remembers 11 as a gap and looks for it again on the following reads for
`gap_wait_s`; a gap that never fills was a rolled-back transaction. Such a late row is sent
after 12 with its own id; clients treat events as idempotent updates of the alert.

The tokens and sessions of open streams are re-checked together, one query every
`token_check_s` whatever the traffic (`OpenStreams`): a revoked or expired token, or a session
that ended, ends its streams at the next check. A token or session may hold at most
`max_streams_per_token` streams at once (429 beyond).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Annotated, Any, TypeVar

import anyio
import psycopg
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, status
from fastapi.sse import format_sse_event
from psycopg_pool import AsyncConnectionPool, ConnectionPool
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from alerts import reads
from api.auth import Credential, Principal, Reader, live_credentials
from api.models import Problem, StreamEvent, alert_public

log = logging.getLogger(__name__)
CHANNEL = "cw_alerts"
# Timeline actions that are not alert state changes are not streamed (webhook bookkeeping).
HIDDEN_ACTIONS = frozenset({"notified"})
# A jump in ids larger than this is not tracked as gaps (a sequence reset, a bulk rollback).
MAX_TRACKED_GAP = 1000
T = TypeVar("T")
EVENT_ID = re.compile(r"[0-9]{1,19}")


@dataclass(frozen=True, slots=True)
class StreamConfig:
    heartbeat_s: float = 15.0  # a comment line this often keeps proxies from closing the stream
    poll_s: float = 5.0  # re-read even without a notification (covers a lost LISTEN)
    gap_wait_s: float = 10.0  # how long a missing id may still appear (a slow transaction)
    batch: int = 500  # rows per read
    listen_retry_s: float = 2.0  # delay before re-opening a lost LISTEN connection
    shared_read_ttl_s: float = 0.05  # how long streams may share one timeline read
    token_check_s: float = 5.0  # open streams' tokens re-checked this often, traffic or not
    max_streams_per_token: int = 4  # open streams one token may hold (429 beyond)


class OpenStreams:
    """The streams open per credential (an API token or a user's session): the cap on them,
    and which credentials the last check found revoked, expired or ended. Used on the event
    loop only."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[Credential, int] = {}
        self._dead: set[Credential] = set()

    def acquire(self, key: Credential) -> bool:
        """Takes a slot for a new stream of this token; False when it holds `limit` already."""
        if self._open.get(key, 0) >= self.limit:
            return False
        self._open[key] = self._open.get(key, 0) + 1
        return True

    def release(self, key: Credential) -> None:
        left = self._open.get(key, 0) - 1
        if left > 0:
            self._open[key] = left
        else:
            self._open.pop(key, None)
            self._dead.discard(key)

    def tokens(self) -> list[Credential]:
        return sorted(self._open)

    def found_live(self, checked: Sequence[Credential], live: set[Credential]) -> bool:
        """Records a check of `checked` that found `live` alive; True when a token died."""
        dead = {key for key in checked if key not in live}
        fresh = dead - self._dead
        self._dead |= {key for key in dead if key in self._open}
        return bool(fresh)

    def is_dead(self, key: Credential) -> bool:
        return key in self._dead


class AlertFeed:
    """One LISTEN connection per app; wakes every open stream when the timeline grows. Streams
    read the timeline on the event loop through `reads` (see `SharedReads`)."""

    def __init__(self, conninfo: str, config: StreamConfig) -> None:
        self.config = config
        self._conninfo = conninfo
        self._generation = 0
        self._waiters: set[asyncio.Future[None]] = set()
        self._task: asyncio.Task[None] | None = None
        # Autocommit: a read leaves no transaction behind, so returning the connection to the
        # pool costs no ROLLBACK round trip before the rows reach the stream.
        self.reads = AsyncConnectionPool(
            conninfo,
            min_size=1,
            max_size=1,  # reads are serialized by SharedReads' lock; one connection serves all
            kwargs={"autocommit": True},
            open=False,
            name="alert-stream-reads",
        )
        self.shared = SharedReads(ttl=config.shared_read_ttl_s)
        self.streams = OpenStreams(config.max_streams_per_token)
        self._token_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.reads.open(wait=True, timeout=30.0)
        self._task = asyncio.create_task(self._listen(), name="clausewatch-alert-feed")
        self._token_task = asyncio.create_task(self._check_tokens(), name="clausewatch-tokens")

    async def stop(self) -> None:
        for task in (self._task, self._token_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.reads.close()

    @property
    def generation(self) -> int:
        return self._generation

    async def wait(self, seen: int, timeout: float) -> None:
        """Returns when the generation moves past `seen`, or after `timeout` seconds."""
        if self._generation != seen:
            return
        # A future per waiter, resolved by `_wake`: the stream resumes in the very next turn of
        # the event loop (an asyncio.Event under wait_for takes two more turns, and each turn
        # may wait for the GIL behind the ingest thread).
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(waiter)

    def _wake(self) -> None:
        self._generation += 1
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def read(
        self, reader: TimelineReader, principal: Principal, now: float
    ) -> list[StreamEvent]:
        """The stream's next events: new timeline rows this principal may see. Streams at the
        same position in the same feed generation share one query."""
        key = reader.position(now, self._generation)
        rows = await self.shared.rows(self.reads, key)
        return reader.events(rows, principal, now)

    async def _check_tokens(self) -> None:
        """Every `token_check_s`: one query for the tokens of every open stream. A token found
        revoked or expired wakes the streams, and its own end at once."""
        while True:
            await asyncio.sleep(self.config.token_check_s)  # the check's period, not a wait
            checked = self.streams.tokens()
            if not checked:
                continue
            try:
                async with self.reads.connection() as conn:
                    live = await live_credentials(conn, checked)
            except psycopg.Error as exc:
                # The streams' own reads fail too while the database is away, ending them.
                log.warning("alert feed: token check failed (%s); retrying", exc)
                continue
            if self.streams.found_live(checked, live):
                self._wake()

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self._wake()  # anything committed while we were not listening
                    async for _ in conn.notifies():
                        self._wake()
            except psycopg.Error as exc:
                log.warning("alert feed: LISTEN connection lost (%s); retrying", exc)
            except Exception:
                # Streams still poll meanwhile; the feed must outlive the surprise, and say so.
                log.exception("alert feed: unexpected error; retrying")
            # A retry delay, not a wait for a condition: the fallback poll covers the outage.
            await asyncio.sleep(self.config.listen_retry_s)


ReadKey = tuple[int, tuple[int, ...], int, int]  # last id, gap ids, batch, feed generation


class SharedReads:
    """The last timeline read, shared by streams at the same position: when a notification
    wakes every dashboard at once, one query serves them all instead of one each. A result is
    reused only within the same feed generation (a newer notification means newer rows) and
    for at most `ttl` seconds (covers reads woken by the poll, not by a notification)."""

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._lock = asyncio.Lock()
        self._key: ReadKey | None = None
        self._rows: list[dict[str, Any]] = []
        self._at = 0.0

    async def rows(
        self, pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]], key: ReadKey
    ) -> list[dict[str, Any]]:
        # Held during the query: streams waking together wait for the first one's answer.
        async with self._lock:
            if key == self._key and time.monotonic() - self._at < self._ttl:
                return self._rows
            last_id, gaps, batch, _ = key
            async with pool.connection() as conn:
                rows = await reads.timeline_rows(conn, last_id, gaps, batch)
            self._key, self._rows, self._at = key, rows, time.monotonic()
            return rows


@dataclass
class TimelineReader:
    """Position of one stream in the timeline: the highest id read and the ids below it that
    were missing when it was read (see the module docstring)."""

    last_id: int
    gap_wait_s: float
    batch: int
    gaps: dict[int, float] = field(default_factory=dict)
    more: bool = False  # the last read was a full batch: read again without waiting

    def position(self, now: float, generation: int) -> ReadKey:
        """What to read next: the rows after `last_id` and the gaps still worth waiting for."""
        for missing, since in list(self.gaps.items()):
            if now - since > self.gap_wait_s:
                del self.gaps[missing]
        return (self.last_id, tuple(sorted(self.gaps)), self.batch, generation)

    def events(
        self, rows: Sequence[dict[str, Any]], principal: Principal, now: float
    ) -> list[StreamEvent]:
        """Takes the rows read at `position()`; returns those this principal may see and has
        not been sent, each with its alert's current state, and moves the position on."""
        self.more = len(rows) >= self.batch
        wanted = self.advance([row["timeline_id"] for row in rows], now)
        return [
            StreamEvent(
                timeline_id=row["timeline_id"],
                action=row["timeline_action"],
                at=row["timeline_at"],
                actor=row["timeline_actor"],
                alert=alert_public(row),
            )
            for row in rows
            if row["timeline_id"] in wanted
            and row["timeline_action"] not in HIDDEN_ACTIONS
            and principal.sees_now(row["site"], row["site_org"])
        ]

    def advance(self, ids: Sequence[int], now: float) -> set[int]:
        """Takes ids read in ascending order; returns those not delivered before (new ones
        and filled gaps) and records the holes below the new highest id as gaps."""
        fresh: set[int] = set()
        for row_id in ids:
            if row_id in self.gaps:
                del self.gaps[row_id]
                fresh.add(row_id)
            elif row_id > self.last_id:
                if row_id - self.last_id - 1 <= MAX_TRACKED_GAP:
                    for missing in range(self.last_id + 1, row_id):
                        self.gaps[missing] = now
                self.last_id = row_id
                fresh.add(row_id)
        return fresh


def resume_position(
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=32)] = None,
    after: Annotated[
        int | None,
        Query(ge=0, le=2**63 - 1, description="resume after this event id (as Last-Event-ID)"),
    ] = None,
) -> int | None:
    """Where a stream resumes. A dependency, so a bad header is a 422 before the stream starts."""
    if last_event_id is not None and last_event_id.strip():
        text = last_event_id.strip()
        if not EVENT_ID.fullmatch(text) or int(text) >= 2**63:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                [
                    {
                        "loc": ["header", "Last-Event-ID"],
                        "msg": "an event id from this stream (a non-negative integer)",
                        "type": "event_id_invalid",
                    }
                ],
            )
        return int(text)
    return after


router = APIRouter(tags=["stream"])


class EventStream(StreamingResponse):
    """`text/event-stream` of bytes already encoded. Not FastAPI's EventSourceResponse: with that
    response class FastAPI takes the route for an event generator and wraps it. `on_close` runs
    once the response ends, however it ends (finished, client gone, cancelled)."""

    media_type = "text/event-stream"

    def __init__(
        self,
        content: AsyncIterator[bytes],
        status_code: int = 200,  # FastAPI documents the route's success status from this
        headers: dict[str, str] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(content, status_code, headers=headers)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self._on_close is not None:
                self._on_close()
            if isinstance(self.body_iterator, AsyncGenerator):
                await self.body_iterator.aclose()


# What FastAPI documents for an SSE generator route; this route returns its response itself.
SSE_ITEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "data": {"type": "string"},
        "event": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer", "minimum": 0},
    },
}


@router.get(
    "/stream",
    response_class=EventStream,
    responses={
        200: {
            "description": "`event: alert` events whose data is a StreamEvent",
            "content": {"text/event-stream": {"itemSchema": SSE_ITEM_SCHEMA}},
        },
        401: {"model": Problem},
        403: {"model": Problem},
        429: {"model": Problem, "description": "this token has its most open streams already"},
    },
)
async def stream(
    request: Request,
    principal: Reader,
    resume: Annotated[int | None, Depends(resume_position)],
) -> EventStream:
    """Alert raised / escalated / acknowledged / resolved / reopened / closed, as `event: alert`
    with `id:` = timeline id. Without `Last-Event-ID` (or `after`) the stream starts at the
    present and first sends `event: hello` whose id is the current position.

    The events are encoded here and handed straight to the response: FastAPI's SSE generator
    support passes each one through two task queues (for its keep-alive pings, which the
    heartbeat here already does), two more turns of the event loop per event."""
    pool: ConnectionPool = request.app.state.pool
    feed: AlertFeed = request.app.state.feed

    async def in_thread(work: Callable[[psycopg.Connection], T]) -> T:
        """Runs blocking database work off the event loop with a short pool checkout (the
        stream's start and its token checks; the timeline reads run on the loop)."""

        def run() -> T:
            with pool.connection() as conn:
                return work(conn)

        return await anyio.to_thread.run_sync(run)

    key = principal.credential
    if not feed.streams.acquire(key):
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"this token has {feed.streams.limit} open streams, the most one token may have;"
            " close one (another tab or client) and retry",
        )
    try:
        start = resume if resume is not None else await in_thread(reads.timeline_head)
    except BaseException:
        feed.streams.release(key)
        raise
    body = _events(feed, principal, start, hello=resume is None)
    # As FastAPI sets them for SSE: no caching, and no buffering in an nginx in front.
    return EventStream(
        body,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        on_close=partial(feed.streams.release, key),
    )


async def _events(
    feed: AlertFeed, principal: Principal, start: int, *, hello: bool
) -> AsyncIterator[bytes]:
    """The encoded events of one stream from position `start` (see `stream`); ends when the
    feed's token check finds the token revoked or expired."""
    config = feed.config
    reader = TimelineReader(last_id=start, gap_wait_s=config.gap_wait_s, batch=config.batch)
    if hello:
        yield format_sse_event(event="hello", id=str(start), data_str=f'{{"position":{start}}}')
    last_sent = time.monotonic()
    while not feed.streams.is_dead(principal.credential):
        seen = feed.generation
        events = await feed.read(reader, principal, time.monotonic())
        if events:
            # One write per read: a batch of events leaves in one send, not one each.
            yield b"".join(
                format_sse_event(
                    event="alert", id=str(event.timeline_id), data_str=event.model_dump_json()
                )
                for event in events
            )
            last_sent = time.monotonic()
        if reader.more:
            continue  # a full batch: more rows are waiting, read on at once
        if time.monotonic() - last_sent >= config.heartbeat_s:
            yield format_sse_event(comment="heartbeat")
            last_sent = time.monotonic()
        await feed.wait(seen, min(config.poll_s, config.heartbeat_s))
