"""A migrated database for the energy tests and a small site to account for."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from rules.site import SiteModel
from store.batches import EventRow, ReadingRow, write_events, write_readings
from store.migrate import migrate
from store.pool import connect

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="session")
def energy_database_url(database_url: str) -> str:
    migrate(database_url)
    return database_url


@pytest.fixture
def conn(energy_database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with connect(energy_database_url) as connection:
        yield connection


def _local(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=SHANGHAI)  # type: ignore[misc]


def _make_site(
    *, grid_region: str = "north-china", series: str = "mee_nbs_average", max_gap: str = "1h"
) -> SiteModel:
    """One building (1000 m2, 50 people), two floors with electricity sub-meters, gas, water."""
    register = {"cumulative": True, "max_gap": max_gap}
    return SiteModel.model_validate(
        {
            "site": {
                "id": f"s{uuid.uuid4().hex[:10]}",
                "name": "test",
                "timezone": "Asia/Shanghai",
                "grid_region": grid_region,
                "emission_series": series,
            },
            "spaces": [
                {"id": "b", "type": "building", "area_m2": 1000, "occupants": 50},
                {"id": "f1", "type": "floor", "parent": "b", "area_m2": 500, "occupants": 30},
                {"id": "f2", "type": "floor", "parent": "b", "area_m2": 500, "occupants": 20},
            ],
            "devices": [
                {
                    "id": "em-main",
                    "space": "b",
                    "metrics": {
                        "energy_kwh": {"unit": "kWh", "carrier": "electricity", **register}
                    },
                },
                {
                    "id": "em-f1",
                    "space": "f1",
                    "parent": "em-main",
                    "metrics": {
                        "energy_kwh": {"unit": "kWh", "carrier": "electricity", **register}
                    },
                },
                {
                    "id": "em-f2",
                    "space": "f2",
                    "parent": "em-main",
                    "metrics": {
                        "energy_kwh": {"unit": "kWh", "carrier": "electricity", **register}
                    },
                },
                {
                    "id": "gm",
                    "space": "b",
                    "metrics": {"gas_m3": {"unit": "m3", "carrier": "natural_gas", **register}},
                },
                {
                    "id": "wm",
                    "space": "b",
                    "metrics": {"water_m3": {"unit": "m3", "carrier": "water", **register}},
                },
                {"id": "fleet", "space": "b", "kind": "fleet-card", "metrics": {}},
            ],
        }
    )


def _insert_readings(
    conn: psycopg.Connection[Any],
    site: SiteModel,
    device: str,
    metric: str,
    points: list[tuple[dt.datetime, float]],
) -> None:
    """Through the storage writer, as the pipeline would store them."""
    write_readings(
        conn,
        [
            ReadingRow(site.site.id, device, metric, at.timestamp(), value, None, at.timestamp())
            for at, value in points
        ],
    )


def _insert_refuel(
    conn: psycopg.Connection[Any], site: SiteModel, at: dt.datetime, attrs: dict[str, Any]
) -> None:
    write_events(
        conn,
        [
            EventRow(
                site.site.id,
                "fleet",
                at.timestamp(),
                "refuel",
                "b",
                None,
                None,
                attrs,
                at.timestamp(),
            )
        ],
    )


class Kit:
    """Helpers for building a test site and its data (pytest's importlib mode cannot import
    helpers from a conftest, so they come as a fixture)."""

    local = staticmethod(_local)
    make_site = staticmethod(_make_site)
    insert_readings = staticmethod(_insert_readings)
    insert_refuel = staticmethod(_insert_refuel)


@pytest.fixture
def kit() -> type[Kit]:
    return Kit
