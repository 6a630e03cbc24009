"""Turns the engine's outputs into alerts: raise (bound to who answers for it), reopen, resolve.

Called by the ingest pipeline once per flush with many outputs, so the work is set-based: one
query finds the latest alert of every clause and subject in the batch, outputs are then applied
in order in memory (a violation may start and end within one batch), and the results are
written in batches. Every transition gets a timeline row and a ledger entry; an alert's evidence
is hashed into the ledger entry that raises it.

An alert raised is on the path from a reading to a person, so the database is asked little and
seldom: every read of a batch goes out in one round trip (psycopg's pipeline mode), then one for
the new alerts' ids, then every write in one more.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from prometheus_client import Counter
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from alerts import inhibition, notify, routing
from alerts.binding import Binding, bind
from alerts.policy import policies
from rules.rejudge import InstanceKey, Rejudged, Span
from rules.site import Device, SiteModel, shown_value
from rules.verdicts import Output, ViolationEnded, ViolationStarted
from store import ledger
from store.registry import ASSIGNMENTS_QUERY, PARTIES_QUERY, StoredAssignment
from store.times import require_aware, to_datetime, wall_now

ENGINE_ACTOR = "engine"
OPEN_STATES = ("firing", "acknowledged")

# (clause_id, clause_version, space, device or "", kind): one clause judging one subject.
SubjectKey = tuple[str, int, str, str, str]

_ALERT_COLUMNS = (
    "id",
    "site",
    "clause_id",
    "clause_version",
    "content_hash",
    "standard",
    "number",
    "title",
    "domain",
    "key",
    "kind",
    "severity",
    "space",
    "device",
    "metric",
    "reason",
    "state",
    "started_at",
    "confirmed_at",
    "ended_at",
    "worst_value",
    "unit",
    "params",
    "evidence",
    "responsible_party",
    "responsible_name",
    "escalation_level",
    "escalation_chain",
    "unbound",
    "reopen_count",
    "updated_at",
    "inhibited_by",
    "outage",
)
_INSERT_ALERT = (
    f"INSERT INTO alerts ({', '.join(_ALERT_COLUMNS)})"
    f" VALUES ({', '.join(['%s'] * len(_ALERT_COLUMNS))})"
)

# Counted where alerts change; the metric name predates "reopened" and "resolved".
ALERT_CHANGES = Counter(
    "clausewatch_alerts_raised", "Alerts raised, reopened or resolved", ["action"]
)


@dataclass
class RecordResult:
    raised: int = 0
    reopened: int = 0
    resolved: int = 0
    # Outputs that changed nothing: a start of an alert already open (a replay after restart),
    # an end with no open alert.
    ignored: int = 0
    alert_ids: list[int] = field(default_factory=list)


@dataclass
class _Alert:
    """An alert as this batch sees it: loaded (id known) or raised here (id assigned later)."""

    id: int | None
    state: str
    started_at: dt.datetime
    ended_at: dt.datetime | None
    worst_value: float | None
    reopen_count: int
    new_row: dict[str, Any] | None = None
    metric: str | None = (
        None  # what worst_value is a value of  # all columns, for alerts raised in this batch
    )
    changed: bool = False
    # The outage alert that inhibits this one, raised with it (its id is known by then).
    inhibitor: _Alert | None = None
    inhibited_by: int | None = None  # as loaded


@dataclass
class _Transition:
    alert: _Alert
    action: str
    at: dt.datetime
    data: dict[str, Any]


def record_outputs(
    conn: psycopg.Connection[Any],
    site_model: SiteModel,
    outputs: Iterable[Output],
    now: dt.datetime | None = None,
    *,
    fresh: bool = False,
) -> RecordResult:
    """Records the ViolationStarted / ViolationEnded outputs of one site's engine, in order
    (other outputs are ignored here). Does not commit; takes the ledger lock for the rest of the
    caller's transaction (keep it short). `fresh`: the outputs are of violations no alert
    records yet (found by re-judging late input): each start raises an alert whatever the
    subject's latest alert is."""
    relevant = [o for o in outputs if isinstance(o, ViolationStarted | ViolationEnded)]
    result = RecordResult()
    if not relevant:
        return result
    now = require_aware(now or wall_now(), "now")
    site = site_model.site.id
    starts = [o for o in relevant if isinstance(o, ViolationStarted)]
    # Cached by content hash once read: no round trip in steady state. Taken before the ledger
    # lock is harmless: clause versions are read, never locked.
    clause_policies = policies(
        conn, {(o.clause.clause_id, o.clause.version, o.clause.content_hash) for o in starts}
    )
    # Stale-data alerts may be inhibited by an outage (docs/alerts.md, "Inhibition").
    stale = {o.subject.device for o in starts if inhibition.is_stale(o) and o.subject.device}
    context = _read_context(
        conn, site, {_key(o) for o in relevant}, binding=bool(starts), inhibiting=bool(stale)
    )
    latest = context.latest
    watched: list[str] = []
    if stale:
        stale_metrics = frozenset().union(
            *(
                clause_policies[(o.clause.clause_id, o.clause.version)].stale_metrics
                for o in starts
                if o.subject.device in stale
            )
        )
        watched = inhibition.watched(site_model, stale_metrics)
        if inhibition.site_wide(site_model, watched, stale | context.stale, context.offline):
            context.site_wide = True
    if fresh:
        latest.clear()
    ancestors: dict[str, list[str]] = {}
    transitions: list[_Transition] = []
    devices = site_model.device_by_id

    for output in relevant:
        key = _key(output)
        current = latest.get(key)
        output = _as_shown(devices, output, current)
        if isinstance(output, ViolationEnded):
            if current is None or current.state not in OPEN_STATES:
                result.ignored += 1
                continue
            current.state = "resolved"
            current.ended_at = to_datetime(output.ended_at)
            if output.worst_value is not None:
                current.worst_value = output.worst_value
            current.changed = True
            result.resolved += 1
            transitions.append(
                _Transition(
                    current,
                    "resolved",
                    current.ended_at,
                    {"ended_at": current.ended_at, "worst_value": output.worst_value},
                )
            )
            continue
        started_at = to_datetime(output.started_at)
        if current is not None and (
            current.state in OPEN_STATES or current.started_at == started_at
        ):
            result.ignored += 1  # already recorded
            continue
        policy = clause_policies[(output.clause.clause_id, output.clause.version)]
        if (
            current is not None
            and current.state == "resolved"
            and current.ended_at is not None
            and policy.reopens(site_model, current.ended_at, started_at)
        ):
            current.state = "firing"
            current.ended_at = None
            current.reopen_count += 1
            if output.worst_value is not None:
                current.worst_value = output.worst_value
            current.changed = True
            result.reopened += 1
            transitions.append(
                _Transition(current, "reopened", to_datetime(output.confirmed_at), _facts(output))
            )
            continue
        cause = (
            inhibition.cause_of(
                site_model,
                output.subject.device,
                context.offline,
                context.outages,
                site_wide=context.site_wide,
            )
            if output.subject.device in stale and inhibition.is_stale(output)
            else None
        )
        inhibitor = None
        if cause is not None:
            inhibitor = context.outages.get(cause)
            if inhibitor is None:
                inhibitor = _new_outage(site_model, cause, watched, output, context, ancestors, now)
                context.outages[cause] = inhibitor
                result.raised += 1
                assert inhibitor.new_row is not None
                transitions.append(
                    _Transition(
                        inhibitor,
                        "raised",
                        to_datetime(output.confirmed_at),
                        _outage_facts(inhibitor.new_row),
                    )
                )
        space = output.subject.space
        if space not in ancestors:
            ancestors[space] = _ancestors(site_model, space)
        binding = bind(
            context.assignments, context.names, ancestors[space], output.clause.domain, started_at
        )
        alert = _new_alert(site, output, binding, now)
        alert.metric = alert.new_row["metric"] if alert.new_row else None
        alert.inhibitor = inhibitor
        latest[key] = alert
        result.raised += 1
        transitions.append(
            _Transition(alert, "raised", to_datetime(output.confirmed_at), _facts(output))
        )

    raised = [t.alert for t in transitions if t.action == "raised"]
    _assign_ids(conn, raised)
    for transition in transitions:
        inhibitor = transition.alert.inhibitor
        if transition.action == "raised" and inhibitor is not None:
            # Recorded with the alert, its timeline row and its ledger entry; no notice of its
            # own: the outage alert's tells of it.
            transition.data["inhibited_by"] = inhibitor.id
            assert transition.alert.new_row is not None
            transition.alert.new_row["inhibited_by"] = inhibitor.id
    changed = [a for a in latest.values() if a.changed and a.new_row is None]
    entries = ledger.chain(context.ledger_tip, [_ledger_entry(site, t) for t in transitions], now)
    messages = [
        notify.AlertNotice(
            alert_id=row["id"],
            site=site,
            event="raised",
            level=0,
            party=row["responsible_party"],
            alert=notify.alert_summary(row),
        )
        for row in (a.new_row for a in raised)
        if row is not None and row["inhibited_by"] is None
    ]
    notifications = notify.notification_rows(
        messages,
        context.targets,
        context.parties,
        now,
        routing.Routing(context.routes, {site: site_model}),
    )
    with conn.pipeline():  # every write in one round trip
        _write(conn, raised, changed, now)
        _write_timeline(conn, site, transitions)
        ledger.write(conn, entries)
        notify.write(conn, notifications)
        resolved = [t.alert.id for t in transitions if t.action == "resolved" and t.alert.id]
        notify.queue_follow_ups(conn, resolved, "resolved", now)
    if any(
        t.alert.inhibited_by is not None or t.alert.inhibitor is not None
        for t in transitions
        if t.action == "resolved"
    ):
        # An outage whose devices all have data again is over (its source may never say so).
        result.resolved += len(inhibition.resolve_emptied(conn, site, now))
    result.alert_ids = sorted({t.alert.id for t in transitions if t.alert.id is not None})
    ALERT_CHANGES.labels("raised").inc(result.raised)
    ALERT_CHANGES.labels("reopened").inc(result.reopened)
    ALERT_CHANGES.labels("resolved").inc(result.resolved)
    return result


