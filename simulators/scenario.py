"""Scenario files: what a simulated building does, which violations and faults it carries.

A scenario is YAML validated strictly (unknown keys are errors). It names the site whose devices
it drives; device, space and metric ids in its knobs must exist in that site model
(`problems_against`). Times inside a run are written relative to the run's start so one file
works whatever day it is run on:

- `"26h"`, `"1d2h"`: that long after the start;
- `"workday 2 10:00"`: 10:00 (site time) on the 2nd working day whose 10:00 is at or after the
  start (`day 2 10:00` counts every day);
- `"2026-07-01T10:00:00+08:00"`: an absolute instant.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from config import BUNDLED_DIR
from config.documents import load_document
from rules.durations import Duration, parse_duration
from rules.site import Id, MetricName, SiteModel, Strict
from simulators.calendar import is_workday

_COUNTED_AT = re.compile(r"^(workday|day) ([1-9]\d*) ([01]\d|2[0-3]):([0-5]\d)$")
_LAST_WORKDAY = re.compile(
    r"^last-workday ([01]\d|2[0-3]):([0-5]\d)(?: in ([a-z0-9][a-z0-9_-]{0,63}))?$"
)


def _check_at(value: str) -> str:
    if _COUNTED_AT.match(value):
        return value
    try:
        parse_duration(value)
        return value
    except ValueError:
        pass
    try:
        instant = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a time: use a duration after the start ('26h'), "
            "'workday N HH:MM', 'day N HH:MM' or an RFC 3339 instant with offset"
        ) from None
    if instant.tzinfo is None:
        raise ValueError(f"{value!r} needs a UTC offset, for example +08:00")
    return value


At = Annotated[str, AfterValidator(_check_at)]


def resolve_at(text: str, start: float, site: SiteModel) -> float:
    """The epoch second meant by an `At` string for a run that starts at `start`."""
    counted = _COUNTED_AT.match(text)
    if counted:
        kind, nth, hour, minute = counted.groups()
        zone = site.zone()
        day = dt.datetime.fromtimestamp(start, zone).date()
        remaining = int(nth)
        for _ in range(3660):  # ten years of days: far more than any counted time needs
            instant = dt.datetime.combine(day, dt.time(int(hour), int(minute)), zone).timestamp()
            if instant >= start and (kind == "day" or is_workday(site, day)):
                remaining -= 1
                if remaining == 0:
                    return instant
            day += dt.timedelta(days=1)
        raise ValueError(f"{text!r}: no such day within ten years of the start")
    try:
        return start + parse_duration(text)
    except ValueError:
        return dt.datetime.fromisoformat(text).timestamp()


def resolve_start(text: str, now: float, site: SiteModel) -> float:
    """A run's start from a command-line or scenario value: `now`, `-7d` (before now), an RFC
    3339 instant, or `last-workday HH:MM` (the latest working-day HH:MM at or before now, so a
    demo started at night or on a Sunday still begins in office hours), optionally `in SEASON`
    (the latest such time inside the site's named season: `last-workday 08:30 in cooling`)."""
    text = text.strip()
    if text == "now":
        return now
    last = _LAST_WORKDAY.match(text)
    if last:
        zone = site.zone()
        season = None
        if last.group(3) is not None:
            season = site.site.seasons.get(last.group(3))
            if season is None:
                raise ValueError(f"{text!r}: site {site.site.id!r} has no season {last.group(3)!r}")
        day = dt.datetime.fromtimestamp(now, zone).date()
        for _ in range(3660):
            instant = dt.datetime.combine(
                day, dt.time(int(last.group(1)), int(last.group(2))), zone
            ).timestamp()
            in_season = season is None or season.contains(day)
            if instant <= now and in_season and is_workday(site, day):
                return instant
            day -= dt.timedelta(days=1)
        raise ValueError(f"{text!r}: no working day in the last ten years")
    if text.startswith("-"):
        return now - parse_duration(text[1:])
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a start: use 'now', '-7d', 'last-workday 08:30' or an RFC 3339 "
            "instant with offset"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} needs a UTC offset")
    return moment.timestamp()


