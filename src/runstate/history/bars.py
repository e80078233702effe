"""The daily bar of many monitors at once: each monitor's figures for each of its last N UTC
days (today included), read in one statement.

The figures are those of :mod:`runstate.history.uptime`'s daily history, by its definitions:
a day is clipped to [time_added, now); paused time is not eligible; downtime is the
incidents' time within the eligible time; the daily rollups say how much of the day had
data; time without data is never counted as up. The statement reads the rows those figures
come from (each monitor, its daily rollups summed over regions, and the incidents and pauses
that meet the days) rather than computing a row per (monitor, day) in SQL: over 500 monitors
by 90 days that is 45,000 rows of interval arithmetic for the database, against a few
thousand rows to read and a loop here that only does interval work where an incident or a
pause is.

Each day is given a kind that says how to show it:

- ``none``: nothing to watch that day (before the monitor was added, or paused all day);
- ``no_data``: watched, but no check stands for any of it;
- ``down``: downtime leaving the day under MAJOR_OUTAGE_BELOW_PERCENT uptime;
- ``degraded``: some downtime, but less;
- ``partial_data``: no downtime, but a noticeable part of the day without data
  (PARTIAL_DATA_SHARE of its watched time, and at least PARTIAL_DATA_MIN_SECONDS);
- ``up``: checked and up the whole day.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Float, Integer, Select, func, literal, null, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from runstate.history.sql import epoch_seconds, rows_of, seconds
from runstate.history.uptime import MIN_MEASURED_SECONDS
from runstate.history.windows import DAY, epoch, floor_day
from runstate.storage.tables import DailyRollup, Incident, Website, WebsitePause

MAJOR_OUTAGE_BELOW_PERCENT = 99.0
PARTIAL_DATA_SHARE = 0.05
PARTIAL_DATA_MIN_SECONDS = 600
DAY_SECONDS = 86_400.0


class DayKind(StrEnum):
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"
    PARTIAL_DATA = "partial_data"
    NO_DATA = "no_data"
    NONE = "none"

    @property
    def is_bad(self) -> bool:
        """Whether the day is worth a closer look: downtime, or data missing."""
        return self is not DayKind.UP and self is not DayKind.NONE


@dataclass(frozen=True, slots=True)
class BarDay:
    date: date
    kind: DayKind
    uptime_percent: float | None
    eligible_seconds: int
    downtime_seconds: int
    no_data_seconds: int
    paused_seconds: int
    incidents: int


def day_kind(uptime: float | None, eligible: float, downtime: float, no_data: float) -> DayKind:
    """How a day with these figures is shown (see the module's definitions)."""
    if eligible < MIN_MEASURED_SECONDS:
        return DayKind.NONE
    if uptime is None:
        return DayKind.NO_DATA
    if downtime >= 1:
        return DayKind.DOWN if uptime < MAJOR_OUTAGE_BELOW_PERCENT else DayKind.DEGRADED
    if no_data >= PARTIAL_DATA_MIN_SECONDS and no_data >= PARTIAL_DATA_SHARE * eligible:
        return DayKind.PARTIAL_DATA
    return DayKind.UP


# --- the statement ---------------------------------------------------------------------------

# What each row of the statement is: a monitor, one day's rollups, an incident or a pause.
MONITOR, ROLLUP, INCIDENT, PAUSE = 0, 1, 2, 3


def bars_statement(monitor_ids: Select[Any], first_day: datetime, now: datetime) -> Select[Any]:
    """Rows (part, website_id, start_s, end_s, up_s, down_s): each monitor that
    ``monitor_ids`` selects (start_s: when it was added), its daily rollups from
    ``first_day`` summed over regions (start_s: the day), and its incidents and pauses that
    meet [first_day, now) (end_s: their end, now while open)."""
    now_s = seconds(epoch(now))
    none = null().cast(Float())
    d, i, p = DailyRollup, Incident, WebsitePause

    def part(n: int) -> Any:
        return literal(n, Integer()).label("part")

    monitors = select(
        part(MONITOR),
        Website.id.label("website_id"),
        epoch_seconds(Website.time_added).label("start_s"),
        none.label("end_s"),
        none.label("up_s"),
        none.label("down_s"),
    ).where(Website.id.in_(monitor_ids))
    rollups = (
        select(
            part(ROLLUP),
            d.website_id,
            epoch_seconds(d.bucket_start),
            none,
            func.sum(d.up_seconds).cast(Float()),
            func.sum(d.down_seconds).cast(Float()),
        )
        .where(d.website_id.in_(monitor_ids), d.bucket_start >= first_day, d.bucket_start < now)
        .group_by(d.website_id, d.bucket_start)
    )
    incidents = select(
        part(INCIDENT),
        i.website_id,
        epoch_seconds(i.started_at),
        func.coalesce(epoch_seconds(i.resolved_at), now_s),
        none,
        none,
    ).where(
        i.website_id.in_(monitor_ids),
        i.started_at < now,
        or_(i.resolved_at.is_(None), i.resolved_at > first_day),
    )
    pauses = select(
        part(PAUSE),
        p.website_id,
        epoch_seconds(p.paused_at),
        func.coalesce(epoch_seconds(p.resumed_at), now_s),
        none,
        none,
    ).where(
        p.website_id.in_(monitor_ids),
        p.paused_at < now,
        or_(p.resumed_at.is_(None), p.resumed_at > first_day),
    )
    return select(union_all(monitors, rollups, incidents, pauses).subquery("parts"))


# --- the arithmetic --------------------------------------------------------------------------


Interval = tuple[float, float]


@dataclass
class _Monitor:
    added_s: float = 0.0
    up: dict[int, float] | None = None
    down: dict[int, float] | None = None
    incidents: list[Interval] | None = None
    pauses: list[Interval] | None = None


class _Days:
    """The days of the bar: day n is [first_s + n days, its end or now)."""

    def __init__(self, first_day: datetime, days: int, now: datetime) -> None:
        self.first_s = epoch(first_day)
        self.now_s = epoch(now)
        self.count = days
        self.dates = [(first_day + n * DAY).date() for n in range(days)]

    def index_of(self, moment_s: float) -> int:
        # Half a day in, so that float seconds (SQLite's julianday) never fall just short.
        return int((moment_s - self.first_s + DAY_SECONDS / 2) // DAY_SECONDS)

    def span(self, n: int) -> Interval:
        since = self.first_s + n * DAY_SECONDS
        return since, min(since + DAY_SECONDS, self.now_s)

    def met_by(self, start: float, end: float) -> range:
        """The days [start, end) may meet (check each: one at an end may not)."""
        first = max(0, int((start - self.first_s) // DAY_SECONDS))
        return range(first, min(self.count - 1, int((end - self.first_s) // DAY_SECONDS)) + 1)

    def spread(self, interval: Interval, added_s: float, into: list[float]) -> None:
        """Add ``interval``'s overlap with each day (clipped to the monitor's time) to
        ``into``."""
        start, end = max(interval[0], added_s), interval[1]
        for n in self.met_by(start, end):
            since, until = self.span(n)
            shared = min(end, until) - max(start, since)
            if shared > 0:
                into[n] += shared


def _intersections(a: Iterable[Interval], b: Sequence[Interval]) -> list[Interval]:
    return [(max(x0, y0), min(x1, y1)) for x0, x1 in a for y0, y1 in b if min(x1, y1) > max(x0, y0)]


def _read(rows: Sequence[Any], days: _Days) -> dict[uuid.UUID, _Monitor]:
    monitors: dict[uuid.UUID, _Monitor] = defaultdict(_Monitor)
    for part, website_id, start_s, end_s, up_s, down_s in rows:
        m = monitors[website_id]
        if part == MONITOR:
            m.added_s = start_s
        elif part == ROLLUP:
            n = days.index_of(start_s)
            if m.up is None or m.down is None:
                m.up, m.down = {}, {}
            m.up[n], m.down[n] = up_s or 0.0, down_s or 0.0
        elif part == INCIDENT:
            m.incidents = [*(m.incidents or []), (start_s, end_s)]
        else:
            m.pauses = [*(m.pauses or []), (start_s, end_s)]
    return monitors


def _bar(m: _Monitor, days: _Days) -> list[BarDay]:
    count = days.count
    zero = [0.0] * count
    paused, incident, incident_paused = list(zero), list(zero), list(zero)
    incident_counts = [0] * count
    for interval in m.pauses or ():
        days.spread(interval, m.added_s, paused)
    for start, end in m.incidents or ():
        days.spread((start, end), m.added_s, incident)
        for n in days.met_by(start, end):
            since, until = days.span(n)
            incident_counts[n] += start < until and end > since
    if m.incidents and m.pauses:
        for interval in _intersections(m.incidents, m.pauses):
            days.spread(interval, m.added_s, incident_paused)
    up, down = m.up or {}, m.down or {}
    bar = []
    for n in range(count):
        since, until = days.span(n)
        eligible = max(0.0, max(0.0, until - max(since, m.added_s)) - paused[n])
        downtime = min(eligible, max(0.0, incident[n] - incident_paused[n]))
        up_s, down_s = up.get(n, 0.0), down.get(n, 0.0)
        no_data = max(0.0, eligible - downtime - up_s - max(0.0, down_s - downtime))
        measured = eligible - no_data
        uptime = 100.0 * (1.0 - downtime / measured) if measured >= MIN_MEASURED_SECONDS else None
        bar.append(
            BarDay(
                days.dates[n],
                day_kind(uptime, eligible, downtime, no_data),
                None if uptime is None else round(uptime, 4),
                round(eligible),
                round(downtime),
                round(no_data),
                round(paused[n]),
                incident_counts[n],
            )
        )
    return bar


async def daily_bars(
    session: AsyncSession, monitor_ids: Select[Any], days: int, now: datetime
) -> dict[uuid.UUID, list[BarDay]]:
    """The last ``days`` UTC days (oldest first, today last) of every monitor that
    ``monitor_ids`` (a query of website ids) selects, in one statement."""
    first_day = floor_day(now) - (days - 1) * DAY
    the_days = _Days(first_day, days, now)
    rows = await rows_of(session, bars_statement(monitor_ids, first_day, now))
    return {key: _bar(m, the_days) for key, m in _read(rows, the_days).items()}
