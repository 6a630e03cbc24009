"""`GET /readings`: raw or bucketed readings of one device's metric (store.readings)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from api.auth import Reader
from api.deps import DbConn
from api.models import MetricId, QueryTime, ReadingPoint, ReadingSeries, SiteId, problems
from store import registry
from store.readings import BucketPoint, QueryError, RawPoint, query_readings

router = APIRouter(tags=["readings"])
DEFAULT_PERIOD = dt.timedelta(hours=24)


@router.get(
    "/readings",
    responses=problems(401, 403, 404),
)
def get_readings(
    conn: DbConn,
    principal: Reader,
    site: SiteId,
    device: SiteId,
    metric: MetricId,
    since: Annotated[QueryTime | None, Query(description="default: until − 24 h")] = None,
    until: Annotated[QueryTime | None, Query(description="exclusive; default: now")] = None,
    bucket: Annotated[
        str | None,
        Query(pattern=r"^[1-9][0-9]{0,5}[smhdw]$", description="e.g. 15m, 1h, 1d; none: raw"),
    ] = None,
) -> ReadingSeries:
    """Raw readings in [since, until) (bucket omitted), or count / mean / min / max per bucket.
    Hourly and daily buckets come from the rollups."""
    principal.site_filter(site)  # 403 outside the token's sites
    try:
        unit = registry.device_metric_unit(conn, site, device, metric)
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "device not found") from exc
    try:
        end = until if until is not None else dt.datetime.now(dt.UTC)
        start = since if since is not None else end - DEFAULT_PERIOD
        if start >= end:
            raise QueryError("since must be before until")
        points = query_readings(conn, site, device, metric, start, end, bucket)
    except (QueryError, OverflowError) as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            [
                {
                    "loc": ["query", "bucket" if bucket else "since"],
                    "msg": str(exc),
                    "type": "value_error",
                }
            ],
        ) from exc
    return ReadingSeries(
        site=site,
        device=device,
        metric=metric,
        unit=unit,
        bucket=bucket or "raw",
        points=[_point(p) for p in points],
    )


def _point(point: RawPoint | BucketPoint) -> ReadingPoint:
    if isinstance(point, RawPoint):
        return ReadingPoint(ts=point.ts, value=point.value)
    return ReadingPoint(
        ts=point.bucket, value=point.mean, min=point.min, max=point.max, count=point.count
    )
