"""What readers query of alerts: the filtered listing, one alert with the clause version it was
judged under and its timeline, the timeline as a feed (the live stream), counts by state.

Rows come back as dicts keyed by column name (`ALERT_COLUMNS` in every alert row); the API
turns them into its models (api/models.py). Nothing here writes or commits.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row, tuple_row

# The columns of an alert as listed and streamed (table alias `a`).
ALERT_COLUMNS = (
    "a.id, a.site, a.clause_id, a.clause_version, a.content_hash, a.standard, a.number, a.title,"
    " a.kind, a.severity, a.space, a.device, a.metric, a.reason, a.state, a.started_at,"
    " a.ended_at, a.worst_value, a.unit, a.responsible_party, a.responsible_name, a.unbound,"
    " a.escalation_level, a.closed_at, a.cause, a.corrective_action, a.inhibited_by, a.outage,"
    " (SELECT timezone FROM sites WHERE id = a.site) AS site_timezone"
)

# What `search` looks through: the clause (id, number, title), its standard, the subject (space
# with its name, device) and the responsible party (id, name).
SEARCHED = (
    "a.clause_id",
    "a.number",
    "a.title",
    "a.standard",
    "a.space",
    "a.device",
    "a.responsible_party",
    "a.responsible_name",
    "(SELECT name FROM spaces WHERE site = a.site AND id = a.space)",
)

# Timeline rows after an id (and the gap ids) with their alerts' current state.
# With each row its site's organisation path as registered now (`site_org`, NULL without one):
# a stream scoped to an organisation sees the sites registered under it after it opened.
TIMELINE_ROWS = (
    "SELECT t.id AS timeline_id, t.at AS timeline_at, t.action AS timeline_action,"
    f" t.actor AS timeline_actor, {ALERT_COLUMNS},"
    " CASE WHEN jsonb_typeof(s.info->'org') = 'array'"
    " THEN ARRAY(SELECT jsonb_array_elements_text(s.info->'org')) END AS site_org"
    " FROM alert_timeline t JOIN alerts a ON a.id = t.alert_id LEFT JOIN sites s ON s.id = a.site"
    " WHERE t.id > %s OR t.id = ANY(%s) ORDER BY t.id LIMIT %s"
)


def alert_rows(
    conn: psycopg.Connection[Any],
    *,
    sites: Sequence[str] | None = None,
    states: Sequence[str] = (),
    severities: Sequence[str] = (),
    clause: str | None = None,
    space: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    search: str | None = None,
    before: tuple[dt.datetime, int] | None = None,
    limit: int,
) -> list[dict[str, Any]]:
    """Alerts newest first (by start time, then id), at most `limit`: of `sites` (None: every
    site), in one of `states` / `severities` (empty: any), of one clause, of a space and its
    subtree, started in [since, until), whose clause, standard, subject or party contains every
    word of `search` (case-insensitive), and after the position `before` (the start time and id
    of the last row of the previous page)."""
    where: list[str] = []
    args: list[Any] = []
    if sites is not None:
        where.append("a.site = ANY(%s)")
        args.append(sites)
    if states:
        where.append("a.state = ANY(%s)")
        args.append(list(states))
    if severities:
        where.append("a.severity = ANY(%s)")
        args.append(list(severities))
    if clause is not None:
        where.append("a.clause_id = %s")
        args.append(clause)
    if space is not None:
        where.append(
            "(a.space = %s OR (a.site, a.space) IN (WITH RECURSIVE sub(site, id) AS ("
            " SELECT site, id FROM spaces WHERE id = %s"
            " UNION SELECT s.site, s.id FROM spaces s JOIN sub ON s.site = sub.site"
            " AND s.parent = sub.id) SELECT site, id FROM sub))"
        )
        args.extend([space, space])
    if since is not None:
        where.append("a.started_at >= %s")
        args.append(since)
    if until is not None:
        where.append("a.started_at < %s")
        args.append(until)
    for word in (search or "").split():
        pattern = "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where.append("(" + " OR ".join(f"{column} ILIKE %s" for column in SEARCHED) + ")")
        args.extend([pattern] * len(SEARCHED))
    if before is not None:
        where.append("(a.started_at, a.id) < (%s, %s)")
        args.extend(before)
    sql = (
        f"SELECT {ALERT_COLUMNS} FROM alerts a"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY a.started_at DESC, a.id DESC LIMIT %s"
    )
    args.append(limit)
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(sql, args).fetchall()


def alert_site(conn: psycopg.Connection[Any], alert_id: int) -> str | None:
    """The site of an alert; None when there is no such alert."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute("SELECT site FROM alerts WHERE id = %s", (alert_id,)).fetchone()
    return None if row is None else str(row[0])


