"""Liveness and Prometheus metrics. Both are unauthenticated, as scrapers and load balancers
expect; neither reveals per-site data (alert counts are by state only). Liveness also says
which years have the State Council's holiday schedule, and where working days are judged by
the fallback rule instead (the dashboard's banner reads it)."""

from __future__ import annotations

import psycopg
from fastapi import APIRouter, Response, status
from prometheus_client import REGISTRY, CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from alerts import reads
from api.deps import Pool
from api.models import Health, HolidayCalendarHealth
from config.holidays import today_in_china
from rules.holidays import calendar_coverage, official_calendar
from store.pool import ping

router = APIRouter(tags=["health"])

ALERT_STATES = ("firing", "acknowledged", "resolved", "closed")


@router.get(
    "/healthz",
    responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"model": Health}},
)
def healthz(pool: Pool, response: Response) -> Health:
    calendar = HolidayCalendarHealth.of(calendar_coverage(official_calendar(), today_in_china()))
    try:
        with pool.connection(timeout=2.0) as conn:
            ping(conn)
    except (psycopg.Error, TimeoutError, OSError):
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return Health(status="degraded", database="unreachable", holiday_calendar=calendar)
    return Health(status="ok", database="ok", holiday_calendar=calendar)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
def metrics(pool: Pool) -> Response:
    """Prometheus text: everything in the process's default registry (the ingest pipeline
    registers readings ingested, dead letters by reason, lag, queue depth there) plus the
    alerts by state, counted in the database at scrape time."""
    scrape = CollectorRegistry()
    gauge = Gauge("clausewatch_alerts", "Alerts by lifecycle state", ["state"], registry=scrape)
    counts = dict.fromkeys(ALERT_STATES, 0)
    try:
        with pool.connection(timeout=2.0) as conn:
            counts.update(reads.counts_by_state(conn))
        up = 1
    except (psycopg.Error, TimeoutError, OSError):
        up = 0
    for state, count in counts.items():
        gauge.labels(state=state).set(count)
    Gauge(
        "clausewatch_api_database_up",
        "1 when the API reached the database for this scrape",
        registry=scrape,
    ).set(up)
    body = generate_latest(REGISTRY) + generate_latest(scrape)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
