"""The periods figures are given for: windows ending now, made of whole UTC hours or days."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
WINDOW_DAYS = {"7d": 7, "30d": 30, "90d": 90, "365d": 365}
WINDOW_NAMES: tuple[str, ...] = ("24h", *WINDOW_DAYS)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Window:
    name: str
    since: datetime
    until: datetime

    @property
    def hourly(self) -> bool:
        """Whether the window is read from the hourly rollups (else the daily ones)."""
        return self.name == "24h"


def floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def floor_day(moment: datetime) -> datetime:
    return floor_hour(moment).replace(hour=0)


def window(name: str, now: datetime) -> Window:
    """The window called ``name`` (one of WINDOW_NAMES) ending at ``now``; KeyError else."""
    if name == "24h":
        return Window(name, floor_hour(now) - 23 * HOUR, now)
    return Window(name, floor_day(now) - (WINDOW_DAYS[name] - 1) * DAY, now)


def epoch(moment: datetime) -> float:
    return (moment - EPOCH).total_seconds()
