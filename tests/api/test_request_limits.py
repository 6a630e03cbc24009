"""Request limits at the HTTP edge (issue 18, finding 7), against the API served the way the
service serves it, in a process of its own so its memory can be measured: bodies over 2 MiB are
refused with 413 before they are read (declared by Content-Length or counted in a chunked body),
a body without a valid token is refused with 401 unread, a request head that does not arrive in
time and an idle kept-alive connection are closed, and connections are capped."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from api.tokens import create_token
from clausewatch.embedded import free_port
from tests.support import answers

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]
HEADER_TIMEOUT_S = 2.0
KEEP_ALIVE_S = 1
MAX_CONNECTIONS = 12
SERVER = f"""
import sys
from api.app import create_app
from api.serving import ServerLimits, server_config
import uvicorn
limits = ServerLimits(
    header_timeout_s={HEADER_TIMEOUT_S}, keep_alive_s={KEEP_ALIVE_S},
    max_connections={MAX_CONNECTIONS},
)
uvicorn.Server(server_config(create_app(sys.argv[1]), "127.0.0.1", int(sys.argv[2]), limits)).run()
"""
VALIDATE = "/api/v1/clauses/validate"


@dataclass
class Server:
    port: int
    pid: int

    def peak_rss_mib(self) -> float:
        """The process's peak resident memory so far (VmHWM), MiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM")


@pytest.fixture(scope="module")
def server(api_database_url: str) -> Iterator[Server]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, api_database_url, str(port)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 30
        while not answers(port):
            assert process.poll() is None, "the API process exited"
            assert time.monotonic() < deadline, "the API process did not start"
            time.sleep(0.05)
        yield Server(port, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def admin(api_database_url: str) -> str:
    with psycopg.connect(api_database_url) as conn:
        token, _ = create_token(conn, "admin", (), "limits")
    return token


@dataclass
class Answer:
    status: int | None  # None: the connection ended without an answer
    body: bytes
    body_bytes_sent: int
    seconds: float


def _post(
    port: int, size: int, *, chunked: bool, token: str | None = None, path: str = VALIDATE
) -> Answer:
    """POSTs a body of `size` bytes (sent by a thread, as fast as the server takes it) and reads
    the answer meanwhile, as a client that sends its whole body regardless would."""
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}")
    if token is not None:
        head.append(f"Authorization: Bearer {token}")
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sent = 0
    started = time.monotonic()

    def send_body() -> None:
        nonlocal sent
        block = b" " * (256 * 1024)
        try:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
            while sent < size:
                part = block[: size - sent]
                sock.sendall(b"%x\r\n%b\r\n" % (len(part), part) if chunked else part)
                sent += len(part)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server closed the connection: it will not read the rest

    sender = threading.Thread(target=send_body, name="body-sender", daemon=True)
    sender.start()
    received = b""
    try:
        while b"\r\n\r\n" not in received or not _complete(received):
            data = sock.recv(65536)
            if not data:
                break
            received += data
    except OSError:
        pass
    seconds = time.monotonic() - started
    sock.close()
    sender.join(30)
    if not received.startswith(b"HTTP/1.1 "):
        return Answer(None, b"", sent, seconds)
    head_text, _, body = received.partition(b"\r\n\r\n")
    return Answer(int(head_text.split()[1]), body, sent, seconds)


def _complete(received: bytes) -> bool:
    head, _, body = received.partition(b"\r\n\r\n")
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            return len(body) >= int(value)
    return False


def test_large_bodies_are_refused_unread_with_bounded_memory(server: Server, admin: str) -> None:
    warm = httpx.post(
        f"http://127.0.0.1:{server.port}{VALIDATE}",
        json={"yaml": "standard: {}\n"},
        headers={"Authorization": f"Bearer {admin}"},
        timeout=10,
    )
    assert warm.status_code == 200, warm.text
    before = server.peak_rss_mib()

    cases = [
        # (body size, chunked, token, expected status)
        (150 * MiB, False, None, 413),  # declared too large: refused before anything else
        (150 * MiB, True, None, 401),  # no token: refused before the body is read
        (150 * MiB, True, "cw_" + "x" * 43, 401),  # unknown token: the same
        (1 * MiB, False, None, 401),
        (3 * MiB, False, admin, 413),  # a valid token does not lift the limit
        (3 * MiB, True, admin, 413),  # counted while it arrives, cut at the limit
    ]
    for size, chunked, token, expected in cases:
        answer = _post(server.port, size, chunked=chunked, token=token)
        what = f"{size // MiB} MiB {'chunked' if chunked else 'declared'}, token {bool(token)}"
        assert answer.status == expected, f"{what}: {answer}"
        assert answer.seconds < 5.0, f"{what}: answered after {answer.seconds:.1f} s"
        if size > 40 * MiB:  # whatever the socket buffers took, the server read little of it
            assert answer.body_bytes_sent < 40 * MiB, f"{what}: {answer.body_bytes_sent} sent"
        if expected == 413:
            assert b"2097152 bytes" in answer.body, answer.body
        if expected == 401:
            assert b"token" in answer.body, answer.body

    grown = server.peak_rss_mib() - before
    assert grown < 30, f"peak memory grew by {grown:.0f} MiB"

    # A body at the limit, with a valid token, is read and answered.
    fits = _post(server.port, 2 * MiB - 64, chunked=False, token=admin)
    assert fits.status == 422  # read whole: blank JSON is not a clause file (the 422 of FastAPI)


def _closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closes `sock` (reading and discarding what it sends), or
    None when it is still open after `seconds`."""
    started = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - started < seconds:
        try:
            if not sock.recv(65536):
                return time.monotonic() - started
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - started
    return None


def test_a_request_head_that_does_not_arrive_in_time_is_cut_off(server: Server) -> None:
    silent = socket.create_connection(("127.0.0.1", server.port))
    dripping = socket.create_connection(("127.0.0.1", server.port))
    dripping.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    started = time.monotonic()
    closed_at: float | None = None
    dripping.settimeout(0.3)
    while time.monotonic() - started < HEADER_TIMEOUT_S + 4:  # one header byte every 0.3 s
        try:
            dripping.sendall(b"X")
            if not dripping.recv(1):
                closed_at = time.monotonic() - started
                break
        except TimeoutError:
            continue
        except OSError:
            closed_at = time.monotonic() - started
            break
    assert closed_at is not None and closed_at < HEADER_TIMEOUT_S + 1.5, closed_at
    waited = _closed_within(silent, HEADER_TIMEOUT_S + 2)
    assert waited is not None, "a connection that sends nothing stays open"
    silent.close()
    dripping.close()


def test_an_idle_kept_alive_connection_is_closed(server: Server) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    received = b""
    while not _complete(received):
        received += sock.recv(65536)
    assert received.startswith(b"HTTP/1.1 200")
    waited = _closed_within(sock, KEEP_ALIVE_S + 3)
    assert waited is not None and waited < KEEP_ALIVE_S + 1.5, waited
    sock.close()


def test_connections_are_capped(server: Server) -> None:
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(MAX_CONNECTIONS)]
    try:
        for sock in held:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # an unfinished head holds the slot
        over = httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=10)
        assert over.status_code == 503
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "the slots were not freed"
        time.sleep(0.05)
