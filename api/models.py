"""The request and response models of the HTTP API: every route declares one of these, none
returns an untyped value, and routers take their models from here.

Where a model lives:
- A shape that exists for the HTTP API (a request body, a response a router builds from rows or
  domain objects, an error body) is defined in this module, one family per entity (Base /
  Create / Update / Public), and nowhere else: no router, domain package or helper module
  defines one.
- A result that a domain service computes, and that other callers use as it is (the CLI, the
  stored quarterly reports, the public page), is defined with its computation in its domain
  package (compliance/, energy/) and imported at the top of this module under its own name,
  so this module lists every shape the API speaks. Domain packages never import api/.
- What the routes read of the database comes from named functions of store/ or the domain
  packages (rows as dicts); turning a row into a model happens here (`alert_public`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    field_validator,
)

from compliance.backtest import BacktestResult as BacktestResult
from compliance.evaluations import ActionState, Method
from compliance.evaluations import Evaluation as Evaluation
from compliance.evaluations import ImprovementAction as ImprovementAction
from compliance.feedback import FeedbackCounts as FeedbackCounts
from compliance.feedback import FeedbackForm as FeedbackForm
from compliance.feedback import FeedbackItem as FeedbackItem
from compliance.public import PublicSite as PublicSite
from compliance.rates import ClauseCompliance as ClauseCompliance
from compliance.rates import ComplianceReport as ComplianceReport
from compliance.rates import Coverage as Coverage
from compliance.rates import CoverageGap as CoverageGap
from compliance.rates import Durations as Durations
from compliance.rates import SiteCompliance as SiteCompliance
from compliance.rates import SpaceCompliance as SpaceCompliance
from compliance.register import ClauseDetail as ClauseDetail
from compliance.register import RegisterEntry as RegisterEntry
from compliance.reports import EvaluationReport as EvaluationReport
from compliance.reports import StoredReport as StoredReport
from compliance.statistics import OrgStatistics as OrgStatistics
from compliance.statistics import SiteStatistics as SiteStatistics
from compliance.targets import Attainment as Attainment
from compliance.targets import TargetSetting as TargetSetting
from energy.factors import ALL_IN
from energy.factors import EmissionFactor as EmissionFactor
from energy.render import CarbonReportOut as CarbonReportOut
from energy.render import EnergyOut as EnergyOut
from energy.render import EnergyPoint as EnergyPoint
from energy.render import ImbalanceOut as ImbalanceOut
from energy.render import MeterOut as MeterOut
from rules.holidays import CalendarCoverage
from rules.site import (
    ID_PATTERN,
    METRIC_PATTERN,
    WEBHOOK_CONTACT,
    WEBHOOK_TARGET_PATTERN,
    webhook_contact_problem,
)


def _utc_if_naive(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


# A time in a query: RFC 3339; without an offset it is taken as UTC.
QueryTime = Annotated[dt.datetime, AfterValidator(_utc_if_naive)]
SiteId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
MetricId = Annotated[str, StringConstraints(pattern=METRIC_PATTERN, max_length=64)]
AlertState = Literal["firing", "acknowledged", "resolved", "closed"]
Severity = Literal["info", "warning", "major", "critical"]
AlertKind = Literal["violation", "warning", "data_quality"]
# What a person writes into a form: trimmed, not empty, bounded.
Prose = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)]


class Problem(BaseModel):
    """The body of every 4xx/5xx answer except 422 (which lists field-level errors)."""

    detail: str


Responses = dict[int | str, dict[str, Any]]


def problems(*codes: int) -> Responses:
    """OpenAPI `responses` for the error codes a route may answer with (body: Problem). Errors
    are JSON even from routes that answer HTML or CSV, so the content type is stated here
    rather than taken from the route's response class."""
    json_problem = {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    return {code: {"model": Problem, "content": json_problem} for code in codes}


class Input(BaseModel):
    """Base of request bodies: unknown fields are errors, not silently ignored, and no text may
    hold NUL (PostgreSQL text cannot store it: that is bad input, not a database error)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        if _holds_nul(value):
            raise ValueError("NUL characters are not allowed")
        return value


def _holds_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_holds_nul(item) for item in value)
    return False


# ---- alerts ----


class ClauseSummary(BaseModel):
    id: str
    version: int
    content_hash: str
    standard: str
    number: str
    title: str


class AlertSubject(BaseModel):
    space: str
    device: str | None
    metric: str | None


class Responsible(BaseModel):
    party: str | None
    name: str | None


class AlertPublic(BaseModel):
    id: int
    site: str
    clause: ClauseSummary
    subject: AlertSubject
    kind: AlertKind
    severity: Severity
    state: AlertState
    reason: str
    started_at: dt.datetime
    ended_at: dt.datetime | None
    worst_value: float | None
    unit: str | None
    responsible: Responsible
    # True when no party was responsible for the subject when the violation started.
    unbound: bool
    escalation_level: int
    # The site's IANA time zone: how the pages show every time of the alert.
    site_timezone: str | None
    # Set once the alert is closed: when, and the cause and corrective action given.
    closed_at: dt.datetime | None
    cause: str | None
    corrective_action: str | None
    # Inhibition (docs/alerts.md): the outage alert this one is inhibited by (it sends no
    # notice of its own meanwhile); on an outage alert, whose: a gateway's (named in
    # subject.device) or the site's uplink.
    inhibited_by: int | None = None
    outage: Literal["gateway", "site"] | None = None


class AlertPage(BaseModel):
    items: list[AlertPublic]
    # Pass as `cursor` to get the next page; null on the last page.
    next_cursor: str | None


class Standard(BaseModel):
    code: str
    title: str
    edition: str


class ClauseProvenance(ClauseSummary):
    standard_detail: Standard
    text: str
    domain: str
    key: bool
    confidence: str
    effective_from: dt.date
    effective_to: dt.date | None
    # Parameter values the alert was judged with (after site and space-type overrides).
    params: dict[str, float]


class EvidenceReading(BaseModel):
    ts: dt.datetime
    device: str
    metric: str
    value: float


class TimelineEntry(BaseModel):
    id: int
    at: dt.datetime
    action: str
    actor: str
    note: str | None
    data: dict[str, JsonValue]


class InhibitedAlert(BaseModel):
    id: int
    space: str
    device: str | None
    state: AlertState
    started_at: dt.datetime
    ended_at: dt.datetime | None


class ConsumptionBucket(BaseModel):
    start: dt.datetime
    end: dt.datetime
    # Consumption in the bucket and since the period's start, in MeterEvidence.unit.
    value: float
    cumulative: float
    # Part of `value` was spread in proportion to time (an interval across the bucket's edge).
    estimated: bool


class Span(BaseModel):
    start: dt.datetime
    end: dt.datetime


class MeterEvidence(BaseModel):
    """A quota alert's evidence: consumption of the meter's register per bucket of the
    alert's period (energy/accounting.py: resets and gaps handled there), per m² of the floor
    area the budget was judged with when the budget is per m², against the budget in the same
    unit."""

    device: str
    metric: str
    register_unit: str
    unit: str  # e.g. "kWh", or "kWh/m²" for a per-m² budget
    area_m2: float | None
    period: str
    bucket: Literal["hour", "day", "month"]
    period_start: dt.datetime
    period_end: dt.datetime
    limit: float  # the period's budget in `unit`
    buckets: list[ConsumptionBucket]  # from the period's start up to the alert's end or now
    resets: list[dt.datetime]
    gaps: list[Span]
    missing_hours: float


class SubjectEvent(BaseModel):
    """One event of an obligation's task for its subject, from any source."""

    ts: dt.datetime
    device: str
    type: str
    space: str | None
    actor: str | None
    attrs: dict[str, JsonValue]


class ObligationEvidence(BaseModel):
    """An obligation alert's evidence: when the task was last done, when it was due (it
    became overdue then, grace included), when it was done again (if it was), how long it has
    been overdue (to that event, or now), and the task's events around it."""

    event: str
    every_s: float | None  # rolling: at most this much schedule time between two events
    per: str | None  # calendar: once in each such period
    grace_s: float
    last_done_at: dt.datetime | None  # null: not done since judging began
    due_at: dt.datetime
    done_at: dt.datetime | None
    overdue_until: dt.datetime
    overdue_s: float
    since: dt.datetime  # the window of `events`
    until: dt.datetime
    events: list[SubjectEvent]


class CheckinEvidence(BaseModel):
    """A field check-in of an obligation alert's space and task while it was open (issue 19)."""

    event_id: uuid.UUID
    ts: dt.datetime
    task: str
    task_zh: str  # how the check-in page named the task
    task_en: str
    actor: str
    note: str
    photo_url: str | None  # GET it with the token: the photo as stored


class AlertDetail(AlertPublic):
    clause: ClauseProvenance
    confirmed_at: dt.datetime
    evidence: list[EvidenceReading]
    # The raw reading at the alert's worst value (threshold, condition, data quality), so a
    # chart of bucket means can mark it; null when not kept or not such an alert.
    worst_reading: EvidenceReading | None = None
    # A quota alert: consumption per period against the budget (not the register's reading).
    meter: MeterEvidence | None = None
    # An obligation alert: last done, due, overdue by, and the task's events.
    obligation: ObligationEvidence | None = None
    escalation_chain: list[JsonValue]
    acknowledged_at: dt.datetime | None
    acknowledged_by: str | None
    acknowledged_note: str | None
    closed_by: str | None
    # The silence holding back its notifications now (alerts/silences.py), if any.
    silenced_by: int | None = None
    # On an outage alert: the alerts it inhibits, by device.
    inhibits: list[InhibitedAlert] = []
    timeline: list[TimelineEntry]
    # An obligation's check-ins from when it went overdue to when it was met (newest first).
    checkins: list[CheckinEvidence] = []


class AcknowledgeCreate(Input):
    note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=4000)] = ""


