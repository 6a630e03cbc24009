"""`GET /compliance` against hand-computed figures: rate, not-assessable share, clipping to the
period, outside-schedule time ignored, and key-clause coverage with its gaps."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from store.partitions import ensure_partitions
from tests.api.conftest import T0, auth

pytestmark = pytest.mark.integration
H = dt.timedelta(hours=1)


@pytest.fixture(scope="module")
def intervals(api_database_url: str) -> None:
    """site-a, room-1 / th-1:
    temp.cooling.min  [T0, +1h) compliant, [+1h, +1.5h) violating, [+1.5h, +2h) not assessable,
                      [+2h, +3h) outside the schedule;
    temp.heating.max  [T0, +2h) compliant.
    A temperature reading of th-1 one minute before T0 + 2h (a live source at that time)."""
    rows: list[tuple[Any, ...]] = [
        ("temp.cooling.min", T0, T0 + H, "compliant"),
        ("temp.cooling.min", T0 + H, T0 + 1.5 * H, "violating"),
        ("temp.cooling.min", T0 + 1.5 * H, T0 + 2 * H, "not_assessable"),
        ("temp.cooling.min", T0 + 2 * H, T0 + 3 * H, "outside_schedule"),
        ("temp.heating.max", T0, T0 + 2 * H, "compliant"),
    ]
    with psycopg.connect(api_database_url) as conn:
        for clause_id, start, end, status in rows:
            conn.execute(
                "INSERT INTO compliance_intervals (site, clause_id, clause_version, content_hash,"
                " space, device, start_ts, end_ts, status)"
                " SELECT 'site-a', clause_id, version, content_hash, 'room-1', 'th-1', %s, %s, %s"
                " FROM clause_versions WHERE clause_id = %s ORDER BY version DESC LIMIT 1",
                (start, end, status, clause_id),
            )
        ensure_partitions(conn, ahead=0, today=T0.date())
        conn.execute(
            "INSERT INTO readings (site, device, metric, ts, value, received_at)"
            " VALUES ('site-a', 'th-1', 'temperature', %s, 25.0, %s)",
            (T0 + 2 * H - dt.timedelta(minutes=1), T0 + 2 * H),
        )


def _report(client: TestClient, token: str, since: dt.datetime, until: dt.datetime) -> Any:
    response = client.get(
        "/api/v1/compliance",
        params={"site": "site-a", "since": since.isoformat(), "until": until.isoformat()},
        headers=auth(token),
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_rates_per_clause_space_and_site(
    client: TestClient, tokens: dict[tuple[str, str], str], intervals: None
) -> None:
    report = _report(client, tokens[("viewer", "site-a")], T0, T0 + 3 * H)
    clauses = {c["clause_id"]: c for c in report["clauses"]}
    cooling = clauses["temp.cooling.min"]
    assert (cooling["compliant_s"], cooling["violating_s"], cooling["not_assessable_s"]) == (
        3600.0,
        1800.0,
        1800.0,
    )
    assert cooling["rate"] == pytest.approx(3600 / 5400)
    assert cooling["not_assessable_share"] == pytest.approx(1800 / 7200)
    assert cooling["key"] is True
    assert clauses["temp.heating.max"]["rate"] == 1.0
    (room,) = report["spaces"]
    assert room["space"] == "room-1"
    assert room["rate"] == pytest.approx((3600 + 7200) / (3600 + 7200 + 1800))
    (site,) = report["sites"]
    assert site["rate"] == room["rate"]


def test_intervals_are_clipped_to_the_period(
    client: TestClient, tokens: dict[tuple[str, str], str], intervals: None
) -> None:
    report = _report(client, tokens[("viewer", "all")], T0 + 0.5 * H, T0 + 1.25 * H)
    cooling = {c["clause_id"]: c for c in report["clauses"]}["temp.cooling.min"]
    assert (cooling["compliant_s"], cooling["violating_s"]) == (1800.0, 900.0)
    assert cooling["rate"] == pytest.approx(2 / 3)


def test_nothing_assessable_gives_no_rate(
    client: TestClient, tokens: dict[tuple[str, str], str], intervals: None
) -> None:
    report = _report(client, tokens[("viewer", "all")], T0 + 2 * H, T0 + 3 * H)
    assert report["clauses"] == []
    assert report["sites"][0]["rate"] is None


def test_key_clause_coverage(
    client: TestClient, tokens: dict[tuple[str, str], str], intervals: None
) -> None:
    coverage = _report(client, tokens[("viewer", "all")], T0, T0 + 2 * H)["sites"][0]["coverage"]
    gaps = {gap["clause_id"]: gap["missing"] for gap in coverage["gaps"]}
    # Both clauses ran, th-1 reported temperature a minute before the end, fm-1 answers for b1.
    assert "temp.cooling.min" not in gaps
    assert "temp.heating.max" not in gaps
    assert coverage["covered"] >= 2
    assert coverage["covered"] == coverage["key_clauses_in_force"] - len(gaps)
    assert coverage["rate"] == pytest.approx(coverage["covered"] / coverage["key_clauses_in_force"])
    assert all("active" in missing for missing in gaps.values())  # nothing else was evaluated

    later = _report(client, tokens[("viewer", "all")], T0 + 2 * H, T0 + 5 * H)
    later_gaps = {g["clause_id"]: g["missing"] for g in later["sites"][0]["coverage"]["gaps"]}
    # The clause still ran (outside its schedule), but th-1's last reading is older than its
    # max_gap (15 min) by then; temp.heating.max produced nothing in that period.
    assert later_gaps["temp.cooling.min"] == ["live_data_source"]
    assert later_gaps["temp.heating.max"] == ["active", "live_data_source"]


def test_period_errors_are_field_errors(
    client: TestClient, tokens: dict[tuple[str, str], str]
) -> None:
    response = client.get(
        "/api/v1/compliance",
        params={"since": T0.isoformat(), "until": (T0 - H).isoformat()},
        headers=auth(tokens[("viewer", "all")]),
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "since"]
