"""The registry in PostgreSQL: sites, spaces, devices, parties, assignments and clause versions.

The one module that reads and writes these tables: the API, the domain services and the CLI
call the named reads below (`site_row`, `site_ids`, `space_rows`, ...) instead of writing SQL.

`sync_site` and `sync_clauses` bring the tables in line with the files an operator writes; they
are idempotent (unchanged content writes nothing) and every change they make is recorded in the
ledger with who made it. Nothing that alerts may name is ever deleted: a space, device or party
that left the file is retired; an assignment that left the file has its period closed.

None of these functions commit: the caller owns the transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb

from rules.clause import ClauseFile, ClauseVersion, Standard
from rules.site import Assignment, Party, SiteModel
from store import ledger
from store.times import require_aware, wall_now

# Columns compared and written for each retirable kind, in table order after (site, id).
_ENTITY_COLUMNS: dict[str, tuple[str, ...]] = {
    "space": ("name", "type", "parent", "tags", "area_m2", "occupants"),
    "device": ("kind", "space", "metrics", "parent"),
    "party": ("name", "kind", "contacts"),
}
_TABLES = {"space": "spaces", "device": "devices", "party": "parties"}
_JSON_COLUMNS = {"metrics", "contacts"}


def _recorded(
    conn: psycopg.Connection[Any], report: SyncReport, entries: list[ledger.Entry], now: dt.datetime
) -> SyncReport:
    """A sync's ledger entries appended, and counted in its report."""
    for entry in entries:
        report.count(entry.kind)
    ledger.append(conn, entries, now)
    return report


class UnknownSite(LookupError):
    """A site id that is not in the registry (the `sites` table)."""


@dataclass
class SyncReport:
    """What a sync changed, by ledger kind ("space.added": 3). Empty when nothing changed."""

    changes: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str) -> None:
        self.changes[kind] = self.changes.get(kind, 0) + 1

    @property
    def changed(self) -> bool:
        return bool(self.changes)


@dataclass(frozen=True, slots=True)
class StoredAssignment:
    id: int
    site: str
    party: str
    space: str
    domain: str
    role: str
    level: int
    valid_from: dt.datetime
    valid_to: dt.datetime | None

    def in_force_at(self, at: dt.datetime) -> bool:
        return self.valid_from <= at and (self.valid_to is None or at < self.valid_to)


def sync_site(
    conn: psycopg.Connection[Any],
    site_model: SiteModel,
    actor: str,
    now: dt.datetime | None = None,
) -> SyncReport:
    """Makes the registry of this site match `site_model`. The whole model is kept with the
    site: an unchanged file costs one query and writes nothing. Does not commit."""
    now = require_aware(now or wall_now(), "now")
    ledger.lock(conn)
    report = SyncReport()
    entries: list[ledger.Entry] = []
    site = site_model.site
    info = site.model_dump(mode="json")
    model = site_model.model_dump(mode="json")
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT info, model FROM sites WHERE id = %s FOR UPDATE", (site.id,))
        stored = cur.fetchone()
    if stored is not None and stored["model"] == model:
        return report
    before = (
        [Assignment.model_validate(a) for a in stored["model"]["assignments"]] if stored else []
    )
    if stored is None:
        conn.execute(
            "INSERT INTO sites (id, name, timezone, info, model, created_by, created_at,"
            " updated_by, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (site.id, site.name, site.timezone, Jsonb(info), Jsonb(model), actor, now, actor, now),
        )
        entries.append(_entry("site.created", site.id, f"site:{site.id}", actor, {"site": info}))
    else:
        conn.execute(
            "UPDATE sites SET name = %s, timezone = %s, info = %s, model = %s, updated_by = %s,"
            " updated_at = %s WHERE id = %s",
            (site.name, site.timezone, Jsonb(info), Jsonb(model), actor, now, site.id),
        )
        if stored["info"] != info:
            entries.append(
                _entry(
                    "site.changed",
                    site.id,
                    f"site:{site.id}",
                    actor,
                    {"before": stored["info"], "after": info},
                )
            )
    for kind, section, items in (
        ("space", "spaces", site_model.spaces),
        ("device", "devices", site_model.devices),
        ("party", "parties", site_model.parties),
    ):
        wanted = {item.id: item.model_dump(mode="json") for item in items}
        previous_file = {item["id"]: item for item in stored["model"][section]} if stored else None
        entries.extend(_sync_entities(conn, site.id, kind, wanted, previous_file, actor, now))
    entries.extend(_sync_assignments(conn, site.id, before, site_model.assignments, actor, now))
    previous_done = _file_last_done(site_model, stored["model"]) if stored else None
    wanted_done = _file_last_done(site_model, model)
    for (space_id, task), done_at in wanted_done.items():
        if previous_done is None or previous_done.get((space_id, task)) != done_at:
            entries.append(_put_last_done(conn, site.id, space_id, task, done_at, actor, now))
    for space_id, task in sorted((previous_done or {}).keys() - wanted_done.keys()):
        conn.execute(
            "DELETE FROM space_last_done WHERE site = %s AND space = %s AND task = %s",
            (site.id, space_id, task),
        )
        facts = {"space": space_id, "task": task}
        entity = f"last_done:{site.id}/{space_id}/{task}"
        entries.append(_entry("last_done.removed", site.id, entity, actor, facts))
    return _recorded(conn, report, entries, now)


