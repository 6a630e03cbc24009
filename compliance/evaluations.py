"""Implementation evaluations (标准实施效果评价, issue 21): a record a person completes for a
clause at a site for a quarter (method, findings, satisfaction 1–5) with the improvement actions
it sets (owner, deadline), tracked to closure (限期整改: open → done, by whom and when) and
overdue while open past their deadline. The evaluated share (compliance/statistics.py) counts
these, never generated reports. Tables: migration 0062; each record and each change of an action
has a ledger entry naming the actor.

An overdue action escalates (`due_overdue_steps`, `record_overdue_steps`, run by the service's
scheduler on the alerts' clock): at the deadline its owner is told (level 0), then each
configured delay past the deadline the next level of the site's escalation chain. The steps
taken are counted on the action (`overdue_step`, migration 0065) in the transaction that queues
their notifications, so no step is sent twice; a closed action takes no step (reopened, it goes
on from where it stopped).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel

from compliance.periods import BadPeriod, quarter_bounds
from compliance.rates import selection, site_facts, versions_in_force
from store import ledger, registry
from store.times import require_aware

Method = Literal["inspection", "records", "survey", "measurement", "interview"]
# How each method is named on the pages and in reports.
METHOD_NAMES: dict[str, tuple[str, str]] = {
    "inspection": ("现场检查", "on-site inspection"),
    "records": ("资料查阅", "records review"),
    "survey": ("问卷调查", "occupant survey"),
    "measurement": ("检测", "measurement"),
    "interview": ("座谈访谈", "interviews"),
}
ActionState = Literal["open", "done"]
# Who takes the steps of an overdue action, in the ledger.
ESCALATION_ACTOR = "escalation"
# At most this many delays after the deadline (levels 1..n of the chain).
MAX_ESCALATION_STEPS = 8


class NotInForce(ValueError):
    """The clause has no version in force at the site in the period (nothing to evaluate)."""


class UnknownAction(LookupError):
    pass


class ActionUnchanged(ValueError):
    """The action is already in the state asked for (done twice would rewrite who and when)."""


@dataclass(frozen=True, slots=True)
class PlannedAction:
    action: str
    owner: str
    deadline: dt.datetime


class ImprovementAction(BaseModel):
    id: int
    evaluation_id: int
    site: str
    clause_id: str
    action: str
    owner: str
    deadline: dt.datetime
    state: ActionState
    done_by: str | None
    done_at: dt.datetime | None
    note: str | None
    updated_by: str
    updated_at: dt.datetime
    overdue: bool  # open at the time asked about, past its deadline


class Evaluation(BaseModel):
    id: int
    site: str
    clause_id: str
    period: str
    period_start: dt.datetime
    period_end: dt.datetime
    method: Method
    findings: str
    satisfaction: int
    evaluated_by: str
    evaluated_at: dt.datetime
    actions: list[ImprovementAction]


def clauses_in_force(
    conn: psycopg.Connection[Any],
    site: str,
    since: dt.datetime,
    until: dt.datetime,
    now: dt.datetime,
) -> list[str]:
    """Clauses with a version in force at min(until, now) that select something at the site:
    what can be evaluated there, and the evaluated share's denominator."""
    facts = site_facts(conn, site, since, until, now)
    versions = versions_in_force(conn, min(until, now).date())
    found = []
    for clause_id, version in sorted(versions.items()):
        spaces, devices = selection(facts, version["config"].get("applies_to") or {})
        if spaces or devices:
            found.append(clause_id)
    return found


def evaluated_clauses(
    conn: psycopg.Connection[Any], site: str, since: dt.datetime, until: dt.datetime
) -> set[str]:
    """Clauses a person evaluated at the site for a quarter overlapping [since, until)."""
    rows = conn.execute(
        "SELECT DISTINCT clause_id FROM evaluations"
        " WHERE site = %s AND period_start < %s AND period_end > %s",
        (site, until, since),
    ).fetchall()
    return {row[0] for row in rows}


