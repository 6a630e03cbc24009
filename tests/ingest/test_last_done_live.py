"""A last-done time set through the API reaches the running engines without a restart (issue 17,
defect 4), on the real service (its MQTT session, HTTP ingest, pipeline) and a real PostgreSQL.

Inside the maximum age and after judging began it is input: an event of the task's type from
the reporter `last-done`, fed through HTTP ingest's path and judged in event time, so an overdue
alert it should have prevented is corrected by the late-input re-judging. Older, it is a
baseline applied to the running engine: the deadline moves, and a violation it causes starts no
earlier than the engine's time. The engines follow the data clock (HTTP ingest posts move it),
so the test chooses every time."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from alerts.audit import audit
from api.tokens import create_token
from clausewatch.embedded import free_port
from clausewatch.service import Service, ServiceOptions
from clausewatch.settings import Settings
from config.broker import mosquitto_password_hash
from config.files import LoadedConfig
from rules.site import SiteModel
from tests.ingest.test_http_ingest import basic
from tests.ingest.test_late_input import CLAUSES, SITE, stored_intervals
from tests.support import rows, wait_for

pytestmark = pytest.mark.integration

PASSWORDS = {"late-hq/reader-1": "reader-secret", "late-hq/th-1": "th-secret"}
READER = basic("late-hq/reader-1", "reader-secret")
SENSOR = basic("late-hq/th-1", "th-secret")
LAST_DONE = "/api/v1/spaces/late-hq/wc1/last-done/cleaning.completed"


@dataclass
class Running:
    client: httpx.Client
    url: str
    admin: dict[str, str]

    def clean(self, ts: float) -> None:
        body = {"ts": int(ts * 1000), "seq": int(ts), "type": "cleaning.completed"}
        answer = self.client.post(
            "/api/v1/ingest/late-hq/reader-1/event", json=body, headers=READER
        )
        assert answer.status_code == 200, answer.text

    def temperature(self, ts: float) -> None:
        """A reading at `ts`: moves the site's data clock there (answered after its commit)."""
        body = {"ts": int(ts * 1000), "seq": int(ts), "metrics": {"temperature": 22.0}}
        answer = self.client.post(
            "/api/v1/ingest/late-hq/th-1/telemetry", json=body, headers=SENSOR
        )
        assert answer.status_code == 200, answer.text

    def last_done(self, ts: float) -> httpx.Response:
        done_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
        return self.client.put(LAST_DONE, json={"done_at": done_at}, headers=self.admin)


def other_site() -> SiteModel:
    data = SITE.model_dump(mode="json", exclude_none=True)
    data["site"]["id"] = "late-two"
    return SiteModel.model_validate(data)


@contextmanager
def start(
    url: str,
    mqtt_url: str,
    prefix: str,
    folder: Path,
    workers_sites: tuple[str, ...] | None = None,
    **extra: Any,
) -> Iterator[Running]:
    """The service judging late-hq (and, given `workers_sites`, late-two too, with only those
    sites in this process, as worker 0 of `--workers N` runs)."""
    passwords = folder / "passwords"
    passwords.write_text(
        "".join(f"{user}:{mosquitto_password_hash(secret)}\n" for user, secret in PASSWORDS.items())
    )
    settings = Settings(
        database_url=url,
        mqtt_url=mqtt_url,
        topic_prefix="cw",
        mqtt_client_id=f"cw-lastdone-{uuid.uuid4().hex[:8]}",
        lateness_s=0,
        flush_interval_s=0.05,
        http_port=free_port(),
        device_password_file=passwords,
        **extra,
    )
    sites = {"late-hq": SITE, "late-two": other_site()} if workers_sites else {"late-hq": SITE}
    config = LoadedConfig(sites=sites, clause_files={Path("late.yaml"): CLAUSES})
    options = ServiceOptions(clock="data", serve_api=True, sites=workers_sites)
    service = Service(settings, config, options)
    service.start()
    try:
        with psycopg.connect(url) as conn:
            plain, _ = create_token(conn, "admin", tuple(sites), "last-done test")
            conn.commit()
        with httpx.Client(base_url=service.api_url, timeout=30) as client:
            yield Running(client, url, {"Authorization": f"Bearer {plain}"})
    finally:
        service.stop()


