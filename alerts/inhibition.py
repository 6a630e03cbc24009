"""Inhibition (issue 20): a gateway, a data concentrator or the site's uplink that is offline
inhibits the stale-data alerts of the devices behind it, so an outage is one alert, not one
per device.

Which devices are behind what comes from the site model (`Device.gateway`, `SiteInfo.uplink`:
`SiteModel.sources_of`); whether a source is offline, from the status it last published
(`device_status`, written by the pipeline in the same transaction, before the alerts).
`alerts.record.record_outputs` raises a stale-data alert of a device behind an offline source
as usual, with `inhibited_by` naming the source's outage alert (raised with the first of them,
and the only one that notifies). The engine is not involved: compliance figures count the
data-quality time per device as before; only alerts and notifications are consolidated.

`source_status` (the pipeline's status hook) resolves an outage alert when its source reports
`online`; `release_due` (a scheduler job) releases, after RELEASE_AFTER, the alerts it
inhibited that are still open (a sensor still silent once its gateway is back): `inhibited_by`
back to NULL, a `released` timeline row and ledger entry, and the raised notice they never had.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from alerts import notify
from rules.site import SiteModel
from rules.verdicts import ViolationStarted
from store import ledger
from store.batches import StatusRow
from store.times import require_aware, to_datetime

INHIBITION_ACTOR = "engine"
# How long the alerts an outage inhibited stay inhibited after its source came back: the
# devices' data (and the gateway's store-and-forward backlog) ends them within seconds; one
# still open after this is a fault of its own and notifies on its own.
RELEASE_AFTER = dt.timedelta(minutes=5)
# At most this many device ids are written into an outage alert's reason (all are counted).
NAMED_DEVICES = 50

# The source key of an outage of the whole site that no one source explains (its alert has no
# device): every device the stale-data clause watches is without data at once.
SITE_WIDE = ""

# id → since when, of every gateway, device or uplink of a site that reports offline now.
OFFLINE_QUERY = "SELECT device, received_at FROM device_status WHERE site = %s AND NOT online"
# source, id, state, started_at, ended_at, reopen_count of the open outage alerts of a site
# (one per source: a source's outage alert is raised only while none is open), oldest first.
OPEN_OUTAGES_QUERY = (
    "SELECT coalesce(device, ''), id, state, started_at, ended_at, reopen_count"
    " FROM alerts WHERE site = %s AND outage IS NOT NULL"
    " AND state IN ('firing', 'acknowledged') ORDER BY id FOR UPDATE"
)
# The devices of a site with an open stale-data alert.
OPEN_STALE_QUERY = (
    "SELECT DISTINCT device FROM alerts WHERE site = %s AND kind = 'data_quality'"
    " AND state IN ('firing', 'acknowledged') AND outage IS NULL AND device IS NOT NULL"
    " AND position('stale:' in reason) > 0"
)


def is_stale(output: ViolationStarted) -> bool:
    """Whether a data-quality alert is (at least partly) about data not arriving."""
    return output.kind == "data_quality" and any(
        part.startswith("stale:") for part in output.reason.split("; ")
    )


def offline_source(
    site_model: SiteModel, device: str, offline: Mapping[str, dt.datetime]
) -> str | None:
    """The outermost source `device`'s data comes through that is offline (the uplink before a
    gateway, a gateway before a concentrator behind it), or None."""
    for source in reversed(site_model.sources_of(device)):
        if source in offline:
            return source
    return None


def watched(site_model: SiteModel, stale_metrics: frozenset[str]) -> list[str]:
    """The devices of the site with a metric a stale-data clause watches."""
    return [d.id for d in site_model.devices if stale_metrics.intersection(d.metrics)]


def site_wide(
    site_model: SiteModel,
    watched: list[str],
    stale: set[str],
    offline: Mapping[str, dt.datetime],
) -> bool:
    """Whether every watched device (at least two) is without data now — stale (`stale`),
    reporting offline itself, or behind an offline source — and no one source explains it all
    (then that source's outage is the one alert)."""
    if len(watched) < 2:
        return False
    causes: set[str] = set()
    for device in watched:
        source = offline_source(site_model, device, offline)
        if source is None and device not in stale and device not in offline:
            return False
        causes.add(source if source is not None else f"device {device}")
    return len(causes) > 1


def cause_of(
    site_model: SiteModel,
    device: str,
    offline: Mapping[str, dt.datetime],
    outages: Mapping[str, object],
    *,
    site_wide: bool,
) -> str | None:
    """Which outage inhibits a stale-data alert of `device` starting now: the whole site's
    while one is open or starts now, else that of its outermost offline source, else none."""
    if site_wide or SITE_WIDE in outages:
        return SITE_WIDE
    return offline_source(site_model, device, offline)


def outage_since(
    site_model: SiteModel,
    source: str,
    devices: tuple[str, ...],
    offline: Mapping[str, dt.datetime],
    fallback: dt.datetime,
) -> dt.datetime:
    """When an outage began: when its source went offline; for the whole site, the earliest
    offline report of its devices or their sources (else `fallback`, the first stale one)."""
    if source != SITE_WIDE:
        return offline.get(source, fallback)
    related = {s for d in devices for s in (d, *site_model.sources_of(d))}
    return min([fallback, *(at for name, at in offline.items() if name in related)])


@dataclass(frozen=True, slots=True)
class Outage:
    kind: Literal["gateway", "site"]
    space: str  # the space holding every device behind the source
    devices: tuple[str, ...]
    reason: str


def describe(site_model: SiteModel, source: str, watched: list[str]) -> Outage:
    """What an outage of `source` is (SITE_WIDE: of the `watched` devices of the whole site): a
    gateway's or the site's, over which devices, said how (Chinese first)."""
    devices = tuple(watched if source == SITE_WIDE else site_model.behind(source))
    space = _common_space(site_model, [site_model_device_space(site_model, d) for d in devices])
    named = ", ".join(devices[:NAMED_DEVICES]) + (", …" if len(devices) > NAMED_DEVICES else "")
    n = len(devices)
    if source == SITE_WIDE:
        site = site_model.site.id
        reason = (
            f"站点 {site} 全部 {n} 台设备无数据 (site {site}: all {n} devices without data): "
            + named
        )
        return Outage("site", space, devices, reason)
    if source == site_model.site.uplink:
        reason = (
            f"站点上行链路 {source} 离线，全部 {n} 台设备无数据 "
            f"(site uplink {source} offline: all {n} devices without data): {named}"
        )
        return Outage("site", space, devices, reason)
    reason = (
        f"网关 {source} 离线，其后 {n} 台设备无数据 "
        f"(gateway {source} offline: {n} devices without data): {named}"
    )
    return Outage("gateway", space, devices, reason)


def site_model_device_space(site_model: SiteModel, device: str) -> str:
    return site_model.device_by_id[device].space


def _common_space(site_model: SiteModel, spaces: list[str]) -> str:
    """The nearest space that holds all of `spaces` (the first one's root when none does)."""
    if not spaces:
        return site_model.spaces[0].id
    chains = [site_model.ancestors(s) for s in dict.fromkeys(spaces)]
    shared = set(chains[0]).intersection(*chains[1:])
    return next((s for s in chains[0] if s in shared), chains[0][-1])


def source_status(
    conn: psycopg.Connection[Any],
    site_model: SiteModel,
    statuses: Iterable[StatusRow],
    now: dt.datetime | None = None,
) -> list[int]:
    """The pipeline's status hook, in the flush's transaction after the statuses are stored and
    before the site's outputs are recorded: resolves the open outage alert of each source that
    reports `online` (ended at that report), and the whole site's once nothing of the site
    reports offline any more; with a timeline row, a ledger entry and the resolved notice to
    whoever was told. Returns the ids resolved. Takes the ledger lock when there is one to
    resolve; does not commit."""
    back: dict[str, float] = {}
    for row in statuses:
        if row.online:
            back[row.device] = max(row.received_at, back.get(row.device, row.received_at))
        else:
            back.pop(row.device, None)
    if not back:
        return []
    site = site_model.site.id
    # Cheap check first: most status messages come while no outage is open.
    if not conn.execute(
        "SELECT 1 FROM alerts WHERE site = %s AND outage IS NOT NULL"
        " AND state IN ('firing', 'acknowledged') LIMIT 1",
        (site,),
    ).fetchone():
        return []
    ledger.lock(conn)
    found = conn.execute(OPEN_OUTAGES_QUERY, (site,)).fetchall()
    ending = [(int(r[1]), to_datetime(back[r[0]])) for r in found if r[0] in back]
    whole = [int(r[1]) for r in found if r[0] == SITE_WIDE]
    if whole:
        related = {s for d in site_model.devices for s in (d.id, *site_model.sources_of(d.id))}
        still = {name for (name, _) in conn.execute(OFFLINE_QUERY, (site,)).fetchall()}
        if not still & related:
            ending.extend((alert_id, to_datetime(max(back.values()))) for alert_id in whole)
    return _resolve(conn, site, ending, now)


def resolve_emptied(conn: psycopg.Connection[Any], site: str, now: dt.datetime) -> list[int]:
    """Resolves the open outage alerts of `site` none of whose inhibited alerts is open any
    more (their devices all have data again), ended when the last of them ended. Called by
    `record_outputs` (which holds the ledger lock) after it resolved alerts; does not commit."""
    emptied = conn.execute(
        "SELECT o.id, max(m.ended_at) FROM alerts o JOIN alerts m ON m.inhibited_by = o.id"
        " WHERE o.site = %s AND o.outage IS NOT NULL AND o.state IN ('firing', 'acknowledged')"
        " GROUP BY o.id HAVING bool_and(m.state NOT IN ('firing', 'acknowledged'))",
        (site,),
    ).fetchall()
    if emptied:
        conn.execute(
            "SELECT id FROM alerts WHERE id = ANY(%s) FOR UPDATE", ([r[0] for r in emptied],)
        )
    return _resolve(conn, site, [(int(i), ended or now) for i, ended in emptied], now)


def _resolve(
    conn: psycopg.Connection[Any],
    site: str,
    ending: list[tuple[int, dt.datetime]],
    now: dt.datetime | None,
) -> list[int]:
    if not ending:
        return []
    now = require_aware(now or dt.datetime.now(dt.UTC), "now")
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE alerts SET state = 'resolved', ended_at = %s, updated_at = %s WHERE id = %s",
            [(ended, now, alert_id) for alert_id, ended in ending],
        )
    _record(
        conn,
        "resolved",
        [
            (alert_id, site, ended, {"ended_at": ended.isoformat(), "worst_value": None})
            for alert_id, ended in ending
        ],
        now,
    )
    notify.queue_follow_ups(conn, [alert_id for alert_id, _ in ending], "resolved", now)
    return [alert_id for alert_id, _ in ending]


