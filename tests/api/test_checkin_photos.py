"""A check-in's photo (issue 19) over real HTTP: JPEG, PNG or WebP only, known by the file's
first bytes whatever its declared type or name, at most 5 MiB (refused before it is read when
declared larger, and when it grows larger while streamed), stored in PostgreSQL and served
back as its own type with nosniff and a sandbox, only to tokens that see its site."""

from __future__ import annotations

import struct
import zlib

import httpx
import psycopg
import pytest

from api.tokens import create_token
from tests.api.conftest import auth

pytestmark = pytest.mark.integration

LIMIT = 5 * 1024 * 1024


def png(width: int = 2, height: int = 2) -> bytes:
    """A real PNG (grey pixels), made here so the test needs no image library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
# A 1×1 lossless WebP.
WEBP = (
    b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00"
    b"\x2f\x00\x00\x00\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00"
)


def upload(
    live_api: str, token: str, body: bytes, content_type: str, site: str = "site-a"
) -> httpx.Response:
    headers = {**auth(token), "Content-Type": content_type}
    return httpx.post(
        f"{live_api}/api/v1/checkin-photos",
        params={"site": site},
        content=body,
        headers=headers,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("body", "declared", "stored_as"),
    [
        (png(), "image/png", "image/png"),
        (JPEG_HEAD + b"\x00" * 64 + b"\xff\xd9", "image/jpeg", "image/jpeg"),
        (WEBP, "image/webp", "image/webp"),
        # The declared type is not trusted either way: the bytes say PNG.
        (png(), "application/octet-stream", "image/png"),
    ],
)
def test_a_photo_is_stored_and_served_as_its_own_type(
    live_api: str,
    api_database_url: str,
    tokens: dict[tuple[str, str], str],
    body: bytes,
    declared: str,
    stored_as: str,
) -> None:
    token = tokens[("facility_manager", "site-a")]
    answer = upload(live_api, token, body, declared)
    assert answer.status_code == 201, answer.text
    stored = answer.json()
    assert stored["content_type"] == stored_as and stored["size"] == len(body)

    served = httpx.get(live_api + stored["url"], headers=auth(token), timeout=10)
    assert served.status_code == 200
    assert served.content == body
    assert served.headers["content-type"] == stored_as
    assert served.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in served.headers["content-security-policy"]
    assert served.headers["content-disposition"].startswith("inline")

    # A viewer of the site may see it; a token of another site does not learn it exists.
    viewer = tokens[("viewer", "site-a")]
    assert httpx.get(live_api + stored["url"], headers=auth(viewer), timeout=10).status_code == 200
    with psycopg.connect(api_database_url) as conn:
        site_b, _ = create_token(conn, "admin", ("site-b",), "admin of b")
    assert httpx.get(live_api + stored["url"], headers=auth(site_b), timeout=10).status_code == 404
    assert httpx.get(live_api + stored["url"], timeout=10).status_code == 401


@pytest.mark.parametrize(
    ("body", "declared"),
    [
        (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "image/gif"),  # an image, not one we take
        # Fake extensions: a page, a program and a script sent as "photo.jpg" / image/jpeg.
        (b"<!doctype html><script>alert(1)</script>", "image/jpeg"),
        (b"MZ\x90\x00\x03\x00\x00\x00" + b"\x00" * 56, "image/jpeg"),
        (b"#!/bin/sh\nrm -rf /\n", "image/png"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>", "image/png"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "image/webp"),  # RIFF, but not WebP
    ],
)
def test_anything_but_jpeg_png_webp_is_refused_by_its_bytes(
    live_api: str, tokens: dict[tuple[str, str], str], body: bytes, declared: str
) -> None:
    answer = upload(live_api, tokens[("facility_manager", "site-a")], body, declared)
    assert answer.status_code == 415, answer.text
    assert "JPEG" in answer.json()["detail"]


def test_a_photo_over_5_mib_is_refused(live_api: str, tokens: dict[tuple[str, str], str]) -> None:
    token = tokens[("facility_manager", "site-a")]
    at_limit = JPEG_HEAD + b"\x00" * (LIMIT - len(JPEG_HEAD))
    assert upload(live_api, token, at_limit, "image/jpeg").status_code == 201
    # Declared larger: refused before the body is read.
    too_big = at_limit + b"\x00"
    answer = upload(live_api, token, too_big, "image/jpeg")
    assert answer.status_code == 413, answer.text
    # Streamed without a length (chunked): refused once it passes the limit.
    chunks = (too_big[i : i + 65536] for i in range(0, len(too_big), 65536))
    headers = {**auth(token), "Content-Type": "image/jpeg"}
    answer = httpx.post(
        f"{live_api}/api/v1/checkin-photos?site=site-a", content=chunks, headers=headers, timeout=30
    )
    assert answer.status_code == 413, answer.text


def test_who_may_upload(live_api: str, tokens: dict[tuple[str, str], str]) -> None:
    body = png()
    # A viewer reads, it does not act: 403. A token of site-a cannot upload for site-b: 403.
    assert upload(live_api, tokens[("viewer", "site-a")], body, "image/png").status_code == 403
    answer = upload(live_api, tokens[("facility_manager", "site-a")], body, "image/png", "site-b")
    assert answer.status_code == 403
    answer = upload(live_api, tokens[("facility_manager", "all")], body, "image/png", "nowhere")
    assert answer.status_code == 404
    empty = upload(live_api, tokens[("facility_manager", "site-a")], b"", "image/png")
    assert empty.status_code == 422