class TimeRange(Strict):
    """A daily time-of-day range in the site's timezone, end exclusive."""

    start: dt.time
    end: dt.time

    @model_validator(mode="after")
    def _ordered(self) -> TimeRange:
        if self.end <= self.start:
            raise ValueError("end must be after start (ranges do not wrap midnight)")
        return self

    def contains(self, hour: float) -> bool:
        return _hours(self.start) <= hour < _hours(self.end)


def _hours(value: dt.time) -> float:
    return value.hour + value.minute / 60 + value.second / 3600


class Weather(Strict):
    """Outdoor air: a daily cosine around a mean, a random offset per day, slow noise."""

    mean_c: float = 10.0  # yearly mean, or the mean of the run when annual_amplitude_c is 0
    annual_amplitude_c: float = Field(default=0.0, ge=0)  # half the summer-winter swing
    warmest_day: int = Field(default=200, ge=1, le=366)  # day of the year (200: mid July)
    daily_amplitude_c: float = Field(default=5.0, ge=0)  # half the day-night swing
    warmest_hour: float = Field(default=15.0, ge=0, lt=24)
    day_to_day_c: float = Field(default=1.5, ge=0)  # standard deviation of the daily offset
    humidity_pct: float = Field(default=55.0, ge=0, le=100)


class Occupancy(Strict):
    hours: TimeRange = TimeRange(start=dt.time(8, 30), end=dt.time(17, 30))
    presence: float = Field(default=0.85, ge=0, le=1)  # share of occupants in on a workday
    meeting_share: float = Field(default=0.4, ge=0, le=1)  # share of hours a meeting room is used


class Hvac(Strict):
    """Room air conditioning. `auto` heats in the site's `heating` season and cools in its
    `cooling` season (or by outdoor temperature when the site names no seasons)."""

    mode: Literal["auto", "cooling", "heating", "off"] = "auto"
    cooling_setpoint: float = 26.0
    heating_setpoint: float = 20.0
    hours: TimeRange = TimeRange(start=dt.time(7, 30), end=dt.time(18, 30))
    # Outside `hours` in the heating season rooms are kept this much below the setpoint.
    night_setback_c: float = Field(default=4.0, ge=0)
    workdays_only: bool = True
    conditioned_types: tuple[Id, ...] = ("office", "meeting", "canteen", "server-room", "lobby")
    # Server rooms are cooled day and night, all year.
    always_on_types: tuple[Id, ...] = ("server-room",)
    always_on_setpoint: float = 23.0
    heating_source: Literal["electric", "gas", "district"] = "electric"
    cop: float = Field(default=3.0, gt=0)


class Energy(Strict):
    base_w_per_m2: float = Field(default=2.0, ge=0)  # always on: IT, ventilation, standby
    lighting_w_per_m2: float = Field(default=5.0, ge=0)  # while a space is occupied
    plug_w_per_person: float = Field(default=100.0, ge=0)
    # Thermal power the HVAC spends per m² to move the room by 1 °C per hour.
    hvac_kw_per_m2_per_c_h: float = Field(default=0.03, ge=0)
    lift_kw: float = Field(default=3.0, ge=0)  # per lift, during working hours
    canteen_gas_m3_h: float = Field(default=6.0, ge=0)  # while cooking
    cooking: tuple[TimeRange, ...] = (
        TimeRange(start=dt.time(6, 30), end=dt.time(8, 0)),
        TimeRange(start=dt.time(10, 30), end=dt.time(12, 30)),
    )
    water_m3_per_person_h: float = Field(default=0.004, ge=0)


class RoomSettings(Strict):
    """Per-space overrides (a normal, compliant setting; violations are listed apart)."""

    hvac_mode: Literal["cooling", "heating", "off"] | None = None
    cooling_setpoint: float | None = None
    heating_setpoint: float | None = None
    meeting_share: float | None = Field(default=None, ge=0, le=1)


class Cleaning(Strict):
    """Cleaning staff check in at every toilet's reader every `every` during `hours`."""

    every: Duration = 7200.0
    hours: TimeRange = TimeRange(start=dt.time(7, 0), end=dt.time(19, 0))
    days: Literal["all", "workdays"] = "workdays"
    early_by: Duration = 900.0  # check-ins come up to this much before they are due
    # Chance that a round is missed at random (on top of the listed `events_skipped`).
    miss_probability: float = Field(default=0.0, ge=0, le=1)
    space_types: tuple[Id, ...] = ("toilet",)
    actors: tuple[Id, ...] = ("staff-011", "staff-017", "staff-023")


