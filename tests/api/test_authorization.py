"""The authorization matrix: every endpoint × every role × a token of site-a alone or of every
site × a request about site-a (own) or site-b (other), each asserting the status code.

The expected statuses are not computed from `api.auth` (which would test the code against
itself): they come from the table "Who may call what" in docs/api.md, parsed here, so the
documentation is the specification and a drift between the two fails. Every answer a site-a
token gets is also searched for site-b's data, and every answer for the secrets the fixtures
planted (other tokens, webhook URLs and secrets).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from alerts import notify, routing, webhooks
from api.auth import ROLE_PERMISSIONS, Permission
from api.tokens import ROLES, create_token, revoke_token
from api.users import create_user, disable_user
from compliance import revisions, site_revisions
from compliance.reports import generate_report
from config.sitebook import site_diff
from config.sitefiles import ImportPlan
from rules.clause import ClauseVersion, Standard
from store import checkins, quiet, registry
from store.times import wall_now
from tests.api.conftest import T0, auth, insert_alert
from tests.api.test_checkin_photos import png

pytestmark = pytest.mark.integration

Request = tuple[str, str, dict[str, Any] | None]  # method, url, json body
Build = Callable[[psycopg.Connection[Any], str], Request]


@dataclass(frozen=True)
class Endpoint:
    name: str
    route: str  # as docs/api.md names it: "GET /alerts/{id}"
    build: Build
    ok: int = 200


def _fresh_alert(conn: psycopg.Connection[Any], site: str, state: str = "firing") -> int:
    """An alert in a subject of its own, so lifecycle checks of other subjects never interfere."""
    alert_id = insert_alert(conn, site, space=f"sp-{uuid.uuid4().hex[:8]}", state=state)
    if state == "resolved":
        conn.execute(
            "UPDATE alerts SET ended_at = %s WHERE id = %s", (T0 - dt.timedelta(hours=1), alert_id)
        )
    conn.commit()
    return alert_id


def _second_party(conn: psycopg.Connection[Any], site: str) -> str:
    """A party of the site besides fm-1 (who is responsible for every fresh alert)."""
    conn.execute(
        "INSERT INTO parties (site, id, name, kind, created_by, created_at, updated_by,"
        " updated_at) VALUES (%s, 'fm-2', %s, 'contractor', 'test', %s, 'test', %s)"
        " ON CONFLICT DO NOTHING",
        (site, f"second party of {site}", T0, T0),
    )
    conn.commit()
    return "fm-2"


def _assignment_id(conn: psycopg.Connection[Any], site: str) -> int:
    row = conn.execute("SELECT min(id) FROM assignments WHERE site = %s", (site,)).fetchone()
    assert row is not None
    return int(row[0])


def _report_id(conn: psycopg.Connection[Any], site: str) -> int:
    """A stored quarterly report of the site (made once per site and test module)."""
    row = conn.execute("SELECT min(id) FROM evaluation_reports WHERE site = %s", (site,)).fetchone()
    if row is not None and row[0] is not None:
        return int(row[0])
    report_id, _ = generate_report(conn, site, "2026Q2", "test", T0)
    conn.commit()
    return report_id


def _evaluation(conn: psycopg.Connection[Any], site: str) -> tuple[int, int]:
    """An evaluation of the site with one open improvement action: (evaluation id, action id)."""
    row = conn.execute(
        "INSERT INTO evaluations (site, clause_id, period, period_start, period_end, method,"
        " findings, satisfaction, evaluated_by, evaluated_at) VALUES (%s, 'temp.cooling.min',"
        " '2026Q1', '2026-01-01T00:00+08', '2026-04-01T00:00+08', 'inspection', 'ok', 4,"
        " 'test', %s) RETURNING id",
        (site, T0),
    ).fetchone()
    assert row is not None
    action = conn.execute(
        "INSERT INTO improvement_actions (evaluation_id, site, action, owner, deadline,"
        " updated_by, updated_at) VALUES (%s, %s, 'fix', 'fm-1', %s, 'test', %s) RETURNING id",
        (row[0], site, T0, T0),
    ).fetchone()
    assert action is not None
    conn.commit()
    return int(row[0]), int(action[0])


def _feedback(conn: psycopg.Connection[Any], site: str, photo: bool = False) -> int:
    """A new feedback item of the site from its meeting room (with a photo when asked)."""
    row = conn.execute(
        "INSERT INTO feedback_items (site, space, category, clauses, body, lang, received_at,"
        " updated_at) VALUES (%s, 'room-1', 'too_cold', '{temp.cooling.min}', '太冷了', 'zh',"
        " %s, %s) RETURNING id",
        (site, T0, T0),
    ).fetchone()
    assert row is not None
    if photo:
        conn.execute(
            "INSERT INTO feedback_photos VALUES (%s, 'image/png', 8, 'x', %s)",
            (row[0], b"\x89PNG\r\n\x1a\n"),
        )
    conn.commit()
    return int(row[0])


def _target_path(conn: psycopg.Connection[Any]) -> str:
    """A node with targets of its own, to remove."""
    path = f"city-{uuid.uuid4().hex[:8]}"
    conn.execute("INSERT INTO org_targets VALUES (%s, 0.9, 0.95, 0.3, 'test', %s)", (path, T0))
    conn.commit()
    return path


def _revision_clause(conn: psycopg.Connection[Any]) -> str:
    """A clause of its own (one open revision per clause), stored as the files would."""
    clause = ClauseVersion.model_validate(
        {
            "id": f"authz.c{uuid.uuid4().hex[:8]}",
            "version": 1,
            "effective_from": "2020-01-01",
            "number": "1",
            "title": "authz",
            "domain": "indoor_climate",
            "confidence": "B",
            "params": {"limit": {"default": 28, "unit": "°C"}},
            "check": {"kind": "threshold", "metric": "temperature", "max": "$limit"},
        }
    )
    standard = Standard(code="AUTHZ", title="authz", edition="1")
    registry.put_clause_version(conn, standard, clause, "test", wall_now())
    conn.commit()
    return clause.id


def _revision(conn: psycopg.Connection[Any], state: str) -> int:
    """A revision of a fresh clause, proposed by someone else, taken up to `state`."""
    now = wall_now()
    made = revisions.propose(
        conn,
        _revision_clause(conn),
        {"params.limit.default": 29},
        "authz",
        "authz-proposer",
        now,
        backtest_days=1,
    )
    if state in ("approved", "published"):
        revisions.approve(conn, made.id, "user:authz-approver", None, now)
    if state == "published":
        revisions.publish(conn, made.id, "authz-approver", _later(4), now)
    conn.commit()
    return made.id


def _site_revision(conn: psycopg.Connection[Any], site: str, state: str) -> int:
    """A revision of `site` (its model as synced, proposed as a new site's file so that it
    changes something), taken up to `state`; the site's earlier open ones are closed first
    (one open revision per site)."""
    conn.execute(
        "UPDATE site_revisions SET state = 'rejected' WHERE site = %s"
        " AND state IN ('pending', 'approved', 'published')",
        (site,),
    )
    model = registry.site_model(conn, site)
    assert model is not None
    plan = ImportPlan(model, None, site_diff(None, model), Path(f"{site}.yaml"), "")
    now = wall_now()
    made = site_revisions.propose(conn, plan, f"{site}.xlsx", "authz", "authz-proposer", now)
    if state in ("approved", "published"):
        site_revisions.approve(conn, made.id, "user:authz-approver", None, now)
    if state == "published":
        site_revisions.publish(conn, made.id, "authz-approver", now + dt.timedelta(days=1), now)
    conn.commit()
    return made.id


def _later(days: int) -> dt.date:
    return dt.datetime.now(dt.UTC).date() + dt.timedelta(days=days)


# Secrets the fixtures plant; no answer may contain one.
PLANTED_TOKEN = "tok-planted-" + uuid.uuid4().hex
PLANTED_SECRET = "secret-planted-" + uuid.uuid4().hex
WEBHOOK_URL = f"https://127.0.0.1:9/robot/send?access_token={PLANTED_TOKEN}"


@pytest.fixture(scope="module")
def planted_secrets(api_database_url: str) -> tuple[str, ...]:
    """A webhook target of site-a whose URL holds a token, named by site-a's party, and an alert
    of site-a with a `notified` timeline row (its notice refused: the address is loopback)."""
    with psycopg.connect(api_database_url) as conn:
        target = webhooks.Target("site-a-sms", WEBHOOK_URL, PLANTED_SECRET, site="site-a")
        webhooks.add_target(conn, target, "test", now=T0)
        registry.change_party(conn, "site-a", "fm-1", {"contacts": {"webhook": "site-a-sms"}}, "t")
        alert_id = _fresh_alert(conn, "site-a")
        notice = notify.AlertNotice(alert_id, "site-a", "raised", 0, "fm-1", {"id": alert_id})
        notify.queue(conn, [notice], T0)
        conn.commit()
        assert notify.deliver_due(conn, T0).failed >= 1
    return (PLANTED_TOKEN, PLANTED_SECRET, "/robot/send")


def _target_id(conn: psycopg.Connection[Any]) -> int:
    found = webhooks.target_id_by_name(conn, "site-a-sms")
    assert found is not None
    return found


def _allow_entry(conn: psycopg.Connection[Any]) -> int:
    entry_id, _ = webhooks.allow(conn, f"gw-{uuid.uuid4().hex[:8]}.lan", "", "test")
    conn.commit()
    return entry_id


def _route_body(conn: psycopg.Connection[Any], site: str) -> dict[str, Any]:
    """A route for `site` to a target of every site (made once)."""
    if webhooks.target_id_by_name(conn, "routes-hook") is None:
        hook = webhooks.Target("routes-hook", WEBHOOK_URL, PLANTED_SECRET, broadcast=False)
        webhooks.add_target(conn, hook, "test", now=T0)
        conn.commit()
    return {"name": f"r-{uuid.uuid4().hex[:8]}", "sites": [site], "receivers": ["routes-hook"]}


def _fresh_route(conn: psycopg.Connection[Any], site: str) -> int:
    spec = routing.RouteSpec.model_validate(_route_body(conn, site))
    route_id = routing.add_route(conn, spec, "test", T0)
    conn.commit()
    return route_id


def _network() -> str:
    return f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.0/24"


CLAUSE_YAML = (
    "standard: {code: T-1, title: test, edition: '1'}\n"
    "clauses:\n"
    "  - {id: t.one, version: 1, effective_from: 2026-01-01, number: '1', title: t,"
    " domain: d, confidence: C, check: {kind: threshold, metric: temperature, max: 30}}\n"
)


def _quiet_body(site: str) -> dict[str, Any]:
    until = wall_now() + dt.timedelta(hours=1)
    return {"site": site, "scope": "site", "ends_at": until.isoformat(), "reason": "检修"}


def _fresh_quiet(conn: psycopg.Connection[Any], site: str, kind: quiet.Kind) -> int:
    """A silence or maintenance window of the whole site, for the next hour."""
    now = wall_now()
    spec = quiet.Spec(kind, site, "site", None, now, now + dt.timedelta(hours=1), "检修")
    row = quiet.create(conn, spec, "test", now)
    conn.commit()
    return int(row["id"])


TARIFF_DAYS = itertools.count()  # each tariff of the matrix its own day: none overlaps another


def _tariff_body(site: str) -> dict[str, Any]:
    """A one-day site tariff (energy/costs.py) on a day no other request of the matrix uses
    (the site scope's rule applies: org and region tariffs need an unscoped token)."""
    day = dt.date(2100, 1, 1) + dt.timedelta(days=next(TARIFF_DAYS))
    return {
        "scope": "site",
        "scope_id": site,
        "carrier": "water",
        "first_day": day.isoformat(),
        "last_day": day.isoformat(),
        "price": "4.2",
    }


def _open_tariff(conn: psycopg.Connection[Any], site: str) -> int:
    """An open tariff of the site to end (from a day of its own, well before the end)."""
    from energy.costs import Tariff, add_tariff

    day = dt.date(2200, 1, 1) + dt.timedelta(days=next(TARIFF_DAYS))
    # the matrix's earlier ones (ended far in the future) would overlap it
    conn.execute("DELETE FROM energy_tariffs WHERE scope_id = %s AND carrier = 'heat'", (site,))
    tariff = Tariff(scope="site", scope_id=site, carrier="heat", first_day=day, price=1)
    added = add_tariff(conn, tariff, added_by="matrix")
    conn.commit()
    assert added.id is not None
    return added.id


ENDPOINTS = [
    Endpoint(
        "list revisions",
        "GET /clause-revisions",
        lambda c, s: ("GET", "/api/v1/clause-revisions", None),
    ),
    Endpoint(
        "get revision",
        "GET /clause-revisions/{id}",
        lambda c, s: ("GET", f"/api/v1/clause-revisions/{_revision(c, 'pending')}", None),
    ),
    Endpoint(
        "propose revision",
        "POST /clause-revisions",
        lambda c, s: (
            "POST",
            "/api/v1/clause-revisions",
            {
                "clause_id": _revision_clause(c),
                "changes": {"params.limit.default": 29},
                "reason": "authz",
                "backtest_days": 1,
            },
        ),
        ok=201,
    ),
    Endpoint(
        "approve revision",
        "POST /clause-revisions/{id}/approve",
        lambda c, s: ("POST", f"/api/v1/clause-revisions/{_revision(c, 'pending')}/approve", {}),
        # Approval needs a named user signed in: every token, an unscoped admin's too, gets 403
        # (tests/compliance/test_revisions.py approves with a session).
        ok=403,
    ),
    Endpoint(
        "reject revision",
        "POST /clause-revisions/{id}/reject",
        lambda c, s: (
            "POST",
            f"/api/v1/clause-revisions/{_revision(c, 'pending')}/reject",
            {"note": "no"},
        ),
    ),
    Endpoint(
        "publish revision",
        "POST /clause-revisions/{id}/publish",
        lambda c, s: (
            "POST",
            f"/api/v1/clause-revisions/{_revision(c, 'approved')}/publish",
            {"effective_from": _later(5).isoformat()},
        ),
    ),
    Endpoint(
        "roll back revision",
        "POST /clause-revisions/{id}/rollback",
        lambda c, s: ("POST", f"/api/v1/clause-revisions/{_revision(c, 'published')}/rollback", {}),
    ),
    Endpoint(
        "list site revisions",
        "GET /site-revisions",
        lambda c, s: ("GET", f"/api/v1/site-revisions?site={s}", None),
    ),
    Endpoint(
        "get site revision",
        "GET /site-revisions/{id}",
        lambda c, s: ("GET", f"/api/v1/site-revisions/{_site_revision(c, s, 'pending')}", None),
    ),
    Endpoint(
        "propose site revision",
        "POST /site-revisions",
        lambda c, s: ("POST", "/api/v1/site-revisions", None),
        ok=409,  # the matrix's app runs with the bundled configuration, never written
    ),
    Endpoint(
        "approve site revision",
        "POST /site-revisions/{id}/approve",
        lambda c, s: (
            "POST",
            f"/api/v1/site-revisions/{_site_revision(c, s, 'pending')}/approve",
            {},
        ),
        ok=403,  # a named user signed in approves, never a token
    ),
    Endpoint(
        "reject site revision",
        "POST /site-revisions/{id}/reject",
        lambda c, s: (
            "POST",
            f"/api/v1/site-revisions/{_site_revision(c, s, 'pending')}/reject",
            {"note": "no"},
        ),
    ),
    Endpoint(
        "publish site revision",
        "POST /site-revisions/{id}/publish",
        lambda c, s: (
            "POST",
            f"/api/v1/site-revisions/{_site_revision(c, s, 'approved')}/publish",
            {"effective_at": (wall_now() + dt.timedelta(days=2)).isoformat()},
        ),
    ),
    Endpoint(
        "roll back site revision",
        "POST /site-revisions/{id}/rollback",
        lambda c, s: (
            "POST",
            f"/api/v1/site-revisions/{_site_revision(c, s, 'published')}/rollback",
            None,
        ),
        ok=409,  # the bundled configuration is never written
    ),
    Endpoint("list alerts", "GET /alerts", lambda c, s: ("GET", f"/api/v1/alerts?site={s}", None)),
    Endpoint(
        "get alert",
        "GET /alerts/{id}",
        lambda c, s: ("GET", f"/api/v1/alerts/{_fresh_alert(c, s)}", None),
    ),
    Endpoint(
        "acknowledge",
        "POST /alerts/{id}/ack",
        lambda c, s: ("POST", f"/api/v1/alerts/{_fresh_alert(c, s)}/ack", {"note": "seen"}),
    ),
    Endpoint(
        "close",
        "POST /alerts/{id}/close",
        lambda c, s: (
            "POST",
            f"/api/v1/alerts/{_fresh_alert(c, s, 'resolved')}/close",
            {"cause": "c", "corrective_action": "a"},
        ),
    ),
    Endpoint(
        "bulk acknowledge",
        "POST /alerts/bulk/ack",
        lambda c, s: ("POST", "/api/v1/alerts/bulk/ack", {"ids": [_fresh_alert(c, s)]}),
    ),
    Endpoint(
        "bulk close",
        "POST /alerts/bulk/close",
        lambda c, s: (
            "POST",
            "/api/v1/alerts/bulk/close",
            {"ids": [_fresh_alert(c, s, "resolved")], "cause": "c", "corrective_action": "a"},
        ),
    ),
    Endpoint(
        "comment",
        "POST /alerts/{id}/comments",
        lambda c, s: ("POST", f"/api/v1/alerts/{_fresh_alert(c, s)}/comments", {"text": "t"}),
    ),
    Endpoint(
        "reassign",
        "POST /alerts/{id}/reassign",
        lambda c, s: (
            "POST",
            f"/api/v1/alerts/{_fresh_alert(c, s)}/reassign",
            {"party": _second_party(c, s)},
        ),
    ),
    Endpoint("clauses", "GET /clauses", lambda c, s: ("GET", "/api/v1/clauses", None)),
    Endpoint(
        "clause versions",
        "GET /clauses/{id}/versions",
        lambda c, s: ("GET", "/api/v1/clauses/temp.cooling.min/versions", None),
    ),
    Endpoint(
        "validate clauses",
        "POST /clauses/validate",
        lambda c, s: ("POST", "/api/v1/clauses/validate", {"yaml": CLAUSE_YAML}),
    ),
    Endpoint(
        "compliance", "GET /compliance", lambda c, s: ("GET", f"/api/v1/compliance?site={s}", None)
    ),
    Endpoint(
        "ledger verify", "GET /ledger/verify", lambda c, s: ("GET", "/api/v1/ledger/verify", None)
    ),
    Endpoint(
        "readings",
        "GET /readings",
        lambda c, s: ("GET", f"/api/v1/readings?site={s}&device=th-1&metric=temperature", None),
    ),
    Endpoint("sites", "GET /sites", lambda c, s: ("GET", "/api/v1/sites", None)),
    *(
        Endpoint(kind, f"GET /{kind}", lambda c, s, k=kind: ("GET", f"/api/v1/{k}?site={s}", None))
        for kind in ("spaces", "devices", "device-status", "parties", "assignments")
    ),
    Endpoint(
        "add party",
        "POST /parties",
        lambda c, s: (
            "POST",
            "/api/v1/parties",
            {"site": s, "id": f"p-{uuid.uuid4().hex[:8]}", "name": "李工"},
        ),
        ok=201,
    ),
    Endpoint(
        "change party",
        "PATCH /parties/{site}/{id}",
        lambda c, s: ("PATCH", f"/api/v1/parties/{s}/fm-1", {"contacts": {"phone": "110"}}),
    ),
    Endpoint(
        "add assignment",
        "POST /assignments",
        lambda c, s: (
            "POST",
            "/api/v1/assignments",
            {
                "site": s,
                "party": "fm-1",
                "space": "room-1",
                "valid_from": "2026-02-01T00:00:00+08:00",
            },
        ),
        ok=201,
    ),
    Endpoint(
        "end assignment",
        "PATCH /assignments/{id}",
        lambda c, s: (
            "PATCH",
            f"/api/v1/assignments/{_assignment_id(c, s)}",
            {"valid_to": "2030-01-01T00:00:00+08:00"},
        ),
    ),
    Endpoint("energy", "GET /energy", lambda c, s: ("GET", f"/api/v1/energy?site={s}", None)),
    Endpoint("carbon", "GET /carbon", lambda c, s: ("GET", f"/api/v1/carbon?site={s}", None)),
    Endpoint(
        "quotas",
        "GET /energy/quotas",
        lambda c, s: ("GET", f"/api/v1/energy/quotas?site={s}", None),
    ),
    Endpoint(
        "emission factors",
        "GET /energy/factors",
        lambda c, s: ("GET", "/api/v1/energy/factors", None),
    ),
    Endpoint(
        "add emission factor",
        "POST /energy/factors",
        lambda c, s: (
            "POST",
            "/api/v1/energy/factors",
            {
                "carrier": "electricity",
                "series": f"test-{uuid.uuid4().hex[:8]}",
                "data_year": 2025,
                "value": "0.5",
                "unit": "tCO2/MWh",
                "instrument": "test",
                "confidence": "C",
            },
        ),
        ok=201,
    ),
    Endpoint(
        "tariffs",
        "GET /energy/tariffs",
        lambda c, s: ("GET", f"/api/v1/energy/tariffs?site={s}", None),
    ),
    Endpoint(
        "add tariff",
        "POST /energy/tariffs",
        lambda c, s: ("POST", "/api/v1/energy/tariffs", _tariff_body(s)),
        ok=201,
    ),
    Endpoint(
        "end tariff",
        "POST /energy/tariffs/{id}/end",
        lambda c, s: (
            "POST",
            f"/api/v1/energy/tariffs/{_open_tariff(c, s)}/end",
            {"last_day": "2999-12-31"},
        ),
    ),
    Endpoint(
        "register search", "GET /register", lambda c, s: ("GET", "/api/v1/register?q=温度", None)
    ),
    Endpoint(
        "register clause",
        "GET /register/{clause_id}",
        lambda c, s: ("GET", "/api/v1/register/temp.cooling.min", None),
    ),
    Endpoint(
        "backtest",
        "POST /register/backtest",
        lambda c, s: (
            "POST",
            "/api/v1/register/backtest",
            {
                "yaml": CLAUSE_YAML,
                "site": s,
                "since": T0.isoformat(),
                "until": (T0 + dt.timedelta(hours=1)).isoformat(),
            },
        ),
    ),
    Endpoint(
        "list reports", "GET /reports", lambda c, s: ("GET", f"/api/v1/reports?site={s}", None)
    ),
    Endpoint(
        "make report",
        "POST /reports",
        lambda c, s: ("POST", "/api/v1/reports", {"site": s, "period": "2026Q1"}),
        ok=201,
    ),
    *(
        Endpoint(
            f"report {fmt or 'figures'}",
            "GET /reports/{id}" + (fmt and "/" + fmt),
            lambda c, s, f=fmt: ("GET", f"/api/v1/reports/{_report_id(c, s)}{f and '/' + f}", None),
        )
        for fmt in ("", "html", "csv")
    ),
    Endpoint(
        "site statistics",
        "GET /statistics/site/{site}",
        lambda c, s: ("GET", f"/api/v1/statistics/site/{s}", None),
    ),
    Endpoint(
        "org statistics",
        "GET /statistics/org",
        lambda c, s: ("GET", "/api/v1/statistics/org", None),
    ),
    Endpoint(
        "targets",
        "GET /statistics/targets",
        lambda c, s: ("GET", "/api/v1/statistics/targets", None),
    ),
    Endpoint(
        "set targets",
        "PUT /statistics/targets",
        lambda c, s: (
            "PUT",
            "/api/v1/statistics/targets",
            {
                "path": f"city-{uuid.uuid4().hex[:8]}",
                "compliance_rate": 0.9,
                "key_clause_coverage": 0.95,
                "evaluated_share": 0.3,
            },
        ),
    ),
    Endpoint(
        "clear targets",
        "DELETE /statistics/targets",
        lambda c, s: ("DELETE", f"/api/v1/statistics/targets?path={_target_path(c)}", None),
        ok=204,
    ),
    Endpoint(
        "list evaluations",
        "GET /evaluations",
        lambda c, s: ("GET", f"/api/v1/evaluations?site={s}", None),
    ),
    Endpoint(
        "get evaluation",
        "GET /evaluations/{id}",
        lambda c, s: ("GET", f"/api/v1/evaluations/{_evaluation(c, s)[0]}", None),
    ),
    Endpoint(
        "evaluate",
        "POST /evaluations",
        lambda c, s: (
            "POST",
            "/api/v1/evaluations",
            {
                "site": s,
                "clause_id": "temp.cooling.min",
                "period": "2026Q1",
                "method": "inspection",
                "findings": "会议室温度合适",
                "satisfaction": 4,
                "actions": [
                    {"action": "复测", "owner": "fm-1", "deadline": "2026-04-30T18:00:00+08:00"}
                ],
            },
        ),
        ok=201,
    ),
    Endpoint(
        "close action",
        "PATCH /evaluations/actions/{id}",
        lambda c, s: (
            "PATCH",
            f"/api/v1/evaluations/actions/{_evaluation(c, s)[1]}",
            {"state": "done", "note": "已复测"},
        ),
    ),
    # The site workbook (tests/api/test_site_import.py: the diff, apply, the workbook's site
    # against the scope). This app runs the bundled configuration: site-a is not in it (404),
    # and an empty body is no workbook (422).
    Endpoint(
        "site template",
        "GET /sites/template.xlsx",
        lambda c, s: ("GET", "/api/v1/sites/template.xlsx", None),
    ),
    Endpoint(
        "site export",
        "GET /sites/{site}/export.xlsx",
        lambda c, s: ("GET", f"/api/v1/sites/{s}/export.xlsx", None),
        ok=404,
    ),
    Endpoint(
        "site import",
        "POST /sites/import",
        lambda c, s: ("POST", "/api/v1/sites/import?dry_run=true", None),
        ok=422,
    ),
    Endpoint(
        "list feedback",
        "GET /feedback",
        lambda c, s: ("GET", f"/api/v1/feedback?site={s}", None),
    ),
    Endpoint(
        "get feedback",
        "GET /feedback/{id}",
        lambda c, s: ("GET", f"/api/v1/feedback/{_feedback(c, s)}", None),
    ),
    Endpoint(
        "feedback photo",
        "GET /feedback/{id}/photo",
        lambda c, s: ("GET", f"/api/v1/feedback/{_feedback(c, s, photo=True)}/photo", None),
    ),
    Endpoint(
        "triage feedback",
        "PATCH /feedback/{id}",
        lambda c, s: (
            "PATCH",
            f"/api/v1/feedback/{_feedback(c, s)}",
            {"state": "triaged", "note": "已派维修"},
        ),
    ),
    Endpoint("silences", "GET /silences", lambda c, s: ("GET", f"/api/v1/silences?site={s}", None)),
    Endpoint(
        "add silence",
        "POST /silences",
        lambda c, s: ("POST", "/api/v1/silences", _quiet_body(s)),
        ok=201,
    ),
    Endpoint(
        "cancel silence",
        "POST /silences/{id}/cancel",
        lambda c, s: ("POST", f"/api/v1/silences/{_fresh_quiet(c, s, 'silence')}/cancel", None),
    ),
    Endpoint(
        "maintenance windows",
        "GET /maintenance",
        lambda c, s: ("GET", f"/api/v1/maintenance?site={s}", None),
    ),
    Endpoint(
        "add maintenance window",
        "POST /maintenance",
        lambda c, s: ("POST", "/api/v1/maintenance", _quiet_body(s)),
        ok=201,
    ),
    Endpoint(
        "cancel maintenance window",
        "POST /maintenance/{id}/cancel",
        lambda c, s: (
            "POST",
            f"/api/v1/maintenance/{_fresh_quiet(c, s, 'maintenance')}/cancel",
            None,
        ),
    ),
    Endpoint("webhooks", "GET /webhooks", lambda c, s: ("GET", "/api/v1/webhooks", None)),
    Endpoint(
        "add webhook",
        "POST /webhooks",
        lambda c, s: (
            "POST",
            "/api/v1/webhooks",
            {
                "name": f"t-{uuid.uuid4().hex[:8]}",
                "url": WEBHOOK_URL,
                "secret": PLANTED_SECRET,
                "site": s,
            },
        ),
        ok=201,
    ),
    Endpoint(
        "change webhook",
        "PATCH /webhooks/{id}",
        lambda c, s: ("PATCH", f"/api/v1/webhooks/{_target_id(c)}", {"secret": PLANTED_SECRET}),
    ),
    Endpoint(
        "allow-list",
        "GET /webhook-allowlist",
        lambda c, s: ("GET", "/api/v1/webhook-allowlist", None),
    ),
    Endpoint(
        "allow",
        "POST /webhook-allowlist",
        lambda c, s: ("POST", "/api/v1/webhook-allowlist", {"entry": _network()}),
        ok=201,
    ),
    Endpoint(
        "disallow",
        "DELETE /webhook-allowlist/{id}",
        lambda c, s: ("DELETE", f"/api/v1/webhook-allowlist/{_allow_entry(c)}", None),
        ok=204,
    ),
    Endpoint(
        "routes",
        "GET /notification-routes",
        lambda c, s: ("GET", f"/api/v1/notification-routes?site={s}", None),
    ),
    Endpoint(
        "add route",
        "POST /notification-routes",
        lambda c, s: ("POST", "/api/v1/notification-routes", _route_body(c, s)),
        ok=201,
    ),
    Endpoint(
        "replace route",
        "PUT /notification-routes/{id}",
        lambda c, s: (
            "PUT",
            f"/api/v1/notification-routes/{_fresh_route(c, s)}",
            _route_body(c, s),
        ),
    ),
    Endpoint(
        "remove route",
        "DELETE /notification-routes/{id}",
        lambda c, s: ("DELETE", f"/api/v1/notification-routes/{_fresh_route(c, s)}", None),
        ok=204,
    ),
    Endpoint(
        "check-in sheet",
        "GET /checkins/sheet",
        lambda c, s: ("GET", f"/api/v1/checkins/sheet?site={s}", None),
    ),
    Endpoint(
        "space check-ins",
        "GET /checkins/{site}/{space}",
        lambda c, s: ("GET", f"/api/v1/checkins/{s}/room-1", None),
    ),
    Endpoint(
        # The matrix posts JSON, which is no photo: 415 once the caller may upload
        # (tests/api/test_checkin_photos.py posts photos).
        "upload photo",
        "POST /checkin-photos",
        lambda c, s: ("POST", f"/api/v1/checkin-photos?site={s}", {"not": "a photo"}),
        ok=415,
    ),
    Endpoint(
        "photo",
        "GET /checkin-photos/{id}",
        lambda c, s: ("GET", f"/api/v1/checkin-photos/{_photo(c, s)}", None),
    ),
    Endpoint("users", "GET /users", lambda c, s: ("GET", "/api/v1/users", None)),
    Endpoint(
        "create user",
        "POST /users",
        lambda c, s: (
            "POST",
            "/api/v1/users",
            {
                "name": f"u-{uuid.uuid4().hex[:8]}",
                "role": "cleaner",
                "sites": [s],
                "password": "a long password 1",
            },
        ),
        ok=201,
    ),
    Endpoint(
        "disable user",
        "POST /users/{name}/disable",
        lambda c, s: ("POST", f"/api/v1/users/{_fresh_user(c, s)}/disable", None),
    ),
    Endpoint(
        "enable user",
        "POST /users/{name}/enable",
        lambda c, s: ("POST", f"/api/v1/users/{_fresh_user(c, s, disabled=True)}/enable", None),
    ),
    Endpoint(
        "set a user's password",
        "POST /users/{name}/password",
        lambda c, s: (
            "POST",
            f"/api/v1/users/{_fresh_user(c, s)}/password",
            {"password": "another password 2"},
        ),
    ),
]


def _fresh_user(conn: psycopg.Connection[Any], site: str, *, disabled: bool = False) -> str:
    name = f"u-{uuid.uuid4().hex[:8]}"
    create_user(conn, name, "viewer", "a long password 1", sites=(site,))
    if disabled:
        disable_user(conn, name)
    conn.commit()
    return name


def _photo(conn: psycopg.Connection[Any], site: str) -> uuid.UUID:
    photo_id = checkins.insert_photo(conn, site, "image/png", png(), "test")
    conn.commit()
    return photo_id


DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"
TABLE_HEADING = "### Who may call what"


@dataclass(frozen=True)
class Rule:
    """One row of the table: per role `yes`, `unscoped` or `no`; `other_site` 403, 404 or None."""

    roles: dict[str, str]
    other_site: int | None


def documented_rules(text: str) -> dict[str, Rule]:
    """The table under TABLE_HEADING in docs/api.md, by route ("GET /alerts/{id}")."""
    section = text.split(TABLE_HEADING, 1)[1]
    lines = [line.strip() for line in section.splitlines()]
    first = next(i for i, line in enumerate(lines) if line.startswith("| route |"))
    header = [cell.strip() for cell in lines[first].strip("|").split("|")]
    assert header[0] == "route" and header[-1] == "another site", header
    assert sorted(header[1:-1]) == sorted(ROLES), header
    rules: dict[str, Rule] = {}
    for line in lines[first + 2 :]:
        if not line.startswith("|"):
            break
        cells = dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
        route = cells["route"].strip("`")
        roles = {role: cells[role] for role in ROLES}
        assert set(roles.values()) <= {"yes", "unscoped", "no"}, line
        other = cells["another site"]
        assert other in {"403", "404", "-"}, line
        rules[route] = Rule(roles, None if other == "-" else int(other))
    return rules


RULES = documented_rules(DOCS.read_text(encoding="utf-8"))


def expected_status(endpoint: Endpoint, role: str, scope: str, target: str) -> int:
    rule = RULES[endpoint.route]
    allowed = rule.roles[role]
    if allowed == "no" or (allowed == "unscoped" and scope != "all"):
        return 403
    if rule.other_site is not None and scope != "all" and target != scope:
        return rule.other_site
    return endpoint.ok


def test_the_documented_table_and_the_matrix_name_the_same_routes() -> None:
    assert sorted(RULES) == sorted({e.route for e in ENDPOINTS})


CASES = [
    pytest.param(endpoint, role, scope, target, id=f"{endpoint.name}-{role}-{scope}-{target}")
    for endpoint in ENDPOINTS
    for role in ROLES
    for scope in ("site-a", "all")
    for target in (
        ("site-a", "site-b")
        if endpoint.route in RULES and RULES[endpoint.route].other_site is not None
        else ("site-a",)
    )
]


@pytest.mark.parametrize(("endpoint", "role", "scope", "target"), CASES)
def test_matrix(
    client: TestClient,
    tokens: dict[tuple[str, str], str],
    api_database_url: str,
    endpoint: Endpoint,
    role: str,
    scope: str,
    target: str,
    planted_secrets: tuple[str, ...],
) -> None:
    with psycopg.connect(api_database_url) as conn:
        method, url, body = endpoint.build(conn, target)
    response = client.request(method, url, json=body, headers=auth(tokens[(role, scope)]))
    assert response.status_code == expected_status(endpoint, role, scope, target), response.text
    if scope == "site-a":  # site-b's ids, names and parties all contain "site-b"
        assert "site-b" not in response.text
    leaked = [secret for secret in (*tokens.values(), *planted_secrets) if secret in response.text]
    assert not leaked, response.text


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
def test_every_endpoint_needs_a_valid_token(
    client: TestClient, api_database_url: str, endpoint: Endpoint
) -> None:
    with psycopg.connect(api_database_url) as conn:
        method, url, body = endpoint.build(conn, "site-a")
        revoked, record = create_token(conn, "admin")
        revoke_token(conn, record.id)
    for headers in (
        {},
        {"Authorization": "Basic YWRtaW46YWRtaW4="},
        auth("cw_" + "x" * 43),
        auth(revoked),
    ):
        response = client.request(method, url, json=body, headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["www-authenticate"] == "Bearer"


def test_scoped_lists_never_show_another_site(
    client: TestClient, tokens: dict[tuple[str, str], str], api_database_url: str
) -> None:
    with psycopg.connect(api_database_url) as conn:
        _fresh_alert(conn, "site-a")
        _fresh_alert(conn, "site-b")
    headers = auth(tokens[("viewer", "site-a")])
    alerts = client.get("/api/v1/alerts", params={"limit": 500}, headers=headers).json()["items"]
    assert alerts and {a["site"] for a in alerts} == {"site-a"}
    for kind in ("spaces", "devices", "parties", "assignments"):
        rows = client.get(f"/api/v1/{kind}", headers=headers).json()
        assert rows and {row["site"] for row in rows} == {"site-a"}, kind
    assert [s["id"] for s in client.get("/api/v1/sites", headers=headers).json()] == ["site-a"]
    report = client.get("/api/v1/compliance", headers=headers).json()
    assert [s["site"] for s in report["sites"]] == ["site-a"]


def test_health_and_metrics_need_no_token(client: TestClient) -> None:
    health = client.get("/healthz").json()
    assert (health["status"], health["database"]) == ("ok", "ok")
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert 'clausewatch_alerts{state="firing"}' in metrics.text


def test_metrics_expose_the_process_registry_and_alerts_by_state(
    client: TestClient, api_database_url: str
) -> None:
    from prometheus_client import REGISTRY, Counter

    probe = Counter("clausewatch_test_probe", "registered by the ingest side in production")
    try:
        probe.inc(3)
        with psycopg.connect(api_database_url) as conn:
            firing = conn.execute("SELECT count(*) FROM alerts WHERE state = 'firing'").fetchone()
        text = client.get("/metrics").text
        assert "clausewatch_test_probe_total 3.0" in text
        assert f'clausewatch_alerts{{state="firing"}} {float(firing[0] if firing else 0)}' in text
        assert "clausewatch_api_database_up 1.0" in text
    finally:
        REGISTRY.unregister(probe)


# Routes deliberately outside the matrix: unauthenticated by design, or tested on their own.
UNMATRIXED = {
    ("GET", "/api/v1/stream"),  # tests/api/test_stream.py (401, scope filtering)
    ("GET", "/api/v1/public/{site}"),  # the opt-in public view needs no token
}


def test_the_matrix_covers_every_api_route(client: TestClient, api_database_url: str) -> None:
    from fastapi.routing import APIRoute

    with psycopg.connect(api_database_url) as conn:
        requested = [endpoint.build(conn, "site-a") for endpoint in ENDPOINTS]
    missing = []
    for route in client.app.routes:  # type: ignore[attr-defined]
        if not isinstance(route, APIRoute) or not route.path.startswith("/api/v1/"):
            continue
        for method in route.methods:
            if (method, route.path) in UNMATRIXED:
                continue
            if not any(
                m == method and route.path_regex.match(url.split("?")[0]) for m, url, _ in requested
            ):
                missing.append(f"{method} {route.path}")
    assert not missing, f"add these to ENDPOINTS: {missing}"


def test_a_notified_alert_and_the_parties_name_the_target_never_its_url(
    client: TestClient,
    tokens: dict[tuple[str, str], str],
    api_database_url: str,
    planted_secrets: tuple[str, ...],
) -> None:
    with psycopg.connect(api_database_url) as conn:
        row = conn.execute(
            "SELECT alert_id FROM alert_timeline WHERE action = 'notified' AND site = 'site-a'"
        ).fetchone()
    assert row is not None
    named = client.patch(  # the matrix's "change party" replaces the contacts: name it again
        "/api/v1/parties/site-a/fm-1",
        json={"contacts": {"webhook": "site-a-sms", "phone": "110"}},
        headers=auth(tokens[("admin", "site-a")]),
    )
    assert named.status_code == 200, named.text
    for role in ROLES:
        headers = auth(tokens[(role, "site-a")])
        alert = client.get(f"/api/v1/alerts/{row[0]}", headers=headers)
        if Permission.READ not in ROLE_PERMISSIONS[role]:  # a cleaner reads no alert
            assert alert.status_code == 403
            continue
        (notified,) = [t for t in alert.json()["timeline"] if t["action"] == "notified"]
        assert notified["data"]["target_name"] == "site-a-sms"
        assert "refused: 127.0.0.1 is a loopback address" in notified["note"]
        parties = client.get("/api/v1/parties?site=site-a", headers=headers).json()
        contacts = {p["id"]: p["contacts"] for p in parties}["fm-1"]
        assert contacts == {"webhook": "site-a-sms", "phone": "110"}
        for text in (alert.text, json.dumps(parties)):
            assert not [s for s in planted_secrets if s in text]


def test_a_party_names_only_a_target_serving_its_site(
    client: TestClient, tokens: dict[tuple[str, str], str], planted_secrets: tuple[str, ...]
) -> None:
    admin = auth(tokens[("admin", "site-a")])
    for site, contacts, problem in (
        ("site-a", {"webhook": "https://10.0.0.1/hook?k=v"}, "not a URL"),
        ("site-a", {"webhook": "no-such-target"}, "no webhook target named"),
        ("site-b", {"webhook": "site-a-sms"}, "no webhook target named"),  # serves site-a only
    ):
        scope = "all" if site == "site-b" else "site-a"
        response = client.patch(
            f"/api/v1/parties/{site}/fm-1",
            json={"contacts": contacts},
            headers=auth(tokens[("admin", scope)]),
        )
        assert response.status_code == 422, response.text
        assert problem in response.text
    created = client.post(
        "/api/v1/parties",
        json={"site": "site-a", "id": "sms-user", "name": "x", "contacts": {"webhook": "x:/y"}},
        headers=admin,
    )
    assert created.status_code == 422