def record_evaluation(
    conn: psycopg.Connection[Any],
    *,
    site: str,
    clause_id: str,
    period: str,
    method: Method,
    findings: str,
    satisfaction: int,
    actions: Sequence[PlannedAction],
    actor: str,
    now: dt.datetime,
) -> Evaluation:
    """Stores a person's evaluation and its actions, with ledger entries. Raises UnknownSite,
    BadPeriod (not a quarter, or one that has not begun), NotInForce. Does not commit."""
    registered = registry.site_row(conn, site)
    if registered is None:
        raise registry.UnknownSite(site)
    start, end = quarter_bounds(period, registered.zone())
    if start > now:
        raise BadPeriod(f"{period} has not begun")
    if not 1 <= satisfaction <= 5:
        raise ValueError("satisfaction is a score from 1 to 5")
    if clause_id not in clauses_in_force(conn, site, start, end, now):
        raise NotInForce(f"clause {clause_id} is not in force at {site} in {period}")
    row = conn.execute(
        "INSERT INTO evaluations (site, clause_id, period, period_start, period_end, method,"
        " findings, satisfaction, evaluated_by, evaluated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (site, clause_id, period, start, end, method, findings, satisfaction, actor, now),
    ).fetchone()
    assert row is not None
    evaluation_id = int(row[0])
    entries = [
        ledger.Entry(
            "evaluation.recorded",
            f"evaluation:{evaluation_id}",
            {
                "site": site,
                "clause_id": clause_id,
                "period": period,
                "method": method,
                "satisfaction": satisfaction,
                "findings": findings,
                "actor": actor,
            },
        )
    ]
    for planned in actions:
        if planned.deadline.tzinfo is None:
            raise ValueError("an action's deadline needs a UTC offset")
        action_row = conn.execute(
            "INSERT INTO improvement_actions (evaluation_id, site, action, owner, deadline,"
            " updated_by, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (evaluation_id, site, planned.action, planned.owner, planned.deadline, actor, now),
        ).fetchone()
        assert action_row is not None
        entries.append(
            ledger.Entry(
                "evaluation.action_set",
                f"action:{action_row[0]}",
                {
                    "evaluation": evaluation_id,
                    "site": site,
                    "action": planned.action,
                    "owner": planned.owner,
                    "deadline": planned.deadline.astimezone(dt.UTC).isoformat(),
                    "actor": actor,
                },
            )
        )
    ledger.append(conn, entries, now)
    found = list_evaluations(conn, [site], at=now, evaluation_id=evaluation_id)
    return found[0]


def list_evaluations(
    conn: psycopg.Connection[Any],
    sites: list[str] | None,
    *,
    at: dt.datetime,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    evaluation_id: int | None = None,
) -> list[Evaluation]:
    """Evaluations of `sites` (None: all) for quarters overlapping [since, until) when given,
    newest quarter first, each with its actions (overdue as of `at`)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT id, site, clause_id, period, period_start, period_end, method, findings,"
            " satisfaction, evaluated_by, evaluated_at FROM evaluations"
            " WHERE (%(sites)s::text[] IS NULL OR site = ANY(%(sites)s))"
            " AND (%(until)s::timestamptz IS NULL OR period_start < %(until)s)"
            " AND (%(since)s::timestamptz IS NULL OR period_end > %(since)s)"
            " AND (%(id)s::bigint IS NULL OR id = %(id)s)"
            " ORDER BY period_start DESC, site, clause_id, id DESC LIMIT 1000",
            {"sites": sites, "since": since, "until": until, "id": evaluation_id},
        ).fetchall()
    by_evaluation: dict[int, list[ImprovementAction]] = {row["id"]: [] for row in rows}
    for action in _actions(
        conn, "a.evaluation_id = ANY(%(ids)s)", {"ids": list(by_evaluation)}, at
    ):
        by_evaluation[action.evaluation_id].append(action)
    return [Evaluation(actions=by_evaluation[row["id"]], **row) for row in rows]


def site_actions(
    conn: psycopg.Connection[Any], site: str, at: dt.datetime
) -> list[ImprovementAction]:
    """The site's actions open at `at` (set by then, not done by then), earliest deadline first."""
    return _actions(
        conn,
        "a.site = %(site)s AND e.evaluated_at <= %(at)s"
        " AND (a.done_at IS NULL OR a.done_at > %(at)s)",
        {"site": site},
        at,
    )


def action_site(conn: psycopg.Connection[Any], action_id: int) -> str | None:
    row = conn.execute(
        "SELECT site FROM improvement_actions WHERE id = %s", (action_id,)
    ).fetchone()
    return None if row is None else str(row[0])


def update_action(
    conn: psycopg.Connection[Any],
    action_id: int,
    state: ActionState,
    note: str | None,
    actor: str,
    now: dt.datetime,
) -> ImprovementAction:
    """Marks an action done (who, when) or open again, with a ledger entry. Raises
    UnknownAction, ActionUnchanged. Does not commit."""
    row = conn.execute(
        "UPDATE improvement_actions SET state = %(state)s,"
        " done_by = CASE WHEN %(state)s = 'done' THEN %(actor)s END,"
        " done_at = CASE WHEN %(state)s = 'done' THEN %(now)s::timestamptz END,"
        " note = coalesce(%(note)s, note), updated_by = %(actor)s, updated_at = %(now)s"
        " WHERE id = %(id)s AND state <> %(state)s RETURNING site",
        {"state": state, "actor": actor, "now": now, "note": note, "id": action_id},
    ).fetchone()
    if row is None:
        if action_site(conn, action_id) is None:
            raise UnknownAction(action_id)
        raise ActionUnchanged(f"the action is already {state}")
    ledger.append(
        conn,
        [
            ledger.Entry(
                "evaluation.action_done" if state == "done" else "evaluation.action_reopened",
                f"action:{action_id}",
                {"site": row[0], "state": state, "note": note, "actor": actor},
            )
        ],
        now,
    )
    return _actions(conn, "a.id = %(id)s", {"id": action_id}, now)[0]


