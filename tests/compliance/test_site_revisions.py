"""Site revisions (issue 21): a site change is proposed (its dry run stored), approved by a named
user who is not the proposer (never an API token), published with an effective time, applied at
that time (the site's file written and the registry synced: what the running engines switch on)
and rolled back; the ledger names proposer and approver. Real PostgreSQL, a configuration
directory of its own."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.tokens import create_token
from api.users import create_user, get_user
from clausewatch.cli import main
from compliance import site_revisions
from compliance.revisions import RevisionError
from config import BUNDLED_DIR
from config.files import load_clause_file, load_site
from config.sitefiles import plan_model, workbook_bytes, write_workbook
from rules.site import SiteModel
from store.migrate import migrate
from store.pool import connect
from store.registry import site_model, site_stamps, sync_clauses, sync_site
from tests.support import auth, throwaway_database

pytestmark = pytest.mark.integration

SITE = "demo-hq"
NOW = dt.datetime(2026, 11, 2, 1, 0, tzinfo=dt.UTC)
ZHANG = "user:zhang (张工)"
LI = "user:li (李处长)"


@pytest.fixture(scope="module")
def revisions_db_url(pg_server_url: str) -> Iterator[str]:
    with throwaway_database(pg_server_url, "cw_siterev") as url:
        migrate(url)
        with connect(url) as conn:
            files = [load_clause_file(p) for p in sorted((BUNDLED_DIR / "clauses").glob("*.yaml"))]
            sync_clauses(conn, files, "test", now=NOW - dt.timedelta(days=30))
            conn.commit()
        yield url


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "config"
    shutil.copytree(BUNDLED_DIR / "clauses", directory / "clauses")
    (directory / "sites").mkdir()
    shutil.copy(BUNDLED_DIR / "sites" / "demo-hq.yaml", directory / "sites" / "demo-hq.yaml")
    return directory


@pytest.fixture
def conn(revisions_db_url: str, config_dir: Path) -> Iterator[psycopg.Connection[Any]]:
    """The database with no revisions and the demo site synced from `config_dir`'s file."""
    with connect(revisions_db_url, autocommit=True) as admin:
        admin.execute("DELETE FROM site_revisions")
    with connect(revisions_db_url) as connection:
        sync_site(connection, load_site(config_dir / "sites" / "demo-hq.yaml"), "test", now=NOW)
        connection.commit()
        yield connection


def _renamed(model: SiteModel, name: str) -> SiteModel:
    spaces = tuple(
        s.model_copy(update={"name": name}) if s.id == "b1-1f-lobby" else s for s in model.spaces
    )
    return model.model_copy(update={"spaces": spaces})


def _lobby(model: SiteModel | None) -> str:
    assert model is not None
    return next(s.name for s in model.spaces if s.id == "b1-1f-lobby")


def _proposed(conn: psycopg.Connection[Any], config_dir: Path) -> site_revisions.SiteRevision:
    before = load_site(config_dir / "sites" / "demo-hq.yaml")
    plan = plan_model(_renamed(before, "访客大厅"), config_dir, "demo-hq.xlsx")
    revision = site_revisions.propose(conn, plan, "demo-hq.xlsx", "大厅改名", ZHANG, NOW)
    conn.commit()
    return revision


