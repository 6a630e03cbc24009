"""Reports as JSON (pydantic models, the API's response shapes) and as CSV.

Figures are rounded once here (see reports.present) and carried as decimal strings in JSON, so a
client never sees binary floating-point noise and a CSV matches the JSON digit for digit.
"""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal

from pydantic import BaseModel

from config import csvcells
from energy.costs import BAND_LABEL, CostReport, Tariff, yuan
from energy.factors import KGCE_PER_UNIT, SCOPE, EmissionFactor
from energy.notes import NONE, Note, chinese, english, join
from energy.reports import (
    KGCE_NOTE,
    BillLine,
    CarbonReport,
    Comparison,
    Imbalance,
    MeterLine,
    Series,
    SeriesPoint,
    area_and_occupants,
    factor_label,
    present,
)
from rules.holidays import CalendarNote
from rules.site import SiteModel

T_PLACES = 6  # t CO2
Q_PLACES = 3  # activity, kgce, kg CO2
I_PLACES = 4  # intensities


def _d(value: Decimal | None, places: int = Q_PLACES) -> Decimal | None:
    return None if value is None else Decimal(present(value, places))


def _t(kg: Decimal | None) -> Decimal | None:
    return None if kg is None else _d(kg / 1000, T_PLACES)


def _iso(ts: float, zone: str) -> str:
    from zoneinfo import ZoneInfo

    return dt.datetime.fromtimestamp(ts, ZoneInfo(zone)).isoformat()


class FactorOut(EmissionFactor):
    """A factor as a report applied it."""

    purpose: str  # location (scope 2), market (scope 2), scope1
    year: int  # the report year it applies to
    note: str
    note_zh: str


class CarrierOut(BaseModel):
    carrier: str
    unit: str
    consumption: Decimal
    estimated: Decimal  # spread in proportion to time
    billed: Decimal  # from utility bills (no meter measures it)
    manual: Decimal  # from manual readings or estimates (no meter measures it)
    kgce: Decimal | None
    scope: int | None
    location_tco2: Decimal | None
    market_tco2: Decimal | None
    billed_tco2: Decimal | None  # the parts of location_tco2 from billed / manual amounts
    manual_tco2: Decimal | None


class ResetOut(BaseModel):
    at: str
    previous_at: str
    before: Decimal
    after: Decimal


class IntervalOut(BaseModel):
    start: str
    end: str


class MeterOut(BaseModel):
    device: str
    space: str
    metric: str
    carrier: str
    unit: str
    parent: str | None
    counted: bool
    consumption: Decimal
    estimated: Decimal
    readings: int
    resets: list[ResetOut]
    gaps: list[IntervalOut]
    missing: list[IntervalOut]


class ImbalanceOut(BaseModel):
    parent: str
    children: list[str]
    carrier: str
    unit: str
    parent_value: Decimal
    children_value: Decimal
    imbalance: Decimal
    imbalance_pct: Decimal | None


class MonthOut(BaseModel):
    start: str
    end: str
    carrier: str
    consumption: Decimal
    estimated: Decimal
    billed: Decimal
    manual: Decimal
    kgce: Decimal


class BillOut(BaseModel):
    """A bill or manual entry of the period: counted (no meter measures it), or beside the
    meters that do, over the bill's own period, with the difference metered − bill."""

    id: int
    kind: str  # billed | manual (estimated)
    carrier: str
    space: str | None
    device: str | None
    first_day: dt.date
    last_day: dt.date
    quantity: Decimal
    quantity_unit: str
    amount: Decimal  # in `unit`, the carrier's report unit
    unit: str
    cost: Decimal | None  # yuan
    reference: str
    revision: int
    counted: bool
    in_period: Decimal  # the counted part inside the report's period
    meters: list[str]
    metered: Decimal | None
    metered_estimated: Decimal | None
    metered_missing_hours: Decimal | None
    difference: Decimal | None  # metered − bill
    difference_pct: Decimal | None  # of the bill
    note: str
    note_zh: str


