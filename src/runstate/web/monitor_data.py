"""What a monitor's detail page shows, read through the API's own queries.

The figures come from runstate.history (uptime windows, the daily history) and from the API's
list routes (checks, incidents, alert deliveries, response times), called as the functions
they are: the page and `/api/v1` can never disagree. Nothing here renders HTML.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from runstate.api.history_schemas import ResponseTimesAnswer, RollupPoint
from runstate.api.routes.channels import list_channels
from runstate.api.routes.history import website_response_times
from runstate.api.routes.websites import list_checks, list_incidents, list_notifications
from runstate.api.schemas import ChannelPublic, CheckPublic, IncidentPublic, NotificationPublic
from runstate.history import uptime
from runstate.history.uptime import Figures
from runstate.storage.tables import User, Website
from runstate.web.status_view import duration_text
from runstate.web.templating import environment

BAR_DAYS = 90
LATEST_ROWS = 20
# The most points a chart asks for: "auto" draws raw checks when a range holds no more of
# them than this at the monitor's interval, and the rollups grouped to this many otherwise.
CHART_POINTS = 300
CHART_RANGES = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
ChartRange = Literal["24h", "7d", "30d"]
# A day whose uptime is at least this is "minor" (amber) rather than "major" (red).
MINOR_DOWNTIME_FLOOR = 99.0

DayState = Literal["nodata", "up", "minor", "major"]


async def visible_website(
    session: AsyncSession, website_id: uuid.UUID, user: User
) -> Website | None:
    """The monitor when ``user`` owns it or is an ADMIN; None otherwise, so that another
    account's monitor looks exactly like one that does not exist."""
    website = await session.get(Website, website_id)
    if website is None or (website.user_id != user.id and user.role != "ADMIN"):
        return None
    return website


@dataclass(frozen=True)
class DayCell:
    """One day of the 90-day bar. A day without data is grey ("nodata"), never green."""

    date: str
    state: DayState
    figures: Figures

    @property
    def has_downtime(self) -> bool:
        return self.figures.downtime_seconds > 0

    @property
    def label(self) -> str:
        """What a screen reader (and the tooltip) says about the day."""
        f = self.figures
        if f.uptime_percent is None:
            reason = "paused" if f.paused_seconds and not f.eligible_seconds else "no data"
            return f"{self.date}: {reason}"
        parts = [f"{self.date}: {format_percent(f.uptime_percent)} up"]
        if f.downtime_seconds:
            parts.append(f"{duration_text(f.downtime_seconds)} down")
        if f.incidents:
            parts.append(f"{f.incidents} incident{'s' if f.incidents != 1 else ''}")
        if f.no_data_seconds:
            parts.append(f"{duration_text(f.no_data_seconds)} without data")
        return ", ".join(parts)


def day_state(figures: Figures) -> DayState:
    if figures.uptime_percent is None:
        return "nodata"
    if figures.downtime_seconds == 0:
        return "up"
    return "minor" if figures.uptime_percent >= MINOR_DOWNTIME_FLOOR else "major"


async def day_bar(session: AsyncSession, website_id: uuid.UUID, now: datetime) -> list[DayCell]:
    """The last BAR_DAYS UTC days, oldest first, today last."""
    days = await uptime.daily_history(session, website_id, BAR_DAYS, now)
    return [DayCell(d.date.isoformat(), day_state(d.figures), d.figures) for d in days]


@dataclass(frozen=True)
class WindowFigures:
    name: str
    figures: Figures


async def uptime_windows(
    session: AsyncSession, website_id: uuid.UUID, now: datetime
) -> list[WindowFigures]:
    """Uptime over 24h, 7d, 30d, 90d and 365d, as GET /websites/{id}/uptime gives it."""
    return [
        WindowFigures(w.name, f) for w, f in await uptime.website_uptime(session, website_id, now)
    ]


@dataclass(frozen=True)
class IncidentRow:
    incident: IncidentPublic
    duration_seconds: int


async def latest_incidents(
    session: AsyncSession, website: Website, user: User, now: datetime
) -> list[IncidentRow]:
    """The newest incidents, each with how long it lasted (an open one: so far)."""
    answer = await list_incidents(website.id, user, session, LATEST_ROWS, None, None, None)
    rows = []
    for incident in answer["data"].incidents:
        end = incident.resolved_at or now
        rows.append(
            IncidentRow(incident, max(0, round((end - incident.started_at).total_seconds())))
        )
    return rows


async def latest_checks(session: AsyncSession, website: Website, user: User) -> list[CheckPublic]:
    answer = await list_checks(website.id, user, session, LATEST_ROWS, None, None, None)
    checks: list[CheckPublic] = answer["data"].checks
    return checks


async def latest_alerts(
    session: AsyncSession, website: Website, user: User
) -> list[NotificationPublic]:
    answer = await list_notifications(website.id, user, session, LATEST_ROWS, None, None, None)
    alerts: list[NotificationPublic] = answer["data"].notifications
    return alerts


async def chart_series(
    session: AsyncSession, website: Website, user: User, chart_range: ChartRange, now: datetime
) -> dict[str, Any]:
    """The response times of ``chart_range`` (ending now) as GET
    /websites/{id}/response-times?resolution=auto answers them, in columns as uPlot draws
    them: `x` (Unix seconds), `avg` and `p95` (ms; null where nothing was measured; `p95`
    null throughout for raw checks, each of which is one measurement)."""
    answer = await website_response_times(
        website.id,
        user,
        session,
        limit=CHART_POINTS,
        since=now - CHART_RANGES[chart_range],
        until=now,
        resolution="auto",
    )
    data: ResponseTimesAnswer = answer["data"]
    x, avg, p95 = [], [], []
    for point in data.points:
        x.append(int(point.timestamp.timestamp()))
        avg.append(point.response_time_ms)
        p95.append(point.p95_response_time_ms if isinstance(point, RollupPoint) else None)
    return {
        "range": chart_range,
        "resolution": data.resolution,
        "bucket_seconds": data.bucket_seconds,
        "x": x,
        "avg": avg,
        "p95": p95,
    }


async def channels_of(session: AsyncSession, user: User) -> list[ChannelPublic]:
    """The account's alert channels, oldest first, as GET /channels lists them (no secret)."""
    answer = await list_channels(user, session)
    found: list[ChannelPublic] = answer["data"].channels
    return found


def chart_rows(series: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """The chart's points as table rows (time, average, p95), newest first: what the page
    shows without JavaScript and what a screen reader reads instead of the canvas."""
    rows = zip(series["x"], series["avg"], series["p95"], strict=True)
    return [
        (datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M"), avg, p95)
        for t, avg, p95 in reversed(list(rows))
    ]


def format_percent(value: float | None) -> str:
    """A percentage with two decimals that never rounds a shortfall up to 100 %."""
    if value is None:
        return "no data"
    if value < 100 and round(value, 2) >= 100:
        return "99.99 %"
    return f"{value:.2f} %"


def format_moment(moment: datetime | None) -> str:
    """A time as the pages show it: UTC, to the second."""
    if moment is None:
        return "never"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_ms(value: float | None) -> str:
    return "\u2013" if value is None else f"{value:.0f} ms"  # an en dash: nothing measured


def install_filters() -> None:
    """The filters the monitor, channel and status-page templates use."""
    for name, function in (
        ("percent", format_percent),
        ("duration", duration_text),
        ("moment", format_moment),
        ("ms", format_ms),
    ):
        environment.filters.setdefault(name, function)
