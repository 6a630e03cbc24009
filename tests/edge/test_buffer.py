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
    assert [(row.device, row.seq) for row in again.after(0, 10)] == [
        ("a", 1), ("a", 2), ("a", 3), ("b", 1), ("a", 4),
    ]  # fmt: skip
    assert orjson.loads(again.after(0, 1)[0].payload)["seq"] == 1


def test_past_the_cap_the_oldest_rows_are_dropped_and_counted(tmp_path: Path) -> None:
    buffer = Buffer(tmp_path / "buffer.sqlite", cap=5)
    for _ in range(8):
        buffer.append("a", reading)
    assert buffer.pending() == 5
    assert buffer.dropped() == 3
    assert [row.seq for row in buffer.after(0, 10)] == [4, 5, 6, 7, 8]


def test_acknowledged_rows_are_deleted_and_the_cursor_skips_rows_in_flight(
    tmp_path: Path,
) -> None:
    buffer = Buffer(tmp_path / "buffer.sqlite", cap=100)
    for _ in range(6):
        buffer.append("a", reading)
    first = buffer.after(0, 3)
    second = buffer.after(first[-1].id, 3)
    assert [row.seq for row in second] == [4, 5, 6]
    buffer.delete([row.id for row in first] + [999])  # unknown ids are ignored
    assert buffer.pending() == 3
    assert [row.seq for row in buffer.after(0, 10)] == [4, 5, 6]
    assert buffer.last_seq("a") == 6 and buffer.last_seq("nobody") == 0