def sync_clauses(
    conn: psycopg.Connection[Any],
    clause_files: Iterable[ClauseFile],
    actor: str,
    now: dt.datetime | None = None,
) -> SyncReport:
    """Stores every clause version of `clause_files`. A version seen before with the same content
    hash writes nothing; a new version is added; a version whose content changed under the same
    number is updated, and its ledger entry keeps the previous content, so what earlier alerts
    were judged under stays readable. Does not commit."""
    now = require_aware(now or wall_now(), "now")
    ledger.lock(conn)
    report = SyncReport()
    entries: list[ledger.Entry] = []
    files = list(clause_files)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT clause_id, version, content_hash, config FROM clause_versions")
        stored = {(r["clause_id"], r["version"]): r for r in cur.fetchall()}
    for clause_file in files:
        standard = clause_file.standard
        for clause in clause_file.clauses:
            content_hash = clause.content_hash()
            config = clause.model_dump(mode="json", by_alias=True)
            entity = f"clause:{clause.id}@{clause.version}"
            facts = {
                "clause_id": clause.id,
                "version": clause.version,
                "content_hash": content_hash,
                "standard": standard.code,
                "edition": standard.edition,
            }
            previous = stored.get((clause.id, clause.version))
            if previous is None:
                _insert_clause_version(conn, standard, clause, actor, now)
                entries.append(_entry("clause_version.added", None, entity, actor, facts))
            elif previous["content_hash"] != content_hash:
                _update_clause_version(conn, standard, clause, actor, now)
                facts = {
                    **facts,
                    "previous_content_hash": previous["content_hash"],
                    "previous_config": previous["config"],
                }
                entries.append(_entry("clause_version.changed", None, entity, actor, facts))
            stored[(clause.id, clause.version)] = {
                "content_hash": content_hash,
                "config": config,
            }
    return _recorded(conn, report, entries, now)


def _clause_columns(standard: Standard, clause: ClauseVersion) -> tuple[Any, ...]:
    """The columns of clause_versions from content_hash to config, in that order."""
    return (
        clause.content_hash(),
        standard.code,
        standard.title,
        standard.edition,
        clause.number,
        clause.title,
        clause.text,
        clause.domain,
        clause.key,
        clause.confidence,
        clause.severity,
        clause.effective_from,
        clause.effective_to,
        Jsonb(clause.model_dump(mode="json", by_alias=True)),
    )


def _insert_clause_version(
    conn: psycopg.Connection[Any],
    standard: Standard,
    clause: ClauseVersion,
    actor: str,
    now: dt.datetime,
) -> None:
    conn.execute(
        "INSERT INTO clause_versions (content_hash, standard_code, standard_title,"
        " standard_edition, number, title, text, domain, key, confidence, severity,"
        " effective_from, effective_to, config, clause_id, version, created_by,"
        " created_at, updated_by, updated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
        " %s, %s, %s, %s)",
        (*_clause_columns(standard, clause), clause.id, clause.version, actor, now, actor, now),
    )


def _update_clause_version(
    conn: psycopg.Connection[Any],
    standard: Standard,
    clause: ClauseVersion,
    actor: str,
    now: dt.datetime,
) -> None:
    conn.execute(
        "UPDATE clause_versions SET content_hash = %s, standard_code = %s,"
        " standard_title = %s, standard_edition = %s, number = %s, title = %s,"
        " text = %s, domain = %s, key = %s, confidence = %s, severity = %s,"
        " effective_from = %s, effective_to = %s, config = %s, updated_by = %s,"
        " updated_at = %s WHERE clause_id = %s AND version = %s",
        (*_clause_columns(standard, clause), actor, now, clause.id, clause.version),
    )


