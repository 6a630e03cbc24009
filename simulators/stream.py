"""The message stream of a scenario run: readings and events as SPEC §2 payloads, with the
scenario's faults applied, and a manifest of everything injected on purpose.

`Simulation(...).messages()` yields `ScheduledMessage`s in the order they are to be sent, each
with the simulated time at which it is due. The stream is a pure function of the scenario, the site
model, the start, the end and `now` (the wall clock at the run's start, which only the
future-clock fault reads): the same inputs give byte-identical messages.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Literal

import orjson

from rules.site import Device, SiteModel
from simulators.building import Building
from simulators.calendar import is_workday
from simulators.scenario import (
    Duplicate,
    ElectricityOverrun,
    EventsSkipped,
    FutureClock,
    Malformed,
    Obligation,
    OutOfOrder,
    Overcooling,
    Overheating,
    RegisterReset,
    Scenario,
    Silent,
    Spike,
    Stuck,
    TimeRange,
    resolve_at,
)

Channel = Literal["telemetry", "event"]


@dataclass(frozen=True, slots=True)
class ScheduledMessage:
    due: float  # simulated time at which it is sent
    device: str
    channel: Channel
    payload: bytes


@dataclass(slots=True)
class Injected:
    """One violation or fault put into the stream on purpose, and what should become of it."""

    kind: str
    expect: str  # violation | not_assessable | register_reset | dead_letter | late | deduplicated
    device: str | None = None
    space: str | None = None
    metric: str | None = None
    start: float | None = None  # epoch seconds (simulated time)
    end: float | None = None
    seqs: list[int] = field(default_factory=list)  # seq numbers of the affected messages
    count: int = 0  # messages affected (sent, held back, corrupted, dropped)
    note: str = ""


@dataclass(slots=True)
class Manifest:
    scenario: str
    seed: int
    site: str
    start: float
    end: float | None
    injected: list[Injected] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[Injected]:
        return [item for item in self.injected if item.kind == kind]

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2)


@dataclass(slots=True)
class _Pending:
    """A normal message before encoding: faults may still change its values or its stamp."""

    ts: float
    device: str
    channel: Channel
    body: dict[str, object]


class Simulation:
    def __init__(
        self,
        scenario: Scenario,
        site: SiteModel,
        start: float,
        end: float | None = None,
        *,
        now: float | None = None,
    ) -> None:
        problems = scenario.problems_against(site)
        if problems:
            raise ValueError(
                f"scenario {scenario.name!r} does not fit the site: " + "; ".join(problems)
            )
        self.scenario = scenario
        self.site = site
        self.start = start
        self.end = end
        self.now = start if now is None else now
        self.zone = site.zone()
        self.building = Building(scenario, site, start)
        self.interval = scenario.sample_interval
        self.devices = {d.id: d for d in site.devices}
        self.manifest = Manifest(scenario.name, scenario.seed, site.site.id, start, end)
        self._seq: dict[str, int] = {}
        # Per device: a reading phase inside the sample interval, and a noise generator.
        self._phase = {
            d.id: zlib.crc32(f"{scenario.seed}:{d.id}".encode()) % int(self.interval)
            for d in site.devices
        }
        self._noise = {d.id: random.Random(f"{scenario.seed}:noise:{d.id}") for d in site.devices}
        self._events_by_day: dict[dt.date, list[_Pending]] = {}
        self._skips = [
            (v.space, v.type, self._at(v.at), self._at(v.at) + v.for_)
            for v in scenario.violations
            if isinstance(v, EventsSkipped)
        ]
        self._record_violations()
        self._faults = [(self._at(f.at), f) for f in scenario.faults]
        self._fault_items: dict[int, Injected] = {}
        for index, (at, fault) in enumerate(self._faults):
            self._fault_items[index] = self._fault_record(fault, at)
        self._stuck_values: dict[int, float | int] = {}
        self._remaining: dict[int, int] = {
            i: getattr(f, "count", 0) for i, (_, f) in enumerate(self._faults)
        }
        # Out-of-order: held back per device.
        self._held: dict[str, tuple[ScheduledMessage, int]] = {}

    def _at(self, text: str) -> float:
        return resolve_at(text, self.start, self.site)

    # ---- manifest ----

    def _expect(self, begin: float, season: str | None = None) -> str:
        if self.end is not None and begin >= self.end:
            return "outside_run"
        if season is not None and not self._touches_season(season, begin):
            return "outside_season"  # the clause is judged in that season only
        return "violation"

    def _touches_season(self, name: str, begin: float) -> bool:
        seasons = self.site.site.seasons
        if name not in seasons:
            return True
        stop = self.end if self.end is not None else begin + 86400.0
        day = dt.datetime.fromtimestamp(begin, self.zone).date()
        last = dt.datetime.fromtimestamp(stop, self.zone).date()
        while day <= last:
            if seasons[name].contains(day):
                return True
            day += dt.timedelta(days=1)
        return False

    def _record_violations(self) -> None:
        for violation in self.scenario.violations:
            if isinstance(violation, Overcooling | Overheating):
                space = violation.space
                begin = self._at(violation.start) if violation.start else self.start
                stop = self._at(violation.end) if violation.end else self.end
                metric = "temperature"
                season = "cooling" if isinstance(violation, Overcooling) else "heating"
                self.manifest.injected.append(
                    Injected(
                        violation.kind,
                        self._expect(begin, season),
                        space=space,
                        metric=metric,
                        start=begin,
                        end=stop,
                        note=f"held at {violation.setpoint} °C while the HVAC runs",
                    )
                )
            elif isinstance(violation, ElectricityOverrun):
                begin = self._at(violation.start) if violation.start else self.start
                stop = self._at(violation.end) if violation.end else self.end
                self.manifest.injected.append(
                    Injected(
                        violation.kind,
                        self._expect(begin),
                        space=violation.space or self.building._root(),
                        metric="energy_kwh",
                        start=begin,
                        end=stop,
                        note=f"electricity use × {violation.factor}",
                    )
                )
            elif isinstance(violation, EventsSkipped):
                begin = self._at(violation.at)
                self.manifest.injected.append(
                    Injected(
                        violation.kind,
                        self._expect(begin),
                        space=violation.space,
                        start=begin,
                        end=begin + violation.for_,
                        note=f"no {violation.type} events",
                    )
                )

    def _fault_record(self, fault: object, at: float) -> Injected:
        expect = {
            "silent": "not_assessable",
            "stuck": "not_assessable",
            "spike": "not_assessable",
            "register_reset": "register_reset",
            "duplicate": "deduplicated",
            "out_of_order": "late",
            "malformed": "dead_letter",
            "future_clock": "dead_letter",
        }[fault.kind]  # type: ignore[attr-defined]
        end = at + fault.for_ if isinstance(fault, Silent | Stuck) else None
        if self.end is not None and at >= self.end:
            expect = "outside_run"  # the run ends before the fault is due
        item = Injected(
            fault.kind,  # type: ignore[attr-defined]
            expect,
            device=fault.device,  # type: ignore[attr-defined]
            space=self.devices[fault.device].space,  # type: ignore[attr-defined]
            metric=getattr(fault, "metric", None),
            start=at,
            end=end,
        )
        self.manifest.injected.append(item)
        return item

    # ---- the stream ----

    def messages(self) -> Iterator[ScheduledMessage]:
        interval = self.interval
        tick = math.floor(self.start / interval) * interval
        while self.end is None or tick < self.end:
            self.building.step(tick)
            batch = self._readings(tick) + self._events(tick, tick + interval)
            batch.sort(key=lambda p: (p.ts, p.device, p.channel))
            for index, (at, fault) in enumerate(self._faults):
                if isinstance(fault, Malformed) and tick <= max(at, self.start) < tick + interval:
                    batch_at = max(at, self.start)
                    yield from self._malformed(index, fault, batch_at)
            for pending in batch:
                if pending.ts < self.start or (self.end is not None and pending.ts >= self.end):
                    continue
                yield from self._deliver(pending)
            tick += interval
        for message, _ in self._held.values():  # whatever an out-of-order fault still holds
            yield message
        self._held.clear()

    def _readings(self, tick: float) -> list[_Pending]:
        found: list[_Pending] = []
        for device in self.site.devices:
            values = self.building.reading(device, self._noise[device.id])
            if values:
                found.append(
                    _Pending(
                        tick + self._phase[device.id], device.id, "telemetry", {"metrics": values}
                    )
                )
        return found

    def _events(self, begin: float, end: float) -> list[_Pending]:
        found: list[_Pending] = []
        day = dt.datetime.fromtimestamp(begin, self.zone).date()
        last = dt.datetime.fromtimestamp(end, self.zone).date()
        while day <= last:
            found.extend(p for p in self._events_of_day(day) if begin <= p.ts < end)
            day += dt.timedelta(days=1)
        return found

    def _events_of_day(self, day: dt.date) -> list[_Pending]:
        cached = self._events_by_day.get(day)
        if cached is not None:
            return cached
        if len(self._events_by_day) > 64:
            self._events_by_day.clear()
        events: list[_Pending] = []
        cleaning = self.scenario.cleaning
        workday = is_workday(self.site, day)
        if cleaning.days == "all" or workday:
            for space in self.site.spaces:
                if space.type not in cleaning.space_types:
                    continue
                reader = self._reader_in(space.id)
                if reader is None:
                    continue
                rng = random.Random(f"{self.scenario.seed}:cleaning:{space.id}:{day}")
                for k, ts in enumerate(
                    self._rounds(day, cleaning.hours, cleaning.every, cleaning.early_by, rng)
                ):
                    if rng.random() < cleaning.miss_probability:
                        self.manifest.injected.append(
                            Injected(
                                "cleaning_missed",
                                "violation_if_overdue",
                                device=reader.id,
                                space=space.id,
                                start=ts,
                                note="random miss",
                            )
                        )
                        continue
                    actor = cleaning.actors[(k + day.toordinal()) % len(cleaning.actors)]
                    events.append(
                        self._event(
                            ts,
                            reader.id,
                            "cleaning.completed",
                            space.id,
                            actor,
                            {"checklist": "full"},
                        )
                    )
        for index, obligation in enumerate(self.scenario.obligations):
            events.extend(self._obligation_events(index, obligation, day, workday))
        events = [e for e in events if not self._skipped(e)]
        self._events_by_day[day] = events
        return events

    def _obligation_events(
        self, index: int, obligation: Obligation, day: dt.date, workday: bool
    ) -> list[_Pending]:
        space = obligation.space or self.devices[obligation.device].space
        times: list[float] = []
        if obligation.every is not None and (obligation.days == "all" or workday):
            hours = obligation.hours
            if hours is None:
                hours = TimeRange(start=dt.time(0, 0), end=dt.time(23, 59, 59))
            rng = random.Random(f"{self.scenario.seed}:obligation:{index}:{day}")
            early = min(obligation.every / 8, 900.0)
            times.extend(self._rounds(day, hours, obligation.every, early, rng))
        for text in obligation.at:
            ts = self._at(text)
            if dt.datetime.fromtimestamp(ts, self.zone).date() == day:
                times.append(ts)
        return [
            self._event(
                ts,
                obligation.device,
                obligation.type,
                space,
                obligation.actor,
                dict(obligation.attrs),
            )
            for ts in times
        ]

    def _rounds(
        self, day: dt.date, hours: TimeRange, every: float, early_by: float, rng: random.Random
    ) -> list[float]:
        """Times of duties due every `every` within `hours` on `day`: each comes up to
        `early_by` early, and rounds are spaced so no gap exceeds `every`."""
        first = dt.datetime.combine(day, hours.start, self.zone).timestamp()
        last = dt.datetime.combine(day, hours.end, self.zone).timestamp()
        spacing = max(every - early_by, 1.0)
        times: list[float] = []
        nominal = first
        while nominal < last:
            times.append(
                float(round(nominal - rng.uniform(0.0, early_by))) if nominal > first else first
            )
            nominal += spacing
        return times

    def _reader_in(self, space_id: str) -> Device | None:
        in_space = [d for d in self.site.devices if d.space == space_id]
        for device in in_space:
            if not device.metrics or "reader" in device.kind:
                return device
        return in_space[0] if in_space else None

    def _event(
        self, ts: float, device: str, kind: str, space: str, actor: str, attrs: dict[str, object]
    ) -> _Pending:
        return _Pending(
            ts, device, "event", {"type": kind, "space": space, "actor": actor, "attrs": attrs}
        )

    def _skipped(self, event: _Pending) -> bool:
        for space, kind, begin, end in self._skips:
            if (
                event.body["space"] == space
                and event.body["type"] == kind
                and begin <= event.ts < end
            ):
                return True
        return False

    # ---- faults ----

    def _deliver(self, pending: _Pending) -> Iterator[ScheduledMessage]:
        stamp = pending.ts
        touched: list[Injected] = []  # faults that changed this message: they get its seq
        for index, (at, fault) in enumerate(self._faults):
            if fault.device != pending.device or pending.ts < at:
                continue
            item = self._fault_items[index]
            if isinstance(fault, Silent) and pending.ts < at + fault.for_:
                item.count += 1
                return
            metrics = pending.body.get("metrics")
            if not isinstance(metrics, dict):
                continue  # an event: only silence applies to it
            if (
                isinstance(fault, Stuck)
                and pending.ts < at + fault.for_
                and fault.metric in metrics
            ):
                metrics[fault.metric] = self._stuck_values.setdefault(index, metrics[fault.metric])
                touched.append(item)
            elif (
                isinstance(fault, Spike) and self._remaining[index] > 0 and fault.metric in metrics
            ):
                metrics[fault.metric] = self._spike_value(fault)
                self._remaining[index] -= 1
                touched.append(item)
            elif isinstance(fault, FutureClock) and self._remaining[index] > 0:
                stamp = max(pending.ts, self.now) + fault.skew
                self._remaining[index] -= 1
                touched.append(item)
            elif isinstance(fault, RegisterReset) and not item.seqs and fault.metric in metrics:
                touched.append(item)  # the first reading after the reset
        seq = self._next_seq(pending.device, pending.ts)
        for item in touched:
            item.count += 1
            item.seqs.append(seq)
            item.end = pending.ts
        payload = self._encode(stamp, seq, pending.body)
        yield from self._reorder(
            ScheduledMessage(pending.ts, pending.device, pending.channel, payload), seq
        )

    def _reorder(self, message: ScheduledMessage, seq: int) -> Iterator[ScheduledMessage]:
        device = message.device
        held = self._held.pop(device, None)
        for index, (at, fault) in enumerate(self._faults):
            if fault.device != device or message.due < at or self._remaining[index] <= 0:
                continue
            item = self._fault_items[index]
            if isinstance(fault, OutOfOrder) and held is None:
                self._held[device] = (message, seq)
                self._remaining[index] -= 1
                item.count += 1
                item.seqs.append(seq)
                item.end = message.due
                return
            if isinstance(fault, Duplicate):
                self._remaining[index] -= 1
                item.count += 1
                item.seqs.append(seq)
                item.end = message.due
                yield message
                yield message
                if held is not None:
                    yield ScheduledMessage(message.due, device, held[0].channel, held[0].payload)
                return
        yield message
        if held is not None:
            # Delivered after its successor: now due (and sent) with it.
            yield ScheduledMessage(message.due, device, held[0].channel, held[0].payload)

    def _spike_value(self, fault: Spike) -> float:
        if fault.value is not None:
            return fault.value
        spec = self.devices[fault.device].metrics[fault.metric]
        return spec.range[1] * 10 if spec.range is not None and spec.range[1] > 0 else 1e6

    def _malformed(self, index: int, fault: Malformed, at: float) -> Iterator[ScheduledMessage]:
        item = self._fault_items[index]
        metric = next(iter(self.devices[fault.device].metrics), "temperature")
        stamp = self._iso(at)
        bodies = {
            "truncated": f'{{"ts": "{stamp}", "metrics": {{"{metric}": 2'.encode(),
            "not_json": b"\xff\xfeGARBAGE not json at all",
            "nan": f'{{"ts": "{stamp}", "metrics": {{"{metric}": NaN}}}}'.encode(),
            "string_value": f'{{"ts": "{stamp}", "metrics": {{"{metric}": "warm"}}}}'.encode(),
            "unknown_metric": f'{{"ts": "{stamp}", "metrics": {{"flux_capacity": 1.2}}}}'.encode(),
            "bad_ts": f'{{"ts": "yesterday at noon", "metrics": {{"{metric}": 1}}}}'.encode(),
            "no_metrics": f'{{"ts": "{stamp}"}}'.encode(),
        }
        for k in range(fault.count):
            variant = fault.variants[k % len(fault.variants)]
            item.count += 1
            item.end = at
            item.note = ", ".join(fault.variants[: min(fault.count, len(fault.variants))])
            yield ScheduledMessage(at, fault.device, "telemetry", bodies[variant])

    # ---- encoding ----

    def _next_seq(self, device: str, ts: float) -> int:
        """The reading's simulated time in epoch milliseconds, kept strictly increasing per
        device: a rerun over the same time repeats its seqs (true duplicates, deduplicated),
        while any later run continues above them, as a real device's counter would."""
        seq = max(self._seq.get(device, 0) + 1, int(ts * 1000))
        self._seq[device] = seq
        return seq

    def _iso(self, ts: float) -> str:
        moment = dt.datetime.fromtimestamp(ts, self.zone)
        return moment.isoformat(timespec="seconds" if ts == int(ts) else "milliseconds")

    def _encode(self, ts: float, seq: int, body: dict[str, object]) -> bytes:
        return orjson.dumps({"ts": self._iso(ts), "seq": seq, **body})