class Obligation(Strict):
    """Other recorded duties: inspections, patrols, maintenance, sample retention."""

    type: Literal[
        "cleaning.completed",
        "inspection.done",
        "patrol.done",
        "maintenance.done",
        "sample.retained",
        "refuel",
    ]
    device: Id  # the reader (or system) that reports it
    space: Id | None = None
    every: Duration | None = None  # repeated within `hours` on the chosen days ...
    hours: TimeRange | None = None
    days: Literal["all", "workdays"] = "workdays"
    at: tuple[At, ...] = ()  # ... and/or at these times
    actor: Id = "staff-001"
    attrs: dict[str, str | int | float | bool] = {}

    @model_validator(mode="after")
    def _some_time(self) -> Obligation:
        if self.every is None and not self.at:
            raise ValueError("an obligation needs `every` (with `hours`) or `at` times")
        if self.every is not None and self.every <= 0:
            raise ValueError("every must be longer than zero")
        return self


# ---- violations on purpose ----


class _Timed(Strict):
    start: At | None = Field(default=None, alias="from")  # default: the start of the run
    end: At | None = Field(default=None, alias="to")  # default: open

    model_config = Strict.model_config | {"populate_by_name": True}


class Overcooling(_Timed):
    """A room held at a cooling setpoint below the limit (a meeting room cooled to 24 °C)."""

    kind: Literal["overcooling"]
    space: Id
    setpoint: float = 24.0


class Overheating(_Timed):
    """A room held at a heating setpoint above the limit (heating set to 22 °C)."""

    kind: Literal["overheating"]
    space: Id
    setpoint: float = 22.0


class EventsSkipped(Strict):
    """No check-ins of `type` in a space for a while (a toilet skipped for 3 hours)."""

    kind: Literal["events_skipped"]
    space: Id
    type: str = "cleaning.completed"
    at: At
    for_: Duration = Field(alias="for")

    model_config = Strict.model_config | {"populate_by_name": True}


class ElectricityOverrun(_Timed):
    """Electricity use of a space subtree multiplied (a month over its quota)."""

    kind: Literal["electricity_overrun"]
    space: Id | None = None  # default: the whole site
    factor: float = Field(default=3.0, gt=1)


Violation = Annotated[
    Overcooling | Overheating | EventsSkipped | ElectricityOverrun, Field(discriminator="kind")
]


# ---- faults on purpose ----


class _Fault(Strict):
    device: Id
    at: At


class Silent(_Fault):
    """The device sends nothing for a while."""

    kind: Literal["silent"]
    for_: Duration = Field(alias="for")
    model_config = Strict.model_config | {"populate_by_name": True}


class Stuck(_Fault):
    """The metric repeats the value it had at `at` for a while."""

    kind: Literal["stuck"]
    metric: MetricName
    for_: Duration = Field(alias="for")
    model_config = Strict.model_config | {"populate_by_name": True}


class Spike(_Fault):
    """`count` readings from `at` on carry a value outside the metric's physical range."""

    kind: Literal["spike"]
    metric: MetricName
    value: float | None = None  # default: ten times the range's upper bound (or 1e6)
    count: int = Field(default=1, ge=1)


class RegisterReset(_Fault):
    """A meter register restarts from zero (a meter swap or a counter overflow)."""

    kind: Literal["register_reset"]
    metric: MetricName


class Duplicate(_Fault):
    """The next `count` messages of the device are delivered twice."""

    kind: Literal["duplicate"]
    count: int = Field(default=3, ge=1)


class OutOfOrder(_Fault):
    """The next `count` messages each arrive after the message that follows them."""

    kind: Literal["out_of_order"]
    count: int = Field(default=3, ge=1)


class Malformed(_Fault):
    """`count` broken payloads on the device's telemetry topic, cycling through the variants."""

    kind: Literal["malformed"]
    count: int = Field(default=6, ge=1)
    variants: tuple[
        Literal[
            "truncated", "not_json", "nan", "string_value", "unknown_metric", "bad_ts", "no_metrics"
        ],
        ...,
    ] = ("truncated", "not_json", "nan", "string_value", "unknown_metric", "bad_ts", "no_metrics")