def _actions(
    conn: psycopg.Connection[Any], where: str, args: dict[str, Any], at: dt.datetime
) -> list[ImprovementAction]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT a.id, a.evaluation_id, a.site, e.clause_id, a.action, a.owner, a.deadline,"
            " a.state, a.done_by, a.done_at, a.note, a.updated_by, a.updated_at,"
            " (a.deadline < %(at)s AND (a.done_at IS NULL OR a.done_at > %(at)s)) AS overdue"
            " FROM improvement_actions a JOIN evaluations e ON e.id = a.evaluation_id"
            f" WHERE {where} ORDER BY a.deadline, a.id",
            {**args, "at": at},
        ).fetchall()
    return [ImprovementAction(**row) for row in rows]


@dataclass(frozen=True, slots=True)
class OverdueStep:
    """A step due for an overdue action: `level` 0 tells the owner, level n the party at
    level n of the site's escalation chain; `after`: how long past the deadline it falls due.
    `action` is the action as notices carry it (`action_summary`)."""

    action_id: int
    site: str
    domain: str
    owner: str
    level: int
    after: dt.timedelta
    action: dict[str, Any]


def due_overdue_steps(
    conn: psycopg.Connection[Any],
    now: dt.datetime,
    delays: Sequence[dt.timedelta],
    sites: Sequence[str] | None = None,
) -> list[OverdueStep]:
    """The steps due at `now` of every open action (of `sites`, when given) past its
    deadline: level 0 at the deadline, level n `delays[n-1]` after it; every step crossed and
    not yet taken, in order (a service that was down catches up level by level). Locks the
    actions (SKIP LOCKED: another round has them) until the caller's transaction ends; record
    the steps taken with `record_overdue_steps` in it. Does not commit."""
    require_aware(now, "now")
    ledger.lock(conn)  # before the rows: the one lock order of every writer (ledger.lock)
    offsets = [dt.timedelta(0), *delays]
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT a.id, a.site, a.action, a.owner, a.deadline, a.overdue_step, a.evaluation_id,"
            " e.clause_id, e.period, c.standard_code, c.number, c.title, c.domain"
            " FROM improvement_actions a JOIN evaluations e ON e.id = a.evaluation_id"
            " LEFT JOIN LATERAL (SELECT standard_code, number, title, domain FROM clause_versions"
            "   WHERE clause_id = e.clause_id ORDER BY version DESC LIMIT 1) c ON true"
            " WHERE a.state = 'open' AND a.deadline <= %(now)s AND a.overdue_step < %(steps)s"
            " AND e.evaluated_at <= %(now)s"
            " AND (%(sites)s::text[] IS NULL OR a.site = ANY(%(sites)s))"
            " ORDER BY a.deadline, a.id FOR UPDATE OF a SKIP LOCKED",
            {"now": now, "steps": len(offsets), "sites": None if sites is None else list(sites)},
        ).fetchall()
    steps = []
    for row in rows:
        for level in range(row["overdue_step"], len(offsets)):
            if row["deadline"] + offsets[level] > now:
                break
            steps.append(
                OverdueStep(
                    action_id=row["id"],
                    site=row["site"],
                    domain=row["domain"] or "*",
                    owner=row["owner"],
                    level=level,
                    after=offsets[level],
                    action=action_summary(row),
                )
            )
    return steps


def action_summary(row: dict[str, Any]) -> dict[str, Any]:
    """An action as a notification's receiver sees it."""
    return {
        "id": row["id"],
        "site": row["site"],
        "evaluation": row["evaluation_id"],
        "period": row["period"],
        "clause": {
            "id": row["clause_id"],
            "standard": row["standard_code"],
            "number": row["number"],
            "title": row["title"],
        },
        "action": row["action"],
        "owner": row["owner"],
        "deadline": row["deadline"].isoformat(),
    }


def record_overdue_steps(
    conn: psycopg.Connection[Any],
    steps: Sequence[OverdueStep],
    parties: Sequence[dict[str, Any] | None],
    now: dt.datetime,
) -> None:
    """Counts `steps` taken on their actions, with a ledger entry each naming the level and
    the party told (`parties[i]`: {party, name} for steps[i], None when nobody is assigned
    there). Does not commit."""
    if not steps:
        return
    taken: dict[int, int] = {}
    entries = []
    for step, party in zip(steps, parties, strict=True):
        taken[step.action_id] = max(taken.get(step.action_id, 0), step.level + 1)
        hours = step.after.total_seconds() / 3600
        who = party["name"] if party else "no party assigned at this level"
        note = (
            f"overdue: owner {step.owner} told ({who})"
            if step.level == 0
            else f"overdue {hours:g} h: escalated to level {step.level} ({who})"
        )
        entries.append(
            ledger.Entry(
                "action.overdue" if step.level == 0 else "action.escalated",
                f"action:{step.action_id}",
                {
                    "site": step.site,
                    "level": step.level,
                    "after_s": step.after.total_seconds(),
                    "party": party,
                    "owner": step.owner,
                    "actor": ESCALATION_ACTOR,
                    "at": now,
                    "note": note,
                },
            )
        )
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE improvement_actions SET overdue_step = %s WHERE id = %s",
            [(step, action_id) for action_id, step in taken.items()],
        )
    ledger.append(conn, entries, now)
