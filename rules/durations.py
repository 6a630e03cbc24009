"""Durations written by people ("90s", "15m", "2h", "1d", "1h30m") as seconds.

Durations are time, never sample counts: a rule must judge the same whatever the poll rate.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str | int | float) -> float:
    """Seconds in `text`; a bare number is seconds. Raises ValueError on anything else."""
    if isinstance(text, bool):
        raise ValueError("a duration is a number of seconds or text such as '15m'")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        return float(text)
    compact = text.replace(" ", "")
    pos, total = 0, 0.0
    for match in _PART.finditer(compact):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(compact) or not compact:
        raise ValueError(f"{text!r} is not a duration such as '90s', '15m', '2h', '1d' or '1h30m'")
    return total


def describe_duration(seconds: float) -> str:
    """Seconds as people read them: days and hours ("92 d", "1 d 12 h"), hours and minutes
    below a day ("2 h 30 min"), minutes below an hour, seconds below a minute."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [f"{days} d"] if days else []
    if hours:
        parts.append(f"{hours} h")
    if minutes and not days:
        parts.append(f"{minutes} min")
    return " ".join(parts) or "0 s"


def _validate(value: object) -> float:
    if isinstance(value, str | int | float):
        return parse_duration(value)
    raise ValueError("a duration is a number of seconds or text such as '15m'")


Duration = Annotated[float, BeforeValidator(_validate)]
"""A pydantic field type: accepts '15m' or 900 and holds seconds as a float."""
