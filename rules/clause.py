"""Clause configs: one YAML file per standard document, each clause a versioned check.

Shaped like a Prometheus alerting rule plus provenance: the check is data from a closed set of
kinds (no expressions, no eval), durations are time, units are explicit, unknown keys are errors.
Limits in checks are numbers or references to declared parameters ("$limit"), resolved per
site and per space type by `resolve_params`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Annotated, Literal

import orjson
from pydantic import Field, field_validator, model_validator

from rules.durations import Duration
from rules.site import Id, MetricName, SeasonRange, Strict

ParamRef = Annotated[str, Field(pattern=r"^\$[a-z][a-z0-9_]*$")]
Value = float | str  # a number, "$param", or a named state of the metric ("cooling")
Operator = Literal["<", "<=", ">", ">=", "==", "!="]


class Parameter(Strict):
    default: float
    unit: str
    description: str = ""


class Overrides(Strict):
    """Parameter values per site id and per space type; a space-type value wins over a site value
    only where the site has none for that space type (site+type > site > type > default)."""

    sites: dict[Id, dict[str, float]] = {}
    space_types: dict[Id, dict[str, float]] = {}
    site_space_types: dict[Id, dict[Id, dict[str, float]]] = {}


class Exemptions(Strict):
    space_types: tuple[Id, ...] = ()
    tags: tuple[Id, ...] = ()
    spaces: tuple[Id, ...] = ()
    devices: tuple[Id, ...] = ()


class Selector(Strict):
    """Which subjects a clause applies to: an empty list means any; non-empty ones must match."""

    space_types: tuple[Id, ...] = ()
    tags: tuple[Id, ...] = ()
    spaces: tuple[Id, ...] = ()  # a listed space includes its subtree
    devices: tuple[Id, ...] = ()
    exempt: Exemptions = Exemptions()

    def selects_space(
        self, space_type: str, tags: tuple[str, ...], lineage: frozenset[str]
    ) -> bool:
        """Whether a space of `space_type` with `tags`, whose `lineage` is itself and its
        ancestors, is selected (devices aside): what the engine binds and check-ins offer."""
        exempt = self.exempt
        if space_type in exempt.space_types or not lineage.isdisjoint(exempt.spaces):
            return False
        if not set(tags).isdisjoint(exempt.tags):
            return False
        if self.space_types and space_type not in self.space_types:
            return False
        if self.tags and set(tags).isdisjoint(self.tags):
            return False
        return not (self.spaces and lineage.isdisjoint(self.spaces))


class Window(Strict):
    start: dt.time
    end: dt.time  # exclusive; 00:00 as end means midnight at the end of the day

    @field_validator("start", "end")
    @classmethod
    def _local(cls, value: dt.time) -> dt.time:
        # Windows are in the site's timezone; an offset (or a bare number, read as seconds in
        # UTC) would be ambiguous and cannot be compared with a local time.
        if value.tzinfo is not None:
            raise ValueError("a time of day in the site's timezone, without offset, e.g. '08:30'")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.end != dt.time(0, 0) and self.end <= self.start:
            raise ValueError("a window ends after it starts (windows do not wrap midnight)")
        return self


class Schedule(Strict):
    """When a clause judges, in the site's timezone. Outside it nothing is judged."""

    windows: tuple[Window, ...] = ()  # empty: the whole day
    days: Literal["all", "weekdays", "workdays", "non_workdays"] = "all"
    # A named season of the site ("cooling") or an explicit recurring range.
    season: Id | SeasonRange | None = None


# ---- checks: the closed set of rule shapes (SPEC section 4) ----


class Aggregate(Strict):
    fn: Literal["mean", "min", "max"]
    window: Duration

    @field_validator("window")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("an aggregate window must be longer than zero")
        return value


class Comparison(Strict):
    """A leaf: metric (optionally aggregated) compared with a value."""

    metric: MetricName
    op: Operator
    value: Value
    aggregate: Aggregate | None = None


class AllOf(Strict):
    all: tuple[Condition, ...] = Field(min_length=1)


class AnyOf(Strict):
    any: tuple[Condition, ...] = Field(min_length=1)


class Not(Strict):
    not_: Condition = Field(alias="not")


Condition = Comparison | AllOf | AnyOf | Not


class Hysteresis(Strict):
    """How a violation ends: the value must pass the limit by `margin` (in the metric's unit,
    towards compliance) and stay compliant for `clear_for`."""

    margin: float = Field(default=0.0, ge=0)
    clear_for: Duration = 0.0


class ThresholdCheck(Strict):
    """Shape 1: a metric (or a rolling aggregate of it) must stay within [min, max]."""

    kind: Literal["threshold"]
    metric: MetricName
    min: Value | None = None
    max: Value | None = None
    aggregate: Aggregate | None = None
    # Apply the declared tolerance parameter (measurement uncertainty) to the limits.
    tolerance: ParamRef | float | None = None
    for_: Duration = Field(default=0.0, alias="for")
    clear: Hysteresis = Hysteresis()
    when: Condition | None = None  # state gate: judged only while it holds

    @model_validator(mode="after")
    def _bounded(self) -> ThresholdCheck:
        if self.min is None and self.max is None:
            raise ValueError("a threshold needs min, max or both")
        return self


class ConditionCheck(Strict):
    """Shape 2: a compound condition over metrics of one subject must hold."""

    kind: Literal["condition"]
    passes: Condition = Field(alias="pass")
    for_: Duration = Field(default=0.0, alias="for")
    clear: Hysteresis = Hysteresis()
    when: Condition | None = None


