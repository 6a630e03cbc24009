"""The site model an operator writes: site, space tree, devices, parties and assignments.

One YAML file per site (see README, "Site model"). Everything is validated strictly: unknown keys,
dangling references and duplicate ids are errors that name their path in the file.
"""

from __future__ import annotations

import datetime as dt
import re
from functools import cached_property
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from rules.durations import Duration

ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
METRIC_PATTERN = r"^[a-z][a-z0-9_]*$"
MONTH_DAY_PATTERN = re.compile(r"^(\d\d)-(\d\d)$")

Id = Annotated[str, Field(pattern=ID_PATTERN)]
# A clause id or an event type (both may hold dots).
ClauseOrTask = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]{0,127}$")]
MetricName = Annotated[str, Field(pattern=METRIC_PATTERN)]


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SeasonRange(Strict):
    """A yearly recurring date range in the site's timezone, inclusive; may wrap the new year
    (heating season 11-15 .. 03-15)."""

    start: str = Field(alias="from")
    end: str = Field(alias="to")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("start", "end")
    @classmethod
    def _month_day(cls, value: str) -> str:
        match = MONTH_DAY_PATTERN.match(value)
        if not match:
            raise ValueError("expected MM-DD, for example '06-01'")
        dt.date(2024, int(match.group(1)), int(match.group(2)))  # raises on 02-30
        return value

    def contains(self, day: dt.date) -> bool:
        key = f"{day.month:02d}-{day.day:02d}"
        if self.start <= self.end:
            return self.start <= key <= self.end
        return key >= self.start or key <= self.end


class HolidayCalendar(Strict):
    """Which days are workdays. `cn`: Chinese statutory holidays and adjusted working days, from
    the official holiday schedules loaded for each year (rules/holidays.py; Monday to Friday for
    a year without one), with `extra_holidays` / `extra_workdays` on top; `weekends`: Monday to
    Friday only."""

    kind: Literal["cn", "weekends"] = "cn"
    extra_holidays: tuple[dt.date, ...] = ()
    extra_workdays: tuple[dt.date, ...] = ()


class SiteInfo(Strict):
    id: Id
    name: str
    timezone: str
    grid_region: str = "national"
    emission_series: str = "mee_nbs_average"
    holidays: HolidayCalendar = HolidayCalendar()
    seasons: dict[Id, SeasonRange] = {}
    # Organisation path from the top down (city, district, unit) for roll-up statistics.
    org: tuple[Id, ...] = ()
    # The id whose status stands for the site's whole link to the service (the one broker
    # login the site publishes through, a site router's MQTT bridge): every device and gateway
    # of the site is behind it, and its outage is one site-wide alert (docs/alerts.md).
    uplink: Id | None = None
    public: bool = False  # opt-in read-only public compliance page

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA timezone {value!r}") from exc
        return value


class Space(Strict):
    id: Id
    name: str = ""
    type: Id  # building, floor, office, meeting, toilet, canteen, server-room, ...
    parent: Id | None = None
    tags: tuple[Id, ...] = ()
    area_m2: float | None = Field(default=None, gt=0)
    occupants: int | None = Field(default=None, ge=0)
    # When an obligation of this space was last met before judging began, by clause id or by
    # task (the event type): a date (local midnight at the site) or a datetime with an offset.
    # A new obligation instance counts from it as from an event (issue 17).
    last_done: dict[ClauseOrTask, dt.datetime | dt.date] = {}

    @field_validator("last_done")
    @classmethod
    def _aware(cls, value: dict[str, dt.datetime | dt.date]) -> dict[str, dt.datetime | dt.date]:
        for key, when in value.items():
            if isinstance(when, dt.datetime) and when.utcoffset() is None:
                raise ValueError(f"last_done {key}: a datetime needs a UTC offset, or give a date")
        return value


def shown_value(value: float, decimals: int | None = None) -> float:
    """`value` rounded to `decimals` places, or without them to six significant digits."""
    if decimals is not None:
        return round(value, decimals)
    return float(f"{value:.6g}")


