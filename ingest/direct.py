"""Messages that do not come through the broker (HTTP ingest, api/routers/ingest.py) into the
same ingress queue, decode, engines and flush as MQTT messages.

`DirectIngress.submit(topic, payload)` puts one message, exactly as it would have arrived on that
topic, on the pipeline's ingress queue without waiting, and returns a future. Instead of an ack
token the message carries a receipt (`ingest.mqtt.Receipt`): the pipeline thread tells it what
the payload decoded to when it takes the message, and settles it once the flush holding it has
committed (or the database refused that flush, or the pipeline stopped first). The future then
holds a `Delivery`: so whoever waits on it (the HTTP handler) answers only after the commit.

Back-pressure: a full queue, or more than `max_in_flight` submissions not settled yet, refuses
the message at once (`Busy`): the caller answers 503 with Retry-After instead of queueing without
bound. MQTT keeps its own policy (the network thread blocks, the broker holds the rest).
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from prometheus_client import Counter

from ingest.decode import DeadLetter, Decoded, EventMessage, Reading
from ingest.mqtt import NO_TOKEN, IngressQueue, ReceivedMessage, Settled

SUBMISSIONS = Counter(
    "clausewatch_http_ingest",
    "HTTP ingest posts by outcome: committed, rejected, abandoned, or busy (refused at once)",
    ["outcome"],
)
_OUTCOMES = {name: SUBMISSIONS.labels(name) for name in ("committed", "rejected", "abandoned")}
_BUSY = SUBMISSIONS.labels("busy")


class Busy(Exception):
    """The pipeline cannot take the message now; try again after `retry_after` seconds."""

    def __init__(self, detail: str, retry_after: int = 1) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Rejected:
    """One item of the payload that became a dead letter (stored, as from MQTT)."""

    reason: str  # a dead-letter reason code (ingest/decode.py)
    detail: str


@dataclass(slots=True)
class Delivery:
    """What became of one submitted payload."""

    outcome: Settled | None = None
    readings: int = 0
    values: int = 0
    events: int = 0
    dead_letters: list[Rejected] = field(default_factory=list)


class _Receipt:
    def __init__(self, ingress: DirectIngress) -> None:
        self.future: concurrent.futures.Future[Delivery] = concurrent.futures.Future()
        self.delivery = Delivery()
        self._ingress = ingress

    def decoded(self, items: Sequence[Decoded], /) -> None:
        delivery = self.delivery
        for item in items:
            if isinstance(item, Reading):
                delivery.readings += 1
                delivery.values += len(item.metrics)
            elif isinstance(item, EventMessage):
                delivery.events += 1
            elif isinstance(item, DeadLetter):
                delivery.dead_letters.append(Rejected(item.reason, item.detail))
            # A StatusMessage: HTTP ingest takes telemetry and events only.

    def settled(self, outcome: Settled, /) -> None:
        self.delivery.outcome = outcome
        _OUTCOMES[outcome].inc()
        self._ingress._release()
        if not self.future.done():
            self.future.set_result(self.delivery)


class DirectIngress:
    """Submits messages to a pipeline's ingress queue. Thread-safe."""

    def __init__(self, inbox: IngressQueue, *, max_in_flight: int = 256) -> None:
        self.inbox = inbox
        self.max_in_flight = max_in_flight
        self._lock = threading.Lock()
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def submit(self, topic: str, payload: bytes) -> concurrent.futures.Future[Delivery]:
        """Queues the message; the future resolves once its flush is settled. Raises Busy when
        the queue is full or too many submissions wait already."""
        with self._lock:
            if self._in_flight >= self.max_in_flight:
                _BUSY.inc()
                raise Busy(f"{self._in_flight} HTTP submissions are waiting for their commit")
            self._in_flight += 1
        receipt = _Receipt(self)
        message = ReceivedMessage(topic, payload, time.time(), NO_TOKEN, receipt)
        if not self.inbox.offer(message):
            self._release()
            _BUSY.inc()
            raise Busy("the ingest queue is full")
        return receipt.future

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1