@dataclass(frozen=True, slots=True)
class StoredClause:
    """One row of clause_versions as the engine and the revision workflow read it."""

    clause: ClauseVersion
    standard: Standard
    content_hash: str


def stored_clause_versions(
    conn: psycopg.Connection[Any], clause_id: str | None = None
) -> list[StoredClause]:
    """Every stored version (of one clause, or of all), by clause id and version."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT config, content_hash, standard_code, standard_title, standard_edition"
            " FROM clause_versions WHERE %(id)s::text IS NULL OR clause_id = %(id)s"
            " ORDER BY clause_id, version",
            {"id": clause_id},
        ).fetchall()
    return [
        StoredClause(
            ClauseVersion.model_validate(row["config"]),
            Standard(
                code=row["standard_code"],
                title=row["standard_title"],
                edition=row["standard_edition"],
            ),
            row["content_hash"],
        )
        for row in rows
    ]


def put_clause_version(
    conn: psycopg.Connection[Any],
    standard: Standard,
    clause: ClauseVersion,
    actor: str,
    now: dt.datetime,
) -> None:
    """Stores one version made by a clause revision (compliance/revisions.py), added or
    replacing the stored one of that number. The caller records it in the ledger."""
    exists = conn.execute(
        "SELECT 1 FROM clause_versions WHERE clause_id = %s AND version = %s FOR UPDATE",
        (clause.id, clause.version),
    ).fetchone()
    if exists is None:
        _insert_clause_version(conn, standard, clause, actor, now)
    else:
        _update_clause_version(conn, standard, clause, actor, now)


def delete_clause_version(conn: psycopg.Connection[Any], clause_id: str, version: int) -> None:
    """Removes a version that never came into force (a revision withdrawn before its
    effective date): nothing was judged under it but time outside its dates, whose intervals
    go with it."""
    conn.execute(
        "DELETE FROM compliance_intervals WHERE clause_id = %s AND clause_version = %s",
        (clause_id, version),
    )
    conn.execute(
        "DELETE FROM clause_versions WHERE clause_id = %s AND version = %s", (clause_id, version)
    )


def add_assignment(
    conn: psycopg.Connection[Any],
    site: str,
    assignment: Assignment,
    actor: str,
    now: dt.datetime | None = None,
) -> int:
    """Records a new assignment (an edit is `end_assignment` then this). Returns its id.
    Does not commit."""
    now = require_aware(now or wall_now(), "now")
    ledger.lock(conn)
    assignment_id, entry = _insert_assignment(conn, site, assignment, actor, now)
    ledger.append(conn, [entry], now)
    return assignment_id


def end_assignment(
    conn: psycopg.Connection[Any],
    assignment_id: int,
    valid_to: dt.datetime,
    actor: str,
    now: dt.datetime | None = None,
) -> None:
    """Closes an assignment's period at `valid_to` (not before it began). Does not commit.
    Raises LookupError for an unknown id and ValueError for a `valid_to` before `valid_from`."""
    now = require_aware(now or wall_now(), "now")
    ledger.lock(conn)
    require_aware(valid_to, "valid_to")
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM assignments WHERE id = %s FOR UPDATE", (assignment_id,))
        row = cur.fetchone()
    if row is None:
        raise LookupError(f"no assignment {assignment_id}")
    if valid_to < row["valid_from"]:
        raise ValueError("valid_to is before the assignment began")
    ledger.append(conn, [_end_entry(conn, row, valid_to, actor, now, removed=False)], now)


class PartyExists(Exception):
    """`add_party` of an id the site already has (retired parties included)."""


def add_party(
    conn: psycopg.Connection[Any],
    site: str,
    party: Party,
    actor: str,
    now: dt.datetime | None = None,
) -> None:
    """Adds a party to a site (the API's edit). Takes the ledger lock before writing, like every
    writer here, so it cannot deadlock with `sync_site`. Raises PartyExists when the id is
    taken. Does not commit."""
    now = require_aware(now or wall_now(), "now")
    ledger.lock(conn)
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO parties (site, id, name, kind, contacts, created_by, created_at,"
            " updated_by, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (site, party.id, party.name, party.kind, Jsonb(party.contacts), actor, now, actor, now),
        )
        if cur.rowcount == 0:
            raise PartyExists(f"party {party.id!r} exists in site {site!r}")
    facts = {"party": party.model_dump(include={"id", "name", "kind", "contacts"})}
    entry = _entry("party.added", site, f"party:{site}/{party.id}", actor, facts)
    ledger.append(conn, [entry], now)


def change_party(
    conn: psycopg.Connection[Any],
    site: str,
    party_id: str,
    changes: dict[str, Any],
    actor: str,
    now: dt.datetime | None = None,
) -> None:
    """Changes a party's `name`, `kind` or `contacts` (the keys of `changes`) and records the
    before and after in the ledger; no changes, no write. Ledger lock first, then the row.
    Raises LookupError for an unknown party. Does not commit."""
    now = require_aware(now or wall_now(), "now")
    unknown = set(changes) - set(_ENTITY_COLUMNS["party"])
    if unknown:
        raise ValueError(f"not a party field: {sorted(unknown)}")
    ledger.lock(conn)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT name, kind, contacts FROM parties WHERE site = %s AND id = %s FOR UPDATE",
            (site, party_id),
        )
        before = cur.fetchone()
    if before is None:
        raise LookupError(f"no party {party_id!r} in site {site!r}")
    if not changes:
        return
    after = before | changes
    conn.execute(
        "UPDATE parties SET name = %s, kind = %s, contacts = %s, updated_by = %s,"
        " updated_at = %s WHERE site = %s AND id = %s",
        (after["name"], after["kind"], Jsonb(after["contacts"]), actor, now, site, party_id),
    )
    facts = {"before": before, "after": after}
    entry = _entry("party.changed", site, f"party:{site}/{party_id}", actor, facts)
    ledger.append(conn, [entry], now)


def set_last_done(
    conn: psycopg.Connection[Any],
    site: str,
    space: str,
    task: str,
    done_at: dt.datetime,
    actor: str,
    now: dt.datetime | None = None,
) -> None:
    """Records when `space` last met an obligation (`task`: a clause id or an event type),
    with who set it, in the table and the ledger. Raises LookupError for an unknown space.
    Does not commit."""
    now = require_aware(now or wall_now(), "now")
    require_aware(done_at, "done_at")
    ledger.lock(conn)
    found = conn.execute(
        "SELECT 1 FROM spaces WHERE site = %s AND id = %s AND retired_at IS NULL", (site, space)
    ).fetchone()
    if found is None:
        raise LookupError(f"no space {space!r} in site {site!r}")
    ledger.append(conn, [_put_last_done(conn, site, space, task, done_at, actor, now)], now)


def last_done(conn: psycopg.Connection[Any], site: str) -> dict[tuple[str, str], dt.datetime]:
    """Every last-done time of a site's spaces, by (space, task)."""
    rows = conn.execute(
        "SELECT space, task, done_at FROM space_last_done WHERE site = %s", (site,)
    ).fetchall()
    return {(space, task): done_at for space, task, done_at in rows}


def last_done_row(
    conn: psycopg.Connection[Any], site: str, space: str, task: str
) -> dict[str, Any] | None:
    """One last-done time with who set it and when, or None."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT site, space, task, done_at, set_by, set_at FROM space_last_done"
            " WHERE site = %s AND space = %s AND task = %s",
            (site, space, task),
        )
        return cur.fetchone()


def _put_last_done(
    conn: psycopg.Connection[Any],
    site: str,
    space: str,
    task: str,
    done_at: dt.datetime,
    actor: str,
    now: dt.datetime,
) -> ledger.Entry:
    conn.execute(
        "INSERT INTO space_last_done (site, space, task, done_at, set_by, set_at)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (site, space, task) DO UPDATE"
        " SET done_at = excluded.done_at, set_by = excluded.set_by, set_at = excluded.set_at",
        (site, space, task, done_at, actor, now),
    )
    facts = {"space": space, "task": task, "done_at": done_at.isoformat()}
    return _entry("last_done.set", site, f"last_done:{site}/{space}/{task}", actor, facts)


def _file_last_done(
    site_model: SiteModel, model: dict[str, Any]
) -> dict[tuple[str, str], dt.datetime]:
    """The last-done times a site file (as its stored JSON) gives, by (space, task)."""
    found = {}
    for space in model["spaces"]:
        for task, when in (space.get("last_done") or {}).items():
            value = (
                dt.date.fromisoformat(when) if len(when) == 10 else dt.datetime.fromisoformat(when)
            )
            found[(space["id"], task)] = site_model.moment(value)
    return found


# Every assignment of a site, past, present and future, for binding.
ASSIGNMENTS_QUERY = (
    "SELECT id, site, party, space, domain, role, level, valid_from, valid_to"
    " FROM assignments WHERE site = %s ORDER BY id"
)
# Every party of a site: id, name, kind, contacts.
PARTIES_QUERY = "SELECT id, name, kind, contacts FROM parties WHERE site = %s"


def load_assignments(conn: psycopg.Connection[Any], site: str) -> list[StoredAssignment]:
    return [StoredAssignment(*r) for r in conn.execute(ASSIGNMENTS_QUERY, (site,)).fetchall()]


def party_names(conn: psycopg.Connection[Any], site: str) -> dict[str, str]:
    return {r[0]: r[1] for r in conn.execute(PARTIES_QUERY, (site,)).fetchall()}


# ---- reads: sites ----
# Site-scoped reads take `sites`: the ids to keep, or None for every site (an API token's
# `site_filter`).


@dataclass(frozen=True, slots=True)
class SiteRow:
    """A registered site, without its stored model (`site_model` reads that)."""

    id: str
    name: str
    timezone: str
    info: dict[str, Any]  # the `site:` section of the site file (SiteInfo), as stored
    created_at: dt.datetime

    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


_SITE_COLUMNS = "id, name, timezone, info, created_at"


def site_row(conn: psycopg.Connection[Any], site: str) -> SiteRow | None:
    """The site, or None when no such site is registered."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(f"SELECT {_SITE_COLUMNS} FROM sites WHERE id = %s", (site,)).fetchone()
    return None if row is None else SiteRow(*row)


def site_rows(conn: psycopg.Connection[Any], sites: Sequence[str] | None = None) -> list[SiteRow]:
    """The registered sites among `sites` (None: every site), by id."""
    rows = _of_sites(conn, f"SELECT {_SITE_COLUMNS} FROM sites", sites, "id", column="id")
    return [SiteRow(**row) for row in rows]


def site_ids(conn: psycopg.Connection[Any]) -> list[str]:
    """Every registered site's id, sorted."""
    with conn.cursor(row_factory=tuple_row) as cur:
        return [row[0] for row in cur.execute("SELECT id FROM sites ORDER BY id")]


def sites_in_org(conn: psycopg.Connection[Any], org: Sequence[str]) -> list[str]:
    """The registered sites whose organisation path (`site.org`) starts with `org`, sorted:
    read when asked, so a site registered later is among them at once."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            "SELECT id FROM sites WHERE jsonb_typeof(info->'org') = 'array'"
            " AND (ARRAY(SELECT jsonb_array_elements_text(info->'org')))"
            "[1:cardinality(%s::text[])] = %s::text[] ORDER BY id",
            (list(org), list(org)),
        )
        return [row[0] for row in rows]


def site_stamps(conn: psycopg.Connection[Any], sites: Sequence[str]) -> dict[str, dt.datetime]:
    """When each site's stored model last changed (`sync_site` writes only a changed model)."""
    rows = conn.execute(
        "SELECT id, updated_at FROM sites WHERE id = ANY(%s)", (list(sites),)
    ).fetchall()
    return {str(site): at for site, at in rows}


def site_exists(conn: psycopg.Connection[Any], site: str) -> bool:
    return conn.execute("SELECT 1 FROM sites WHERE id = %s", (site,)).fetchone() is not None


def sites_table_exists(conn: psycopg.Connection[Any]) -> bool:
    """False on a database the registry migration has not reached (reports fall back to the
    site files)."""
    row = conn.execute("SELECT to_regclass('sites') IS NOT NULL").fetchone()
    return bool(row and row[0])


def site_model(conn: psycopg.Connection[Any], site: str) -> SiteModel | None:
    """The site model last synced (`sync_site`), or None for an unknown site. Raises
    pydantic.ValidationError when the stored model no longer validates."""
    row = conn.execute("SELECT model FROM sites WHERE id = %s", (site,)).fetchone()
    return None if row is None else SiteModel.model_validate(row[0])


def site_summaries(
    conn: psycopg.Connection[Any], sites: Sequence[str] | None
) -> list[dict[str, Any]]:
    """id, name, timezone and data_time (the site's engine watermark, null before its first
    checkpoint) of the registered sites among `sites`, by id."""
    return _of_sites(
        conn,
        "SELECT s.id, s.name, s.timezone, to_timestamp(c.watermark) AS data_time"
        " FROM sites s LEFT JOIN engine_checkpoints c ON c.site = s.id",
        sites,
        "s.id",
        column="s.id",
    )


# ---- reads: spaces, devices, device status, parties, assignments ----

# The columns a reader gets of a party and of an assignment: one list each for the listing and
# the single-row read, so the two cannot drift apart.
_PARTY_COLUMNS = "site, id, name, kind, contacts, retired_at"
_ASSIGNMENT_COLUMNS = (
    "id, site, party, space, domain, role, level, valid_from, valid_to, created_by, created_at"
)


def space_rows(conn: psycopg.Connection[Any], sites: Sequence[str] | None) -> list[dict[str, Any]]:
    """The spaces in use (not retired) of `sites`, by site and id."""
    return _of_sites(
        conn,
        "SELECT site, id, name, type, parent, tags, area_m2, occupants FROM spaces",
        sites,
        "site, id",
        also=" AND retired_at IS NULL",
    )


def device_rows(conn: psycopg.Connection[Any], sites: Sequence[str] | None) -> list[dict[str, Any]]:
    """The devices in use (not retired) of `sites`, by site and id."""
    return _of_sites(
        conn,
        "SELECT site, id, space, kind, metrics, parent FROM devices",
        sites,
        "site, id",
        also=" AND retired_at IS NULL",
    )


def device_metric_unit(
    conn: psycopg.Connection[Any], site: str, device: str, metric: str
) -> str | None:
    """The unit of `metric` as the device's model declares it (None when it declares no such
    metric). Raises LookupError for a device the site does not have."""
    row = conn.execute(
        "SELECT metrics -> %s ->> 'unit' FROM devices WHERE site = %s AND id = %s",
        (metric, site, device),
    ).fetchone()
    if row is None:
        raise LookupError(f"no device {device!r} in site {site!r}")
    unit: str | None = row[0]
    return unit


def device_status_rows(
    conn: psycopg.Connection[Any], sites: Sequence[str] | None
) -> list[dict[str, Any]]:
    """The latest status ('online' / 'offline') each gateway or device of `sites` published,
    when it arrived, and a gateway's last health report of its sources (None if it sent none)
    (written by ingest: store.batches.write_device_status)."""
    return _of_sites(
        conn,
        "SELECT site, device, CASE WHEN online THEN 'online' ELSE 'offline' END AS status,"
        " received_at, sources FROM device_status",
        sites,
        "site, device",
    )


def party_rows(conn: psycopg.Connection[Any], sites: Sequence[str] | None) -> list[dict[str, Any]]:
    """Every party of `sites` (retired ones too), by site and id."""
    return _of_sites(conn, f"SELECT {_PARTY_COLUMNS} FROM parties", sites, "site, id")


def party_row(conn: psycopg.Connection[Any], site: str, party: str) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT {_PARTY_COLUMNS} FROM parties WHERE site = %s AND id = %s", (site, party)
        ).fetchone()