class CloseCreate(Input):
    cause: Prose
    corrective_action: Prose


# At most this many alerts in one bulk step (one transaction, one ledger lock).
MAX_BULK = 500
AlertIds = Annotated[
    list[Annotated[int, Field(ge=1, le=2**63 - 1)]],
    Field(min_length=1, max_length=MAX_BULK, description=f"1 to {MAX_BULK} alert ids"),
]


class CommentCreate(Input):
    text: Prose


class ReassignCreate(Input):
    party: Annotated[str, StringConstraints(pattern=ID_PATTERN, max_length=64)]
    note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=4000)] = ""


class BulkAcknowledge(Input):
    ids: AlertIds
    note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=4000)] = ""


class BulkClose(Input):
    """One cause and one corrective action for every alert of the batch."""

    ids: AlertIds
    cause: Prose
    corrective_action: Prose


class BulkRefusal(BaseModel):
    id: int
    # What the single-alert step would have answered (404, 409...) and why.
    status: int
    detail: str


class BulkOutcome(BaseModel):
    """Each id is either done (its timeline and ledger have the step) or refused, with why."""

    done: list[int]
    refused: list[BulkRefusal]


class StreamEvent(BaseModel):
    """`data` of one SSE event; its `id:` is `timeline_id`."""

    timeline_id: int
    action: str
    at: dt.datetime
    actor: str
    alert: AlertPublic