def bill_out(line: BillLine) -> BillOut:
    bill, metered = line.bill, line.metered
    return BillOut(
        id=bill.id,
        kind=bill.kind,
        carrier=bill.carrier,
        space=bill.space,
        device=bill.device,
        first_day=bill.first_day,
        last_day=bill.last_day,
        quantity=bill.quantity,
        quantity_unit=bill.unit,
        amount=_d(bill.amount),
        unit=line.unit,
        cost=bill.cost,
        reference=bill.reference,
        revision=bill.revision,
        counted=line.counted,
        in_period=_d(line.in_period),
        meters=list(line.meters),
        metered=_d(metered.total) if metered else None,
        metered_estimated=_d(metered.estimated) if metered else None,
        metered_missing_hours=(
            _d(Decimal(repr(metered.missing_seconds)) / 3600, 2) if metered else None
        ),
        difference=_d(line.difference),
        difference_pct=_d(line.percent, 2),
        note=line.reason.en,
        note_zh=line.reason.zh,
    )


class IntensityOut(BaseModel):
    area_m2: Decimal | None
    occupants: int | None
    kgce_per_m2: Decimal | None
    kgce_per_person: Decimal | None
    kgco2_per_m2: Decimal | None
    kgco2_per_person: Decimal | None
    water_m3_per_person: Decimal | None


class ComparisonOut(BaseModel):
    name: str
    name_zh: str
    unit: str
    annualised_actual: Decimal | None
    limit: Decimal | None
    status: str
    source: str
    note: str
    note_zh: str


def comparison_out(item: Comparison, flagged: Note) -> ComparisonOut:
    """`flagged`: what of the figures came from bills and manual entries (empty: none)."""
    note = join((item.note, flagged))
    return ComparisonOut(
        name=item.name.en,
        name_zh=item.name.zh,
        unit=item.unit,
        annualised_actual=_d(item.actual, I_PLACES),
        limit=_d(item.limit, I_PLACES),
        status=item.status,
        source=item.source,
        note=note.en,
        note_zh=note.zh,
    )


class CarbonReportOut(BaseModel):
    site: str
    space: str | None
    since: dt.datetime
    until: dt.datetime
    timezone: str
    days: Decimal
    carriers: list[CarrierOut]
    kgce: Decimal
    scope1_tco2: Decimal
    scope2_location_tco2: Decimal
    scope2_market_tco2: Decimal | None
    total_location_tco2: Decimal
    total_market_tco2: Decimal | None
    # the parts of kgce and total_location_tco2 from bills and from manual entries (0: all
    # metered); intensities and comparisons include them too (their notes say so)
    billed_kgce: Decimal
    manual_kgce: Decimal
    billed_tco2: Decimal
    manual_tco2: Decimal
    green_kwh: Decimal | None
    intensity: IntensityOut
    comparisons: list[ComparisonOut]
    factors: list[FactorOut]
    kgce_coefficients: str
    kgce_coefficients_zh: str
    meters: list[MeterOut]
    imbalances: list[ImbalanceOut]
    months: list[MonthOut]
    bills: list[BillOut]
    notes: list[str]  # in English; notes_zh the same in Chinese, one for one
    notes_zh: list[str]
    # Days of the period, or the coming year, without the State Council's holiday schedule.
    holiday_calendar: list[CalendarNote]
    # The operating cost (机关运行成本; energy/costs.py): None when not asked for.
    cost: CostOut | None = None


# ---- operating cost (energy/costs.py): yuan with 2 decimals, summed before rounding ----


class BandCostOut(BaseModel):
    band: str  # sharp | peak | flat | valley (a flat tariff: flat)
    label: str
    consumption: Decimal
    cost: Decimal


class CarrierCostOut(BaseModel):
    carrier: str
    unit: str
    consumption: Decimal  # what was priced (meters and counted bills)
    cost: Decimal  # billed_cost + estimated_cost
    billed_cost: Decimal  # bills' costs in the period
    estimated_cost: Decimal  # tariff × the consumption no bill's cost covers
    tariff_estimate: Decimal  # tariff × all the consumption (the bills' part too)
    untariffed: Decimal  # consumption without a tariff in force: not priced
    bands: list[BandCostOut]


