"""Shape 4: quotas on a cumulative register over calendar periods.

Consumption is the sum of the positive differences of successive good register readings whose
later reading falls in the period; a register that goes backwards is a reset (the engine emits
`RegisterReset`) and becomes the new baseline, never negative consumption. Budget-to-date is the
budget pro-rated by elapsed period time. Once `forecast_after` of the period has elapsed, a
linear forecast above the budget is a warning (kind "warning"); consumption above the budget is
a breach (kind "violation") until the period ends.
"""

from __future__ import annotations

import math
from typing import Any

from rules._instances import BoundClause, Instance
from rules._slots import BACKWARDS, INF, NEG_INF, MetricSlot, from_json, to_json
from rules.clause import QuotaCheck
from rules.schedule import Period, period_bounds
from rules.verdicts import (
    AlertKind,
    Evidence,
    Status,
    Subject,
    ViolationEnded,
    ViolationStarted,
)


class Quota(Instance):
    __slots__ = (
        "baseline",
        "before_reset",
        "breached_since",
        "budget",
        "consumed",
        "forecast_after",
        "params",
        "period",
        "period_end",
        "period_start",
        "unit",
        "warned_since",
    )

    def __init__(
        self,
        bound: BoundClause,
        subject: Subject,
        uid: int,
        *,
        check: QuotaCheck,
        slot: MetricSlot,
        budget: float,
        params: dict[str, float],
        unit: str,
    ) -> None:
        super().__init__(bound, subject, uid)
        self.period: Period = check.period
        self.forecast_after = check.forecast_after
        self.slot = slot
        self.budget = budget
        self.params = params
        self.unit = unit
        self.baseline = math.nan  # last good register value
        # The value before a backwards step: when the next reading is back above it, the step
        # was a glitch and consumption is counted from here, not from the glitch.
        self.before_reset = math.nan
        self.consumed = 0.0
        self.period_start = NEG_INF
        self.period_end = NEG_INF
        self.warned_since = INF
        self.breached_since = INF

    def wake(self, t: float) -> None:
        self.t = t
        self.roll_periods(t)
        self.commit(t, self.status(t))
        self.plan(t)

    def evaluate(self, t: float) -> None:
        t = max(t, self.t)
        self.t = t
        self.roll_periods(t)
        slot = self.slot
        if slot.fault == BACKWARDS:
            if math.isnan(self.before_reset):
                self.before_reset = self.baseline
            self.baseline = slot.value
        elif not slot.fault and slot.ts == t:
            value = slot.value
            if value >= self.before_reset:  # False while before_reset is NaN
                self.baseline = self.before_reset
            self.before_reset = math.nan
            if value > self.baseline:  # False while there is no baseline yet (NaN)
                self.consumed += value - self.baseline
            self.baseline = value
        self.judge(t)
        self.commit(t, self.status(t))
        self.plan(t)

    def roll_periods(self, t: float) -> None:
        if self.period_end == NEG_INF:
            self.period_start, self.period_end = period_bounds(
                t, self.period, self.bound.schedule.zone
            )
        while self.period_end <= t:
            end = self.period_end
            self.close(end)
            self.period_start, self.period_end = period_bounds(
                end, self.period, self.bound.schedule.zone
            )
            self.consumed = 0.0

    def close(self, at: float) -> None:
        if self.warned_since < INF:
            self.finish("warning", self.warned_since, at)
            self.warned_since = INF
        if self.breached_since < INF:
            self.finish("violation", self.breached_since, at)
            self.breached_since = INF
        self.commit(at, self.status(at))

    def judge(self, t: float) -> None:
        elapsed = (t - self.period_start) / (self.period_end - self.period_start)
        if not self.inside(t):
            return
        if self.breached_since == INF and self.consumed > self.budget:
            if self.warned_since < INF:
                self.finish("warning", self.warned_since, t)
                self.warned_since = INF
            self.breached_since = t
            self.begin("violation", t, elapsed, "consumption above the period budget")
            return
        if self.breached_since < INF:
            return
        forecast = self.consumed / elapsed if elapsed > 0 else 0.0
        over = elapsed >= self.forecast_after and forecast > self.budget
        if over and self.warned_since == INF:
            self.warned_since = t
            self.begin("warning", t, elapsed, "forecast to exceed the period budget")
        elif not over and self.warned_since < INF:
            self.finish("warning", self.warned_since, t)
            self.warned_since = INF

    def begin(self, kind: AlertKind, t: float, elapsed: float, reason: str) -> None:
        params = dict(self.params)
        params.update(
            budget=self.budget,
            budget_to_date=self.budget * elapsed,
            consumed=self.consumed,
            forecast=self.consumed / elapsed if elapsed > 0 else 0.0,
            period_start=self.period_start,
            period_end=self.period_end,
        )
        slot = self.slot
        evidence = (Evidence(slot.ts, slot.metric, slot.value, slot.device),)
        self.bound.out.append(
            ViolationStarted(
                self.bound.ref,
                self.subject,
                kind,
                t,
                t,
                self.consumed,
                self.unit,
                reason,
                params,
                evidence,
                slot.metric,
            )
        )

    def finish(self, kind: AlertKind, started: float, at: float) -> None:
        self.bound.out.append(
            ViolationEnded(self.bound.ref, self.subject, kind, started, at, self.consumed)
        )

    def status(self, t: float) -> Status:
        if not self.inside(t):
            return "outside_schedule"
        if self.breached_since <= t:
            return "violating"
        if t >= self.slot.until:
            return "not_assessable"
        return "compliant"

    def plan(self, t: float) -> None:
        due = min(self.seg_end, self.period_end)
        if t < self.slot.until < due:
            due = self.slot.until
        self.next_due = due if due > t else INF
        self.schedule_timer()

    def state(self) -> dict[str, Any]:
        state = super().state()
        state.update(
            baseline=to_json(self.baseline),
            before_reset=to_json(self.before_reset),
            consumed=self.consumed,
            period_start=to_json(self.period_start),
            period_end=to_json(self.period_end),
            warned_since=to_json(self.warned_since),
            breached_since=to_json(self.breached_since),
        )
        return state

    def load(self, state: dict[str, Any]) -> None:
        super().load(state)
        self.baseline = from_json(state["baseline"], math.nan)
        self.before_reset = from_json(state["before_reset"], math.nan)
        self.consumed = float(state["consumed"])
        self.period_start = from_json(state["period_start"], NEG_INF)
        self.period_end = from_json(state["period_end"], NEG_INF)
        self.warned_since = from_json(state["warned_since"], INF)
        self.breached_since = from_json(state["breached_since"], INF)
