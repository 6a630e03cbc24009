"""Hostile payloads: oversized, nested past any sane depth, invalid UTF-8, arrays of a huge
number of items. Each is rejected with its reason, in bounded memory, and the service goes on
storing good readings."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from ingest.decode import DeadLetter, Decoder, DeviceIndex, Limits
from rules.site import SiteModel
from tests.support import OwnBroker, wait_for

LIMITS = Limits()  # the service's defaults: 256 KiB payloads, 10,000 items
TOPIC = "cw/fault-hq/s1/telemetry"


def hostile() -> list[tuple[str, bytes, str]]:
    """(name, payload, expected reason)."""
    now_ms = int(time.time() * 1000)
    one = {"metrics": {"co2": 6}}  # small, so 10,001 of them fit under the size limit
    many_items = orjson.dumps([one] * (LIMITS.max_items + 1))
    return [
        ("oversized", b'{"metrics": {"co2": 1}, "pad": "' + b"x" * (8 << 20) + b'"}', "oversized"),
        ("nested arrays", b"[" * 200_000 + b"]" * 200_000, "oversized"),
        ("nested within the size limit", b"[" * 100_000 + b"]" * 100_000, "too_deep"),
        ("nested objects", b'{"a":' * 20_000 + b"1" + b"}" * 20_000, "too_deep"),
        ("invalid UTF-8", b'{"ts": %d, "metrics": {"co2": 1}, "x": "\xc3\x28"}' % now_ms,
         "invalid_utf8"),
        ("lone surrogate bytes", b'{"metrics": {"co2\xed\xa0\x80": 1}}', "invalid_utf8"),
        ("too many items", many_items, "too_many_items"),
        ("a huge array of numbers", b"[" + b"1," * 120_000 + b"1]", "too_many_items"),
    ]  # fmt: skip


@pytest.fixture
def decoder(config_dir: Path) -> Decoder:
    from config.files import load_config_dir

    sites: dict[str, SiteModel] = load_config_dir(config_dir).sites
    return Decoder(DeviceIndex.from_sites(sites.values()), "cw", LIMITS)


@pytest.mark.parametrize("index", range(len(hostile())), ids=[name for name, *_ in hostile()])
def test_each_is_rejected_with_its_reason_in_bounded_memory(decoder: Decoder, index: int) -> None:
    name, payload, reason = hostile()[index]
    tracemalloc.start()
    try:
        out = decoder.decode(TOPIC, payload, time.time())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(out) == 1 and isinstance(out[0], DeadLetter), name
    assert out[0].reason == reason, out[0].detail
    assert out[0].detail
    assert len(out[0].payload) <= 4096, "a dead letter keeps a capped copy of the payload"
    # Parsing what is accepted at all costs a bounded multiple of the size limit; an oversized
    # payload is never parsed.
    bound = 1 << 20 if reason == "oversized" else 32 * LIMITS.max_payload_bytes
    assert peak < bound, f"{name}: peak {peak / 2**20:.1f} MiB"


@pytest.fixture
def forwarding_broker(tmp_path: Path) -> Iterator[OwnBroker]:
    """The bundled Mosquitto configuration without its message size limit: what is tested here
    is the service's own defence, as behind a broker that forwards payloads of any size."""
    folder = tmp_path / "forwarding-broker"
    folder.mkdir()
    broker = OwnBroker(folder, message_size_limit=0)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.mark.integration
def test_through_the_service_each_is_a_dead_letter_and_memory_stays_bounded(
    fresh_database_url: str,
    forwarding_broker: OwnBroker,
    config_dir: Path,
    service_factory: Callable[..., Any],
    publisher_factory: Callable[[str], Any],
) -> None:
    url = fresh_database_url
    service = service_factory(url, forwarding_broker.url, config_dir)
    service.start()
    publisher = publisher_factory(forwarding_broker.url)
    publisher.send("s1", int(time.time() * 1000), {"co2": 600.0})  # warm-up
    wait_for(lambda: count(url, "readings") == 1, 20, "the first reading")
    rss_before = service.rss_kib()

    payloads = hostile()
    rounds = 5
    for _ in range(rounds):
        for _, payload, _ in payloads:
            publisher.send_raw("s1", payload).wait_for_publish(30)
    publisher.send("s1", int(time.time() * 1000) + 1, {"co2": 610.0})
    wait_for(lambda: count(url, "dead_letters") == rounds * len(payloads), 60, "dead letters")
    wait_for(lambda: count(url, "readings") == 2, 20, "the good reading after them")

    with psycopg.connect(url) as conn:
        reasons = sorted(
            conn.execute("SELECT reason, count(*) FROM dead_letters GROUP BY 1").fetchall()
        )
        largest = conn.execute("SELECT max(length(payload)) FROM dead_letters").fetchone()
    expected: dict[str, int] = {}
    for _, _, reason in payloads:
        expected[reason] = expected.get(reason, 0) + rounds
    assert reasons == sorted(expected.items())
    assert largest is not None and largest[0] <= 4096
    growth_mib = (service.rss_kib() - rss_before) / 1024
    assert growth_mib < 100, f"the service grew by {growth_mib:.0f} MiB"
    assert service.process.poll() is None


def count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0
