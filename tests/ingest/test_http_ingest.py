"""HTTP ingest (issue 22) on the real service: a device posts its MQTT payload over HTTP with its
broker login; the body goes through the real pipeline into a real PostgreSQL, and a 200 comes
only after the commit (each test queries the rows right after the answer, no waiting). A wrong
password is 401 and stores nothing, a device posting for another device is 403, limits are
413/422 with a message, and back-pressure refuses rather than queues."""

from __future__ import annotations

import base64
import concurrent.futures
import datetime as dt
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from clausewatch.embedded import free_port
from clausewatch.service import Service, ServiceOptions
from clausewatch.settings import Settings
from config.broker import mosquitto_password_hash
from config.files import LoadedConfig
from ingest.direct import Busy, DirectIngress
from ingest.mqtt import IngressQueue
from rules.site import SiteModel
from tests.ingest.test_pipeline_integration import CLAUSES, SITE
from tests.support import rows, wait_for

pytestmark = pytest.mark.integration

PASSWORDS = {"t-hq/th-a": "th-a-secret", "t-hq/ac-a": "ac-a-secret", "clausewatch": "svc"}


def basic(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


TH_A = basic("t-hq/th-a", "th-a-secret")


@dataclass
class Running:
    service: Service
    client: httpx.Client
    url: str  # the database, for the assertions

    def post(self, path: str, body: Any, headers: dict[str, str] = TH_A) -> httpx.Response:
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        return self.client.post(f"/api/v1/ingest/{path}", content=content, headers=headers)

    def count(self, sql: str) -> int:
        value: int = rows(self.url, sql)[0][0]
        return value


def password_file(folder: Path) -> Path:
    path = folder / "passwords"
    path.write_text(
        "".join(f"{user}:{mosquitto_password_hash(secret)}\n" for user, secret in PASSWORDS.items())
    )
    return path


def other_site() -> SiteModel:
    data = SITE.model_dump(mode="json", exclude_none=True)
    data["site"]["id"] = "t-two"
    return SiteModel.model_validate(data)


@contextmanager
def start(
    url: str, mqtt_url: str, prefix: str, folder: Path, options: ServiceOptions, **extra: Any
) -> Iterator[Running]:
    settings = Settings(
        database_url=url,
        mqtt_url=mqtt_url,
        topic_prefix=prefix,
        mqtt_client_id=f"cw-http-{uuid.uuid4().hex[:8]}",
        lateness_s=0,
        flush_interval_s=0.05,
        http_port=free_port(),
        device_password_file=password_file(folder),
        **extra,
    )
    config = LoadedConfig(
        sites={"t-hq": SITE, "t-two": other_site()}, clause_files={Path("test.yaml"): CLAUSES}
    )
    service = Service(settings, config, options)
    service.start()
    try:
        with httpx.Client(base_url=service.api_url, timeout=30) as client:
            yield Running(service, client, url)
    finally:
        service.stop()


@pytest.fixture
def running(
    fresh_database_url: str, mqtt_url: str, topic_prefix: str, tmp_path: Path
) -> Iterator[Running]:
    options = ServiceOptions(clock="data", serve_api=True)
    with start(
        fresh_database_url, mqtt_url, topic_prefix, tmp_path, options, max_payload_bytes=64 * 1024
    ) as running:
        yield running


def ts_ms(seconds_ago: float) -> int:
    return int((dt.datetime.now(dt.UTC).timestamp() - seconds_ago) * 1000)


def test_a_200_means_the_rows_are_committed(running: Running) -> None:
    body = [
        {"ts": ts_ms(60 - i), "seq": i, "metrics": {"temperature": 25.0 + i, "humidity": 40}}
        for i in range(3)
    ]
    answer = running.post("t-hq/th-a/telemetry", body)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"readings": 3, "values": 6, "events": 0, "dead_letters": []}
    # Asked right after the answer: the rows are already committed.
    assert running.count("SELECT count(*) FROM readings WHERE device = 'th-a'") == 6

    event = {"ts": ts_ms(30), "type": "cleaning.completed", "actor": "王芳"}
    answer = running.post("t-hq/th-a/event", event)
    assert answer.status_code == 200, answer.text
    assert answer.json()["events"] == 1
    assert running.count("SELECT count(*) FROM events WHERE type = 'cleaning.completed'") == 1

    # The same body again (a client retrying after a lost answer): absorbed, as from MQTT.
    assert running.post("t-hq/th-a/telemetry", body).status_code == 200
    assert running.count("SELECT count(*) FROM readings WHERE device = 'th-a'") == 6