def test_a_site_change_applies_at_its_effective_time_once_approved_by_another_person(
    conn: psycopg.Connection[Any], config_dir: Path
) -> None:
    site_file = config_dir / "sites" / "demo-hq.yaml"
    before_text = site_file.read_text(encoding="utf-8")
    revision = _proposed(conn, config_dir)
    assert revision.state == "pending"
    assert any("空间 space 修改 changed: 1  b1-1f-lobby" in line for line in revision.diff)
    # Proposing writes nothing: the file and the registry are as they were.
    assert site_file.read_text(encoding="utf-8") == before_text
    assert _lobby(site_model(conn, SITE)) == "大厅"

    for actor, why in (("token:3 (ops)", "named user"), (ZHANG, "proposer cannot approve")):
        with pytest.raises(RevisionError, match=why) as refused:
            site_revisions.approve(conn, revision.id, actor, None, NOW)
        assert refused.value.http_status == 403
        conn.rollback()
    site_revisions.approve(conn, revision.id, LI, "同意", NOW)
    conn.commit()
    with pytest.raises(RevisionError, match="later than now"):
        site_revisions.publish(conn, revision.id, LI, NOW - dt.timedelta(minutes=1), NOW)
    conn.rollback()
    effective = NOW + dt.timedelta(hours=1)
    published = site_revisions.publish(conn, revision.id, LI, effective, NOW)
    conn.commit()
    assert published.state == "published" and published.effective_at == effective

    stamp = site_stamps(conn, [SITE])
    assert site_revisions.apply_due(conn, config_dir, effective - dt.timedelta(seconds=1)) == []
    conn.commit()
    assert site_stamps(conn, [SITE]) == stamp  # what the service polls: nothing to switch yet
    assert site_file.read_text(encoding="utf-8") == before_text

    assert site_revisions.apply_due(conn, config_dir, effective) == [revision.id]
    conn.commit()
    assert site_stamps(conn, [SITE]) != stamp  # the running engines switch on this
    assert _lobby(site_model(conn, SITE)) == "访客大厅"
    assert _lobby(load_site(site_file)) == "访客大厅"
    assert (config_dir / "sites" / "demo-hq.yaml.bak").read_text(encoding="utf-8") == before_text
    assert site_revisions.apply_due(conn, config_dir, effective + dt.timedelta(days=1)) == []

    entries = conn.execute(
        "SELECT kind, payload::jsonb ->> 'actor', payload::jsonb ->> 'proposed_by',"
        " payload::jsonb ->> 'approved_by' FROM ledger WHERE entity = %s ORDER BY seq",
        (f"site_revision:{revision.id}",),
    ).fetchall()
    assert entries == [
        ("site_revision.proposed", ZHANG, None, None),
        ("site_revision.approved", LI, ZHANG, None),
        ("site_revision.published", LI, ZHANG, LI),
        ("site_revision.applied", "site_revision", ZHANG, LI),
    ]
    # The registry's own entries of the change name who made it take effect.
    changed = conn.execute(
        "SELECT payload::jsonb ->> 'actor' FROM ledger WHERE kind = 'space.changed'"
        " ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    assert changed == (LI,)

    rolled = site_revisions.rollback(conn, revision.id, ZHANG, config_dir, effective)
    conn.commit()
    assert rolled.state == "rolled_back"
    assert _lobby(site_model(conn, SITE)) == "大厅"
    assert _lobby(load_site(site_file)) == "大厅"


def test_a_published_revision_rolled_back_before_its_time_is_withdrawn(
    conn: psycopg.Connection[Any], config_dir: Path
) -> None:
    revision = _proposed(conn, config_dir)
    with pytest.raises(RevisionError, match="has a revision not yet applied"):
        _proposed(conn, config_dir)
    conn.rollback()
    site_revisions.approve(conn, revision.id, LI, None, NOW)
    site_revisions.publish(conn, revision.id, LI, NOW + dt.timedelta(hours=1), NOW)
    site_revisions.rollback(conn, revision.id, LI, config_dir, NOW)
    conn.commit()
    assert site_revisions.apply_due(conn, config_dir, NOW + dt.timedelta(days=1)) == []
    assert _lobby(site_model(conn, SITE)) == "大厅"
    withdrawn = conn.execute(
        "SELECT payload::jsonb ->> 'withdrawn' FROM ledger WHERE kind = 'site_revision.rolled_back'"
        " AND entity = %s",
        (f"site_revision:{revision.id}",),
    ).fetchone()
    assert withdrawn == ("true",)


def test_a_workbook_that_changes_nothing_is_no_revision(
    conn: psycopg.Connection[Any], config_dir: Path
) -> None:
    plan = plan_model(load_site(config_dir / "sites" / "demo-hq.yaml"), config_dir, "x.xlsx")
    with pytest.raises(RevisionError, match="changes nothing") as refused:
        site_revisions.propose(conn, plan, "x.xlsx", "无", ZHANG, NOW)
    assert refused.value.http_status == 422


@pytest.fixture
def client(revisions_db_url: str, config_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(revisions_db_url, config_dir=config_dir)) as test_client:
        yield test_client


def test_over_the_api_a_token_proposes_and_publishes_but_cannot_approve(
    conn: psycopg.Connection[Any], client: TestClient, revisions_db_url: str, config_dir: Path
) -> None:
    with psycopg.connect(revisions_db_url) as tokens:
        admin, record = create_token(tokens, "admin", (SITE,), "运维")
        reader, _ = create_token(tokens, "viewer", (SITE,), "只读")
    book = workbook_bytes(_renamed(load_site(config_dir / "sites" / "demo-hq.yaml"), "访客大厅"))
    made = client.post(
        "/api/v1/site-revisions",
        content=book,
        params={"filename": "demo-hq.xlsx", "reason": "大厅改名"},
        headers=auth(admin),
    )
    assert made.status_code == 201, made.text
    revision = made.json()
    assert revision["state"] == "pending" and revision["proposed_by"] == f"token:{record.id} (运维)"
    assert revision["counts"]["space"] == {"added": 0, "changed": 1, "removed": 0}

    listed = client.get("/api/v1/site-revisions", params={"open": "true"}, headers=auth(reader))
    assert [r["id"] for r in listed.json()] == [revision["id"]]
    refused = client.post(
        f"/api/v1/site-revisions/{revision['id']}/approve", json={}, headers=auth(admin)
    )
    assert refused.status_code == 403 and "named user" in refused.json()["detail"]
    assert (
        client.post("/api/v1/site-revisions", content=book, headers=auth(reader)).status_code == 403
    )
    assert _lobby(site_model(conn, SITE)) == "大厅"


def test_the_command_line_proposes_approves_publishes_and_withdraws(
    conn: psycopg.Connection[Any],
    revisions_db_url: str,
    config_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with connect(revisions_db_url) as users:
        for name, display in (("zhang", "张工"), ("li", "李处长")):
            if get_user(users, name) is None:
                create_user(users, name, "admin", "correct horse battery", display_name=display)
        if get_user(users, "wu") is None:
            create_user(users, "wu", "admin", "correct horse battery", sites=("other-site",))
        users.commit()
    book = tmp_path / "demo-hq.xlsx"
    write_workbook(_renamed(load_site(config_dir / "sites" / "demo-hq.yaml"), "访客大厅"), book)
    db = ["--database-url", revisions_db_url]
    where = ["--config-dir", str(config_dir)]
    propose = ["site", "propose", str(book), "--reason", "大厅改名", *where, *db]
    assert main([*propose, "--user", "wu"]) == 2  # not an admin of this site
    assert "not an admin of site demo-hq" in capsys.readouterr().err
    assert main([*propose, "--user", "zhang"]) == 0
    said = capsys.readouterr().out
    assert "demo-hq pending: 大厅改名 — proposed by user:zhang (张工)" in said
    assert "b1-1f-lobby" in said
    revision = int(said.split()[0].lstrip("#"))

    assert main(["site", "approve", str(revision), "--user", "zhang", *db]) == 2
    assert "proposer" in capsys.readouterr().err
    assert main(["site", "approve", str(revision), "--user", "li", *db]) == 0
    effective = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    publish = ["site", "publish", str(revision), "--effective-at", effective, "--user", "li"]
    assert main([*publish, *db]) == 0
    capsys.readouterr()
    assert main(["site", "revisions", "--site", SITE, "--json", *db]) == 0
    [listed] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (listed["state"], listed["approved_by"]) == ("published", "user:li (李处长)")
    assert main(["site", "rollback", str(revision), "--actor", "ops", *where, *db]) == 0
    assert "rolled_back" in capsys.readouterr().out
    assert _lobby(site_model(conn, SITE)) == "大厅"


def test_a_revision_the_directory_no_longer_accepts_when_due_fails_once_and_closes(
    conn: psycopg.Connection[Any], config_dir: Path
) -> None:
    revision = _proposed(conn, config_dir)
    site_revisions.approve(conn, revision.id, LI, None, NOW)
    effective = NOW + dt.timedelta(hours=1)
    site_revisions.publish(conn, revision.id, LI, effective, NOW)
    conn.commit()
    # Meanwhile the directory's site file breaks (edited by hand): the revision cannot apply.
    site_file = config_dir / "sites" / "demo-hq.yaml"
    site_file.write_text(site_file.read_text(encoding="utf-8") + "\nbogus: 1\n", "utf-8")
    assert site_revisions.apply_due(conn, config_dir, effective) == []
    conn.commit()
    failed = site_revisions.get_revision(conn, revision.id)
    assert failed.state == "failed" and failed.failure
    assert site_revisions.apply_due(conn, config_dir, effective + dt.timedelta(minutes=1)) == []
    kinds = conn.execute(
        "SELECT kind FROM ledger WHERE entity = %s AND kind = 'site_revision.failed'",
        (f"site_revision:{revision.id}",),
    ).fetchall()
    assert kinds == [("site_revision.failed",)]
    assert _lobby(site_model(conn, SITE)) == "大厅"
    # Closed: the site takes a new proposal.
    site_file.write_text(site_file.read_text(encoding="utf-8").replace("\nbogus: 1\n", ""), "utf-8")
    assert _proposed(conn, config_dir).state == "pending"
