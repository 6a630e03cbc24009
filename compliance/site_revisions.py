"""Site revisions (issue 21): a change of a site's model goes through the clause revisions'
workflow (compliance/revisions.py) instead of applying at once:
propose (a workbook's dry run: the model, checked with the configuration directory, and its
diff stored) → approve (a named user other than the proposer: `revisions.check_approver`, the
one rule of both) or reject → publish with an effective time → applied at that time → roll back.

`apply_due` (a scheduler job of the service, on the alerts' clock) applies a published revision
once its effective time has come: planned again against the configuration directory as it is
then (`config.sitefiles.plan_model`), the site's file written (the previous one kept as `*.bak`)
and the registry synced. The running engines then judge with it within about a second, through
the same switch as any synced site (the service's `site_stamps` poll, docs/register.md). A
rollback withdraws a revision not applied yet, or puts back the model an applied one replaced.

Every step is a ledger entry on `site_revision:{id}` naming its actor; `site_revision.applied`
names proposer, approver and publisher with the diff. None of these commit.

This is the only way a configured site changes: an import applies at once only a site not
configured yet (`check_direct_import`, the rule the API's import and `clausewatch site import`
both ask).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel

from compliance.revisions import RevisionError, check_approver, lock_in_state, record_decision
from config.documents import ConfigError
from config.sitefiles import ImportPlan, apply_import, plan_model
from rules.site import SiteModel
from store import ledger
from store.registry import sync_site
from store.times import require_aware

log = logging.getLogger(__name__)

SiteRevisionState = Literal[
    "pending", "approved", "rejected", "published", "applied", "failed", "rolled_back"
]
# Who applies a revision when its time comes (the ledger's actor; the facts name the people).
ACTOR = "site_revision"
OPEN_STATES: tuple[SiteRevisionState, ...] = ("pending", "approved", "published")


class SiteRevision(BaseModel):
    id: int
    site: str
    state: SiteRevisionState
    source: str
    reason: str
    new_site: bool
    diff: list[str]  # the dry run's lines, Chinese first
    counts: dict[str, dict[str, int]]  # per kind: added, changed, removed
    proposed_by: str
    proposed_at: dt.datetime
    approved_by: str | None
    approved_at: dt.datetime | None
    decision_note: str | None
    rejected_by: str | None
    rejected_at: dt.datetime | None
    published_by: str | None
    published_at: dt.datetime | None
    effective_at: dt.datetime | None
    applied_at: dt.datetime | None
    failure: str | None  # why the configuration directory refused it when it was due
    rolled_back_by: str | None
    rolled_back_at: dt.datetime | None


def check_direct_import(plan: ImportPlan, propose_with: str) -> None:
    """The one rule of applying a workbook at once (the API's import, `clausewatch site
    import`): a site the configuration directory does not define yet may be written directly
    (bootstrapping it has nothing to approve against), and a workbook that changes nothing
    writes nothing; any change of a configured site is a revision approved by another person.
    Raises RevisionError (409) naming `propose_with`, the way to propose it."""
    if plan.diff.new_site or plan.diff.empty:
        return
    site = plan.model.site.id
    raise RevisionError(
        f"站点已存在：{site} 的修改需提交站点修订并经他人批准（{propose_with}）"
        f" / the site {site} exists: changes go through a site revision approved by another"
        f" person ({propose_with})",
        409,
    )


def propose(
    conn: psycopg.Connection[Any],
    plan: ImportPlan,
    source: str,
    reason: str,
    actor: str,
    now: dt.datetime,
) -> SiteRevision:
    """A pending revision of the site `plan` (a workbook's dry run; `source`: the workbook's
    name) changes. 422 when it changes nothing, 409 when the site has an open revision."""
    require_aware(now, "now")
    if plan.diff.empty:
        raise RevisionError("the workbook changes nothing in the site as configured", 422, "body")
    site = plan.model.site.id
    ledger.lock(conn)
    _refuse_second(conn, site)
    lines = plan.diff.lines()
    row = conn.execute(
        "INSERT INTO site_revisions (site, state, source, model, based_on, diff, reason,"
        " proposed_by, proposed_at, updated_at)"
        " VALUES (%s, 'pending', %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            site,
            source,
            Jsonb(plan.model.model_dump(mode="json", by_alias=True)),
            None
            if plan.before is None
            else Jsonb(plan.before.model_dump(mode="json", by_alias=True)),
            Jsonb({"lines": lines, "counts": plan.diff.counts(), "new_site": plan.diff.new_site}),
            reason,
            actor,
            now,
            now,
        ),
    ).fetchone()
    assert row is not None
    revision_id = int(row[0])
    _record(conn, "site_revision.proposed", revision_id, site, actor, now, {"diff": lines})
    return get_revision(conn, revision_id)


def approve(
    conn: psycopg.Connection[Any], revision_id: int, actor: str, note: str | None, now: dt.datetime
) -> SiteRevision:
    ledger.lock(conn)
    revision = _locked(conn, revision_id, "pending")
    check_approver(actor, revision.proposed_by)
    record_decision(conn, "site_revisions", revision_id, "approved", actor, note, now)
    facts = {"proposed_by": revision.proposed_by, "note": note}
    _record(conn, "site_revision.approved", revision_id, revision.site, actor, now, facts)
    return get_revision(conn, revision_id)


def reject(
    conn: psycopg.Connection[Any], revision_id: int, actor: str, note: str, now: dt.datetime
) -> SiteRevision:
    ledger.lock(conn)
    revision = _locked(conn, revision_id, "pending", "approved")
    record_decision(conn, "site_revisions", revision_id, "rejected", actor, note, now)
    facts = {"proposed_by": revision.proposed_by, "note": note}
    _record(conn, "site_revision.rejected", revision_id, revision.site, actor, now, facts)
    return get_revision(conn, revision_id)


def publish(
    conn: psycopg.Connection[Any],
    revision_id: int,
    actor: str,
    effective_at: dt.datetime,
    now: dt.datetime,
) -> SiteRevision:
    """Publishes an approved revision to apply at `effective_at` (later than `now`)."""
    require_aware(effective_at, "effective_at")
    ledger.lock(conn)
    revision = _locked(conn, revision_id, "approved")
    if effective_at <= now:
        raise RevisionError(
            "effective_at must be later than now: a site change applies from a time to come",
            422,
            "effective_at",
        )
    conn.execute(
        "UPDATE site_revisions SET state = 'published', published_by = %s, published_at = %s,"
        " effective_at = %s, updated_at = %s WHERE id = %s",
        (actor, now, effective_at, now, revision_id),
    )
    facts = {
        "proposed_by": revision.proposed_by,
        "approved_by": revision.approved_by,
        "effective_at": effective_at.isoformat(),
    }
    _record(conn, "site_revision.published", revision_id, revision.site, actor, now, facts)
    return get_revision(conn, revision_id)


def apply_due(
    conn: psycopg.Connection[Any],
    config_dir: Path,
    now: dt.datetime,
    sites: Sequence[str] | None = None,
) -> list[int]:
    """Applies every published revision (of `sites`, when given) whose effective time has
    come: planned against `config_dir` as it is now, the registry synced as its publisher and
    the site's file written. A revision the directory no longer accepts (a clause added since
    needs a space it removes) ends `failed`, with why. Returns the ids applied. Does not
    commit."""
    require_aware(now, "now")
    ledger.lock(conn)
    rows = conn.execute(
        "SELECT id FROM site_revisions WHERE state = 'published' AND effective_at <= %s"
        " AND (%s::text[] IS NULL OR site = ANY(%s)) ORDER BY effective_at, id"
        " FOR UPDATE SKIP LOCKED",
        (now, None if sites is None else list(sites), None if sites is None else list(sites)),
    ).fetchall()
    applied = []
    for (revision_id,) in rows:
        revision = get_revision(conn, revision_id)
        try:
            plan = plan_model(_model(conn, revision_id, "model"), config_dir, revision.source)
        except ConfigError as exc:
            # Closed, said once (the ledger, the log), so the site can take a new proposal.
            log.error("site revision %d is not applied: %s", revision_id, exc)
            failure = str(exc)[:4000]
            conn.execute(
                "UPDATE site_revisions SET state = 'failed', failure = %s, updated_at = %s"
                " WHERE id = %s",
                (failure, now, revision_id),
            )
            said = {"proposed_by": revision.proposed_by, "failure": failure}
            _record(conn, "site_revision.failed", revision_id, revision.site, ACTOR, now, said)
            continue
        assert revision.published_by is not None
        sync_site(conn, plan.model, revision.published_by, now=now)
        apply_import(plan)
        conn.execute(
            "UPDATE site_revisions SET state = 'applied', applied_at = %s, previous = %s,"
            " updated_at = %s WHERE id = %s",
            (
                now,
                None
                if plan.before is None
                else Jsonb(plan.before.model_dump(mode="json", by_alias=True)),
                now,
                revision_id,
            ),
        )
        facts = {
            "proposed_by": revision.proposed_by,
            "approved_by": revision.approved_by,
            "published_by": revision.published_by,
            "effective_at": revision.effective_at,
            "diff": revision.diff,
        }
        _record(conn, "site_revision.applied", revision_id, revision.site, ACTOR, now, facts)
        applied.append(int(revision_id))
    return applied


def rollback(
    conn: psycopg.Connection[Any],
    revision_id: int,
    actor: str,
    config_dir: Path,
    now: dt.datetime,
) -> SiteRevision:
    """Withdraws a published revision not applied yet, or puts back at once the model an
    applied one replaced (the site's latest applied revision only; a new site is not removed
    by a rollback)."""
    ledger.lock(conn)
    revision = _locked(conn, revision_id, "published", "applied")
    facts: dict[str, Any] = {
        "proposed_by": revision.proposed_by,
        "approved_by": revision.approved_by,
        "withdrawn": revision.state == "published",
    }
    if revision.state == "applied":
        later = conn.execute(
            "SELECT id FROM site_revisions WHERE site = %s AND id > %s"
            " AND state IN ('published', 'applied') ORDER BY id LIMIT 1",
            (revision.site, revision_id),
        ).fetchone()
        if later is not None:
            raise RevisionError(
                f"revision {later[0]} came after this one: roll that back first", 409
            )
        if revision.new_site:
            raise RevisionError("a new site is not removed by a rollback", 409)
        try:
            plan = plan_model(_model(conn, revision_id, "previous"), config_dir, revision.source)
        except ConfigError as exc:
            raise RevisionError(f"the previous model is no longer accepted: {exc}", 409) from exc
        sync_site(conn, plan.model, actor, now=now)
        apply_import(plan)
    conn.execute(
        "UPDATE site_revisions SET state = 'rolled_back', rolled_back_by = %s,"
        " rolled_back_at = %s, updated_at = %s WHERE id = %s",
        (actor, now, now, revision_id),
    )
    _record(conn, "site_revision.rolled_back", revision_id, revision.site, actor, now, facts)
    return get_revision(conn, revision_id)


# -- reads --


def get_revision(conn: psycopg.Connection[Any], revision_id: int) -> SiteRevision:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"{_SELECT} WHERE id = %s", (revision_id,)).fetchone()
    if row is None:
        raise RevisionError("revision not found", 404)
    return _revision(row)


def list_revisions(
    conn: psycopg.Connection[Any],
    *,
    sites: Sequence[str] | None = None,
    states: Sequence[SiteRevisionState] | None = None,
    limit: int = 100,
) -> list[SiteRevision]:
    """Newest first; `sites` None: every site."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"{_SELECT} WHERE (%(sites)s::text[] IS NULL OR site = ANY(%(sites)s))"
            " AND (%(states)s::text[] IS NULL OR state = ANY(%(states)s))"
            " ORDER BY id DESC LIMIT %(limit)s",
            {
                "sites": None if sites is None else list(sites),
                "states": list(states) if states else None,
                "limit": limit,
            },
        ).fetchall()
    return [_revision(row) for row in rows]


def revision_site(conn: psycopg.Connection[Any], revision_id: int) -> str | None:
    row = conn.execute("SELECT site FROM site_revisions WHERE id = %s", (revision_id,)).fetchone()
    return None if row is None else str(row[0])


# -- helpers --

_SELECT = (
    "SELECT id, site, state, source, reason, diff, proposed_by, proposed_at, approved_by,"
    " approved_at, decision_note, rejected_by, rejected_at, published_by, published_at,"
    " effective_at, applied_at, failure, rolled_back_by, rolled_back_at FROM site_revisions"
)


def _revision(row: dict[str, Any]) -> SiteRevision:
    diff = row.pop("diff")
    return SiteRevision(**row, diff=diff["lines"], counts=diff["counts"], new_site=diff["new_site"])


def _model(conn: psycopg.Connection[Any], revision_id: int, column: str) -> SiteModel:
    row = conn.execute(
        f"SELECT {column} FROM site_revisions WHERE id = %s",  # `column`: a fixed name
        (revision_id,),
    ).fetchone()
    assert row is not None and row[0] is not None
    return SiteModel.model_validate(row[0])


def _locked(conn: psycopg.Connection[Any], revision_id: int, *states: str) -> SiteRevision:
    lock_in_state(conn, "site_revisions", revision_id, states)
    return get_revision(conn, revision_id)


def _refuse_second(conn: psycopg.Connection[Any], site: str) -> None:
    row = conn.execute(
        "SELECT id FROM site_revisions WHERE site = %s AND state = ANY(%s)",
        (site, list(OPEN_STATES)),
    ).fetchone()
    if row is not None:
        raise RevisionError(
            f"site {site} has a revision not yet applied or closed already (#{row[0]})", 409
        )


def _record(
    conn: psycopg.Connection[Any],
    kind: str,
    revision_id: int,
    site: str,
    actor: str,
    now: dt.datetime,
    facts: dict[str, Any],
) -> None:
    payload = {"actor": actor, "revision": revision_id, "site": site, **facts}
    ledger.append(conn, [ledger.Entry(kind, f"site_revision:{revision_id}", payload)], now)
