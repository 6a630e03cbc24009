"""Energy and carbon for energy officers: `GET /energy`, `GET /carbon` (JSON, or CSV with
`format=csv`), the quota burn-down behind the energy page, the emission factors (an admin
token without a site scope may add one without a code change), and the import of utility bills
and manual meter readings (`POST /energy/bills`, a CSV or .xlsx file as the body).

Periods: `since` / `until` are dates (local midnight at the site) or ISO datetimes with an
offset; the period is [since, until). Without them: the last 12 local calendar months, this one
included. Figures are decimal strings (exact; see energy/render.py).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import Field

from api.auth import EnergyReader, GlobalAdmin, Principal
from api.deps import DbConn
from api.models import (
    CarbonReportOut,
    EmissionFactor,
    EnergyOut,
    FactorCreate,
    Input,
    Problem,
    QuotaOut,
    QuotaPoint,
    SiteId,
    TariffEnd,
)
from energy import bills as bill_store
from energy import costs as cost_store
from energy import factors as factor_store
from energy.quotas import load_quota_clauses, quota_statuses
from energy.render import (
    carbon_csv,
    carbon_out,
    energy_csv,
    energy_out,
)
from energy.reports import (
    ReportError,
    RetentionError,
    area_and_occupants,
    carbon_report,
    default_period,
    energy_series,
    load_site_model,
    parse_moment,
    present,
)
from rules.site import ID_PATTERN, SiteModel

router = APIRouter(tags=["energy"])
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem},
    403: {"model": Problem},
    404: {"model": Problem},
    409: {"model": Problem, "description": "the period needs readings retention removed"},
}
CSV: dict[str, Any] = {
    "content": {"text/csv": {}},
    "description": "the same figures as CSV (format=csv)",
}
SpaceId = Annotated[str | None, Query(pattern=ID_PATTERN, description="a building or other space")]
Moment = Annotated[
    str | None,
    Query(max_length=40, description="a date (site-local midnight) or ISO datetime with offset"),
]
Format = Annotated[Literal["json", "csv"], Query(alias="format")]
# A report reads every reading of its meters: bound the work one request may ask for.
MAX_DAYS = 3 * 366
MAX_HOURLY_DAYS = 62


def _site(conn: psycopg.Connection, principal: Principal, site: str) -> SiteModel:
    principal.site_filter(site)  # 403 outside the token's sites
    try:
        return load_site_model(conn, site)
    except ReportError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None


def _period(
    model: SiteModel, since: str | None, until: str | None, *, hourly: bool = False
) -> tuple[dt.datetime, dt.datetime]:
    try:
        default_since, default_until = default_period(model, dt.datetime.now(dt.UTC), 12)
        start = parse_moment(since, model) if since else default_since
        end = parse_moment(until, model) if until else default_until
    except ReportError as exc:
        raise _unprocessable(str(exc)) from None
    if end <= start:
        raise _unprocessable("until must be after since")
    limit = MAX_HOURLY_DAYS if hourly else MAX_DAYS
    if end - start > dt.timedelta(days=limit):
        raise _unprocessable(f"a period of at most {limit} days, please")
    return start, end


def _unprocessable(message: str) -> HTTPException:
    return HTTPException(422, message)


def _refused(exc: ReportError) -> HTTPException:
    """422 for a report asked wrongly; 409 when its readings are gone with the retention (the
    same request gave a figure before: it must never give another one now)."""
    if isinstance(exc, RetentionError):
        return HTTPException(status.HTTP_409_CONFLICT, str(exc))
    return _unprocessable(str(exc))


@router.get("/energy", response_model=EnergyOut, responses={**ERRORS, 200: CSV})
def get_energy(
    conn: DbConn,
    principal: EnergyReader,
    site: Annotated[SiteId, Query()],
    space: SpaceId = None,
    since: Moment = None,
    until: Moment = None,
    bucket: Literal["hour", "day", "month", "year"] = "month",
    by: Literal["carrier", "meter", "space"] = "carrier",
    output: Format = "json",
) -> EnergyOut | Response:
    """Consumption per bucket of the site or a space: by carrier (the scope's total, sub-meters
    not added twice), by meter, or by child space; with each meter's resets, gaps and missing
    time, and the sub-meter imbalances."""
    model = _site(conn, principal, site)
    start, end = _period(model, since, until, hourly=bucket == "hour")
    try:
        series = energy_series(conn, model, start, end, bucket, space=space, by=by)
        area_and_occupants(model, space)  # an unknown space is refused here, before any output
    except ReportError as exc:
        raise _refused(exc) from None
    if output == "csv":
        return _csv(energy_csv(series[0], model.site.timezone), f"energy-{site}")
    return energy_out(model, space, (start, end), bucket, by, series)


@router.get("/carbon", response_model=CarbonReportOut, responses={**ERRORS, 200: CSV})
def get_carbon(
    conn: DbConn,
    principal: EnergyReader,
    site: Annotated[SiteId, Query()],
    space: SpaceId = None,
    since: Moment = None,
    until: Moment = None,
    output: Format = "json",
) -> CarbonReportOut | Response:
    """Energy by carrier, kgce, t CO2 by scope and carrier (location- and market-based),
    intensities per m2 and per person, against the quota and the five-year targets, with every
    emission factor used (series, region, data year, value, instrument)."""
    model = _site(conn, principal, site)
    start, end = _period(model, since, until)
    try:
        report = carbon_report(conn, model, start, end, space=space)
    except ReportError as exc:
        raise _refused(exc) from None
    cost = cost_store.cost_or_note(conn, model, report)
    if output == "csv":
        return _csv(carbon_csv(report, cost), f"carbon-{site}")
    return carbon_out(report, cost)


@router.get("/energy/quotas", responses=ERRORS)
def get_quotas(
    conn: DbConn,
    principal: EnergyReader,
    site: Annotated[SiteId, Query()],
    space: SpaceId = None,
    at: Moment = None,
) -> list[QuotaOut]:
    """Each quota clause in force × meter: the current period's consumption against its budget,
    the budget to date, the linear forecast and the cumulative curve."""
    model = _site(conn, principal, site)
    try:
        moment = parse_moment(at, model) if at else dt.datetime.now(dt.UTC)
        statuses = quota_statuses(conn, model, load_quota_clauses(conn), moment, space=space)
    except ReportError as exc:
        raise _unprocessable(str(exc)) from None

    def rounded(value: Decimal | None, places: int = 3) -> Decimal | None:
        return None if value is None else Decimal(present(value, places))

    return [
        QuotaOut(
            clause_id=q.clause_id,
            version=q.version,
            title=q.title,
            device=q.device,
            space=q.space,
            metric=q.metric,
            unit=q.unit,
            period=q.period,
            period_start=q.period_start,
            period_end=q.period_end,
            budget=rounded(q.budget),
            consumed=Decimal(present(q.consumed)),
            estimated=Decimal(present(q.estimated)),
            budget_to_date=rounded(q.budget_to_date),
            forecast=rounded(q.forecast),
            elapsed_share=Decimal(present(q.elapsed_share, 4)),
            status=q.status,
            reason=q.reason,
            missing_hours=Decimal(present(q.missing_hours, 2)),
            curve=[QuotaPoint(at=t, cumulative=Decimal(present(v))) for t, v in q.curve],
        )
        for q in statuses
    ]


@router.get("/energy/factors", responses=ERRORS)
def list_factors(conn: DbConn, principal: EnergyReader) -> list[EmissionFactor]:
    """Every stored emission factor."""
    return factor_store.load_factors(conn)


@router.post(
    "/energy/factors",
    status_code=status.HTTP_201_CREATED,
    responses={**ERRORS, 409: {"model": Problem}},
)
def add_factor(conn: DbConn, principal: GlobalAdmin, body: FactorCreate) -> EmissionFactor:
    """Adds a factor (admin tokens without a site scope only: factors change every site's
    carbon figures). A published factor is never overwritten: the same carrier, series, region,
    data year and variant again is a 409."""
    factor = factor_store.EmissionFactor(**body.model_dump())
    try:
        added = factor_store.add_factor(conn, factor, added_by=principal.actor)
    except factor_store.FactorError as exc:
        raise _unprocessable(str(exc)) from None
    if not added:
        raise HTTPException(status.HTTP_409_CONFLICT, "that factor exists already")
    conn.commit()
    return factor


@router.get("/energy/tariffs", responses=ERRORS)
def list_tariffs(
    conn: DbConn, principal: EnergyReader, site: Annotated[SiteId, Query()]
) -> list[cost_store.Tariff]:
    """The tariffs that may apply to the site (its own, its organisations', its grid
    region's), every validity period."""
    model = _site(conn, principal, site)
    return cost_store.load_tariffs(conn, model)


@router.post(
    "/energy/tariffs",
    status_code=status.HTTP_201_CREATED,
    responses={**ERRORS, 409: {"model": Problem}},
)
def add_tariff(conn: DbConn, principal: EnergyReader, body: cost_store.Tariff) -> cost_store.Tariff:
    """Adds a tariff (a flat price, or time-of-use bands for electricity, yuan per report
    unit) valid from `first_day`. Energy officers and admins set their sites' tariffs; an
    organisation's or a region's tariff changes many sites' costs, so it needs a token without
    a site scope. A validity overlapping another tariff of the same scope and carrier is a 409:
    end that one first (`POST /energy/tariffs/{id}/end`)."""
    _tariff_writer(principal, body.scope, body.scope_id)
    if body.id is not None:
        raise _unprocessable("id is assigned by the server")
    try:
        added = cost_store.add_tariff(conn, body, added_by=principal.actor)
    except cost_store.TariffError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    conn.commit()
    return added


@router.post("/energy/tariffs/{tariff_id}/end", responses={**ERRORS, 409: {"model": Problem}})
def end_tariff(
    conn: DbConn,
    principal: EnergyReader,
    tariff_id: Annotated[int, Path(ge=1, le=2**62)],
    body: TariffEnd,
) -> cost_store.Tariff:
    """Ends an open tariff on `last_day`, so a new price can follow it."""
    found = [t for t in cost_store.load_tariffs(conn) if t.id == tariff_id]
    if not found:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no tariff {tariff_id}")
    _tariff_writer(principal, found[0].scope, found[0].scope_id)
    if not cost_store.end_tariff(conn, tariff_id, body.last_day):
        raise HTTPException(
            status.HTTP_409_CONFLICT, "the tariff is already ended, or starts after that day"
        )
    conn.commit()
    return found[0].model_copy(update={"last_day": body.last_day})


def _tariff_writer(principal: Principal, scope: str, scope_id: str) -> None:
    if principal.role not in BILL_WRITERS:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "only energy officers and admins set tariffs"
        )
    if scope == "site":
        principal.site_filter(scope_id)  # 403 outside the token's sites
    elif principal.sites is not None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "an organisation's or region's tariff needs a token without a site scope",
        )


