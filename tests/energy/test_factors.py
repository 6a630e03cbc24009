"""Choosing emission factors: data year or the latest earlier one, the site's region or the same
series' national figure, never another series; and the shipped data."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import psycopg
import pytest

from energy.factors import (
    ALL_IN,
    SHIPPED_FACTORS,
    EmissionFactor,
    FactorError,
    choose_factor,
    load_factors,
    read_factor_csv,
    validate_factor,
)

SHIPPED = read_factor_csv(SHIPPED_FACTORS)


def choose(series: str, region: str, year: int, carrier: str = "electricity") -> Any:
    variant = ALL_IN if carrier == "electricity" else None
    return choose_factor(
        SHIPPED, carrier=carrier, series=series, region=region, year=year, variant=variant
    )


@pytest.mark.parametrize(
    ("series", "region", "year", "expected", "note"),
    [
        ("mee_nbs_average", "national", 2022, ("national", 2022, "0.5366"), ""),
        ("mee_nbs_average", "national", 2025, ("national", 2023, "0.5306"), "latest not after"),
        ("mee_nbs_average", "north-china", 2023, ("north-china", 2023, "0.6361"), ""),
        ("mee_nbs_average", "north-china", 2022, ("national", 2022, "0.5366"), "national"),
        ("ets_grid_average", "north-china", 2024, ("national", 2022, "0.5703"), "national"),
    ],
)
def test_factor_of_the_year_or_the_latest_earlier(
    series: str, region: str, year: int, expected: tuple[str, int, str], note: str
) -> None:
    chosen = choose(series, region, year)
    f = chosen.factor
    assert (f.series, f.region, f.data_year, f.value) == (
        series,
        *expected[:2],
        Decimal(expected[2]),
    )
    assert (note in chosen.note.en) if note else not chosen.note
    assert bool(chosen.note.zh) == bool(note)  # a Chinese note beside each English one


def test_no_factor_before_the_first_data_year_is_an_error() -> None:
    with pytest.raises(FactorError, match="2020 or earlier"):
        choose("mee_nbs_average", "national", 2020)


def test_a_series_without_the_carrier_is_an_error_not_a_fallback() -> None:
    with pytest.raises(FactorError, match="has no heat factor"):
        choose("mee_nbs_average", "national", 2023, carrier="heat")


def test_units_convert_to_kg_per_activity_unit() -> None:
    heat = choose("ndrc_public_building_2015", "national", 2026, carrier="heat").factor
    assert heat.kg_per_unit == Decimal("110.00")  # 0.11 t/GJ
    diesel = choose("ndrc_defaults", "national", 2026, carrier="diesel").factor
    assert diesel.kg_per_unit == Decimal("3.096")  # t/t = kg/kg
    gas = choose("ndrc_defaults", "national", 2026, carrier="natural_gas").factor
    assert gas.kg_per_unit == Decimal("2.162")


def test_of_two_variants_the_all_in_one_is_the_default() -> None:
    chosen = choose_factor(
        SHIPPED, carrier="electricity", series="mee_nbs_average", region="national", year=2021
    )
    assert (chosen.factor.variant, chosen.factor.value) == (ALL_IN, Decimal("0.5568"))


def test_an_all_in_correction_settles_a_tie_for_other_carriers() -> None:
    correction = EmissionFactor(
        carrier="heat",
        series="ndrc_public_building_2015",
        region="national",
        data_year=2015,
        value=Decimal("0.10"),
        unit="tCO2/GJ",
        variant=ALL_IN,
        instrument="erratum",
        confidence="B",
    )
    chosen = choose_factor(
        [*SHIPPED, correction],
        carrier="heat",
        series="ndrc_public_building_2015",
        region="national",
        year=2026,
    )
    assert chosen.factor is correction
    other = correction.model_copy(
        update={"value": Decimal("0.12"), "variant": "another basis", "confidence": "C"}
    )
    with pytest.raises(FactorError, match="name the variant"):
        choose_factor(
            [*SHIPPED, other],
            carrier="heat",
            series="ndrc_public_building_2015",
            region="national",
            year=2026,
        )


def test_a_unit_that_does_not_fit_the_carrier_is_refused() -> None:
    wrong = EmissionFactor(
        carrier="natural_gas",
        series="x",
        region="national",
        data_year=2024,
        value=Decimal(1),
        unit="tCO2/MWh",
        variant=ALL_IN,
        instrument="test",
        confidence="C",
    )
    with pytest.raises(FactorError, match="does not fit"):
        validate_factor(wrong)


@pytest.mark.integration
def test_the_seed_migration_holds_exactly_the_shipped_csv(
    conn: psycopg.Connection[Any],
) -> None:
    stored = {
        (f.carrier, f.series, f.region, f.data_year, f.variant): f for f in load_factors(conn)
    }
    for factor in SHIPPED:
        assert (
            stored[(factor.carrier, factor.series, factor.region, factor.data_year, factor.variant)]
            == factor
        )