class BillCostOut(BaseModel):
    id: int
    carrier: str
    kind: str
    space: str | None
    device: str | None
    first_day: dt.date
    last_day: dt.date
    reference: str
    cost: Decimal  # the bill's cost in the report's period (pro rata in time)
    tariff_estimate: Decimal  # the tariff's price of the same consumption
    difference: Decimal  # cost − tariff_estimate
    difference_pct: Decimal | None  # of the tariff estimate
    untariffed: Decimal


class MonthCostOut(BaseModel):
    start: str
    end: str
    carrier: str
    cost: Decimal
    billed_cost: Decimal
    estimated: bool  # some of it is a tariff estimate


class CostOut(BaseModel):
    currency: str = "CNY"
    total: Decimal
    billed: Decimal
    estimated: Decimal  # the part of total that is a tariff estimate
    area_m2: Decimal | None
    occupants: int | None
    per_m2: Decimal | None  # yuan per m2 of the period
    per_person: Decimal | None  # yuan per person of the period
    carriers: list[CarrierCostOut]
    bills: list[BillCostOut]
    months: list[MonthCostOut]
    tariffs: list[Tariff]
    notes: list[str]  # in English; notes_zh the same in Chinese, one for one
    notes_zh: list[str]


def cost_out(cost: CostReport, zone: str) -> CostOut:
    def money(value: Decimal) -> Decimal:
        result = yuan(value)
        assert result is not None
        return result

    return CostOut(
        total=money(cost.total),
        billed=money(cost.billed),
        estimated=money(cost.estimated),
        area_m2=cost.area_m2,
        occupants=cost.occupants,
        per_m2=yuan(cost.per(cost.area_m2)),
        per_person=yuan(cost.per(cost.occupants)),
        carriers=[
            CarrierCostOut(
                carrier=c.carrier,
                unit=c.unit,
                consumption=_q(c.priced.consumption),
                cost=money(c.cost),
                billed_cost=money(c.billed_cost),
                estimated_cost=money(c.estimated_cost),
                tariff_estimate=money(c.priced.estimate),
                untariffed=_q(c.priced.untariffed),
                bands=[
                    BandCostOut(
                        band=name,
                        label=BAND_LABEL[name],
                        consumption=_q(part.consumption),
                        cost=money(part.cost),
                    )
                    for name, part in sorted(
                        c.priced.bands.items(), key=lambda kv: list(BAND_LABEL).index(kv[0])
                    )
                ],
            )
            for c in sorted(cost.carriers.values(), key=lambda c: c.carrier)
        ],
        bills=[
            BillCostOut(
                id=b.line.bill.id,
                carrier=b.line.bill.carrier,
                kind=b.line.bill.kind,
                space=b.line.bill.space,
                device=b.line.bill.device,
                first_day=b.line.bill.first_day,
                last_day=b.line.bill.last_day,
                reference=b.line.bill.reference,
                cost=money(b.cost),
                tariff_estimate=money(b.estimate),
                difference=money(b.difference),
                difference_pct=_d(b.percent, 2),
                untariffed=_q(b.untariffed),
            )
            for b in cost.bills
        ],
        months=[
            MonthCostOut(
                start=_iso(m.start, zone),
                end=_iso(m.end, zone),
                carrier=m.carrier,
                cost=money(m.cost),
                billed_cost=money(m.billed_cost),
                estimated=m.estimated,
            )
            for m in cost.months
        ],
        tariffs=cost.tariffs,
        notes=english(cost.notes),
        notes_zh=chinese(cost.notes),
    )


def _q(value: Decimal) -> Decimal:
    result = _d(value)
    assert result is not None
    return result


def meter_out(line: MeterLine, zone: str) -> MeterOut:
    result = line.result
    return MeterOut(
        device=line.meter.device,
        space=line.meter.space,
        metric=line.meter.metric,
        carrier=line.meter.carrier,
        unit=line.meter.unit,
        parent=line.meter.parent,
        counted=line.counted,
        consumption=_d(result.total),
        estimated=_d(result.estimated),
        readings=result.readings,
        resets=[
            ResetOut(
                at=_iso(r.ts, zone),
                previous_at=_iso(r.previous_ts, zone),
                before=_d(r.before),
                after=_d(r.after),
            )
            for r in result.resets
        ],
        gaps=[IntervalOut(start=_iso(g.start, zone), end=_iso(g.end, zone)) for g in result.gaps],
        missing=[
            IntervalOut(start=_iso(m.start, zone), end=_iso(m.end, zone)) for m in result.missing
        ],
    )


