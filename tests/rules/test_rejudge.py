"""Late events (issue 17, defect 3): an event behind one already applied is late (applying it
would judge events out of order), and re-judging from an earlier snapshot gives the verdicts
of in-order delivery (rules/rejudge.py)."""

from __future__ import annotations

from typing import Any

from rules.engine import SiteEngine
from rules.rejudge import horizon, rejudge
from rules.verdicts import ComplianceInterval, Event, LateReading, ViolationStarted
from tests.rules.conftest import T0, TEMPERATURE, make_clause, make_site, sensor

CLEANING = {"kind": "obligation", "event": "cleaning.completed", "every": "1h"}
SITE = make_site(
    devices=[
        sensor("d1", "o1", temperature=TEMPERATURE),
        {"id": "reader-1", "space": "wc1", "metrics": {}},
    ]
)
CLAUSES = [make_clause(CLEANING, applies_to={"space_types": ["toilet"]})]


def clean(offset: float) -> Event:
    return Event("reader-1", T0 + offset, "cleaning.completed", space="wc1", seq=int(offset))


def intervals(outputs: list[Any]) -> list[tuple[float, float, str]]:
    return [
        (o.start - T0, o.end - T0, o.status) for o in outputs if isinstance(o, ComplianceInterval)
    ]


def test_an_event_behind_one_already_applied_is_late() -> None:
    engine = SiteEngine(SITE, CLAUSES, lateness=60)
    engine.observe_event(clean(100))
    engine.observe_event(clean(300))  # releases the one at 100
    engine.observe_event(clean(90))
    late = [o for o in engine.drain() if isinstance(o, LateReading)]
    assert [(o.ts - T0, o.metric) for o in late] == [(90, "cleaning.completed")]


def test_a_cleaning_ten_minutes_late_rejudged_gives_the_in_order_verdicts() -> None:
    engine = SiteEngine(SITE, CLAUSES, lateness=5)
    engine.advance(T0)
    snapshot = engine.snapshot()
    engine.observe_event(clean(10))
    engine.advance(T0 + 11)
    engine.advance(T0 + 3600 + 600)  # overdue at 3610
    engine.observe_event(clean(3500))  # done in time, delivered 11 minutes late
    live = engine.drain()
    assert [o.ts - T0 for o in live if isinstance(o, LateReading)] == [3500]
    assert any(isinstance(o, ViolationStarted) for o in live)

    assert horizon(snapshot, 5) <= T0 + 3500
    result = rejudge(SITE, CLAUSES, snapshot, [clean(10), clean(3500)], T0 + 4200, lateness=5)

    in_order = SiteEngine(SITE, CLAUSES, lateness=5)
    in_order.advance(T0)
    in_order.observe_event(clean(10))
    in_order.advance(T0 + 11)
    in_order.observe_event(clean(3500))
    in_order.advance(T0 + 4200)
    expected = in_order.drain()
    assert not [o for o in result.outputs if isinstance(o, ViolationStarted)]
    assert intervals(result.outputs) == intervals(expected)
    assert result.spans() == {}
    assert result.engine.snapshot()["parts"] == in_order.snapshot()["parts"]
