"""Reports against real PostgreSQL, with figures computed by hand in the comments."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from energy.render import carbon_csv, carbon_out
from energy.reports import ReportError, carbon_report, energy_series

pytestmark = pytest.mark.integration
HOUR = dt.timedelta(hours=1)


def test_a_month_with_a_meter_replaced_in_the_middle(
    conn: psycopg.Connection[Any], kit: Any
) -> None:
    site = kit.make_site()
    start = kit.local(2026, 7, 1)
    # Hourly readings through July (744 h). 10 kWh per hour; on 07-16 00:00 (hour 360) the
    # meter is replaced and the new one reads 3 kWh.
    points = []
    for hour in range(745):
        value = 10000 + 10 * hour if hour < 360 else 3 + 10 * (hour - 360)
        points.append((start + hour * HOUR, value))
    kit.insert_readings(conn, site, "em-main", "energy_kwh", points)

    report = carbon_report(conn, site, start, kit.local(2026, 8, 1))
    out = carbon_out(report)

    # 359 intervals before the replacement + 384 after, 10 kWh each; the hour across the
    # replacement is unknown: 7430 kWh, never 7430 - 13587.
    electricity = next(c for c in out.carriers if c.carrier == "electricity")
    assert electricity.consumption == Decimal("7430.000")
    assert electricity.estimated == 0
    assert electricity.kgce == Decimal("913.147")  # 7430 x 0.1229
    # north-china 2023 (latest not after 2026) 0.6361 t/MWh: 7430 x 0.6361 = 4726.223 kg
    assert electricity.location_tco2 == Decimal("4.726223")
    [meter] = [m for m in out.meters if m.device == "em-main"]
    [reset] = meter.resets
    assert (reset.before, reset.after) == (Decimal("13590.000"), Decimal("3.000"))
    assert reset.at == "2026-07-16T00:00:00+08:00"
    assert [(m.start, m.end) for m in meter.missing] == [
        ("2026-07-15T23:00:00+08:00", "2026-07-16T00:00:00+08:00")
    ]
    [factor] = [f for f in out.factors if f.carrier == "electricity"]
    assert (factor.series, factor.region, factor.data_year, factor.value) == (
        "mee_nbs_average",
        "north-china",
        2023,
        Decimal("0.6361"),
    )
    assert "latest not after 2026" in factor.note
    assert any("1 register reset" in note for note in out.notes)
    csv_text = carbon_csv(report)
    assert (
        "meter,em-main,reset,3.000,kWh,at 2026-07-16T00:00:00+08:00: 13590.000 -> 3.000" in csv_text
    )
    # sub-meters without data: measured as missing, not zero-filled into the total
    assert any("em-f1" in note and "744.00 h without data" in note for note in out.notes)


def test_a_period_across_two_data_years_uses_two_factors(
    conn: psycopg.Connection[Any], kit: Any
) -> None:
    site = kit.make_site(grid_region="north-china", max_gap="40d")
    dec, jan, feb = kit.local(2022, 12, 1), kit.local(2023, 1, 1), kit.local(2023, 2, 1)
    kit.insert_readings(conn, site, "em-main", "energy_kwh", [(dec, 0), (jan, 1000), (feb, 3000)])

    out = carbon_out(carbon_report(conn, site, dec, feb))

    # 2022: north-china has no factor of 2022 or earlier -> the same series' national 2022
    # 0.5366; 2023: north-china 0.6361. 1000 x 0.5366 + 2000 x 0.6361 = 536.6 + 1272.2 kg.
    assert out.scope2_location_tco2 == Decimal("1.808800")
    used = [
        (f.year, f.region, f.data_year, f.value) for f in out.factors if f.carrier == "electricity"
    ]
    assert used == [
        (2022, "national", 2022, Decimal("0.5366")),
        (2023, "north-china", 2023, Decimal("0.6361")),
    ]
    assert "national" in next(f.note for f in out.factors if f.year == 2022)
    assert [(m.start[:7], m.consumption) for m in out.months if m.carrier == "electricity"] == [
        ("2022-12", Decimal("1000.000")),
        ("2023-01", Decimal("2000.000")),
    ]


def test_the_site_series_is_never_mixed(conn: psycopg.Connection[Any], kit: Any) -> None:
    site = kit.make_site(grid_region="national", series="ets_grid_average", max_gap="40d")
    kit.insert_readings(
        conn,
        site,
        "em-main",
        "energy_kwh",
        [(kit.local(2023, 1, 1), 0), (kit.local(2023, 2, 1), 1000)],
    )
    out = carbon_out(carbon_report(conn, site, kit.local(2023, 1, 1), kit.local(2023, 2, 1)))
    # ets_grid_average has no 2023 value: its own 2022 figure 0.5703, not MEE-NBS 0.5306.
    assert [(f.series, f.data_year) for f in out.factors if f.carrier == "electricity"] == [
        ("ets_grid_average", 2022)
    ]
    assert out.scope2_location_tco2 == Decimal("0.570300")

    unknown = kit.make_site(series="no_such_series", max_gap="40d")
    kit.insert_readings(
        conn,
        unknown,
        "em-main",
        "energy_kwh",
        [(kit.local(2023, 1, 1), 0), (kit.local(2023, 2, 1), 1000)],
    )
    with pytest.raises(ReportError, match="no_such_series"):
        carbon_report(conn, unknown, kit.local(2023, 1, 1), kit.local(2023, 2, 1))


def test_sub_meters_leaving_seven_percent_unaccounted(
    conn: psycopg.Connection[Any], kit: Any
) -> None:
    site = kit.make_site(max_gap="2d")
    day0, day1 = kit.local(2026, 7, 1), kit.local(2026, 7, 2)
    # main 1000 kWh; floors 400 + 530 = 930: 70 kWh (7 %) the sub-meters do not see.
    kit.insert_readings(conn, site, "em-main", "energy_kwh", [(day0, 5000), (day1, 6000)])
    kit.insert_readings(conn, site, "em-f1", "energy_kwh", [(day0, 100), (day1, 500)])
    kit.insert_readings(conn, site, "em-f2", "energy_kwh", [(day0, 20), (day1, 550)])

    out = carbon_out(carbon_report(conn, site, day0, day1, space="b"))
    [imbalance] = out.imbalances
    assert (imbalance.parent, imbalance.children) == ("em-main", ["em-f1", "em-f2"])
    assert imbalance.children_value == Decimal("930.000")
    assert imbalance.imbalance == Decimal("70.000")
    assert imbalance.imbalance_pct == Decimal("7.00")
    # The building counts the main meter once, not main + floors.
    assert next(c for c in out.carriers if c.carrier == "electricity").consumption == 1000
    # A floor counts its own sub-meter.
    floor = carbon_out(carbon_report(conn, site, day0, day1, space="f1"))
    assert next(c for c in floor.carriers if c.carrier == "electricity").consumption == 400

    points, _, _, _ = energy_series(conn, site, day0, day1, "day", space="b", by="space")
    assert {(p.key, p.value) for p in points} == {("f1", 400), ("f2", 530)}


def test_intensities_per_m2_and_per_person(conn: psycopg.Connection[Any], kit: Any) -> None:
    site = kit.make_site(grid_region="national", max_gap="40d")
    jan, feb = kit.local(2023, 1, 1), kit.local(2023, 2, 1)
    kit.insert_readings(conn, site, "em-main", "energy_kwh", [(jan, 0), (feb, 1000)])
    kit.insert_readings(conn, site, "gm", "gas_m3", [(jan, 50), (feb, 150)])
    kit.insert_readings(conn, site, "wm", "water_m3", [(jan, 0), (feb, 80)])
    kit.insert_refuel(conn, site, kit.local(2023, 1, 10, 9), {"fuel": "diesel", "kg": 10})
    kit.insert_refuel(conn, site, kit.local(2023, 1, 11, 9), {"fuel": "diesel", "litres": 12})
    conn.execute(
        "INSERT INTO green_power (site, first_day, last_day, kwh, instrument, reference)"
        " VALUES (%s, '2023-01-01', '2023-01-31', 310, 'certificate', 'GEC-1')",
        (site.site.id,),
    )

    report = carbon_report(conn, site, jan, feb)
    out = carbon_out(report)

    # kgce: 1000 x 0.1229 + 100 x 1.2143 + 10 x 1.4571 = 122.9 + 121.43 + 14.571 = 258.901
    assert out.kgce == Decimal("258.901")
    # kg CO2: electricity 1000 x 0.5306 = 530.6 (national 2023); gas 100 x 2.162 = 216.2;
    # diesel 10 kg x 3.096 t/t = 30.96  ->  scope 1 247.16, scope 2 530.6, total 777.76
    assert out.scope1_tco2 == Decimal("0.247160")
    assert out.scope2_location_tco2 == Decimal("0.530600")
    assert out.total_location_tco2 == Decimal("0.777760")
    # 1000 m2, 50 people
    assert out.intensity.kgce_per_m2 == Decimal("0.2589")  # 258.901 / 1000
    assert out.intensity.kgce_per_person == Decimal("5.1780")  # 258.901 / 50
    assert out.intensity.kgco2_per_m2 == Decimal("0.7778")  # 777.76 / 1000
    assert out.intensity.kgco2_per_person == Decimal("15.5552")  # 777.76 / 50
    assert out.intensity.water_m3_per_person == Decimal("1.6000")  # 80 / 50
    # Market-based: 310 green kWh at 0; the series has no 2023 residual mix, so the other
    # 690 kWh at the location factor: 690 x 0.5306 = 366.114 kg.
    assert out.green_kwh == Decimal("310.000")
    assert out.scope2_market_tco2 == Decimal("0.366114")
    assert any(f.purpose == "market" and "no residual-mix" in f.note for f in out.factors)
    # The litres-only refuel is reported, not guessed into kg.
    assert any("litres" in note and "not counted" in note for note in out.notes)
    # Annualised for the quota: 258.901 kgce / 1000 m2 x 365 / 31 = 3.0484 kgce/(m2·a)
    target = next(c for c in out.comparisons if c.name.endswith("energy per m2 (2025)"))
    assert target.annualised_actual == Decimal("3.0484")
    assert target.limit == Decimal("17.5560")  # 18.48 x 0.95
    assert target.status == "within"
    co2 = next(c for c in out.comparisons if "CO2 per m2" in c.name)
    assert co2.status == "not_assessable"  # no site baseline for CO2


def test_market_based_with_a_residual_mix_factor(conn: psycopg.Connection[Any], kit: Any) -> None:
    site = kit.make_site(grid_region="national", max_gap="40d")
    jan, feb = kit.local(2022, 1, 1), kit.local(2022, 2, 1)
    kit.insert_readings(conn, site, "em-main", "energy_kwh", [(jan, 0), (feb, 1000)])
    # A year-long contract of 3650 kWh: 10 kWh a day, 310 in January.
    conn.execute(
        "INSERT INTO green_power (site, first_day, last_day, kwh, instrument)"
        " VALUES (%s, '2022-01-01', '2022-12-31', 3650, 'contract')",
        (site.site.id,),
    )
    out = carbon_out(carbon_report(conn, site, jan, feb))
    # location 1000 x 0.5366 = 536.6 kg; market (1000 - 310) x 0.5856 = 404.064 kg
    assert out.scope2_location_tco2 == Decimal("0.536600")
    assert out.scope2_market_tco2 == Decimal("0.404064")


def test_unknown_space_is_a_clear_error(conn: psycopg.Connection[Any], kit: Any) -> None:
    site = kit.make_site()
    with pytest.raises(ReportError, match="no space 'nowhere'"):
        carbon_report(conn, site, kit.local(2026, 7, 1), kit.local(2026, 8, 1), space="nowhere")


def test_agrees_with_the_storage_consumption_query(conn: psycopg.Connection[Any], kit: Any) -> None:
    """Where readings sit on the period's edges nothing is estimated, and the report's figure is
    the storage layer's sum of positive differences (resets count nothing in both)."""
    from store.readings import consumption

    site = kit.make_site()
    start = kit.local(2026, 7, 1)
    values = [0, 4.2, 9.9, 1.5, 3.0, 7.25, 7.25, 12.0]  # a reset after 9.9
    kit.insert_readings(
        conn,
        site,
        "em-main",
        "energy_kwh",
        [(start + i * HOUR, v) for i, v in enumerate(values)],
    )
    until = start + (len(values) - 1) * HOUR
    [point] = consumption(conn, site.site.id, "em-main", "energy_kwh", start, until + HOUR)
    report = carbon_report(conn, site, start, until)
    electricity = report.carriers["electricity"]
    assert electricity.estimated == 0
    assert electricity.consumption == Decimal("20.4")  # 4.2 + 5.7 + 1.5 + 4.25 + 0 + 4.75
    assert Decimal(repr(point.consumption)).quantize(Decimal("0.001")) == Decimal("20.400")
    assert point.resets == 1


