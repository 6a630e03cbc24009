"""MQTT payloads → frozen typed messages, or dead letters with a stable reason (SPEC §2).

The decoder knows the loaded site models: a reading for an unknown site, device or metric is a
dead letter here, before it reaches the engine. A status (`online`/`offline`) may come from any
valid id under a known site: gateways publish their will on their own id.

Validation is hand-written rather than pydantic because this is the hot path (tens of thousands
of messages a second): one orjson parse, a few dict lookups and float checks per metric, no
intermediate models. Error paths may be slow. The module is compiled by mypyc on install
(setup.py; docs/design.md, "The compiled engine", has the rules that follow).

Reason codes (the `reason` column of dead letters and the label of the counter):
oversized, invalid_utf8, malformed_json, too_deep, too_many_items, bad_topic, bad_id,
unknown_site, unknown_device, unknown_metric, bad_shape, missing_value, bad_value, non_finite,
bad_timestamp, future_timestamp, too_old, bad_status.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

import orjson
from prometheus_client import Counter

from ingest.topics import ID_RE, TopicError, TopicKind, parse_topic
from rules.checkin import CHECKIN_REPORTER
from rules.site import LAST_DONE_REPORTER, SiteModel
from rules.verdicts import Event
from store.batches import DEAD_LETTER_PAYLOAD_CAP
from store.batches import Reading as Reading  # what a telemetry message decodes to

DEAD_LETTERS = Counter(
    "clausewatch_dead_letters", "Messages rejected by ingest, by reason", ["reason"]
)
MESSAGES = Counter("clausewatch_messages", "MQTT messages decoded, by topic kind", ["kind"])

REASONS = (
    "oversized",
    "invalid_utf8",
    "malformed_json",
    "too_deep",
    "too_many_items",
    "bad_topic",
    "bad_id",
    "unknown_site",
    "unknown_device",
    "unknown_metric",
    "bad_shape",
    "missing_value",
    "bad_value",
    "non_finite",
    "bad_timestamp",
    "future_timestamp",
    "too_old",
    "bad_status",
)
# Pre-bound children: labels() does a dict lookup and lock per call, the hot path avoids it.
_DEAD_LETTER_COUNTERS = {reason: DEAD_LETTERS.labels(reason) for reason in REASONS}
_MESSAGE_COUNTERS = {kind: MESSAGES.labels(kind.value) for kind in TopicKind}

# A dead letter keeps this much of the payload (enough to diagnose), `truncated` when cut.
RAW_CAP_BYTES = DEAD_LETTER_PAYLOAD_CAP
MAX_SOURCES = 1000  # entries of a gateway's health report
MAX_ATTR_DEPTH = 8  # event attrs are small records; deeper nesting is an attack or a bug
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})"
)
_METRIC_RE = re.compile(r"[a-z][a-z0-9_]*")
_EVENT_TYPE_RE = re.compile(r"[a-z][a-z0-9_.-]*")
# Final: compiled (setup.py), a module constant read in the loop is otherwise a dict lookup.
_READING_KEYS: Final = frozenset(("ts", "seq", "metrics"))
_EVENT_KEYS: Final = frozenset(("ts", "seq", "type", "space", "actor", "attrs"))
_STATUS_KEYS: Final = frozenset(("status", "sources"))
_isfinite: Final = math.isfinite


@dataclass(frozen=True, slots=True)
class Limits:
    max_payload_bytes: int = 256 * 1024
    max_items: int = 10_000  # readings or events in one array payload
    max_future_skew_s: float = 300.0
    max_age_s: float = 7 * 86400.0


@dataclass(frozen=True, slots=True)
class EventMessage:
    site: str
    event: Event
    received_at: float
    broker_stamped: bool


@dataclass(frozen=True, slots=True)
class StatusMessage:
    site: str
    device: str
    online: bool
    received_at: float
    sources: bytes | None = None  # an edge gateway's health report of its sources, JSON


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    payload: bytes  # capped at RAW_CAP_BYTES
    reason: str
    detail: str
    received_at: float
    site: str | None = None
    device: str | None = None
    truncated: bool = False  # the payload was longer than RAW_CAP_BYTES and is cut


Decoded = Reading | EventMessage | StatusMessage | DeadLetter


_EVENT_REPORTERS = frozenset({CHECKIN_REPORTER, LAST_DONE_REPORTER})


class _Reject(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class DeviceIndex:
    """What may be published: site → device → metric names, from the loaded site models."""

    devices: Mapping[str, Mapping[str, frozenset[str]]] = field(default_factory=dict)

    @classmethod
    def from_sites(cls, sites: Iterable[SiteModel]) -> DeviceIndex:
        # Devices of a kind give the same metrics: one set for all of them, not one each
        # (216 bytes a device at 100,000 devices).
        alike: dict[frozenset[str], frozenset[str]] = {}
        return cls(
            {
                site.site.id: {
                    d.id: alike.setdefault(names, names)
                    for d in site.devices
                    for names in (frozenset(d.metrics),)
                }
                for site in sites
            }
        )


# A topic resolved to a known device: site, device, kind, the device's metric names.
_Route = tuple[str, str, TopicKind, frozenset[str]]


class Decoder:
    """Turns one MQTT message into typed messages. Its state: a cache of the topics resolved to
    known devices (bounded by the registry: a topic of anything unknown is not kept), emptied
    when `index` changes, and the messages decoded since the last `report()`."""

    def __init__(self, index: DeviceIndex, prefix: str = "cw", limits: Limits = Limits()) -> None:
        self._index = index
        self._routes: dict[str, _Route] = {}
        # Each site's id as one string for all of its routes (split from each topic, it was 54
        # bytes of every device's route).
        self._site_ids: dict[str, str] = {}
        # Messages decoded by kind since the last `report()`: a Prometheus inc() takes a lock,
        # which cost more than the rest of decoding a reading's topic.
        self._decoded = dict.fromkeys(TopicKind, 0)
        self.prefix = prefix
        self.limits = limits

    @property
    def index(self) -> DeviceIndex:
        return self._index

    @index.setter
    def index(self, index: DeviceIndex) -> None:
        self._index = index
        self._routes = {}
        self._site_ids = {}

    def decode(self, topic: str, payload: bytes, received_at: float) -> list[Decoded]:
        """Every message in the payload (an array yields several), each good or a dead letter."""
        site = device = None
        try:
            if len(payload) > self.limits.max_payload_bytes:
                raise _Reject(
                    "oversized",
                    f"{len(payload)} bytes, limit {self.limits.max_payload_bytes}",
                )
            route = self._routes.get(topic)
            if route is None:
                parsed = parse_topic(topic, self.prefix)
                site, device = parsed.site, parsed.device
                devices = self._index.devices.get(site)
                if devices is None:
                    raise _Reject("unknown_site", f"site {site!r} is not in the registry")
                if parsed.kind is TopicKind.STATUS:
                    # Any valid id of a known site: gateways report here without being devices.
                    return [self._status(site, device, payload, received_at)]
                metrics = devices.get(device)
                if (
                    metrics is None
                    and device in _EVENT_REPORTERS
                    and parsed.kind is TopicKind.EVENT
                ):
                    # Field check-ins (rules/checkin.py) and last-done times set through the
                    # API (rules/site.py): no devices of the site, events only.
                    metrics = frozenset()
                if metrics is None:
                    raise _Reject("unknown_device", f"device {device!r} is not in site {site!r}")
                site = self._site_ids.setdefault(site, site)
                route = self._routes[topic] = (site, device, parsed.kind, metrics)
            site, device, kind, metrics = route
            body = _parse_json(payload)
        except TopicError as exc:
            return [_dead(topic, payload, exc.reason, exc.detail, received_at, None, None)]
        except _Reject as exc:
            return [_dead(topic, payload, exc.reason, exc.detail, received_at, site, device)]

        if isinstance(body, list):
            if len(body) > self.limits.max_items:
                detail = f"{len(body)} items in one payload, limit {self.limits.max_items}"
                return [_dead(topic, payload, "too_many_items", detail, received_at, site, device)]
            items = body
        else:
            items = [body]
        out: list[Decoded] = []
        is_telemetry = kind is TopicKind.TELEMETRY
        for index, item in enumerate(items):
            try:
                if is_telemetry:
                    out.append(self._reading(site, device, metrics, item, received_at))
                else:
                    out.append(self._event(site, device, item, received_at))
            except _Reject as exc:
                raw = payload if len(items) == 1 else orjson.dumps(item)
                detail = exc.detail if len(items) == 1 else f"item {index}: {exc.detail}"
                out.append(_dead(topic, raw, exc.reason, detail, received_at, site, device))
        self._decoded[kind] += 1
        return out

    def report(self) -> None:
        """Adds the messages decoded since the last call to their Prometheus counter (the
        pipeline calls it once per flush)."""
        for kind, count in self._decoded.items():
            if count:
                _MESSAGE_COUNTERS[kind].inc(count)
                self._decoded[kind] = 0

    def _reading(
        self,
        site: str,
        device: str,
        known: frozenset[str],
        item: object,
        received_at: float,
    ) -> Reading:
        if not isinstance(item, dict):
            raise _Reject("bad_shape", "a reading is a JSON object")
        if not _READING_KEYS.issuperset(item):
            raise _Reject("bad_shape", f"unknown fields {sorted(set(item) - _READING_KEYS)}")
        raw_metrics = item.get("metrics")
        if not isinstance(raw_metrics, dict) or not raw_metrics:
            raise _Reject("missing_value", "'metrics' must be an object with at least one value")
        # The parsed object itself when every value is a float already (no copy per reading);
        # a copy when an integer is made a float.
        metrics: dict[str, float] = raw_metrics
        for name, value in raw_metrics.items():
            if name not in known:
                if _METRIC_RE.fullmatch(name) is None:
                    raise _Reject("bad_id", f"metric name {name[:80]!r} is not valid")
                raise _Reject("unknown_metric", f"device {device!r} has no metric {name!r}")
            if type(value) is float:
                if not _isfinite(value):
                    raise _Reject("non_finite", f"{name} is {value}")
            elif type(value) is int:
                if metrics is raw_metrics:
                    metrics = dict(raw_metrics)
                metrics[name] = float(value)
            elif value is None:
                raise _Reject("missing_value", f"{name} is null")
            else:
                raise _Reject("bad_value", f"{name} is not a number")
        ts, stamped = self._timestamp(item.get("ts"), received_at)
        # As mqtt.py makes its messages: without the named tuple's Python-level __new__.
        return tuple.__new__(
            Reading, (site, device, ts, _seq(item.get("seq")), metrics, received_at, stamped)
        )

    def _event(self, site: str, device: str, item: object, received_at: float) -> EventMessage:
        if not isinstance(item, dict):
            raise _Reject("bad_shape", "an event is a JSON object")
        if not _EVENT_KEYS.issuperset(item):
            raise _Reject("bad_shape", f"unknown fields {sorted(set(item) - _EVENT_KEYS)}")
        kind = item.get("type")
        if not isinstance(kind, str) or _EVENT_TYPE_RE.fullmatch(kind) is None:
            raise _Reject("bad_shape", "'type' must be an event type such as cleaning.completed")
        space = item.get("space")
        if space is not None and (not isinstance(space, str) or ID_RE.fullmatch(space) is None):
            raise _Reject("bad_id", f"space id {str(space)[:80]!r} is not valid")
        actor = item.get("actor")
        if actor is not None and (not isinstance(actor, str) or len(actor) > 128):
            raise _Reject("bad_shape", "'actor' must be a string of at most 128 characters")
        attrs = item.get("attrs", {})
        if not isinstance(attrs, dict):
            raise _Reject("bad_shape", "'attrs' must be an object")
        if _depth(attrs, MAX_ATTR_DEPTH) > MAX_ATTR_DEPTH:
            raise _Reject("too_deep", f"'attrs' nests deeper than {MAX_ATTR_DEPTH} levels")
        ts, stamped = self._timestamp(item.get("ts"), received_at)
        event = Event(device, ts, kind, space, actor, _seq(item.get("seq")), attrs)
        return EventMessage(site, event, received_at, stamped)

    def _status(self, site: str, device: str, payload: bytes, received_at: float) -> StatusMessage:
        text = payload.strip()
        if text == b"online":
            return StatusMessage(site, device, True, received_at)
        if text == b"offline":
            return StatusMessage(site, device, False, received_at)
        if text.startswith(b"{"):
            # An edge gateway's health report (edge/gateway.py): its status and its sources'.
            body = _parse_json(text)
            if (
                isinstance(body, dict)
                and _STATUS_KEYS.issuperset(body)
                and body.get("status") in ("online", "offline")
                and _sources_ok(body.get("sources", []))
            ):
                sources = body.get("sources")
                return StatusMessage(
                    site,
                    device,
                    body["status"] == "online",
                    received_at,
                    None if sources is None else orjson.dumps(sources),
                )
        raise _Reject(
            "bad_status",
            "status payload must be 'online', 'offline' or "
            '{"status": "online"|"offline", "sources": [...]}',
        )

    def _timestamp(self, raw: object, received_at: float) -> tuple[float, bool]:
        if raw is None:
            return received_at, True
        if type(raw) is int:
            ts = raw / 1000.0
        elif isinstance(raw, str):
            ts = _rfc3339(raw)
        else:
            raise _Reject("bad_timestamp", "'ts' must be RFC 3339 text or integer epoch ms")
        if ts > received_at + self.limits.max_future_skew_s:
            raise _Reject(
                "future_timestamp",
                f"ts is {ts - received_at:.0f} s ahead of the receive time "
                f"(limit {self.limits.max_future_skew_s:.0f} s)",
            )
        if ts < received_at - self.limits.max_age_s:
            raise _Reject(
                "too_old",
                f"ts is {received_at - ts:.0f} s old (limit {self.limits.max_age_s:.0f} s)",
            )
        return ts, False


def _sources_ok(sources: object) -> bool:
    """A health report's `sources`: a list of at most MAX_SOURCES objects."""
    return (
        isinstance(sources, list)
        and len(sources) <= MAX_SOURCES
        and all(isinstance(entry, dict) for entry in sources)
    )


