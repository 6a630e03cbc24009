"""free_port picks ports a client's outgoing connection cannot take before the server binds."""

from __future__ import annotations

import socket

import pytest

from clausewatch.embedded import EPHEMERAL_RANGE, free_port


def test_a_free_port_is_below_the_ephemeral_range_and_bindable() -> None:
    if not EPHEMERAL_RANGE.exists():
        pytest.skip("the kernel's ephemeral range cannot be read here")
    low = int(EPHEMERAL_RANGE.read_text().split()[0])
    ports = [free_port() for _ in range(20)]
    assert all(1024 <= port < low for port in ports), ports
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[0]))  # nothing took it