def test_purchased_heat_in_gj(conn: psycopg.Connection[Any], kit: Any) -> None:
    from rules.site import SiteModel

    base = kit.make_site(max_gap="40d").model_dump(by_alias=True)
    base["devices"] = [
        *base["devices"],
        {
            "id": "hm",
            "space": "b",
            "metrics": {
                "heat_gj": {"unit": "GJ", "cumulative": True, "carrier": "heat", "max_gap": "40d"}
            },
        },
    ]
    site = SiteModel.model_validate(base)
    jan, feb = kit.local(2026, 1, 1), kit.local(2026, 2, 1)
    _bind_quota_example(conn, kit)  # its building meter: the quota example applies
    kit.insert_readings(conn, site, "hm", "heat_gj", [(jan, 100), (feb, 110)])
    out = carbon_out(carbon_report(conn, site, jan, feb))
    heat = next(c for c in out.carriers if c.carrier == "heat")
    # 10 GJ x 34.12 kgce/GJ (0.03412 kgce/MJ); 10 GJ x 0.11 t/GJ = 1.1 t, scope 2 both ways
    assert (heat.kgce, heat.location_tco2, heat.scope) == (
        Decimal("341.200"),
        Decimal("1.100000"),
        2,
    )
    comparison = {c.name: c for c in out.comparisons}
    # non-heating energy leaves the heat out: electricity and gas have no data, so 0
    assert comparison["quota non-heating energy (constraint)"].annualised_actual == 0


