"""Uptime and history: a monitor's uptime over fixed windows, its daily history, its response
times (raw or downsampled from the rollups), and the uptime of all the caller's monitors.

The figures are defined in runstate.history.uptime; each answer is read with one statement.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Response
from pydantic import TypeAdapter
from sqlalchemy import Select, Uuid, bindparam, select

from runstate.api import cursors
from runstate.api.deps import CurrentUser, SessionDep
from runstate.api.envelope import Envelope, invalid, ok
from runstate.api.history_schemas import (
    DailyPublic,
    DayPublic,
    Resolution,
    ResponseTimesAnswer,
    RollupPoint,
    UptimeListPublic,
    WebsiteUptimePublic,
    WindowName,
    WindowUptime,
)
from runstate.api.routes import API_PREFIX
from runstate.api.routes.websites import as_utc, owned_website
from runstate.api.schemas import ResponseTimePoint, ResponseTimesPublic
from runstate.history import response_times, uptime, windows
from runstate.history.sql import rows_of
from runstate.storage.tables import UtcDateTime, Website, WebsiteCheck

router = APIRouter(prefix=API_PREFIX, tags=["history"])

# auto shows raw checks when the range holds no more than `limit` of them (at the monitor's
# interval), so that none is left out; hourly rollups for ranges up to HOURLY_UP_TO.
HOURLY_UP_TO = timedelta(days=90)


def _default_since(resolution: str, until: datetime) -> datetime:
    """Where a range starts when `since` is not given: 24 hours before `until` (auto, which
    then shows raw checks), its last 168 whole hours (hour) or its last 90 UTC days (day),
    the hour or day that holds `until` included."""
    if resolution == "hour":
        return windows.floor_hour(until) - timedelta(hours=167)
    if resolution == "day":
        return windows.floor_day(until) - timedelta(days=89)
    return until - timedelta(hours=24)


@router.get("/websites/{website_id}/uptime", response_model=Envelope[WebsiteUptimePublic])
async def website_uptime(
    website_id: uuid.UUID, user: CurrentUser, session: SessionDep
) -> dict[str, Any]:
    """Uptime over the windows 24h, 7d, 30d, 90d and 365d, each ending now."""
    website = await owned_website(session, website_id, user)
    figures = await uptime.website_uptime(session, website.id, datetime.now(UTC))
    windows = [
        WindowUptime(window=w.name, since=w.since, until=w.until, **vars(f)) for w, f in figures
    ]
    return ok(WebsiteUptimePublic(windows=windows))


@router.get("/websites/{website_id}/daily", response_model=Envelope[DailyPublic])
async def website_daily(
    website_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    days: Annotated[int, Query(ge=1, le=365)] = 90,
) -> dict[str, Any]:
    """One row per UTC day, oldest first, today last; a day without data has null figures."""
    website = await owned_website(session, website_id, user)
    history = await uptime.daily_history(session, website.id, days, datetime.now(UTC))
    rows = [
        DayPublic(
            date=day.date,
            uptime_percent=day.figures.uptime_percent,
            downtime_seconds=day.figures.downtime_seconds,
            no_data_seconds=day.figures.no_data_seconds,
            paused_seconds=day.figures.paused_seconds,
            checks=day.figures.checks,
            avg_response_time_ms=day.latency.avg_ms,
            p95_response_time_ms=_rounded(day.latency.p95_ms),
        )
        for day in history
    ]
    return ok(DailyPublic(days=rows))


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


@router.get(
    "/websites/{website_id}/response-times",
    response_model=Envelope[ResponseTimesAnswer | ResponseTimesPublic],
)
async def website_response_times(
    website_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    since: datetime | None = None,
    until: datetime | None = None,
    resolution: Resolution | None = None,
) -> dict[str, Any]:
    """Response times within [since, until]. Without `resolution`: the newest `limit` checks,
    oldest first, unbounded where since/until are not given, answered as before resolutions
    existed (`points` only; since after until finds nothing). With a resolution, since after
    until is a 422; with "raw", the same checks and the resolution used. With "hour" or
    "day": that rollup's buckets, grouped into equal wider points so that there are at most
    `limit`. "auto" picks raw when the range holds at most `limit` checks at the monitor's
    interval (so none is left out), hour up to 90 days, day beyond. Without
    `until` a rollup range ends now; without `since` it starts as `_default_since` says."""
    website = await owned_website(session, website_id, user)
    start, end = as_utc("since", since), as_utc("until", until)
    if resolution is None:  # as before resolutions: since after until finds nothing
        raw = await _raw(session, website.id, start, end, limit)
        return ok(ResponseTimesPublic(points=raw.points))
    if start is not None and end is not None and start > end:
        raise invalid("since", "must not be after until")
    if resolution == "raw":
        return ok(await _raw(session, website.id, start, end, limit))
    end = end or datetime.now(UTC)
    if start is None:
        try:
            start = _default_since(resolution, end)
        except OverflowError:
            raise invalid("until", "is too early to count a default range back from") from None
    if start > end:
        raise invalid("since", "must not be after until (until defaults to now)")
    chosen: Literal["raw", "hour", "day"]
    if resolution == "auto":
        span = end - start
        checks_in_range = span.total_seconds() / website.interval_seconds
        chosen = "raw" if checks_in_range <= limit else "hour" if span <= HOURLY_UP_TO else "day"
    else:
        chosen = resolution
    if chosen == "raw":
        return ok(await _raw(session, website.id, start, end, limit))
    points, width = await response_times.rollup_points(
        session, website.id, chosen, start, end, limit
    )
    return ok(
        ResponseTimesAnswer(
            resolution=chosen,
            bucket_seconds=width,
            since=start,
            until=end,
            points=[
                RollupPoint(
                    timestamp=p.timestamp,
                    response_time_ms=p.latency.avg_ms,
                    min_response_time_ms=p.latency.min_ms,
                    max_response_time_ms=p.latency.max_ms,
                    p95_response_time_ms=_rounded(p.latency.p95_ms),
                    checks=p.checks,
                    up_checks=p.up_checks,
                )
                for p in points
            ],
        )
    )


async def _raw(
    session: SessionDep,
    website_id: uuid.UUID,
    start: datetime | None,
    end: datetime | None,
    limit: int,
) -> ResponseTimesAnswer:
    """The newest ``limit`` checks within [start, end], oldest first for charting."""
    query = select(WebsiteCheck).where(WebsiteCheck.website_id == website_id)
    if start is not None:
        query = query.where(WebsiteCheck.created_at >= start)
    if end is not None:
        query = query.where(WebsiteCheck.created_at <= end)
    newest = await session.scalars(
        query.order_by(WebsiteCheck.created_at.desc(), WebsiteCheck.region_id.desc()).limit(limit)
    )
    points = [
        ResponseTimePoint(
            timestamp=check.created_at,
            response_time_ms=check.response_time_ms,
            status=check.status,
            region_id=check.region_id,
            dns_ms=check.dns_ms,
            connect_ms=check.connect_ms,
            tls_ms=check.tls_ms,
            ttfb_ms=check.ttfb_ms,
            cert_expires_at=check.cert_expires_at,
        )
        for check in reversed(list(newest))
    ]
    return ResponseTimesAnswer(resolution="raw", since=start, until=end, points=points)


@router.get("/uptime", response_model=Envelope[UptimeListPublic])
async def uptime_list(
    user: CurrentUser,
    session: SessionDep,
    window: WindowName = "30d",
    limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
    cursor: Annotated[str | None, Query(max_length=cursors.MAX_CURSOR_LENGTH)] = None,
) -> Response:
    """The uptime over ``window`` of each of the caller's monitors (ADMIN: all), oldest first
    (`time_added`, then `id`); without `limit`, all of them and no `next_cursor`."""
    position = None if cursor is None else cursors.decode(cursor, "uptime", uuid.UUID)
    admin = user.role == "ADMIN"
    running_totals = session.get_bind().dialect.name == "postgresql"
    statement = _uptime_list_statement(
        window, admin, position is not None, limit is not None, running_totals
    )
    now = datetime.now(UTC)
    span = windows.window(window, now)
    values = uptime.bound_window_values([window], now)
    values.update(user_id=user.id, limit=None if limit is None else limit + 1)
    if position is not None:
        values.update(after_time=position[0], after_id=position[1])
    rows = await rows_of(session, statement, values)
    shown, next_cursor = cursors.page(rows, limit, "uptime", _row_key)
    listed: Sequence[Any] = shown
    # Thousands of monitors: each row goes straight to JSON. A model per monitor, validated
    # and encoded again by FastAPI, would cost more than the query (~25 µs a monitor).
    data = {
        "window": window,
        "since": _JSON_TIME.dump_python(span.since, mode="json"),
        "until": _JSON_TIME.dump_python(span.until, mode="json"),
        "websites": [
            # By position, in the order `query` selects them: id, time_added, name, url,
            # current_status.
            {
                "website_id": str(row[0]),
                "name": row[2],
                "url": row[3],
                "current_status": row[4],
                **figures,
            }
            for row, figures in zip(listed, uptime.figure_dicts(listed), strict=True)
        ],
        "next_cursor": next_cursor,
    }
    # orjson: ten times faster than json on 3 MB of small objects.
    return Response(orjson.dumps(ok(data)), media_type="application/json")


_JSON_TIME = TypeAdapter(datetime)


@lru_cache(maxsize=32)
def _uptime_list_statement(
    window: str, admin: bool, after_cursor: bool, paged: bool, running_totals: bool
) -> Select[Any]:
    """The uptime list's statement, built once for each shape of request: its user, cursor,
    limit and moments are parameters. Over 10,000 monitors building it cost ~10 ms."""
    query = select(
        Website.id, Website.time_added, Website.name, Website.url, Website.current_status
    )
    if not admin:
        query = query.where(Website.user_id == bindparam("user_id", type_=Uuid()))
    if after_cursor:
        position = (
            bindparam("after_time", type_=UtcDateTime()),
            bindparam("after_id", type_=Uuid()),
        )
        query = query.where(
            cursors.after(Website.time_added, Website.id, position, descending=False)
        )
    if paged:  # the page's monitors; the answer is in this order in any case
        query = query.order_by(Website.time_added, Website.id).limit(bindparam("limit"))
    return uptime.windows_statement(
        query,
        [uptime.BoundWindow(window)],
        every_monitor=admin and not after_cursor and not paged,
        running_totals=running_totals,
    )


def _row_key(row: Any) -> tuple[datetime, uuid.UUID]:
    return row.time_added, row.id