@pytest.fixture
def t0() -> float:
    """Three hours before the test starts, on a minute. Taken per test, not at import: the
    maximum age is measured against the wall clock, and a long suite reaches a test minutes
    after its module was imported."""
    return float(int(time.time()) // 60 * 60 - 3 * 3600)


def test_a_last_done_time_ten_minutes_ago_corrects_the_overdue_alert_without_a_restart(
    fresh_database_url: str, mqtt_url: str, topic_prefix: str, tmp_path: Path, t0: float
) -> None:
    url = fresh_database_url
    with start(url, mqtt_url, topic_prefix, tmp_path) as running:
        running.clean(t0)
        # A kept copy of the engine after it (the service keeps one at most every `history`
        # engine hour, each checkpoint_interval of wall time): where re-judging starts from.
        wait_for(
            lambda: rows(
                url,
                "SELECT 1 FROM engine_checkpoint_history"
                f" WHERE horizon >= {t0 - 1} AND horizon <= {t0 + 58 * 60}",
            ),
            what="a checkpoint kept after the first cleaning",
        )
        running.temperature(t0 + 68 * 60)  # the toilet is overdue since t0 + 60 min
        alert = wait_for(
            lambda: rows(url, "SELECT id, started_at FROM alerts WHERE clause_id = 'clean.wc'"),
            what="the overdue alert",
        )[0]
        assert alert[1].timestamp() == t0 + 3600
        # The cleaner's supervisor says it was cleaned 10 minutes ago (of the site's time).
        put = running.last_done(t0 + 58 * 60)
        assert put.status_code == 200, put.text
        event = rows(
            url,
            "SELECT device, type, space, actor, attrs FROM events WHERE device = 'last-done'",
        )
        assert len(event) == 1
        device, kind, space, actor, attrs = event[0]
        assert (device, kind, space) == ("last-done", "cleaning.completed", "wc1")
        assert actor.startswith("token:") and attrs["via"] == "last_done"
        corrected = wait_for(
            lambda: rows(
                url,
                "SELECT data FROM alert_timeline WHERE action = 'corrected'"
                f" AND alert_id = {alert[0]}",
            ),
            what="a corrected timeline row",
        )
        assert corrected[0][0]["withdrawn"] is True
        state = rows(url, f"SELECT state, ended_at = started_at FROM alerts WHERE id = {alert[0]}")
        assert state == [("resolved", True)]
        entries = rows(
            url,
            "SELECT payload::jsonb FROM ledger WHERE kind = 'alert.corrected'"
            f" AND entity = 'alert:{alert[0]}'",
        )
        assert len(entries) == 1
        # The compliance intervals are replaced: compliant from t0 on, overdue from an hour
        # after the last-done time only.
        running.temperature(t0 + 130 * 60)
        # Overdue again from t0 + 118 min (the clause's flap policy reopens the corrected alert).
        wait_for(
            lambda: rows(url, "SELECT 1 FROM alerts WHERE state = 'firing'"),
            what="the toilet overdue again",
        )
        assert stored_intervals(url, "clean.wc") == [(t0, t0 + 118 * 60, "compliant")]
        # The same PUT again (judged already: late for the engine, absorbed by the store) is
        # the same event, and nothing more to correct.
        again = running.last_done(t0 + 58 * 60)
        assert again.status_code == 200, again.text
        assert rows(url, "SELECT count(*) FROM events WHERE device = 'last-done'") == [(1,)]
        assert rows(url, "SELECT count(*) FROM alerts") == [(1,)]
        with psycopg.connect(url, autocommit=True) as conn:
            checked = audit(conn)
        assert checked.ok, checked.problems()
        assert put.json()["applied"] == "input"


def test_a_last_done_time_older_than_the_maximum_age_moves_a_fresh_deadline(
    fresh_database_url: str, mqtt_url: str, topic_prefix: str, tmp_path: Path, t0: float
) -> None:
    """Without it the toilet, judged from t0, is overdue at t0 + 1 h. Cleaned 4 h before t0 (older
    than the 3 h maximum age: a baseline), it was due at t0 - 3 h: before the engine's time, so
    it is overdue from t0 itself, never from a time already judged."""
    url = fresh_database_url
    with start(url, mqtt_url, topic_prefix, tmp_path, max_age_s=3 * 3600 + 600) as running:
        running.temperature(t0)  # judging begins at t0
        put = running.last_done(t0 - 4 * 3600)
        assert put.status_code == 200, put.text
        running.temperature(t0 + 60)
        started = wait_for(
            lambda: rows(url, "SELECT started_at FROM alerts WHERE clause_id = 'clean.wc'"),
            what="the overdue alert",
        )
        assert [s.timestamp() for (s,) in started] == [t0]
        assert rows(url, "SELECT count(*) FROM events WHERE device = 'last-done'") == [(0,)]
        assert put.json()["applied"] == "baseline"


def test_a_site_of_another_worker_is_refused_before_anything_is_stored(
    fresh_database_url: str, mqtt_url: str, topic_prefix: str, tmp_path: Path, t0: float
) -> None:
    """`--workers N`: worker 0 serves the API and holds only its own sites' engines; a
    last-done time of another worker's site cannot reach them, so it is refused, not stored."""
    url = fresh_database_url
    with start(url, mqtt_url, topic_prefix, tmp_path, workers_sites=("late-hq",)) as running:
        put = running.client.put(
            LAST_DONE.replace("late-hq", "late-two"),
            json={"done_at": "2026-01-05T08:00:00+08:00"},
            headers=running.admin,
        )
        assert put.status_code == 503, put.text
        assert "another ingest worker" in put.json()["detail"]
        assert rows(url, "SELECT count(*) FROM space_last_done") == [(0,)]
        assert running.last_done(t0 - 86400).status_code == 200  # its own site: taken