def _parse_json(payload: bytes) -> object:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise _classify_json_error(payload, str(exc)) from None


def _classify_json_error(payload: bytes, message: str) -> _Reject:
    if "depth limit" in message or "recursion" in message:
        return _Reject("too_deep", message)
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _Reject("invalid_utf8", str(exc))
    if "infinity" in message:
        return _Reject("non_finite", message)
    # orjson rejects the NaN and Infinity literals as syntax; the stdlib parser names them, so a
    # NaN from a careless publisher gets the reason that says what is wrong.
    try:
        json.loads(text, parse_constant=_reject_constant)
    except _Reject as exc:
        return exc
    except (ValueError, RecursionError):
        pass
    return _Reject("malformed_json", message)


def _reject_constant(name: str) -> object:
    raise _Reject("non_finite", f"{name} is not a finite number")


def _rfc3339(text: str) -> float:
    if _RFC3339.fullmatch(text) is None:
        raise _Reject("bad_timestamp", f"{text[:64]!r} is not RFC 3339 with an offset")
    try:
        # Python ≤ 3.11 parses at most 6 fractional digits; nanoseconds are cut to micro.
        head, dot, rest = text.partition(".")
        if dot:
            digits = len(rest) - len(rest.lstrip("0123456789"))
            text = f"{head}.{rest[: min(digits, 6)].ljust(6, '0')}{rest[digits:]}"
        return dt.datetime.fromisoformat(text.replace("z", "Z")).timestamp()
    except ValueError as exc:
        raise _Reject("bad_timestamp", f"{text[:64]!r}: {exc}") from None


def _seq(raw: object) -> int | None:
    if raw is None:
        return None
    if type(raw) is not int or raw < 0 or raw >= 2**63:
        raise _Reject("bad_shape", "'seq' must be a non-negative 64-bit integer")
    return raw


def _depth(node: object, limit: int) -> int:
    """Nesting depth of containers in `node`, counting stops past `limit`."""
    if limit < 0:
        return 1
    if isinstance(node, dict):
        return 1 + max((_depth(v, limit - 1) for v in node.values()), default=0)
    if isinstance(node, list):
        return 1 + max((_depth(v, limit - 1) for v in node), default=0)
    return 0


def _dead(
    topic: str,
    payload: bytes,
    reason: str,
    detail: str,
    received_at: float,
    site: str | None,
    device: str | None,
) -> DeadLetter:
    _DEAD_LETTER_COUNTERS[reason].inc()
    return DeadLetter(
        topic[:512],
        bytes(payload[:RAW_CAP_BYTES]),
        reason,
        detail[:500],
        received_at,
        site,
        device,
        truncated=len(payload) > RAW_CAP_BYTES,
    )
