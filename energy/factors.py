"""Emission factors as data, and the standard-coal coefficients.

Factors live in the `emission_factors` table (seeded from config/bundled/emission-factors.csv
by migration 0051; an admin adds more with `clausewatch energy factor add`, the API or plain SQL).
A factor is identified by carrier, series, region, data year and variant. A report picks, for each
calendar year of its period, the factor of that data year or else the latest earlier one, from one
series per carrier (never mixing series), and states which one it used.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict

from config import BUNDLED_DIR
from energy.notes import Note, join

# The unit every report counts a carrier in (meters and refuel events are converted to it).
ACTIVITY_UNIT: dict[str, str] = {
    "electricity": "kWh",
    "natural_gas": "m3",
    "water": "m3",
    "heat": "GJ",
    "gasoline": "kg",
    "diesel": "kg",
}

# GB/T 2589-2020 standard coal coefficients, kgce per activity unit (confidence B, see
# shared/domain/clauses.md). Heat is 0.03412 kgce/MJ = 34.12 kgce/GJ. Water is not energy.
KGCE_PER_UNIT: dict[str, Decimal] = {
    "electricity": Decimal("0.1229"),
    "natural_gas": Decimal("1.2143"),
    "heat": Decimal("34.12"),
    "gasoline": Decimal("1.4714"),
    "diesel": Decimal("1.4571"),
}
KGCE_SOURCE = "GB/T 2589-2020"

# Scope 1: fuels burnt on site and by the fleet; scope 2: purchased electricity and heat.
SCOPE: dict[str, int] = {"natural_gas": 1, "gasoline": 1, "diesel": 1, "electricity": 2, "heat": 2}

# Units a meter may be registered in, or a bill given in: (unit, report unit) -> exact scale.
# Heat may come in kWh/MWh (1 kWh = 3.6 MJ exactly); water by mass is not converted.
UNIT_SCALE: dict[tuple[str, str], Decimal] = {
    ("kWh", "kWh"): Decimal(1),
    ("MWh", "kWh"): Decimal(1000),
    ("Wh", "kWh"): Decimal("0.001"),
    ("m3", "m3"): Decimal(1),
    ("m³", "m3"): Decimal(1),
    ("GJ", "GJ"): Decimal(1),
    ("MJ", "GJ"): Decimal("0.001"),
    ("kWh", "GJ"): Decimal("0.0036"),
    ("MWh", "GJ"): Decimal("3.6"),
    ("kg", "kg"): Decimal(1),
    ("t", "kg"): Decimal(1000),
}

# The series a carrier's factor comes from when the site does not choose one (site_energy_settings).
# Electricity has no default here: the site model names it (SiteInfo.emission_series).
DEFAULT_SERIES: dict[str, str] = {
    "natural_gas": "ndrc_defaults",
    "gasoline": "ndrc_defaults",
    "diesel": "ndrc_defaults",
    "heat": "ndrc_public_building_2015",
}

ALL_IN = "all-in"
# The MEE-NBS variant for electricity bought after market-traded green power is taken out: the
# residual mix that market-based scope 2 uses for the kWh that are not green.
RESIDUAL = "excluding market-traded non-fossil"

# kg CO2 per activity unit for one unit of the factor's stated unit, per activity unit.
_KG_PER_ACTIVITY: dict[tuple[str, str], Decimal] = {
    ("tCO2/MWh", "kWh"): Decimal(1),
    ("kgCO2/kWh", "kWh"): Decimal(1),
    ("tCO2/GJ", "GJ"): Decimal(1000),
    ("kgCO2/GJ", "GJ"): Decimal(1),
    ("kgCO2/m3", "m3"): Decimal(1),
    ("tCO2/t", "kg"): Decimal(1),
    ("kgCO2/kg", "kg"): Decimal(1),
}


class FactorError(ValueError):
    """No usable factor: the report cannot be computed without mixing series or guessing."""


class EmissionFactor(BaseModel):
    """A published emission factor, as stored and as the API lists it."""

    model_config = ConfigDict(frozen=True)

    carrier: str
    series: str
    region: str
    data_year: int
    value: Decimal
    unit: str
    variant: str
    instrument: str
    confidence: str

    @property
    def kg_per_unit(self) -> Decimal:
        """kg CO2 per activity unit of the carrier (per kWh, m3, GJ, kg)."""
        key = (self.unit, ACTIVITY_UNIT[self.carrier])
        if key not in _KG_PER_ACTIVITY:
            raise FactorError(f"factor unit {self.unit} does not fit carrier {self.carrier}")
        return self.value * _KG_PER_ACTIVITY[key]


@dataclass(frozen=True, slots=True)
class FactorChoice:
    factor: EmissionFactor
    year: int  # the calendar year of the report it applies to
    note: Note  # why this one, when it is not the obvious match (empty otherwise)


def choose_factor(
    factors: Iterable[EmissionFactor],
    *,
    carrier: str,
    series: str,
    region: str,
    year: int,
    variant: str | None = None,
) -> FactorChoice:
    """The factor for `year`: the site's region first, then the same series' national figure;
    within each, that data year or the latest earlier one. `variant` None accepts any variant;
    between two of one year it takes "all-in", else refuses to choose. Raises FactorError when
    nothing fits."""
    in_series = [f for f in factors if f.carrier == carrier and f.series == series]
    if not in_series:
        raise FactorError(f"series {series!r} has no {carrier} factor; add one or choose a series")
    candidates = [
        f for f in in_series if (variant is None or f.variant == variant) and f.data_year <= year
    ]
    for where in (region, "national"):
        local = [f for f in candidates if f.region == where]
        if not local:
            continue
        newest = max(f.data_year for f in local)
        best = [f for f in local if f.data_year == newest]
        if len(best) > 1 and variant is None:
            # The default variant settles a tie (an admin's plain correction of a figure).
            best = [f for f in best if f.variant == ALL_IN] or best
        if len(best) > 1:
            raise FactorError(
                f"{series} has {len(best)} {carrier} factors for {where} {newest}; "
                f"name the variant ({', '.join(sorted(f.variant for f in best))})"
            )
        notes = []
        if where != region:
            notes.append(
                Note(
                    f"{series} 无 {region} {year} 年或更早的因子，采用同一系列的全国因子",
                    f"no {region} factor of {series} for {year} or earlier; "
                    "used the same series' national factor",
                )
            )
        if newest != year:
            notes.append(
                Note(
                    f"数据年份 {newest}，为不晚于 {year} 年的最新数据",
                    f"data year {newest}, the latest not after {year}",
                )
            )
        return FactorChoice(best[0], year, join(notes))
    raise FactorError(
        f"series {series!r} has no {variant or 'usable'} {carrier} factor for {region} or "
        f"national with data year {year} or earlier"
    )


# ---- storage ----

_COLUMNS = "carrier, series, region, data_year, value, unit, variant, instrument, confidence"


def load_factors(
    conn: psycopg.Connection, carriers: Sequence[str] | None = None
) -> list[EmissionFactor]:
    """Every stored factor (of `carriers` when given)."""
    query = f"SELECT {_COLUMNS} FROM emission_factors"
    params: list[object] = []
    if carriers is not None:
        query += " WHERE carrier = ANY(%s)"
        params.append(list(carriers))
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query + " ORDER BY carrier, series, region, data_year", params)
        return [EmissionFactor(**row) for row in rows.fetchall()]


def add_factor(conn: psycopg.Connection, factor: EmissionFactor, *, added_by: str) -> bool:
    """Stores a factor; False when one with the same key (carrier, series, region, data year,
    variant) exists already: a published factor is never overwritten, add a new variant instead.
    Does not commit."""
    validate_factor(factor)
    cur = conn.execute(
        f"INSERT INTO emission_factors ({_COLUMNS}, added_by)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (
            factor.carrier,
            factor.series,
            factor.region,
            factor.data_year,
            factor.value,
            factor.unit,
            factor.variant,
            factor.instrument,
            factor.confidence,
            added_by,
        ),
    )
    return cur.rowcount == 1


def validate_factor(factor: EmissionFactor) -> None:
    if factor.carrier not in SCOPE:
        raise FactorError(f"carrier must be one of {sorted(SCOPE)}, not {factor.carrier!r}")
    if factor.value <= 0:
        raise FactorError("a factor must be positive")
    factor.kg_per_unit  # noqa: B018 - raises when the unit does not fit the carrier


def read_factor_csv(path: Path) -> list[EmissionFactor]:
    """The shipped factor file (same columns as shared/domain/emission-factors.csv)."""
    with path.open(newline="", encoding="utf-8") as handle:
        return [
            EmissionFactor(
                carrier=row["carrier"],
                series=row["series"],
                region=row["region"],
                data_year=int(row["data_year"]),
                value=Decimal(row["value"]),
                unit=row["unit"],
                variant=row["variant"],
                instrument=row["instrument"],
                confidence=row["confidence"],
            )
            for row in csv.DictReader(handle)
        ]


SHIPPED_FACTORS = BUNDLED_DIR / "emission-factors.csv"
