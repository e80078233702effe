"""How a public status page's data is put into words and shapes: the 90-day bar as runs of
like days (the page stays small: 500 monitors by 90 days in a few hundred kilobytes), each
day's description for screen readers, the overall status, and the Statuspage-style status
names that summary.json uses."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from itertools import groupby

from runstate.history.bars import Bar, BarDay, DayKind
from runstate.web.status_data import MonitorView, PageData, PostedIncident

# The CSS class of each kind of day (short: there are tens of thousands of them).
DAY_CLASSES = {
    DayKind.UP: "u",
    DayKind.DEGRADED: "g",
    DayKind.DOWN: "d",
    DayKind.PARTIAL_DATA: "p",
    DayKind.NO_DATA: "n",
    DayKind.NONE: "z",
}

STATUS_WORDS = {
    "up": "Operational",
    "down": "Down",
    "paused": "Paused",
    "unknown": "No data yet",
}

# A monitor's status as Statuspage names a component's. Paused and not-yet-checked monitors
# have no status to report: "under_maintenance" says so without calling them up.
COMPONENT_STATUS = {
    "up": "operational",
    "down": "major_outage",
    "paused": "under_maintenance",
    "unknown": "under_maintenance",
}

IMPACT_ORDER = ("none", "minor", "major", "critical")
INDICATOR_WORDS = {
    "none": "All Systems Operational",
    "minor": "Minor Service Outage",
    "major": "Partial System Outage",
    "critical": "Major System Outage",
}
UPDATE_WORDS = {
    "investigating": "Investigating",
    "identified": "Identified",
    "monitoring": "Monitoring",
    "resolved": "Resolved",
}


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of ``length`` like days of a bar; ``label`` (for days worth a closer look)
    says what they were, and makes the segment focusable."""

    css: str
    length: int
    label: str | None


def day_text(day: date) -> str:
    return f"{day.day} {day:%b %Y}"


def duration_text(seconds: float) -> str:
    """A duration in words, to the minute: "45 s", "12 min", "3 h 5 min", "2 d 4 h"."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def percent_text(value: float | None) -> str:
    """Two decimals rounded down (99.999 is not a perfect 100.00); "no data" for None."""
    if value is None:
        return "no data"
    return f"{math.floor(value * 100) / 100:.2f} %"


def _bad_day_label(day: BarDay) -> str:
    parts = [f"{day_text(day.date)}: {percent_text(day.uptime_percent)} uptime"]
    if day.kind in (DayKind.DOWN, DayKind.DEGRADED):
        down = duration_text(day.downtime_seconds) if day.downtime_seconds else "under 1 s"
        parts.append(f"{down} down")
    if day.kind is DayKind.PARTIAL_DATA or (day.no_data_seconds >= 60 and day.downtime_seconds):
        parts.append(f"no data for {duration_text(day.no_data_seconds)}")
    return ", ".join(parts)


def _no_data_label(first: date, last: date) -> str:
    if first == last:
        return f"{day_text(first)}: no data"
    return f"{day_text(first)} to {day_text(last)}: no data"


def bar_segments(bar: Bar | None) -> list[Segment]:
    """The bar as runs: up days, and days with nothing to watch, merge with their like
    neighbours; days without data merge into one focusable run; every day with downtime or
    missing data is a focusable segment of its own."""
    if bar is None:
        return []
    segments: list[Segment] = []
    n = 0
    kinds = bar.kinds
    for kind, run in groupby(kinds):
        length = len(list(run))
        if kind in (DayKind.UP, DayKind.NONE):
            segments.append(Segment(DAY_CLASSES[kind], length, None))
        elif kind is DayKind.NO_DATA:
            label = _no_data_label(bar.dates[n], bar.dates[n + length - 1])
            segments.append(Segment(DAY_CLASSES[kind], length, label))
        else:
            segments.extend(
                Segment(DAY_CLASSES[kind], 1, _bad_day_label(bar.details[d]))
                for d in range(n, n + length)
            )
        n += length
    return segments


def bar_summary(monitor: MonitorView) -> str:
    """The bar's accessible name: what its days add up to."""
    kinds = monitor.bar.kinds if monitor.bar else []
    parts = [f"{kinds.count(DayKind.UP)} operational"]
    downtime = kinds.count(DayKind.DOWN) + kinds.count(DayKind.DEGRADED)
    if downtime:
        parts.append(f"{downtime} with downtime")
    missing = kinds.count(DayKind.NO_DATA) + kinds.count(DayKind.PARTIAL_DATA)
    if missing:
        parts.append(f"{missing} without full data")
    return f"{monitor.name}, last {len(kinds)} days: {', '.join(parts)}"


def indicator(page: PageData) -> str:
    """The page's overall state, as Statuspage's status.indicator: the worse of what its
    monitors say (any down: major; all down: critical) and its active incidents' impact."""
    watched = [m.status for m in page.monitors if m.status in ("up", "down")]
    down = watched.count("down")
    from_monitors = "none" if not down else "critical" if down == len(watched) else "major"
    impacts = [from_monitors, *(i.impact for i in page.active_incidents)]
    return max(impacts, key=IMPACT_ORDER.index)


def utc(moment: datetime) -> datetime:
    """``moment`` in UTC (SQLite hands back naive UTC times)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def hhmm(moment: datetime) -> str:
    return f"{utc(moment):%H:%M} UTC"


def when_text(moment: datetime) -> str:
    m = utc(moment)
    return f"{m.day} {m:%b %Y, %H:%M} UTC"


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 with milliseconds and Z, as Statuspage writes its times."""
    if moment is None:
        return None
    return utc(moment).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def newest_first(incidents: Iterable[PostedIncident]) -> list[PostedIncident]:
    return sorted(incidents, key=lambda i: utc(i.created_at), reverse=True)
