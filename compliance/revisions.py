"""Clause revisions: a clause changes while the service runs, through
propose (draft, validated, backtested) → approve (by someone other than the proposer) →
publish with an effective date → roll back.

- `propose` applies `changes` ({dotted path: value}, e.g. `params.limit.default: 26.5`) to the
  clause's newest version, validates the result as a clause version (the same model the files
  go through), binds it to every site's model (a selector or season the site cannot satisfy is
  refused) and backtests it over each site's stored history beside the version in force
  (`compliance.backtest`) where it selects a subject. Nothing is judged under it yet.
- `approve` and `reject` record a decision; the approver is a named user (an actor
  `user:NAME`, api/auth.py), not the proposer.
- `publish` makes it version n+1 from `effective_from` and closes the revised version the day
  before. The date must be later than today at every site (what is judged is never re-judged
  under a new version). The running pipelines read the change within seconds
  (`clause_set`, polled by the service) and switch engines without a restart, keeping the
  state of every instance of an unchanged version.
- `rollback`: a published revision not yet in force anywhere is withdrawn (its version
  removed, the revised one reopened); one in force is ended the day before `effective_from`,
  from which a new version restores the revised one's content.

The versions a revision publishes are rows of clause_versions like those of the files; the
revision rows say which (`managed_keys`): for those the stored row is what is judged, not the
files' text. Every step is a ledger entry naming who did it; publish names proposer, approver
and publisher and the diff. None of these commit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel, JsonValue, ValidationError

from compliance.backtest import BacktestError, backtest
from compliance.register import VersionChange, config_changes
from rules.clause import ClauseVersion
from rules.engine import BindingError, SiteEngine
from store import ledger, registry
from store.times import require_aware

RevisionState = Literal["pending", "approved", "rejected", "published", "rolled_back"]
MAX_CHANGES = 50
MAX_BACKTEST_DAYS = 92
# How a named user's actions are recorded (api/auth.py Principal.actor): "user:NAME (display)".
USER_ACTOR = "user:"
# Fields a revision cannot set: the workflow assigns them.
FIXED_FIELDS = frozenset({"id", "version", "effective_from", "effective_to"})


class RevisionError(Exception):
    """A step refused; `http_status` says how the API answers (404, 409, 403, 422)."""

    def __init__(self, message: str, http_status: int, field: str | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.field = field


class SiteBacktest(BaseModel):
    site: str
    candidate_rate: float | None
    in_force_rate: float | None
    candidate_alerts: int
    in_force_alerts: int
    readings: int


class Revision(BaseModel):
    id: int
    clause_id: str
    based_on: int
    state: RevisionState
    changes: dict[str, JsonValue]
    diff: list[VersionChange]
    reason: str
    backtest: list[SiteBacktest]
    backtest_since: dt.datetime
    backtest_until: dt.datetime
    proposed_by: str
    proposed_at: dt.datetime
    approved_by: str | None
    approved_at: dt.datetime | None
    decision_note: str | None
    rejected_by: str | None
    rejected_at: dt.datetime | None
    published_by: str | None
    published_at: dt.datetime | None
    version: int | None
    effective_from: dt.date | None
    rolled_back_by: str | None
    rolled_back_at: dt.datetime | None
    rollback_version: int | None
    rollback_from: dt.date | None


# -- the steps --


def propose(
    conn: psycopg.Connection[Any],
    clause_id: str,
    changes: Mapping[str, Any],
    reason: str,
    actor: str,
    now: dt.datetime,
    *,
    backtest_days: int = 7,
) -> Revision:
    """A pending revision of `clause_id`'s newest version, validated and backtested."""
    now = require_aware(now, "now")
    if not 1 <= backtest_days <= MAX_BACKTEST_DAYS:
        raise RevisionError(f"backtest_days is 1 to {MAX_BACKTEST_DAYS}", 422, "backtest_days")
    if not changes or len(changes) > MAX_CHANGES:
        raise RevisionError(f"1 to {MAX_CHANGES} changes", 422, "changes")
    stored = registry.stored_clause_versions(conn, clause_id)
    if not stored:
        raise RevisionError("clause not found", 404)
    _refuse_second(conn, clause_id)
    base = stored[-1].clause
    before = base.model_dump(mode="json", by_alias=True)
    after = _with_changes(before, changes)
    # Validated as it would be published: a later version, from a later day.
    after["version"] = base.version + 1
    after["effective_from"] = max(base.effective_from, now.date()) + dt.timedelta(days=1)
    after["effective_to"] = None
    try:
        candidate = ClauseVersion.model_validate(after)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "clause"
        raise RevisionError(f"{where}: {first['msg']}", 422, "changes") from exc
    diff = config_changes(before, candidate.model_dump(mode="json", by_alias=True))
    if not diff:
        raise RevisionError("the changes leave the clause as it is", 422, "changes")
    sites: list[str] = []  # where it judges something: backtested there
    for site in registry.site_ids(conn):
        model = registry.site_model(conn, site)
        if model is None:
            continue
        try:
            bound = SiteEngine(model, [candidate], lateness=0.0).bindings()
        except BindingError as exc:
            raise RevisionError(f"site {site}: {exc}", 422, "changes") from exc
        if bound:
            sites.append(site)
    until = now
    since = until - dt.timedelta(days=backtest_days)
    results = []
    for site in sites:
        try:
            result = backtest(conn, site, candidate, since, until)
        except BacktestError as exc:
            raise RevisionError(f"backtest at {site}: {exc}", 422, "changes") from exc
        results.append(
            SiteBacktest(
                site=site,
                candidate_rate=result.candidate.compliance_rate,
                in_force_rate=None if result.in_force is None else result.in_force.compliance_rate,
                candidate_alerts=result.candidate.alerts,
                in_force_alerts=0 if result.in_force is None else result.in_force.alerts,
                readings=result.readings,
            )
        )
    # The backtest may take a while: only now the ledger's lock (every ledger writer waits
    # for it, the ingest's alerts too), and what was checked before it is checked again.
    ledger.lock(conn)
    _refuse_second(conn, clause_id)
    newest = registry.stored_clause_versions(conn, clause_id)[-1].clause
    if newest.version != base.version:
        raise RevisionError(
            f"version {newest.version} of {clause_id} was added meanwhile: propose again", 409
        )
    config = candidate.model_dump(mode="json", by_alias=True)
    row = conn.execute(
        "INSERT INTO clause_revisions (clause_id, based_on, state, changes, diff, config, reason,"
        " backtest, proposed_by, proposed_at, updated_at)"
        " VALUES (%s, %s, 'pending', %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            clause_id,
            base.version,
            Jsonb(dict(changes)),
            Jsonb([c.model_dump(mode="json") for c in diff]),
            Jsonb(config),
            reason,
            Jsonb(
                {
                    "since": since.isoformat(),
                    "until": until.isoformat(),
                    "sites": [r.model_dump(mode="json") for r in results],
                }
            ),
            actor,
            now,
            now,
        ),
    ).fetchone()
    assert row is not None
    revision_id = int(row[0])
    _record(
        conn,
        "clause_revision.proposed",
        revision_id,
        clause_id,
        actor,
        now,
        {
            "based_on": base.version,
            "reason": reason,
            "diff": [c.model_dump(mode="json") for c in diff],
        },
    )
    return get_revision(conn, revision_id)