class MetricSpec(Strict):
    """What a device reports for one metric. Units live here, never in payloads."""

    unit: str
    # Physical range: values outside are sensor faults (not assessable), not violations.
    range: tuple[float, float] | None = None
    # A cumulative register (meters): consumption is the difference of successive values.
    cumulative: bool = False
    carrier: Literal["electricity", "natural_gas", "water", "heat", "gasoline", "diesel"] | None = (
        None
    )
    # Named states for enumerated metrics (hvac_mode: {off: 0, cooling: 1, heating: 2}).
    states: dict[Id, float] = {}
    # How long one reading stays valid when no newer one arrives (sample-and-hold horizon).
    max_gap: Duration = 900.0
    # Decimal places a value of this metric is shown with (alerts, notifications, reports);
    # None: as many as the value needs, at most six significant digits.
    decimals: int | None = Field(default=None, ge=0, le=9)

    def shown(self, value: float) -> float:
        """`value` as this metric is shown: rounded to `decimals`, else to six significant
        digits, so arithmetic noise (an average of 0.09000000000000005) never reaches a text."""
        return shown_value(value, self.decimals)

    @model_validator(mode="after")
    def _consistent(self) -> MetricSpec:
        if self.range is not None and self.range[0] >= self.range[1]:
            raise ValueError("range must be [low, high] with low < high")
        if self.carrier is not None and not self.cumulative:
            raise ValueError("a metric with a carrier must be cumulative (a register)")
        return self


# A device's metrics, validated on their own: SiteModel shares equal ones between devices.
_DEVICE_METRICS: TypeAdapter[dict[str, MetricSpec]] = TypeAdapter(dict[MetricName, MetricSpec])


class Device(Strict):
    id: Id
    space: Id
    kind: str = "sensor"
    metrics: dict[MetricName, MetricSpec]
    # For sub-meters: the meter whose consumption includes this one's.
    parent: Id | None = None
    # What its data comes through: an edge gateway's id (its status topic
    # `{prefix}/{site}/{gateway}/status`) or another device of the site (a data concentrator).
    # While that is offline, this device's stale-data alerts are inhibited by one outage alert
    # (docs/alerts.md, "Inhibition").
    gateway: Id | None = None


# A webhook target's name (alerts/webhooks.py, table webhook_targets): what a party's
# contacts.webhook holds. The URL and its secret stay in the target, which only an unscoped
# admin manages, so no site file, API answer or ledger entry carries them.
WEBHOOK_TARGET_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,128}$"
WEBHOOK_CONTACT = "webhook"
# The reporter of the events a last-done time set through the API becomes while the service runs
# (api/routers/registry.py): no device, so the decoder takes events, and only events, from it for
# every site, and no site file may name a device so.
LAST_DONE_REPORTER = "last-done"


def webhook_contact_problem(value: str) -> str | None:
    """Why `value` cannot be a contacts.webhook (None when it can)."""
    if re.fullmatch(WEBHOOK_TARGET_PATTERN, value):
        return None
    if "://" in value:
        return (
            "contacts.webhook names a webhook target (`clausewatch webhook add NAME ...`), not "
            "a URL: the URL and its secret are kept in the target"
        )
    return f"contacts.webhook must be a webhook target's name ({WEBHOOK_TARGET_PATTERN})"


class Party(Strict):
    id: Id
    name: str
    kind: Literal["person", "team", "contractor"] = "person"
    # Free text (phone, e-mail, role), except `webhook`: the name of a webhook target.
    contacts: dict[str, str] = {}

    @field_validator("contacts")
    @classmethod
    def _webhook_is_a_target(cls, contacts: dict[str, str]) -> dict[str, str]:
        webhook = contacts.get(WEBHOOK_CONTACT)
        problem = None if webhook is None else webhook_contact_problem(webhook)
        if problem is not None:
            raise ValueError(problem)
        return contacts


class Assignment(Strict):
    """A party answers for a space subtree and a clause domain ('*' = all) for a period."""

    party: Id
    space: Id
    domain: str = "*"
    role: Literal["responsible", "escalation"] = "responsible"
    level: int = Field(default=0, ge=0)  # escalation level: 0 is the responsible party
    valid_from: dt.datetime
    valid_to: dt.datetime | None = None

    @model_validator(mode="after")
    def _period(self) -> Assignment:
        if self.valid_from.tzinfo is None:
            raise ValueError("valid_from needs a UTC offset, for example 2026-01-01T00:00:00+08:00")
        if self.valid_to is not None:
            if self.valid_to.tzinfo is None:
                raise ValueError("valid_to needs a UTC offset")
            if self.valid_to <= self.valid_from:
                raise ValueError("valid_to must be after valid_from")
        return self


