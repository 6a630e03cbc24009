"""`clausewatch report carbon` and `clausewatch energy factor add` against a real database."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from clausewatch.cli import main
from store import registry

pytestmark = pytest.mark.integration


def test_report_carbon_csv(
    conn: psycopg.Connection[Any],
    kit: Any,
    energy_database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    site = kit.make_site(grid_region="national", max_gap="40d")
    registry.sync_site(conn, site, actor="test", now=kit.local(2023, 1, 1))
    kit.insert_readings(
        conn,
        site,
        "em-main",
        "energy_kwh",
        [(kit.local(2023, 1, 1), 0), (kit.local(2023, 2, 1), 1000)],
    )
    conn.commit()
    argv = [
        "report",
        "carbon",
        "--database-url",
        energy_database_url,
        "--site",
        site.site.id,
        "--from",
        "2023-01-01",
        "--to",
        "2023-01-31",  # the last day included: January
    ]
    assert main([*argv, "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert f"total,{site.site.id},scope2 location-based,0.530600,tCO2," in out
    assert "mee_nbs_average national 2023 0.5306 tCO2/MWh" in out
    assert main(argv) == 0  # the text form
    assert "0.530600" in capsys.readouterr().out
    assert main([*argv[:-4], "--from", "2023-02-01", "--to", "2023-01-01"]) == 2
    assert main([*argv[:-2], "--to", "soon"]) == 2
    assert "error:" in capsys.readouterr().err


def test_factor_add_refuses_to_overwrite(
    energy_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "energy",
        "factor",
        "add",
        "--database-url",
        energy_database_url,
        "--carrier",
        "heat",
        "--series",
        "cli_test_series",
        "--data-year",
        "2024",
        "--value",
        "0.1",
        "--unit",
        "tCO2/GJ",
        "--instrument",
        "test",
        "--confidence",
        "C",
    ]
    assert main(argv) == 0
    assert main(argv) == 1
    wrong_unit = [("tCO2/MWh" if a == "tCO2/GJ" else a) for a in argv]
    assert main(wrong_unit) == 2  # tCO2/MWh does not fit heat
    with psycopg.connect(energy_database_url) as conn:
        conn.execute("DELETE FROM emission_factors WHERE series = 'cli_test_series'")


def test_report_energy_and_green_power(
    conn: psycopg.Connection[Any],
    kit: Any,
    energy_database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    site = _three_days(conn, kit)
    common = ["--database-url", energy_database_url, "--site", site.site.id]
    assert (
        main(
            [
                "report",
                "energy",
                *common,
                "--from",
                "2023-01-01",
                "--to",
                "2023-01-02",  # the last day included (issue 17)
                "--bucket",
                "day",
                "--by",
                "meter",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "start,end,key,carrier,value,unit,estimated,billed,manual"
    assert (
        "2023-01-01T00:00:00+08:00,2023-01-02T00:00:00+08:00,em-main,electricity,10.000,kWh,0.000,0.000,0.000"
        in lines
    )
    assert (
        "2023-01-02T00:00:00+08:00,2023-01-03T00:00:00+08:00,em-main,electricity,20.000,kWh,0.000,0.000,0.000"
        in lines
    )

    assert (
        main(
            [
                "energy",
                "green-power",
                "add",
                *common,
                "--from",
                "2023-01-01",
                "--to",
                "2023-01-02",
                "--kwh",
                "12",
                "--instrument",
                "certificate",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "energy",
                "green-power",
                "add",
                *common,
                "--from",
                "2023-01-02",
                "--to",
                "2023-01-01",
                "--kwh",
                "12",
                "--instrument",
                "certificate",
            ]
        )
        == 2
    )
    capsys.readouterr()
    assert (
        main(
            [
                "report",
                "carbon",
                *common,
                "--from",
                "2023-01-01",
                "--to",
                "2023-01-02",
                "--format",
                "json",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    # 30 kWh, 12 of them green: market (30 - 12) x 0.5306 = 9.5508 kg; location 15.918 kg
    assert '"scope2_market_tco2": "0.009551"' in out
    assert '"scope2_location_tco2": "0.015918"' in out


def test_report_energy_json_is_the_api_document(
    conn: psycopg.Connection[Any],
    kit: Any,
    energy_database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 17: `--format json` kept the points and imbalances only, with epoch floats; it is
    the document GET /api/v1/energy returns: ISO times and each meter's detail."""
    import orjson

    site = _three_days(conn, kit)
    argv = ["report", "energy", "--database-url", energy_database_url, "--site", site.site.id]
    argv += ["--from", "2023-01-01", "--to", "2023-01-02", "--bucket", "day", "--format", "json"]
    assert main(argv) == 0
    document = orjson.loads(capsys.readouterr().out)
    assert document["since"] == "2023-01-01T00:00:00+08:00"
    assert document["until"] == "2023-01-03T00:00:00+08:00"
    first = document["points"][0]
    assert (first["start"], first["end"]) == (
        "2023-01-01T00:00:00+08:00",
        "2023-01-02T00:00:00+08:00",
    )
    meters = {m["device"]: m for m in document["meters"]}
    assert meters["em-main"]["consumption"] == "30.000" and meters["em-main"]["readings"] == 3


def _three_days(conn: psycopg.Connection[Any], kit: Any) -> Any:
    """A site whose main meter reads 0, 10 and 30 kWh at local midnight of 1-3 January 2023."""
    site = kit.make_site(grid_region="national", max_gap="2d")
    registry.sync_site(conn, site, actor="test", now=kit.local(2023, 1, 1))
    day = [kit.local(2023, 1, d) for d in (1, 2, 3)]
    kit.insert_readings(
        conn, site, "em-main", "energy_kwh", list(zip(day, (0, 10, 30), strict=True))
    )
    conn.commit()
    return site
