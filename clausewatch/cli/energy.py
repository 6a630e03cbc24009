"""Command-line entry points of this area (see clausewatch/cli.py):

clausewatch report carbon --site S [--space B] --from D --to D [--format text|csv|json]
clausewatch report energy --site S [--space B] --from D --to D [--bucket month] [--by carrier]
clausewatch energy factor list | add ...
clausewatch energy green-power add --site S --from D --to D --kwh N --instrument I
clausewatch energy import FILE [--dry-run] [--actor A]
clausewatch energy bill withdraw ID --reason TEXT [--actor A]
clausewatch energy tariff list [--site S] | add ... | end ID --last-day D
"""

from __future__ import annotations

import argparse
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING

from clausewatch.cli import Commands
from clausewatch.cli.common import TO_HELP, TO_MOMENT_HELP, database_argument, database_url
from clausewatch.settings import Settings

if TYPE_CHECKING:
    from energy.render import CostOut


def register(commands: Commands) -> None:
    carbon = commands.add("report carbon", "energy, kgce and CO2 of a site or building")
    _period_arguments(carbon)
    carbon.add_argument("--format", choices=("text", "csv", "json"), default="text")
    carbon.set_defaults(func=_report_carbon)

    energy = commands.add("report energy", "consumption per bucket by carrier, meter or space")
    _period_arguments(energy)
    energy.add_argument("--bucket", choices=("hour", "day", "month", "year"), default="month")
    energy.add_argument("--by", choices=("carrier", "meter", "space"), default="carrier")
    energy.add_argument("--format", choices=("csv", "json"), default="csv")
    energy.set_defaults(func=_report_energy)

    listing = commands.add("energy factor list", "the stored emission factors")
    database_argument(listing)
    listing.set_defaults(func=_factor_list)

    add = commands.add("energy factor add", "store a new emission factor (never overwrites)")
    database_argument(add)
    add.add_argument(
        "--carrier",
        required=True,
        choices=("electricity", "natural_gas", "heat", "gasoline", "diesel"),
    )
    add.add_argument("--series", required=True)
    add.add_argument("--region", default="national")
    add.add_argument("--data-year", type=int, required=True)
    add.add_argument("--value", required=True, help="as published, e.g. 0.5306")
    add.add_argument("--unit", required=True, help="tCO2/MWh, tCO2/GJ, kgCO2/m3, tCO2/t, ...")
    add.add_argument("--variant", default="all-in")
    add.add_argument("--instrument", required=True, help="the publication the value comes from")
    add.add_argument("--confidence", required=True, choices=("A", "A/B", "B", "B-", "C"))
    add.add_argument("--added-by", default="cli")
    add.set_defaults(func=_factor_add)

    green = commands.add("energy green-power add", "record green electricity for market-based CO2")
    database_argument(green)
    green.add_argument("--site", required=True)
    green.add_argument("--from", dest="first_day", required=True, help="first day, YYYY-MM-DD")
    green.add_argument("--to", dest="last_day", required=True, help=TO_HELP)
    green.add_argument("--kwh", required=True)
    green.add_argument("--instrument", required=True, choices=("certificate", "contract", "onsite"))
    green.add_argument("--reference", default="")
    green.set_defaults(func=_green_add)

    bills = commands.add(
        "energy import", "import utility bills and manual meter readings (CSV or .xlsx)"
    )
    database_argument(bills)
    bills.add_argument("file", type=Path, help="a .csv or .xlsx file (docs/energy.md, Bills)")
    bills.add_argument(
        "--dry-run", action="store_true", help="check every row and list the errors; store nothing"
    )
    bills.add_argument("--actor", help="who imports, for the ledger (default: cli:<login name>)")
    bills.add_argument(
        "--config", type=Path, help="config directory for site models the database does not have"
    )
    bills.set_defaults(func=_bills_import)

    withdraw = commands.add("energy bill withdraw", "withdraw a bill imported by mistake")
    database_argument(withdraw)
    withdraw.add_argument("id", type=int, help="the bill's id (reports list it)")
    withdraw.add_argument("--reason", required=True, help="why, for the ledger")
    withdraw.add_argument("--actor", help="who, for the ledger (default: cli:<login name>)")
    withdraw.set_defaults(func=_bill_withdraw)

    tariffs = commands.add("energy tariff list", "the stored tariffs (all, or a site's)")
    database_argument(tariffs)
    tariffs.add_argument("--site", help="only the tariffs that may apply to this site")
    tariffs.add_argument("--config", type=Path, help="config directory for the site model")
    tariffs.set_defaults(func=_tariff_list)

    tariff = commands.add("energy tariff add", "store a tariff (price per report unit, yuan)")
    database_argument(tariff)
    tariff.add_argument("--scope", required=True, choices=("site", "org", "region"))
    tariff.add_argument("--id", dest="scope_id", required=True, help="the site, org or region id")
    tariff.add_argument(
        "--carrier", required=True, choices=("electricity", "natural_gas", "water", "heat")
    )
    tariff.add_argument("--from", dest="first_day", required=True, help="first day, YYYY-MM-DD")
    tariff.add_argument("--to", dest="last_day", help=f"{TO_HELP}; default: open, until ended")
    price = tariff.add_mutually_exclusive_group(required=True)
    price.add_argument("--price", help="a flat price, yuan per kWh / m3 / GJ")
    price.add_argument(
        "--band",
        action="append",
        metavar="BAND=HH:MM-HH:MM@PRICE",
        help="a time-of-use period (electricity; repeat to cover the day), "
        "e.g. peak=08:00-11:00@1.1",
    )
    tariff.add_argument("--source", default="", help="the price notice it comes from")
    tariff.add_argument("--actor", help="who adds it (default: cli:<login name>)")
    tariff.set_defaults(func=_tariff_add)

    end = commands.add("energy tariff end", "end an open tariff before a new price follows")
    database_argument(end)
    end.add_argument("id", type=int)
    end.add_argument("--last-day", required=True, help="its last day, YYYY-MM-DD")
    end.set_defaults(func=_tariff_end)