class EnergyPoint(BaseModel):
    start: dt.datetime
    end: dt.datetime
    key: str
    carrier: str
    unit: str
    value: Decimal
    estimated: Decimal
    billed: Decimal
    manual: Decimal


class EnergyOut(BaseModel):
    """An energy series as `GET /api/v1/energy` and `report energy --format json` give it."""

    site: str
    space: str | None
    since: dt.datetime
    until: dt.datetime
    timezone: str
    bucket: str
    by: str
    area_m2: Decimal | None
    occupants: int | None
    points: list[EnergyPoint]
    meters: list[MeterOut]
    imbalances: list[ImbalanceOut]
    bills: list[BillOut]


def energy_out(
    site: SiteModel,
    space: str | None,
    period: tuple[dt.datetime, dt.datetime],
    bucket: str,
    by: str,
    series: Series,
) -> EnergyOut:
    """The one JSON form of an energy series (the API's and the command line's)."""
    points, lines, imbalances, bills = series
    zone = site.zone()
    timezone = site.site.timezone
    area, occupants = area_and_occupants(site, space)
    return EnergyOut(
        site=site.site.id,
        space=space,
        since=period[0],
        until=period[1],
        timezone=timezone,
        bucket=bucket,
        by=by,
        area_m2=area,
        occupants=occupants,
        points=[
            EnergyPoint(
                start=dt.datetime.fromtimestamp(p.start, zone),
                end=dt.datetime.fromtimestamp(p.end, zone),
                key=p.key,
                carrier=p.carrier,
                unit=p.unit,
                value=Decimal(present(p.value)),
                estimated=Decimal(present(p.estimated)),
                billed=Decimal(present(p.billed)),
                manual=Decimal(present(p.manual)),
            )
            for p in points
        ],
        meters=[meter_out(line, timezone) for line in lines],
        imbalances=[imbalance_out(i) for i in imbalances],
        bills=[bill_out(b) for b in bills],
    )


def imbalance_out(item: Imbalance) -> ImbalanceOut:
    return ImbalanceOut(
        parent=item.parent,
        children=list(item.children),
        carrier=item.carrier,
        unit=item.unit,
        parent_value=_d(item.parent_value),
        children_value=_d(item.children_value),
        imbalance=_d(item.difference),
        imbalance_pct=_d(item.percent, 2),
    )