def approve(
    conn: psycopg.Connection[Any], revision_id: int, actor: str, note: str | None, now: dt.datetime
) -> Revision:
    """Approves a pending revision; the proposer cannot approve their own."""
    ledger.lock(conn)
    revision = _locked(conn, revision_id, "pending")
    check_approver(actor, revision.proposed_by)
    record_decision(conn, "clause_revisions", revision_id, "approved", actor, note, now)
    _record(
        conn,
        "clause_revision.approved",
        revision_id,
        revision.clause_id,
        actor,
        now,
        {"proposed_by": revision.proposed_by, "note": note},
    )
    return get_revision(conn, revision_id)


def reject(
    conn: psycopg.Connection[Any], revision_id: int, actor: str, note: str, now: dt.datetime
) -> Revision:
    """Rejects a revision pending approval (or approved, not published): it is closed."""
    ledger.lock(conn)
    revision = _locked(conn, revision_id, "pending", "approved")
    record_decision(conn, "clause_revisions", revision_id, "rejected", actor, note, now)
    _record(
        conn,
        "clause_revision.rejected",
        revision_id,
        revision.clause_id,
        actor,
        now,
        {"proposed_by": revision.proposed_by, "note": note},
    )
    return get_revision(conn, revision_id)


def publish(
    conn: psycopg.Connection[Any],
    revision_id: int,
    actor: str,
    effective_from: dt.date,
    now: dt.datetime,
) -> Revision:
    """Publishes an approved revision as the next version from `effective_from`."""
    ledger.lock(conn)
    revision = _locked(conn, revision_id, "approved")
    _after_today_everywhere(conn, effective_from, now)
    stored = registry.stored_clause_versions(conn, revision.clause_id)
    newest = stored[-1]
    if newest.clause.version != revision.based_on:
        raise RevisionError(
            f"version {newest.clause.version} was added after this revision was proposed"
            f" (it revises {revision.based_on}): propose it again",
            409,
        )
    base = newest.clause
    if effective_from <= base.effective_from:
        raise RevisionError(
            f"version {base.version} starts {base.effective_from}: the new one must start later",
            422,
            "effective_from",
        )
    if base.effective_to is not None and base.effective_to < effective_from:
        raise RevisionError(
            f"version {base.version} ends {base.effective_to}, before {effective_from}",
            422,
            "effective_from",
        )
    version = max(base.version, _highest_revised(conn, revision.clause_id)) + 1
    config = _config_of(conn, revision_id)
    new = ClauseVersion.model_validate(
        {
            **config,
            "version": version,
            "effective_from": effective_from,
            "effective_to": base.effective_to,
        }
    )
    closed = base.model_copy(update={"effective_to": effective_from - dt.timedelta(days=1)})
    registry.put_clause_version(conn, newest.standard, closed, actor, now)
    registry.put_clause_version(conn, newest.standard, new, actor, now)
    conn.execute(
        "UPDATE clause_revisions SET state = 'published', published_by = %s, published_at = %s,"
        " version = %s, effective_from = %s, previous_config = %s, updated_at = %s WHERE id = %s",
        (
            actor,
            now,
            version,
            effective_from,
            Jsonb(base.model_dump(mode="json", by_alias=True)),
            now,
            revision_id,
        ),
    )
    _record(
        conn,
        "clause_revision.published",
        revision_id,
        revision.clause_id,
        actor,
        now,
        {
            "proposed_by": revision.proposed_by,
            "approved_by": revision.approved_by,
            "published_by": actor,
            "version": version,
            "content_hash": new.content_hash(),
            "revises": base.version,
            "effective_from": effective_from.isoformat(),
            "reason": revision.reason,
            "diff": [c.model_dump(mode="json") for c in revision.diff],
        },
    )
    return get_revision(conn, revision_id)


