"""GET /api/v1/ledger/verify gives the verdict of `clausewatch ledger verify`: the chain against the
signed anchors the app was given, and the records against the ledger."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from alerts.anchors import AnchorSource, anchor_tip, generate_key, public_key_path
from api.app import create_app
from api.tokens import create_token
from store import ledger
from store.migrate import migrate
from store.pool import connect
from tests.api.conftest import TEST_STREAM, auth
from tests.support import throwaway_database

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 7, 1, tzinfo=dt.UTC)


@pytest.fixture
def anchored(pg_server_url: str, tmp_path: Path) -> Iterator[tuple[str, AnchorSource]]:
    """A database with ten ledger entries, anchored at the tenth."""
    key = tmp_path / "ledger.key"
    generate_key(key)
    folder = tmp_path / "anchors"
    with throwaway_database(pg_server_url, "cw_api_ledger") as url:
        migrate(url)
        with connect(url) as conn:
            for i in range(1, 11):
                ledger.append(conn, [ledger.Entry("test.step", f"thing:{i}", {"n": i})], T0)
            anchor_tip(conn, key, folder, T0)
            conn.commit()
        yield url, AnchorSource(folder, (public_key_path(key),))


def verdict(url: str, anchors: AnchorSource | None) -> dict[str, object]:
    with psycopg.connect(url) as conn:
        token, _ = create_token(conn, "admin", (), "verifier")
    with TestClient(create_app(url, stream=TEST_STREAM, ledger_anchors=anchors)) as client:
        response = client.get("/api/v1/ledger/verify", headers=auth(token))
    assert response.status_code == 200
    body: dict[str, object] = response.json()
    return body


def test_a_clean_anchored_ledger_is_ok(anchored: tuple[str, AnchorSource]) -> None:
    url, anchors = anchored
    body = verdict(url, anchors)
    assert (body["ok"], body["anchored"], body["tip_seq"], body["problems"]) == (True, True, 10, [])
    assert body["records"] == {
        "alerts": 0,
        "timeline": 0,
        "entries": 0,
        "problem_count": 0,
        "problems": [],
    }
    assert body["anchors"] == {
        "folder": str(anchors.folder),
        "count": 1,
        "latest_seq": 10,
        "latest_hash": body["tip_hash"],
        "latest_at": "2026-07-01T00:00:00Z",
        "matched_seq": 10,
        "problems": [],
    }


def test_a_cut_off_tail_is_reported(anchored: tuple[str, AnchorSource]) -> None:
    url, anchors = anchored
    with connect(url) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("DELETE FROM ledger WHERE seq > 8")
    assert verdict(url, None)["ok"] is True  # without its anchors the chain looks fine
    body = verdict(url, anchors)
    assert (body["ok"], body["first_bad_seq"], body["tip_seq"]) == (False, 9, 8)
    [problem] = body["problems"]  # type: ignore[misc]
    assert problem.startswith(
        "entry 9: the ledger ends at entry 8 but entry 10 was anchored: entries 9 to 10 were "
        "removed from its end (anchor: entry 10 anchored 2026-07-01T00:00:00.000000+00:00"
    )


def test_unreadable_anchors_are_not_ok(anchored: tuple[str, AnchorSource]) -> None:
    url, anchors = anchored
    missing = AnchorSource(anchors.folder / "gone", anchors.public_keys)
    body = verdict(url, missing)
    assert (body["ok"], body["anchored"]) == (False, False)
    assert "the anchors cannot be read: the anchor folder" in body["problems"][0]  # type: ignore[index]