def alert_public(row: Mapping[str, Any]) -> AlertPublic:
    """An alert row (alerts.reads.ALERT_COLUMNS) as the API shows it: the same in the listing,
    the detail and the live stream."""
    return AlertPublic(
        id=row["id"],
        site=row["site"],
        clause=ClauseSummary(
            id=row["clause_id"],
            version=row["clause_version"],
            content_hash=row["content_hash"],
            standard=row["standard"],
            number=row["number"],
            title=row["title"],
        ),
        subject=AlertSubject(space=row["space"], device=row["device"], metric=row["metric"]),
        kind=row["kind"],
        severity=row["severity"],
        state=row["state"],
        reason=row["reason"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        worst_value=row["worst_value"],
        unit=row["unit"],
        responsible=Responsible(party=row["responsible_party"], name=row["responsible_name"]),
        unbound=row["unbound"],
        escalation_level=row["escalation_level"],
        site_timezone=row["site_timezone"],
        closed_at=row["closed_at"],
        cause=row["cause"],
        corrective_action=row["corrective_action"],
        inhibited_by=row["inhibited_by"],
        outage=row["outage"],
    )


def evidence_readings(stored: object) -> list[EvidenceReading]:
    """The evidence kept with an alert: a list of {ts, device, metric, value} where ts is epoch
    seconds (engine time) or an ISO timestamp."""
    readings: list[EvidenceReading] = []
    if not isinstance(stored, list):
        return readings
    for item in stored:
        if not isinstance(item, dict):
            continue
        ts = item.get("ts")
        at = (
            dt.datetime.fromtimestamp(ts, dt.UTC)
            if isinstance(ts, int | float)
            else dt.datetime.fromisoformat(str(ts))
        )
        readings.append(
            EvidenceReading(
                ts=at, device=item["device"], metric=item["metric"], value=item["value"]
            )
        )
    return readings


# ---- clauses ----


class ClausePublic(BaseModel):
    id: str
    latest_version: int
    versions: int
    standard: Standard
    number: str
    title: str
    domain: str
    key: bool
    severity: str
    confidence: str
    in_force_today: bool


class ClauseVersionPublic(BaseModel):
    id: str
    version: int
    content_hash: str
    effective_from: dt.date
    effective_to: dt.date | None
    number: str
    title: str
    text: str
    severity: str
    key: bool
    confidence: str
    created_by: str
    created_at: dt.datetime
    # The whole version as validated (check, schedule, params, applies_to...).
    config: dict[str, JsonValue]


class ClauseFileText(Input):
    yaml: Annotated[str, StringConstraints(max_length=1_000_000)] = Field(
        description="the clause file, as YAML text"
    )


class FieldError(BaseModel):
    path: str  # "clauses[0].check.max", or "" for the whole document
    message: str
    line: int | None  # 1-based line in the YAML text, where known


class ValidatedClause(BaseModel):
    id: str
    version: int
    content_hash: str


class ClauseValidation(BaseModel):
    valid: bool
    errors: list[FieldError]
    clauses: list[ValidatedClause]


# ---- readings ----


class ReadingPoint(BaseModel):
    ts: dt.datetime
    value: float  # the reading, or the bucket mean
    min: float | None = None
    max: float | None = None
    count: int | None = None


class ReadingSeries(BaseModel):
    site: str
    device: str
    metric: str
    unit: str | None
    bucket: str
    points: list[ReadingPoint]


# ---- ledger ----


class LedgerAnchorCheck(BaseModel):
    """The signed anchors the chain was checked against (docs/alerts.md, "Anchors")."""

    folder: str
    count: int  # anchors whose signature verified
    latest_seq: int | None
    latest_hash: str | None
    latest_at: dt.datetime | None
    matched_seq: int | None  # the highest anchored entry found with its anchored hash
    problems: list[str]  # anchor files that are malformed, forged or contradict each other


class LedgerRecordsCheck(BaseModel):
    """Alerts and their timeline rows against the ledger entries written with them."""

    alerts: int
    timeline: int
    entries: int
    problem_count: int
    problems: list[str]  # the first 100


class LedgerVerdict(BaseModel):
    ok: bool  # chain, anchors and records all check out
    checked: int  # entries that verified before the first bad one (all of them when ok)
    first_bad_seq: int | None
    problem: str | None  # the chain's first problem (a missing or re-hashed anchored entry too)
    tip_seq: int | None
    tip_hash: str | None
    anchored: bool  # checked against signed anchors; false: a cut-off tail would not show
    anchors: LedgerAnchorCheck | None
    records: LedgerRecordsCheck
    problems: list[str]  # every problem, in words


# ---- registry ----


class SitePublic(BaseModel):
    id: str
    name: str
    timezone: str
    # The site's engine watermark: the event time up to which its data has been judged (what
    # "now" is for the data; far behind the wall clock in a replay, or when ingest stalls).
    data_time: dt.datetime | None


class SpacePublic(BaseModel):
    site: str
    id: str
    name: str
    type: str
    parent: str | None
    tags: list[str]
    area_m2: float | None
    occupants: int | None


class DevicePublic(BaseModel):
    site: str
    id: str
    space: str
    kind: str
    metrics: dict[str, JsonValue]
    parent: str | None


class DeviceStatusPublic(BaseModel):
    """The latest status published on `cw/{site}/{device}/status` (a gateway's will, or a
    device's own): `device` may be a gateway that is not a device of the site model."""

    site: str
    device: str
    status: Literal["online", "offline"]
    received_at: dt.datetime
    # An edge gateway's last health report of its sources (docs/simulators.md, "Source
    # health"): device, kind, last_good, errors, last_error, last_error_at each; None if none.
    sources: list[dict[str, Any]] | None = None


PartyKind = Literal["person", "team", "contractor"]


def _webhook_names_a_target(contacts: dict[str, str]) -> dict[str, str]:
    webhook = contacts.get(WEBHOOK_CONTACT)
    problem = None if webhook is None else webhook_contact_problem(webhook)
    if problem is not None:
        raise ValueError(problem)
    return contacts


# Free text, except `webhook`: the name of a webhook target, never a URL (rules.site.Party).
Contacts = Annotated[
    dict[
        Annotated[str, StringConstraints(min_length=1, max_length=64)],
        Annotated[str, StringConstraints(max_length=256)],
    ],
    AfterValidator(_webhook_names_a_target),
]


class PartyBase(Input):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    kind: PartyKind = "person"
    contacts: Contacts = {}


class PartyCreate(PartyBase):
    site: SiteId
    id: SiteId


class PartyUpdate(Input):
    name: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
        | None
    ) = None
    kind: PartyKind | None = None
    contacts: Contacts | None = None


