"""Field check-ins (issue 19): which tasks a space's obligations accept, and the reporter id the
events of a check-in carry. Pure: the site model and the clause versions come in.

A check-in is an obligation's event (`cleaning.completed`, `maintenance.done`...) recorded by a
signed-in person on the phone page of a space (api/routers/checkins.py). It enters the pipeline
like an event published over MQTT, on the topic of the reporter `CHECKIN_REPORTER`: no device of
the site, so the decoder (ingest/decode.py) takes events, and only events, from it for every
site. The event names its space, so the engine counts it there (an event counts for the space
it names).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from rules.clause import ClauseVersion, ObligationCheck
from rules.site import SiteModel

CHECKIN_REPORTER = "checkin"

# How the phone page and the printed sheet name the usual tasks (Chinese, English); another
# task is named by its clause's title.
TASK_LABELS: dict[str, tuple[str, str]] = {
    "cleaning.completed": ("已清洁", "cleaned"),
    "inspection.done": ("已检查", "inspected"),
    "maintenance.done": ("已维保", "maintained"),
    "patrol.done": ("已巡查", "patrolled"),
    "sample.retained": ("已留样", "sample retained"),
}


@dataclass(frozen=True, slots=True)
class Task:
    """One task a space accepts: the event type and the clauses it satisfies there."""

    event: str
    label_zh: str
    label_en: str
    clauses: tuple[str, ...]  # clause ids, sorted


def space_tasks(
    site: SiteModel, space_id: str, clauses: Iterable[ClauseVersion], day: dt.date
) -> list[Task]:
    """The tasks the obligations in force on `day` accept in `space_id` (by event type), in
    event-type order. Raises KeyError for a space not in the site."""
    space = site.space(space_id)
    lineage = frozenset(site.ancestors(space_id))
    by_event: dict[str, list[ClauseVersion]] = {}
    for clause in clauses:
        check = clause.check
        if not isinstance(check, ObligationCheck) or not clause.in_force_on(day):
            continue
        if clause.applies_to.devices:  # an obligation is on spaces; a device list picks none
            continue
        if clause.applies_to.selects_space(space.type, space.tags, lineage):
            by_event.setdefault(check.event, []).append(clause)
    tasks = []
    for event, matched in sorted(by_event.items()):
        zh, en = TASK_LABELS.get(event, (matched[0].title, matched[0].title))
        tasks.append(Task(event, zh, en, tuple(sorted({c.id for c in matched}))))
    return tasks