def test_a_bad_item_of_a_bulk_is_a_dead_letter_and_the_rest_is_stored(running: Running) -> None:
    body = [
        {"ts": ts_ms(10), "seq": 1, "metrics": {"temperature": 24.0}},
        {"ts": ts_ms(9), "seq": 2, "metrics": {"co2": 800}},
    ]
    answer = running.post("t-hq/th-a/telemetry", body)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert (result["readings"], result["values"]) == (1, 1)
    [letter] = result["dead_letters"]
    assert letter["reason"] == "unknown_metric" and "co2" in letter["detail"]
    assert running.count("SELECT count(*) FROM readings") == 1
    assert running.count("SELECT count(*) FROM dead_letters WHERE reason = 'unknown_metric'") == 1

    # Nothing good at all: 422 naming the reason; the dead letter is stored as from MQTT.
    answer = running.post("t-hq/th-a/telemetry", {"ts": "yesterday", "metrics": {"humidity": 1}})
    assert answer.status_code == 422
    assert "bad_timestamp" in answer.json()["detail"][0]["msg"]
    assert running.count("SELECT count(*) FROM dead_letters WHERE reason = 'bad_timestamp'") == 1


def test_a_wrong_password_is_401_and_nothing_is_stored(running: Running) -> None:
    body = {"ts": ts_ms(5), "seq": 7, "metrics": {"temperature": 30.0}}
    for headers in (
        basic("t-hq/th-a", "wrong"),
        basic("t-hq/nobody", "th-a-secret"),
        {"Authorization": "Bearer th-a-secret"},
        {},
    ):
        answer = running.post("t-hq/th-a/telemetry", body, headers)
        assert answer.status_code == 401, (headers, answer.text)
        assert answer.headers["www-authenticate"].startswith("Basic ")
    # A good post afterwards is committed when answered: had the refused ones gone in, they
    # would be there too.
    good = {"ts": ts_ms(4), "metrics": {"humidity": 50}}
    assert running.post("t-hq/th-a/telemetry", good).status_code == 200
    assert rows(running.url, "SELECT metric FROM readings") == [("humidity",)]
    assert running.count("SELECT count(*) FROM dead_letters") == 0


def test_a_device_posting_for_another_device_is_403(running: Running) -> None:
    body = {"ts": ts_ms(5), "metrics": {"hvac_mode": 1}}
    answer = running.post("t-hq/ac-a/telemetry", body)  # th-a's login
    assert answer.status_code == 403
    assert "t-hq/th-a" in answer.json()["detail"]
    assert running.post("t-two/th-a/telemetry", body).status_code == 403  # same id, other site
    # The service's own login may publish nothing.
    assert running.post("t-hq/ac-a/telemetry", body, basic("clausewatch", "svc")).status_code == 403
    ac_a = basic("t-hq/ac-a", "ac-a-secret")
    assert running.post("t-hq/ac-a/telemetry", body, ac_a).status_code == 200
    assert rows(running.url, "SELECT device FROM readings") == [("ac-a",)]


def test_limits_answer_413_and_422_with_a_message(running: Running) -> None:
    too_big = orjson.dumps([{"metrics": {"temperature": 1.0}}] * 3000)  # > 64 KiB
    answer = running.post("t-hq/th-a/telemetry", too_big)
    assert answer.status_code == 413 and "limit 65536" in answer.json()["detail"]
    too_many = b"[" + b",".join([b"{}"] * 10_001) + b"]"  # within the bytes, over the count
    answer = running.post("t-hq/th-a/telemetry", too_many)
    assert answer.status_code == 413 and "10001 items" in answer.json()["detail"]
    for body, says in ((b"{not json", "not JSON"), (b"[]", "empty array"), (b"3", "one JSON")):
        answer = running.post("t-hq/th-a/telemetry", body)
        assert answer.status_code == 422 and says in answer.json()["detail"][0]["msg"], body
    assert running.post("t-hq/th-a/status", {}).status_code == 422  # telemetry or event only
    assert running.count("SELECT count(*) FROM readings") == 0
    assert running.count("SELECT count(*) FROM dead_letters") == 0