def party_and_space_exist(
    conn: psycopg.Connection[Any], site: str, party: str, space: str
) -> tuple[bool, bool]:
    """Whether the site has this party, and this space (retired ones included)."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM parties WHERE site = %(s)s AND id = %(p)s),"
        " (SELECT count(*) FROM spaces WHERE site = %(s)s AND id = %(x)s)",
        {"s": site, "p": party, "x": space},
    ).fetchone()
    if row is None:
        return False, False
    return bool(row[0]), bool(row[1])


def assignment_rows(
    conn: psycopg.Connection[Any], sites: Sequence[str] | None, at: dt.datetime | None = None
) -> list[dict[str, Any]]:
    """The assignments of `sites`, past, present and future (or only those in force at `at`),
    by site and id."""
    select = f"SELECT {_ASSIGNMENT_COLUMNS} FROM assignments"
    if at is None:
        return _of_sites(conn, select, sites, "site, id")
    in_force = " AND valid_from <= %s AND (valid_to IS NULL OR valid_to > %s)"
    return _of_sites(conn, select, sites, "site, id", also=in_force, args=(at, at))


def assignment_row(conn: psycopg.Connection[Any], assignment_id: int) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT {_ASSIGNMENT_COLUMNS} FROM assignments WHERE id = %s", (assignment_id,)
        ).fetchone()


# ---- reads: clause versions ----


def latest_clause_versions(conn: psycopg.Connection[Any], today: dt.date) -> list[dict[str, Any]]:
    """Each clause's latest version (its provenance), with how many versions it has and
    whether any of them is in force on `today`; by clause id."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT DISTINCT ON (clause_id) clause_id, version, standard_code, standard_title,"
            " standard_edition, number, title, domain, key, severity, confidence,"
            " count(*) OVER (PARTITION BY clause_id) AS versions,"
            " bool_or(effective_from <= %(today)s"
            "   AND (effective_to IS NULL OR effective_to >= %(today)s))"
            "   OVER (PARTITION BY clause_id) AS in_force"
            " FROM clause_versions ORDER BY clause_id, version DESC",
            {"today": today},
        ).fetchall()


