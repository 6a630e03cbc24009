"""Silences and maintenance windows as stored (`quiet_periods`, migration 0031): create, cancel,
list, each change with its ledger entry. What they do lives with their readers: a silence holds
back notifications (alerts/silences.py), a maintenance window makes compliance time exempt
(compliance/rates.py). Both ask the one test of whether a period covers a subject: the SQL
function `cw_quiet_covers` (migration 0031; `covers_sql` writes the call).

A period has a scope at one site: the whole site, a space with its subtree, a device, or a
clause. It is in force over [starts_at, effective_end): `effective_end` is `ends_at`, or the
moment it was cancelled if earlier. Nothing expires it: readers compare with the time they ask
about, so an ended period simply stops matching.

When a period may begin:
- a silence only acts on notifications still to be sent, so a start in the past is harmless:
  it is kept as given; one already over is refused (it would do nothing);
- a maintenance window changes compliance figures, so one that begins in the past (more than
  RETROACTIVE_GRACE before it is declared) is retroactive: only a caller allowed to declare
  retroactive windows (the API: unscoped admin tokens) may, and the row and its ledger entry
  say so; it may have ended already (yesterday afternoon's works, declared this morning).
- Either lasts MAX_DURATION at most.

None of these functions commit: the caller owns the transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row

from store import ledger
from store.times import require_aware

Kind = Literal["silence", "maintenance"]
Scope = Literal["site", "space", "device", "clause"]
KINDS: tuple[Kind, ...] = ("silence", "maintenance")
# A silence or window may last this long at most: longer quiet is a configuration change.
MAX_DURATION = dt.timedelta(days=90)
# A maintenance window declared this soon after its start is not retroactive (the form took a
# minute to fill in).
RETROACTIVE_GRACE = dt.timedelta(minutes=15)
# How long before now a window may be declared retroactively at most.
MAX_RETROACTIVE = dt.timedelta(days=31)

COLUMNS = (
    "id, kind, site, scope, target, starts_at, ends_at, reason, retroactive, created_by,"
    " created_at, cancelled_at, cancelled_by, effective_end"
)


def covers_sql(alias: str, site: str, space: str, device: str, clause: str) -> str:
    """SQL that is true when period row `alias` covers the subject named by the SQL
    expressions given (device: '' or NULL for a space's subject)."""
    return f"cw_quiet_covers({alias}, {site}, {space}, {device}, {clause})"


class QuietError(Exception):
    """A refused request; `http_status` is what the API answers."""

    http_status = 422

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(QuietError):
    http_status = 404


class Refused(QuietError):
    """Allowed input, but not now or not by this caller."""

    http_status = 409


class NotAllowed(QuietError):
    http_status = 403


@dataclass(frozen=True, slots=True)
class Spec:
    kind: Kind
    site: str
    scope: Scope
    target: str | None
    starts_at: dt.datetime
    ends_at: dt.datetime
    reason: str


def create(
    conn: psycopg.Connection[Any],
    spec: Spec,
    actor: str,
    now: dt.datetime,
    *,
    may_backdate: bool = False,
) -> dict[str, Any]:
    """Stores a silence or maintenance window and its ledger entry; returns the row."""
    require_aware(now, "now")
    # In UTC: PostgreSQL refuses offsets beyond ±15:59, which an aware datetime may carry.
    starts_at = require_aware(spec.starts_at, "starts_at").astimezone(dt.UTC)
    ends_at = require_aware(spec.ends_at, "ends_at").astimezone(dt.UTC)
    if ends_at <= starts_at:
        raise QuietError("ends_at must be after starts_at")
    if ends_at - starts_at > MAX_DURATION:
        raise QuietError(f"a {spec.kind} may last {MAX_DURATION.days} days at most")
    if spec.kind == "silence" and ends_at <= now:
        raise QuietError("this silence would already be over (ends_at is not in the future)")
    if (spec.scope == "site") != (spec.target is None):
        raise QuietError("target is required for scope space, device or clause, and only then")
    if not spec.reason.strip():
        raise QuietError("reason must not be blank")
    retroactive = spec.kind == "maintenance" and starts_at < now - RETROACTIVE_GRACE
    if retroactive:
        if not may_backdate:
            raise NotAllowed(
                "a maintenance window that began in the past changes compliance figures:"
                " only an administrator (unscoped admin token) may declare one"
            )
        if starts_at < now - MAX_RETROACTIVE:
            raise QuietError(
                f"a maintenance window may begin at most {MAX_RETROACTIVE.days} days ago"
            )
    _require_target(conn, spec)
    ledger.lock(conn)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "INSERT INTO quiet_periods (kind, site, scope, target, starts_at, ends_at, reason,"
            " retroactive, created_by, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            f" RETURNING {COLUMNS}",
            (
                spec.kind,
                spec.site,
                spec.scope,
                spec.target,
                starts_at,
                ends_at,
                spec.reason.strip(),
                retroactive,
                actor,
                now,
            ),
        ).fetchone()
    assert row is not None
    ledger.append(conn, [_entry(row, "created", actor, now)], now)
    return row