def alert_sites(conn: psycopg.Connection[Any], alert_ids: Sequence[int]) -> dict[int, str]:
    """The site of each of `alert_ids` that exists."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            "SELECT id, site FROM alerts WHERE id = ANY(%s)", (list(alert_ids),)
        ).fetchall()
    return {int(alert_id): str(site) for alert_id, site in rows}


def alert_detail_row(conn: psycopg.Connection[Any], alert_id: int) -> dict[str, Any] | None:
    """One alert (`ALERT_COLUMNS` and the rest of its row) with the provenance of the clause
    version it was judged under (`standard_code`... `effective_to`, and its `clause_config`,
    null when that version is not stored) and, for an obligation, the event it expects
    (`obligation_event`); None when there is no such alert."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"SELECT {ALERT_COLUMNS}, a.confirmed_at, a.params, a.evidence, a.escalation_chain,"
            " a.acknowledged_at, a.acknowledged_by, a.acknowledged_note, a.closed_by,"
            " v.standard_code, v.standard_title, v.standard_edition, v.text, v.domain, v.key,"
            " v.confidence, v.effective_from, v.effective_to, v.config AS clause_config,"
            " CASE WHEN v.config->'check'->>'kind' = 'obligation'"
            "   THEN v.config->'check'->>'event' END AS obligation_event"
            " FROM alerts a LEFT JOIN clause_versions v"
            " ON v.clause_id = a.clause_id AND v.version = a.clause_version"
            " WHERE a.id = %s",
            (alert_id,),
        ).fetchone()


def inhibited_alerts(conn: psycopg.Connection[Any], alert_id: int) -> list[dict[str, Any]]:
    """The alerts an outage alert inhibits (docs/alerts.md, "Inhibition"): id, space, device,
    state, started_at, ended_at, by device."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id, space, device, state, started_at, ended_at FROM alerts"
            " WHERE inhibited_by = %s ORDER BY device, id",
            (alert_id,),
        ).fetchall()


def alert_timeline(conn: psycopg.Connection[Any], alert_id: int) -> list[dict[str, Any]]:
    """The timeline of one alert (id, at, action, actor, note, data), oldest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id, at, action, actor, note, data FROM alert_timeline"
            " WHERE alert_id = %s ORDER BY id",
            (alert_id,),
        ).fetchall()


async def timeline_rows(
    conn: psycopg.AsyncConnection[Any], last_id: int, gaps: Sequence[int], batch: int
) -> list[dict[str, Any]]:
    """Timeline rows after `last_id` (and the `gaps` ids) with their alerts' current state, in
    one round trip, at most `batch`. Rows of every site: the stream's gap bookkeeping needs
    every id; streams filter."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(TIMELINE_ROWS, (last_id, list(gaps), batch))
        return await cur.fetchall()


def timeline_head(conn: psycopg.Connection[Any]) -> int:
    """The highest timeline id (0 for an empty timeline): where a stream that starts now is."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute("SELECT coalesce(max(id), 0) FROM alert_timeline").fetchone()
    return int(row[0]) if row else 0


def counts_by_state(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """How many alerts are in each lifecycle state (states without alerts left out)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        return {
            state: count
            for state, count in cur.execute("SELECT state, count(*) FROM alerts GROUP BY state")
        }
