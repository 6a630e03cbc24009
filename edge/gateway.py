"""The edge gateway: samplers stamp readings into the SQLite buffer; a forwarder sends them in
batches at QoS 1 and deletes them once the broker acknowledged them.

Threads: one per source (sampling on its interval), one forwarder, and paho's network thread.
paho calls `on_publish` while holding its own lock, so that callback only queues the message id;
the forwarder matches ids to buffer rows and deletes them. The gateway's status topic
`{prefix}/{site}/{gateway}/status` is its will (`offline`, retained) and it publishes `online`
(retained) on every connect; then, at connect and every `status_interval`, its sources' health
(retained, JSON): `{"status": "online", "sources": [{"device", "kind", "last_good", "errors",
"last_error", "last_error_at"}, ...]}`, one entry per source in the order of its configuration
(times RFC 3339 in the gateway's zone, null before the first). The service reads either form
(ingest/decode.py); docs/simulators.md describes the fields.

Delivery is at least once: a batch sent but not acknowledged before a crash or a broken session
is sent again; the service drops the duplicate by (device, seq).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.buffer import Buffer, Row
from edge.config import GatewayConfig
from edge.sources import Sampler, sampler_for

log = logging.getLogger("clausewatch.edge")
# After a failed read, a subscribing source tries again this soon rather than at its next poll:
# until a session is open again none of its changes arrive.
SUBSCRIBE_RETRY_S = 2.0


@dataclass
class _Stamps:
    """When a source last gave values, and when it last failed (the gateway's clock)."""

    last_good: float | None = None
    last_error_at: float | None = None


class Gateway:
    def __init__(self, config: GatewayConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.zone = ZoneInfo(config.timezone)
        self.buffer = Buffer(config.buffer.path, config.buffer.cap)
        self.samplers: list[Sampler] = [sampler_for(source) for source in config.sources]
        self._stamps = [_Stamps() for _ in self.samplers]
        self._health_due = threading.Event()  # set at connect: publish the health at once
        self.prefix = f"{config.broker.prefix}/{config.site}"
        self.status_topic = f"{self.prefix}/{config.gateway}/status"
        self._stop = threading.Event()  # forwarder: stop sending
        self._stop_sampling = threading.Event()
        self._connected = threading.Event()
        self._wake = threading.Condition()
        self._acks: deque[int] = deque()  # message ids acknowledged, appended on paho's thread
        # Message id -> (device, buffer row ids it carries). One batch per device at a time, so
        # a device's readings reach the broker in order even across a crash: what a killed
        # gateway leaves unacknowledged is always the oldest of its device, and goes first.
        self._in_flight: dict[int, tuple[str, list[int]]] = {}
        self._busy: set[str] = set()  # devices with a batch in flight
        self._threads: list[threading.Thread] = []
        self.sampled = 0
        self.batches_sent = 0
        self.readings_acked = 0
        self.dropped_at_start = self.buffer.dropped()
        self.broker = config.broker.endpoint()
        client_id = config.broker.client_id or f"clausewatch-edge-{config.site}-{config.gateway}"
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,  # whatever the URL's protocol= (the subscriber's) says
            clean_session=True,  # the gateway only publishes; its buffer is the durable part
        )
        self.broker.configure(self._client)  # credentials and TLS, as every client of ours
        self._client.will_set(self.status_topic, b"offline", qos=1, retain=True)
        self._client.reconnect_delay_set(min_delay=1, max_delay=10)
        # The forwarder bounds the batches in flight; paho must not hold back any of them.
        self._client.max_inflight_messages_set(config.batch.max_in_flight + 2)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish

    # ---- paho callbacks (paho's thread: queue and notify only) ----

    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("broker refused the connection: %s", reason)
            return
        client.publish(self.status_topic, b"online", qos=1, retain=True)
        self._health_due.set()
        log.info("connected to %s", self.broker.redacted())
        self._connected.set()
        self._notify()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        if self._connected.is_set() and not self._stop_sampling.is_set():
            log.warning("broker connection lost (%s); buffering", reason)
        self._connected.clear()

    def _on_publish(
        self, client: mqtt.Client, userdata: object, mid: int, reason: object, props: object
    ) -> None:
        self._acks.append(mid)
        self._notify()

    def _notify(self) -> None:
        with self._wake:
            self._wake.notify_all()

    # ---- life cycle ----

    def start(self) -> None:
        self._client.connect_async(
            self.broker.host, self.broker.port, keepalive=self.config.broker.keepalive
        )
        self._client.loop_start()
        for sampler, stamps in zip(self.samplers, self._stamps, strict=True):
            thread = threading.Thread(
                target=self._sample_loop, args=(sampler, stamps), name=f"edge-{sampler.device}"
            )
            thread.start()
            self._threads.append(thread)
        forwarder = threading.Thread(target=self._forward_loop, name="edge-forwarder")
        forwarder.start()
        self._threads.append(forwarder)
        log.info(
            "gateway %s: %d source(s), %d reading(s) buffered from before",
            self.config.gateway,
            len(self.samplers),
            self.buffer.pending(),
        )

    def stop(self, drain_timeout: float = 5.0) -> None:
        """Stops sampling, then keeps forwarding for up to `drain_timeout` seconds while the
        broker is reachable so the buffer empties; what is left stays buffered for the next
        run."""
        self._stop_sampling.set()
        for sampler in self.samplers:
            sampler.wakeup.set()
        samplers, forwarder = self._threads[:-1], self._threads[-1:]
        for thread in samplers:
            thread.join()
        deadline = time.monotonic() + drain_timeout
        while self._connected.is_set() and time.monotonic() < deadline:
            with self._wake:
                if self.buffer.pending() == 0:
                    break
                self._wake.wait(0.1)
        self._stop.set()
        self._notify()
        for thread in forwarder:
            thread.join()
        if self._connected.is_set():
            info = self._client.publish(self.status_topic, b"offline", qos=1, retain=True)
            info.wait_for_publish(timeout=2.0)
        self._client.disconnect()
        self._client.loop_stop()
        for sampler in self.samplers:
            sampler.close()
        self._process_acks()
        self.buffer.close()
        self._log_stats()

    def stats(self) -> dict[str, int | bool]:
        return {
            "connected": self._connected.is_set(),
            "buffered": self.buffer.pending(),
            "dropped": self.buffer.dropped(),
            "sampled": self.sampled,
            "batches_sent": self.batches_sent,
            "readings_acked": self.readings_acked,
            "sample_errors": sum(s.errors for s in self.samplers),
        }

    def health(self) -> dict[str, object]:
        """What the status topic carries about the sources (module docstring)."""

        def stamp(at: float | None) -> str | None:
            if at is None:
                return None
            return dt.datetime.fromtimestamp(at, self.zone).isoformat(timespec="milliseconds")

        return {
            "status": "online",
            "sources": [
                {
                    "device": sampler.device,
                    "kind": sampler.source.kind,
                    "last_good": stamp(stamps.last_good),
                    "errors": sampler.errors,
                    "last_error": sampler.last_error,
                    "last_error_at": stamp(stamps.last_error_at),
                }
                for sampler, stamps in zip(self.samplers, self._stamps, strict=True)
            ],
        }

    def _publish_health(self) -> None:
        payload = orjson.dumps(self.health())
        self._client.publish(self.status_topic, payload, qos=1, retain=True)

    def _log_stats(self) -> None:
        stats = self.stats()
        log.info("gateway %s: %s", self.config.gateway, stats)
        if stats["dropped"] > self.dropped_at_start:
            log.warning(
                "buffer cap %d reached: %d oldest reading(s) dropped so far",
                self.buffer.cap,
                stats["dropped"],
            )

    # ---- sampling ----

    def _sample_loop(self, sampler: Sampler, stamps: _Stamps) -> None:
        next_at = self.clock()
        while True:
            # A polling sampler is woken only at stop; a subscribing one also by its changes.
            sampler.wakeup.wait(max(0.0, next_at - self.clock()))
            sampler.wakeup.clear()
            if self._stop_sampling.is_set():
                return
            now = self.clock()
            changes, read_now = sampler.take_changes()
            errors = sampler.errors
            if changes:
                self._stamp(sampler, stamps, changes, now)
            if read_now:
                next_at = now  # a lost subscription: read (and subscribe) again at once
            if now < next_at:
                if sampler.errors != errors:
                    stamps.last_error_at = now
                continue
            values = sampler.sample(now)
            if sampler.errors != errors:
                stamps.last_error_at = now
            if values:
                self._stamp(sampler, stamps, values, now)
            next_at += sampler.interval
            if values is None and sampler.pushes:
                # Its changes stop until a read opens a session again: retry sooner.
                next_at = min(next_at, now + SUBSCRIBE_RETRY_S)
            if next_at < self.clock():  # fell behind (a slow Modbus device): skip, never burst
                next_at = now + sampler.interval

    def _stamp(
        self, sampler: Sampler, stamps: _Stamps, values: dict[str, float], now: float
    ) -> None:
        stamps.last_good = now
        stamp = dt.datetime.fromtimestamp(now, self.zone).isoformat(timespec="milliseconds")

        def encode(seq: int, stamp: str = stamp, values: dict[str, float] = values) -> bytes:
            return orjson.dumps({"ts": stamp, "seq": seq, "metrics": values})

        self.buffer.append(sampler.device, encode)
        self.sampled += 1
        self._notify()

    # ---- forwarding ----

    def _forward_loop(self) -> None:
        batch = self.config.batch
        waiting_since: float | None = None  # when a partial batch was first seen
        next_stats = time.monotonic() + self.config.stats_interval
        next_health = time.monotonic() + self.config.status_interval
        while not self._stop.is_set():
            self._process_acks()
            if time.monotonic() >= next_stats:
                self._log_stats()
                next_stats = time.monotonic() + self.config.stats_interval
            if self._connected.is_set() and (
                self._health_due.is_set() or time.monotonic() >= next_health
            ):
                self._health_due.clear()
                self._publish_health()
                next_health = time.monotonic() + self.config.status_interval
            if not self._connected.is_set() or len(self._in_flight) >= batch.max_in_flight:
                self._wait(0.5)
                continue
            rows = self.buffer.oldest(batch.size, self._busy)
            if not rows:
                waiting_since = None
                self._wait(batch.interval)
                continue
            if len(rows) < batch.size:
                waiting_since = waiting_since or time.monotonic()
                remaining = batch.interval - (time.monotonic() - waiting_since)
                if remaining > 0:
                    self._wait(remaining)
                    continue
            waiting_since = None
            self._send(rows)

    def _wait(self, timeout: float) -> None:
        with self._wake:
            if not self._acks and not self._stop.is_set():
                self._wake.wait(timeout)

    def _send(self, rows: list[Row]) -> None:
        by_device: dict[str, list[Row]] = {}
        for row in rows:
            by_device.setdefault(row.device, []).append(row)
        for device, group in by_device.items():
            payload = b"[" + b",".join(row.payload for row in group) + b"]"
            info = self._client.publish(f"{self.prefix}/{device}/telemetry", payload, qos=1)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                # Not queued: the rows stay buffered and are picked up again.
                log.error("paho refused a batch: %s", mqtt.error_string(info.rc))
                return
            # NO_CONN: paho keeps a QoS 1 message and sends it after reconnecting.
            self._in_flight[info.mid] = (device, [row.id for row in group])
            self._busy.add(device)
            self.batches_sent += 1

    def _process_acks(self) -> None:
        acked: list[int] = []
        while self._acks:
            batch = self._in_flight.pop(self._acks.popleft(), None)
            if batch is not None:  # None: the status message
                device, ids = batch
                acked.extend(ids)
                self._busy.discard(device)
        if acked:
            self.buffer.delete(acked)
            self.readings_acked += len(acked)


def run_until_signalled(gateway: Gateway) -> None:
    """Runs the gateway until SIGINT or SIGTERM."""
    import signal

    done = threading.Event()

    def finish(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGINT, finish)
    signal.signal(signal.SIGTERM, finish)
    gateway.start()
    try:
        done.wait()
    finally:
        gateway.stop()