def cancel(
    conn: psycopg.Connection[Any], kind: Kind, period_id: int, actor: str, now: dt.datetime
) -> dict[str, Any]:
    """Ends a period now (one not yet begun never takes effect); its ledger entry. Refused when
    it is already over or cancelled."""
    require_aware(now, "now")
    ledger.lock(conn)
    row = get(conn, kind, period_id, lock=True)
    if row is None:
        raise NotFound(f"{kind} {period_id} not found")
    if row["cancelled_at"] is not None:
        raise Refused(f"{kind} {period_id} was already cancelled by {row['cancelled_by']}")
    if row["ends_at"] <= now:
        raise Refused(f"{kind} {period_id} is already over")
    with conn.cursor(row_factory=dict_row) as cur:
        updated = cur.execute(
            f"UPDATE quiet_periods SET cancelled_at = %s, cancelled_by = %s WHERE id = %s"
            f" RETURNING {COLUMNS}",
            (now, actor, period_id),
        ).fetchone()
    assert updated is not None
    ledger.append(conn, [_entry(updated, "cancelled", actor, now)], now)
    return updated


def get(
    conn: psycopg.Connection[Any], kind: Kind, period_id: int, *, lock: bool = False
) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT {COLUMNS} FROM quiet_periods WHERE kind = %s AND id = %s"
            + (" FOR UPDATE" if lock else ""),
            (kind, period_id),
        ).fetchone()


def rows(
    conn: psycopg.Connection[Any],
    kind: Kind,
    sites: Sequence[str] | None,
    now: dt.datetime,
    *,
    include_ended: bool = False,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """Periods of `sites` (None: every site), newest first; only those not over at `now`
    unless `include_ended`."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT {COLUMNS} FROM quiet_periods WHERE kind = %(kind)s"
            " AND (%(sites)s::text[] IS NULL OR site = ANY(%(sites)s))"
            " AND (%(all)s OR effective_end > %(now)s)"
            " ORDER BY starts_at DESC, id DESC LIMIT %(limit)s",
            {
                "kind": kind,
                "sites": None if sites is None else list(sites),
                "all": include_ended,
                "now": now,
                "limit": limit,
            },
        ).fetchall()


def _require_target(conn: psycopg.Connection[Any], spec: Spec) -> None:
    """NotFound unless the site (and the space, device or clause named) exists."""
    if conn.execute("SELECT 1 FROM sites WHERE id = %s", (spec.site,)).fetchone() is None:
        raise NotFound(f"site {spec.site!r} not found")
    if spec.scope == "site":
        return
    query = {
        "space": "SELECT 1 FROM spaces WHERE site = %s AND id = %s AND retired_at IS NULL",
        "device": "SELECT 1 FROM devices WHERE site = %s AND id = %s AND retired_at IS NULL",
        "clause": "SELECT 1 FROM clause_versions WHERE %s::text IS NOT NULL AND clause_id = %s",
    }[spec.scope]
    if conn.execute(query, (spec.site, spec.target)).fetchone() is None:
        where = "" if spec.scope == "clause" else f" at site {spec.site!r}"
        raise NotFound(f"{spec.scope} {spec.target!r} not found{where}")


def _entry(row: dict[str, Any], action: str, actor: str, now: dt.datetime) -> ledger.Entry:
    return ledger.Entry(
        kind=f"{row['kind']}.{action}",
        entity=f"{row['kind']}:{row['id']}",
        payload={
            "site": row["site"],
            "actor": actor,
            "at": now,
            "scope": row["scope"],
            "target": row["target"],
            "starts_at": row["starts_at"],
            "ends_at": row["ends_at"],
            "reason": row["reason"],
            "retroactive": row["retroactive"],
            "cancelled_at": row["cancelled_at"],
        },
    )
