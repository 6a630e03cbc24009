"""Stored input since a checkpoint: after the stamp only, in stamp order, a message's readings
of one device and instant as one observation, events in between, nothing before the ts floor;
and the newest stamp of a site."""

from __future__ import annotations

import datetime as dt

import pytest

from rules.verdicts import Event
from store.batches import Batch, EventRow, PartitionCache, ReadingRow, write_batch
from store.pool import connect
from store.replay import StoredReading, last_stamp, stored_since

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 7, 1, 9, tzinfo=dt.UTC).timestamp()


def test_stored_input_after_a_stamp_comes_back_in_the_order_it_was_taken(store_url: str) -> None:
    batch = Batch(1)
    # Received in this order (stamps 1..5 µs apart); the event arrives between two readings, and
    # a late message carries an older ts than the one before it.
    batch.readings += [
        ReadingRow("s1", "d1", "temperature", T0, 25.0, 1, T0 + 1.000001),
        ReadingRow("s1", "d1", "humidity", T0, 50.0, 1, T0 + 1.000001),
        ReadingRow("s1", "d2", "temperature", T0 + 5, 27.0, 7, T0 + 1.000002),
        ReadingRow("s1", "d1", "temperature", T0 - 30, 24.0, 0, T0 + 1.000004),
        ReadingRow("s1", "d1", "temperature", T0 - 3600, 20.0, None, T0 + 1.000005),
        ReadingRow("s2", "d9", "temperature", T0, 30.0, 1, T0 + 1.000002),  # another site
    ]
    batch.events.append(
        EventRow("s1", "c1", T0 + 2, "cleaning.completed", "wc1", "x", 3, {"k": 1}, T0 + 1.000003)
    )
    with connect(store_url) as conn:
        write_batch(conn, batch, PartitionCache())
        conn.commit()
        newest = last_stamp(conn, "s1"), last_stamp(conn, "s2"), last_stamp(conn, "s3")
        stamped = list(stored_since(conn, "s1", T0 + 1.000001, T0 - 60))
        everything = [item for _, item in stored_since(conn, "s1", T0, None)]
    stamps, taken = zip(*stamped, strict=True)
    assert stamps == pytest.approx((T0 + 1.000002, T0 + 1.000003, T0 + 1.000004), abs=1e-7)

    assert list(taken) == [
        StoredReading("d2", T0 + 5, 7, {"temperature": 27.0}),
        Event("c1", T0 + 2, "cleaning.completed", "wc1", "x", 3, {"k": 1}),
        StoredReading("d1", T0 - 30, 0, {"temperature": 24.0}),
    ]
    assert everything[0] == StoredReading("d1", T0, 1, {"humidity": 50.0, "temperature": 25.0})
    assert everything[-1] == StoredReading("d1", T0 - 3600, None, {"temperature": 20.0})
    assert len(everything) == 5
    # The newest stamp of a site, events included: where a site without a checkpoint starts.
    assert newest == pytest.approx((T0 + 1.000005, T0 + 1.000002, None), abs=1e-7)