def test_site_baseline_for_the_co2_target(conn: psycopg.Connection[Any], kit: Any) -> None:
    site = kit.make_site(grid_region="national", max_gap="40d")
    jan, feb = kit.local(2023, 1, 1), kit.local(2023, 2, 1)
    kit.insert_readings(conn, site, "em-main", "energy_kwh", [(jan, 0), (feb, 1000)])
    conn.execute(
        "INSERT INTO site_energy_baselines (site, year, kgco2_per_m2) VALUES (%s, 2020, 5)",
        (site.site.id,),
    )
    out = carbon_out(carbon_report(conn, site, jan, feb))
    co2 = next(c for c in out.comparisons if "CO2 per m2" in c.name)
    # 530.6 kg / 1000 m2 x 365 / 31 = 6.2474 kgCO2/(m2·a) against 5 x 0.93 = 4.65
    assert (co2.annualised_actual, co2.limit, co2.status) == (
        Decimal("6.2474"),
        Decimal("4.6500"),
        "exceeds",
    )
    # the energy targets keep the national 2020 figures where the site has none
    energy = next(c for c in out.comparisons if c.name.endswith("energy per m2 (2025)"))
    assert energy.limit == Decimal("17.5560")


def test_fleet_fuel_in_litres_needs_the_site_s_density(
    conn: psycopg.Connection[Any], kit: Any
) -> None:
    site = kit.make_site(grid_region="national", max_gap="40d")
    jan, feb = kit.local(2023, 1, 1), kit.local(2023, 2, 1)
    kit.insert_refuel(conn, site, kit.local(2023, 1, 5, 9), {"fuel": "diesel", "litres": 12})
    kit.insert_refuel(conn, site, kit.local(2023, 1, 6, 9), {"fuel": "gasoline", "litres": 30})
    kit.insert_refuel(conn, site, kit.local(2023, 1, 7, 9), {"fuel": "diesel", "kg": True})
    conn.execute(
        "INSERT INTO fuel_densities (site, fuel, kg_per_l, source)"
        " VALUES (%s, 'diesel', 0.84, 'supplier statement')",
        (site.site.id,),
    )
    out = carbon_out(carbon_report(conn, site, jan, feb))
    diesel = next(c for c in out.carriers if c.carrier == "diesel")
    # 12 L x 0.84 kg/L = 10.08 kg; x 1.4571 = 14.687568 kgce; x 3.096 = 31.20768 kg CO2
    assert (diesel.consumption, diesel.kgce, diesel.location_tco2) == (
        Decimal("10.080"),
        Decimal("14.688"),
        Decimal("0.031208"),
    )
    assert not any(c.carrier == "gasoline" for c in out.carriers)  # no gasoline density stated
    assert sum("not counted" in note for note in out.notes) == 2  # gasoline litres; kg: true
    assert any("density 0.84 kg/L" in note for note in out.notes)


