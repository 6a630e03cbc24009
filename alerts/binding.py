"""Who answers for a violation: the responsible party and the escalation chain in force for a
space and a clause domain at a moment. Pure: works on assignments already loaded.

Rule: walk from the space up to the root; at each level of the escalation ladder the nearest
space with an assignment in force wins, an assignment for the clause's own domain beats a '*'
one on the same space, and among equals the one that began last wins (then the lowest party id,
so the answer never depends on row order).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from store.registry import StoredAssignment, load_assignments, party_names

ANY_DOMAIN = "*"


@dataclass(frozen=True, slots=True)
class Binding:
    """A snapshot taken when a violation starts; later reassignments never rewrite it."""

    party: str | None
    name: str | None
    # Levels above the responsible party: [{"level": 1, "party": ..., "name": ...}, ...]
    chain: tuple[dict[str, Any], ...]

    @property
    def unbound(self) -> bool:
        return self.party is None


def bind(
    assignments: Sequence[StoredAssignment],
    names: dict[str, str],
    ancestors: Sequence[str],
    domain: str,
    at: dt.datetime,
) -> Binding:
    """`ancestors`: the space itself, then its parent, up to the root."""
    by_level: dict[int, StoredAssignment] = {}
    depth_of = {space: depth for depth, space in enumerate(ancestors)}
    ranked: dict[int, tuple[Any, ...]] = {}
    for assignment in assignments:
        depth = depth_of.get(assignment.space)
        if depth is None or not assignment.in_force_at(at):
            continue
        if assignment.domain not in (domain, ANY_DOMAIN):
            continue
        level = assignment.level if assignment.role == "escalation" else 0
        # Smaller sorts first: nearer space, own domain, later start, lower party id.
        rank = (
            depth,
            assignment.domain == ANY_DOMAIN,
            -assignment.valid_from.timestamp(),
            assignment.party,
        )
        if level not in ranked or rank < ranked[level]:
            ranked[level] = rank
            by_level[level] = assignment
    responsible = by_level.get(0)
    chain = tuple(
        {"level": level, "party": a.party, "name": names.get(a.party, a.party)}
        for level, a in sorted(by_level.items())
        if level > 0
    )
    if responsible is None:
        return Binding(party=None, name=None, chain=chain)
    return Binding(
        party=responsible.party,
        name=names.get(responsible.party, responsible.party),
        chain=chain,
    )


def responsible_at(
    conn: psycopg.Connection[Any], site: str, space: str, domain: str, at: dt.datetime
) -> Binding:
    """Who answered for `space` and `domain` at `at`, past or present, from the stored registry
    (the space tree as stored now; assignments with their validity periods)."""
    parents = dict(
        conn.execute("SELECT id, parent FROM spaces WHERE site = %s", (site,)).fetchall()
    )
    chain: list[str] = []
    current: str | None = space
    while current is not None and current not in chain:
        chain.append(current)
        current = parents.get(current)
    return bind(load_assignments(conn, site), party_names(conn, site), chain, domain, at)
