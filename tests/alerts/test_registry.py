"""The registry follows the site file, keeps history, and answers who was responsible when."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import psycopg
import pytest

from alerts.binding import responsible_at
from rules.site import Assignment, Party
from store import ledger
from store.registry import (
    PartyExists,
    add_assignment,
    add_party,
    change_party,
    last_done,
    set_last_done,
    sync_site,
)
from tests.alerts.conftest import SITE, T0, site_model

pytestmark = pytest.mark.integration

SINCE = "2026-01-01T00:00:00+08:00"
SHANGHAI = dt.timezone(dt.timedelta(hours=8))
HANDOVER = dt.datetime(2026, 7, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))


def _who(conn: psycopg.Connection[Any], at: dt.datetime, space: str = "b1-2f-201") -> str | None:
    return responsible_at(conn, SITE, space, "indoor_climate", at).party


def test_a_handover_written_in_the_file_keeps_the_past_answerable(
    conn: psycopg.Connection[Any],
) -> None:
    sync_site(conn, site_model(), "config", now=T0 - dt.timedelta(days=60))
    handover = site_model(
        [
            {"party": "wang", "space": "b1-2f", "valid_from": SINCE, "valid_to": HANDOVER},
            {"party": "li", "space": "b1-2f", "valid_from": HANDOVER},
        ]
    )
    report = sync_site(conn, handover, "config", now=HANDOVER)
    assert report.changes == {"assignment.added": 1, "assignment.ended": 3}
    assert _who(conn, HANDOVER - dt.timedelta(minutes=1)) == "wang"
    assert _who(conn, HANDOVER) == "li"
    assert _who(conn, HANDOVER, space="b1-3f-301") is None
    # Escalation levels that left the file ended at the sync, not before.
    before = responsible_at(conn, SITE, "b1-2f-201", "x", HANDOVER - dt.timedelta(days=1))
    assert [c["party"] for c in before.chain] == ["zhao", "chen"]
    assert responsible_at(conn, SITE, "b1-2f-201", "x", HANDOVER).chain == ()
    assert sync_site(conn, handover, "config", now=HANDOVER).changed is False
    assert ledger.verify(conn).ok


def test_edits_through_the_api_survive_a_restart_with_an_unchanged_file(
    conn: psycopg.Connection[Any],
) -> None:
    sync_site(conn, site_model(), "config", now=T0)
    add_assignment(
        conn, SITE, Assignment(party="li", space="b1-3f", valid_from=T0), "admin", now=T0
    )
    assert sync_site(conn, site_model(), "config", now=T0 + dt.timedelta(days=1)).changed is False
    assert _who(conn, T0 + dt.timedelta(days=1), space="b1-3f-301") == "li"
    # A party renamed through the API keeps its name when another part of the file changes.
    conn.execute("UPDATE parties SET name = '李工（新）' WHERE id = 'li'")
    model = site_model()
    spaces = tuple(
        s.model_copy(update={"name": "三层"}) if s.id == "b1-3f" else s for s in model.spaces
    )
    report = sync_site(conn, model.model_copy(update={"spaces": spaces}), "config", now=T0)
    assert report.changes == {"space.changed": 1}
    assert conn.execute("SELECT name FROM parties WHERE id = 'li'").fetchone() == ("李工（新）",)


def test_assignments_cannot_be_rewritten_or_deleted(conn: psycopg.Connection[Any]) -> None:
    sync_site(conn, site_model(), "config", now=T0)
    conn.commit()
    with pytest.raises(psycopg.errors.RaiseException, match="never edited in place"):
        conn.execute("UPDATE assignments SET party = 'li' WHERE party = 'wang'")
    conn.rollback()
    with pytest.raises(psycopg.errors.RaiseException, match="close the period"):
        conn.execute("DELETE FROM assignments")


def test_a_space_left_out_of_the_file_is_retired_not_deleted(
    conn: psycopg.Connection[Any],
) -> None:
    sync_site(conn, site_model(), "config", now=T0)
    smaller = site_model().model_copy(
        update={
            "spaces": tuple(s for s in site_model().spaces if s.id != "b1-3f-301"),
            "devices": tuple(d for d in site_model().devices if d.space != "b1-3f-301"),
        }
    )
    report = sync_site(conn, smaller, "config", now=T0 + dt.timedelta(days=1))
    assert report.changes == {"space.retired": 1, "device.retired": 1}
    row = conn.execute("SELECT retired_at FROM spaces WHERE id = 'b1-3f-301'").fetchone()
    assert row is not None and row[0] == T0 + dt.timedelta(days=1)


def test_one_changed_space_records_only_that_change(conn: psycopg.Connection[Any]) -> None:
    sync_site(conn, site_model(), "config", now=T0)
    model = site_model()
    spaces = tuple(
        s.model_copy(update={"name": "二层（改造后）"}) if s.id == "b1-2f" else s
        for s in model.spaces
    )
    report = sync_site(conn, model.model_copy(update={"spaces": spaces}), "bob", now=T0)
    assert report.changes == {"space.changed": 1}
    (payload,) = conn.execute(
        "SELECT payload::jsonb FROM ledger WHERE kind = 'space.changed'"
    ).fetchone() or (None,)
    assert (payload["actor"], payload["before"]["name"], payload["after"]["name"]) == (
        "bob",
        "",
        "二层（改造后）",
    )


def test_party_edits_are_recorded_and_refuse_duplicates_and_unknown_ids(
    conn: psycopg.Connection[Any],
) -> None:
    sync_site(conn, site_model(), "config", now=T0)
    add_party(conn, SITE, Party(id="sun", name="孙工", kind="contractor"), "token:1", now=T0)
    with pytest.raises(PartyExists):
        add_party(conn, SITE, Party(id="wang", name="王工"), "token:1", now=T0)
    change_party(conn, SITE, "sun", {"contacts": {"phone": "139"}}, "token:1", now=T0)
    with pytest.raises(LookupError):
        change_party(conn, SITE, "nobody", {"name": "x"}, "token:1", now=T0)
    rows = conn.execute(
        "SELECT kind, payload::jsonb FROM ledger WHERE entity = %s ORDER BY seq",
        (f"party:{SITE}/sun",),
    ).fetchall()
    assert [kind for kind, _ in rows] == ["party.added", "party.changed"]
    assert rows[1][1]["before"]["contacts"] == {}
    assert rows[1][1]["after"] == {
        "name": "孙工",
        "kind": "contractor",
        "contacts": {"phone": "139"},
    }
    assert ledger.verify(conn).ok


def test_a_party_change_takes_the_ledger_lock_before_the_row(
    conn: psycopg.Connection[Any], alerts_db_url: str
) -> None:
    """One lock order with sync_site (ledger, then rows): while another writer holds the ledger
    lock, a party change waits without holding the party's row, so the holder can lock it."""
    sync_site(conn, site_model(), "config", now=T0)
    conn.commit()
    ledger.lock(conn)  # this transaction is the other writer
    done = threading.Event()

    def edit() -> None:
        with psycopg.connect(alerts_db_url) as other:
            change_party(other, SITE, "wang", {"name": "王工（新）"}, "token:1", now=T0)
            other.commit()
        done.set()

    editor = threading.Thread(target=edit)
    editor.start()
    try:
        waiting = (
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event = 'advisory'"
        )
        deadline = dt.datetime.now() + dt.timedelta(seconds=10)
        with psycopg.connect(alerts_db_url, autocommit=True) as observer:
            while observer.execute(waiting).fetchone() != (1,):
                assert dt.datetime.now() < deadline, "the edit never waited for the ledger lock"
                done.wait(0.02)  # poll interval
        row = "SELECT name FROM parties WHERE site = %s AND id = 'wang' FOR UPDATE NOWAIT"
        assert conn.execute(row, (SITE,)).fetchone() == ("王工",)
    finally:
        conn.commit()
        editor.join(10)
    assert done.is_set()
    assert conn.execute("SELECT name FROM parties WHERE id = 'wang'").fetchone() == ("王工（新）",)