class FutureClock(_Fault):
    """The next `count` readings are stamped `skew` ahead of both simulated time and the wall
    clock at the run's start (so ingest sees them as from the future)."""

    kind: Literal["future_clock"]
    skew: Duration = 86400.0
    count: int = Field(default=3, ge=1)


Fault = Annotated[
    Silent | Stuck | Spike | RegisterReset | Duplicate | OutOfOrder | Malformed | FutureClock,
    Field(discriminator="kind"),
]


class RunDefaults(Strict):
    """How `clausewatch simulate` (and the demo) runs the scenario when not told otherwise."""

    start: str = "now"  # see resolve_start
    speed: float = Field(default=1.0, gt=0)


class Scenario(Strict):
    name: Id
    description: str = ""
    seed: int = 0
    site: Id
    sample_interval: Duration = 300.0
    run: RunDefaults = RunDefaults()
    weather: Weather = Weather()
    occupancy: Occupancy = Occupancy()
    hvac: Hvac = Hvac()
    energy: Energy = Energy()
    rooms: dict[Id, RoomSettings] = {}
    cleaning: Cleaning = Cleaning()
    obligations: tuple[Obligation, ...] = ()
    violations: tuple[Violation, ...] = ()
    faults: tuple[Fault, ...] = ()

    @field_validator("sample_interval")
    @classmethod
    def _interval(cls, value: float) -> float:
        if value < 1 or value != int(value):
            raise ValueError("sample_interval must be a whole number of seconds, at least 1s")
        return value

    def problems_against(self, site: SiteModel) -> list[str]:
        """References in this scenario that the site model does not have, each with its path."""
        problems: list[str] = []
        if site.site.id != self.site:
            problems.append(f"site: scenario is for {self.site!r}, site model is {site.site.id!r}")
        spaces = {s.id for s in site.spaces}
        devices = {d.id: d for d in site.devices}

        def space(path: str, space_id: str | None) -> None:
            if space_id is not None and space_id not in spaces:
                problems.append(f"{path}: unknown space {space_id!r}")

        def device(path: str, device_id: str, metric: str | None = None) -> None:
            if device_id not in devices:
                problems.append(f"{path}.device: unknown device {device_id!r}")
            elif metric is not None and metric not in devices[device_id].metrics:
                problems.append(f"{path}.metric: device {device_id!r} has no metric {metric!r}")

        for room in self.rooms:
            space(f"rooms.{room}", room)
        for i, obligation in enumerate(self.obligations):
            device(f"obligations[{i}]", obligation.device)
            space(f"obligations[{i}].space", obligation.space)
        for i, violation in enumerate(self.violations):
            space(f"violations[{i}].space", violation.space)
        for i, fault in enumerate(self.faults):
            metric = getattr(fault, "metric", None)
            device(f"faults[{i}]", fault.device, metric)
            if isinstance(fault, RegisterReset) and fault.device in devices:
                spec = devices[fault.device].metrics.get(fault.metric)
                if spec is not None and not spec.cumulative:
                    problems.append(f"faults[{i}].metric: {fault.metric!r} is not a register")
        return problems


class ScenarioError(ValueError):
    """A scenario or site that cannot be found, or a scenario that does not fit its site."""


def load_scenario(path: Path) -> Scenario:
    """The scenario in `path`, read by the strict loader. Raises ConfigError naming the file,
    the path inside it and the line of every problem."""
    return load_document(path, Scenario)


def scenario_path(name_or_path: str, config_dir: Path | None = None) -> Path:
    """A scenario file: a path as given, else `NAME.yaml` in the config dir's `scenarios/`,
    else in the bundled configuration."""
    given = Path(name_or_path)
    if given.suffix in (".yaml", ".yml") or given.exists():
        return given
    for base in (config_dir, BUNDLED_DIR):
        if base is not None:
            candidate = base / "scenarios" / f"{name_or_path}.yaml"
            if candidate.exists():
                return candidate
    raise ScenarioError(f"no scenario {name_or_path!r} (looked for scenarios/{name_or_path}.yaml)")


def site_path(site_id: str, config_dir: Path | None = None) -> Path:
    for base in (config_dir, BUNDLED_DIR):
        if base is not None:
            candidate = base / "sites" / f"{site_id}.yaml"
            if candidate.exists():
                return candidate
    raise ScenarioError(f"no site model for {site_id!r} (looked for sites/{site_id}.yaml)")
