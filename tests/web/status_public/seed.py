"""History put straight into the server's database: daily rollups, incidents and a
monitor's state, as the pipeline would have written them."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from runstate.storage.tables import DailyRollup
from tests.api import rows
from tests.api.server import ApiServer

DAY_SECONDS = 86_400


def day_rollup(
    api: ApiServer, website_id: str, day: datetime, up_s: int = DAY_SECONDS, down_s: int = 0
) -> DailyRollup:
    """One day's rollup of a monitor checked every 60 s: ``up_s`` and ``down_s`` of it."""
    checks = (up_s + down_s) // 60
    return DailyRollup(
        website_id=uuid.UUID(website_id),
        bucket_start=day,
        region_id=rows.local_region_id(api),
        checks=checks,
        up_checks=up_s // 60,
        up_seconds=up_s,
        down_seconds=down_s,
        timed_checks=checks,
        response_time_sum_ms=checks * 100,
        response_time_min_ms=80,
        response_time_max_ms=200,
    )


def checked_days(api: ApiServer, website_id: str, first: datetime, days: int) -> list[DailyRollup]:
    """Whole days of checks, all up, from ``first``."""
    return [day_rollup(api, website_id, first + timedelta(days=n)) for n in range(days)]


def added(api: ApiServer, website_id: str, at: datetime, **state: object) -> None:
    """Make the monitor as if added at ``at`` (and set any other columns of its state)."""
    rows.set_website_state(api, website_id, time_added=at, **state)