def test_a_last_done_date_is_recorded_with_who_set_it(conn: psycopg.Connection[Any]) -> None:
    """Issue 17, defect 4: a space's last-done date in the site file reaches the ledger (the
    space's change, with the actor), so the obligation's starting point is accountable."""
    sync_site(conn, site_model(), "config", now=T0)
    model = site_model()
    done = dt.date(2026, 6, 28)
    spaces = tuple(
        s.model_copy(update={"last_done": {"maintenance.done": done}}) if s.id == "b1" else s
        for s in model.spaces
    )
    report = sync_site(conn, model.model_copy(update={"spaces": spaces}), "alice", now=T0)
    assert report.changes == {"last_done.set": 1}
    (payload,) = conn.execute(
        "SELECT payload::jsonb FROM ledger WHERE kind = 'last_done.set'"
    ).fetchone() or (None,)
    assert (payload["actor"], payload["space"], payload["task"], payload["done_at"]) == (
        "alice",
        "b1",
        "maintenance.done",
        "2026-06-28T00:00:00+08:00",
    )
    assert last_done(conn, SITE) == {
        ("b1", "maintenance.done"): dt.datetime(2026, 6, 28, tzinfo=SHANGHAI)
    }
    # Set through the API's function: the same table and ledger, with that actor.
    later = dt.datetime(2026, 7, 2, 10, tzinfo=SHANGHAI)
    set_last_done(conn, SITE, "b1", "maintenance.done", later, "bob", now=T0)
    kinds = conn.execute(
        "SELECT payload::jsonb->>'actor' FROM ledger WHERE kind = 'last_done.set' ORDER BY seq"
    ).fetchall()
    assert [k[0] for k in kinds] == ["alice", "bob"]
    assert last_done(conn, SITE)[("b1", "maintenance.done")] == later
    with pytest.raises(LookupError):
        set_last_done(conn, SITE, "nowhere", "maintenance.done", later, "bob", now=T0)
    assert ledger.verify(conn).ok
