"""`clausewatch site import` applied to a new site: the site file is written, then the registry
is synced as the service syncs it at start (store.registry.sync_site), with the import named as
the actor in the ledger. A change of the site, now configured, is refused by the import and goes
through `clausewatch site propose`, approved by another named user and published (the registry
synced with the publisher as the actor when it applies); importing the same workbook again then
changes nothing."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import psycopg
import pytest
from openpyxl import Workbook

from api.users import create_user
from clausewatch.cli import main
from compliance import site_revisions
from config import BUNDLED_DIR
from config.files import load_site
from config.sitebook import SHEETS, site_rows
from config.sitefiles import write_workbook
from store.pool import connect


def _ledger(url: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT kind, entity, payload FROM ledger ORDER BY seq").fetchall()
    return [(kind, entity, json.loads(payload)["actor"]) for kind, entity, payload in rows]


def _registry(entries: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """The registry's entries, without the revision's own (site_revision.*)."""
    return [entry for entry in entries if not entry[0].startswith("site_revision.")]


def test_an_import_bootstraps_a_site_a_revision_changes_it_and_a_repeat_is_a_no_op(
    store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config"
    shutil.copytree(BUNDLED_DIR / "clauses", config / "clauses")
    (config / "sites").mkdir()
    demo = load_site(BUNDLED_DIR / "sites" / "demo-hq.yaml")
    exported = tmp_path / "demo.xlsx"
    write_workbook(demo, exported)
    common = ["--config-dir", str(config), "--database-url", store_url]

    assert main(["site", "import", str(exported), *common]) == 0  # a new site
    assert "已同步登记表 registry synced" in capsys.readouterr().out
    first = _ledger(store_url)
    assert ("site.created", "site:demo-hq", "config:import demo.xlsx") in first
    assert sum(kind == "space.added" for kind, _, _ in first) == len(demo.spaces)

    rows = site_rows(demo)
    rows["spaces"].append(["b1-2f-204", "204 办公室", "office", "b1-2f", None, 45, 3, None])
    for sheet in ("parties", "contacts", "assignments"):
        rows[sheet] = [r for r in rows[sheet] if r[0] != "lift-co"]
    edited = tmp_path / "edited.xlsx"
    workbook = Workbook(write_only=True)
    for sheet in SHEETS:
        worksheet = workbook.create_sheet(sheet.title)
        worksheet.append([c.zh for c in sheet.columns])
        worksheet.append([c.key for c in sheet.columns])
        for row in rows[sheet.key]:
            worksheet.append(row)
    workbook.save(edited)

    site_file = config / "sites" / "demo-hq.yaml"
    before = site_file.read_bytes()
    assert main(["site", "import", str(edited), *common]) == 2  # the site exists now
    assert "clausewatch site propose" in capsys.readouterr().err
    assert site_file.read_bytes() == before and len(_ledger(store_url)) == len(first)

    with connect(store_url) as conn:
        create_user(conn, "li", "admin", "correct horse battery", display_name="李处长")
        conn.commit()
    propose = ["site", "propose", str(edited), "--reason", "新增 204", "--actor", "ops"]
    assert main([*propose, *common]) == 0
    revision = capsys.readouterr().out.split()[0].lstrip("#")
    db = ["--database-url", store_url]
    assert main(["site", "approve", revision, "--user", "li", *db]) == 0
    effective = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    publish = ["site", "publish", revision, "--effective-at", effective.isoformat()]
    assert main([*publish, "--user", "li", *db]) == 0
    with connect(store_url) as conn:
        assert site_revisions.apply_due(conn, config, effective) == [int(revision)]
        conn.commit()
    added = _registry(_ledger(store_url)[len(first) :])
    assert sorted(kind for kind, _, _ in added) == [
        "assignment.ended",  # lift-co's, open until now
        "party.retired",
        "space.added",
    ]
    assert ("party.retired", "party:demo-hq/lift-co") in {(k, e) for k, e, _ in added}
    assert {actor for _, _, actor in added} == {"user:li (李处长)"}  # the publisher
    with psycopg.connect(store_url) as conn:
        retired = conn.execute(
            "SELECT retired_at IS NOT NULL FROM parties WHERE site = 'demo-hq' AND id = %s",
            ("lift-co",),
        ).fetchone()
    assert retired == (True,)

    capsys.readouterr()
    assert main(["site", "import", str(edited), *common]) == 0
    assert "无变化 nothing to change" in capsys.readouterr().out
    assert _registry(_ledger(store_url)[len(first) :]) == added