class PartyPublic(BaseModel):
    site: str
    id: str
    name: str
    kind: str
    contacts: dict[str, str]
    retired_at: dt.datetime | None


class AssignmentCreate(Input):
    site: SiteId
    party: SiteId
    space: SiteId
    domain: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "*"
    role: Literal["responsible", "escalation"] = "responsible"
    level: Annotated[int, Field(ge=0, le=20)] = 0
    valid_from: AwareDatetime
    valid_to: AwareDatetime | None = None


class AssignmentUpdate(Input):
    """Assignments are history: an update only ends the period."""

    valid_to: AwareDatetime


class LastDoneUpdate(Input):
    """When a space last met an obligation before judging began (issue 17)."""

    done_at: AwareDatetime


LastDoneApplied = Literal["input", "baseline", "no_obligation", "at_next_start"]


class LastDonePublic(BaseModel):
    site: str
    space: str
    task: str  # a clause id or an event type
    done_at: dt.datetime
    set_by: str
    set_at: dt.datetime
    # How it reached the running engines: "input" (an event judged in event time), "baseline"
    # (applied to the running engine now), "no_obligation" (no obligation of the space takes
    # the task), "at_next_start" (no pipeline of the site runs in this process). Absent when
    # read back.
    applied: LastDoneApplied | None = None


