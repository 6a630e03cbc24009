"""Conversions at the boundary between engine time (float epoch seconds, UTC) and the database
(aware datetimes). Every function that needs "now" takes it as a parameter; `wall_now` is what
callers pass outside tests."""

from __future__ import annotations

import datetime as dt


def wall_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def to_datetime(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def require_aware(at: dt.datetime, what: str = "time") -> dt.datetime:
    if at.tzinfo is None:
        raise ValueError(f"{what} must be timezone-aware")
    return at
