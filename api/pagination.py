"""Opaque cursors for keyset pagination on (timestamp, id), newest first.

A cursor is the position of the last item of a page, base64url-encoded; the next page is every
row strictly before it in (timestamp desc, id desc) order, so rows inserted meanwhile never
shift or repeat a page. A malformed cursor is a 422 on the `cursor` query field.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt

import orjson
from fastapi import HTTPException, status

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def encode_cursor(at: dt.datetime, row_id: int) -> str:
    raw = orjson.dumps([at.isoformat(), row_id])
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, int]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        at_text, row_id = orjson.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        at = dt.datetime.fromisoformat(at_text)
        if at.tzinfo is None or type(row_id) is not int or not 0 <= row_id < 2**63:
            raise ValueError("bad cursor content")
        return at, row_id
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError, UnicodeError) as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [
                {
                    "loc": ["query", "cursor"],
                    "msg": "not a cursor returned by this API",
                    "type": "cursor_invalid",
                }
            ],
        ) from exc