class AssignmentPublic(BaseModel):
    id: int
    site: str
    party: str
    space: str
    domain: str
    role: str
    level: int
    valid_from: dt.datetime
    valid_to: dt.datetime | None
    created_by: str
    created_at: dt.datetime


# ---- energy and carbon (CarbonReportOut, MeterOut, ImbalanceOut: energy/render.py) ----


class QuotaPoint(BaseModel):
    at: dt.datetime
    cumulative: Decimal


class QuotaOut(BaseModel):
    clause_id: str
    version: int
    title: str
    device: str
    space: str
    metric: str
    unit: str
    period: str
    period_start: dt.datetime
    period_end: dt.datetime
    budget: Decimal | None
    consumed: Decimal
    estimated: Decimal
    budget_to_date: Decimal | None
    forecast: Decimal | None
    elapsed_share: Decimal
    status: str
    reason: str
    missing_hours: Decimal
    curve: list[QuotaPoint]


class FactorCreate(Input):
    carrier: Literal["electricity", "natural_gas", "heat", "gasoline", "diesel"]
    series: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=64)
    region: str = Field(default="national", pattern=ID_PATTERN)
    data_year: int = Field(ge=1990, le=2100)
    value: Decimal = Field(gt=0, max_digits=12)
    unit: Literal["tCO2/MWh", "kgCO2/kWh", "tCO2/GJ", "kgCO2/GJ", "kgCO2/m3", "tCO2/t", "kgCO2/kg"]
    variant: str = Field(default=ALL_IN, min_length=1, max_length=200)
    instrument: str = Field(min_length=1, max_length=500)
    confidence: Literal["A", "A/B", "B", "B-", "C"]


# ---- the standards register, reports (results: compliance/register.py, backtest.py,
# ---- reports.py, statistics.py, public.py) ----


class BacktestRequest(Input):
    yaml: Annotated[str, StringConstraints(max_length=1_000_000)] = Field(
        description="a clause file (YAML text) holding the version(s) to try"
    )
    site: SiteId
    since: AwareDatetime
    until: AwareDatetime = Field(description="exclusive")
    clause: Annotated[str | None, StringConstraints(max_length=128)] = Field(
        default=None, description="only this clause id of the file"
    )


