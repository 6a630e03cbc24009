"""Targets of the plan per organisation node, and attainment against them (issue 21).

The plan sets three targets: 标准达标率 (compliance rate) ≥ 90 %, 关键标准实施覆盖率 (key-clause
coverage) ≥ 95 %, 标准实施效果评价比例 (evaluated share) ≥ 30 %. A node of the organisation tree
(`site.org` of the site model: city, district, unit; a site's own node is its org path with the
site id as the unit) may set its own (`org_targets`, migration 0061); a node without its own
takes its nearest ancestor's, and with none the plan's. Attainment of a node over a period: each
figure (compliance.statistics) against its target, met or not, and the sites beneath the node
whose own figure is below that target, lowest first: the sites that pull the figure down.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel, Field

from store import ledger

Figure = Literal["compliance_rate", "key_clause_coverage", "evaluated_share"]
FIGURES: tuple[Figure, ...] = get_args(Figure)
# The figure's name in the plan, and in English.
FIGURE_NAMES: dict[Figure, tuple[str, str]] = {
    "compliance_rate": ("标准达标率", "compliance rate"),
    "key_clause_coverage": ("关键标准实施覆盖率", "key-clause coverage"),
    "evaluated_share": ("标准实施效果评价比例", "evaluated share"),
}
# A figure equal to its target up to float noise meets it (ratios of sums).
EPSILON = 1e-9


class Targets(BaseModel):
    """Shares between 0 and 1; the defaults are the plan's."""

    compliance_rate: float = Field(default=0.90, ge=0, le=1)
    key_clause_coverage: float = Field(default=0.95, ge=0, le=1)
    evaluated_share: float = Field(default=0.30, ge=0, le=1)


PLAN = Targets()


class TargetSetting(BaseModel):
    path: list[str]  # [] : every site
    targets: Targets
    set_by: str
    set_at: dt.datetime


class Shortfall(BaseModel):
    site: str
    value: float


class FigureAttainment(BaseModel):
    figure: Figure
    name_zh: str
    name: str
    value: float | None
    target: float
    met: bool | None  # None: no value (nothing to count in the period)
    below: list[Shortfall]  # sites beneath whose own figure is below the target, lowest first


class Attainment(BaseModel):
    # The node whose targets apply (its own or an ancestor's); None: the plan's defaults.
    targets_from: list[str] | None
    targets: Targets
    figures: list[FigureAttainment]


TargetTable = dict[tuple[str, ...], Targets]


def load_targets(conn: psycopg.Connection[Any]) -> TargetTable:
    return {tuple(s.path): s.targets for s in list_targets(conn)}


def list_targets(conn: psycopg.Connection[Any]) -> list[TargetSetting]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT path, compliance_rate, key_clause_coverage, evaluated_share, set_by, set_at"
            " FROM org_targets ORDER BY path"
        ).fetchall()
    return [
        TargetSetting(
            path=_split(row.pop("path")),
            set_by=row.pop("set_by"),
            set_at=row.pop("set_at"),
            targets=Targets(**row),
        )
        for row in rows
    ]


def target_for(table: TargetTable, path: Sequence[str]) -> tuple[Targets, list[str] | None]:
    """The targets of the node at `path`: its own, else its nearest ancestor's, else the plan's;
    and the path they were set at (None: the plan's)."""
    for depth in range(len(path), -1, -1):
        found = table.get(tuple(path[:depth]))
        if found is not None:
            return found, list(path[:depth])
    return PLAN, None


def set_targets(
    conn: psycopg.Connection[Any],
    path: Sequence[str],
    targets: Targets,
    actor: str,
    now: dt.datetime,
) -> TargetSetting:
    """Sets (or replaces) the node's own targets, with a ledger entry. Does not commit."""
    conn.execute(
        "INSERT INTO org_targets (path, compliance_rate, key_clause_coverage, evaluated_share,"
        " set_by, set_at) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (path) DO UPDATE SET"
        " compliance_rate = EXCLUDED.compliance_rate,"
        " key_clause_coverage = EXCLUDED.key_clause_coverage,"
        " evaluated_share = EXCLUDED.evaluated_share,"
        " set_by = EXCLUDED.set_by, set_at = EXCLUDED.set_at",
        (
            "/".join(path),
            targets.compliance_rate,
            targets.key_clause_coverage,
            targets.evaluated_share,
            actor,
            now,
        ),
    )
    ledger.append(
        conn,
        [
            ledger.Entry(
                "target.set",
                f"target:{'/'.join(path)}",
                {"path": list(path), "actor": actor, **targets.model_dump()},
            )
        ],
        now,
    )
    return TargetSetting(path=list(path), targets=targets, set_by=actor, set_at=now)


def clear_targets(
    conn: psycopg.Connection[Any], path: Sequence[str], actor: str, now: dt.datetime
) -> bool:
    """Removes the node's own targets (it takes its ancestor's again), with a ledger entry.
    False when it had none. Does not commit."""
    gone = conn.execute("DELETE FROM org_targets WHERE path = %s", ("/".join(path),)).rowcount
    if not gone:
        return False
    ledger.append(
        conn,
        [
            ledger.Entry(
                "target.cleared", f"target:{'/'.join(path)}", {"path": list(path), "actor": actor}
            )
        ],
        now,
    )
    return True


def attainment(
    table: TargetTable,
    path: Sequence[str],
    values: Mapping[Figure, float | None],
    sites: Mapping[str, Mapping[Figure, float | None]],
) -> Attainment:
    """The node's figures (`values`) against its targets, with the sites beneath it (`sites`:
    each site's own figures) whose figure is below the target."""
    targets, source = target_for(table, path)
    figures = []
    for figure in FIGURES:
        target = getattr(targets, figure)
        value = values[figure]
        below = sorted(
            (
                Shortfall(site=site, value=own)
                for site, figs in sites.items()
                if (own := figs[figure]) is not None and own < target - EPSILON
            ),
            key=lambda s: (s.value, s.site),
        )
        name_zh, name = FIGURE_NAMES[figure]
        figures.append(
            FigureAttainment(
                figure=figure,
                name_zh=name_zh,
                name=name,
                value=value,
                target=target,
                met=None if value is None else value >= target - EPSILON,
                below=below,
            )
        )
    return Attainment(targets_from=source, targets=targets, figures=figures)


def _split(path: str) -> list[str]:
    return [part for part in path.split("/") if part]
