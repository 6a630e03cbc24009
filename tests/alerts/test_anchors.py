"""Anchors: the ledger's tip signed with a key outside the database and kept in files, so that what
a chain alone cannot show is found: a tail cut off, or a chain rewritten with every hash
recomputed. Tampering is done in SQL as the owner could (triggers off)."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from alerts.anchors import AnchorSource, anchor_tip, generate_key, public_key_path
from alerts.audit import audit
from clausewatch.cli import main
from store import ledger
from tests.alerts.conftest import T0

pytestmark = pytest.mark.integration


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "ledger.key"
    path.parent.mkdir()
    generate_key(path)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "anchors"


def append(conn: psycopg.Connection[Any], first: int, last: int) -> None:
    for i in range(first, last + 1):
        ledger.append(
            conn,
            [ledger.Entry("test.step", f"thing:{i}", {"n": i, "text": "整改完成"})],
            T0 + dt.timedelta(seconds=i),
        )
    conn.commit()


def anchor(conn: psycopg.Connection[Any], key: Path, folder: Path, minutes: int = 0) -> None:
    written = anchor_tip(conn, key, folder, T0 + dt.timedelta(hours=1, minutes=minutes))
    assert written is not None
    conn.commit()


def check(conn: psycopg.Connection[Any], key: Path, folder: Path) -> ledger.Verdict:
    result = audit(conn, AnchorSource(folder, (public_key_path(key),)).load())
    conn.rollback()
    assert result.anchors is not None and not result.anchors.problems
    return result.chain


def verify_cli(conn: psycopg.Connection[Any], key: Path, folder: Path) -> int:
    url = conn.info.dsn
    return main(["ledger", "verify", "--database-url", url, "--anchors", str(folder),
                 "--public-key", str(public_key_path(key))])  # fmt: skip


def rewrite_from(conn: psycopg.Connection[Any], seq: int) -> None:
    """Changes entry `seq` and recomputes every hash from there on: the chain links up again."""
    conn.execute("ALTER TABLE ledger DISABLE TRIGGER ledger_append_only")
    conn.execute("""UPDATE ledger SET payload = '{"n":0,"text":"未整改"}' WHERE seq = %s""", (seq,))
    rows = conn.execute(
        "SELECT seq, at, kind, entity, payload, prev_hash FROM ledger WHERE seq >= %s ORDER BY seq",
        (seq,),
    ).fetchall()
    prev = rows[0][5]
    for number, at, kind, entity, payload, _ in rows:
        digest = ledger.entry_hash(prev, number, at, kind, entity, payload)
        conn.execute(
            "UPDATE ledger SET prev_hash = %s, hash = %s WHERE seq = %s", (prev, digest, number)
        )
        prev = digest
    conn.execute("ALTER TABLE ledger ENABLE TRIGGER ledger_append_only")
    conn.commit()


def test_keygen_writes_a_key_only_its_owner_reads_and_never_overwrites_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "anchor.key"
    assert main(["ledger", "keygen", "--out", str(out)]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert public_key_path(out).read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert b"PRIVATE KEY" in out.read_bytes()
    before = out.read_bytes()
    assert main(["ledger", "keygen", "--out", str(out)]) == 2
    assert out.read_bytes() == before
    assert "never overwritten" in capsys.readouterr().err


def test_a_clean_ledger_verifies_against_its_anchors(
    conn: psycopg.Connection[Any], key: Path, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    anchor(conn, key, folder)  # the empty ledger
    append(conn, 1, 6)
    anchor(conn, key, folder, 1)
    assert anchor_tip(conn, key, folder, T0 + dt.timedelta(hours=2)) is None  # tip unchanged
    append(conn, 7, 10)
    anchor(conn, key, folder, 2)
    files = sorted(p.name for p in folder.iterdir())
    assert [f[:26] for f in files] == [
        "ledger-anchor-000000000000",
        "ledger-anchor-000000000006",
        "ledger-anchor-000000000010",
    ]
    assert conn.execute("SELECT seq FROM ledger_anchors ORDER BY id").fetchall() == [
        (0,),
        (6,),
        (10,),
    ]
    verdict = check(conn, key, folder)
    assert (verdict.ok, verdict.anchored_seq, verdict.tip_seq) == (True, 10, 10)
    capsys.readouterr()
    assert verify_cli(conn, key, folder) == 0
    out = capsys.readouterr().out
    assert "chain:   ok, 10 entries" in out
    assert "anchors: ok, 3 checked; the newest, entry 10 anchored" in out
    assert "records: ok" in out


def test_a_tail_cut_off_is_detected(
    conn: psycopg.Connection[Any], key: Path, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    append(conn, 1, 10)
    anchor(conn, key, folder)
    conn.execute("ALTER TABLE ledger DISABLE TRIGGER ledger_append_only")
    conn.execute("DELETE FROM ledger WHERE seq > 7")
    conn.execute("ALTER TABLE ledger ENABLE TRIGGER ledger_append_only")
    conn.commit()
    assert ledger.verify(conn).ok  # the chain alone still links up
    verdict = check(conn, key, folder)
    assert (verdict.ok, verdict.first_bad_seq, verdict.checked) == (False, 8, 7)
    assert verdict.problem == (
        "the ledger ends at entry 7 but entry 10 was anchored: entries 8 to 10 were removed "
        "from its end"
    )
    capsys.readouterr()
    assert verify_cli(conn, key, folder) == 1
    assert "chain:   BROKEN at entry 8: the ledger ends at entry 7" in capsys.readouterr().out


def test_a_chain_rewritten_with_recomputed_hashes_is_detected(
    conn: psycopg.Connection[Any], key: Path, folder: Path
) -> None:
    append(conn, 1, 4)
    anchor(conn, key, folder)
    append(conn, 5, 10)
    anchor(conn, key, folder, 1)
    rewrite_from(conn, 6)
    assert ledger.verify(conn).ok  # every hash recomputed: the chain alone checks out
    verdict = check(conn, key, folder)
    assert (verdict.ok, verdict.first_bad_seq, verdict.anchored_seq) == (False, 10, 4)
    assert verdict.problem == (
        "entry 10 does not have the hash anchored for it: the chain was rewritten between "
        "entry 5 and entry 10 and every later hash recomputed"
    )


def test_a_rewritten_chain_that_also_grew_past_its_anchor_is_detected(
    conn: psycopg.Connection[Any], key: Path, folder: Path
) -> None:
    append(conn, 1, 5)
    anchor(conn, key, folder)
    append(conn, 6, 8)
    rewrite_from(conn, 2)
    verdict = check(conn, key, folder)
    assert (verdict.ok, verdict.first_bad_seq) == (False, 5)
    assert "rewritten at or before entry 5" in (verdict.problem or "")


def test_a_forged_or_altered_anchor_file_is_a_problem(
    conn: psycopg.Connection[Any], key: Path, folder: Path, tmp_path: Path
) -> None:
    append(conn, 1, 3)
    anchor(conn, key, folder)
    (original,) = folder.iterdir()
    document = orjson.loads(original.read_bytes())
    document["seq"] = 2  # moved back, so a later truncation would pass
    original.write_bytes(orjson.dumps(document))
    other_key = tmp_path / "other.key"
    generate_key(other_key)
    append(conn, 4, 4)
    assert anchor_tip(conn, other_key, folder, T0 + dt.timedelta(hours=3)) is not None
    conn.rollback()
    anchors = AnchorSource(folder, (public_key_path(key),)).load()
    assert anchors.anchors == []
    assert sorted(p.split(": ", 1)[1] for p in anchors.problems) == [
        "signed by key "
        + orjson.loads(max(folder.iterdir()).read_bytes())["key_id"]
        + ", which is not among the public keys given",
        "the signature does not verify: the file was altered or forged",
    ]
    assert not audit(conn, anchors).ok


def test_without_anchors_verify_says_the_chain_is_not_anchored(
    conn: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    append(conn, 1, 2)
    assert main(["ledger", "verify", "--database-url", conn.info.dsn]) == 0
    assert "anchors: none given" in capsys.readouterr().out


def test_the_private_key_must_not_be_readable_by_others(
    conn: psycopg.Connection[Any], key: Path, folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key.chmod(0o644)
    url = conn.info.dsn
    assert main(["ledger", "anchor", "--database-url", url, "--key", str(key),
                 "--anchors", str(folder)]) == 2  # fmt: skip
    assert "readable by others" in capsys.readouterr().err
    key.chmod(0o600)
    assert main(["ledger", "anchor", "--database-url", url, "--key", str(key),
                 "--anchors", str(folder)]) == 0  # fmt: skip
    assert "wrote" in capsys.readouterr().out
