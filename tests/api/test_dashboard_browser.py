"""The dashboard in real headless Chromium against the running service: a facility manager signs
in, violating readings are published over MQTT, the alert appears without a reload, is
acknowledged, resolves when the readings recover, and is closed with its cause and corrective
action; each state change shows on the page. A screenshot is left in the artifacts."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import psycopg
import pytest

from api.tokens import create_token
from clausewatch.embedded import free_port
from clausewatch.service import Service, ServiceOptions
from clausewatch.settings import Settings
from config.files import LoadedConfig
from rules.clause import ClauseFile
from tests.api.conftest import site_model
from tests.support import launch_chromium, mqtt_publisher, skip_without_chromium

pytestmark = [pytest.mark.integration, pytest.mark.browser]

SITE = "site-a"
CLAUSES = ClauseFile.model_validate(
    {
        "standard": {
            "code": "建科〔2008〕115号",
            "title": "公共建筑室内温度控制管理办法",
            "edition": "2008",
        },
        "clauses": [
            {
                "id": "temp.cooling.min",
                "version": 1,
                "effective_from": "2008-07-01",
                "number": "第三条",
                "title": "夏季室内空调温度设置不得低于26℃",
                "text": "公共建筑夏季室内空调温度设置不得低于26摄氏度。",
                "domain": "indoor_climate",
                "key": True,
                "confidence": "A",
                "severity": "major",
                "params": {"limit": {"default": 26.0, "unit": "°C"}},
                "check": {
                    "kind": "threshold",
                    "metric": "temperature",
                    "min": "$limit",
                    "when": {"metric": "hvac_mode", "op": "==", "value": "cooling"},
                    "for": "1m",
                },
            }
        ],
    }
)


@pytest.fixture
def service(fresh_database_url: str, mqtt_url: str, topic_prefix: str) -> Iterator[Service]:
    skip_without_chromium()
    settings = Settings(
        database_url=fresh_database_url,
        mqtt_url=mqtt_url,
        topic_prefix=topic_prefix,
        mqtt_client_id=f"cw-browser-{uuid.uuid4().hex[:8]}",
        lateness_s=0,
        flush_interval_s=0.05,
        http_port=free_port(),
    )
    config = LoadedConfig(sites={SITE: site_model(SITE)}, clause_files={Path("test.yaml"): CLAUSES})
    running = Service(settings, config, ServiceOptions(clock="data", serve_api=True))
    running.start()
    try:
        yield running
    finally:
        running.stop()


START = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=5)


def _publish(mqtt_url: str, prefix: str, readings: list[tuple[int, dict[str, float]]]) -> None:
    """Publishes (seconds after START, metrics) readings of th-1 at QoS 1."""
    with mqtt_publisher(mqtt_url) as send:
        topic = f"{prefix}/{SITE}/th-1/telemetry"
        for offset, metrics in readings:
            ts_ms = int((START + dt.timedelta(seconds=offset)).timestamp() * 1000)
            body = {"ts": ts_ms, "seq": offset + 1, "metrics": metrics}
            send(topic, orjson.dumps(body))


# Cooling on, then 24 °C for 2.5 minutes: below 26 °C for longer than `for: 1m`.
VIOLATION = [(0, {"hvac_mode": 1.0})] + [
    (30 * (i + 1), {"temperature": 24.0 - 0.1 * i}) for i in range(6)
]
# Back to 26.5 °C: the condition clears and the engine resolves the alert.
RECOVERY = [(210 + 30 * i, {"temperature": 26.5}) for i in range(3)]


def test_a_facility_manager_follows_a_live_alert_to_its_close(
    service: Service, mqtt_url: str, topic_prefix: str, artifacts_dir: Path
) -> None:
    from playwright.sync_api import expect

    with psycopg.connect(service.database_url) as conn:
        token, _ = create_token(conn, "facility_manager", (SITE,), "browser test")

    with launch_chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        refused: list[str] = []  # what the page's Content-Security-Policy blocked
        page.on(
            "console",
            lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
        )
        page.goto(service.api_url + "/#token")  # the token form (people sign in at /login)
        page.fill("#token-input", token)
        page.click("#token-form button[type=submit]")
        expect(page.locator("#connection")).to_have_attribute("data-state", "live")
        expect(page.locator("#list-empty")).to_be_visible()

        _publish(mqtt_url, topic_prefix, VIOLATION)  # no reload from here on
        row = page.locator("li.alert").first
        expect(row).to_be_visible(timeout=20_000)
        expect(row).to_have_attribute("data-state", "firing")
        expect(row).to_have_attribute("data-severity", "major")

        row.click()
        expect(page.locator("#detail-text")).to_contain_text("26摄氏度")
        expect(page.locator("#detail-responsible")).to_contain_text("王工")
        expect(page.locator("#chart svg")).to_have_count(1)  # ECharts, served by the service
        expect(page.locator("#chart-worst")).to_contain_text("°C")
        page.fill("#ack-note", "已通知运维调高设定温度")
        page.click("#ack-button")
        expect(page.locator("#detail-state")).to_have_attribute("data-state", "acknowledged")
        expect(row).to_have_attribute("data-state", "acknowledged")
        expect(page.locator("#timeline li[data-action=acknowledged]")).to_have_count(1)

        page.click("#lang-toggle")  # English labels
        expect(page.locator("#ack-button")).to_have_text("Acknowledge")
        page.screenshot(path=str(artifacts_dir / "dashboard-acknowledged.png"), full_page=True)

        _publish(mqtt_url, topic_prefix, RECOVERY)
        expect(page.locator("#detail-state")).to_have_attribute(
            "data-state", "resolved", timeout=20_000
        )
        page.fill("#close-cause", "会议室空调设定温度被调到24℃")
        page.fill("#close-action", "设定温度恢复26℃并锁定面板")
        page.click("#close-button")
        expect(page.locator("#detail-state")).to_have_attribute("data-state", "closed")
        expect(row).to_have_attribute("data-state", "closed")
        expect(page.locator("#timeline li[data-action=closed]")).to_have_count(1)

        # A notification's link (issue 20) opens the same alert, in the signed-in tab.
        alert_id = row.get_attribute("data-alert-id")
        page.goto(f"{service.api_url}/alerts/{alert_id}")
        expect(page.locator("#detail-state")).to_have_attribute("data-state", "closed")
        expect(page.locator("#detail-responsible")).to_contain_text("王工")
        assert not refused, refused