def _period_arguments(parser: argparse.ArgumentParser) -> None:
    database_argument(parser)
    parser.add_argument("--site", required=True)
    parser.add_argument("--space", help="a building or other space (default: the whole site)")
    parser.add_argument(
        "--from",
        dest="since",
        required=True,
        help="start: a date (site-local midnight) or ISO datetime with offset",
    )
    parser.add_argument(
        "--to",
        dest="until",
        required=True,
        help=TO_MOMENT_HELP,
    )
    parser.add_argument(
        "--config", type=Path, help="config directory for the site model when the database has none"
    )


def _connect(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from store.pool import connect

    return connect(database_url(args))


def _report_carbon(args: argparse.Namespace) -> int:
    from energy.costs import cost_or_note
    from energy.render import carbon_csv, carbon_out
    from energy.reports import (
        ReportError,
        carbon_report,
        load_site_model,
        parse_end,
        parse_moment,
    )

    with _connect(args) as conn:
        try:
            site = load_site_model(conn, args.site, args.config or Settings().config_dir)
            report = carbon_report(
                conn,
                site,
                parse_moment(args.since, site),
                parse_end(args.until, site),
                space=args.space,
            )
        except ReportError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        cost = cost_or_note(conn, site, report)
    if args.format == "csv":
        sys.stdout.write(carbon_csv(report, cost))
    elif args.format == "json":
        sys.stdout.write(carbon_out(report, cost).model_dump_json(indent=2) + "\n")
    else:
        sys.stdout.write(_text(carbon_csv(report, cost)))
    return 0


def _text(csv_text: str) -> str:
    """The CSV rows as aligned text for a terminal (monthly and meter detail left to CSV)."""
    import csv
    import io

    rows = list(csv.reader(io.StringIO(csv_text)))[1:]
    lines = []
    for section, key, item, value, unit, detail in rows:
        if section in ("month", "cost month"):
            continue
        label = f"{section:<11} {key:<28} {item:<34}"
        text = f"{label} {value:>16} {unit:<16} {detail}".rstrip()
        lines.append(text)
    return "\n".join(lines) + "\n"


def _report_energy(args: argparse.Namespace) -> int:
    from energy.costs import cost_report
    from energy.render import cost_out, energy_csv, energy_out
    from energy.reports import (
        CALENDAR_AFFECTS,
        ReportError,
        area_and_occupants,
        calendar_notes,
        carbon_report,
        energy_series,
        load_site_model,
        parse_end,
        parse_moment,
    )

    with _connect(args) as conn:
        try:
            site = load_site_model(conn, args.site, args.config or Settings().config_dir)
            since, until = parse_moment(args.since, site), parse_end(args.until, site)
            series = energy_series(
                conn, site, since, until, args.bucket, space=args.space, by=args.by
            )
            area_and_occupants(site, args.space)
        except ReportError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        # the period's operating cost beside the series; the series stands without it
        try:
            costs = cost_report(
                conn, site, carbon_report(conn, site, since, until, space=args.space)
            )
        except ReportError as exc:
            costs = None
            print(f"cost: not computed: {exc}", file=sys.stderr)
    # The series has no notes section: a missing holiday schedule goes to stderr, beside it,
    # and so do the bills its meters measure (bill, metered, difference).
    for note in calendar_notes(site, since, until):
        print(f"警告：{note.message_zh}；{CALENDAR_AFFECTS.zh}", file=sys.stderr)
        print(f"warning: {note.message}; {CALENDAR_AFFECTS.en}", file=sys.stderr)
    for line in energy_out(site, args.space, (since, until), args.bucket, args.by, series).bills:
        if line.metered is not None:
            print(
                f"bill {line.kind} {line.carrier} {line.device or line.space or site.site.id} "
                f"{line.first_day}..{line.last_day}: bill {line.amount} {line.unit}, metered "
                f"{line.metered} ({' + '.join(line.meters)}), metered - bill {line.difference}"
                f" ({line.difference_pct} %)",
                file=sys.stderr,
            )
    # and the operating cost of the period (yuan; the carbon report has it in full)
    if costs is not None:
        _print_cost(cost_out(costs, site.site.timezone))
    if args.format == "csv":
        sys.stdout.write(energy_csv(series[0], site.site.timezone))
        return 0
    document = energy_out(site, args.space, (since, until), args.bucket, args.by, series)
    sys.stdout.write(document.model_dump_json(indent=2) + "\n")
    return 0


def _print_cost(cost: CostOut) -> None:
    print(
        f"成本 cost {cost.total} yuan (billed {cost.billed}, estimated {cost.estimated}); "
        f"per m2 {cost.per_m2}, per person {cost.per_person}",
        file=sys.stderr,
    )
    for c in cost.carriers:
        print(
            f"cost {c.carrier} {c.cost} yuan for {c.consumption} {c.unit} (billed "
            f"{c.billed_cost}, estimated {c.estimated_cost}"
            + "".join(f"; {b.band} {b.consumption} {c.unit} {b.cost}" for b in c.bands)
            + ")",
            file=sys.stderr,
        )
    for text in cost.notes:
        print(f"cost: {text}", file=sys.stderr)


def _factor_list(args: argparse.Namespace) -> int:
    from energy.factors import load_factors

    with _connect(args) as conn:
        for f in load_factors(conn):
            print(
                f"{f.carrier:<12} {f.series:<26} {f.region:<16} {f.data_year} {f.value:>8} "
                f"{f.unit:<9} {f.variant} | {f.instrument} | {f.confidence}"
            )
    return 0


def _factor_add(args: argparse.Namespace) -> int:
    from energy.factors import EmissionFactor, FactorError, add_factor

    try:
        factor = EmissionFactor(
            carrier=args.carrier,
            series=args.series,
            region=args.region,
            data_year=args.data_year,
            value=Decimal(args.value),
            unit=args.unit,
            variant=args.variant,
            instrument=args.instrument,
            confidence=args.confidence,
        )
    except InvalidOperation:
        print(f"error: value {args.value!r} is not a number", file=sys.stderr)
        return 2
    with _connect(args) as conn:
        try:
            added = add_factor(conn, factor, added_by=args.added_by)
        except FactorError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        conn.commit()
    if not added:
        print(
            "error: that factor exists already (published factors are never overwritten)",
            file=sys.stderr,
        )
        return 1
    print(f"added {factor.carrier} {factor.series} {factor.region} {factor.data_year}")
    return 0


def _tariff_list(args: argparse.Namespace) -> int:
    from energy.costs import load_tariffs
    from energy.reports import ReportError, load_site_model

    with _connect(args) as conn:
        try:
            site = (
                load_site_model(conn, args.site, args.config or Settings().config_dir)
                if args.site
                else None
            )
        except ReportError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for t in load_tariffs(conn, site):
            price = (
                t.price
                if t.price is not None
                else "; ".join(f"{b.band} {b.start}-{b.end} {b.price}" for b in t.bands)
            )
            print(
                f"{t.id:>5} {t.scope:<6} {t.scope_id:<16} {t.carrier:<12} {t.first_day}.."
                f"{t.last_day or '':<10} {price} {t.unit} | {t.source}"
            )
    return 0


def _tariff_add(args: argparse.Namespace) -> int:
    import getpass
    import re

    from pydantic import ValidationError

    from energy.costs import Band, Tariff, TariffError, add_tariff

    bands = []
    for text in args.band or ():
        match = re.fullmatch(r"(\w+)=(\d\d:\d\d)-(\d\d:\d\d)@(.+)", text)
        if match is None:
            print(f"error: --band {text!r}: BAND=HH:MM-HH:MM@PRICE, please", file=sys.stderr)
            return 2
        name, start, stop, price = match.groups()
        bands.append({"band": name, "start": start, "end": stop, "price": price})
    try:
        tariff = Tariff.model_validate(
            {
                "scope": args.scope,
                "scope_id": args.scope_id,
                "carrier": args.carrier,
                "first_day": args.first_day,
                "last_day": args.last_day,
                "price": args.price,
                "bands": [Band.model_validate(b) for b in bands],
                "source": args.source,
            }
        )
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"])
            print(f"error: {where}: {error['msg']}", file=sys.stderr)
        return 2
    with _connect(args) as conn:
        try:
            added = add_tariff(conn, tariff, added_by=args.actor or f"cli:{getpass.getuser()}")
        except TariffError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        conn.commit()
    print(f"added tariff {added.id}: {added.scope} {added.scope_id} {added.carrier}")
    return 0


def _tariff_end(args: argparse.Namespace) -> int:
    import datetime as dt

    from energy.costs import end_tariff

    try:
        last = dt.date.fromisoformat(args.last_day)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with _connect(args) as conn:
        if not end_tariff(conn, args.id, last):
            print(
                "error: no open tariff with that id starts on or before that day", file=sys.stderr
            )
            return 1
        conn.commit()
    print(f"tariff {args.id} ends on {last}")
    return 0


def _green_add(args: argparse.Namespace) -> int:
    import datetime as dt

    try:
        first = dt.date.fromisoformat(args.first_day)
        last = dt.date.fromisoformat(args.last_day)
        kwh = Decimal(args.kwh)
    except (ValueError, InvalidOperation) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if last < first or kwh <= 0:
        print("error: --to must not be before --from and --kwh must be positive", file=sys.stderr)
        return 2
    with _connect(args) as conn:
        conn.execute(
            "INSERT INTO green_power (site, first_day, last_day, kwh, instrument, reference)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (args.site, first, last, kwh, args.instrument, args.reference),
        )
        conn.commit()
    print(f"recorded {kwh} kWh of green power for {args.site}, {first} to {last}")
    return 0


def _bills_import(args: argparse.Namespace) -> int:
    import datetime as dt
    import getpass

    from psycopg.errors import UniqueViolation

    from energy.bills import MAX_FILE_BYTES, ImportError_, import_bills
    from energy.reports import ReportError, load_site_model
    from rules.site import SiteModel

    path: Path = args.file
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            print(f"error: {path} is over {MAX_FILE_BYTES} bytes; split it", file=sys.stderr)
            return 2
        data = path.read_bytes()
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    actor = args.actor or f"cli:{getpass.getuser()}"
    config_dir = args.config or Settings().config_dir
    with _connect(args) as conn:
        models: dict[str, SiteModel | None] = {}

        def site_model(site_id: str) -> SiteModel | None:
            if site_id not in models:
                try:
                    models[site_id] = load_site_model(conn, site_id, config_dir)
                except ReportError:
                    models[site_id] = None
            return models[site_id]

        try:
            result = import_bills(
                conn,
                path.name,
                data,
                site_model,
                actor=actor,
                now=dt.datetime.now(dt.UTC),
                dry_run=args.dry_run,
            )
        except ImportError_ as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            return 2
        except UniqueViolation:
            print(
                "error: another import of these bills ran at the same time; retry", file=sys.stderr
            )
            return 1
        if result.applied:
            conn.commit()
    for error in result.errors:
        print(f"error: {path.name}: {error}", file=sys.stderr)
    for change in result.changes:
        where = change.device or change.space or change.site
        print(
            f"{change.action:<9} {change.site} {change.carrier} {where} "
            f"{change.first_day}..{change.last_day} {change.kind} {change.quantity} {change.unit}"
            + (
                f" (was {change.previous['quantity']} {change.previous['unit']})"
                if change.previous
                else ""
            )
        )
    state = (
        "dry run, nothing stored"
        if args.dry_run
        else ("stored" if result.applied else "nothing stored (fix the errors)")
    )
    print(
        f"{result.rows} rows: {result.new} new, {result.corrected} corrected, "
        f"{result.unchanged} unchanged, {len(result.errors)} errors; {state}"
    )
    return 1 if result.errors else 0


def _bill_withdraw(args: argparse.Namespace) -> int:
    import datetime as dt
    import getpass

    from energy.bills import withdraw_bill

    actor = args.actor or f"cli:{getpass.getuser()}"
    with _connect(args) as conn:
        bill = withdraw_bill(
            conn, args.id, actor=actor, reason=args.reason, now=dt.datetime.now(dt.UTC)
        )
        if bill is None:
            print(f"error: no current bill {args.id}", file=sys.stderr)
            return 1
        conn.commit()
    print(
        f"withdrew bill {bill.id}: {bill.site} {bill.carrier} {bill.first_day}..{bill.last_day} "
        f"{bill.quantity} {bill.unit}"
    )
    return 0