class ObligationCheck(Strict):
    """Shape 3: an event must occur at least every `every` of schedule time, or at least once in
    each calendar `per` period; overdue after `grace`."""

    kind: Literal["obligation"]
    event: str = Field(pattern=r"^[a-z][a-z0-9_.-]*$")
    every: Duration | None = None
    per: Literal["day", "week", "month", "quarter", "year"] | None = None
    grace: Duration = 0.0

    @model_validator(mode="after")
    def _one_cadence(self) -> ObligationCheck:
        if (self.every is None) == (self.per is None):
            raise ValueError("an obligation needs exactly one of 'every' (rolling) or 'per'")
        return self


class QuotaCheck(Strict):
    """Shape 4: consumption of a register over a calendar period against a budget."""

    kind: Literal["quota"]
    metric: MetricName
    period: Literal["day", "week", "month", "quarter", "year"]
    budget: Value | None = None  # absolute, in the register's unit
    budget_per_m2: Value | None = None  # times the floor area of the meter's space
    # Warn when the linear forecast to the period end exceeds the budget, once this share of
    # the period has elapsed (early forecasts are noise).
    forecast_after: float = Field(default=0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _one_budget(self) -> QuotaCheck:
        if (self.budget is None) == (self.budget_per_m2 is None):
            raise ValueError("a quota needs exactly one of 'budget' or 'budget_per_m2'")
        return self


class DataQualityCheck(Strict):
    """Shape 5: stale, stuck, out of physical range, register backwards. Such time is not
    assessable for every clause that reads the metric."""

    kind: Literal["data_quality"]
    metrics: tuple[MetricName, ...] = ()  # empty: every metric of the selected devices
    stale_after: Duration | None = None
    stuck_for: Duration | None = None
    out_of_range: bool = True
    register_backwards: bool = True


Check = Annotated[
    ThresholdCheck | ConditionCheck | ObligationCheck | QuotaCheck | DataQualityCheck,
    Field(discriminator="kind"),
]


class Escalation(Strict):
    after: Duration  # unacknowledged for this long
    to_level: int = Field(ge=1)


class ClauseVersion(Strict):
    """One version of one clause. A change of parameters or logic is a new version."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_.-]*$")
    version: int = Field(ge=1)
    effective_from: dt.date
    effective_to: dt.date | None = None  # inclusive last day; None = open-ended
    number: str  # clause number in the standard, e.g. 第三条
    title: str
    text: str = ""  # excerpt of the clause text
    domain: str
    key: bool = False
    confidence: Literal["A", "A/B", "B", "B-", "C"]
    source: str = ""
    severity: Literal["info", "warning", "major", "critical"] = "warning"
    params: dict[Id, Parameter] = {}
    overrides: Overrides = Overrides()
    applies_to: Selector = Selector()
    schedule: Schedule = Schedule()
    check: Check
    escalation: tuple[Escalation, ...] = ()
    # After an alert is closed with a corrective action, the subject must have been compliant
    # this long before closing is accepted (None: no re-verification).
    reverify_for: Duration | None = None
    # A violation re-firing within this time of its end reopens the alert instead of a new one.
    reopen_within: Duration = 3600.0

    @model_validator(mode="after")
    def _consistent(self) -> ClauseVersion:
        if self.effective_to is not None and self.effective_to < self.effective_from:
            raise ValueError("effective_to must not be before effective_from")
        for name in _param_refs(self.check):
            if name not in self.params:
                raise ValueError(f"check refers to ${name}, which is not declared in params")
        for where in (self.overrides.sites.values(), self.overrides.space_types.values()):
            for values in where:
                for name in values:
                    if name not in self.params:
                        raise ValueError(f"override of undeclared parameter {name!r}")
        return self

    def content_hash(self) -> str:
        """SHA-256 of the canonical JSON of this version: what a verdict was judged under."""
        canonical = orjson.dumps(
            self.model_dump(mode="json", by_alias=True), option=orjson.OPT_SORT_KEYS
        )
        return hashlib.sha256(canonical).hexdigest()

    def in_force_on(self, day: dt.date) -> bool:
        return self.effective_from <= day and (
            self.effective_to is None or day <= self.effective_to
        )

    def resolve_params(self, site_id: str, space_type: str | None) -> dict[str, float]:
        values = {name: p.default for name, p in self.params.items()}
        if space_type is not None:
            values.update(self.overrides.space_types.get(space_type, {}))
        values.update(self.overrides.sites.get(site_id, {}))
        if space_type is not None:
            values.update(self.overrides.site_space_types.get(site_id, {}).get(space_type, {}))
        return values


class Standard(Strict):
    code: str
    title: str
    edition: str
    issuer: str = ""
    source: str = ""
    superseded_by: str | None = None


class ClauseFile(Strict):
    """One standard document and the clauses (all versions) taken from it."""

    standard: Standard
    clauses: tuple[ClauseVersion, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _versions_unique(self) -> ClauseFile:
        seen: set[tuple[str, int]] = set()
        for i, clause in enumerate(self.clauses):
            key = (clause.id, clause.version)
            if key in seen:
                raise ValueError(f"clauses[{i}]: duplicate version {clause.version} of {clause.id}")
            seen.add(key)
        return self


def _param_refs(node: object) -> list[str]:
    """Names of every "$param" referenced anywhere inside a check."""
    found: list[str] = []
    if isinstance(node, str) and node.startswith("$"):
        found.append(node[1:])
    elif isinstance(node, Strict):
        for field in type(node).model_fields:
            found.extend(_param_refs(getattr(node, field)))
    elif isinstance(node, tuple | list):
        for item in node:
            found.extend(_param_refs(item))
    return found


AllOf.model_rebuild()
AnyOf.model_rebuild()
Not.model_rebuild()
ThresholdCheck.model_rebuild()
ConditionCheck.model_rebuild()