def evidence_digest(row: dict[str, Any]) -> str:
    """What the ledger hashes as an alert's evidence: the readings that established it, the
    clause version (with content hash) and the parameters it was judged with."""
    return ledger.evidence_hash(
        {
            "readings": row["evidence"],
            "clause": {
                "id": row["clause_id"],
                "version": row["clause_version"],
                "content_hash": row["content_hash"],
            },
            "params": row["params"],
        }
    )


def _key(output: ViolationStarted | ViolationEnded) -> SubjectKey:
    return (
        output.clause.clause_id,
        output.clause.version,
        output.subject.space,
        output.subject.device or "",
        output.kind,
    )


@dataclass
class _Context:
    """What a batch of outputs is recorded against."""

    latest: dict[SubjectKey, _Alert]  # the latest alert of each subject, locked
    ledger_tip: tuple[int, str] | None
    # For binding and notifying alerts raised (empty when the batch starts none):
    assignments: list[StoredAssignment]
    names: dict[str, str]  # party id → name
    parties: dict[tuple[str, str | None], dict[str, Any]]  # (site, party id) → notify's record
    targets: list[tuple[Any, ...]]  # webhook targets, notify.TARGETS_QUERY
    routes: list[routing.Route]  # routing policies, routing.ROUTES_QUERY
    # Inhibition, read when the batch starts stale-data alerts:
    offline: dict[str, dt.datetime] = field(default_factory=dict)  # id → offline since
    outages: dict[str, _Alert] = field(default_factory=dict)  # source → its open outage alert
    stale: set[str] = field(default_factory=set)  # devices with an open stale-data alert
    site_wide: bool = False  # every watched device is without data, no one source explains it


