"""Field check-ins on the running service (issue 19; the browser journey is in
test_checkins_browser.py): a space offers the tasks its obligations accept and refuses others,
the sheet covers a subtree, who may check in, an event id names one check-in, and under the data
clock (the demo, a replay) a check-in is stamped with the site's data time, not the wall's."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest

from api.tokens import create_token
from clausewatch.embedded import free_port
from clausewatch.service import Service, ServiceOptions
from clausewatch.settings import Settings
from config import BUNDLED_DIR
from config.files import LoadedConfig, load_clause_file
from ingest.pipeline import Clock
from rules.clause import ClauseFile
from rules.site import SiteModel
from tests.api.test_checkin_photos import png
from tests.support import auth, mqtt_publisher, rows, wait_for

pytestmark = pytest.mark.integration

SITE = "s-checkin"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
CLEANING = ClauseFile.model_validate(
    {
        "standard": {
            "code": "GB/T 43542-2023",
            "title": "机关办公区域物业服务监管和评价规范",
            "edition": "2023",
        },
        "clauses": [
            {
                "id": "toilet.cleaning",
                "version": 1,
                "effective_from": "2024-04-01",
                "number": "保洁服务",
                "title": "公共卫生间每 2 小时保洁一次",
                "text": "公共卫生间至少每 2 小时保洁一次（全天，测试用）。",
                "domain": "cleaning",
                "key": False,
                "confidence": "C",
                "severity": "warning",
                "applies_to": {"space_types": ["toilet"]},
                "check": {
                    "kind": "obligation",
                    "event": "cleaning.completed",
                    "every": "2h",
                    "grace": "15m",
                },
            }
        ],
    }
)


def checkin_site() -> SiteModel:
    # The toilet was last cleaned 3 h ago: 45 min past its 2 h + 15 min, overdue from the start.
    # The lift was maintained yesterday: in time.
    return SiteModel.model_validate(
        {
            "site": {"id": SITE, "name": "测试办公楼", "timezone": "Asia/Shanghai"},
            "spaces": [
                {"id": "b1", "name": "主楼", "type": "building"},
                {"id": "b1-2f", "name": "二层", "type": "floor", "parent": "b1"},
                {
                    "id": "b1-2f-wc-east",
                    "name": "二层东卫生间",
                    "type": "toilet",
                    "parent": "b1-2f",
                    "last_done": {"toilet.cleaning": (NOW - dt.timedelta(hours=3)).isoformat()},
                },
                {"id": "b1-2f-201", "name": "201 办公室", "type": "office", "parent": "b1-2f"},
                {
                    "id": "b1-lift-1",
                    "name": "1号电梯",
                    "type": "elevator",
                    "parent": "b1",
                    "last_done": {"maintenance.done": (NOW - dt.timedelta(days=1)).isoformat()},
                },
            ],
            "devices": [
                {
                    "id": "th-201",
                    "space": "b1-2f-201",
                    "metrics": {"temperature": {"unit": "°C", "range": [-20, 60]}},
                }
            ],
            "parties": [{"id": "clean-team", "name": "洁美物业保洁班组", "kind": "contractor"}],
            "assignments": [
                {
                    "party": "clean-team",
                    "space": "b1",
                    "domain": "cleaning",
                    "valid_from": "2026-01-01T00:00:00+08:00",
                }
            ],
        }
    )


@contextmanager
def started(url: str, mqtt_url: str, prefix: str, clock: Clock) -> Iterator[Service]:
    """The service on `url` with the check-in site, its cleaning clause and the lift clause."""
    settings = Settings(
        database_url=url,
        mqtt_url=mqtt_url,
        topic_prefix=prefix,
        mqtt_client_id=f"cw-checkin-{uuid.uuid4().hex[:8]}",
        lateness_s=1,
        flush_interval_s=0.05,
        http_port=free_port(),
    )
    lifts = BUNDLED_DIR / "clauses" / "tsg-t5002-2017.yaml"
    config = LoadedConfig(
        sites={SITE: checkin_site()},
        clause_files={Path("cleaning.yaml"): CLEANING, lifts: load_clause_file(lifts)},
    )
    running = Service(settings, config, ServiceOptions(clock=clock, serve_api=True))
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def service(fresh_database_url: str, mqtt_url: str, topic_prefix: str) -> Iterator[Service]:
    with started(fresh_database_url, mqtt_url, topic_prefix, "wall") as running:
        yield running


def tokens(service: Service) -> dict[str, str]:
    with psycopg.connect(service.database_url) as conn:
        return {
            "cleaner": create_token(conn, "cleaner", (SITE,), "保洁员")[0],
            "manager": create_token(conn, "facility_manager", (SITE,), "物业经理")[0],
            "viewer": create_token(conn, "viewer", (SITE,), "viewer")[0],
            "elsewhere": create_token(conn, "admin", ("site-x",), "another site")[0],
        }


def test_a_space_offers_its_tasks_and_the_sheet_its_subtree(service: Service) -> None:
    token = tokens(service)["viewer"]
    with httpx.Client(base_url=service.api_url, headers=auth(token), timeout=30) as api:
        toilet = api.get(f"/api/v1/checkins/{SITE}/b1-2f-wc-east").json()
        assert toilet["name"] == "二层东卫生间" and toilet["path"] == [
            "主楼",
            "二层",
            "二层东卫生间",
        ]
        assert [(t["event"], t["label_zh"], t["label_en"]) for t in toilet["tasks"]] == [
            ("cleaning.completed", "已清洁", "cleaned")
        ]
        assert api.get(f"/api/v1/checkins/{SITE}/b1-2f-201").json()["tasks"] == []
        assert api.get(f"/api/v1/checkins/{SITE}/nowhere").status_code == 404

        floor = api.get("/api/v1/checkins/sheet", params={"site": SITE, "space": "b1-2f"}).json()
        assert [e["space"] for e in floor["entries"]] == ["b1-2f-wc-east"]
        entry = floor["entries"][0]
        assert entry["url"] == f"{service.api_url}/checkin/{SITE}/b1-2f-wc-east"
        assert entry["qr_svg"].startswith("data:image/svg+xml;base64,")
        whole = api.get("/api/v1/checkins/sheet", params={"site": SITE}).json()
        assert [e["space"] for e in whole["entries"]] == ["b1-2f-wc-east", "b1-lift-1"]
        missing = api.get("/api/v1/checkins/sheet", params={"site": SITE, "space": "nowhere"})
        assert missing.status_code == 404
        assert api.get("/api/v1/checkins/sheet", params={"site": "site-x"}).status_code == 403
        assert api.get("/api/v1/checkins/sheet", params={"site": "Bad Id"}).status_code == 422


def test_who_may_check_in_and_what(service: Service) -> None:
    made = tokens(service)
    path = f"/api/v1/checkins/{SITE}/b1-2f-wc-east"

    def post(token: str, body: dict[str, object], where: str = path) -> httpx.Response:
        return httpx.post(service.api_url + where, json=body, headers=auth(token), timeout=30)

    cleaning = {"event_id": str(uuid.uuid4()), "task": "cleaning.completed"}
    assert post(made["viewer"], cleaning).status_code == 403  # reads only
    assert post(made["elsewhere"], cleaning).status_code == 404  # not its site
    assert post(made["cleaner"], cleaning, f"/api/v1/checkins/{SITE}/nowhere").status_code == 404
    wrong = post(made["cleaner"], {**cleaning, "task": "maintenance.done"})
    assert wrong.status_code == 422 and "cleaning.completed" in wrong.text
    photo = post(made["cleaner"], {**cleaning, "photo": str(uuid.uuid4())})
    assert photo.status_code == 422 and "photo" in photo.text
    too_long = post(made["cleaner"], {**cleaning, "note": "x" * 1001})
    assert too_long.status_code == 422
    assert rows(service.database_url, "SELECT count(*) FROM checkins")[0][0] == 0

    done = post(made["cleaner"], {**cleaning, "note": "已补充洗手液"})
    assert done.status_code == 200, done.text
    assert done.json()["actor"].startswith("token:") and "保洁员" in done.json()["actor"]
    # Its event id names this check-in: the lift's maintenance cannot reuse it.
    reused = post(
        made["cleaner"],
        {**cleaning, "task": "maintenance.done"},
        f"/api/v1/checkins/{SITE}/b1-lift-1",
    )
    assert reused.status_code == 409
    assert rows(service.database_url, "SELECT count(*) FROM events")[0][0] == 1


def test_under_the_data_clock_a_check_in_takes_the_sites_data_time(
    fresh_database_url: str, mqtt_url: str, topic_prefix: str
) -> None:
    with started(fresh_database_url, mqtt_url, topic_prefix, "data") as service:
        # The building's data lives two days ago (a replay, the demo's simulated day).
        then = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=2)
        with mqtt_publisher(mqtt_url) as send:
            reading = {"ts": int(then.timestamp() * 1000), "seq": 1, "metrics": {"temperature": 24}}
            send(f"{topic_prefix}/{SITE}/th-201/telemetry", orjson.dumps(reading))
        url = service.database_url
        wait_for(
            lambda: rows(
                url,
                f"SELECT watermark FROM engine_checkpoints WHERE site = '{SITE}'"
                " AND watermark IS NOT NULL",
            ),
            30,
            "the site's checkpoint",
        )
        token = tokens(service)["cleaner"]
        answer = httpx.post(
            f"{service.api_url}/api/v1/checkins/{SITE}/b1-2f-wc-east",
            json={"event_id": str(uuid.uuid4()), "task": "cleaning.completed"},
            headers=auth(token),
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        stamped = dt.datetime.fromisoformat(answer.json()["ts"])
        # The data time (the watermark, behind the reading by the lateness), not the wall.
        assert abs(stamped - then) < dt.timedelta(minutes=1)
        (event_ts,) = rows(url, "SELECT ts FROM events WHERE type = 'cleaning.completed'")[0]
        assert event_ts == stamped

        # The site's time stands still without new data: a second check-in of the task takes
        # the next millisecond, so it is a second event, not a copy of the first.
        again = httpx.post(
            f"{service.api_url}/api/v1/checkins/{SITE}/b1-2f-wc-east",
            json={"event_id": str(uuid.uuid4()), "task": "cleaning.completed"},
            headers=auth(token),
            timeout=30,
        )
        assert again.status_code == 200, again.text
        second = dt.datetime.fromisoformat(again.json()["ts"])
        assert second - stamped == dt.timedelta(milliseconds=1)
        stored = rows(url, "SELECT ts FROM events WHERE type = 'cleaning.completed' ORDER BY ts")
        assert [ts for (ts,) in stored] == [stamped, second]


def test_a_cleaner_records_check_ins_at_its_sites_and_nothing_else(service: Service) -> None:
    """Issue 19: a check-in needed `alerts:act`, so the person with the mop could also close
    alerts. The role `cleaner` (保洁), made with `clausewatch user create --role cleaner`, opens
    a space's check-in form and records check-ins with photos at its sites; everything else is
    refused. A facility manager still checks in; a viewer still cannot."""
    password = "mop and bucket 1"
    made = subprocess.run(
        [sys.executable, "-m", "clausewatch", "user", "create", "baojie", "--role", "cleaner",
         "--site", SITE, "--display-name", "保洁刘", "--password-stdin",
         "--database-url", service.database_url],
        input=password + "\n", capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    path = f"/api/v1/checkins/{SITE}/b1-2f-wc-east"
    with httpx.Client(base_url=service.api_url, timeout=30) as phone:
        signed = phone.post("/api/v1/session", json={"name": "baojie", "password": password})
        assert signed.status_code == 200, signed.text
        write = {"X-CSRF-Token": signed.json()["csrf_token"]}
        # What the check-in page needs: the space's tasks, a photo, the check-in.
        assert phone.get(path).json()["tasks"][0]["event"] == "cleaning.completed"
        photo = phone.post(
            "/api/v1/checkin-photos",
            params={"site": SITE},
            content=png(),
            headers={**write, "Content-Type": "image/png"},
        )
        assert photo.status_code == 201, photo.text
        body = {"event_id": str(uuid.uuid4()), "task": "cleaning.completed"}
        done = phone.post(path, json={**body, "photo": photo.json()["id"]}, headers=write)
        assert done.status_code == 200, done.text
        assert done.json()["actor"] == "user:baojie (保洁刘)"
        # Nothing else: no alert, reading, report, sheet, photo, stream; no other site.
        alert = rows(service.database_url, "SELECT coalesce(max(id), 0) FROM alerts")[0][0]
        refused = {
            "alerts": phone.get("/api/v1/alerts"),
            "alert": phone.get(f"/api/v1/alerts/{alert}"),
            "ack": phone.post(f"/api/v1/alerts/{alert}/ack", json={}, headers=write),
            "readings": phone.get("/api/v1/readings", params={"site": SITE}),
            "sites": phone.get("/api/v1/sites"),
            "compliance": phone.get("/api/v1/compliance"),
            "energy": phone.get("/api/v1/carbon", params={"site": SITE}),
            "sheet": phone.get("/api/v1/checkins/sheet", params={"site": SITE}),
            "photo": phone.get(f"/api/v1/checkin-photos/{photo.json()['id']}"),
            "stream": phone.get("/api/v1/stream"),
        }
        assert {name: r.status_code for name, r in refused.items()} == dict.fromkeys(
            refused, 403
        ), {name: r.text for name, r in refused.items() if r.status_code != 403}
        elsewhere = phone.post(
            "/api/v1/checkins/site-x/b1-2f-wc-east",
            json={"event_id": str(uuid.uuid4()), "task": "cleaning.completed"},
            headers=write,
        )
        assert elsewhere.status_code == 404
    tokens_ = tokens(service)
    other = {"event_id": str(uuid.uuid4()), "task": "cleaning.completed"}
    manager = httpx.post(
        service.api_url + path, json=other, headers=auth(tokens_["manager"]), timeout=30
    )
    assert manager.status_code == 200, manager.text
    viewer = httpx.post(
        service.api_url + path,
        json={**other, "event_id": str(uuid.uuid4())},
        headers=auth(tokens_["viewer"]),
        timeout=30,
    )
    assert viewer.status_code == 403