def rollback(
    conn: psycopg.Connection[Any],
    revision_id: int,
    actor: str,
    effective_from: dt.date | None,
    now: dt.datetime,
) -> Revision:
    """Takes a published revision back: withdrawn when its version is not in force anywhere
    yet, else ended before `effective_from`, from which the revised content is judged again."""
    ledger.lock(conn)
    revision = _locked(conn, revision_id, "published")
    assert revision.version is not None and revision.effective_from is not None
    stored = {
        s.clause.version: s for s in registry.stored_clause_versions(conn, revision.clause_id)
    }
    published = stored.get(revision.version)
    previous = _previous_config(conn, revision_id)
    if published is None or previous is None:
        raise RevisionError("the published version is no longer stored", 409)
    if max(stored) != revision.version:
        raise RevisionError(
            f"version {max(stored)} came after this revision: roll that back first", 409
        )
    base = ClauseVersion.model_validate(previous)
    facts: dict[str, Any] = {
        "proposed_by": revision.proposed_by,
        "approved_by": revision.approved_by,
        "version": revision.version,
    }
    if not _started_anywhere(conn, revision.effective_from, now):
        registry.delete_clause_version(conn, revision.clause_id, revision.version)
        registry.put_clause_version(conn, published.standard, base, actor, now)
        rollback_version = None
        effective_from = None
        facts["withdrawn"] = True
    else:
        if effective_from is None:
            raise RevisionError(
                f"version {revision.version} is in force: give the day the revised content"
                " applies again",
                422,
                "effective_from",
            )
        _after_today_everywhere(conn, effective_from, now)
        if effective_from <= revision.effective_from:
            raise RevisionError(
                f"version {revision.version} starts {revision.effective_from}: roll back from a"
                " later day",
                422,
                "effective_from",
            )
        ended = published.clause.model_copy(
            update={"effective_to": effective_from - dt.timedelta(days=1)}
        )
        rollback_version = max(max(stored), _highest_revised(conn, revision.clause_id)) + 1
        restored = base.model_copy(
            update={
                "version": rollback_version,
                "effective_from": effective_from,
                "effective_to": published.clause.effective_to,
            }
        )
        registry.put_clause_version(conn, published.standard, ended, actor, now)
        registry.put_clause_version(conn, published.standard, restored, actor, now)
        facts.update(
            rollback_version=rollback_version,
            effective_from=effective_from.isoformat(),
            content_hash=restored.content_hash(),
        )
    conn.execute(
        "UPDATE clause_revisions SET state = 'rolled_back', rolled_back_by = %s,"
        " rolled_back_at = %s, rollback_version = %s, rollback_from = %s, updated_at = %s"
        " WHERE id = %s",
        (actor, now, rollback_version, effective_from, now, revision_id),
    )
    _record(conn, "clause_revision.rolled_back", revision_id, revision.clause_id, actor, now, facts)
    return get_revision(conn, revision_id)