Quarter = Annotated[str, StringConstraints(pattern=r"^\d{4}Q[1-4]$")]
# A report's period: a quarter (2026Q3) or, for the annual self-evaluation, a year (2026).
ReportPeriod = Annotated[str, StringConstraints(pattern=r"^\d{4}(Q[1-4])?$")]
OrgNode = Annotated[
    str,
    StringConstraints(
        pattern=r"^([a-z0-9][a-z0-9_-]{0,63}(/[a-z0-9][a-z0-9_-]{0,63})*)?$", max_length=400
    ),
]


class TariffEnd(Input):
    """Ends an open tariff (energy/costs.py) on its last day, before a new price follows."""

    last_day: dt.date


class ReportCreate(Input):
    site: SiteId
    period: ReportPeriod


class TargetsUpdate(Input):
    """A node's own targets (shares 0..1): `path` city, city/district or city/district/unit
    of the site model's `org`; "" sets them for every site."""

    path: OrgNode
    compliance_rate: float = Field(ge=0, le=1, description="标准达标率; the plan: 0.90")
    key_clause_coverage: float = Field(ge=0, le=1, description="关键标准实施覆盖率; the plan: 0.95")
    evaluated_share: float = Field(ge=0, le=1, description="标准实施效果评价比例; the plan: 0.30")


class ActionCreate(Input):
    action: Prose
    owner: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    deadline: AwareDatetime = Field(description="限期: with a UTC offset, years 2000 to 2100")

    @field_validator("deadline")
    @classmethod
    def _plausible(cls, value: dt.datetime) -> dt.datetime:
        if not 2000 <= value.year <= 2100:
            raise ValueError("a deadline between the years 2000 and 2100")
        return value


class EvaluationCreate(Input):
    """An implementation evaluation a person completed for a clause at a site for a quarter."""

    site: SiteId
    clause_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    period: Quarter
    method: Method
    findings: Prose
    satisfaction: int = Field(ge=1, le=5, description="满意度 1 (poor) to 5 (very good)")
    actions: list[ActionCreate] = Field(default=[], max_length=50)


class ActionUpdate(Input):
    """Close an improvement action (done: who and when are recorded) or open it again."""

    state: ActionState
    note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=4000)] | None = None


class FeedbackTriage(Input):
    """A facility manager's step on a feedback item (信息反馈): triaged, then resolved or
    rejected (a new item may be rejected at once), with a note saying why or what was done."""

    state: Literal["triaged", "resolved", "rejected"]
    note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)] = ""


# ---- health ----


class HolidayCalendarHealth(BaseModel):
    """The official holiday schedules in use. A year judged without one, or the next year when
    it starts within 60 days without one, is named with the fallback rule its working days are
    (or will be) judged by; that is a warning, not a failure."""

    complete: bool
    years_with_data: list[int]
    years_without_data: list[int]  # this year, when it has no schedule
    next_year_without_data: int | None  # starts within 60 days and has no schedule
    fallback_rule: str
    fallback_rule_zh: str
    warnings: list[str]
    warnings_zh: list[str]

    @classmethod
    def of(cls, coverage: CalendarCoverage) -> HolidayCalendarHealth:
        return cls(
            complete=coverage.complete,
            years_with_data=list(coverage.years_with_data),
            years_without_data=list(coverage.years_without_data),
            next_year_without_data=coverage.next_year_without_data,
            fallback_rule=coverage.fallback_rule,
            fallback_rule_zh=coverage.fallback_rule_zh,
            warnings=[gap.message() for gap in coverage.gaps],
            warnings_zh=[gap.message_zh() for gap in coverage.gaps],
        )


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: Literal["ok", "unreachable"]
    holiday_calendar: HolidayCalendarHealth


# ---- webhook targets and the outbound allow-list (global data: unscoped admins only) ----

TargetName = Annotated[str, StringConstraints(pattern=WEBHOOK_TARGET_PATTERN)]
WebhookUrl = Annotated[str, StringConstraints(min_length=8, max_length=2048)]
Level = Annotated[int, Field(ge=0, le=20)]


