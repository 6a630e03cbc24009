"""Running a scenario against a broker: in real time, accelerated, or as fast as possible.

Time modes:
- paced (`speed=1` real time, `speed=3600` an hour per second): simulated time runs `speed`
  times faster than the wall clock from `start`, but never ahead of the wall clock: once an
  accelerated run catches up with now it continues in real time. Messages carry simulated time.
- as fast as possible (`as_fast_as_possible=True`) from `start` to `until` (or `start + span`),
  which is clipped to now: ingest rejects readings from the future.

Because ingest also rejects readings stamped more than its skew into the future, accelerated and
fast runs start in the past (`start="-7d"`); the future-clock fault is the only exception, by
design.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from rules.site import SiteModel
from simulators.publish import DEFAULT_MAX_IN_FLIGHT, Publisher
from simulators.scenario import Scenario, resolve_start
from simulators.stream import Manifest, ScheduledMessage, Simulation

StartSpec = float | dt.datetime | str | None


@dataclass(slots=True)
class RunResult:
    manifest: Manifest
    published: int
    start: float  # epoch seconds, simulated time
    reached: float  # simulated time of the last message sent
    stopped: bool  # ended by stop_event rather than by reaching the end


def topic_of(prefix: str, site: str, message: ScheduledMessage) -> str:
    return f"{prefix}/{site}/{message.device}/{message.channel}"


def plan(
    scenario: Scenario,
    site: SiteModel,
    *,
    start: StartSpec = None,
    until: float | dt.datetime | None = None,
    span: float | None = None,
    as_fast_as_possible: bool = False,
    now: float,
) -> tuple[float, float | None]:
    """(start, end) of a run, as epoch seconds; end None means until stopped."""
    end: float | None = until.timestamp() if isinstance(until, dt.datetime) else until
    if start is None and as_fast_as_possible:
        if end is None and span is None:
            raise ValueError("a run as fast as possible needs `until` or `span`")
        begin = (end if end is not None else now) - (span or 0.0)
    elif isinstance(start, dt.datetime):
        if start.tzinfo is None:
            raise ValueError("start must be an aware datetime")
        begin = start.timestamp()
    elif isinstance(start, int | float):
        begin = float(start)
    else:
        begin = resolve_start(start or scenario.run.start, now, site)
    if end is None and span is not None:
        end = begin + span
    if as_fast_as_possible:
        if end is None:
            raise ValueError("a run as fast as possible needs `until` or `span`")
        end = min(end, now)  # never publish the future
    if end is not None and end <= begin:
        raise ValueError("the run ends before it starts (is the start in the future?)")
    return begin, end


def run_scenario(
    scenario: Scenario,
    site: SiteModel,
    mqtt_url: str,
    prefix: str = "cw",
    *,
    speed: float | None = None,
    until: float | dt.datetime | None = None,
    span: float | None = None,
    as_fast_as_possible: bool = False,
    start: StartSpec = None,
    stop_event: threading.Event | None = None,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    on_message: Callable[[str, ScheduledMessage], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> RunResult:
    """Publishes the scenario's stream and returns what it injected. Blocks until the end (or
    until `stop_event` is set); every published message is acknowledged before it returns.

    `start`: epoch seconds, an aware datetime, or text for `resolve_start` ('-7d', 'now',
    'last-workday 08:30'); default: the scenario's `run.start`, or `until - span` when fast.
    `speed`: default the scenario's `run.speed`. Raises ValueError for an impossible plan and
    simulators.publish.PublishError when the broker cannot be reached.
    """
    stop = stop_event or threading.Event()
    now = clock()
    begin, end = plan(
        scenario, site, start=start, until=until, span=span,
        as_fast_as_possible=as_fast_as_possible, now=now,
    )  # fmt: skip
    pace = speed or scenario.run.speed
    simulation = Simulation(scenario, site, begin, end, now=now)
    site_id = site.site.id
    wall_start = clock()
    reached = begin
    stopped = False
    with Publisher(mqtt_url, max_in_flight=max_in_flight) as publisher:
        for message in simulation.messages():
            if not as_fast_as_possible:
                # Simulated time may run ahead of the start by speed × elapsed, never past now.
                due_wall = max(wall_start + (message.due - begin) / pace, message.due)
                delay = due_wall - clock()
                if delay > 0 and stop.wait(delay):
                    stopped = True
                    break
            if stop.is_set():
                stopped = True
                break
            topic = topic_of(prefix, site_id, message)
            publisher.publish(topic, message.payload)
            if on_message is not None:
                on_message(topic, message)
            reached = message.due
        published = publisher.published
    return RunResult(simulation.manifest, published, begin, reached, stopped)


class SimulatorThread(threading.Thread):
    """`run_scenario` in a daemon thread: `start()`, later `stop()`; `result` or `error` after."""

    def __init__(
        self,
        scenario: Scenario,
        site: SiteModel,
        mqtt_url: str,
        prefix: str = "cw",
        **options: object,
    ) -> None:
        super().__init__(name=f"simulator-{scenario.name}", daemon=True)
        self._stop_event = threading.Event()
        self._args = (scenario, site, mqtt_url, prefix)
        self._options = options
        self.result: RunResult | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = run_scenario(*self._args, stop_event=self._stop_event, **self._options)  # type: ignore[arg-type]
        except BaseException as exc:  # reported to whoever joins the thread
            self.error = exc

    def stop(self, timeout: float = 30.0) -> None:
        self._stop_event.set()
        self.join(timeout)
