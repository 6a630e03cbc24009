"""The parts of a clause version the alert lifecycle obeys: reopen window, re-verification time
and escalation steps, read from the stored clause versions (`sync_clauses`).

Flap control (issue 20): `reopen_within` is schedule time. A violation that ends because the
clause's schedule ends (a lunch break, the evening) and starts again when it resumes has not
cleared for any time the clause judges: it reopens the same alert, however long the break. So
a room cold every afternoon is one alert a day, not one per break."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg

from rules.clause import ClauseVersion, Schedule
from rules.schedule import CompiledSchedule
from rules.site import SiteModel

# ClauseVersion's own defaults, for alerts whose clause version was never stored.
_DEFAULT_REOPEN_WITHIN = ClauseVersion.model_fields["reopen_within"].default


@dataclass(frozen=True, slots=True)
class EscalationStep:
    after: float  # seconds unacknowledged
    to_level: int


@dataclass(frozen=True, slots=True)
class ClausePolicy:
    reopen_within: float = _DEFAULT_REOPEN_WITHIN
    reverify_for: float | None = None
    escalation: tuple[EscalationStep, ...] = ()
    # When the clause judges, with its effective dates (None: always).
    schedule: Schedule | None = None
    effective: tuple[dt.date | None, dt.date | None] = (None, None)
    # The metrics a data-quality clause watches for staleness (empty for any other clause):
    # whose devices a site-wide outage is judged over (alerts/inhibition.py).
    stale_metrics: frozenset[str] = frozenset()

    def reopens(self, site: SiteModel, ended_at: dt.datetime, started_at: dt.datetime) -> bool:
        """Whether a violation starting at `started_at` reopens the alert that ended at
        `ended_at`: at most `reopen_within` of the clause's schedule time lies between."""
        gap = (started_at - ended_at).total_seconds()
        if gap <= self.reopen_within:
            return True
        if self.schedule is None:
            return False
        try:
            compiled = CompiledSchedule(self.schedule, site, *self.effective)
        except ValueError:  # a season the site does not define: the engine refuses it too
            return False
        judged = compiled.inside_seconds(ended_at.timestamp(), started_at.timestamp())
        return judged <= self.reopen_within

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ClausePolicy:
        """`config` is a stored ClauseVersion (model_dump by alias, durations in seconds)."""
        steps = sorted(
            (EscalationStep(float(e["after"]), int(e["to_level"])) for e in config["escalation"]),
            key=lambda step: (step.after, step.to_level),
        )
        reverify = config.get("reverify_for")
        check = config.get("check", {})
        stale = check.get("kind") == "data_quality" and check.get("stale_after") is not None
        return cls(
            reopen_within=float(config.get("reopen_within", _DEFAULT_REOPEN_WITHIN)),
            reverify_for=None if reverify is None else float(reverify),
            escalation=tuple(steps),
            schedule=Schedule.model_validate(config["schedule"]) if "schedule" in config else None,
            effective=(_day(config.get("effective_from")), _day(config.get("effective_to"))),
            stale_metrics=frozenset(check.get("metrics", ())) if stale else frozenset(),
        )


def _day(value: object) -> dt.date | None:
    return dt.date.fromisoformat(value) if isinstance(value, str) else None


# Keyed by content hash too: a stored version whose content changed gets looked up afresh.
_cache: dict[tuple[str, int, str], ClausePolicy] = {}


def policies(
    conn: psycopg.Connection[Any], refs: Iterable[tuple[str, int, str]]
) -> dict[tuple[str, int], ClausePolicy]:
    """Policies of (clause_id, version, content_hash) refs; one query for the uncached ones. A
    version not stored (or stored with other content) gets the stored one's policy if any,
    else the defaults."""
    wanted = set(refs)
    result = {(ref[0], ref[1]): _cache[ref] for ref in wanted if ref in _cache}
    missing = [ref for ref in wanted if ref not in _cache]
    if missing:
        rows = conn.execute(
            "SELECT clause_id, version, content_hash, config FROM clause_versions"
            " WHERE (clause_id, version) IN (SELECT * FROM unnest(%s::text[], %s::int[]))",
            ([m[0] for m in missing], [m[1] for m in missing]),
        ).fetchall()
        for clause_id, version, content_hash, config in rows:
            policy = ClausePolicy.from_config(config)
            _cache[(clause_id, version, content_hash)] = policy
            result[(clause_id, version)] = policy
    for ref in missing:
        result.setdefault((ref[0], ref[1]), ClausePolicy())
    return result
