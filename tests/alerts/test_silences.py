"""Silences (issue 20): a silence holds back the messages of the alerts it covers, never the
alerts themselves. Real PostgreSQL and a real signing webhook receiver on loopback."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from alerts import audit, notify, silences, webhooks
from alerts.record import record_outputs
from clausewatch.cli import main
from store import quiet
from store.times import wall_now
from tests.alerts.conftest import SITE, T0, site_model, started
from tests.alerts.test_webhooks import SECRET, VerifyingReceiver
from tests.support import serve_http

CONFIRMED = T0 + dt.timedelta(minutes=15)
ACTOR = "token:7 (值班 王工)"


@pytest.fixture
def receiver() -> Iterator[VerifyingReceiver]:
    server = VerifyingReceiver(SECRET)
    with serve_http(server):
        yield server


@pytest.fixture
def wired(
    registered: psycopg.Connection[Any], receiver: VerifyingReceiver
) -> psycopg.Connection[Any]:
    """The test site with a broadcast target at the receiver (loopback, allow-listed)."""
    webhooks.allow(registered, "127.0.0.1", "the tests' own receivers", "test", now=T0)
    target = webhooks.Target("duty", receiver.url(), SECRET, site=SITE, level=0, broadcast=True)
    webhooks.add_target(registered, target, "test", now=T0)
    registered.commit()
    return registered


def _silence(
    conn: psycopg.Connection[Any],
    scope: quiet.Scope,
    target: str | None,
    hours: float = 2.0,
) -> int:
    spec = quiet.Spec(
        "silence", SITE, scope, target, T0, T0 + dt.timedelta(hours=hours), "二楼空调检修"
    )
    row = quiet.create(conn, spec, ACTOR, now=T0)
    conn.commit()
    return int(row["id"])


def _notifications(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT alert_id, state, silence_id FROM notifications ORDER BY id"
    ).fetchall()


def test_a_silence_holds_back_the_message_but_the_alert_is_recorded(
    wired: psycopg.Connection[Any], receiver: VerifyingReceiver
) -> None:
    conn = wired
    silence = _silence(conn, "space", "b1-2f")  # the floor: th-201's room is in its subtree
    result = record_outputs(
        conn,
        site_model(),
        [started(T0), started(T0, device="th-301", space="b1-3f-301")],
        now=CONFIRMED,
    )
    conn.commit()
    covered, other = result.alert_ids
    report = notify.deliver_due(conn, CONFIRMED)
    assert (report.silenced, report.delivered) == (1, 1)
    # Only the third floor's alert reached the receiver, signed as ever.
    assert [body["alert"]["id"] for body in receiver.bodies] == [other]
    assert [verdict for *_, verdict in receiver.requests] == ["ok"]
    # The silenced alert is recorded, firing, with every step on its timeline.
    state = conn.execute("SELECT state FROM alerts WHERE id = %s", (covered,)).fetchone()
    assert state == ("firing",)
    assert _notifications(conn) == [(covered, "silenced", silence), (other, "delivered", None)]
    timeline = conn.execute(
        "SELECT action, note, data FROM alert_timeline WHERE alert_id = %s ORDER BY id",
        (covered,),
    ).fetchall()
    assert [row[0] for row in timeline] == ["raised", "notified"]
    assert timeline[1][1] == f"raised notice to level 0 held back by silence {silence}"
    assert timeline[1][2]["silence"] == silence
    assert silences.silence_of(conn, covered, CONFIRMED) == silence
    assert silences.silence_of(conn, other, CONFIRMED) is None
    kinds = [row[0] for row in conn.execute("SELECT kind FROM ledger ORDER BY seq")]
    assert "silence.created" in kinds and "notification.silenced" in kinds
    conn.commit()
    # The ledger and the records still agree.
    checked = audit.audit(conn)
    assert checked.ok, checked.problems()


def test_a_silence_over_or_cancelled_lets_the_next_messages_through(
    wired: psycopg.Connection[Any], receiver: VerifyingReceiver
) -> None:
    conn = wired
    silence = _silence(conn, "device", "th-201", hours=1.0)
    (alert_id,) = record_outputs(conn, site_model(), [started(T0)], now=CONFIRMED).alert_ids
    conn.commit()
    # Due after the silence ended by itself (no job ended it): sent.
    after = T0 + dt.timedelta(hours=1)
    assert notify.deliver_due(conn, after).delivered == 1
    assert _notifications(conn) == [(alert_id, "delivered", None)]
    # A clause-wide silence, cancelled: the next alert's message goes out too.
    clause = quiet.create(
        conn,
        quiet.Spec(
            "silence", SITE, "clause", "temp.cooling.min", after, after + dt.timedelta(hours=4), "x"
        ),
        ACTOR,
        now=after,
    )
    assert silences.silence_of(conn, alert_id, after) == clause["id"]
    cancelled = quiet.cancel(conn, "silence", clause["id"], ACTOR, now=after)
    assert cancelled["cancelled_by"] == ACTOR
    assert silences.silence_of(conn, alert_id, after) is None
    conn.commit()
    assert silence != clause["id"]


def test_silences_refuse_what_would_do_nothing(registered: psycopg.Connection[Any]) -> None:
    conn = registered
    later = T0 + dt.timedelta(hours=1)
    cases = [
        (quiet.Spec("silence", SITE, "site", None, T0, T0, "r"), quiet.QuietError),
        (
            quiet.Spec("silence", SITE, "site", None, T0 - dt.timedelta(hours=3), later, " "),
            quiet.QuietError,
        ),
        (quiet.Spec("silence", SITE, "space", None, T0, later, "r"), quiet.QuietError),
        (quiet.Spec("silence", SITE, "space", "nowhere", T0, later, "r"), quiet.NotFound),
        (quiet.Spec("silence", "no-site", "site", None, T0, later, "r"), quiet.NotFound),
        (
            quiet.Spec("silence", SITE, "site", None, T0, T0 + dt.timedelta(days=91), "r"),
            quiet.QuietError,
        ),
    ]
    for spec, error in cases:
        with pytest.raises(error):
            quiet.create(conn, spec, ACTOR, now=T0 + dt.timedelta(minutes=30))
        conn.rollback()
    past = quiet.Spec("silence", SITE, "site", None, T0 - dt.timedelta(hours=2), T0, "r")
    with pytest.raises(quiet.QuietError, match="already be over"):
        quiet.create(conn, past, ACTOR, now=T0)
    conn.rollback()
    row = quiet.create(
        conn, quiet.Spec("silence", SITE, "site", None, T0, later, "r"), ACTOR, now=T0
    )
    quiet.cancel(conn, "silence", row["id"], ACTOR, now=T0)
    with pytest.raises(quiet.Refused):
        quiet.cancel(conn, "silence", row["id"], ACTOR, now=T0)
    conn.rollback()
    # History is never rewritten.
    row = quiet.create(
        conn, quiet.Spec("silence", SITE, "site", None, T0, later, "r"), ACTOR, now=T0
    )
    with pytest.raises(psycopg.errors.RaiseException):
        conn.execute("UPDATE quiet_periods SET reason = 'other' WHERE id = %s", (row["id"],))
    conn.rollback()


def test_the_cli_adds_lists_and_cancels_silences_and_windows(
    registered: psycopg.Connection[Any], alerts_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--database-url", alerts_db_url]
    soon = (wall_now() + dt.timedelta(hours=2)).isoformat()
    add = ["silence", "add", "--site", SITE, "--space", "b1-2f", "--until", soon]
    assert main([*add, "--reason", "二楼检修", "--by", "值班 王工", *db]) == 0
    yesterday = wall_now() - dt.timedelta(days=1)
    window = [
        *("maintenance", "add", "--site", SITE, "--from", yesterday.isoformat()),
        *("--until", (yesterday + dt.timedelta(hours=4)).isoformat(), "--reason", "停电检修"),
    ]
    assert main([*window, *db]) == 0
    out = capsys.readouterr().out
    assert f"silence 1: {SITE} space b1-2f" in out and "set by 值班 王工" in out
    assert "(retroactive)" in out.splitlines()[1]
    assert main(["silence", "list", *db]) == 0
    assert "silence 1:" in capsys.readouterr().out
    assert main(["maintenance", "list", *db]) == 0  # already over: listed with --all only
    assert capsys.readouterr().out == ""
    assert main(["silence", "cancel", "1", *db]) == 0
    assert "cancelled by cli" in capsys.readouterr().out
    assert main(["silence", "cancel", "1", *db]) == 1
    assert "already cancelled" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # one scope at most
        main([*add, "--device", "th-201", "--reason", "x", *db])
    with pytest.raises(SystemExit):
        main(["silence", "add", "--site", SITE, "--until", "soon", "--reason", "x", *db])
    assert "not an RFC 3339 time" in capsys.readouterr().err
