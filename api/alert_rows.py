"""Reading alerts out of the `alerts` table into API models (shared by the alerts router and the
live stream, so both show an alert the same way)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from api.models import AlertPublic, AlertSubject, ClauseSummary, EvidenceReading, Responsible

ALERT_COLUMNS = (
    "a.id, a.site, a.clause_id, a.clause_version, a.content_hash, a.standard, a.number, a.title,"
    " a.kind, a.severity, a.space, a.device, a.metric, a.reason, a.state, a.started_at,"
    " a.ended_at, a.worst_value, a.unit, a.responsible_party, a.responsible_name, a.unbound,"
    " a.escalation_level"
)


def alert_public(row: Mapping[str, Any]) -> AlertPublic:
    return AlertPublic(
        id=row["id"],
        site=row["site"],
        clause=ClauseSummary(
            id=row["clause_id"],
            version=row["clause_version"],
            content_hash=row["content_hash"],
            standard=row["standard"],
            number=row["number"],
            title=row["title"],
        ),
        subject=AlertSubject(space=row["space"], device=row["device"], metric=row["metric"]),
        kind=row["kind"],
        severity=row["severity"],
        state=row["state"],
        reason=row["reason"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        worst_value=row["worst_value"],
        unit=row["unit"],
        responsible=Responsible(party=row["responsible_party"], name=row["responsible_name"]),
        unbound=row["unbound"],
        escalation_level=row["escalation_level"],
    )


def evidence_readings(stored: object) -> list[EvidenceReading]:
    """The evidence kept with an alert: a list of {ts, device, metric, value} where ts is epoch
    seconds (engine time) or an ISO timestamp."""
    readings: list[EvidenceReading] = []
    if not isinstance(stored, list):
        return readings
    for item in stored:
        if not isinstance(item, dict):
            continue
        ts = item.get("ts")
        at = (
            dt.datetime.fromtimestamp(ts, dt.UTC)
            if isinstance(ts, int | float)
            else dt.datetime.fromisoformat(str(ts))
        )
        readings.append(
            EvidenceReading(
                ts=at, device=item["device"], metric=item["metric"], value=item["value"]
            )
        )
    return readings
