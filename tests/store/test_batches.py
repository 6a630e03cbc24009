"""Writes: redelivery adds no rows, dead letters are capped, checkpoints are transactional."""

from __future__ import annotations

import datetime as dt
import gc
import weakref
from typing import Any

import orjson
import psycopg
import pytest

from rules.verdicts import ClauseRef, ComplianceInterval, LateReading, Subject
from store.batches import (
    DEAD_LETTER_PAYLOAD_CAP,
    SMALL_BATCH,
    Batch,
    DeadLetterRow,
    EventRow,
    PartitionCache,
    Reading,
    ReadingRow,
    write_batch,
    write_compliance_intervals,
    write_late_readings,
    write_readings,
)
from store.checkpoints import collector_paused, encode_part, load_checkpoint, save_checkpoint
from store.pool import connect

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 7, 1, 9, tzinfo=dt.UTC).timestamp()


def readings(device: str, n: int, *, seq: bool, start: float = T0) -> list[ReadingRow]:
    rows = []
    for i in range(n):
        ts = start + 60 * i
        for metric, value in (("temperature", 25.0 + i / 10), ("humidity", 50.0)):
            rows.append(ReadingRow("s1", device, metric, ts, value, i if seq else None, ts + 1))
    return rows


def count(conn: psycopg.Connection, table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0


def test_redelivered_batches_add_no_rows(store_url: str) -> None:
    with_seq = readings("d-seq", 50, seq=True)
    without_seq = readings("d-noseq", 50, seq=False)
    cache = PartitionCache()
    with connect(store_url) as conn:
        assert write_readings(conn, with_seq + without_seq, cache) == 200
    with connect(store_url) as conn:
        # The same batch again, a partial overlap, and a duplicate inside one batch.
        assert write_readings(conn, with_seq + without_seq, cache) == 0
        overlap = readings("d-seq", 60, seq=True)
        assert write_readings(conn, overlap + overlap[-2:], cache) == 20
        assert count(conn, "readings") == 220
        # New batches repeating rows within themselves, on a writer that saw no conflict yet:
        # a large one (COPY fast path, then the dedupe path) and a small one (inline INSERT).
        large = readings("d-large", 40, seq=False)
        assert len(large) > SMALL_BATCH
        assert write_readings(conn, large + large[:3], PartitionCache()) == 80
        small = readings("d-small", 5, seq=True)
        assert write_readings(conn, small + small[:3], PartitionCache()) == 10
        assert write_readings(conn, small, PartitionCache()) == 0
        assert count(conn, "readings") == 310


@pytest.mark.parametrize("n", [5, 100])  # the inline path and the COPY path
def test_same_stamp_different_seqs_are_all_kept(store_url: str, n: int) -> None:
    # A loaded gateway stamps several readings of one device in one millisecond: their seqs
    # tell them apart (SPEC §2: with seq the key is (device, seq)).
    same_stamp = [ReadingRow("s1", "d1", "co2", T0, 600.0 + i, i, T0 + 1) for i in range(n)]
    without_seq = [r._replace(device="d2", seq=None) for r in same_stamp]
    with connect(store_url) as conn:
        assert write_readings(conn, same_stamp, PartitionCache()) == n
        # The redelivered payloads (same ts and seq) add nothing, on either path.
        assert write_readings(conn, same_stamp, PartitionCache()) == 0
        assert write_readings(conn, same_stamp[:3], PartitionCache()) == 0
        # Without seq the key is (device, metric, ts): one reading of the same stamp is kept.
        assert write_readings(conn, without_seq, PartitionCache()) == 1
        assert write_readings(conn, without_seq[:1], PartitionCache()) == 0
        stored = conn.execute(
            "SELECT device, count(*), count(DISTINCT seq) FROM readings GROUP BY device"
            " ORDER BY device"
        ).fetchall()
    assert stored == [("d1", n, n), ("d2", 1, 0)]


@pytest.mark.parametrize("n", [5, 100])  # the inline path and the COPY path
def test_broker_stamped_redelivery_is_caught_by_seq(store_url: str, n: int) -> None:
    # No ts in the payload: each delivery is stamped with its own receive time.
    first = [ReadingRow("s1", "d1", "co2", T0 + i, 600.0, i, T0 + i, True) for i in range(n)]
    again = [r._replace(ts=r.ts + 300, received_at=r.received_at + 300) for r in first]
    no_seq = [r._replace(seq=None, ts=r.ts + 600) for r in first]
    with connect(store_url) as conn:
        assert write_readings(conn, first) == n
        assert write_readings(conn, again) == 0
        # Without seq there is no stable key: a second delivery is a second reading.
        assert write_readings(conn, no_seq) == n


def test_copy_and_inline_paths_store_one_float_as_one_timestamp(store_url: str) -> None:
    # The COPY path encodes times itself; the inline path passes datetimes. A float whose
    # fraction falls between two microseconds (or on a half) must become the same timestamp
    # on both, or a redelivery taking the other path is stored twice.
    fractions = [0.5e-6, 1.5e-6, 2.5e-6, 0.1234565, 0.9999995, 0.3, 1 / 3]
    times = [
        T0 + day * 86400 + hour * 3600 + f
        for day in range(2)
        for hour in range(7)
        for f in fractions
    ]
    rows = [ReadingRow("s1", "d1", "co2", t, 600.0, None, t + 0.0000005) for t in times]
    assert len(rows) > SMALL_BATCH
    with connect(store_url) as conn:
        assert write_readings(conn, rows, PartitionCache()) == len(rows)  # COPY
        for row in rows:
            assert write_readings(conn, [row], PartitionCache()) == 0  # inline
        stored = conn.execute("SELECT ts, received_at FROM readings ORDER BY ts").fetchall()
    expected = sorted(
        (dt.datetime.fromtimestamp(r.ts, dt.UTC), dt.datetime.fromtimestamp(r.received_at, dt.UTC))
        for r in rows
    )
    assert stored == expected


def test_the_readings_of_one_message_count_as_their_values(store_url: str) -> None:
    # The pipeline writes one Reading per message (three values here), on every path.
    readings = [
        Reading(
            "s1",
            f"d{i % 7}",
            T0 + i,
            i,
            {"temperature": 20.0 + i, "co2": 600.0, "humidity": 50.0},
            T0 + i + 1,
            False,
        )
        for i in range(40)
    ]
    small = [r._replace(ts=r.ts + 3600) for r in readings[:5]]
    with connect(store_url) as conn:
        assert write_readings(conn, readings, PartitionCache()) == 120  # COPY
        assert write_readings(conn, readings, PartitionCache()) == 0  # the dedupe path
        assert write_readings(conn, small, PartitionCache()) == 15  # inline
        stored = conn.execute("SELECT metric, count(*) FROM readings GROUP BY metric").fetchall()
    assert sorted(stored) == [("co2", 45), ("humidity", 45), ("temperature", 45)]


def test_events_and_dead_letters(store_url: str) -> None:
    event = EventRow("s1", "reader-1", T0, "cleaning.completed", "wc-1", "staff-1", 7, {}, T0)
    big = DeadLetterRow(T0, "cw/s1/d1/telemetry", b"x" * (DEAD_LETTER_PAYLOAD_CAP + 10), "too_big")
    batch = Batch(1, events=[event, event._replace(attrs={"checklist": "full"})])
    batch.dead_letters.append(big)
    with connect(store_url) as conn:
        result = write_batch(conn, batch)
        assert (result.events_new, result.dead_letters) == (1, 1)
        assert write_batch(conn, Batch(2, events=[event])).events_new == 0
        stored = conn.execute(
            "SELECT octet_length(payload), truncated, reason FROM dead_letters"
        ).fetchone()
        assert stored == (DEAD_LETTER_PAYLOAD_CAP, True, "too_big")


def test_compliance_intervals_and_late_readings_are_idempotent(store_url: str) -> None:
    clause = ClauseRef("gb.temp", 2, "abc123", "GB 1", "3.1", "Cooling", "energy", "major", True)
    intervals = [
        ComplianceInterval(clause, Subject("s1", "room-1", "d1"), T0, T0 + 60, "compliant"),
        ComplianceInterval(clause, Subject("s1", "room-1", "d1"), T0 + 60, T0 + 90, "violating"),
        ComplianceInterval(clause, Subject("s1", "wc-1"), T0, T0 + 90, "not_assessable"),
    ]
    late = [LateReading("s1", "d1", T0, "temperature")]
    with connect(store_url) as conn:
        assert write_compliance_intervals(conn, intervals) == 3
        assert write_compliance_intervals(conn, intervals) == 0
        assert write_late_readings(conn, late) == 1
        assert write_late_readings(conn, late) == 0
        row = conn.execute(
            "SELECT device, status FROM compliance_intervals WHERE space = 'wc-1'"
        ).fetchone()
        assert row == ("", "not_assessable")


def test_checkpoint_commits_and_rolls_back_with_its_readings(store_url: str) -> None:
    site = "s1"
    with connect(store_url) as conn, conn.transaction():
        write_readings(conn, readings("d1", 3, seq=True))
        save_checkpoint(conn, site, {"watermark": 1, "open": ["a"]}, T0 + 120)

    class Crash(Exception):
        pass

    with connect(store_url) as conn:
        with pytest.raises(Crash), conn.transaction():
            write_readings(conn, readings("d1", 3, seq=True, start=T0 + 3600))
            save_checkpoint(conn, site, {"watermark": 2}, T0 + 3720)
            raise Crash
        # Neither the second batch of readings nor its checkpoint is there.
        assert count(conn, "readings") == 6
        checkpoint = load_checkpoint(conn, site)
        assert checkpoint is not None
        assert checkpoint.state == {"watermark": 1, "open": ["a"]}
        assert checkpoint.watermark == T0 + 120
        assert load_checkpoint(conn, "other-site") is None


def test_sites_checkpointed_in_one_transaction_keep_their_own_parts(store_url: str) -> None:
    # One checkpoint job saves every site in one transaction; device ids may repeat per site.
    with connect(store_url) as conn, conn.transaction():
        save_checkpoint(conn, "s1", {"clock": 1}, 1.0, parts={"device:a": {"v": 1}})
        save_checkpoint(conn, "s2", {"clock": 1}, 1.0, parts={"device:a": {"v": 2}})
        save_checkpoint(conn, "s3", {"clock": 1}, 1.0, parts={"device:b": {"v": 3}})
    with connect(store_url) as conn:
        stored = {site: load_checkpoint(conn, site) for site in ("s1", "s2", "s3")}
    assert {site: c.parts for site, c in stored.items() if c is not None} == {
        "s1": {"device:a": {"v": 1}},
        "s2": {"device:a": {"v": 2}},
        "s3": {"device:b": {"v": 3}},
    }


def test_checkpoint_parts_are_stored_compressed_and_load_as_they_were(store_url: str) -> None:
    # A checkpoint's parts are a burst of WAL that every commit beside them waits for: they are
    # stored compressed (zlib), the rolling windows of a busy device as much as a small part.
    big = {"points": [1795413459.5 + i / 10 for i in range(2000)]}
    small = {  # a room sensor's part: a few instances alike
        "instances": {
            f"{clause}@1|room-1|s1": {"timeline": [[1795413459.5, "compliant"]], "pending": None}
            for clause in ("temp.cooling.min", "temp.heating.max", "humidity.max", "co2.max")
        }
    }
    parts = {"device:busy": big, "device:quiet": small}
    with connect(store_url) as conn, conn.transaction():
        save_checkpoint(conn, "s1", {"clock": 1}, 1.0, parts=parts)
    with connect(store_url) as conn:
        stored = dict(
            conn.execute(
                "SELECT part, octet_length(state) FROM engine_checkpoint_parts WHERE site = 's1'"
            ).fetchall()
        )
        checkpoint = load_checkpoint(conn, "s1")
    assert stored["device:busy"] < len(orjson.dumps(big)) / 3
    assert stored["device:quiet"] < len(orjson.dumps(small))
    assert checkpoint is not None and checkpoint.parts == parts


def test_checkpoint_parts_stored_before_compression_still_load(store_url: str) -> None:
    part = {"device": {"max_ts": 1795413459.5}, "instances": {}}
    with connect(store_url) as conn, conn.transaction():
        save_checkpoint(conn, "s1", {"clock": 1}, 1.0)
        conn.execute(
            "INSERT INTO engine_checkpoint_parts (site, part, state) VALUES ('s1', %s, %s)",
            ("device:old", orjson.dumps(part)),
        )
    with connect(store_url) as conn:
        checkpoint = load_checkpoint(conn, "s1")
    assert checkpoint is not None and checkpoint.parts == {"device:old": part}


def test_checkpoint_parts_are_replaced_one_by_one(store_url: str) -> None:
    with connect(store_url) as conn, conn.transaction():
        parts = {"device:a": {"v": 1}, "device:b": {"v": 1}, "space:x": {"v": 1}}
        save_checkpoint(conn, "s1", {"clock": 1}, 1.0, parts=parts, replace_parts=True)
    with connect(store_url) as conn, conn.transaction():
        # Only what changed: the header and one part.
        save_checkpoint(conn, "s1", {"clock": 2}, 2.0, parts={"device:b": {"v": 2}})
    with connect(store_url) as conn:
        checkpoint = load_checkpoint(conn, "s1")
        assert checkpoint is not None
        assert checkpoint.state == {"clock": 2}
        assert checkpoint.parts == {"device:a": {"v": 1}, "device:b": {"v": 2}, "space:x": {"v": 1}}

    class Crash(Exception):
        pass

    with connect(store_url) as conn:
        with pytest.raises(Crash), conn.transaction():
            save_checkpoint(conn, "s1", {"clock": 3}, 3.0, parts={"device:a": {"v": 3}})
            raise Crash
        checkpoint = load_checkpoint(conn, "s1")
        assert checkpoint is not None
        assert (checkpoint.state, checkpoint.parts["device:a"]) == ({"clock": 2}, {"v": 1})
    with connect(store_url) as conn, conn.transaction():
        # A fresh engine's checkpoint replaces every part saved before.
        save_checkpoint(conn, "s1", {"clock": 0}, 0.0, parts={"device:c": {}}, replace_parts=True)
    with connect(store_url) as conn:
        checkpoint = load_checkpoint(conn, "s1")
        assert checkpoint is not None
        assert checkpoint.parts == {"device:c": {}}


def test_dirty_marks_keep_odd_ids_intact(store_url: str) -> None:
    # Ids are validated upstream, but the store must not depend on it.
    odd = ['a"b', "c\\d", "e,f", "{g}", "h i", "NULL"]
    rows = [ReadingRow(name, name, "m", T0, 1.0, None, T0) for name in odd]
    with connect(store_url) as conn:
        assert write_readings(conn, rows) == len(odd)
        marked = conn.execute("SELECT site, device, bucket FROM rollup_dirty").fetchall()
    hour = dt.datetime.fromtimestamp(T0 - T0 % 3600, dt.UTC)
    assert sorted(marked) == sorted((name, name, hour) for name in odd)


@pytest.mark.parametrize(
    "names",
    [
        ["s1", "dev-1", "dev_2"],  # plain ids: the literal is joined whole
        ['a"b', "c\\d", "e,f", "{g}", "h i", "NULL"],  # escaped one by one
    ],
)
def test_a_copied_batch_marks_each_series_hour_once(store_url: str, names: list[str]) -> None:
    # Past SMALL_BATCH rows: the COPY path, whose marks go as text[] literals built by hand.
    minutes = SMALL_BATCH // len(names) + 2
    rows = [
        ReadingRow(name, name, metric, T0 + 60 * i, 1.0, None, T0)
        for name in names
        for metric in ("m", "n")
        for i in range(minutes)
    ]
    assert len(rows) > SMALL_BATCH
    with connect(store_url) as conn:
        assert write_readings(conn, rows) == len(rows)
        marked = conn.execute("SELECT site, device, metric, bucket FROM rollup_dirty").fetchall()
    hour = dt.datetime.fromtimestamp(T0 - T0 % 3600, dt.UTC)
    assert sorted(marked) == sorted((n, n, m, hour) for n in names for m in ("m", "n"))


def test_write_readings_never_commits_for_the_caller(store_url: str) -> None:
    cache = PartitionCache()
    with connect(store_url) as conn:
        write_readings(conn, readings("d1", 50, seq=False), cache)
        conn.commit()
        # Now every cache is warm, and the connection idle: nothing runs before the fast
        # path's savepoint unless write_readings opens the caller's transaction itself.
        assert write_readings(conn, readings("d1", 50, seq=False, start=T0 + 3600), cache) == 100
        conn.rollback()
        assert count(conn, "readings") == 100


def test_checkpoint_parts_replace_their_open_runs(store_url: str) -> None:
    # Each saved part replaces its instances' open runs (rules.runs); a whole checkpoint
    # replaces the site's; runs outside the schedule and instances not started are left out.
    def part(**instances: dict[str, object]) -> dict[str, object]:
        return {"instances": {key.replace("_", "|"): v for key, v in instances.items()}}

    def runs(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
        return conn.execute(
            "SELECT part, clause_id, status, since, known_until FROM engine_open_runs"
            " WHERE site = 's1' ORDER BY part, clause_id"
        ).fetchall()

    compliant = {"run_status": "compliant", "run_start": 100.0}
    with psycopg.connect(store_url) as conn:
        save_checkpoint(
            conn,
            "s1",
            {"clock": 1},
            200.0,
            parts={
                "device:a": part(
                    a_1_o1_a=compliant,
                    b_1_o1_a={"run_status": "outside_schedule", "run_start": 50.0},
                    c_1_o1_a={"run_status": None, "run_start": None},
                ),
                "space:wc": part(d_1_wc_={"run_status": "violating", "run_start": 150.0}),
            },
            replace_parts=True,
        )
        save_checkpoint(conn, "s2", {"clock": 1}, 1.0, parts={"device:a": part(a_1_o1_a=compliant)})
        assert runs(conn) == [
            ("device:a", "a", "compliant", 100.0, None),
            ("space:wc", "d", "violating", 150.0, None),
        ]
        failing = {"run_status": "compliant", "run_start": 100.0, "pending_since": 190.0}
        save_checkpoint(conn, "s1", {"clock": 2}, 300.0, parts={"device:a": part(a_1_o1_a=failing)})
        assert runs(conn) == [
            ("device:a", "a", "compliant", 100.0, 190.0),
            ("space:wc", "d", "violating", 150.0, None),
        ]
        save_checkpoint(conn, "s1", {"clock": 3}, 400.0, parts={}, replace_parts=True)
        assert runs(conn) == []
        assert conn.execute("SELECT count(*) FROM engine_open_runs").fetchone() == (1,)  # s2


def test_encoded_parts_are_saved_as_the_parts_themselves(store_url: str) -> None:
    # The pipeline encodes each part as it captures it (store.checkpoints.encode_part): what
    # is stored, parts and open runs, is what saving the parts themselves stores.
    parts: dict[str, dict[str, Any]] = {
        "device:a": {
            "instances": {
                "c.temp|2|o1|a": {"run_status": "violating", "run_start": 10.5, "t": 99.0},
                "c.hum|1|o1|a": {"run_status": "compliant", "run_start": 5.0, "clear_since": 8},
                "c.off|1|o1|a": {"run_status": "outside_schedule", "run_start": 1.0},
            },
            "device": {"max_ts": None, "seen_seqs": [[1], [99.0]]},
        },
        "space:卫生间": {
            "instances": {"c.clean|1|卫生间|": {"run_status": "not_assessable", "run_start": 3}}
        },
        "space:o1": {"instances": {}},
    }

    def stored(conn: psycopg.Connection[Any], site: str) -> tuple[Any, ...]:
        runs = conn.execute(
            "SELECT part, clause_id, clause_version, space, device, status, since, known_until"
            " FROM engine_open_runs WHERE site = %s ORDER BY part, clause_id",
            (site,),
        ).fetchall()
        checkpoint = load_checkpoint(conn, site)
        assert checkpoint is not None
        return checkpoint.parts, runs

    with psycopg.connect(store_url) as conn:
        save_checkpoint(conn, "plain", {"clock": 1}, 1.0, parts=parts, replace_parts=True)
        encoded = {name: encode_part("coded", name, part) for name, part in parts.items()}
        digests = save_checkpoint(conn, "coded", {"clock": 1}, 1.0, parts=encoded)
        assert stored(conn, "coded") == stored(conn, "plain")
        assert stored(conn, "coded")[0] == parts
        assert len(stored(conn, "coded")[1]) == 3  # outside the schedule: no run
        assert digests == {name: part.digest for name, part in encoded.items()}


def test_a_checkpoint_is_decoded_with_the_collector_paused(store_url: str) -> None:
    # Decoding makes many objects and no garbage: a collection set off meanwhile would scan
    # them all (at 100,000 devices 1.4-7.4 s of a 1.05 s load). Thresholds this low would
    # collect many times over while 200 parts are decoded.
    parts = {
        f"device:d{i}": {"instances": {}, "device": {"seen": list(range(50))}} for i in range(200)
    }
    collections: list[str] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(phase)

    with psycopg.connect(store_url) as conn:
        save_checkpoint(conn, "s1", {"clock": 1}, 1.0, parts=parts, replace_parts=True)
        thresholds = gc.get_threshold()
        gc.callbacks.append(count)
        try:
            gc.set_threshold(10, 1, 1)
            checkpoint = load_checkpoint(conn, "s1")
            during = len(collections)
            [{"seen": list(range(50))} for _ in range(200)]  # the same objects, collected
        finally:
            gc.callbacks.remove(count)
            gc.set_threshold(*thresholds)
    assert checkpoint is not None and checkpoint.parts == parts
    # At most the pause's own edges (its context manager is made, the collector resumes);
    # without it, one collection every ten of the parts' containers (76 here).
    assert during <= 2
    assert len(collections) - during > 20
    assert gc.isenabled()


def test_collector_paused_restores_what_it_found() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        assert not gc.isenabled()
        raise RuntimeError("a failed load")
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # a caller's own pause is left as it was
    finally:
        gc.enable()


class _Cycle:
    """An object in a reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


def test_what_a_kept_pause_makes_is_frozen_and_earlier_garbage_collected() -> None:
    # A restored engine is long-lived: collections after the pause would only scan it again
    # (at 100,000 devices the first young one after a build took 1.5 s of the restore). What
    # was garbage before the pause must not be frozen with it.
    garbage = weakref.ref(_Cycle())
    frozen = gc.get_freeze_count()
    try:
        with collector_paused(keep=True):
            assert not gc.isenabled()
            assert garbage() is None  # collected on the way in
            kept = [[i] for i in range(1_000)]  # lists: always tracked by the collector
        assert gc.isenabled()
        assert gc.get_freeze_count() - frozen >= len(kept)
    finally:
        gc.unfreeze()


def test_a_failed_kept_pause_freezes_nothing() -> None:
    frozen = gc.get_freeze_count()
    with pytest.raises(RuntimeError), collector_paused(keep=True):
        half_built = [[i] for i in range(1_000)]
        raise RuntimeError(f"a failed restore of {len(half_built)}")
    assert gc.get_freeze_count() == frozen
    assert gc.isenabled()