def _read_context(
    conn: psycopg.Connection[Any],
    site: str,
    keys: set[SubjectKey],
    *,
    binding: bool,
    inhibiting: bool = False,
) -> _Context:
    """Every read of a batch in one round trip: the statements go out together (pipeline mode)
    and run in order, the ledger lock first, so the alerts locked and the ledger tip read are
    ones no other writer is changing until this transaction ends."""
    with conn.pipeline():
        ledger.lock(conn)
        latest = _select_latest_alerts(conn, site, keys)
        tip = conn.execute(ledger.TIP_QUERY)
        if binding:
            assignments = conn.execute(ASSIGNMENTS_QUERY, (site,))
            parties = conn.execute(PARTIES_QUERY, (site,))
            targets = conn.execute(notify.TARGETS_QUERY, ([site],))
            routes = conn.execute(routing.ROUTES_QUERY)
        if inhibiting:
            offline = conn.execute(inhibition.OFFLINE_QUERY, (site,))
            outages = conn.execute(inhibition.OPEN_OUTAGES_QUERY, (site,))
            stale = conn.execute(inhibition.OPEN_STALE_QUERY, (site,))
    context = _Context(
        latest={
            (r[0], r[1], r[2], r[3], r[4]): _Alert(
                id=r[5],
                state=r[6],
                started_at=r[7],
                ended_at=r[8],
                worst_value=r[9],
                reopen_count=r[10],
                metric=r[11],
                inhibited_by=r[12],
            )
            for r in latest.fetchall()
        },
        ledger_tip=tip.fetchone(),
        assignments=[],
        names={},
        parties={},
        targets=[],
        routes=[],
    )
    if binding:
        context.assignments = [StoredAssignment(*r) for r in assignments.fetchall()]
        for party in parties.fetchall():
            context.names[party[0]] = party[1]
            context.parties[(site, party[0])] = notify.party_record(*party)
        context.targets = targets.fetchall()
        context.routes = routing.routes_from_rows(routes.fetchall())
    if inhibiting:
        context.offline = dict(offline.fetchall())
        context.stale = {device for (device,) in stale.fetchall()}
        context.outages = {
            source: _Alert(alert_id, state, started, ended, None, reopen_count)
            for source, alert_id, state, started, ended, reopen_count in outages.fetchall()
        }
    return context