def carbon_out(report: CarbonReport, cost: CostReport | None = None) -> CarbonReportOut:
    zone = report.timezone
    coal = [(c, KGCE_PER_UNIT.get(c.carrier, Decimal(0))) for c in report.carriers.values()]
    billed_kgce = sum((c.billed * k for c, k in coal), Decimal(0))
    manual_kgce = sum((c.manual * k for c, k in coal), Decimal(0))
    flagged = NONE
    if billed_kgce or manual_kgce:
        billed, manual = present(billed_kgce), present(manual_kgce)
        flagged = Note(
            f"含账单 {billed} kgce 和手工/估计 {manual} kgce",
            f"includes billed {billed} kgce and manual (estimated) {manual} kgce",
        )
    scope1 = report.scope_kgco2(1) or Decimal(0)
    scope2 = report.scope_kgco2(2) or Decimal(0)
    scope2_market = report.scope_kgco2(2, market=True) if report.green_kwh is not None else None
    return CarbonReportOut(
        site=report.site,
        space=report.space,
        since=report.since,
        until=report.until,
        timezone=zone,
        days=_d(report.days, 4),
        carriers=[
            CarrierOut(
                carrier=c.carrier,
                unit=c.unit,
                consumption=_d(c.consumption),
                estimated=_d(c.estimated),
                kgce=_d(c.kgce) if c.carrier in KGCE_PER_UNIT else None,
                scope=SCOPE.get(c.carrier),
                location_tco2=_t(c.location_kgco2) if c.carrier in SCOPE else None,
                market_tco2=_t(c.market_kgco2),
                billed=_d(c.billed),
                manual=_d(c.manual),
                billed_tco2=_t(c.billed_kgco2) if c.carrier in SCOPE else None,
                manual_tco2=_t(c.manual_kgco2) if c.carrier in SCOPE else None,
            )
            for c in sorted(report.carriers.values(), key=lambda c: c.carrier)
        ],
        kgce=_d(report.kgce),
        scope1_tco2=_t(scope1),
        scope2_location_tco2=_t(scope2),
        scope2_market_tco2=_t(scope2_market),
        total_location_tco2=_t(scope1 + scope2),
        total_market_tco2=_t(scope1 + scope2_market) if scope2_market is not None else None,
        billed_kgce=_d(billed_kgce),
        manual_kgce=_d(manual_kgce),
        billed_tco2=_t(sum((c.billed_kgco2 for c in report.carriers.values()), Decimal(0))),
        manual_tco2=_t(sum((c.manual_kgco2 for c in report.carriers.values()), Decimal(0))),
        green_kwh=_d(report.green_kwh),
        intensity=IntensityOut(
            area_m2=report.area_m2,
            occupants=report.occupants,
            kgce_per_m2=_d(report.per(report.kgce, report.area_m2), I_PLACES),
            kgce_per_person=_d(report.per(report.kgce, report.occupants), I_PLACES),
            kgco2_per_m2=_d(report.per(report.location_kgco2, report.area_m2), I_PLACES),
            kgco2_per_person=_d(report.per(report.location_kgco2, report.occupants), I_PLACES),
            water_m3_per_person=_d(report.per(report.water_m3, report.occupants), I_PLACES),
        ),
        comparisons=[comparison_out(c, flagged) for c in report.comparisons],
        factors=[
            FactorOut(
                **ch.factor.model_dump(),
                purpose=purpose,
                year=ch.year,
                note=ch.note.en,
                note_zh=ch.note.zh,
            )
            for purpose, ch in report.factors
        ],
        kgce_coefficients=KGCE_NOTE.en,
        kgce_coefficients_zh=KGCE_NOTE.zh,
        meters=[meter_out(line, zone) for line in report.meters],
        imbalances=[imbalance_out(i) for i in report.imbalances],
        months=[
            MonthOut(
                start=_iso(m.start, zone),
                end=_iso(m.end, zone),
                carrier=m.carrier,
                consumption=_d(m.consumption),
                estimated=_d(m.estimated),
                billed=_d(m.billed),
                manual=_d(m.manual),
                kgce=_d(m.kgce),
            )
            for m in report.months
        ],
        bills=[bill_out(b) for b in report.bills],
        notes=english(report.notes),
        notes_zh=chinese(report.notes),
        holiday_calendar=report.holiday_calendar,
        cost=None if cost is None else cost_out(cost, zone),
    )


CSV_HEADER = ("section", "key", "item", "value", "unit", "detail")


