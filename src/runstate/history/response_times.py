"""Response times from the rollups, downsampled in SQL to at most the points a chart asks for."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from runstate.history.latency import LATENCY_COLUMNS, Latency, latency_of
from runstate.history.sql import epoch_seconds, floor_int, rows_of, seconds
from runstate.history.windows import epoch, floor_day, floor_hour
from runstate.storage.tables import DailyRollup, HourlyRollup

BUCKET_SECONDS = {"hour": 3600, "day": 86400}


@dataclass(frozen=True)
class LatencyPoint:
    """One downsampled point: the rollups of [timestamp, timestamp + width) added up."""

    timestamp: datetime
    checks: int
    up_checks: int
    latency: Latency


def downsampling(
    resolution: str, since: datetime, until: datetime, limit: int
) -> tuple[datetime, int]:
    """The first bucket's start and the width in seconds of the points that show the
    ``resolution`` ("hour" or "day") buckets starting in [since, until] in at most ``limit``
    points: whole multiples of the bucket, counted from the bucket that holds ``since``."""
    length = BUCKET_SECONDS[resolution]
    origin = floor_hour(since) if resolution == "hour" else floor_day(since)
    buckets = int((until - origin).total_seconds() // length) + 1
    per_point = -(-buckets // limit)  # ceiling
    return origin, per_point * length


async def rollup_points(
    session: AsyncSession,
    website_id: uuid.UUID,
    resolution: str,
    since: datetime,
    until: datetime,
    limit: int,
) -> tuple[list[LatencyPoint], int]:
    """A monitor's ``resolution`` rollups starting in [since, until], downsampled in SQL to at
    most ``limit`` points (oldest first, all regions together), and the points' width."""
    origin, width = downsampling(resolution, since, until, limit)
    table = HourlyRollup if resolution == "hour" else DailyRollup
    r = table.__table__.c
    # Half a bucket in, so that float seconds on SQLite never fall just short of a boundary.
    offset = epoch_seconds(r.bucket_start) - seconds(epoch(origin)) + BUCKET_SECONDS[resolution] / 2
    point = floor_int(offset / float(width)).label("point")
    statement = (
        select(
            point,
            func.sum(r.checks).label("checks"),
            func.sum(r.up_checks).label("up_checks"),
            func.sum(r.timed_checks).label("timed_checks"),
            func.sum(r.response_time_sum_ms).label("rt_sum"),
            func.min(r.response_time_min_ms).label("rt_min"),
            func.max(r.response_time_max_ms).label("rt_max"),
            *(func.sum(r[column]).label(column) for column in LATENCY_COLUMNS),
        )
        .where(r.website_id == website_id, r.bucket_start >= origin, r.bucket_start <= until)
        .group_by(point)
        .order_by(point)
    )
    points = [
        LatencyPoint(
            origin + timedelta(seconds=row.point * width),
            int(row.checks),
            int(row.up_checks),
            latency_of(row),
        )
        for row in await rows_of(session, statement)
    ]
    return points, width
