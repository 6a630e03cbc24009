"""Quota burn-down: budget to date, linear forecast and status, by hand."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from energy.quotas import quota_statuses
from rules.clause import ClauseVersion

pytestmark = pytest.mark.integration


def quota(budget: float, **check: Any) -> ClauseVersion:
    return ClauseVersion.model_validate(
        {
            "id": "energy.monthly",
            "version": 1,
            "effective_from": "2026-01-01",
            "number": "example",
            "title": "monthly electricity budget",
            "domain": "energy",
            "confidence": "C",
            "applies_to": {"devices": ["em-main"]},
            "check": {
                "kind": "quota",
                "metric": "energy_kwh",
                "period": "month",
                "budget": budget,
                "forecast_after": 0.2,
                **check,
            },
        }
    )


def test_budget_to_date_forecast_and_status(conn: psycopg.Connection[Any], kit: Any) -> None:
    site = kit.make_site()
    start = kit.local(2026, 7, 1)
    # 10 kWh per hour for the first 10 days: 2400 kWh at 07-11 00:00.
    kit.insert_readings(
        conn,
        site,
        "em-main",
        "energy_kwh",
        [(start + dt.timedelta(hours=h), 10.0 * h) for h in range(241)],
    )
    at = kit.local(2026, 7, 11)

    [ok] = quota_statuses(conn, site, [quota(8000)], at)
    assert ok.consumed == Decimal(2400)
    assert ok.elapsed_share == Decimal(10) / Decimal(31)
    assert ok.forecast == Decimal(7440)  # 2400 x 31 / 10
    assert ok.status == "ok"
    assert len(ok.curve) == 10 and ok.curve[-1][1] == Decimal(2400)
    assert ok.missing_hours == 0

    [warn] = quota_statuses(conn, site, [quota(7000)], at)
    assert warn.status == "forecast_overrun"
    assert round(warn.budget_to_date, 3) == Decimal("2258.065")  # 7000 x 10 / 31

    [breach] = quota_statuses(conn, site, [quota(2000)], at)
    assert breach.status == "breach"

    # Too early in the period for a forecast to count (forecast_after 0.5): no warning.
    [early] = quota_statuses(conn, site, [quota(7000, forecast_after=0.5)], at)
    assert early.status == "ok"


def test_budget_per_m2_uses_the_meter_space_area(conn: psycopg.Connection[Any], kit: Any) -> None:
    site = kit.make_site()
    clause = quota(1).model_copy(
        update={"check": quota(1).check.model_copy(update={"budget": None, "budget_per_m2": 5.0})}
    )
    [status] = quota_statuses(conn, site, [clause], kit.local(2026, 7, 11))
    assert status.budget == Decimal(5000)  # 5 kWh/m2 x 1000 m2 (the building em-main is in)
    assert status.consumed == 0 and status.status == "ok"
    assert status.missing_hours == 240  # no readings at all: 10 days without data