TargetKind = Literal["webhook", "wecom", "dingtalk", "feishu", "email", "sms"]
TargetLanguage = Literal["zh", "en"]
TargetSecret = Annotated[str, StringConstraints(max_length=512)]
RepeatInterval = Annotated[
    int,
    Field(
        ge=60,
        le=604800,
        description="remind of a firing alert nobody acknowledged this many seconds after the"
        " last notice of it to this target (null: no reminders)",
    ),
]
PerMinute = Annotated[
    int,
    Field(
        ge=1,
        le=10000,
        description="messages a minute at most; the rest wait (null: the kind's default)",
    ),
]
TargetOptions = Annotated[
    dict[str, Any],
    Field(
        max_length=20,
        description="the kind's settings that are not secret (docs/alerts.md, 'Channels'):"
        " robots `msgtype`; e-mail `sender`, `to`, `username`, `starttls`; SMS `body`, `form`,"
        " `headers`, `to`, `ok_field`, `ok_value`",
    ),
]


class WebhookTargetCreate(Input):
    """A target: its channel (`kind`), where notifications go (`url`, kept secret: only its
    scheme, host and port are ever shown; an e-mail target's is `smtp://host:port`), its secret
    (never shown: the webhook's signing secret, at least 16 characters; a DingTalk or Feishu
    robot's signing secret; an SMTP password; what an SMS template's `{secret}` is; none for
    WeCom), the messages' `language`, which site (null: every site) and escalation level (null:
    every level) it serves, and whether it receives every notification of those (`broadcast`)
    or only those of parties naming it."""

    name: TargetName
    kind: TargetKind = "webhook"
    url: WebhookUrl
    secret: TargetSecret = ""
    language: TargetLanguage = "zh"
    options: TargetOptions = {}
    max_per_minute: PerMinute | None = None
    repeat_interval_s: RepeatInterval | None = None
    site: SiteId | None = None
    level: Level | None = None
    broadcast: bool = True
    enabled: bool = True


class WebhookTargetUpdate(Input):
    """The fields given change (a target's name never does)."""

    url: WebhookUrl | None = None
    secret: TargetSecret | None = None
    site: SiteId | None = None
    level: Level | None = None
    broadcast: bool | None = None
    enabled: bool | None = None
    language: TargetLanguage | None = None
    options: TargetOptions | None = None
    max_per_minute: PerMinute | None = None
    repeat_interval_s: RepeatInterval | None = None


class RoutePublic(BaseModel):
    """A notification route (alerts/routing.py) as stored, durations in seconds."""

    model_config = ConfigDict(populate_by_name=True)

    id: int
    name: str
    position: int = Field(description="routes are tried in this order, then by id")
    default: bool
    sites: list[str] = Field(description="empty: every site")
    match: dict[str, Any] = Field(description="org, spaces, domains, severities, kinds")
    receivers: list[str] = Field(description="webhook targets by name")
    continue_: bool = Field(alias="continue")
    group_wait_s: int
    group_interval_s: int
    repeat_interval_s: int | None = Field(description="null: the target's")
    send_resolved: bool
    source: Literal["file", "api"]
    created_by: str
    created_at: dt.datetime
    updated_by: str
    updated_at: dt.datetime


class WebhookTargetPublic(BaseModel):
    id: int
    name: str
    kind: TargetKind
    language: TargetLanguage
    options: dict[str, Any]
    max_per_minute: int | None = Field(description="null: the kind's default (robots: 20)")
    repeat_interval_s: int | None = Field(description="null: no reminders")
    site: str | None
    level: int | None
    broadcast: bool
    enabled: bool
    url: str = Field(description="scheme, host and port only (the rest may hold a token)")
    created_by: str
    created_at: dt.datetime
    updated_by: str
    updated_at: dt.datetime
    delivered: int
    pending: int
    failed: int
    failed_attempts: int = Field(description="attempts that failed in a row since the last success")
    failing: bool = Field(description="the last few attempts all failed: the receiver is down")
    last_error: str | None
    last_failure_at: dt.datetime | None
    last_success_at: dt.datetime | None


class AllowEntryCreate(Input):
    entry: Annotated[
        str,
        StringConstraints(min_length=1, max_length=253),
        Field(description="a host name, an address or a network (CIDR)"),
    ]
    note: Annotated[str, StringConstraints(max_length=500)] = ""