def test_a_site_of_another_worker_is_refused_with_a_reason(
    fresh_database_url: str, mqtt_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    """`--workers N`: worker 0 serves the API, and its pipeline holds only its own sites."""
    options = ServiceOptions(clock="data", serve_api=True, sites=("t-hq",))
    with start(fresh_database_url, mqtt_url, topic_prefix, tmp_path, options) as running:
        body = {"ts": ts_ms(5), "metrics": {"temperature": 22.0}}
        login = basic("t-two/th-a", "nope")
        answer = running.post("t-two/th-a/telemetry", body, login)
        assert answer.status_code == 401  # the login is checked first, whatever the site
        (tmp_path / "passwords").write_text(
            f"t-two/th-a:{mosquitto_password_hash('two')}\n" + (tmp_path / "passwords").read_text()
        )  # read again when it changes: no restart
        answer = running.post("t-two/th-a/telemetry", body, basic("t-two/th-a", "two"))
        assert answer.status_code == 503, answer.text
        assert "another ingest worker" in answer.json()["detail"]
        assert answer.headers["retry-after"] == "60"
        assert running.post("t-hq/th-a/telemetry", body).status_code == 200
        assert rows(running.url, "SELECT site FROM readings") == [("t-hq",)]


def test_a_full_queue_or_too_many_waiting_is_refused_not_queued() -> None:
    inbox = IngressQueue(2)
    direct = DirectIngress(inbox, max_in_flight=3)
    direct.submit("cw/s/d/telemetry", b"{}")
    direct.submit("cw/s/d/telemetry", b"{}")
    with pytest.raises(Busy, match="queue is full"):
        direct.submit("cw/s/d/telemetry", b"{}")
    assert direct.in_flight == 2  # the refused one holds nothing
    [first, _] = inbox.get_many(2, 0)
    direct.submit("cw/s/d/telemetry", b"{}")
    with pytest.raises(Busy, match="3 HTTP submissions are waiting"):
        direct.submit("cw/s/d/telemetry", b"{}")
    assert first.receipt is not None
    first.receipt.settled("committed")
    assert direct.in_flight == 2


def test_back_pressure_is_503_with_retry_after_and_a_slow_commit_is_not_a_200(
    fresh_database_url: str, mqtt_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    """The test holds a lock on `readings`, so the pipeline's flush waits in PostgreSQL: the
    first post waits for its commit, the next is refused at once (one post may wait), the first
    gets 503 when its commit does not come in time, and once the lock is gone its body is
    committed (a retry is absorbed)."""
    options = ServiceOptions(clock="data", serve_api=True)
    with start(
        fresh_database_url, mqtt_url, topic_prefix, tmp_path, options,
        http_ingest_max_in_flight=1, http_ingest_commit_timeout_s=2.0,
    ) as running:  # fmt: skip
        body = {"ts": ts_ms(5), "seq": 1, "metrics": {"temperature": 21.0}}
        with psycopg.connect(fresh_database_url) as blocker:
            blocker.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                first = pool.submit(running.post, "t-hq/th-a/telemetry", body)
                direct = running.service.direct
                assert direct is not None
                wait_for(lambda: direct.in_flight == 1, 10, "the first post waiting")
                refused = running.post("t-hq/th-a/telemetry", body)
                assert refused.status_code == 503, refused.text
                assert refused.headers["retry-after"] == "1"
                assert "waiting for their commit" in refused.json()["detail"]
                late = first.result(30)
            assert late.status_code == 503 and late.headers["retry-after"] == "5"
            assert "not committed within 2 s" in late.json()["detail"]
            blocker.rollback()  # the lock goes: the held flush commits
        wait_for(lambda: running.count("SELECT count(*) FROM readings") == 1, 20)
        again = running.post("t-hq/th-a/telemetry", body)  # the device's retry
        assert again.status_code == 200, again.text
        assert running.count("SELECT count(*) FROM readings") == 1
