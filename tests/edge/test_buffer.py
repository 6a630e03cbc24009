"""The SQLite store-and-forward buffer on its own: seq allocation that survives a reopen, the cap
that drops the oldest rows (counted), deletion of acknowledged rows."""

from __future__ import annotations

from pathlib import Path

import orjson

from edge.buffer import Buffer


def reading(seq: int) -> bytes:
    return orjson.dumps({"ts": 1_790_000_000_000 + seq, "seq": seq, "metrics": {"co2": 500}})


def test_seq_counts_per_device_and_continues_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite"
    first = Buffer(path, cap=100)
    assert [first.append("a", reading) for _ in range(3)] == [1, 2, 3]
    assert first.append("b", reading) == 1
    first.close()
    again = Buffer(path, cap=100)
    assert again.append("a", reading) == 4
    assert again.pending() == 5
    assert [(row.device, row.seq) for row in again.oldest(10)] == [
        ("a", 1), ("a", 2), ("a", 3), ("b", 1), ("a", 4),
    ]  # fmt: skip
    assert orjson.loads(again.oldest(1)[0].payload)["seq"] == 1


def test_past_the_cap_the_oldest_rows_are_dropped_and_counted(tmp_path: Path) -> None:
    buffer = Buffer(tmp_path / "buffer.sqlite", cap=5)
    for _ in range(8):
        buffer.append("a", reading)
    assert buffer.pending() == 5
    assert buffer.dropped() == 3
    assert [row.seq for row in buffer.oldest(10)] == [4, 5, 6, 7, 8]


def test_acknowledged_rows_are_deleted_and_devices_in_flight_are_skipped(
    tmp_path: Path,
) -> None:
    buffer = Buffer(tmp_path / "buffer.sqlite", cap=100)
    for _ in range(3):
        buffer.append("b", reading)
    for _ in range(6):
        buffer.append("a", reading)
    assert [(r.device, r.seq) for r in buffer.oldest(4, skip_devices={"b"})] == [
        ("a", 1), ("a", 2), ("a", 3), ("a", 4),
    ]  # fmt: skip
    first = [row for row in buffer.oldest(9) if row.device == "a"][:3]
    buffer.delete([row.id for row in first] + [999])  # unknown ids are ignored
    assert buffer.pending() == 6
    assert [(r.device, r.seq) for r in buffer.oldest(10, skip_devices={"b"})] == [
        ("a", 4), ("a", 5), ("a", 6),
    ]  # fmt: skip
    assert buffer.last_seq("a") == 6 and buffer.last_seq("nobody") == 0