# Roles that may import bills: the energy officer and the admin (a viewer reads only).
BILL_WRITERS = frozenset({"energy_officer", "admin"})
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


async def _upload(request: Request) -> bytes:
    """The request body, bounded (the body gate refuses more than the service-wide limit
    first; a bill file is smaller still)."""
    data = bytearray()
    async for chunk in request.stream():
        data.extend(chunk)
        if len(data) > bill_store.MAX_FILE_BYTES:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE,
                f"a bill file of at most {bill_store.MAX_FILE_BYTES} bytes, please; split it",
            )
    return bytes(data)


@router.post(
    "/energy/bills",
    response_model=bill_store.ImportResult,
    responses={
        **ERRORS,
        413: {"model": Problem},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                XLSX: {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
)
def import_bills(
    conn: DbConn,
    principal: EnergyReader,
    data: Annotated[bytes, Depends(_upload)],
    filename: Annotated[str, Query(max_length=200, pattern=r"^[^/\\]+$")] = "bills.csv",
    dry_run: bool = False,
) -> bill_store.ImportResult | Response:
    """Imports utility bills and manual meter readings from a CSV or Excel (.xlsx) file sent as
    the body (`filename` names it; .xlsx by name or content). Every row is checked first; with
    `dry_run` nothing is stored and every error is listed by sheet, row and column. Otherwise
    the file is stored only when no row has an error (else 422: each error in `detail`, the
    whole result in `result`; nothing stored): importing it
    again changes nothing, and a changed value for the same period is a correction recorded in
    the ledger with this token as the actor. Energy officers and admins; the token must see
    every site of the file."""
    if principal.role not in BILL_WRITERS:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "only energy officers and admins import bills"
        )
    models: dict[str, SiteModel | None] = {}

    def site_model(site_id: str) -> SiteModel | None:
        if site_id not in models:
            principal.site_filter(site_id)  # 403 for a site outside the token's scope
            try:
                models[site_id] = load_site_model(conn, site_id)
            except ReportError:
                models[site_id] = None
        return models[site_id]

    try:
        result = bill_store.import_bills(
            conn,
            filename,
            data,
            site_model,
            actor=principal.actor,
            now=dt.datetime.now(dt.UTC),
            dry_run=dry_run,
        )
    except bill_store.ImportError_ as exc:
        raise _unprocessable(str(exc)) from None
    except psycopg.errors.UniqueViolation:
        raise HTTPException(
            status.HTTP_409_CONFLICT, "another import of these bills ran at the same time; retry"
        ) from None
    if result.errors and not dry_run:
        conn.rollback()
        # The house 422 (a list of {loc, msg, type}: one per bad cell), the whole result beside.
        detail = [
            {
                "loc": ["body", *([e.sheet] if e.sheet else []), e.row, e.column or ""],
                "msg": e.message,
                "type": "value_error",
            }
            for e in result.errors
        ]
        return JSONResponse(
            {"detail": detail, "result": result.model_dump(mode="json")},
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    conn.commit()
    return result


class BillWithdrawal(Input):
    """Why a bill is withdrawn (recorded in the ledger)."""

    reason: str = Field(min_length=1, max_length=500)


@router.post(
    "/energy/bills/{bill_id}/withdraw",
    responses={**ERRORS, 404: {"model": Problem}},
)
def withdraw_bill(
    conn: DbConn,
    principal: EnergyReader,
    bill_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    body: BillWithdrawal,
) -> bill_store.BillWithdrawn:
    """Withdraws a current bill or manual entry imported by mistake (another period or site):
    it no longer counts nor blocks another period; the row is kept and the ledger records the
    reason with this token as the actor. Energy officers and admins of the bill's site."""
    if principal.role not in BILL_WRITERS:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "only energy officers and admins withdraw bills"
        )
    site = bill_store.bill_site(conn, bill_id)
    principal.require_visible(site, "bill")
    withdrawn = bill_store.withdraw_bill(
        conn, bill_id, actor=principal.actor, reason=body.reason, now=dt.datetime.now(dt.UTC)
    )
    if withdrawn is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no current bill with that id")
    conn.commit()
    return bill_store.BillWithdrawn(id=withdrawn.id, site=withdrawn.site, reason=body.reason)


def _csv(text: str, name: str) -> Response:
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )
