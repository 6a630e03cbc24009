"""The simulated building: weather, occupancy, room climate, HVAC and meters.

Deliberately simple physics, enough for realistic-looking data whose compliance is known:
- outdoor air follows a daily cosine plus a random offset per day;
- each space is one thermal node: it leaks towards the outdoor temperature (time constant
  `ENVELOPE_TAU_S`), warms with its occupants, and a proportional HVAC controller pulls it
  towards the setpoint while it runs (cooling only pulls down, heating only up; a room held at a
  setpoint on purpose, such as the over-cooled meeting room, is pulled both ways);
- humidity and CO2 relax towards values set by occupancy (first order);
- electricity, gas, water and heat registers integrate the loads of the spaces they feed.

Randomness comes from `random.Random` instances seeded from the scenario seed and a key, so the
same seed gives the same building whatever order things are asked in.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass, field

from rules.site import Device, SiteModel, Space
from simulators.calendar import is_workday
from simulators.scenario import (
    ElectricityOverrun,
    Overcooling,
    Overheating,
    RegisterReset,
    Scenario,
    resolve_at,
)

ENVELOPE_TAU_S = 8 * 3600.0  # how fast an unconditioned room drifts to outdoor temperature
HVAC_TAU_S = 600.0  # proportional controller: the gap to the setpoint closes with this constant
HVAC_MAX_C_PER_H = 8.0  # the most a unit can move a room per hour
OCCUPANT_GAIN_C_PER_H = 0.5  # warming of a room full to its capacity, unconditioned
SERVER_GAIN_C_PER_H = 5.0  # IT equipment heat in a server room
HUMIDITY_TAU_S = 3600.0
CO2_TAU_S = 1200.0
OUTDOOR_CO2_PPM = 420.0
CO2_FULL_ROOM_PPM = 450.0  # rise above outdoor air in a room full to capacity
GAS_KWH_PER_M3 = 10.0 * 0.9  # natural gas heating value times boiler efficiency
SUBSTEP_S = 60.0  # Euler step of the thermal model: stable well below HVAC_TAU_S
THERMOSTAT_BAND_C = 0.3  # dead band of the room thermostats
WARMUP_S = 86400.0  # simulated unseen before the start so rooms begin settled

MODE_OFF, MODE_COOLING, MODE_HEATING = 0, 1, 2
DEFAULT_CAPACITY = {"toilet": 3, "lobby": 15, "canteen": 40, "meeting": 10, "office": 4}
CARRIER_OF_METRIC = {
    "energy_kwh": "electricity",
    "gas_m3": "natural_gas",
    "water_m3": "water",
    "heat_gj": "heat",
}


@dataclass(slots=True)
class SpaceState:
    space: Space
    area: float  # the area whose loads this node carries (a floor: what its rooms do not cover)
    capacity: int
    common: bool  # corridors and halls of a floor or building, not a room
    temperature: float
    humidity: float
    co2: float
    present: int = 0
    mode: int = MODE_OFF  # reported as hvac_mode while the unit runs
    running: bool = False
    asked: int = MODE_OFF  # the mode the thermostat is set to
    calling: bool = False  # whether the room calls for it now
    # Consumption of this node in the last step, per carrier (kWh, m3, GJ).
    used: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Hold:
    """A room held at a setpoint on purpose between two times (a violation knob)."""

    mode: int
    setpoint: float
    start: float
    end: float


class Building:
    def __init__(self, scenario: Scenario, site: SiteModel, start: float) -> None:
        self.scenario = scenario
        self.site = site
        self.zone = site.zone()
        self.start = start
        self._children: dict[str, list[str]] = {s.id: [] for s in site.spaces}
        for space in site.spaces:
            if space.parent is not None:
                self._children[space.parent].append(space.id)
        self.subtree = {s.id: self._collect(s.id) for s in site.spaces}
        self.states = {s.id: self._initial_state(s) for s in site.spaces}
        self.holds: dict[str, list[Hold]] = {}
        self.overruns: list[tuple[frozenset[str], float, float, float]] = []
        for violation in scenario.violations:
            if not isinstance(violation, Overcooling | Overheating | ElectricityOverrun):
                continue  # skipped events are the stream's business, not the building's
            begin = self._at(violation.start)
            stop = self._at(violation.end, math.inf)
            if isinstance(violation, Overcooling | Overheating):
                mode = MODE_COOLING if isinstance(violation, Overcooling) else MODE_HEATING
                self.holds.setdefault(violation.space, []).append(
                    Hold(mode, violation.setpoint, begin, stop)
                )
            elif isinstance(violation, ElectricityOverrun):
                root = violation.space or self._root()
                self.overruns.append((frozenset(self.subtree[root]), violation.factor, begin, stop))
        # Registers: (device, metric) -> value; the space whose subtree each one meters.
        self.registers: dict[tuple[str, str], float] = {}
        self.register_carrier: dict[tuple[str, str], str] = {}
        for device in site.devices:
            for metric, spec in device.metrics.items():
                carrier = spec.carrier or CARRIER_OF_METRIC.get(metric)
                if spec.cumulative and carrier is not None:
                    key = (device.id, metric)
                    rng = random.Random(f"{scenario.seed}:register:{device.id}:{metric}")
                    self.registers[key] = round(rng.uniform(1_000, 50_000), 1)
                    self.register_carrier[key] = carrier
        self.resets = sorted(
            (self._at(f.at), f.device, f.metric)
            for f in scenario.faults
            if isinstance(f, RegisterReset)
        )
        self._device_space = {d.id: d.space for d in site.devices}
        # Run a day before the start unseen, so rooms begin in a settled state.
        self.now = start - WARMUP_S
        self._slots: dict[tuple[str, dt.date, int], tuple[float, float, float]] = {}
        self._season_cache: dict[dt.date, str] = {}
        self._day_cache: dict[dt.date, tuple[bool, float]] = {}

    # ---- set-up helpers ----

    def _at(self, text: str | None, default: float | None = None) -> float:
        if text is None:
            return self.start if default is None else default
        return resolve_at(text, self.start, self.site)

    def _root(self) -> str:
        return next(s.id for s in self.site.spaces if s.parent is None)

    def _collect(self, space_id: str) -> list[str]:
        found = [space_id]
        for child in self._children[space_id]:
            found.extend(self._collect(child))
        return found

    def _initial_state(self, space: Space) -> SpaceState:
        children = self._children[space.id]
        own_area = space.area_m2 or 0.0
        if children:
            covered = sum(self.site.space(c).area_m2 or 0.0 for c in children)
            own_area = max(own_area - covered, 0.0)
        capacity = space.occupants or DEFAULT_CAPACITY.get(space.type, 0)
        if children:
            capacity = 0  # people are counted in the rooms
        weather = self.scenario.weather
        return SpaceState(
            space=space,
            area=own_area,
            capacity=capacity,
            common=bool(children),
            temperature=weather.mean_c + 8.0,
            humidity=weather.humidity_pct,
            co2=OUTDOOR_CO2_PPM,
        )

    # ---- time ----

    def local(self, t: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(t, self.zone)

    def _day(self, day: dt.date) -> tuple[bool, float]:
        """Whether `day` is a working day, and its outdoor temperature offset."""
        cached = self._day_cache.get(day)
        if cached is None:
            rng = random.Random(f"{self.scenario.seed}:weather:{day.isoformat()}")
            weather = self.scenario.weather
            season = weather.annual_amplitude_c * math.cos(
                2 * math.pi * (day.timetuple().tm_yday - weather.warmest_day) / 365.25
            )
            cached = (is_workday(self.site, day), season + rng.gauss(0.0, weather.day_to_day_c))
            self._day_cache[day] = cached
        return cached

    def outdoor(self, t: float) -> float:
        local = self.local(t)
        weather = self.scenario.weather
        hour = local.hour + local.minute / 60 + local.second / 3600
        phase = 2 * math.pi * (hour - weather.warmest_hour) / 24
        return (
            weather.mean_c
            + self._day(local.date())[1]
            + weather.daily_amplitude_c * math.cos(phase)
        )

    # ---- occupancy and HVAC ----

    def _present(self, state: SpaceState, local: dt.datetime, workday: bool) -> int:
        if state.capacity == 0 or not workday:
            return 0
        kind = state.space.type
        hour = local.hour + local.minute / 60
        occupancy = self.scenario.occupancy
        open_from = occupancy.hours.start.hour + occupancy.hours.start.minute / 60
        open_to = occupancy.hours.end.hour + occupancy.hours.end.minute / 60
        draw = self._slot(state.space.id, local)
        if kind == "canteen":
            if 11.5 <= hour < 13.0:
                return round(state.capacity * (0.6 + 0.35 * draw[0]))
            if 7.5 <= hour < 8.5:
                return round(state.capacity * (0.1 + 0.2 * draw[0]))
            return 0
        if not occupancy.hours.contains(hour):
            return 0
        if kind == "meeting":
            room = self.scenario.rooms.get(state.space.id)
            share = occupancy.meeting_share
            if room is not None and room.meeting_share is not None:
                share = room.meeting_share
            if draw[0] < share:
                return max(2, round(state.capacity * (0.3 + 0.6 * draw[1])))
            return 0
        if kind == "office":
            ramp = min(1.0, (hour - open_from) / 0.5, (open_to - hour) / 0.5)
            lunch = 0.6 if 12.0 <= hour < 13.0 else 1.0
            expected = state.capacity * occupancy.presence * max(ramp, 0.3) * lunch
            return min(state.capacity, max(1, round(expected * (0.8 + 0.35 * draw[1]))))
        if kind in ("toilet", "lobby"):
            return min(state.capacity, int(draw[2] * (state.capacity + 1)))
        return 0

    def _slot(self, space_id: str, local: dt.datetime) -> tuple[float, float, float]:
        """Three uniform draws fixed per space and local clock hour (meetings, head counts)."""
        key = (space_id, local.date(), local.hour)
        draw = self._slots.get(key)
        if draw is None:
            rng = random.Random(f"{self.scenario.seed}:occupancy:{space_id}:{key[1]}:{key[2]}")
            draw = (rng.random(), rng.random(), rng.random())
            if len(self._slots) > 100_000:  # old hours are never asked again: bound the memory
                self._slots.clear()
            self._slots[key] = draw
        return draw

    def _hvac(
        self, state: SpaceState, t: float, hour: float, workday: bool, season: str
    ) -> tuple[int, float, bool]:
        """(mode, setpoint, held) while the unit runs, or (off, 0, False). `season` is what
        `auto` means today: cooling, heating or off."""
        hvac = self.scenario.hvac
        kind = state.space.type
        if kind in hvac.always_on_types:
            return MODE_COOLING, hvac.always_on_setpoint, False
        in_hours = hvac.hours.contains(hour) and (workday or not hvac.workdays_only)
        if in_hours:
            for hold in self.holds.get(state.space.id, ()):
                if hold.start <= t < hold.end:
                    return hold.mode, hold.setpoint, True
        if state.common or kind not in hvac.conditioned_types:
            return MODE_OFF, 0.0, False
        room = self.scenario.rooms.get(state.space.id)
        mode_name: str = hvac.mode
        if room is not None and room.hvac_mode is not None:
            mode_name = room.hvac_mode
        if mode_name == "auto":
            mode_name = season
        if mode_name == "heating" and not in_hours:
            # Heating is never switched off in the heating season: it sets back at night.
            return MODE_HEATING, hvac.heating_setpoint - hvac.night_setback_c, False
        if not in_hours:
            return MODE_OFF, 0.0, False
        if mode_name == "cooling":
            setpoint = hvac.cooling_setpoint
            if room is not None and room.cooling_setpoint is not None:
                setpoint = room.cooling_setpoint
            return MODE_COOLING, setpoint, False
        if mode_name == "heating":
            setpoint = hvac.heating_setpoint
            if room is not None and room.heating_setpoint is not None:
                setpoint = room.heating_setpoint
            return MODE_HEATING, setpoint, False
        return MODE_OFF, 0.0, False

    @staticmethod
    def _thermostat(state: SpaceState, mode: int, setpoint: float) -> int:
        """A unit runs (and reports its mode) only while the room calls for it: it starts once
        the room is THERMOSTAT_BAND_C past the setpoint and idles once it is that far inside."""
        gap = state.temperature - setpoint if mode == MODE_COOLING else setpoint - state.temperature
        if state.asked != mode:  # switched between cooling and heating: start from demand
            state.asked, state.calling = mode, gap > 0
        if gap > THERMOSTAT_BAND_C:
            state.calling = True
        elif gap < -THERMOSTAT_BAND_C:
            state.calling = False
        return mode if state.calling else MODE_OFF

    def _season_mode(self, day: dt.date) -> str:
        mode = self._season_cache.get(day)
        if mode is None:
            mode = self._season_cache[day] = self._season_of(day)
        return mode

    def _season_of(self, day: dt.date) -> str:
        seasons = self.site.site.seasons
        if "cooling" in seasons or "heating" in seasons:
            if "cooling" in seasons and seasons["cooling"].contains(day):
                return "cooling"
            if "heating" in seasons and seasons["heating"].contains(day):
                return "heating"
            return "off"
        mean = self.scenario.weather.mean_c + self._day(day)[1]
        return "cooling" if mean > 24 else "heating" if mean < 14 else "off"

    # ---- stepping ----

    def step(self, until: float) -> None:
        """Advance every space from the current time to `until`."""
        while self.now < until:
            h = min(SUBSTEP_S, until - self.now)
            self._substep(self.now, h)
            self.now += h

    def _substep(self, t: float, h: float) -> None:
        local = self.local(t)
        workday = self._day(local.date())[0]
        season = self._season_mode(local.date())
        hour = local.hour + local.minute / 60 + local.second / 3600
        outdoor = self.outdoor(t)
        outdoor_rh = min(
            95.0,
            max(
                15.0,
                self.scenario.weather.humidity_pct - 1.5 * (outdoor - self.scenario.weather.mean_c),
            ),
        )
        energy = self.scenario.energy
        hvac = self.scenario.hvac
        for state in self.states.values():
            state.present = self._present(state, local, workday)
            mode, setpoint, held = self._hvac(state, t, hour, workday, season)
            if mode != MODE_OFF and not held:
                mode = self._thermostat(state, mode, setpoint)
            state.mode, state.running = mode, mode != MODE_OFF
            density = state.present / state.capacity if state.capacity else 0.0
            gain = OCCUPANT_GAIN_C_PER_H * density
            if state.space.type in hvac.always_on_types:
                gain += SERVER_GAIN_C_PER_H
            rate = (outdoor - state.temperature) / ENVELOPE_TAU_S + gain / 3600
            pull = 0.0
            if state.running:
                pull = (setpoint - state.temperature) / HVAC_TAU_S
                if not held:
                    pull = min(pull, 0.0) if mode == MODE_COOLING else max(pull, 0.0)
                limit = HVAC_MAX_C_PER_H / 3600
                pull = max(-limit, min(limit, pull))
            state.temperature += h * (rate + pull)
            humidity_target = outdoor_rh + 20.0 * density
            if state.running:
                humidity_target -= 12.0 if mode == MODE_COOLING else 8.0
            state.humidity += (humidity_target - state.humidity) * (
                1 - math.exp(-h / HUMIDITY_TAU_S)
            )
            co2_target = OUTDOOR_CO2_PPM + CO2_FULL_ROOM_PPM * density
            state.co2 += (co2_target - state.co2) * (1 - math.exp(-h / CO2_TAU_S))

            hours = h / 3600
            thermal_kwh = abs(pull) * 3600 * state.area * energy.hvac_kw_per_m2_per_c_h * hours
            lit = state.present > 0 or (
                state.common and workday and self.scenario.occupancy.hours.contains(hour)
            )
            electric_kw = energy.base_w_per_m2 * state.area / 1000
            if lit:
                electric_kw += energy.lighting_w_per_m2 * state.area / 1000
            electric_kw += energy.plug_w_per_person * state.present / 1000
            if (
                state.space.type == "elevator"
                and workday
                and self.scenario.occupancy.hours.contains(hour)
            ):
                electric_kw += energy.lift_kw
            used = {
                "electricity": electric_kw * hours,
                "water": energy.water_m3_per_person_h * state.present * hours,
            }
            if mode == MODE_HEATING and hvac.heating_source == "gas":
                used["natural_gas"] = thermal_kwh / GAS_KWH_PER_M3
            elif mode == MODE_HEATING and hvac.heating_source == "district":
                used["heat"] = thermal_kwh * 0.0036
            else:
                used["electricity"] += thermal_kwh / hvac.cop
            if (
                state.space.type == "canteen"
                and workday
                and any(r.contains(hour) for r in energy.cooking)
            ):
                used["natural_gas"] = used.get("natural_gas", 0.0) + energy.canteen_gas_m3_h * hours
            for members, factor, begin, end in self.overruns:
                if state.space.id in members and begin <= t < end:
                    used["electricity"] *= factor
            state.used = used
        for (device, metric), carrier in self.register_carrier.items():
            space = self._device_space[device]
            self.registers[(device, metric)] += sum(
                self.states[s].used.get(carrier, 0.0) for s in self.subtree[space]
            )
        while self.resets and self.resets[0][0] <= t + h:
            _, device, metric = self.resets.pop(0)
            self.registers[(device, metric)] = 0.0

    # ---- readings ----

    def reading(self, device: Device, rng: random.Random) -> dict[str, float | int]:
        """The values `device` reports now, for the metrics the simulator knows; others are
        left out (a device with none of them sends no telemetry)."""
        state = self.states[device.space]
        high_grade = "high-grade" in state.space.tags
        values: dict[str, float | int] = {}
        for metric in device.metrics:
            if (device.id, metric) in self.registers:
                values[metric] = round(self.registers[(device.id, metric)], 3)
            elif metric == "temperature":
                values[metric] = round(state.temperature + rng.gauss(0, 0.1), 1)
            elif metric == "humidity":
                values[metric] = round(min(99.0, max(5.0, state.humidity + rng.gauss(0, 0.5))), 1)
            elif metric == "co2":
                values[metric] = round(state.co2 + rng.gauss(0, 8))
            elif metric == "hcho":
                values[metric] = round(max(0.0, 0.03 + rng.gauss(0, 0.004)), 3)
            elif metric == "pm10":
                values[metric] = round(max(0.0, 0.05 + rng.gauss(0, 0.01)), 3)
            elif metric == "illuminance":
                lit = 560.0 if high_grade else 420.0
                values[metric] = (
                    round(lit + rng.gauss(0, 15)) if state.present else round(rng.uniform(2, 8))
                )
            elif metric == "hvac_mode":
                values[metric] = state.mode if state.running else MODE_OFF
            elif metric == "occupied":
                values[metric] = 1 if state.present else 0
            elif metric == "window_open":
                values[metric] = 0
        return values
