"""The hash chain: intact after appends from concurrent writers, and every kind of tampering
made directly in SQL is detected with the first bad entry named."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import psycopg
import pytest

from clausewatch.cli import main
from store import ledger
from store.pool import connect
from tests.alerts.conftest import T0

pytestmark = pytest.mark.integration


@pytest.fixture
def chain(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """Ten committed entries, and the append-only trigger off, as a tamperer with table
    rights would have it."""
    for i in range(10):
        ledger.append(
            conn,
            [ledger.Entry("test.step", f"thing:{i}", {"n": i, "text": "整改完成"})],
            T0 + dt.timedelta(seconds=i),
        )
    conn.commit()
    assert ledger.verify(conn).ok
    conn.execute("ALTER TABLE ledger DISABLE TRIGGER ledger_append_only")
    return conn


def test_an_intact_chain_verifies_and_names_its_tip(chain: psycopg.Connection[Any]) -> None:
    verdict = ledger.verify(chain)
    assert (verdict.ok, verdict.checked, verdict.tip_seq) == (True, 10, 10)
    (tip,) = chain.execute("SELECT hash FROM ledger WHERE seq = 10").fetchone() or (None,)
    assert verdict.tip_hash == tip


def test_the_ledger_refuses_updates_and_deletes_through_its_trigger(
    conn: psycopg.Connection[Any],
) -> None:
    ledger.append(conn, [ledger.Entry("test.step", "thing:1", {})], T0)
    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        conn.execute("DELETE FROM ledger")


def test_an_updated_row_is_detected(chain: psycopg.Connection[Any]) -> None:
    chain.execute("""UPDATE ledger SET payload = '{"n":5,"text":"未整改"}' WHERE seq = 5""")
    verdict = ledger.verify(chain)
    assert (verdict.ok, verdict.first_bad_seq, verdict.checked) == (False, 5, 4)
    assert "entry 5 was modified" in (verdict.problem or "")


def test_a_deleted_row_is_detected(chain: psycopg.Connection[Any]) -> None:
    chain.execute("DELETE FROM ledger WHERE seq = 4")
    verdict = ledger.verify(chain)
    assert (verdict.ok, verdict.first_bad_seq) == (False, 4)
    assert "entry 4 is missing" in (verdict.problem or "")


def test_a_deleted_row_with_the_rest_renumbered_is_detected(
    chain: psycopg.Connection[Any],
) -> None:
    chain.execute("DELETE FROM ledger WHERE seq = 4")
    chain.execute("UPDATE ledger SET seq = seq + 1000 WHERE seq > 4")
    chain.execute("UPDATE ledger SET seq = seq - 1001 WHERE seq > 1000")
    verdict = ledger.verify(chain)
    assert (verdict.ok, verdict.first_bad_seq) == (False, 4)
    assert "entry 4 was modified or renumbered" in (verdict.problem or "")


def test_a_rewritten_row_with_a_recomputed_hash_names_it(chain: psycopg.Connection[Any]) -> None:
    prev, at = chain.execute("SELECT prev_hash, at FROM ledger WHERE seq = 3").fetchone() or (
        "",
        T0,
    )
    payload = ledger.canonical_json({"n": 3, "text": "改写"}).decode()
    forged = ledger.entry_hash(prev, 3, at, "test.step", "thing:2", payload)
    chain.execute("UPDATE ledger SET payload = %s, hash = %s WHERE seq = 3", (payload, forged))
    verdict = ledger.verify(chain)
    assert (verdict.ok, verdict.first_bad_seq) == (False, 3)
    assert "entry 3 was rewritten together with its hash" in (verdict.problem or "")


def test_a_swapped_pair_is_detected(chain: psycopg.Connection[Any]) -> None:
    chain.execute("UPDATE ledger SET seq = -6 WHERE seq = 6")
    chain.execute("UPDATE ledger SET seq = 6 WHERE seq = 7")
    chain.execute("UPDATE ledger SET seq = 7 WHERE seq = -6")
    verdict = ledger.verify(chain)
    assert (verdict.ok, verdict.first_bad_seq) == (False, 6)
    assert "entry 6 is out of order" in (verdict.problem or "")


def test_an_inserted_row_with_a_recomputed_hash_is_detected(
    chain: psycopg.Connection[Any],
) -> None:
    chain.execute("UPDATE ledger SET seq = seq + 1000 WHERE seq >= 5")
    chain.execute("UPDATE ledger SET seq = seq - 999 WHERE seq > 1000")
    (prev,) = chain.execute("SELECT hash FROM ledger WHERE seq = 4").fetchone() or (None,)
    payload = ledger.canonical_json({"n": 99, "text": "伪造"}).decode()
    forged = ledger.entry_hash(prev, 5, T0, "test.step", "thing:99", payload)
    chain.execute(
        "INSERT INTO ledger VALUES (5, %s, 'test.step', 'thing:99', %s, %s, %s)",
        (T0, payload, prev, forged),
    )
    verdict = ledger.verify(chain)
    assert (verdict.ok, verdict.first_bad_seq) == (False, 5)
    assert "entry 5 was inserted" in (verdict.problem or "")


def test_concurrent_writers_keep_one_chain(
    conn: psycopg.Connection[Any], alerts_db_url: str
) -> None:
    def write(name: str) -> None:
        # One writer in autocommit mode, as a careless caller would be: append guards itself.
        with connect(alerts_db_url, autocommit=name == "c") as writer:
            for i in range(40):
                ledger.append(writer, [ledger.Entry("test.step", f"{name}:{i}", {"i": i})], T0)
                if not writer.autocommit:
                    writer.commit()

    threads = [threading.Thread(target=write, args=(n,)) for n in ("a", "b", "c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with connect(alerts_db_url, autocommit=True) as reader:  # as the API's pool may hand out
        verdict = ledger.verify(reader)
    assert (verdict.ok, verdict.checked) == (True, 120)


def test_the_command_exits_1_on_a_broken_chain(
    chain: psycopg.Connection[Any], alerts_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    chain.commit()
    assert main(["ledger", "verify", "--database-url", alerts_db_url]) == 0
    assert "chain:   ok, 10 entries" in capsys.readouterr().out
    chain.execute("DELETE FROM ledger WHERE seq = 3")
    chain.commit()
    assert main(["ledger", "verify", "--database-url", alerts_db_url]) == 1
    assert "entry 3 is missing" in capsys.readouterr().out
