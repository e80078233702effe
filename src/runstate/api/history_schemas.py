"""Response bodies of the uptime and history endpoints (runstate.api.routes.history).

The figures are defined in runstate.history.uptime; seconds are whole seconds, percentages
have four decimals, and null means "no data", never 100 %.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field

from runstate.api.schemas import NEXT_CURSOR, ResponseTimePoint

WindowName = Literal["24h", "7d", "30d", "90d", "365d"]
Resolution = Literal["auto", "raw", "hour", "day"]


class UptimeFigures(BaseModel):
    uptime_percent: float | None = Field(
        description="100 * (1 - downtime / (eligible - no data)); null when no time had data."
    )
    downtime_seconds: int = Field(description="Incidents within the eligible time.")
    no_data_seconds: int = Field(description="Eligible time no check speaks for; never up.")
    paused_seconds: int = Field(description="Time the monitor was paused (left out).")
    eligible_seconds: int = Field(
        description="The period after the monitor was added, less paused time."
    )
    incidents: int = Field(description="Incidents that overlap the period.")
    checks: int


class WindowUptime(UptimeFigures):
    window: WindowName
    since: datetime
    until: datetime


class WebsiteUptimePublic(BaseModel):
    windows: list[WindowUptime]


class DayPublic(BaseModel):
    date: date
    uptime_percent: float | None
    downtime_seconds: int
    no_data_seconds: int
    paused_seconds: int
    checks: int
    avg_response_time_ms: float | None
    p95_response_time_ms: float | None


class DailyPublic(BaseModel):
    days: list[DayPublic]


class MonitorUptime(UptimeFigures):
    website_id: uuid.UUID
    name: str | None
    url: str
    current_status: str | None


class UptimeListPublic(BaseModel):
    window: WindowName
    since: datetime
    until: datetime
    websites: list[MonitorUptime]
    next_cursor: str | None = NEXT_CURSOR


class RollupPoint(BaseModel):
    """Checks of [timestamp, timestamp + bucket_seconds), all regions together."""

    timestamp: datetime
    response_time_ms: float | None = Field(description="The mean of the timed checks.")
    min_response_time_ms: int | None
    max_response_time_ms: int | None
    p95_response_time_ms: float | None
    checks: int
    up_checks: int


class ResponseTimesAnswer(BaseModel):
    """Raw checks (`resolution` "raw") or downsampled rollups ("hour", "day")."""

    resolution: Literal["raw", "hour", "day"]
    bucket_seconds: int | None = Field(
        default=None, description="The width of a rollup point; null for raw checks."
    )
    since: datetime | None = None
    until: datetime | None = None
    points: list[ResponseTimePoint] | list[RollupPoint]