def carbon_csv(report: CarbonReport, costs: CostReport | None = None) -> str:
    """The report as one long table: section, key, item, value, unit, detail."""
    out = carbon_out(report, costs)
    rows: list[tuple[object, ...]] = [
        ("period", out.site, "since", out.since.isoformat(), "", out.space or "whole site"),
        ("period", out.site, "until", out.until.isoformat(), "", f"{out.days} days"),
    ]
    for c in out.carriers:
        rows.append(("carrier", c.carrier, "consumption", c.consumption, c.unit, _flags(c)))
        if c.kgce is not None:
            rows.append(("carrier", c.carrier, "kgce", c.kgce, "kgce", out.kgce_coefficients))
        if c.location_tco2 is not None:
            item = "scope1" if c.scope == 1 else f"scope{c.scope} location-based"
            rows.append(("carrier", c.carrier, item, c.location_tco2, "tCO2", _flags_t(c)))
        if c.market_tco2 is not None and c.scope == 2:
            rows.append(("carrier", c.carrier, "scope2 market-based", c.market_tco2, "tCO2", ""))
    rows += [
        (
            "total",
            out.site,
            "kgce",
            out.kgce,
            "kgce",
            f"billed {out.billed_kgce}; manual (estimated) {out.manual_kgce}",
        ),
        ("total", out.site, "scope1", out.scope1_tco2, "tCO2", ""),
        ("total", out.site, "scope2 location-based", out.scope2_location_tco2, "tCO2", ""),
        (
            "total",
            out.site,
            "scope2 market-based",
            out.scope2_market_tco2,
            "tCO2",
            f"green {out.green_kwh} kWh at 0" if out.green_kwh is not None else "no green power",
        ),
        (
            "total",
            out.site,
            "total location-based",
            out.total_location_tco2,
            "tCO2",
            f"billed {out.billed_tco2}; manual (estimated) {out.manual_tco2}",
        ),
        ("total", out.site, "total market-based", out.total_market_tco2, "tCO2", ""),
    ]
    intensity = out.intensity
    rows += [
        ("intensity", out.site, "area", intensity.area_m2, "m2", ""),
        ("intensity", out.site, "occupants", intensity.occupants, "person", ""),
        ("intensity", out.site, "kgce per m2", intensity.kgce_per_m2, "kgce/m2", "period"),
        (
            "intensity",
            out.site,
            "kgce per person",
            intensity.kgce_per_person,
            "kgce/person",
            "period",
        ),
        ("intensity", out.site, "kgCO2 per m2", intensity.kgco2_per_m2, "kgCO2/m2", "period"),
        (
            "intensity",
            out.site,
            "kgCO2 per person",
            intensity.kgco2_per_person,
            "kgCO2/person",
            "period",
        ),
        (
            "intensity",
            out.site,
            "water per person",
            intensity.water_m3_per_person,
            "m3/person",
            "period",
        ),
    ]
    for cmp in out.comparisons:
        rows.append(
            (
                "comparison",
                cmp.name,
                cmp.status,
                cmp.annualised_actual,
                cmp.unit,
                f"limit {cmp.limit if cmp.limit is not None else 'n/a'}; {cmp.source}"
                + (f"; {cmp.note}" if cmp.note else ""),
            )
        )
    for purpose, choice in report.factors:
        rows.append(
            (
                "factor",
                f"{choice.factor.carrier} {choice.year}",
                purpose,
                choice.factor.value,
                choice.factor.unit,
                factor_label(purpose, choice),
            )
        )
    for m in out.meters:
        detail = f"readings {m.readings}; resets {len(m.resets)}; gaps {len(m.gaps)}; " + (
            f"missing {len(m.missing)}; {'counted' if m.counted else f'sub-meter of {m.parent}'}"
        )
        rows.append(("meter", m.device, "consumption", m.consumption, m.unit, detail))
        for r in m.resets:
            rows.append(
                (
                    "meter",
                    m.device,
                    "reset",
                    r.after,
                    m.unit,
                    f"at {r.at}: {r.before} -> {r.after} (new baseline)",
                )
            )
    for i in out.imbalances:
        rows.append(
            (
                "imbalance",
                i.parent,
                "parent - sum(children)",
                i.imbalance,
                i.unit,
                f"{i.imbalance_pct} % of {i.parent_value}; children "
                f"{' + '.join(i.children)} = {i.children_value}",
            )
        )
    for month in out.months:
        rows.append(
            (
                "month",
                f"{month.start[:7]} {month.carrier}",
                "consumption",
                month.consumption,
                "",
                f"estimated {month.estimated}; billed {month.billed}; manual {month.manual}; "
                f"kgce {month.kgce}",
            )
        )
    for b in out.bills:
        where = b.device or b.space or out.site
        label = f"{b.kind} {b.carrier} {where} {b.first_day}..{b.last_day}"
        cost = f"; cost {b.cost} CNY" if b.cost is not None else ""
        if b.counted:
            detail = f"counted {b.in_period} in the period{cost}; {b.note}"
            rows.append(("bill", label, "counted", b.amount, b.unit, detail))
        elif b.metered is not None:
            rows.append(("bill", label, "bill", b.amount, b.unit, f"#{b.id} r{b.revision}{cost}"))
            rows.append(
                (
                    "bill",
                    label,
                    "metered",
                    b.metered,
                    b.unit,
                    f"{' + '.join(b.meters)}; estimated {b.metered_estimated}; "
                    f"missing {b.metered_missing_hours} h",
                )
            )
            rows.append(
                (
                    "bill",
                    label,
                    "metered - bill",
                    b.difference,
                    b.unit,
                    f"{b.difference_pct} % of the bill" if b.difference_pct is not None else "",
                )
            )
        else:
            rows.append(("bill", label, "not counted", b.amount, b.unit, b.note))
    if out.cost is not None:
        rows += cost_rows(out.site, out.cost)
    for note in out.notes:
        rows.append(("note", out.site, "", "", "", note))
    return _csv(CSV_HEADER, rows)


