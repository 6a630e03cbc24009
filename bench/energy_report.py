"""How long a carbon report takes for a year of 15-minute meter readings of the demo site.

    .venv/bin/python bench/energy_report.py [postgresql://postgres@127.0.0.1:5432/postgres]

Creates a scratch database, stores 365 days x 96 readings for each of the demo site's five
meters through the storage writer, times `carbon_report` (whole year, monthly buckets),
`cost_report` on it (a five-period time-of-use electricity tariff, flat gas, water and heat:
every meter measured again at each period boundary of the year) and `energy_series` (one month,
hourly), and drops the database.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from decimal import Decimal

import harness

from config import BUNDLED_DIR
from config.files import load_config_dir
from energy.costs import Band, Tariff, add_tariff, cost_report
from energy.reports import carbon_report, energy_series, site_meters
from store.batches import ReadingRow, write_readings
from store.migrate import migrate
from store.pool import connect


def main(server: str) -> None:
    with harness.scratch_database(server, "cw_bench") as url:
        migrate(url)
        site = load_config_dir(BUNDLED_DIR).sites["demo-hq"]
        zone = site.zone()
        start = dt.datetime(2026, 1, 1, tzinfo=zone)
        steps = 365 * 96
        with connect(url) as conn:
            began = time.perf_counter()
            for meter in site_meters(site):
                rows = [
                    ReadingRow(
                        site.site.id,
                        meter.device,
                        meter.metric,
                        start.timestamp() + i * 900.0,
                        i * 1.25,
                        None,
                        0.0,
                    )
                    for i in range(steps + 1)
                ]
                write_readings(conn, rows)
            bands = (
                ("valley", "00:00", "08:00", "0.3"), ("flat", "08:00", "10:00", "0.6"),
                ("peak", "10:00", "12:00", "1.0"), ("sharp", "12:00", "14:00", "1.2"),
                ("flat", "14:00", "24:00", "0.6"),
            )  # fmt: skip
            first = dt.date(2026, 1, 1)
            add_tariff(
                conn,
                Tariff(scope="site", scope_id="demo-hq", carrier="electricity", first_day=first,
                       bands=tuple(Band(band=b, start=s, end=e, price=Decimal(p))
                                   for b, s, e, p in bands)),
                added_by="bench",
            )  # fmt: skip
            for carrier in ("natural_gas", "water", "heat"):
                add_tariff(
                    conn,
                    Tariff(scope="site", scope_id="demo-hq", carrier=carrier, first_day=first,
                           price=Decimal("3.5")),
                    added_by="bench",
                )  # fmt: skip
            conn.commit()
            year = carbon_report(conn, site, start, dt.datetime(2027, 1, 1, tzinfo=zone))
            print(f"stored {5 * (steps + 1)} readings in {time.perf_counter() - began:.1f} s")
            for label, call in (
                (
                    "carbon report, one year, 5 meters",
                    lambda: carbon_report(conn, site, start, dt.datetime(2027, 1, 1, tzinfo=zone)),
                ),
                (
                    "cost report of that year, time-of-use electricity",
                    lambda: cost_report(conn, site, year),
                ),
                (
                    "energy series, one month hourly, by meter",
                    lambda: energy_series(
                        conn, site, start, dt.datetime(2026, 2, 1, tzinfo=zone), "hour", by="meter"
                    ),
                ),
            ):
                timings = []
                for _ in range(3):
                    began = time.perf_counter()
                    call()
                    timings.append(time.perf_counter() - began)
                print(f"{label}: best {min(timings):.2f} s of 3")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "postgresql://postgres@127.0.0.1:5432/postgres")
