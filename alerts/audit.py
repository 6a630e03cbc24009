"""`clausewatch ledger verify` and GET /api/v1/ledger/verify: the whole check, in one place.

1. The chain (`store.ledger.verify`): every entry links to the one before it and matches its own
   hash.
2. The anchors (alerts/anchors.py), when a folder and a public key are given: every signed
   anchor file verifies, the chain reaches every anchored entry (else its tail was cut off) and
   that entry has the anchored hash (else the chain was rewritten and re-hashed).
3. The records: every alert and every alert_timeline row against the ledger entries written
   with it. An alert without its `alert.raised` entry, or whose evidence hash, clause version,
   subject or times differ from it; an alert whose state, acknowledgement, closing,
   escalation level, reopen count or responsible party (bound when raised, then reassigned)
   differ from what its entries add up to; a timeline row
   without its entry or whose content differs from it; an entry whose timeline row or alert is
   gone: each is a problem, named.

Everything is read in one REPEATABLE READ snapshot, so appends made meanwhile are simply not part
of the check.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from psycopg import pq
from psycopg.rows import dict_row

from alerts.anchors import AnchorSet
from alerts.record import RAISED_FACTS, evidence_digest
from store import ledger

# Alerts checked per round trip: bounded memory whatever the number of alerts.
CHUNK_ALERTS = 500
# Problems listed in full; the rest are counted.
MAX_LISTED = 100
# Payload keys that frame a timeline row's entry; the other keys are the row's `data`.
ENVELOPE = frozenset({"alert", "site", "actor", "at", "note"})


@dataclass(frozen=True, slots=True)
class _Entry:
    seq: int
    kind: str
    entity: str
    payload: dict[str, Any]


@dataclass
class RecordCheck:
    """What the records check covered and what it found."""

    alerts: int = 0
    timeline: int = 0
    entries: int = 0
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    def report(self, problem: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_LISTED:
            self.problems.append(problem)


@dataclass
class Audit:
    chain: ledger.Verdict
    anchors: AnchorSet | None  # None: no anchors were given, the chain is not anchored
    records: RecordCheck

    @property
    def ok(self) -> bool:
        anchors_ok = self.anchors is None or not self.anchors.problems
        return self.chain.ok and anchors_ok and self.records.problem_count == 0

    def problems(self) -> list[str]:
        """Every problem found, in words: chain, anchors, then records."""
        found: list[str] = []
        if not self.chain.ok:
            found.append(self.chain_problem())
        if self.anchors is not None:
            found.extend(f"anchor {p}" for p in self.anchors.problems)
        found.extend(self.records.problems)
        unlisted = self.records.problem_count - len(self.records.problems)
        if unlisted:
            found.append(f"... and {unlisted} more problems with alerts and timelines")
        return found

    def chain_problem(self) -> str:
        verdict = self.chain
        text = f"entry {verdict.first_bad_seq}: {verdict.problem}"
        if self.anchors is not None and verdict.first_bad_seq is not None:
            anchors = [a for a in self.anchors.anchors if a.seq >= verdict.first_bad_seq]
            if anchors:  # the anchor that shows it, for the reader to look up
                text += f" (anchor: {anchors[0].describe()})"
        return text


def audit(conn: psycopg.Connection[Any], anchors: AnchorSet | None = None) -> Audit:
    """The chain against `anchors` (when given) and the records against the ledger, in one
    REPEATABLE READ, READ ONLY snapshot: on an autocommit connection in a transaction of its
    own; otherwise in the caller's transaction, which this makes repeatable-read and read-only
    when it has not started yet (end it before writing). Does not commit."""
    if conn.autocommit:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            return _audit(conn, anchors)
    if conn.info.transaction_status == pq.TransactionStatus.IDLE:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    return _audit(conn, anchors)


def _audit(conn: psycopg.Connection[Any], anchors: AnchorSet | None) -> Audit:
    chain = ledger.verify(conn, anchors.expected_hashes() if anchors is not None else None)
    return Audit(chain=chain, anchors=anchors, records=check_records(conn))


def check_records(conn: psycopg.Connection[Any]) -> RecordCheck:
    """Alerts and alert_timeline rows against their ledger entries (point 3 above)."""
    result = RecordCheck()
    row = conn.execute(
        "SELECT greatest((SELECT max(id) FROM alerts), (SELECT max(alert_id) FROM alert_timeline),"
        " (SELECT max(substr(entity, 7)::bigint) FROM ledger WHERE entity ~ '^alert:[0-9]{1,18}$'))"
    ).fetchone()
    last = int(row[0]) if row and row[0] is not None else 0
    for low in range(1, last + 1, CHUNK_ALERTS):
        _check_chunk(conn, low, low + CHUNK_ALERTS - 1, result)
    return result


def _check_chunk(conn: psycopg.Connection[Any], low: int, high: int, result: RecordCheck) -> None:
    with conn.cursor(row_factory=dict_row) as cur:
        alerts = {
            r["id"]: r
            for r in cur.execute(
                "SELECT * FROM alerts WHERE id BETWEEN %s AND %s ORDER BY id", (low, high)
            )
        }
        timeline: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for r in cur.execute(
            "SELECT id, alert_id, site, at, action, actor, note, data FROM alert_timeline"
            " WHERE alert_id BETWEEN %s AND %s ORDER BY alert_id, id",
            (low, high),
        ):
            timeline[r["alert_id"]].append(r)
    notifications = {
        int(r["data"]["notification"])
        for rows in timeline.values()
        for r in rows
        if r["action"] == "notified" and isinstance(r["data"].get("notification"), int)
    }
    notifications.update(
        int(n)
        for (n,) in conn.execute(
            "SELECT id FROM notifications WHERE alert_id BETWEEN %s AND %s", (low, high)
        )
    )
    entities = [f"alert:{i}" for i in range(low, high + 1)]
    entities += [f"notification:{n}" for n in sorted(notifications)]
    entries: dict[int, list[_Entry]] = defaultdict(list)
    for seq, kind, entity, payload in conn.execute(
        "SELECT seq, kind, entity, payload FROM ledger WHERE entity = ANY(%s) ORDER BY seq",
        (entities,),
    ):
        body = orjson.loads(payload)
        owner = _alert_of(entity, body)
        if owner is not None:
            entries[owner].append(_Entry(seq, kind, entity, body))
    for alert_id in sorted(alerts.keys() | timeline.keys() | entries.keys()):
        _check_alert(alert_id, alerts.get(alert_id), timeline[alert_id], entries[alert_id], result)


def _alert_of(entity: str, payload: Mapping[str, Any]) -> int | None:
    if entity.startswith("alert:"):
        return int(entity.removeprefix("alert:"))
    alert = payload.get("alert")
    return alert if isinstance(alert, int) else None


def _check_alert(
    alert_id: int,
    row: dict[str, Any] | None,
    timeline: Sequence[dict[str, Any]],
    entries: Sequence[_Entry],
    result: RecordCheck,
) -> None:
    result.timeline += len(timeline)
    result.entries += len(entries)
    if row is None:
        if entries:
            result.report(
                f"alert {alert_id} is in the ledger (entry {entries[0].seq}, {entries[0].kind}) "
                "but not in the alerts table: it was deleted"
            )
    else:
        result.alerts += 1
        raised = [e for e in entries if e.kind == "alert.raised"]
        if not raised:
            result.report(
                f"alert {alert_id} has no alert.raised entry in the ledger: it was not recorded "
                "by the service"
            )
        else:
            differing = _raised_differences(row, raised[0].payload)
            if differing:
                result.report(
                    f"alert {alert_id} differs from its alert.raised entry {raised[0].seq}: "
                    + ", ".join(differing)
                )
            differing = _state_differences(row, entries)
            if differing:
                result.report(
                    f"alert {alert_id} differs from what its ledger entries record: "
                    + ", ".join(differing)
                )
    _match_timeline(alert_id, timeline, entries, result)


def _raised_differences(row: Mapping[str, Any], payload: Mapping[str, Any]) -> list[str]:
    recorded = {
        "site": row["site"],
        "clause": {
            "id": row["clause_id"],
            "version": row["clause_version"],
            "content_hash": row["content_hash"],
        },
        "subject": {"space": row["space"], "device": row["device"]},
        "kind": row["kind"],
        "severity": row["severity"],
        "unit": row["unit"],
        "params": row["params"],
        "reason": row["reason"],
        "started_at": row["started_at"],
        "confirmed_at": row["confirmed_at"],
        "escalation_chain": row["escalation_chain"],
        "unbound": row["unbound"],
        "outage": row["outage"],
    }
    differing = [k for k, v in recorded.items() if _normal(payload.get(k)) != _normal(v)]
    if payload.get("evidence_sha256") != evidence_digest(dict(row)):
        differing.append("evidence (its hash)")
    return differing


def _state_differences(row: Mapping[str, Any], entries: Iterable[_Entry]) -> list[str]:
    """The alert's changing columns against what its entries add up to, in ledger order
    (alerts/record.py and alerts/lifecycle.py make the same changes)."""
    expected: dict[str, Any] = {
        "state": None,
        "ended_at": None,
        "worst_value": None,
        "reopen_count": 0,
        "escalation_level": 0,
        "acknowledged_at": None,
        "acknowledged_by": None,
        "acknowledged_note": None,
        "closed_at": None,
        "closed_by": None,
        "cause": None,
        "corrective_action": None,
        # Who was responsible when it was raised, then whom it was reassigned to.
        "responsible": None,
        # The outage alert inhibiting it (alerts/inhibition.py): from raised until released.
        "inhibited_by": None,
    }
    for entry in entries:
        p = entry.payload
        action = entry.kind.removeprefix("alert.")
        if action == "raised":
            expected.update(state="firing", ended_at=None, worst_value=p.get("worst_value"))
            expected["responsible"] = p.get("responsible")
            expected["inhibited_by"] = p.get("inhibited_by")
        elif action == "released":
            expected["inhibited_by"] = None
        elif action == "reassigned":
            expected["responsible"] = p.get("responsible")
        elif action in ("resolved", "reopened"):
            if action == "resolved":
                expected.update(state="resolved", ended_at=p.get("ended_at"))
            else:
                expected.update(state="firing", ended_at=None)
                expected["reopen_count"] += 1
            if p.get("worst_value") is not None:
                expected["worst_value"] = p["worst_value"]
        elif action == "acknowledged":
            expected.update(
                state=p.get("state"),
                acknowledged_at=p.get("at"),
                acknowledged_by=p.get("actor"),
                acknowledged_note=p.get("note"),
            )
        elif action == "closed":
            expected.update(
                state="closed",
                closed_at=p.get("at"),
                closed_by=p.get("actor"),
                cause=p.get("cause"),
                corrective_action=p.get("corrective_action"),
            )
        elif action == "corrected":  # late input re-judged: alerts/record.correct_alerts
            expected.update(state=p.get("state"), ended_at=p.get("ended_at"))
        elif action == "escalated" and isinstance(p.get("level"), int):
            expected["escalation_level"] = max(expected["escalation_level"], p["level"])
    # An acknowledgement without a note is stored as '' in the row, None in the ledger.
    actual = {k: row[k] for k in expected if k != "responsible"}
    actual["responsible"] = {"party": row["responsible_party"], "name": row["responsible_name"]}
    actual["acknowledged_note"] = actual["acknowledged_note"] or None
    return [k for k in expected if _normal(expected[k]) != _normal(actual[k])]


def _match_timeline(
    alert_id: int,
    timeline: Sequence[dict[str, Any]],
    entries: Sequence[_Entry],
    result: RecordCheck,
) -> None:
    unused = list(entries)
    for row in timeline:
        kind, entity = _entry_key(row)
        at = _normal(row["at"])
        candidates = [
            e
            for e in unused
            if e.kind == kind and e.entity == entity and _normal(e.payload.get("at")) == at
        ]
        what = f"timeline row {row['id']} of alert {alert_id} ({row['action']} at {at})"
        if not candidates:
            result.report(
                f"{what} has no ledger entry: it was added, or its time or action changed"
            )
            continue
        differences = [(_timeline_differences(row, e), e) for e in candidates]
        chosen = next(((d, e) for d, e in differences if not d), differences[0])
        unused.remove(chosen[1])
        if chosen[0]:
            result.report(
                f"{what} differs from ledger entry {chosen[1].seq}: {', '.join(chosen[0])}"
            )
    for entry in unused:
        result.report(
            f"ledger entry {entry.seq} ({entry.kind} of alert {alert_id}) has no timeline row: "
            "the row was deleted or changed"
        )


def _entry_key(row: Mapping[str, Any]) -> tuple[str, str]:
    """The kind and entity of the ledger entry written with a timeline row."""
    data = row["data"] if isinstance(row["data"], dict) else {}
    if row["action"] == "notified":
        return f"notification.{data.get('outcome')}", f"notification:{data.get('notification')}"
    return f"alert.{row['action']}", f"alert:{row['alert_id']}"


def _timeline_differences(row: Mapping[str, Any], entry: _Entry) -> list[str]:
    payload = entry.payload
    differing: list[str] = []
    if payload.get("site") != row["site"]:
        differing.append("site")
    if "actor" in payload:
        if payload["actor"] != row["actor"]:
            differing.append("actor")
        # Writers that record the actor record the note too (absent: there was none).
        if payload.get("note") != row["note"]:
            differing.append("note")
    extra = RAISED_FACTS if entry.kind == "alert.raised" else frozenset()
    recorded = {k: v for k, v in payload.items() if k not in ENVELOPE and k not in extra}
    data = row["data"] if isinstance(row["data"], dict) else {}
    differing.extend(
        f"data.{k}"
        for k in sorted(recorded.keys() | data.keys())
        if _normal(recorded.get(k)) != _normal(data.get(k))
    )
    return differing


def _normal(value: Any) -> Any:
    """A value as JSON would carry it, with timestamps compared as instants."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC) if value.tzinfo else value
    if isinstance(value, str):
        return _instant(value)
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normal(v) for v in value]
    return value


def _instant(text: str) -> Any:
    if len(text) < 19 or text[4] != "-" or "T" not in text:
        return text
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return text
    return parsed.astimezone(dt.UTC) if parsed.tzinfo else text
