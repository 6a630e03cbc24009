"""Clause revisions through the API on a database of their own: propose (validated, bound,
backtested) → approve by a named user, not the proposer → publish from a later day → roll
back; every refusal is a 4xx naming why, the ledger names proposer and approver, and the
register shows pending revisions and each clause's review date."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.tokens import create_token
from api.users import create_user, get_user
from clausewatch.cli import main
from clausewatch.service import sync_registry
from config.files import LoadedConfig
from store.migrate import migrate
from store.pool import connect
from store.registry import sync_clauses, sync_site
from tests.compliance.conftest import PRIVATE_SITE, clause_file_with, small_site
from tests.support import auth

CLAUSE = "test.temp.max"


@pytest.fixture
def db(fresh_database_url: str) -> str:
    migrate(fresh_database_url)
    with connect(fresh_database_url) as conn:
        sync_site(conn, small_site(PRIVATE_SITE, public=False, org=["jinan"]), "config")
        sync_clauses(conn, [clause_file_with()], "config")
        conn.commit()
    return fresh_database_url


@pytest.fixture
def api_client(db: str) -> Iterator[TestClient]:
    with TestClient(create_app(db)) as test_client:
        yield test_client


def token(db: str, label: str, role: str = "admin", sites: tuple[str, ...] = ()) -> str:
    with psycopg.connect(db) as conn:
        plain, _ = create_token(conn, role, sites, label)  # type: ignore[arg-type]
    return plain


PASSWORD = "correct horse battery"


@pytest.fixture
def signed_in(db: str) -> Iterator[Callable[[str, str], TestClient]]:
    """signed_in(name, display name): a client holding that admin user's session, as a page."""
    opened: list[TestClient] = []

    def sign_in(name: str, display: str) -> TestClient:
        with psycopg.connect(db) as conn:
            if get_user(conn, name) is None:
                create_user(conn, name, "admin", PASSWORD, display_name=display)
        browser = TestClient(create_app(db)).__enter__()
        opened.append(browser)
        answer = browser.post("/api/v1/session", json={"name": name, "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        browser.headers["X-CSRF-Token"] = browser.cookies["cw_csrf"]
        return browser

    yield sign_in
    for browser in opened:
        browser.__exit__(None, None, None)


def approve(browser: TestClient, revision_id: int) -> Any:
    return browser.post(f"/api/v1/clause-revisions/{revision_id}/approve", json={"note": "同意"})


def ledger(db: str, kind: str) -> list[dict[str, Any]]:
    with psycopg.connect(db) as conn:
        return [
            orjson.loads(row[0])
            for row in conn.execute(
                "SELECT payload FROM ledger WHERE kind = %s ORDER BY seq", (kind,)
            ).fetchall()
        ]


def versions(db: str) -> list[tuple[int, dt.date, dt.date | None, float]]:
    with psycopg.connect(db) as conn:
        return [
            (v, start, end, float(config["params"]["limit"]["default"]))
            for v, start, end, config in conn.execute(
                "SELECT version, effective_from, effective_to, config FROM clause_versions"
                " WHERE clause_id = %s ORDER BY version",
                (CLAUSE,),
            ).fetchall()
        ]


def propose(api_client: TestClient, who: str, **changes: Any) -> Any:
    return api_client.post(
        "/api/v1/clause-revisions",
        json={
            "clause_id": CLAUSE,
            "changes": changes or {"params.limit.default": 28.5},
            "reason": "新版办法放宽至 28.5℃",
            "backtest_days": 2,
        },
        headers=auth(who),
    )


def later(days: int) -> str:
    # After today at every site (Asia/Shanghai runs ahead of UTC).
    return (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=days)).isoformat()


def test_propose_approve_publish_and_the_ledger_names_proposer_and_approver(
    api_client: TestClient, db: str, signed_in: Callable[[str, str], TestClient]
) -> None:
    zhang, li = token(db, "张工"), token(db, "李处长")
    made = propose(api_client, zhang)
    assert made.status_code == 201, made.text
    revision = made.json()
    assert revision["state"] == "pending"
    assert revision["diff"] == [{"path": "params.limit.default", "before": 28.0, "after": 28.5}]
    assert [t["site"] for t in revision["backtest"]] == [PRIVATE_SITE]
    assert revision["proposed_by"].endswith("(张工)")

    # An API token, even an admin's, is no named user.
    by_token = api_client.post(
        f"/api/v1/clause-revisions/{revision['id']}/approve", json={}, headers=auth(zhang)
    )
    assert by_token.status_code == 403 and "named user" in by_token.json()["detail"]
    early = api_client.post(
        f"/api/v1/clause-revisions/{revision['id']}/publish",
        json={"effective_from": later(5)},
        headers=auth(li),
    )
    assert early.status_code == 409 and "approved" in early.json()["detail"]
    approved = approve(signed_in("li", "李处长"), revision["id"])
    assert approved.status_code == 200, approved.text
    assert approved.json()["approved_by"] == "user:li (李处长)"

    today = api_client.post(
        f"/api/v1/clause-revisions/{revision['id']}/publish",
        json={"effective_from": dt.datetime.now(dt.UTC).date().isoformat()},
        headers=auth(li),
    )
    assert today.status_code == 422 and "after today" in str(today.json())
    published = api_client.post(
        f"/api/v1/clause-revisions/{revision['id']}/publish",
        json={"effective_from": later(5)},
        headers=auth(li),
    )
    assert published.status_code == 200, published.text
    assert published.json()["version"] == 2
    first = dt.date.fromisoformat(later(5))
    assert versions(db) == [
        (1, dt.date(2020, 1, 1), first - dt.timedelta(days=1), 28.0),
        (2, first, None, 28.5),
    ]
    [entry] = ledger(db, "clause_revision.published")
    assert entry["proposed_by"] == revision["proposed_by"]
    assert entry["approved_by"] == approved.json()["approved_by"]
    assert entry["diff"] == revision["diff"] and entry["version"] == 2
    assert [e["actor"] for e in ledger(db, "clause_revision.proposed")] == [revision["proposed_by"]]

    # Not in force anywhere yet: rolling back withdraws it and reopens version 1.
    back = api_client.post(
        f"/api/v1/clause-revisions/{revision['id']}/rollback", json={}, headers=auth(zhang)
    )
    assert back.status_code == 200 and back.json()["state"] == "rolled_back"
    assert versions(db) == [(1, dt.date(2020, 1, 1), None, 28.0)]
    assert ledger(db, "clause_revision.rolled_back")[0]["withdrawn"] is True
    # The withdrawn number is not given again.
    again = propose(api_client, zhang).json()
    assert approve(signed_in("li", "李处长"), again["id"]).status_code == 200
    answer = api_client.post(
        f"/api/v1/clause-revisions/{again['id']}/publish",
        json={"effective_from": later(3)},
        headers=auth(li),
    )
    assert answer.json()["version"] == 3


def test_a_revision_in_force_is_rolled_back_from_a_later_day(
    api_client: TestClient, db: str, signed_in: Callable[[str, str], TestClient]
) -> None:
    """A version in force is ended, and the revised content comes back as a new version."""
    zhang, li = token(db, "张工"), token(db, "李处长")
    revision = propose(api_client, zhang).json()
    assert approve(signed_in("li", "李处长"), revision["id"]).status_code == 200
    api_client.post(
        f"/api/v1/clause-revisions/{revision['id']}/publish",
        json={"effective_from": later(2)},
        headers=auth(li),
    )
    # Make version 2 in force today (as if published days ago).
    with psycopg.connect(db) as conn:
        conn.execute(
            "UPDATE clause_revisions SET effective_from = effective_from - 10 WHERE id = %s",
            (revision["id"],),
        )
    needs_day = api_client.post(
        f"/api/v1/clause-revisions/{revision['id']}/rollback", json={}, headers=auth(li)
    )
    assert needs_day.status_code == 422 and "effective_from" in str(needs_day.json())
    back = api_client.post(
        f"/api/v1/clause-revisions/{revision['id']}/rollback",
        json={"effective_from": later(4)},
        headers=auth(li),
    )
    assert back.status_code == 200, back.text
    assert back.json()["rollback_version"] == 3
    end = dt.date.fromisoformat(later(4))
    assert [(v, limit) for v, _, _, limit in versions(db)] == [(1, 28.0), (2, 28.5), (3, 28.0)]
    assert versions(db)[1][2] == end - dt.timedelta(days=1)
    assert versions(db)[2][1:3] == (end, None)


@pytest.mark.parametrize(
    ("changes", "status", "says"),
    [
        ({"params.nowhere.default": 1}, 422, "no such place"),
        ({"effective_from": "2030-01-01"}, 422, "set by the workflow"),
        ({"check.max": "$undeclared"}, 422, "not declared"),
        ({"params.limit.default": 28.0}, 422, "as it is"),
        ({"applies_to.space_types": ["office", "x" * 300]}, 422, "string"),
        ({f"params.p{i}": 1 for i in range(51)}, 422, "50"),
        ({"Bad Path": 1}, 422, "pattern"),
    ],
)
def test_bad_proposals_are_refused_with_the_reason(
    api_client: TestClient, db: str, changes: dict[str, Any], status: int, says: str
) -> None:
    answer = propose(api_client, token(db, "张工"), **changes)
    assert answer.status_code == status, answer.text
    assert says in str(answer.json())


def test_who_may_propose_and_one_open_revision_per_clause(api_client: TestClient, db: str) -> None:
    scoped = token(db, "站点管理员", sites=(PRIVATE_SITE,))
    assert propose(api_client, scoped).status_code == 403
    assert propose(api_client, token(db, "viewer", role="viewer")).status_code == 403
    zhang = token(db, "张工")
    unknown = api_client.post(
        "/api/v1/clause-revisions",
        json={"clause_id": "no.such", "changes": {"x": 1}, "reason": "r"},
        headers=auth(zhang),
    )
    assert unknown.status_code == 404
    assert propose(api_client, zhang).status_code == 201
    second = propose(api_client, zhang, **{"params.limit.default": 29})
    assert second.status_code == 409 and "pending" in second.json()["detail"]
    missing = api_client.post("/api/v1/clause-revisions/999/approve", json={}, headers=auth(zhang))
    assert missing.status_code == 404


def test_the_register_shows_pending_revisions_and_review_dates(
    api_client: TestClient, db: str
) -> None:
    zhang = token(db, "张工")
    [entry] = api_client.get("/api/v1/register", headers=auth(zhang)).json()
    assert entry["pending_revisions"] == 0
    assert entry["review_due"] == "2025-01-01" and entry["review_reminder"] is True
    revision = propose(api_client, zhang).json()
    [entry] = api_client.get("/api/v1/register", headers=auth(zhang)).json()
    assert entry["pending_revisions"] == 1
    waiting = api_client.get("/api/v1/clause-revisions?open=true", headers=auth(zhang)).json()
    assert [r["id"] for r in waiting] == [revision["id"]]


def test_a_start_from_the_unchanged_files_keeps_the_publication(
    api_client: TestClient, db: str, signed_in: Callable[[str, str], TestClient]
) -> None:
    """The files still hold version 1 without an end: the service's start judges (and stores)
    the published versions, not the file's text of them."""
    zhang, li = token(db, "张工"), token(db, "李处长")
    revision = propose(api_client, zhang).json()
    assert approve(signed_in("li", "李处长"), revision["id"]).status_code == 200
    api_client.post(
        f"/api/v1/clause-revisions/{revision['id']}/publish",
        json={"effective_from": later(5)},
        headers=auth(li),
    )
    stored = versions(db)
    config = LoadedConfig(
        sites={PRIVATE_SITE: small_site(PRIVATE_SITE, public=False, org=["jinan"])},
        clause_files={Path("test.yaml"): clause_file_with()},
    )
    judged = sync_registry(db, config)
    assert versions(db) == stored
    first = dt.date.fromisoformat(later(5))
    assert sorted((c.version, c.effective_to, c.params["limit"].default) for c in judged) == [
        (1, first - dt.timedelta(days=1), 28.0),
        (2, None, 28.5),
    ]


def test_the_command_line_lists_and_rolls_back(
    api_client: TestClient,
    db: str,
    capsys: pytest.CaptureFixture[str],
    signed_in: Callable[[str, str], TestClient],
) -> None:
    zhang, li = token(db, "张工"), token(db, "李处长")
    revision = propose(api_client, zhang).json()
    assert approve(signed_in("li", "李处长"), revision["id"]).status_code == 200
    api_client.post(
        f"/api/v1/clause-revisions/{revision['id']}/publish",
        json={"effective_from": later(5)},
        headers=auth(li),
    )
    assert (
        main(["clause", "revisions", "--state", "published", "--json", "--database-url", db]) == 0
    )
    [listed] = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (listed["id"], listed["version"]) == (revision["id"], 2)
    assert main(["clause", "rollback", str(revision["id"]), "--database-url", db]) == 0
    assert "rolled_back" in capsys.readouterr().out
    assert versions(db) == [(1, dt.date(2020, 1, 1), None, 28.0)]
    assert main(["clause", "rollback", str(revision["id"]), "--database-url", db]) == 2
    assert "needs it published" in capsys.readouterr().err
    assert main(["clause", "propose", "--clause", CLAUSE, "--set", "nopath", "--reason", "r",
                 "--database-url", db]) == 2  # fmt: skip
    assert "PATH=VALUE" in capsys.readouterr().err


def test_a_person_cannot_approve_what_they_proposed(
    db: str, signed_in: Callable[[str, str], TestClient]
) -> None:
    li = signed_in("li", "李处长")
    made = li.post(
        "/api/v1/clause-revisions",
        json={"clause_id": CLAUSE, "changes": {"params.limit.default": 28.5}, "reason": "r"},
    )
    assert made.status_code == 201, made.text
    assert made.json()["proposed_by"] == "user:li (李处长)"
    with psycopg.connect(db) as conn:  # a new display name is the same person
        conn.execute("UPDATE users SET display_name = '李' WHERE name = 'li'")
    again = signed_in("li", "李")
    refused = approve(again, made.json()["id"])
    assert refused.status_code == 403 and "proposer" in refused.json()["detail"]
    assert approve(signed_in("wang", "王工"), made.json()["id"]).status_code == 200