class AllowEntryPublic(BaseModel):
    id: int
    kind: Literal["host", "network"]
    entry: str
    note: str
    created_by: str
    created_at: dt.datetime


# ---- silences and maintenance windows (store/quiet.py) ----

QuietScope = Literal["site", "space", "device", "clause"]


class QuietCreate(Input):
    """A silence or maintenance window: a scope at one site, a period and why."""

    site: SiteId
    scope: QuietScope
    # The space (with its subtree), device or clause; absent for the whole site.
    target: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    # Default: now. RFC 3339; without an offset it is taken as UTC.
    starts_at: QueryTime | None = None
    ends_at: QueryTime
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class QuietPublic(BaseModel):
    id: int
    kind: Literal["silence", "maintenance"]
    site: str
    scope: QuietScope
    target: str | None
    starts_at: dt.datetime
    ends_at: dt.datetime
    reason: str
    # Declared after it had begun (maintenance windows only; admins only; ledgered).
    retroactive: bool
    created_by: str
    created_at: dt.datetime
    cancelled_at: dt.datetime | None
    cancelled_by: str | None
    # When it stops (or stopped) being in force: ends_at, or when it was cancelled.
    effective_end: dt.datetime
    active: bool  # in force at the time of the answer


class QuietList(BaseModel):
    items: list[QuietPublic]


# ---- sign-in sessions of named users (api/routers/session.py) ----


class SignIn(Input):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class Me(BaseModel):
    """Who the caller is: a user signed in with a session, or an API token."""

    kind: Literal["user", "token"]
    actor: str = Field(description="how the caller's actions are recorded")
    user: str | None
    display_name: str
    role: str
    sites: list[str] | None = Field(description="the sites visible now; null: every site")
    org: list[str] = Field(description="a user's organisation scope (empty: none)")
    expires_at: dt.datetime | None = Field(default=None, description="when the session ends")
    csrf_token: str | None = Field(
        default=None,
        description="send it as X-CSRF-Token with every request that changes something"
        " (signing in only; the pages also read it from the cw_csrf cookie)",
    )


# ---- clause revisions (routers/revisions.py, compliance/revisions.py) ----

RevisionPath = Annotated[
    str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]*(\.[a-z0-9_-]+)*$", max_length=200)
]
RevisionValue = (
    bool
    | int
    | float
    | Annotated[str, StringConstraints(max_length=2000)]
    | None
    | (list[int | float | Annotated[str, StringConstraints(max_length=200)]])
)


class RevisionProposal(Input):
    clause_id: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.-]*$", max_length=128)]
    changes: dict[RevisionPath, RevisionValue] = Field(
        min_length=1,
        max_length=50,
        description='dotted path in the clause → new value, e.g. {"params.limit.default": 26.5}',
    )
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000, strip_whitespace=True)]
    backtest_days: int = Field(default=7, ge=1, le=92, description="history replayed, days")


class RevisionDecision(Input):
    note: Annotated[str | None, StringConstraints(max_length=2000, strip_whitespace=True)] = None


class RevisionRejection(Input):
    note: Annotated[str, StringConstraints(min_length=1, max_length=2000, strip_whitespace=True)]


class RevisionPublication(Input):
    effective_from: dt.date = Field(description="first day of the new version; after today")


class SiteRevisionPublication(Input):
    effective_at: dt.datetime = Field(
        description="when the site change applies, with a UTC offset; later than now"
    )

    @field_validator("effective_at")
    @classmethod
    def _aware(cls, value: dt.datetime) -> dt.datetime:
        if value.tzinfo is None:
            raise ValueError("effective_at needs a UTC offset, for example +08:00")
        return value


class RevisionRollback(Input):
    effective_from: dt.date | None = Field(
        default=None,
        description="first day the revised content applies again; not needed for a revision"
        " not in force yet (it is withdrawn)",
    )


class SubscriptionPublic(BaseModel):
    """A user's subscription (alerts/subscriptions.py): a route owned by the user."""

    id: int
    name: str
    sites: list[str] = Field(description="empty: every site the user may see")
    match: dict[str, Any] = Field(description="org, spaces, domains, severities, kinds")
    channels: list[Literal["email", "sms"]]
    send_resolved: bool
    created_at: dt.datetime