def clause_version_rows(conn: psycopg.Connection[Any], clause_id: str) -> list[dict[str, Any]]:
    """Every version of one clause, oldest first (empty for an unknown clause)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT clause_id AS id, version, content_hash, effective_from, effective_to, number,"
            " title, text, severity, key, confidence, created_by, created_at, config"
            " FROM clause_versions WHERE clause_id = %s ORDER BY version",
            (clause_id,),
        ).fetchall()


def _of_sites(
    conn: psycopg.Connection[Any],
    select: str,
    sites: Sequence[str] | None,
    order_by: str,
    *,
    column: str = "site",
    also: str = "",
    args: Sequence[Any] = (),
) -> list[dict[str, Any]]:
    """The rows of `select` whose `column` is one of `sites` (None: every site) and that pass
    `also` (more conditions, with `args`), ordered by `order_by`."""
    where, where_args = ("TRUE", []) if sites is None else (f"{column} = ANY(%s)", [list(sites)])
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"{select} WHERE {where}{also} ORDER BY {order_by}", [*where_args, *args]
        ).fetchall()


def _sync_entities(
    conn: psycopg.Connection[Any],
    site: str,
    kind: str,
    wanted: dict[str, dict[str, Any]],
    previous_file: dict[str, dict[str, Any]] | None,
    actor: str,
    now: dt.datetime,
) -> list[ledger.Entry]:
    """Like assignments, applies what changed between the previous file and this one (edits
    made through the API in between survive); on the first sync, everything in the file."""
    table = _TABLES[kind]
    columns = _ENTITY_COLUMNS[kind]
    select = ", ".join(columns)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT id, {select}, retired_at FROM {table} WHERE site = %s FOR UPDATE", (site,)
        )
        stored = {r["id"]: r for r in cur.fetchall()}
    if previous_file is None:
        changed = wanted
        removed = stored.keys() - wanted.keys()
    else:
        changed = {i: item for i, item in wanted.items() if previous_file.get(i) != item}
        removed = previous_file.keys() - wanted.keys()
    entries: list[ledger.Entry] = []
    for item_id, item in changed.items():
        values = {c: _column_value(item.get(c)) for c in columns}
        wanted_view = {c: _comparable(c, item.get(c)) for c in columns}
        previous = stored.get(item_id)
        entity = f"{kind}:{site}/{item_id}"
        if previous is None:
            names = ", ".join(columns)
            marks = ", ".join(["%s"] * len(columns))
            conn.execute(
                f"INSERT INTO {table} (site, id, {names}, created_by, created_at, updated_by,"
                f" updated_at) VALUES (%s, %s, {marks}, %s, %s, %s, %s)",
                (site, item_id, *values.values(), actor, now, actor, now),
            )
            entries.append(_entry(f"{kind}.added", site, entity, actor, {kind: item}))
            continue
        stored_view = {c: _comparable(c, previous[c]) for c in columns}
        if stored_view == wanted_view and previous["retired_at"] is None:
            continue
        assignments = ", ".join(f"{c} = %s" for c in columns)
        conn.execute(
            f"UPDATE {table} SET {assignments}, retired_at = NULL, updated_by = %s,"
            " updated_at = %s WHERE site = %s AND id = %s",
            (*values.values(), actor, now, site, item_id),
        )
        entries.append(
            _entry(f"{kind}.changed", site, entity, actor, {"before": stored_view, "after": item})
        )
    for item_id in sorted(removed):
        previous = stored.get(item_id)
        if previous is None or previous["retired_at"] is not None:
            continue
        conn.execute(
            f"UPDATE {table} SET retired_at = %s, updated_by = %s, updated_at = %s"
            " WHERE site = %s AND id = %s",
            (now, actor, now, site, item_id),
        )
        entries.append(_entry(f"{kind}.retired", site, f"{kind}:{site}/{item_id}", actor, {}))
    return entries


def _sync_assignments(
    conn: psycopg.Connection[Any],
    site: str,
    before: Sequence[Assignment],
    after: Sequence[Assignment],
    actor: str,
    now: dt.datetime,
) -> list[ledger.Entry]:
    """Applies what changed between the previous file and this one, so edits made since
    through the API survive a restart with an unchanged file. An assignment is identified by
    everything but its end: a changed `valid_to` closes the period of the same row; one that
    left the file is closed at `now` (or at its own start if it had not begun, so it never was
    in force); re-opening a closed period is a new row from `now`."""
    old = {_assignment_key(a.model_dump()): a for a in before}
    new = {_assignment_key(a.model_dump()): a for a in after}
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM assignments WHERE site = %s ORDER BY id FOR UPDATE", (site,))
        # Several rows may share an identity (a period re-opened later); the newest counts.
        stored = {_assignment_key(row): row for row in cur.fetchall()}
    entries: list[ledger.Entry] = []
    for key, assignment in new.items():
        row = stored.get(key)
        previous = old.get(key)
        if row is None:
            entries.append(_insert_assignment(conn, site, assignment, actor, now)[1])
        elif previous is not None and previous.valid_to == assignment.valid_to:
            continue
        elif assignment.valid_to is not None and row["valid_to"] != assignment.valid_to:
            entries.append(_end_entry(conn, row, assignment.valid_to, actor, now, removed=False))
        elif assignment.valid_to is None and row["valid_to"] is not None:
            reopened = assignment.model_copy(update={"valid_from": max(now, row["valid_to"])})
            entries.append(_insert_assignment(conn, site, reopened, actor, now)[1])
    for key in old.keys() - new.keys():
        row = stored.get(key)
        if row is None or (row["valid_to"] is not None and row["valid_to"] <= now):
            continue
        end = max(now, row["valid_from"])
        entries.append(_end_entry(conn, row, end, actor, now, removed=True))
    return entries


def _end_entry(
    conn: psycopg.Connection[Any],
    row: dict[str, Any],
    valid_to: dt.datetime,
    actor: str,
    now: dt.datetime,
    *,
    removed: bool,
) -> ledger.Entry:
    _close_assignment(conn, row, valid_to, actor, now)
    return _entry(
        "assignment.ended",
        row["site"],
        f"assignment:{row['id']}",
        actor,
        {"valid_to": valid_to, "previous_valid_to": row["valid_to"], "removed": removed},
    )


def _insert_assignment(
    conn: psycopg.Connection[Any], site: str, assignment: Assignment, actor: str, now: dt.datetime
) -> tuple[int, ledger.Entry]:
    row = conn.execute(
        "INSERT INTO assignments (site, party, space, domain, role, level, valid_from, valid_to,"
        " created_by, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            site,
            assignment.party,
            assignment.space,
            assignment.domain,
            assignment.role,
            assignment.level,
            assignment.valid_from,
            assignment.valid_to,
            actor,
            now,
        ),
    ).fetchone()
    assert row is not None
    return row[0], _entry(
        "assignment.added",
        site,
        f"assignment:{row[0]}",
        actor,
        {"assignment": assignment.model_dump(mode="json")},
    )


def _close_assignment(
    conn: psycopg.Connection[Any],
    row: dict[str, Any],
    valid_to: dt.datetime,
    actor: str,
    now: dt.datetime,
) -> None:
    conn.execute(
        "UPDATE assignments SET valid_to = %s, ended_by = %s, ended_at = %s WHERE id = %s",
        (valid_to, actor, now, row["id"]),
    )


def _assignment_key(values: dict[str, Any]) -> tuple[Any, ...]:
    return (
        values["party"],
        values["space"],
        values["domain"],
        values["role"],
        values["level"],
        values["valid_from"],
    )


def _column_value(value: Any) -> Any:
    if isinstance(value, dict):
        return Jsonb(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _comparable(column: str, value: Any) -> Any:
    """Stored and wanted values in one form (tuples and lists compare equal as lists)."""
    if isinstance(value, tuple):
        return list(value)
    if column in _JSON_COLUMNS and value is None:
        return {}
    return value


def _entry(
    kind: str, site: str | None, entity: str, actor: str, facts: dict[str, Any]
) -> ledger.Entry:
    payload: dict[str, Any] = {"actor": actor, **facts}
    if site is not None:
        payload["site"] = site
    return ledger.Entry(kind=kind, entity=entity, payload=payload)
