"""MQTT topic layout (SPEC §2): `{prefix}/{site}/{device}/telemetry|event|status`.

A topic validates itself when parsed; the ids follow the registry's id pattern so a topic can
never name something the registry could not hold.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class TopicKind(enum.StrEnum):
    TELEMETRY = "telemetry"
    EVENT = "event"
    STATUS = "status"


_KINDS = {kind.value: kind for kind in TopicKind}


class TopicError(ValueError):
    """A topic outside the layout. `reason` is a stable dead-letter reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Topic:
    site: str
    device: str
    kind: TopicKind


def parse_topic(topic: str, prefix: str) -> Topic:
    """The site, device and kind of `topic`; raises TopicError (reason `bad_topic` or `bad_id`)."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != prefix:
        raise TopicError("bad_topic", f"expected {prefix}/SITE/DEVICE/KIND, got {topic[:200]!r}")
    _, site, device, kind_name = parts
    kind = _KINDS.get(kind_name)
    if kind is None:
        raise TopicError("bad_topic", f"unknown topic kind {kind_name[:64]!r}")
    if ID_RE.fullmatch(site) is None:
        raise TopicError("bad_id", f"site id {site[:80]!r} does not match {ID_RE.pattern}")
    if ID_RE.fullmatch(device) is None:
        raise TopicError("bad_id", f"device id {device[:80]!r} does not match {ID_RE.pattern}")
    return Topic(site, device, kind)


def topic_for(prefix: str, site: str, device: str, kind: TopicKind | str) -> str:
    return f"{prefix}/{site}/{device}/{TopicKind(kind).value}"


def subscription_filter(prefix: str, site: str = "+") -> str:
    """The filter a worker subscribes to: every device of one site, or of all sites."""
    return f"{prefix}/{site}/+/+"
