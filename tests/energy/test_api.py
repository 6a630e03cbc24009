"""GET /api/v1/energy and /api/v1/carbon over the real app, database and tokens."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.tokens import create_token
from store import registry

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(energy_database_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(energy_database_url)) as test_client:
        yield test_client


@pytest.fixture
def site(conn: psycopg.Connection[Any], kit: Any) -> Any:
    """A registered site with January 2023: 1000 kWh, 100 m3 of gas, 80 m3 of water."""
    model = kit.make_site(grid_region="national", max_gap="40d")
    registry.sync_site(conn, model, actor="test", now=kit.local(2023, 1, 1))
    jan, feb = kit.local(2023, 1, 1), kit.local(2023, 2, 1)
    kit.insert_readings(conn, model, "em-main", "energy_kwh", [(jan, 0), (feb, 1000)])
    kit.insert_readings(conn, model, "em-f1", "energy_kwh", [(jan, 0), (feb, 600)])
    kit.insert_readings(conn, model, "gm", "gas_m3", [(jan, 50), (feb, 150)])
    conn.commit()
    return model


def token(conn: psycopg.Connection[Any], role: str, *sites: str) -> dict[str, str]:
    plain, _ = create_token(conn, role, sites)  # type: ignore[arg-type]
    conn.commit()
    return {"Authorization": f"Bearer {plain}"}


PERIOD = {"since": "2023-01-01", "until": "2023-02-01"}


def test_carbon_as_json_and_csv(
    client: TestClient, conn: psycopg.Connection[Any], site: Any
) -> None:
    officer = token(conn, "energy_officer", site.site.id)
    answer = client.get("/api/v1/carbon", params={"site": site.site.id, **PERIOD}, headers=officer)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    # 1000 x 0.1229 + 100 x 1.2143 = 244.33 kgce; 530.6 + 216.2 kg CO2
    assert body["kgce"] == "244.330"
    assert body["scope2_location_tco2"] == "0.530600"
    assert body["scope1_tco2"] == "0.216200"
    assert body["since"].startswith("2023-01-01T00:00:00+08:00")
    electricity = [f for f in body["factors"] if f["carrier"] == "electricity"]
    assert [(f["series"], f["data_year"], f["value"]) for f in electricity] == [
        ("mee_nbs_average", 2023, "0.5306")
    ]

    as_csv = client.get(
        "/api/v1/carbon", params={"site": site.site.id, "format": "csv", **PERIOD}, headers=officer
    )
    assert as_csv.status_code == 200
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    totals = {(r["section"], r["item"]): r["value"] for r in rows if r["section"] == "total"}
    assert totals[("total", "kgce")] == "244.330"
    assert totals[("total", "total location-based")] == "0.746800"


def test_energy_by_meter_with_imbalance(
    client: TestClient, conn: psycopg.Connection[Any], site: Any
) -> None:
    officer = token(conn, "energy_officer", site.site.id)
    answer = client.get(
        "/api/v1/energy",
        params={"site": site.site.id, "by": "meter", "bucket": "month", **PERIOD},
        headers=officer,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    values = {(p["key"], p["carrier"]): p["value"] for p in body["points"]}
    assert values[("em-main", "electricity")] == "1000.000"
    assert values[("em-f1", "electricity")] == "600.000"
    [imbalance] = body["imbalances"]
    # em-f2 has no readings: Σ children = 600, so 400 kWh (40 %) unaccounted for
    assert (imbalance["imbalance"], imbalance["imbalance_pct"]) == ("400.000", "40.00")


def test_who_may_see_what(client: TestClient, conn: psycopg.Connection[Any], site: Any) -> None:
    params = {"site": site.site.id, **PERIOD}
    assert client.get("/api/v1/carbon", params=params).status_code == 401
    other = token(conn, "energy_officer", "some-other-site")
    assert client.get("/api/v1/carbon", params=params, headers=other).status_code == 403
    manager = token(conn, "facility_manager")
    assert client.get("/api/v1/carbon", params=params, headers=manager).status_code == 403
    admin = token(conn, "admin")
    missing = client.get("/api/v1/carbon", params={**params, "site": "no-such-site"}, headers=admin)
    assert missing.status_code == 404


def test_bad_input_is_422_never_500(
    client: TestClient, conn: psycopg.Connection[Any], site: Any
) -> None:
    admin = token(conn, "admin")
    for params in (
        {"since": "yesterday"},
        {"since": "2023-01-01T00:00:00"},  # no offset
        {"since": "2023-02-01", "until": "2023-01-01"},
        {"space": "nowhere"},
        {"bucket": "fortnight"},
        {"since": "2000-01-01", "until": "2023-01-01"},  # too long
        {"since": "9999-12-01", "until": "9999-12-31"},
        {"since": "0001-01-01", "until": "0001-01-02"},
        {"since": "2023-01-01T00:00:00+25:00"},
    ):
        answer = client.get(
            "/api/v1/energy", params={"site": site.site.id, **PERIOD, **params}, headers=admin
        )
        assert answer.status_code == 422, (params, answer.text)
    for at in ("9999-12-31", "0001-01-01", "never"):
        answer = client.get(
            "/api/v1/energy/quotas", params={"site": site.site.id, "at": at}, headers=admin
        )
        assert answer.status_code == 422, (at, answer.text)


def test_admin_adds_a_factor_without_a_code_change(
    client: TestClient, conn: psycopg.Connection[Any], site: Any
) -> None:
    factor = {
        "carrier": "electricity",
        "series": "mee_nbs_average",
        "region": "national",
        "data_year": 2099,
        "value": "0.4000",
        "unit": "tCO2/MWh",
        "instrument": "test announcement",
        "confidence": "C",
    }
    officer = token(conn, "energy_officer")
    assert client.post("/api/v1/energy/factors", json=factor, headers=officer).status_code == 403
    admin = token(conn, "admin")
    assert client.post("/api/v1/energy/factors", json=factor, headers=admin).status_code == 201
    assert client.post("/api/v1/energy/factors", json=factor, headers=admin).status_code == 409
    bad = {**factor, "unit": "kgCO2/m3"}  # does not fit electricity
    assert client.post("/api/v1/energy/factors", json=bad, headers=admin).status_code == 422
    nul = {**factor, "data_year": 2098, "instrument": "test\u0000announcement"}
    response = client.post("/api/v1/energy/factors", json=nul, headers=admin)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"][-1] == "instrument"
    listed = client.get("/api/v1/energy/factors", headers=officer).json()
    assert any(f["data_year"] == 2099 for f in listed)
    conn.execute("DELETE FROM emission_factors WHERE data_year = 2099")
    conn.commit()


def test_tariffs_over_the_api(client: TestClient, conn: psycopg.Connection[Any], site: Any) -> None:
    sid = site.site.id
    officer = token(conn, "energy_officer", sid)
    viewer = token(conn, "viewer", sid)
    tou = {
        "scope": "site",
        "scope_id": sid,
        "carrier": "electricity",
        "first_day": "2023-01-01",
        "bands": [
            {"band": "valley", "start": "00:00", "end": "08:00", "price": "0.3"},
            {"band": "peak", "start": "08:00", "end": "24:00", "price": "0.9"},
        ],
        "source": "鲁发改价格〔2023〕",
    }
    assert client.post("/api/v1/energy/tariffs", json=tou, headers=viewer).status_code == 403
    other = {**tou, "scope_id": "elsewhere"}
    assert client.post("/api/v1/energy/tariffs", json=other, headers=officer).status_code == 403
    region = {**tou, "scope": "region", "scope_id": "national"}
    answer = client.post("/api/v1/energy/tariffs", json=region, headers=officer)
    assert answer.status_code == 403 and "without a site scope" in answer.text
    nul = client.post("/api/v1/energy/tariffs", json={**tou, "source": "a\x00b"}, headers=officer)
    assert nul.status_code == 422
    gap = {**tou, "bands": tou["bands"][:1]}
    answer = client.post("/api/v1/energy/tariffs", json=gap, headers=officer)
    assert answer.status_code == 422 and "cover the day once" in answer.text
    made = client.post("/api/v1/energy/tariffs", json=tou, headers=officer)
    assert made.status_code == 201, made.text
    tariff_id = made.json()["id"]
    again = client.post("/api/v1/energy/tariffs", json=tou, headers=officer)
    assert again.status_code == 409 and "overlaps" in again.text
    ended = client.post(
        f"/api/v1/energy/tariffs/{tariff_id}/end", json={"last_day": "2023-01-15"}, headers=officer
    )
    assert ended.status_code == 200 and ended.json()["last_day"] == "2023-01-15"
    later = {**tou, "first_day": "2023-01-16", "bands": [], "price": "0.5"}
    assert client.post("/api/v1/energy/tariffs", json=later, headers=officer).status_code == 201
    listed = client.get("/api/v1/energy/tariffs", params={"site": sid}, headers=viewer).json()
    assert [(t["first_day"], t["last_day"]) for t in listed] == [
        ("2023-01-01", "2023-01-15"), ("2023-01-16", None)
    ]  # fmt: skip
    # January: 1000 kWh spread evenly (two readings): 15 days TOU, 16 days at 0.5
    body = client.get("/api/v1/carbon", params={"site": sid, **PERIOD}, headers=viewer).json()
    electricity = next(c for c in body["cost"]["carriers"] if c["carrier"] == "electricity")
    # 1000 x 15/31 at 8 h x 0.3 + 16 h x 0.9 a day (0.7 average) + 1000 x 16/31 x 0.5
    expected = Decimal(1000) * 15 / 31 * Decimal("0.7") + Decimal(1000) * 16 / 31 / 2
    assert Decimal(electricity["cost"]) == expected.quantize(Decimal("0.01"))
    assert [b["band"] for b in electricity["bands"]] == ["peak", "flat", "valley"]
