"""The site workbook over the API (issue 21): `POST /api/v1/sites/import` (dry run: the diff
and the problems by sheet, row and column; applied: the site file written and the registry
synced with the caller as the actor), the export and the template, who may, and the size
limit."""

from __future__ import annotations

import datetime as dt
import io
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from openpyxl import Workbook, load_workbook

from api.app import create_app
from api.limits import SITE_WORKBOOK_MAX_BYTES
from api.users import create_user, get_user
from compliance import site_revisions
from config import BUNDLED_DIR
from config.sitebook import SHEETS, SHEETS_BY_KEY
from config.sitefiles import site_yaml
from store.pool import connect
from tests.api.conftest import TEST_STREAM, auth, site_model

PASSWORD = "correct horse battery"

IMPORT = "/api/v1/sites/import"


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The service's configuration directory: the bundled clauses and site-a's file (with the
    heating season the clauses name; its state metric with a unit: a workbook cannot hold an
    empty one)."""
    directory = tmp_path_factory.mktemp("config")
    shutil.copytree(BUNDLED_DIR / "clauses", directory / "clauses")
    (directory / "sites").mkdir()
    model = site_model("site-a")
    cooling = model.site.seasons["cooling"]
    seasons = {
        "cooling": cooling,
        "heating": type(cooling).model_validate({"from": "11-15", "to": "03-15"}),
    }
    model = model.model_copy(update={"site": model.site.model_copy(update={"seasons": seasons})})
    model.devices[0].metrics["hvac_mode"] = (
        model.devices[0].metrics["hvac_mode"].model_copy(update={"unit": "-"})
    )
    (directory / "sites" / "site-a.yaml").write_text(site_yaml(model, "test"), encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def sites_client(api_database_url: str, config_dir: Path) -> Iterator[TestClient]:
    app = create_app(api_database_url, stream=TEST_STREAM, config_dir=config_dir)
    with TestClient(app) as test_client:
        yield test_client


def _rows(book: bytes) -> dict[str, list[list[object]]]:
    """The data rows of each sheet of an .xlsx workbook, by sheet key."""
    workbook = load_workbook(io.BytesIO(book))
    return {
        sheet.key: [list(r) for r in workbook[sheet.title].iter_rows(min_row=3, values_only=True)]
        for sheet in SHEETS
    }


def _book(rows: dict[str, list[list[object]]]) -> bytes:
    workbook = Workbook()
    workbook.remove(workbook.active)  # type: ignore[arg-type]
    for sheet in SHEETS:
        worksheet = workbook.create_sheet(sheet.title)
        worksheet.append([c.zh for c in sheet.columns])
        worksheet.append([c.key for c in sheet.columns])
        for row in rows.get(sheet.key, []):
            worksheet.append(row)
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def _set(row: list[object], sheet: str, column: str, value: object) -> None:
    keys = [c.key for c in SHEETS_BY_KEY[sheet].columns]
    while len(row) < len(keys):
        row.append(None)
    row[keys.index(column)] = value


def _blank(sheet: str, **values: object) -> list[object]:
    row: list[object] = [None] * len(SHEETS_BY_KEY[sheet].columns)
    for key, value in values.items():
        _set(row, sheet, key, value)
    return row


def _export(client: TestClient, token: str, site: str = "site-a") -> bytes:
    answer = client.get(f"/api/v1/sites/{site}/export.xlsx", headers=auth(token))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/vnd.openxmlformats")
    return answer.content


def _edited(client: TestClient, token: str) -> bytes:
    """site-a's workbook with a room added and the party renamed."""
    rows = _rows(_export(client, token))
    rows["spaces"].append(_blank("spaces", id="room-2", type="office", parent="b1"))
    party = rows["parties"][0]
    _set(party, "parties", "name", "李工")
    return _book(rows)


def _post(client: TestClient, token: str, body: bytes, dry_run: bool) -> tuple[int, dict]:  # type: ignore[type-arg]
    answer = client.post(
        IMPORT,
        params={"dry_run": str(dry_run).lower(), "filename": "site-a.xlsx"},
        content=body,
        headers=auth(token),
    )
    return answer.status_code, answer.json()