def _select_latest_alerts(
    conn: psycopg.Connection[Any], site: str, keys: set[SubjectKey]
) -> psycopg.Cursor[Any]:
    ordered = list(keys)
    return conn.execute(
        """
        SELECT k.clause_id, k.clause_version, k.space, k.device, k.kind,
               a.id, a.state, a.started_at, a.ended_at, a.worst_value, a.reopen_count, a.metric,
               a.inhibited_by
          FROM unnest(%s::text[], %s::int[], %s::text[], %s::text[], %s::text[])
               AS k(clause_id, clause_version, space, device, kind)
         CROSS JOIN LATERAL (
               SELECT id, state, started_at, ended_at, worst_value, reopen_count, metric,
                      inhibited_by
                 FROM alerts
                WHERE site = %s AND clause_id = k.clause_id
                  AND clause_version = k.clause_version AND space = k.space
                  AND coalesce(device, '') = k.device AND kind = k.kind
                  AND outage IS NULL  -- an outage alert is no device's (inhibition)
                ORDER BY id DESC
                LIMIT 1
                  FOR UPDATE  -- a person closing it meanwhile waits, then sees our change
         ) a
        """,
        (
            [k[0] for k in ordered],
            [k[1] for k in ordered],
            [k[2] for k in ordered],
            [k[3] for k in ordered],
            [k[4] for k in ordered],
            site,
        ),
    )


def _as_shown(
    devices: Mapping[str, Device],
    output: ViolationStarted | ViolationEnded,
    current: _Alert | None,
) -> ViolationStarted | ViolationEnded:
    """`output` with its worst value in its metric's precision, and its metric's unit when it
    has none (issue 17: 0.09000000000000005, and no unit, reached every text)."""
    if isinstance(output, ViolationStarted):
        metric = output.metric or (output.evidence[0].metric if output.evidence else None)
    else:
        metric = current.metric if current is not None else None
    device = devices.get(output.subject.device or "") if metric else None
    spec = device.metrics.get(metric) if device is not None and metric else None
    worst = output.worst_value
    if worst is not None:
        worst = spec.shown(worst) if spec is not None else shown_value(worst)
    if isinstance(output, ViolationStarted):
        unit = output.unit or (spec.unit if spec is not None else None)
        return dataclasses.replace(output, worst_value=worst, unit=unit, metric=metric)
    return dataclasses.replace(output, worst_value=worst)


def _ancestors(site_model: SiteModel, space: str) -> list[str]:
    try:
        return site_model.ancestors(space)
    except KeyError:
        return [space]  # a space the model does not know binds only by its own id


def _facts(output: ViolationStarted) -> dict[str, Any]:
    return {
        "started_at": to_datetime(output.started_at),
        "confirmed_at": to_datetime(output.confirmed_at),
        "worst_value": output.worst_value,
        "reason": output.reason,
        "evidence": _evidence(output),
    }


