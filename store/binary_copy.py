"""PostgreSQL's binary COPY format (docs "COPY", "Binary Format"), encoded by hand where a
writer sends many rows: psycopg's per-field dumpers cost more than the rest of the write.

A stream is the signature, flags and header extension length; per row the field count and each
field as its length and bytes (-1: NULL); -1 as a field count to end.
"""

from __future__ import annotations

COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
COPY_TRAILER = b"\xff\xff"
NULL_FIELD = b"\xff\xff\xff\xff"


def text_field(text: str) -> bytes:
    """A text field: its length and its UTF-8 bytes."""
    raw = text.encode()
    return len(raw).to_bytes(4, "big") + raw
