"""The live stream over real HTTP: site filtering, resume with Last-Event-ID after a disconnect,
rows whose ids commit out of order, delivery by the fallback poll when the LISTEN connection is
lost; plus the gap bookkeeping and the feed's wake-ups on their own."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import httpx
import psycopg
import pytest

from api.app import create_app
from api.stream import AlertFeed, StreamConfig, TimelineReader
from api.tokens import create_token, revoke_token
from rules.site import SiteModel
from tests.api.conftest import (
    T0,
    TEST_STREAM,
    SseEvent,
    add_timeline,
    auth,
    insert_alert,
    read_events,
)
from tests.support import serve_app

pytestmark = pytest.mark.integration
TIMEOUT = httpx.Timeout(10.0)


def _alerts(events: list[SseEvent]) -> list[tuple[str, int, str]]:
    decoded = [json.loads(e.data) for e in events]
    return [(d["alert"]["site"], d["alert"]["id"], d["action"]) for d in decoded]


def test_stream_filters_sites_and_resumes_after_a_disconnect(
    live_api: str, tokens: dict[tuple[str, str], str], api_database_url: str
) -> None:
    headers = auth(tokens[("viewer", "site-a")])
    url = f"{live_api}/api/v1/stream"
    with httpx.stream("GET", url, headers=headers, timeout=TIMEOUT) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        (hello,) = read_events(lines, 1, kinds=("hello",))
        with psycopg.connect(api_database_url) as conn:
            other = insert_alert(conn, "site-b")
        with psycopg.connect(api_database_url) as conn:
            own = insert_alert(conn, "site-a")
        (first,) = read_events(lines, 1)
        assert _alerts([first]) == [("site-a", own, "raised")]
        assert int(first.id or 0) > int(hello.id or 0)

    # While nobody listens: site-a's alert is acknowledged and resolved, site-b's too.
    with psycopg.connect(api_database_url) as conn:
        for alert_id, site in ((own, "site-a"), (other, "site-b")):
            add_timeline(conn, alert_id, site, "acknowledged")
            add_timeline(conn, alert_id, site, "resolved")

    resumed = {**headers, "Last-Event-ID": first.id or ""}
    with httpx.stream("GET", url, headers=resumed, timeout=TIMEOUT) as response:
        missed = read_events(response.iter_lines(), 2)
    assert _alerts(missed) == [("site-a", own, "acknowledged"), ("site-a", own, "resolved")]
    assert int(missed[0].id or 0) < int(missed[1].id or 0)


def test_an_id_committed_late_is_still_delivered(
    live_api: str, tokens: dict[tuple[str, str], str], api_database_url: str
) -> None:
    """Writer 1 takes an id and commits after writer 2, whose higher id is seen first."""
    headers = auth(tokens[("viewer", "all")])
    with psycopg.connect(api_database_url) as setup:
        alert_id = insert_alert(setup, "site-a")
    with httpx.stream(
        "GET", f"{live_api}/api/v1/stream", headers=headers, timeout=TIMEOUT
    ) as response:
        lines = response.iter_lines()
        read_events(lines, 1, kinds=("hello",))
        slow = psycopg.connect(api_database_url)
        try:
            slow_id = add_timeline(slow, alert_id, "site-a", "escalated")
            with psycopg.connect(api_database_url) as fast:
                fast_id = add_timeline(fast, alert_id, "site-a", "acknowledged")
            assert slow_id < fast_id
            (seen_first,) = read_events(lines, 1)
            assert seen_first.id == str(fast_id)
            slow.commit()
        finally:
            slow.close()
        (seen_late,) = read_events(lines, 1)
        assert seen_late.id == str(slow_id)


def test_a_bad_last_event_id_is_a_field_error(
    live_api: str, tokens: dict[tuple[str, str], str]
) -> None:
    headers = {**auth(tokens[("viewer", "all")]), "Last-Event-ID": "yesterday"}
    response = httpx.get(f"{live_api}/api/v1/stream", headers=headers, timeout=TIMEOUT)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "Last-Event-ID"]


def test_gaps_are_remembered_until_filled_or_expired() -> None:
    reader = TimelineReader(last_id=10, gap_wait_s=5.0, batch=100)
    assert reader.advance([11, 14], now=0.0) == {11, 14}
    assert reader.gaps == {12: 0.0, 13: 0.0}
    assert reader.advance([12, 14, 15], now=1.0) == {12, 15}  # 14 was delivered already
    assert set(reader.gaps) == {13}
    assert reader.last_id == 15


def test_revoking_a_token_ends_its_open_stream(live_api: str, api_database_url: str) -> None:
    with psycopg.connect(api_database_url) as conn:
        token, record = create_token(conn, "viewer", ("site-a",), "to be revoked")
    with httpx.stream(
        "GET", f"{live_api}/api/v1/stream", headers=auth(token), timeout=TIMEOUT
    ) as response:
        lines = response.iter_lines()
        read_events(lines, 1, kinds=("hello",))
        with psycopg.connect(api_database_url) as conn:
            revoke_token(conn, record.id)
        # The server closes the stream at the next token check (1 s in tests): the lines run out.
        rest = list(lines)
    assert all(not line.startswith("event: alert") for line in rest)


def test_a_revoked_token_loses_its_stream_while_events_flow(
    live_api: str, api_database_url: str
) -> None:
    """Events every 0.2 s, more often than any heartbeat: the token is re-checked all the same
    (every second in tests, every 5 s by default), so revoking it ends the stream promptly."""
    with psycopg.connect(api_database_url) as conn:
        token, record = create_token(conn, "viewer", ("site-a",), "revoked while busy")
        alert_id = insert_alert(conn, "site-a")
    stop = threading.Event()

    def traffic() -> None:
        with psycopg.connect(api_database_url, autocommit=True) as conn:
            while not stop.wait(0.2):
                add_timeline(conn, alert_id, "site-a", "escalated")

    producer = threading.Thread(target=traffic, name="stream-traffic", daemon=True)
    try:
        with httpx.stream(
            "GET", f"{live_api}/api/v1/stream", headers=auth(token), timeout=TIMEOUT
        ) as response:
            lines = response.iter_lines()
            read_events(lines, 1, kinds=("hello",))
            producer.start()
            read_events(lines, 3)  # the events flow
            with psycopg.connect(api_database_url) as conn:
                revoke_token(conn, record.id)
            revoked_at = time.monotonic()
            for _ in lines:  # until the server ends the stream, or 8 s have passed
                if time.monotonic() - revoked_at > 8.0:
                    break
            open_for = time.monotonic() - revoked_at
    finally:
        stop.set()
        if producer.is_alive():
            producer.join(5)
    assert open_for < 3.0, f"the stream of a revoked token stayed open {open_for:.1f} s"
    assert StreamConfig().token_check_s <= 5.0


def test_an_expired_token_loses_its_quiet_stream_and_is_refused(
    live_api: str, api_database_url: str
) -> None:
    lifetime = dt.timedelta(seconds=3)
    with psycopg.connect(api_database_url) as conn:
        token, record = create_token(conn, "viewer", ("site-a",), "short-lived", lifetime)
    assert record.expires_at is not None
    url = f"{live_api}/api/v1/stream"
    with httpx.stream("GET", url, headers=auth(token), timeout=TIMEOUT) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        read_events(lines, 1, kinds=("hello",))
        opened = time.monotonic()
        for _ in lines:  # no events: only heartbeats until the server ends the stream
            if time.monotonic() - opened > 10.0:
                break
        open_for = time.monotonic() - opened
    assert open_for < 3.0 + 2.5, f"the stream outlived its token by {open_for - 3.0:.1f} s"
    refused = httpx.get(url, headers=auth(token), timeout=TIMEOUT)
    assert refused.status_code == 401
    assert "expired" in refused.json()["detail"]


def test_open_streams_per_token_are_capped(live_api: str, api_database_url: str) -> None:
    cap = TEST_STREAM.max_streams_per_token
    with psycopg.connect(api_database_url) as conn:
        token, _ = create_token(conn, "viewer", ("site-a",), "many tabs")
        other, _ = create_token(conn, "viewer", ("site-a",), "another person")
    url = f"{live_api}/api/v1/stream"
    with ExitStack() as streams:
        opened = []  # the line iterators too: dropping one closes its connection
        for _ in range(cap):
            response = streams.enter_context(
                httpx.stream("GET", url, headers=auth(token), timeout=TIMEOUT)
            )
            assert response.status_code == 200
            lines = response.iter_lines()
            read_events(lines, 1, kinds=("hello",))
            opened.append((response, lines))
        with httpx.stream("GET", url, headers=auth(token), timeout=TIMEOUT) as extra:
            assert extra.status_code == 429
            assert f"{cap} open streams" in json.loads(extra.read())["detail"]
        with httpx.stream("GET", url, headers=auth(other), timeout=TIMEOUT) as own:
            assert own.status_code == 200  # the cap is per token
        opened[0][0].close()  # one tab closed: its place is free again once the server sees it

        def reopens() -> bool:
            with httpx.stream("GET", url, headers=auth(token), timeout=TIMEOUT) as again:
                return again.status_code == 200

        _wait_for(reopens, "a stream slot freed by a closed stream")
    assert StreamConfig().max_streams_per_token == 4


def test_the_stream_needs_a_valid_token(live_api: str) -> None:
    for headers in ({}, auth("cw_" + "x" * 43)):
        response = httpx.get(f"{live_api}/api/v1/stream", headers=headers, timeout=TIMEOUT)
        assert response.status_code == 401


def test_streams_sharing_reads_still_see_only_their_sites(
    live_api: str, tokens: dict[tuple[str, str], str], api_database_url: str
) -> None:
    """Two streams at the same position share the timeline query; each keeps its own scope."""
    url = f"{live_api}/api/v1/stream"
    with (
        httpx.stream("GET", url, headers=auth(tokens[("viewer", "site-a")]), timeout=TIMEOUT) as a,
        httpx.stream("GET", url, headers=auth(tokens[("admin", "all")]), timeout=TIMEOUT) as every,
    ):
        lines_a, lines_all = a.iter_lines(), every.iter_lines()
        read_events(lines_a, 1, kinds=("hello",))
        read_events(lines_all, 1, kinds=("hello",))
        with psycopg.connect(api_database_url) as conn:
            in_b = insert_alert(conn, "site-b")
            in_a = insert_alert(conn, "site-a")
        assert _alerts(read_events(lines_all, 2)) == [
            ("site-b", in_b, "raised"),
            ("site-a", in_a, "raised"),
        ]
        assert _alerts(read_events(lines_a, 1)) == [("site-a", in_a, "raised")]


POLLING_APP = "cw-stream-polling"  # application_name of the app below, to find its LISTEN


@pytest.fixture(scope="module")
def polling_api(api_database_url: str) -> Iterator[str]:
    """An app whose LISTEN connection, once lost, is not re-opened during the test and whose
    heartbeat never comes (it also wakes the stream): only the fallback poll can deliver. It
    reads two rows at a time."""
    url = f"{api_database_url}{'&' if '?' in api_database_url else '?'}"
    url += f"application_name={POLLING_APP}"
    config = StreamConfig(heartbeat_s=3600.0, poll_s=0.2, batch=2, listen_retry_s=3600.0)
    with serve_app(create_app(url, stream=config), "polling-api") as base:
        yield base


def _listening(conn: psycopg.Connection) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
        " AND query = 'LISTEN cw_alerts'",
        (POLLING_APP,),
    ).fetchone()
    return int(row[0]) if row else 0


def _wait_for(condition: Callable[[], bool], what: str, deadline_s: float = 10.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_the_poll_delivers_when_the_listen_connection_is_lost(
    polling_api: str, tokens: dict[tuple[str, str], str], api_database_url: str
) -> None:
    """More rows than one read takes, committed while nobody listens: all arrive, in order."""
    headers = auth(tokens[("viewer", "site-a")])
    with (
        psycopg.connect(api_database_url, autocommit=True) as admin,
        httpx.stream(
            "GET", f"{polling_api}/api/v1/stream", headers=headers, timeout=TIMEOUT
        ) as response,
    ):
        lines = response.iter_lines()
        read_events(lines, 1, kinds=("hello",))
        _wait_for(lambda: _listening(admin) == 1, "the feed's LISTEN connection")
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s AND query = 'LISTEN cw_alerts'",
            (POLLING_APP,),
        )
        _wait_for(lambda: _listening(admin) == 0, "the LISTEN connection gone")
        with psycopg.connect(api_database_url) as conn:
            alerts = [insert_alert(conn, "site-a") for _ in range(3)]
        events = read_events(lines, 3)
    assert _alerts(events) == [("site-a", alert_id, "raised") for alert_id in alerts]
    ids = [int(event.id or 0) for event in events]
    assert ids == sorted(ids)


def test_a_wake_resumes_every_waiting_stream_and_a_timeout_leaves_no_waiter() -> None:
    async def scenario() -> None:
        feed = AlertFeed("postgresql://unused", StreamConfig())
        seen = feed.generation
        waiting = [asyncio.create_task(feed.wait(seen, timeout=60.0)) for _ in range(3)]
        while len(feed._waiters) < 3:  # each task registers its waiter on its first turn
            await asyncio.sleep(0)
        feed._wake()
        await asyncio.wait_for(asyncio.gather(*waiting), timeout=5.0)
        assert feed.generation == seen + 1
        # Past the generation already: returns at once; an unanswered wait ends at its timeout.
        await asyncio.wait_for(feed.wait(seen, timeout=60.0), timeout=5.0)
        await feed.wait(feed.generation, timeout=0.01)
        assert not feed._waiters

    asyncio.run(scenario())


def test_an_org_users_open_stream_sees_a_site_added_later(
    live_api: str, api_database_url: str
) -> None:
    """Issue 19: a district user's stream kept the sites the district had when it connected. A
    site registered under the district while the stream is open reaches it; a site of another
    district does not."""
    from api.users import create_user
    from store import registry
    from tests.api.conftest import site_model

    def in_org(site: str, org: tuple[str, ...]) -> SiteModel:
        model = site_model(site)
        return model.model_copy(update={"site": model.site.model_copy(update={"org": org})})

    password = "correct horse battery"
    with psycopg.connect(api_database_url) as conn:
        create_user(conn, "xihu-stream", password=password, role="viewer", org=("hz", "xihu"))
        registry.sync_site(conn, in_org("xh-s1", ("hz", "xihu")), "test", T0)
    with httpx.Client(base_url=live_api, timeout=TIMEOUT) as client:
        answer = client.post("/api/v1/session", json={"name": "xihu-stream", "password": password})
        assert answer.status_code == 200, answer.text
        with client.stream("GET", "/api/v1/stream") as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            read_events(lines, 1, kinds=("hello",))
            with psycopg.connect(api_database_url) as conn:
                registry.sync_site(conn, in_org("xh-s2", ("hz", "xihu", "unit-2")), "test", T0)
                registry.sync_site(conn, in_org("bj-s1", ("hz", "binjiang")), "test", T0)
                other = insert_alert(conn, "bj-s1")
                later = insert_alert(conn, "xh-s2")
                first = insert_alert(conn, "xh-s1")
            seen = _alerts(read_events(lines, 2))
    assert seen == [("xh-s2", later, "raised"), ("xh-s1", first, "raised")]
    assert other not in {alert for _, alert, _ in seen}