class SiteModel(Strict):
    site: SiteInfo
    spaces: tuple[Space, ...]
    devices: tuple[Device, ...] = ()
    parties: tuple[Party, ...] = ()
    assignments: tuple[Assignment, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _shared_metric_specs(cls, data: Any) -> Any:
        """Devices of one kind describe the same metrics: each distinct description is
        validated once and its specs (frozen) serve every device giving it, so a site of
        100,000 devices holds a handful of MetricSpecs, not 300,000 (issue 24: 3.3 KiB of
        model a device, 1.1 KiB shared). A description this cannot read is left to the
        validation proper, which reports it where it is."""
        if not isinstance(data, dict) or not isinstance(data.get("devices"), list | tuple):
            return data
        validated: dict[bytes, dict[str, MetricSpec]] = {}
        devices: list[Any] = []
        for device in data["devices"]:
            metrics = device.get("metrics") if isinstance(device, dict) else None
            if isinstance(metrics, dict):
                try:
                    key = orjson.dumps(metrics)
                    specs = validated.get(key)
                    if specs is None:
                        specs = validated[key] = _DEVICE_METRICS.validate_python(metrics)
                except (TypeError, ValidationError):  # not JSON, or not valid: reported below
                    pass
                else:
                    device = {**device, "metrics": specs}
            devices.append(device)
        return {**data, "devices": devices}

    @model_validator(mode="after")
    def _references(self) -> SiteModel:
        problems: list[str] = []
        space_ids = _unique("spaces", [s.id for s in self.spaces], problems)
        device_ids = _unique("devices", [d.id for d in self.devices], problems)
        party_ids = _unique("parties", [p.id for p in self.parties], problems)
        for i, space in enumerate(self.spaces):
            if space.parent is not None and space.parent not in space_ids:
                problems.append(f"spaces[{i}].parent: unknown space {space.parent!r}")
        for i, device in enumerate(self.devices):
            if device.id == LAST_DONE_REPORTER:
                problems.append(f"devices[{i}].id: {device.id!r} is reserved for last-done input")
            if device.space not in space_ids:
                problems.append(f"devices[{i}].space: unknown space {device.space!r}")
            if device.parent is not None and device.parent not in device_ids:
                problems.append(f"devices[{i}].parent: unknown device {device.parent!r}")
            if device.gateway == device.id:
                problems.append(f"devices[{i}].gateway: a device cannot be its own gateway")
            elif device.gateway is not None and device.gateway == self.site.uplink:
                problems.append(
                    f"devices[{i}].gateway: {device.gateway!r} is the site's uplink, which every "
                    "device is behind already"
                )
        if self.site.uplink is not None and self.site.uplink in device_ids:
            problems.append(
                f"site.uplink: {self.site.uplink!r} is a device of the site (the uplink needs an "
                "id of its own: its status topic)"
            )
        for i, assignment in enumerate(self.assignments):
            if assignment.party not in party_ids:
                problems.append(f"assignments[{i}].party: unknown party {assignment.party!r}")
            if assignment.space not in space_ids:
                problems.append(f"assignments[{i}].space: unknown space {assignment.space!r}")
        problems.extend(_cycles(self.spaces))
        problems.extend(_gateway_cycles(self.devices))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _shared_parts(self) -> SiteModel:
        """Equal parts of the devices and spaces are one object each: a device's metrics (the
        specs were shared already, but validation makes each device a dict of its own) and the
        set of the fields each model was given (the same few for every device of a kind). They
        were 0.4 KiB a device of a site of 100,000 (issue 24). The models are frozen: nothing
        changes these in place (a copy of a model copies its set of fields)."""
        metrics: dict[tuple[tuple[str, int], ...], dict[str, MetricSpec]] = {}
        given: dict[frozenset[str], set[str]] = {}
        for device in self.devices:
            key = tuple((name, id(spec)) for name, spec in device.metrics.items())
            device.__dict__["metrics"] = metrics.setdefault(key, device.metrics)
        for model in (*self.devices, *self.spaces):
            fields = model.__pydantic_fields_set__
            object.__setattr__(
                model, "__pydantic_fields_set__", given.setdefault(frozenset(fields), fields)
            )
        return self

    # Lookups used by the engine and the services; cheap enough to recompute on demand.
    def space(self, space_id: str) -> Space:
        for space in self.spaces:
            if space.id == space_id:
                return space
        raise KeyError(space_id)

    @cached_property
    def parent_of(self) -> dict[str, str | None]:
        """Space id → its parent's id (None for a root), built once per model."""
        return {s.id: s.parent for s in self.spaces}

    def ancestors(self, space_id: str) -> list[str]:
        """The space itself, then its parent, up to the root. O(depth): callers ask for every
        space of a site (the engine at start), 100,000 of them in a large one."""
        parent_of = self.parent_of
        chain: list[str] = []
        current: str | None = space_id
        while current is not None:
            chain.append(current)
            current = parent_of[current]
        return chain

    @cached_property
    def device_by_id(self) -> dict[str, Device]:
        """Device id → the device, built once per model: what is asked for one device must not
        go over all of them (100,000 in a large site: 45.6 ms a walk)."""
        return {d.id: d for d in self.devices}

    @cached_property
    def device_gateway(self) -> dict[str, str]:
        """Device id → the gateway (or device) its data comes through, for devices that name
        one."""
        return {d.id: d.gateway for d in self.devices if d.gateway is not None}

    def sources_of(self, device_id: str) -> list[str]:
        """What `device_id`'s data comes through, nearest first: its gateway, that one's
        gateway when it is a device naming one, ..., then the site's uplink."""
        chain: list[str] = []
        current = self.device_gateway.get(device_id)
        while current is not None and current not in chain:
            chain.append(current)
            current = self.device_gateway.get(current)
        if self.site.uplink is not None:
            chain.append(self.site.uplink)
        return chain

    def behind(self, source: str) -> list[str]:
        """The devices whose data comes through `source` (a gateway, a device, the uplink), in
        the order of the file; with a device, the device itself first."""
        found = [d.id for d in self.devices if d.id == source]
        found.extend(d.id for d in self.devices if source in self.sources_of(d.id))
        return found

    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.site.timezone)

    def last_done_at(self, space: Space, clause_id: str, task: str) -> float | None:
        """When `space` last met the obligation of `clause_id` (else of its task, the event
        type), as epoch seconds; a date is local midnight at the site. None when not given."""
        when = space.last_done.get(clause_id, space.last_done.get(task))
        return None if when is None else self.moment(when).timestamp()

    def moment(self, when: dt.datetime | dt.date) -> dt.datetime:
        """A datetime as it is; a date as local midnight at the site."""
        if isinstance(when, dt.datetime):
            return when
        return dt.datetime.combine(when, dt.time(), self.zone())


def _unique(kind: str, ids: list[str], problems: list[str]) -> set[str]:
    seen: set[str] = set()
    for i, item in enumerate(ids):
        if item in seen:
            problems.append(f"{kind}[{i}].id: duplicate id {item!r}")
        seen.add(item)
    return seen


def _gateway_cycles(devices: tuple[Device, ...]) -> list[str]:
    gateway = {d.id: d.gateway for d in devices}
    for i, device in enumerate(devices):
        seen = {device.id}
        current = None if device.gateway == device.id else device.gateway  # reported apart
        while current is not None and current in gateway:
            if current in seen:
                return [f"devices[{i}].gateway: the gateways form a cycle through {device.id!r}"]
            seen.add(current)
            current = gateway[current]
    return []


def _cycles(spaces: tuple[Space, ...]) -> list[str]:
    parent = {s.id: s.parent for s in spaces}
    for i, space in enumerate(spaces):
        seen = {space.id}
        current = space.parent
        while current is not None and current in parent:
            if current in seen:
                return [f"spaces[{i}].parent: the space tree has a cycle through {space.id!r}"]
            seen.add(current)
            current = parent[current]
    return []