def _evidence(output: ViolationStarted) -> list[dict[str, Any]]:
    return [
        {
            "ts": to_datetime(e.ts).isoformat(),
            "device": e.device,
            "metric": e.metric,
            "value": e.value,
        }
        for e in output.evidence
    ]


def _new_alert(site: str, output: ViolationStarted, binding: Binding, now: dt.datetime) -> _Alert:
    clause = output.clause
    started_at = to_datetime(output.started_at)
    evidence = _evidence(output)
    row: dict[str, Any] = {
        "id": None,
        "site": site,
        "clause_id": clause.clause_id,
        "clause_version": clause.version,
        "content_hash": clause.content_hash,
        "standard": clause.standard,
        "number": clause.number,
        "title": clause.title,
        "domain": clause.domain,
        "key": clause.key,
        "kind": output.kind,
        "severity": clause.severity,
        "space": output.subject.space,
        "device": output.subject.device,
        "metric": output.metric or (evidence[0]["metric"] if evidence else None),
        "reason": output.reason,
        "state": "firing",
        "started_at": started_at,
        "confirmed_at": to_datetime(output.confirmed_at),
        "ended_at": None,
        "worst_value": output.worst_value,
        "unit": output.unit,
        "params": dict(output.params),
        "evidence": evidence,
        "responsible_party": binding.party,
        "responsible_name": binding.name,
        "escalation_level": 0,
        "escalation_chain": list(binding.chain),
        "unbound": binding.unbound,
        "reopen_count": 0,
        "updated_at": now,
        "inhibited_by": None,
        "outage": None,
    }
    return _Alert(
        id=None,
        state="firing",
        started_at=started_at,
        ended_at=None,
        worst_value=output.worst_value,
        reopen_count=0,
        new_row=row,
    )


def _new_outage(
    site_model: SiteModel,
    source: str,
    watched: list[str],
    output: ViolationStarted,
    context: _Context,
    ancestors: dict[str, list[str]],
    now: dt.datetime,
) -> _Alert:
    """The one alert that stands for the stale-data alerts behind `source` while it is offline:
    judged under the clause of the first of them, on the space that holds every device behind
    it, bound to whoever answers for that space, and naming those devices."""
    outage = inhibition.describe(site_model, source, watched)
    if outage.space not in ancestors:
        ancestors[outage.space] = _ancestors(site_model, outage.space)
    started_at = inhibition.outage_since(
        site_model, source, outage.devices, context.offline, to_datetime(output.started_at)
    )
    binding = bind(
        context.assignments,
        context.names,
        ancestors[outage.space],
        output.clause.domain,
        started_at,
    )
    shell = dataclasses.replace(
        output,
        subject=dataclasses.replace(output.subject, space=outage.space, device=source or None),
        started_at=started_at.timestamp(),
        worst_value=None,
        unit=None,
        reason=outage.reason,
        params={"devices": float(len(outage.devices))},
        evidence=(),
        metric=None,
    )
    alert = _new_alert(site_model.site.id, shell, binding, now)
    assert alert.new_row is not None
    alert.new_row.update(metric=None, outage=outage.kind)
    return alert


def _outage_facts(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "started_at": row["started_at"],
        "confirmed_at": row["confirmed_at"],
        "worst_value": None,
        "reason": row["reason"],
        "evidence": [],
        "outage": row["outage"],
    }


def _assign_ids(conn: psycopg.Connection[Any], raised: Sequence[_Alert]) -> None:
    if not raised:
        return
    rows = conn.execute(
        "SELECT nextval(pg_get_serial_sequence('alerts', 'id')) FROM generate_series(1, %s)",
        (len(raised),),
    ).fetchall()
    for alert, row in zip(raised, rows, strict=True):
        alert.id = int(row[0])
        assert alert.new_row is not None
        alert.new_row["id"] = alert.id


