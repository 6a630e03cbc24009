"""The reporting period of a query (`since`, `until`), checked the same way by every router
that takes one, with 422 answers that name the query parameter at fault."""

from __future__ import annotations

import datetime as dt

from fastapi import HTTPException, status

# Ten years (with leap days): longer periods are mistakes, and would be slow to summarise.
MAX_PERIOD = dt.timedelta(days=3660)


def query_period(
    since: dt.datetime | None,
    until: dt.datetime | None,
    default: dt.timedelta,
    now: dt.datetime,
) -> tuple[dt.datetime, dt.datetime]:
    """[since, until): `until` defaults to `now`, `since` to `default` before `until`. Raises a
    422 HTTPException when since is not before until, the period is longer than MAX_PERIOD, or
    the default start would fall before the first representable time."""
    end = until if until is not None else now
    try:
        start = since if since is not None else end - default
    except OverflowError as exc:
        raise query_error("until", "too early to have a default period before it") from exc
    if start >= end:
        raise query_error("since", "must be before until")
    if end - start > MAX_PERIOD:
        raise query_error("since", "the period may be at most ten years long")
    return start, end


def query_error(field: str, message: str) -> HTTPException:
    """A 422 in FastAPI's validation-error shape, pointing at query parameter `field`."""
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        [{"loc": ["query", field], "msg": message, "type": "value_error"}],
    )
