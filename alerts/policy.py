"""The parts of a clause version the alert lifecycle obeys: reopen window, re-verification time
and escalation steps, read from the stored clause versions (`sync_clauses`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psycopg

from rules.clause import ClauseVersion

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

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ClausePolicy:
        """`config` is a stored ClauseVersion (model_dump by alias, durations in seconds)."""
        steps = sorted(
            (EscalationStep(float(e["after"]), int(e["to_level"])) for e in config["escalation"]),
            key=lambda step: (step.after, step.to_level),
        )
        reverify = config.get("reverify_for")
        return cls(
            reopen_within=float(config.get("reopen_within", _DEFAULT_REOPEN_WITHIN)),
            reverify_for=None if reverify is None else float(reverify),
            escalation=tuple(steps),
        )


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