def test_the_exported_workbook_imports_as_no_change(
    sites_client: TestClient, tokens: dict[tuple[str, str], str]
) -> None:
    admin = tokens[("admin", "all")]
    code, result = _post(sites_client, admin, _export(sites_client, admin), dry_run=True)
    assert code == 200, result
    assert result["applied"] is False and result["new_site"] is False
    assert result["site_changed"] is False
    assert all(not any(c.values()) for c in result["changes"].values())


def test_a_dry_run_shows_the_diff_and_writes_nothing(
    sites_client: TestClient, tokens: dict[tuple[str, str], str], config_dir: Path
) -> None:
    admin = tokens[("admin", "site-a")]
    before = (config_dir / "sites" / "site-a.yaml").read_text(encoding="utf-8")
    code, result = _post(sites_client, admin, _edited(sites_client, admin), dry_run=True)
    assert code == 200, result
    assert result["site"] == "site-a" and result["dry_run"] is True
    assert result["applied"] is False
    assert result["changes"]["space"] == {"added": ["room-2"], "changed": [], "removed": []}
    assert result["changes"]["party"]["changed"] == ["fm-1"]
    assert result["file"] == "sites/site-a.yaml"
    assert (config_dir / "sites" / "site-a.yaml").read_text(encoding="utf-8") == before
    assert not (config_dir / "sites" / "site-a.yaml.bak").exists()


def test_a_direct_apply_to_a_configured_site_is_refused(
    sites_client: TestClient,
    tokens: dict[tuple[str, str], str],
    config_dir: Path,
    api_database_url: str,
) -> None:
    """A change of a site the directory configures goes through a site revision approved by
    another person: applied at once it is a 409 naming the way, and nothing is written or
    synced (its dry run above still shows the diff)."""
    admin = tokens[("admin", "all")]
    before = (config_dir / "sites" / "site-a.yaml").read_text(encoding="utf-8")
    code, result = _post(sites_client, admin, _edited(sites_client, admin), dry_run=False)
    assert code == 409, result
    detail = result["detail"]
    assert "站点已存在" in detail and "他人批准" in detail
    assert detail.index("站点已存在：site-a") < detail.index("the site site-a exists")  # zh first
    assert "a site revision approved by another person" in detail
    assert "POST /api/v1/site-revisions" in detail
    assert (config_dir / "sites" / "site-a.yaml").read_text(encoding="utf-8") == before
    assert not (config_dir / "sites" / "site-a.yaml.bak").exists()
    with psycopg.connect(api_database_url) as conn:
        added = conn.execute(
            "SELECT count(*) FROM ledger WHERE kind = 'space.added' AND entity LIKE %s",
            ("%room-2%",),
        ).fetchone()
    assert added == (0,)