def release_due(
    conn: psycopg.Connection[Any], now: dt.datetime, sites: Sequence[str] | None = None
) -> list[int]:
    """Releases the open alerts (of `sites`, when given) inhibited by an outage alert that
    ended RELEASE_AFTER or more before `now`: they are no longer inhibited and get the raised
    notice they never had. Returns their ids. Takes the ledger lock; does not commit."""
    require_aware(now, "now")
    ledger.lock(conn)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT a.* FROM alerts a JOIN alerts o ON o.id = a.inhibited_by"
            " WHERE a.inhibited_by IS NOT NULL AND a.state IN ('firing', 'acknowledged')"
            " AND o.state IN ('resolved', 'closed') AND o.ended_at <= %s"
            " AND (%s::text[] IS NULL OR a.site = ANY(%s::text[]))"
            " ORDER BY a.id FOR UPDATE OF a SKIP LOCKED",
            (
                now - RELEASE_AFTER,
                None if sites is None else list(sites),
                None if sites is None else list(sites),
            ),
        ).fetchall()
    if not rows:
        return []
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE alerts SET inhibited_by = NULL, updated_at = %s WHERE id = %s",
            [(now, row["id"]) for row in rows],
        )
    _record(
        conn,
        "released",
        [
            (row["id"], row["site"], now, {"inhibited_by": None, "outage": row["inhibited_by"]})
            for row in rows
        ],
        now,
    )
    notify.queue(
        conn,
        [
            notify.AlertNotice(
                alert_id=row["id"],
                site=row["site"],
                event="raised",
                level=0,
                party=row["responsible_party"],
                alert=notify.alert_summary(row),
            )
            for row in rows
        ],
        now,
    )
    return [int(row["id"]) for row in rows]


def _record(
    conn: psycopg.Connection[Any],
    action: str,
    changes: list[tuple[int, str, dt.datetime, dict[str, Any]]],
    now: dt.datetime,
) -> None:
    """A timeline row and a ledger entry of `action` per (alert id, site, at, facts)."""
    tip = conn.execute(ledger.TIP_QUERY).fetchone()
    entries = [
        ledger.Entry(
            kind=f"alert.{action}",
            entity=f"alert:{alert_id}",
            payload={"alert": alert_id, "site": site, "actor": INHIBITION_ACTOR, "at": at} | facts,
        )
        for alert_id, site, at, facts in changes
    ]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO alert_timeline (alert_id, site, at, action, actor, data)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            [
                (alert_id, site, at, action, INHIBITION_ACTOR, Jsonb(facts))
                for alert_id, site, at, facts in changes
            ],
        )
    ledger.write(conn, ledger.chain(tip, entries, now))
