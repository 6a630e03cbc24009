"""A period's energy, carbon and operating cost in a few figures, as plain data: what the
annual self-evaluation report (compliance/reports.py) shows beside the compliance figures. The
composition root and the API hand `period_figures` to the report (the two packages are siblings
and do not import each other); the full report is `GET /carbon` for the same period."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg

from energy.costs import cost_report
from energy.render import carbon_out
from energy.reports import carbon_report, load_site_model


def period_figures(
    conn: psycopg.Connection[Any], site: str, since: dt.datetime, until: dt.datetime
) -> dict[str, Any]:
    """The site's energy (kgce), location-based t CO2 and cost (yuan) of [since, until), per
    carrier, per m2 and per person, with the report's notes. Raises energy.reports.ReportError
    (a ValueError) when the report cannot be made."""
    model = load_site_model(conn, site)
    report = carbon_report(conn, model, since, until)
    out = carbon_out(report, cost_report(conn, model, report))
    cost = out.cost
    assert cost is not None
    costs = {c.carrier: c for c in cost.carriers}
    return {
        "kgce": out.kgce,
        "total_location_tco2": out.total_location_tco2,
        "area_m2": out.intensity.area_m2,
        "occupants": out.intensity.occupants,
        "kgce_per_m2": out.intensity.kgce_per_m2,
        "kgce_per_person": out.intensity.kgce_per_person,
        "cost": cost.total,
        "cost_billed": cost.billed,
        "cost_estimated": cost.estimated,
        "cost_per_m2": cost.per_m2,
        "cost_per_person": cost.per_person,
        "carriers": [
            {
                "carrier": c.carrier,
                "unit": c.unit,
                "consumption": c.consumption,
                "kgce": c.kgce,
                "tco2": c.location_tco2,
                "cost": costs[c.carrier].cost if c.carrier in costs else None,
                "cost_estimated": costs[c.carrier].estimated_cost if c.carrier in costs else None,
            }
            for c in out.carriers
        ],
        "notes": out.notes + cost.notes,
        "notes_zh": out.notes_zh + cost.notes_zh,
    }
