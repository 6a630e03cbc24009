"""POST /api/v1/energy/bills and the bills in /energy and /carbon, and `clausewatch energy
import`, over the real app, database and tokens (issue 22)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.tokens import create_token
from clausewatch.cli import main
from energy.bills import MAX_FILE_BYTES
from rules.site import SiteModel
from store import registry

pytestmark = pytest.mark.integration

HEADER = "site,carrier,first_day,last_day,quantity,unit,cost,kind,space,device,reference"
PERIOD = {"since": "2023-01-01", "until": "2023-02-01"}
CSV_TYPE = {"Content-Type": "text/csv"}


@pytest.fixture(scope="module")
def client(energy_database_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(energy_database_url)) as test_client:
        yield test_client


@pytest.fixture
def site(conn: psycopg.Connection[Any], kit: Any) -> SiteModel:
    """January 2023: em-main measures 1000 kWh; there is no heat meter."""
    model: SiteModel = kit.make_site(grid_region="national", max_gap="40d")
    registry.sync_site(conn, model, actor="test", now=kit.local(2023, 1, 1))
    jan, feb = kit.local(2023, 1, 1), kit.local(2023, 2, 1)
    kit.insert_readings(conn, model, "em-main", "energy_kwh", [(jan, 0), (feb, 1000)])
    conn.commit()
    return model


def token(conn: psycopg.Connection[Any], role: str, *sites: str) -> dict[str, str]:
    plain, _ = create_token(conn, role, sites)  # type: ignore[arg-type]
    conn.commit()
    return {"Authorization": f"Bearer {plain}"}


def bills(site: SiteModel) -> str:
    sid = site.site.id
    return (
        f"{HEADER}\n{sid},electricity,2023-01-01,2023-01-31,1100,kWh,880,billed,,em-main,E1\n"
        f"{sid},heat,2023-01-01,2023-01-31,12.5,GJ,,manual,b,,\n"
    )


def test_upload_dry_run_apply_and_the_reports(
    client: TestClient, conn: psycopg.Connection[Any], site: SiteModel
) -> None:
    sid = site.site.id
    officer = {**token(conn, "energy_officer", sid), **CSV_TYPE}
    url = "/api/v1/energy/bills"
    dry = client.post(url, params={"dry_run": "true"}, content=bills(site), headers=officer)
    assert dry.status_code == 200, dry.text
    assert (dry.json()["new"], dry.json()["applied"]) == (2, False)

    applied = client.post(url, params={"filename": "jan.csv"}, content=bills(site), headers=officer)
    assert applied.status_code == 200, applied.text
    assert (applied.json()["new"], applied.json()["applied"]) == (2, True)
    again = client.post(url, content=bills(site), headers=officer)
    assert (again.json()["unchanged"], again.json()["new"]) == (2, 0)
    actors = conn.execute(
        "SELECT DISTINCT recorded_by FROM energy_bills WHERE site = %s", (sid,)
    ).fetchall()
    assert len(actors) == 1 and actors[0][0].startswith("token:")

    carbon = client.get("/api/v1/carbon", params={"site": sid, **PERIOD}, headers=officer).json()
    (electricity,) = [b for b in carbon["bills"] if b["carrier"] == "electricity"]
    assert (electricity["amount"], electricity["metered"], electricity["difference"]) == (
        "1100.000",
        "1000.000",
        "-100.000",
    )
    assert electricity["difference_pct"] == "-9.09"
    heat = next(c for c in carbon["carriers"] if c["carrier"] == "heat")
    assert (heat["manual"], heat["manual_tco2"], heat["location_tco2"]) == (
        "12.500",
        "1.375000",  # 12.5 GJ x 0.11 tCO2/GJ
        "1.375000",
    )
    assert carbon["manual_tco2"] == "1.375000"

    energy = client.get(
        "/api/v1/energy", params={"site": sid, "by": "meter", **PERIOD}, headers=officer
    ).json()
    assert [
        (p["key"], p["value"], p["manual"]) for p in energy["points"] if p["manual"] != "0.000"
    ] == [("manual:b", "12.500", "12.500")]
    assert [b["difference"] for b in energy["bills"] if b["metered"] is not None] == ["-100.000"]
    as_csv = client.get(
        "/api/v1/energy", params={"site": sid, "format": "csv", **PERIOD}, headers=officer
    )
    assert "heat,12.500,GJ,0.000,0.000,12.500" in as_csv.text


def test_refusals(client: TestClient, conn: psycopg.Connection[Any], site: SiteModel) -> None:
    sid = site.site.id
    url = "/api/v1/energy/bills"
    viewer = {**token(conn, "viewer", sid), **CSV_TYPE}
    assert client.post(url, content=bills(site), headers=viewer).status_code == 403
    elsewhere = {**token(conn, "energy_officer", "another-site"), **CSV_TYPE}
    assert client.post(url, content=bills(site), headers=elsewhere).status_code == 403
    officer = {**token(conn, "energy_officer", sid), **CSV_TYPE}
    bad = bills(site).replace("1100,kWh", "1100,GJ")
    refused = client.post(url, content=bad, headers=officer)
    assert refused.status_code == 422
    assert [(e["row"], e["column"]) for e in refused.json()["result"]["errors"]] == [(2, "unit")]
    assert refused.json()["detail"][0]["loc"] == ["body", 2, "unit"]
    assert conn.execute("SELECT count(*) FROM energy_bills WHERE site = %s", (sid,)).fetchone() == (
        0,
    )
    big = HEADER + "\n" + "x" * MAX_FILE_BYTES
    assert client.post(url, content=big, headers=officer).status_code == 413
    garbage = client.post(
        url, params={"filename": "a.xlsx"}, content=b"PK\x03\x04nonsense", headers=officer
    )
    assert garbage.status_code == 422
    assert "not an Excel .xlsx workbook" in garbage.text


def test_cli_import_dry_run_then_apply(
    conn: psycopg.Connection[Any],
    site: SiteModel,
    energy_database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "jan.csv"
    path.write_text(bills(site).replace("12.5,GJ", "12.5,kg"), encoding="utf-8")
    common = ["energy", "import", str(path), "--database-url", energy_database_url]
    assert main([*common, "--dry-run"]) == 1
    captured = capsys.readouterr()
    assert "error: jan.csv: row 3 unit: " in captured.err
    path.write_text(bills(site), encoding="utf-8")
    assert main([*common, "--dry-run"]) == 0
    assert "2 new, 0 corrected, 0 unchanged, 0 errors; dry run" in capsys.readouterr().out
    assert main([*common, "--actor", "officer-wang"]) == 0
    assert "stored" in capsys.readouterr().out
    assert main(common) == 0
    assert "0 new, 0 corrected, 2 unchanged" in capsys.readouterr().out
    recorded = conn.execute(
        "SELECT DISTINCT recorded_by FROM energy_bills WHERE site = %s", (site.site.id,)
    ).fetchall()
    assert recorded == [("officer-wang",)]

    report = [
        "report", "energy", "--database-url", energy_database_url, "--site", site.site.id,
        "--from", "2023-01-01", "--to", "2023-01-31",
    ]  # fmt: skip
    assert main(report) == 0
    out = capsys.readouterr()
    assert "heat,12.500,GJ,0.000,0.000,12.500" in out.out
    assert "bill 1100.000 kWh, metered 1000.000 (em-main), metered - bill -100.000" in out.err


def test_withdraw_a_bill_entered_for_the_wrong_period(
    client: TestClient,
    conn: psycopg.Connection[Any],
    site: SiteModel,
    energy_database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sid = site.site.id
    officer = token(conn, "energy_officer", sid)
    wrong = f"{HEADER}\n{sid},heat,2023-01-05,2023-02-04,12.5,GJ,,manual,b,,\n"
    stored = client.post("/api/v1/energy/bills", content=wrong, headers={**officer, **CSV_TYPE})
    bill_id = stored.json()["changes"][0]["id"]
    right = bills(site)
    blocked = client.post("/api/v1/energy/bills", content=right, headers={**officer, **CSV_TYPE})
    assert blocked.status_code == 422
    assert f"overlaps the stored bill #{bill_id}" in blocked.json()["detail"][0]["msg"]

    url = f"/api/v1/energy/bills/{bill_id}/withdraw"
    viewer = token(conn, "viewer", sid)
    assert client.post(url, json={"reason": "x"}, headers=viewer).status_code == 403
    other = token(conn, "energy_officer", "another-site")
    assert client.post(url, json={"reason": "x"}, headers=other).status_code == 404
    done = client.post(url, json={"reason": "typed the wrong month"}, headers=officer)
    assert done.status_code == 200, done.text
    assert client.post(url, json={"reason": "again"}, headers=officer).status_code == 404
    entry = conn.execute(
        "SELECT payload::jsonb FROM ledger WHERE kind = 'energy.bill.withdrawn' AND entity = %s",
        (f"energy_bill:{bill_id}",),
    ).fetchone()
    assert entry is not None and entry[0]["reason"] == "typed the wrong month"
    accepted = client.post("/api/v1/energy/bills", content=right, headers={**officer, **CSV_TYPE})
    assert accepted.status_code == 200 and accepted.json()["new"] == 2

    electricity = accepted.json()["changes"][0]["id"]
    argv = ["energy", "bill", "withdraw", str(electricity), "--reason", "duplicate"]
    assert main([*argv, "--database-url", energy_database_url]) == 0
    assert f"withdrew bill {electricity}" in capsys.readouterr().out
    assert main([*argv, "--database-url", energy_database_url]) == 1
    carbon = client.get("/api/v1/carbon", params={"site": sid, **PERIOD}, headers=officer).json()
    assert [b["carrier"] for b in carbon["bills"]] == ["heat"]