@contextmanager
def _signed_in(url: str, config_dir: Path, name: str) -> Iterator[TestClient]:
    """A client holding the session of `name`, an admin user (created when missing)."""
    with psycopg.connect(url) as conn:
        if get_user(conn, name) is None:
            create_user(conn, name, "admin", PASSWORD, display_name="李处长")
    app = create_app(url, stream=TEST_STREAM, config_dir=config_dir)
    with TestClient(app) as browser:
        answer = browser.post("/api/v1/session", json={"name": name, "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        browser.headers["X-CSRF-Token"] = browser.cookies["cw_csrf"]
        yield browser


def test_a_change_to_a_configured_site_applies_through_a_revision_approved_by_another(
    sites_client: TestClient,
    tokens: dict[tuple[str, str], str],
    config_dir: Path,
    api_database_url: str,
) -> None:
    """Proposed with the workbook (as a token), approved by a named user, published with an
    effective time: at that time (the service's job, its clock injected here) the file is
    written and the registry synced with the publisher as the actor; the export then imports
    as no change."""
    admin = tokens[("admin", "all")]
    headers = auth(admin)
    made = sites_client.post(
        "/api/v1/site-revisions",
        params={"filename": "site-a.xlsx", "reason": "新增房间"},
        content=_edited(sites_client, admin),
        headers=headers,
    )
    assert made.status_code == 201, made.text
    revision = made.json()
    assert revision["state"] == "pending" and revision["new_site"] is False
    assert revision["counts"]["space"] == {"added": 1, "changed": 0, "removed": 0}
    approve = f"/api/v1/site-revisions/{revision['id']}/approve"
    assert sites_client.post(approve, json={}, headers=headers).status_code == 403  # a token
    with _signed_in(api_database_url, config_dir, "li") as li:
        approved = li.post(approve, json={"note": "同意"})
    assert approved.status_code == 200, approved.text
    assert approved.json()["approved_by"] == "user:li (李处长)"
    effective = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    published = sites_client.post(
        f"/api/v1/site-revisions/{revision['id']}/publish",
        json={"effective_at": effective.isoformat()},
        headers=headers,
    )
    assert published.status_code == 200, published.text
    site_file = config_dir / "sites" / "site-a.yaml"
    assert "room-2" not in site_file.read_text(encoding="utf-8")  # not before its time

    with connect(api_database_url) as conn:
        assert site_revisions.apply_due(conn, config_dir, effective) == [revision["id"]]
        conn.commit()
    text = site_file.read_text(encoding="utf-8")
    assert "room-2" in text and "李工" in text
    assert (config_dir / "sites" / "site-a.yaml.bak").exists()
    spaces = sites_client.get("/api/v1/spaces", params={"site": "site-a"}, headers=headers)
    assert "room-2" in {s["id"] for s in spaces.json()}
    with psycopg.connect(api_database_url) as conn:
        row = conn.execute(
            "SELECT payload FROM ledger WHERE kind = 'space.added' AND entity LIKE %s"
            " ORDER BY seq DESC LIMIT 1",
            ("%room-2%",),
        ).fetchone()
    assert row is not None
    assert json.loads(row[0])["actor"].startswith("token:")  # the publisher
    # its export imported again: nothing to change, applied or not
    for dry_run in (True, False):
        code, again = _post(sites_client, admin, _export(sites_client, admin), dry_run=dry_run)
        assert code == 200, again
        assert again["applied"] is False and again["registry"] == {} and again["note"] == ""
        assert all(not any(c.values()) for c in again["changes"].values())


def _site_c(name: str) -> bytes:
    """The workbook of site-c, which the directory does not configure at first: one building."""
    site = _blank(
        "site",
        id="site-c",
        name=name,
        timezone="Asia/Shanghai",
        seasons="cooling=06-01..09-30; heating=11-15..03-15",
    )
    return _book({"site": [site], "spaces": [_blank("spaces", id="c1", type="building")]})


def test_a_new_site_is_applied_at_once_by_an_admin(
    sites_client: TestClient,
    tokens: dict[tuple[str, str], str],
    config_dir: Path,
    api_database_url: str,
) -> None:
    """A site the directory does not configure yet has nothing to approve against: an admin
    bootstraps it directly, the file written and the registry synced as the caller."""
    admin = tokens[("admin", "all")]
    code, result = _post(sites_client, admin, _site_c("C 楼"), dry_run=False)
    assert code == 200, result
    assert result["new_site"] is True and result["applied"] is True
    assert result["file"] == "sites/site-c.yaml" and "约一秒内" in result["note"]
    assert (config_dir / "sites" / "site-c.yaml").exists()
    with psycopg.connect(api_database_url) as conn:
        row = conn.execute(
            "SELECT payload FROM ledger WHERE kind = 'space.added' AND entity LIKE %s",
            ("%site-c%c1%",),
        ).fetchone()
    assert row is not None and json.loads(row[0])["actor"].startswith("token:")
    # once configured, it is no longer new: a change is refused
    code, result = _post(sites_client, admin, _site_c("C 楼 改"), dry_run=False)
    assert code == 409 and "POST /api/v1/site-revisions" in result["detail"]


def test_problems_are_named_by_sheet_row_and_column(
    sites_client: TestClient, tokens: dict[tuple[str, str], str], config_dir: Path
) -> None:
    admin = tokens[("admin", "all")]
    before = (config_dir / "sites" / "site-a.yaml").read_text(encoding="utf-8")
    rows = _rows(_export(sites_client, admin))
    _set(rows["devices"][0], "devices", "space", "no-such-room")
    code, result = _post(sites_client, admin, _book(rows), dry_run=False)
    assert code == 422
    where = {(p["sheet"], p["row"], p["column"]) for p in result["problems"]}
    assert ("devices", 3, "space") in where
    first = result["problems"][0]
    assert first["zh"] and first["en"] and first["where"]
    assert result["detail"][0]["loc"][0] == "body"
    assert (config_dir / "sites" / "site-a.yaml").read_text(encoding="utf-8") == before
    # a workbook that is well formed but breaks a clause file of the directory
    rows = _rows(_export(sites_client, admin))
    _set(rows["site"][0], "site", "seasons", "cooling=06-01..09-30")
    code, result = _post(sites_client, admin, _book(rows), dry_run=True)
    assert code == 422, result
    assert any(
        "clauses/" in p["en"] and "heating" in p["en"] and str(config_dir) not in p["en"]
        for p in result["problems"]
    ), result
    code, result = _post(sites_client, admin, b"not a workbook", dry_run=True)
    assert code == 422
    assert "zip" in result["problems"][0]["en"]


def test_only_admins_of_the_workbooks_site_import_and_export(
    sites_client: TestClient, tokens: dict[tuple[str, str], str]
) -> None:
    book = _export(sites_client, tokens[("admin", "all")])
    for role in ("viewer", "facility_manager", "energy_officer"):
        code, _ = _post(sites_client, tokens[(role, "all")], book, dry_run=True)
        assert code == 403, role
        answer = sites_client.get(
            "/api/v1/sites/site-a/export.xlsx", headers=auth(tokens[(role, "all")])
        )
        assert answer.status_code == 403
    # an admin of site-a only: not a workbook of site-b, and not its export
    rows = _rows(book)
    _set(rows["site"][0], "site", "id", "site-b")
    code, result = _post(sites_client, tokens[("admin", "site-a")], _book(rows), dry_run=True)
    assert code == 403, result
    answer = sites_client.get(
        "/api/v1/sites/site-b/export.xlsx", headers=auth(tokens[("admin", "site-a")])
    )
    assert answer.status_code == 403
    assert sites_client.post(IMPORT, content=book).status_code == 401
    # the template is no one's data
    template = sites_client.get(
        "/api/v1/sites/template.xlsx", headers=auth(tokens[("viewer", "all")])
    )
    assert template.status_code == 200
    assert all(not rows for rows in _rows(template.content).values())
    missing = sites_client.get(
        "/api/v1/sites/no-such-site/export.xlsx", headers=auth(tokens[("admin", "all")])
    )
    assert missing.status_code == 404


def test_a_body_over_the_limit_is_refused(
    sites_client: TestClient, tokens: dict[tuple[str, str], str]
) -> None:
    answer = sites_client.post(
        IMPORT,
        content=b"\0" * (SITE_WORKBOOK_MAX_BYTES + 1),
        headers=auth(tokens[("admin", "all")]),
    )
    assert answer.status_code == 413
    assert str(SITE_WORKBOOK_MAX_BYTES) in answer.json()["detail"]


def test_the_bundled_configuration_is_not_written(
    client: TestClient, tokens: dict[tuple[str, str], str]
) -> None:
    """A service started without a configuration directory runs the bundled one: a dry run
    compares against it, an apply is refused."""
    admin = tokens[("admin", "all")]
    book = _book({"site": [_blank("site", id="site-c", name="C", timezone="Asia/Shanghai")]})
    code, result = _post(client, admin, book, dry_run=False)
    assert code == 409
    assert "CLAUSEWATCH_CONFIG_DIR" in result["detail"]