def _write(
    conn: psycopg.Connection[Any],
    raised: Sequence[_Alert],
    changed: Sequence[_Alert],
    now: dt.datetime,
) -> None:
    with conn.cursor() as cur:
        if raised:
            rows = []
            for alert in raised:
                assert alert.new_row is not None
                row = dict(alert.new_row)
                # Alerts raised and changed within this batch carry their final state.
                row.update(
                    state=alert.state,
                    ended_at=alert.ended_at,
                    worst_value=alert.worst_value,
                    reopen_count=alert.reopen_count,
                )
                rows.append([_column_value(row[c]) for c in _ALERT_COLUMNS])
            cur.executemany(_INSERT_ALERT, rows)
        if changed:
            cur.executemany(
                "UPDATE alerts SET state = %s, ended_at = %s, worst_value = %s,"
                " reopen_count = %s, updated_at = %s WHERE id = %s",
                [(a.state, a.ended_at, a.worst_value, a.reopen_count, now, a.id) for a in changed],
            )


def _write_timeline(
    conn: psycopg.Connection[Any], site: str, transitions: Sequence[_Transition]
) -> None:
    if not transitions:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO alert_timeline (alert_id, site, at, action, actor, data)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            [
                (t.alert.id, site, t.at, t.action, ENGINE_ACTOR, Jsonb(_jsonable(t.data)))
                for t in transitions
            ],
        )


# What an `alert.raised` entry holds beyond its timeline row's data (alerts.audit compares the
# rest with the row).
RAISED_FACTS = frozenset(
    {
        "clause",
        "subject",
        "kind",
        "severity",
        "unit",
        "params",
        "evidence_sha256",
        "responsible",
        "escalation_chain",
        "unbound",
    }
)


def _ledger_entry(site: str, transition: _Transition) -> ledger.Entry:
    alert = transition.alert
    payload: dict[str, Any] = {
        "alert": alert.id,
        "site": site,
        "actor": ENGINE_ACTOR,
        "at": transition.at,
        **transition.data,
    }
    if transition.action == "raised":
        row = alert.new_row
        assert row is not None
        payload.update(
            clause={
                "id": row["clause_id"],
                "version": row["clause_version"],
                "content_hash": row["content_hash"],
            },
            subject={"space": row["space"], "device": row["device"]},
            kind=row["kind"],
            severity=row["severity"],
            unit=row["unit"],
            params=row["params"],
            evidence_sha256=evidence_digest(row),
            responsible={"party": row["responsible_party"], "name": row["responsible_name"]},
            escalation_chain=row["escalation_chain"],
            unbound=row["unbound"],
        )
    return ledger.Entry(
        kind=f"alert.{transition.action}", entity=f"alert:{alert.id}", payload=payload
    )


def _column_value(value: Any) -> Any:
    if isinstance(value, dict | list):
        return Jsonb(value)
    return value


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in data.items()}