def cost_rows(site: str, cost: CostOut) -> list[tuple[object, ...]]:
    """The cost section of the carbon CSV (yuan, 2 decimals)."""
    split = f"billed {cost.billed}; estimated {cost.estimated}"
    no_area = "" if cost.per_m2 is not None else "no floor area"
    no_people = "" if cost.per_person is not None else "no occupants"
    rows: list[tuple[object, ...]] = [
        ("cost", site, "total", cost.total, "yuan", split),
        ("cost", site, "per m2", cost.per_m2, "yuan/m2", no_area),
        ("cost", site, "per person", cost.per_person, "yuan/person", no_people),
    ]
    for c in cost.carriers:
        rows.append(
            ("cost", c.carrier, "cost", c.cost, "yuan",
             f"billed {c.billed_cost}; estimated {c.estimated_cost}; tariff estimate of all "
             f"{c.tariff_estimate}; {c.consumption} {c.unit} priced, {c.untariffed} without tariff")
        )  # fmt: skip
        for b in c.bands:
            amount = f"{b.consumption} {c.unit}"
            rows.append(("cost", c.carrier, f"band {b.band}", b.cost, "yuan", amount))
    for bill in cost.bills:
        label = f"{bill.id} {bill.carrier} {bill.first_day}..{bill.last_day}"
        rows.append(("cost bill", label, "bill cost", bill.cost, "yuan", bill.reference))
        rows.append(("cost bill", label, "tariff estimate", bill.tariff_estimate, "yuan", ""))
        pct = f"{bill.difference_pct} % of the estimate" if bill.difference_pct is not None else ""
        rows.append(("cost bill", label, "bill - estimate", bill.difference, "yuan", pct))
    for m in cost.months:
        flag = "estimated" if m.estimated else "billed"
        rows.append(("cost month", m.carrier, m.start, m.cost, "yuan", flag))
    for t in cost.tariffs:
        what = (
            t.price
            if t.price is not None
            else "; ".join(f"{b.band} {b.start}-{b.end} {b.price}" for b in t.bands)
        )
        rows.append(
            ("tariff", f"{t.id}", f"{t.scope} {t.scope_id} {t.carrier}", what, t.unit,
             f"{t.first_day}..{t.last_day or ''} {t.source}".strip())
        )  # fmt: skip
    for note in cost.notes:
        rows.append(("note", site, "cost", "", "", note))
    return rows


def _flags(c: CarrierOut) -> str:
    return f"estimated {c.estimated}; billed {c.billed}; manual {c.manual}"


def _flags_t(c: CarrierOut) -> str:
    if not c.billed_tco2 and not c.manual_tco2:
        return "metered"
    return f"billed {c.billed_tco2} tCO2; manual (estimated) {c.manual_tco2} tCO2"


ENERGY_HEADER = (
    "start", "end", "key", "carrier", "value", "unit", "estimated", "billed", "manual"
)  # fmt: skip


def energy_csv(points: list[SeriesPoint], zone: str) -> str:
    return _csv(
        ENERGY_HEADER,
        [
            (
                _iso(p.start, zone),
                _iso(p.end, zone),
                p.key,
                p.carrier,
                _d(p.value),
                p.unit,
                _d(p.estimated),
                _d(p.billed),
                _d(p.manual),
            )
            for p in points
        ],
    )


def _csv(header: tuple[str, ...], rows: list[tuple[object, ...]]) -> str:
    buffer = io.StringIO()
    writer = csvcells.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
    return buffer.getvalue()