def check_approver(actor: str, proposed_by: str) -> None:
    """The approval rule of every revision, a clause's or a site's: a named user signed in
    (never an API token or a process), not the proposer. Raises RevisionError (403)."""
    if not actor.startswith(USER_ACTOR):
        raise RevisionError(
            "a revision is approved by a named user signed in (user:NAME), not by an API token"
            " or a process",
            403,
        )
    if person(actor) == person(proposed_by):
        raise RevisionError(
            "the proposer cannot approve their own revision: another named user must", 403
        )


def person(actor: str) -> str:
    """Who an actor string names, without the label or display name that may change:
    "user:li (李处长)" → "user:li", "token:7 (ops)" → "token:7"."""
    return actor.split(" (", 1)[0]


# -- reads --


def get_revision(conn: psycopg.Connection[Any], revision_id: int) -> Revision:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"{_SELECT} WHERE id = %s", (revision_id,)).fetchone()
    if row is None:
        raise RevisionError("revision not found", 404)
    return _revision(row)


def list_revisions(
    conn: psycopg.Connection[Any],
    *,
    clause_id: str | None = None,
    states: Sequence[RevisionState] | None = None,
    limit: int = 100,
) -> list[Revision]:
    """Newest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"{_SELECT} WHERE (%(clause)s::text IS NULL OR clause_id = %(clause)s)"
            " AND (%(states)s::text[] IS NULL OR state = ANY(%(states)s))"
            " ORDER BY id DESC LIMIT %(limit)s",
            {"clause": clause_id, "states": list(states) if states else None, "limit": limit},
        ).fetchall()
    return [_revision(row) for row in rows]


def clause_set_stamp(conn: psycopg.Connection[Any]) -> tuple[int, dt.datetime | None]:
    """Changes whenever a revision is published or rolled back: the service polls it."""
    row = conn.execute(
        "SELECT count(*), max(updated_at) FROM clause_revisions"
        " WHERE state IN ('published', 'rolled_back')"
    ).fetchone()
    assert row is not None
    return int(row[0]), row[1]


def managed_keys(conn: psycopg.Connection[Any]) -> set[tuple[str, int]]:
    """(clause id, version) of every version a revision published, closed or restored."""
    keys: set[tuple[str, int]] = set()
    for clause_id, based_on, version, rollback_version in conn.execute(
        "SELECT clause_id, based_on, version, rollback_version FROM clause_revisions"
        " WHERE state IN ('published', 'rolled_back')"
    ).fetchall():
        keys.update(
            (str(clause_id), int(v)) for v in (based_on, version, rollback_version) if v is not None
        )
    return keys


def clause_set(
    conn: psycopg.Connection[Any], from_files: Iterable[ClauseVersion]
) -> list[ClauseVersion]:
    """The clause versions to judge: the files' versions, with those revisions manage taken
    from the store (closed, published, restored; a withdrawn one is gone)."""
    files = list(from_files)
    keys = managed_keys(conn)
    kept = [c for c in files if (c.id, c.version) not in keys]
    if not keys:
        return kept
    # A clause the files no longer have is judged no more, revised or not.
    clause_ids = {clause_id for clause_id, _ in keys} & {c.id for c in files}
    stored = [
        s.clause
        for clause_id in sorted(clause_ids)
        for s in registry.stored_clause_versions(conn, clause_id)
        if (s.clause.id, s.clause.version) in keys
    ]
    return kept + stored


# -- helpers --

_SELECT = (
    "SELECT id, clause_id, based_on, state, changes, diff, reason, backtest, proposed_by,"
    " proposed_at, approved_by, approved_at, decision_note, rejected_by, rejected_at,"
    " published_by, published_at, version, effective_from, rolled_back_by, rolled_back_at,"
    " rollback_version, rollback_from FROM clause_revisions"
)


def _revision(row: dict[str, Any]) -> Revision:
    tested = row.pop("backtest")
    return Revision(
        **row,
        backtest=tested["sites"],
        backtest_since=tested["since"],
        backtest_until=tested["until"],
    )


def record_decision(
    conn: psycopg.Connection[Any],
    table: Literal["clause_revisions", "site_revisions"],
    revision_id: int,
    decision: Literal["approved", "rejected"],
    actor: str,
    note: str | None,
    now: dt.datetime,
) -> None:
    """A clause or site revision approved or rejected by `actor`, with the note given."""
    who, when = (
        ("approved_by", "approved_at")
        if decision == "approved"
        else (
            "rejected_by",
            "rejected_at",
        )
    )
    conn.execute(
        f"UPDATE {table} SET state = %s, {who} = %s, {when} = %s,"  # fixed names only
        " decision_note = %s, updated_at = %s WHERE id = %s",
        (decision, actor, now, note, now, revision_id),
    )


def lock_in_state(
    conn: psycopg.Connection[Any],
    table: Literal["clause_revisions", "site_revisions"],
    revision_id: int,
    states: tuple[str, ...],
) -> None:
    """Locks a clause or site revision's row for this transaction: 404 when there is none, 409
    when it is in none of `states` (the step asked for does not apply to it)."""
    row = conn.execute(
        f"SELECT state FROM {table} WHERE id = %s FOR UPDATE",  # `table`: one of two names
        (revision_id,),
    ).fetchone()
    if row is None:
        raise RevisionError("revision not found", 404)
    if row[0] not in states:
        raise RevisionError(
            f"revision {revision_id} is {row[0]}; this step needs it {' or '.join(states)}", 409
        )


def _locked(conn: psycopg.Connection[Any], revision_id: int, *states: str) -> Revision:
    lock_in_state(conn, "clause_revisions", revision_id, states)
    return get_revision(conn, revision_id)


def _refuse_second(conn: psycopg.Connection[Any], clause_id: str) -> None:
    """409 when the clause has a revision pending approval or publication."""
    row = conn.execute(
        "SELECT id FROM clause_revisions WHERE clause_id = %s AND state IN ('pending', 'approved')",
        (clause_id,),
    ).fetchone()
    if row is not None:
        raise RevisionError(
            f"clause {clause_id} has a revision pending approval or publication already"
            f" (#{row[0]})",
            409,
        )


def _config_of(conn: psycopg.Connection[Any], revision_id: int) -> dict[str, Any]:
    row = conn.execute(
        "SELECT config FROM clause_revisions WHERE id = %s", (revision_id,)
    ).fetchone()
    assert row is not None
    config: dict[str, Any] = row[0]
    return config


def _previous_config(conn: psycopg.Connection[Any], revision_id: int) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT previous_config FROM clause_revisions WHERE id = %s", (revision_id,)
    ).fetchone()
    return None if row is None else row[0]


def _highest_revised(conn: psycopg.Connection[Any], clause_id: str) -> int:
    """The highest version number any revision of the clause ever used (a withdrawn number
    is never given again: old checkpoints may still name it)."""
    row = conn.execute(
        "SELECT max(greatest(version, rollback_version)) FROM clause_revisions"
        " WHERE clause_id = %s",
        (clause_id,),
    ).fetchone()
    return 0 if row is None or row[0] is None else int(row[0])


def _site_todays(conn: psycopg.Connection[Any], now: dt.datetime) -> list[dt.date]:
    todays = [now.astimezone(row.zone()).date() for row in registry.site_rows(conn)]
    return todays or [now.astimezone(dt.UTC).date()]


def _after_today_everywhere(
    conn: psycopg.Connection[Any], effective_from: dt.date, now: dt.datetime
) -> None:
    latest = max(_site_todays(conn, now))
    if effective_from <= latest:
        raise RevisionError(
            f"effective_from must be after today at every site (after {latest}): what has been"
            " judged is not judged again under a new version",
            422,
            "effective_from",
        )


def _started_anywhere(conn: psycopg.Connection[Any], day: dt.date, now: dt.datetime) -> bool:
    return any(today >= day for today in _site_todays(conn, now))


def _with_changes(config: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `config` with each dotted path set (`params.limit.default`, `check.for`,
    `applies_to.space_types.0`); the path's parents must exist."""
    result: dict[str, Any] = _copy(config)
    for path, value in changes.items():
        parts = path.split(".")
        if not path or len(path) > 200 or any(not part for part in parts):
            raise RevisionError(f"{path!r}: a dotted path such as params.limit.default", 422)
        if parts[0] in FIXED_FIELDS:
            raise RevisionError(
                f"{path}: set by the workflow (the version number and dates come at publish)",
                422,
                "changes",
            )
        node: Any = result
        for part in parts[:-1]:
            node = _child(node, part, path)
        last = parts[-1]
        if isinstance(node, dict):
            node[last] = _copy(value)
        elif isinstance(node, list) and last.isdigit() and int(last) < len(node):
            node[int(last)] = _copy(value)
        else:
            raise RevisionError(f"{path}: no such place in the clause", 422, "changes")
    return result


def _child(node: Any, part: str, path: str) -> Any:
    if isinstance(node, dict) and part in node and isinstance(node[part], dict | list):
        return node[part]
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        return node[int(part)]
    raise RevisionError(f"{path}: no such place in the clause", 422, "changes")


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def _record(
    conn: psycopg.Connection[Any],
    kind: str,
    revision_id: int,
    clause_id: str,
    actor: str,
    now: dt.datetime,
    facts: dict[str, Any],
) -> None:
    payload = {"actor": actor, "revision": revision_id, "clause_id": clause_id, **facts}
    ledger.append(conn, [ledger.Entry(kind, f"clause_revision:{revision_id}", payload)], now)
