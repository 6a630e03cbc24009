"""Migration 0028 takes every webhook URL out of the places the API shows: a party's own URL
becomes a target of its site that its contact names, notifications point at targets, and the
`notified` timeline rows say which target instead of holding the URL."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from psycopg.types.json import Jsonb

from store.migrate import migrate
from store.registry import party_rows, sync_site
from tests.alerts.conftest import T0, site_model, with_contacts

pytestmark = pytest.mark.integration

SECRET_URL = "https://oapi.example.com/robot/send?access_token=tok-0123456789abcdef"
SHARED_URL = "https://sms.example.com/hook?key=shared-secret-value"


def test_webhook_urls_leave_parties_notifications_and_timelines(empty_database_url: str) -> None:
    url = empty_database_url
    migrate(url, target=27)
    model = site_model()
    with psycopg.connect(url) as conn:
        # The site as synced before 0028 (party contacts may hold a URL then).
        old_model = with_contacts("wang", {"webhook": SECRET_URL, "phone": "110"})
        conn.execute(
            "INSERT INTO sites (id, name, timezone, info, model, created_by, created_at,"
            " updated_by, updated_at)"
            " VALUES (%s, 'x', 'Asia/Shanghai', '{}', %s, 't', %s, 't', %s)",
            (model.site.id, Jsonb(old_model.model_dump(mode="json")), T0, T0),
        )
        conn.execute(
            "INSERT INTO parties (site, id, name, kind, contacts, created_by, created_at,"
            " updated_by, updated_at) VALUES (%s, 'wang', '王工', 'person', %s, 't', %s, 't', %s)",
            (model.site.id, Jsonb({"webhook": SECRET_URL, "phone": "110"}), T0, T0),
        )
        (shared,) = conn.execute(
            "INSERT INTO webhook_targets (site, level, url, created_by, created_at)"
            " VALUES (NULL, 0, %s, 'cli', %s) RETURNING id",
            (SHARED_URL, T0),
        ).fetchone() or (0,)
        (alert,) = conn.execute(
            "INSERT INTO alerts (site, clause_id, clause_version, content_hash, standard, number,"
            " title, domain, kind, severity, space, state, started_at, confirmed_at, updated_at)"
            " VALUES (%s, 'c', 1, 'h', 's', 'n', 't', 'd', 'violation', 'major', 'b1', 'firing',"
            " %s, %s, %s) RETURNING id",
            (model.site.id, T0, T0, T0),
        ).fetchone() or (0,)
        for target, target_url in ((None, SECRET_URL), (shared, SHARED_URL)):
            (notification,) = conn.execute(
                "INSERT INTO notifications (alert_id, site, target_id, url, event, level, party,"
                " payload, state, attempts, next_attempt_at, created_at)"
                " VALUES (%s, %s, %s, %s, 'raised', 0, 'wang', '{}', 'delivered', 1, %s, %s)"
                " RETURNING id",
                (alert, model.site.id, target, target_url, T0, T0),
            ).fetchone() or (0,)
            conn.execute(
                "INSERT INTO alert_timeline (alert_id, site, at, action, actor, note, data)"
                " VALUES (%s, %s, %s, 'notified', 'notifier', 'raised notice delivered', %s)",
                (
                    alert,
                    model.site.id,
                    T0,
                    Jsonb({"notification": notification, "url": target_url}),
                ),
            )
        conn.commit()
    migrate(url)
    with psycopg.connect(url) as conn:
        targets = conn.execute(
            "SELECT id, name, site, url, broadcast, length(secret) FROM webhook_targets ORDER BY id"
        ).fetchall()
        own = f"{model.site.id}-wang"
        assert [t[1:] for t in targets] == [
            (f"target-{shared}", None, SHARED_URL, True, 64),
            (own, model.site.id, SECRET_URL, False, 64),
        ]
        (party,) = party_rows(conn, [model.site.id])
        assert party["contacts"] == {"webhook": own, "phone": "110"}
        stored = conn.execute("SELECT model::text FROM sites").fetchone()
        assert stored is not None and "access_token" not in stored[0] and own in stored[0]
        notifications = conn.execute(
            "SELECT target_id, target_name FROM notifications ORDER BY id"
        ).fetchall()
        assert notifications == [(targets[1][0], own), (shared, f"target-{shared}")]
        data = conn.execute(
            "SELECT data FROM alert_timeline WHERE action = 'notified' ORDER BY id"
        ).fetchall()
        assert [d[0].get("target_name") for d in data] == [own, f"target-{shared}"]
        assert not any("url" in d[0] for d in data)
        # The stored model still loads, and a sync of the same file (naming the target) is quiet.
        renamed = with_contacts("wang", {"webhook": own, "phone": "110"})
        report = sync_site(conn, renamed, "test", now=T0 + dt.timedelta(days=1))
        assert "party.changed" not in report.changes