def test_the_quota_example_is_compared_only_where_a_site_is_bound_to_it(
    conn: psycopg.Connection[Any], kit: Any
) -> None:
    """Issue 17: every carbon report was compared with DB37/T 2672-2019 (a Shandong example
    quota), whatever the site. Its rows appear only when one of its quota clauses applies to a
    meter of the site; the national five-year targets stay."""
    from rules.site import SiteModel

    _bind_quota_example(conn, kit)
    bound = kit.make_site(max_gap="40d")  # its main meter is on a building: the clause applies
    raw = bound.model_dump(by_alias=True)
    raw["site"]["id"] += "-unbound"
    for space in raw["spaces"]:
        space["type"] = "office" if space["id"] == "b" else space["type"]
    unbound = SiteModel.model_validate(raw)  # no building: no quota clause applies
    jan, feb = kit.local(2023, 1, 1), kit.local(2023, 2, 1)
    names = {}
    for site in (bound, unbound):
        kit.insert_readings(conn, site, "em-main", "energy_kwh", [(jan, 0), (feb, 1000)])
        out = carbon_out(carbon_report(conn, site, jan, feb))
        names[site.site.id] = [c.name for c in out.comparisons]
    assert "quota electricity (constraint)" in names[bound.site.id]
    assert not [n for n in names[unbound.site.id] if n.startswith("quota")]
    assert "14th five-year target energy per m2 (2025)" in names[unbound.site.id]


def _bind_quota_example(conn: psycopg.Connection[Any], kit: Any) -> None:
    """Stores the bundled DB37/T 2672-2019 clauses (a no-op when they are stored already)."""
    from config import BUNDLED_DIR
    from config.files import load_clause_file
    from store import registry

    quota_file = load_clause_file(BUNDLED_DIR / "clauses" / "db37-t-2672-2019.yaml")
    registry.sync_clauses(conn, [quota_file], actor="test", now=kit.local(2023, 1, 1))
