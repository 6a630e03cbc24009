"""Shape 3: obligations. An expected event at least every N of schedule time (rolling), or at
least once in each calendar period; overdue after a grace, by the passage of time alone.

Rolling (`every`): the deadline is `grace` after the moment at which `every` seconds of schedule
time have passed since the last event (or since the instance started). Calendar (`per`): a
period that has any schedule time is met by an event in [period start, period end + grace); a
partial first period (the instance started inside it) is not judged. An overdue obligation is a
violation from the deadline until the next event, which ends it at the event's time.
"""

from __future__ import annotations

import math
from typing import Any, Final

from rules._instances import BoundClause, Instance
from rules._slots import INF, NEG_INF, from_json, to_json
from rules.clause import ObligationCheck
from rules.durations import describe_duration
from rules.schedule import Period, period_bounds
from rules.verdicts import (
    Event,
    Evidence,
    Status,
    Subject,
    ViolationEnded,
    ViolationStarted,
)

# Calendar periods passed over at once without schedule time before giving up (1000 days).
_MAX_PERIODS_SKIPPED: Final = 1000


class Obligation(Instance):
    __slots__ = (
        "deadline",
        "event_type",
        "every",
        "grace",
        "last_event",
        "overdue_since",
        "params",
        "per",
        "period_end",
        "period_start",
        "started",
    )

    def __init__(
        self,
        bound: BoundClause,
        subject: Subject,
        uid: int,
        *,
        check: ObligationCheck,
        params: dict[str, float],
    ) -> None:
        super().__init__(bound, subject, uid)
        self.event_type = check.event
        self.every = check.every
        self.per: Period | None = check.per
        self.grace = check.grace
        self.params = params
        self.started = NEG_INF
        self.last_event = NEG_INF
        self.overdue_since = INF
        self.deadline = INF
        self.period_start = NEG_INF
        self.period_end = NEG_INF

    # ---- time ----

    def wake(self, t: float) -> None:
        if self.started == NEG_INF:
            self.start(t)
        self.t = t
        self.run_deadlines(t)
        self.commit(t, self.status(t))
        self.plan(t)

    def evaluate(self, t: float) -> None:  # obligations take events, not readings
        self.wake(max(t, self.t))

    def evaluate_event(self, event: Event) -> None:
        t = max(event.ts, self.t)
        if self.started == NEG_INF:
            self.start(t)
        self.t = t
        self.run_deadlines(t)
        self.last_event = t
        if self.overdue_since < INF:
            self.bound.out.append(
                ViolationEnded(
                    self.bound.ref,
                    self.subject,
                    "violation",
                    self.overdue_since,
                    t,
                    self.overdue_for(t),
                )
            )
            self.overdue_since = INF
        self.set_deadline(t)
        self.commit(t, self.status(t))
        self.plan(t)

    def last_done(self, t: float) -> None:
        """The subject last met this obligation at `t`, before judging began (the site model's
        `last_done`): it counts as the last event. Restored state overrides it."""
        self.last_event = t

    def take_baseline(self, at: float, now: float) -> bool:
        """A last-done time given while judging (the registry changed, not an input): the
        subject last met this obligation at `at`. Only a time later than the last event counts
        (false otherwise). Applied at `t`, the instance's time brought to `now`; nothing before
        `t` is rewritten:

        - an instance not started yet takes it as `last_done`;
        - overdue, and `at` would have met the obligation (rolling: the deadline counted from
          `at` is not before `t`; calendar: `at` is in or after the missed period), the
          violation ends at `t`; overdue otherwise, it stays as recorded;
        - not overdue, the deadline is counted again from `at`; one before `t` becomes `t`, so
          the violation starts at `t`, never earlier (the engine never writes into the past)."""
        if at <= self.last_event:
            return False
        if self.started == NEG_INF:
            self.last_done(at)
            return True
        t = max(self.t, now)
        self.run_deadlines(t)
        self.t = t
        self.last_event = at
        if self.overdue_since < INF and self.baseline_meets(at, t):
            self.bound.out.append(
                ViolationEnded(
                    self.bound.ref,
                    self.subject,
                    "violation",
                    self.overdue_since,
                    t,
                    self.overdue_for(t),
                )
            )
            self.overdue_since = INF
        if self.overdue_since == INF:
            self.set_deadline(t)
            self.deadline = max(self.deadline, t)
        self.commit(t, self.status(t))
        self.plan(t)
        return True

    def baseline_meets(self, at: float, t: float) -> bool:
        """Whether a last-done time `at` meets the obligation whose violation runs at `t`."""
        if self.every is not None:
            return self.bound.schedule.after_inside_seconds(at, self.every) + self.grace >= t
        assert self.per is not None
        # Periods are whole local days, weeks...: one second before the missed period's end
        # is inside it.
        missed_end = self.overdue_since - self.grace
        missed_start, _ = period_bounds(missed_end - 1.0, self.per, self.bound.schedule.zone)
        return at >= missed_start

    def start(self, t: float) -> None:
        self.started = t
        if self.per is not None:
            # Judge from the first whole period on.
            first_start, first_end = period_bounds(t, self.per, self.bound.schedule.zone)
            if first_start < t:
                first_start, first_end = period_bounds(
                    first_end, self.per, self.bound.schedule.zone
                )
            self.period_start, self.period_end = first_start, first_end
        self.set_deadline(t)

    def set_deadline(self, t: float) -> None:
        if self.every is not None:
            # The last event, or the start; a last-done time may be before the start.
            anchor = self.last_event if self.last_event > NEG_INF else self.started
            self.deadline = (
                self.bound.schedule.after_inside_seconds(anchor, self.every) + self.grace
            )
            return
        # The first period not yet over, met or free of schedule time is the one to watch.
        for _ in range(_MAX_PERIODS_SKIPPED):
            if self.period_end + self.grace > t and self.judged_period():
                self.deadline = self.period_end + self.grace
                return
            self.next_period()
        self.deadline = INF  # no schedule time in sight (for example past effective_to)

    def judged_period(self) -> bool:
        if self.last_event >= self.period_start:
            return False  # met already
        return self.bound.schedule.inside_seconds(self.period_start, self.period_end) > 0

    def next_period(self) -> None:
        assert self.per is not None
        self.period_start, self.period_end = period_bounds(
            self.period_end, self.per, self.bound.schedule.zone
        )

    def run_deadlines(self, t: float) -> None:
        # Strictly before t: an event exactly at the deadline is in time.
        while self.deadline < t:
            due = self.deadline
            if self.overdue_since == INF:
                self.overdue_since = due
                self.commit(due, self.status(due))
                self.bound.out.append(
                    ViolationStarted(
                        self.bound.ref,
                        self.subject,
                        "violation",
                        due,
                        due,
                        None,
                        None,
                        self.reason(),
                        dict(self.params),
                        self.last_evidence(),
                    )
                )
            if self.per is None:
                self.deadline = INF  # a rolling obligation stays overdue until an event
                return
            self.next_period()
            self.set_deadline(due)

    def status(self, t: float) -> Status:
        if not self.inside(t):
            return "outside_schedule"
        return "violating" if self.overdue_since <= t else "compliant"

    def plan(self, t: float) -> None:
        # Wake just after the deadline (it is overdue only once the deadline has passed).
        due = min(self.seg_end, math.nextafter(self.deadline, INF))
        self.next_due = due if due > t else INF
        self.schedule_timer()

    def overdue_for(self, t: float) -> float:
        return t - self.overdue_since

    def reason(self) -> str:
        if self.every is not None:
            every = describe_duration(self.every)
            return f"no {self.event_type} for {every} of schedule time (+ grace)"
        return f"no {self.event_type} in the {self.per}"

    def last_evidence(self) -> tuple[Evidence, ...]:
        if self.last_event == NEG_INF:
            return ()
        return (Evidence(self.last_event, self.event_type, 1.0, self.subject.space),)

    # ---- snapshot ----

    def state(self) -> dict[str, Any]:
        state = super().state()
        state.update(
            started=to_json(self.started),
            last_event=to_json(self.last_event),
            overdue_since=to_json(self.overdue_since),
            deadline=to_json(self.deadline),
            period_start=to_json(self.period_start),
            period_end=to_json(self.period_end),
        )
        return state

    def load(self, state: dict[str, Any]) -> None:
        super().load(state)
        self.started = from_json(state["started"], NEG_INF)
        self.last_event = from_json(state["last_event"], NEG_INF)
        self.overdue_since = from_json(state["overdue_since"], INF)
        self.deadline = from_json(state["deadline"], INF)
        self.period_start = from_json(state["period_start"], NEG_INF)
        self.period_end = from_json(state["period_end"], NEG_INF)