def evidence_intact(conn: psycopg.Connection[Any], alert_id: int) -> bool | None:
    """Whether an alert's stored evidence still hashes to what its `alert.raised` ledger entry
    recorded (None when the alert or its entry does not exist). Read-only."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT a.id, a.evidence, a.clause_id, a.clause_version, a.content_hash, a.params,"
            " l.payload::jsonb ->> 'evidence_sha256' AS recorded FROM alerts a"
            " JOIN ledger l ON l.entity = 'alert:' || a.id AND l.kind = 'alert.raised'"
            " WHERE a.id = %s",
            (alert_id,),
        )
        row = cur.fetchone()
    if row is None:
        return None
    return bool(evidence_digest(row) == row["recorded"])


# ---- corrections: late input re-judged (issue 17) ----

CORRECTION_REASON = "late input re-judged"


@dataclass
class CorrectionResult:
    corrected: int = 0  # alerts whose span or state changed
    withdrawn: int = 0  # of those, alerts in-order judging would not have raised
    recorded: RecordResult = field(default_factory=RecordResult)  # alerts raised, resolved


def correct_alerts(
    conn: psycopg.Connection[Any],
    site_model: SiteModel,
    rejudged: Rejudged,
    now: dt.datetime | None = None,
) -> CorrectionResult:
    """Makes the alerts of the instances re-judged (`rules.rejudge`) those in-order judging
    records: per instance, every alert starting at or after its `replace_from` must be one of
    `rejudged.spans()`. An alert that should not exist is withdrawn (resolved, ended at its
    start), one whose end changed gets its end: both with a `corrected` timeline row and an
    `alert.corrected` ledger entry, never a delete. Missing alerts are raised (and resolved) as
    usual, by `record_outputs`. Does not commit; takes the ledger lock."""
    now = require_aware(now or wall_now(), "now")
    site = site_model.site.id
    keys = list(rejudged.replace_from)
    result = CorrectionResult()
    if not keys:
        return result
    spans = rejudged.spans()
    wanted: dict[tuple[InstanceKey, str | None, dt.datetime], Span] = {}
    for key, found in spans.items():
        for each in found:
            kind = None if each.started is None else each.started.kind
            wanted[(key, kind, to_datetime(each.started_at))] = each
    ledger.lock(conn)
    stored = conn.execute(
        """
        SELECT a.id, a.clause_id, a.clause_version, a.space, coalesce(a.device, ''), a.kind,
               a.state, a.started_at, a.ended_at
          FROM unnest(%s::text[], %s::int[], %s::text[], %s::text[], %s::float8[])
               AS k(clause_id, clause_version, space, device, since)
          JOIN alerts a ON a.site = %s AND a.clause_id = k.clause_id
               AND a.clause_version = k.clause_version AND a.space = k.space
               AND coalesce(a.device, '') = k.device AND a.started_at >= to_timestamp(k.since)
         ORDER BY a.id
           FOR UPDATE OF a
        """,
        (
            [k[0] for k in keys],
            [k[1] for k in keys],
            [k[2] for k in keys],
            [k[3] for k in keys],
            [max(rejudged.replace_from[k], 0.0) for k in keys],
            site,
        ),
    ).fetchall()
    changes: list[tuple[int, str, dt.datetime | None, dict[str, Any]]] = []
    for alert_id, clause_id, version, space, device, kind, state, started, ended in stored:
        key = (clause_id, version, space, device)
        span = wanted.pop((key, kind, started), None)
        if span is None:
            span = wanted.pop((key, None, started), None)
        if span is None:
            target_state = state if state == "closed" else "resolved"
            if (target_state, ended) == (state, started):
                continue
            changes.append(
                (alert_id, target_state, started, {"withdrawn": True, "previous_end": ended})
            )
            result.withdrawn += 1
            continue
        end = None if span.ended is None else to_datetime(span.ended.ended_at)
        if end == ended:
            continue
        if state == "closed":
            target_state = "closed"
        else:
            target_state = "firing" if end is None else "resolved"
            if end is None and state == "acknowledged":
                target_state = "acknowledged"
        changes.append((alert_id, target_state, end, {"withdrawn": False, "previous_end": ended}))
    if changes:
        tip = conn.execute(ledger.TIP_QUERY).fetchone()
        entries = []
        timeline = []
        for alert_id, target_state, end, data in changes:
            facts = {"state": target_state, "ended_at": end, "reason": CORRECTION_REASON, **data}
            entries.append(
                ledger.Entry(
                    kind="alert.corrected",
                    entity=f"alert:{alert_id}",
                    payload={"alert": alert_id, "site": site, "actor": ENGINE_ACTOR, "at": now}
                    | facts,
                )
            )
            timeline.append(
                (alert_id, site, now, "corrected", ENGINE_ACTOR, Jsonb(_jsonable(facts)))
            )
        with conn.cursor() as cur:
            cur.executemany(
                "UPDATE alerts SET state = %s, ended_at = %s, updated_at = %s WHERE id = %s",
                [(s, e, now, i) for i, s, e, _ in changes],
            )
            cur.executemany(
                "INSERT INTO alert_timeline (alert_id, site, at, action, actor, data)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                timeline,
            )
        ledger.write(conn, ledger.chain(tip, entries, now))
        result.corrected = len(changes)
    missing: list[Output] = []
    for span in sorted(wanted.values(), key=lambda s: s.started_at):
        if span.started is not None:
            missing.append(span.started)
            if span.ended is not None:
                missing.append(span.ended)
    result.recorded = record_outputs(conn, site_model, missing, now, fresh=True)
    # Ends of violations begun before the re-judged runs are recorded as usual.
    spanned = {id(s.ended) for found in spans.values() for s in found if s.ended is not None}
    others = [o for o in rejudged.outputs if isinstance(o, ViolationEnded) and id(o) not in spanned]
    if others:
        usual = record_outputs(conn, site_model, others, now)
        result.recorded.resolved += usual.resolved
        result.recorded.ignored += usual.ignored
    ALERT_CHANGES.labels("corrected").inc(result.corrected)
    return result
