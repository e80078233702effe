"""The 90-day bars of many monitors at once agree, day by day, with the uptime module's
daily history of each (same definitions: incidents, pauses, days without data), and the
settled days kept per page add up to the same bars as reading them whole."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from runstate.history.bars import Bar, DayKind, daily_bars
from runstate.history.uptime import daily_history
from runstate.storage.db import create_engine, session_factory
from runstate.storage.tables import StatusPageMonitor, WebsitePause
from runstate.web.status_data import PastBars
from tests.api import rows
from tests.api.server import ApiServer
from tests.web.status_public.conftest import Owner, day_start
from tests.web.status_public.seed import added, day_rollup

DAYS = 90


def seed_a_rough_history(status_api: ApiServer, website_id: str) -> None:
    """Added mid-day 20 days ago; an outage across a midnight; failed checks without an
    outage; a ten-minute outage; a two-day pause with an outage inside it; a day with half
    its data; a day with none; an outage open now."""
    now = datetime.now(UTC)
    added(status_api, website_id, day_start(20) + timedelta(hours=6), last_checked_at=now)
    days = {n: day_rollup(status_api, website_id, day_start(n)) for n in range(1, 20)}
    days[20] = day_rollup(status_api, website_id, day_start(20), up_s=18 * 3_600)
    days[15] = day_rollup(status_api, website_id, day_start(15), 86_400 - 7_200, 7_200)
    days[14] = day_rollup(status_api, website_id, day_start(14), 86_400 - 3_600, 3_600)
    days[12] = day_rollup(status_api, website_id, day_start(12), 86_400 - 7_200, 7_200)
    days[10] = day_rollup(status_api, website_id, day_start(10), up_s=43_200)
    days[3] = day_rollup(status_api, website_id, day_start(3), 86_400 - 600, 600)
    del days[6]
    for n in (9, 8):  # paused: no checks
        days[n] = day_rollup(status_api, website_id, day_start(n), up_s=3_600)
    midnight = day_start(14)
    history = [
        *days.values(),
        rows.incident(
            website_id, midnight - timedelta(hours=2), resolved_at=midnight + timedelta(hours=1),
            is_active=False,
        ),
        rows.incident(
            website_id, day_start(9) + timedelta(hours=3),
            resolved_at=day_start(9) + timedelta(hours=5), is_active=False,
        ),
        rows.incident(website_id, now - timedelta(minutes=5)),
        rows.incident(
            website_id, day_start(3) + timedelta(hours=7),
            resolved_at=day_start(3) + timedelta(hours=7, minutes=10), is_active=False,
        ),
        WebsitePause(
            website_id=uuid.UUID(website_id), paused_at=day_start(9) + timedelta(hours=1),
            resumed_at=day_start(8) + timedelta(hours=23),
        ),
    ]  # fmt: skip
    minutes_today = int((now - day_start(0)).total_seconds() // 60)
    if minutes_today > 10:
        history.append(day_rollup(status_api, website_id, day_start(0), up_s=60 * minutes_today))
    rows.insert(status_api, *history)


async def _bars_and_history(
    url: str, page_id: uuid.UUID, website_id: uuid.UUID
) -> tuple[Bar, list[object], Bar, Bar]:
    engine = create_engine(url)
    try:
        now = datetime.now(UTC)
        ids = select(StatusPageMonitor.website_id).where(
            StatusPageMonitor.status_page_id == page_id
        )
        past = PastBars()
        async with session_factory(engine)() as session:
            whole = (await daily_bars(session, ids, DAYS, now))[website_id]
            history = list(await daily_history(session, website_id, DAYS, now))
            first = (await past.bars(session, page_id, now))[website_id]
            kept = (await past.bars(session, page_id, now))[website_id]
        return whole, history, first, kept
    finally:
        await engine.dispose()


def test_bars_agree_with_the_daily_history_and_with_themselves_when_kept(
    status_api: ApiServer, owner: Owner
) -> None:
    website_id = owner.monitor("Rough")
    seed_a_rough_history(status_api, website_id)
    page = owner.page([("", [website_id])])

    bar, history, first, kept = asyncio.run(
        _bars_and_history(
            status_api.settings.database_url, uuid.UUID(page["id"]), uuid.UUID(website_id)
        )
    )

    by_date = {day.date: day.figures for day in history}  # type: ignore[attr-defined]
    assert len(bar.kinds) == DAYS
    for n, (when, kind) in enumerate(zip(bar.dates, bar.kinds, strict=True)):
        figures = by_date[when]
        if n in bar.details:
            day = bar.details[n]
            shown = None if day.uptime_percent is None else round(day.uptime_percent, 4)
            assert shown == figures.uptime_percent, when
            assert day.downtime_seconds == figures.downtime_seconds, when
            assert day.no_data_seconds == figures.no_data_seconds, when
            assert day.paused_seconds == figures.paused_seconds, when
        else:  # plainly up: the history agrees, with under 5 % of the day without data
            assert kind is DayKind.UP
            assert figures.uptime_percent == 100.0, when
            assert figures.downtime_seconds == 0, when
            assert figures.no_data_seconds < 0.05 * 86_400, when
    kinds = {n: bar.kinds[DAYS - 1 - n] for n in (20, 15, 14, 12, 10, 9, 6, 3, 0)}
    assert kinds[20] is DayKind.UP  # added at 06:00: 18 h of checks is all of its day
    assert kinds[15] is DayKind.DOWN  # the outage's two hours before midnight
    assert kinds[14] is DayKind.DOWN  # and its hour after
    assert kinds[12] is DayKind.UP  # failed checks without an outage: data, not downtime
    assert kinds[10] is DayKind.PARTIAL_DATA
    assert kinds[9] is DayKind.UP  # the outage fell in paused time: not downtime
    assert kinds[6] is DayKind.NO_DATA
    assert kinds[3] is DayKind.DEGRADED  # ten minutes: over 99 %
    # Open for five minutes: downtime today, its share depending on the time of day.
    assert kinds[0] in (DayKind.DOWN, DayKind.DEGRADED)
    assert set(bar.kinds[: DAYS - 21]) == {DayKind.NONE}  # before it was added: grey
    for other in (first, kept):
        assert other.kinds == bar.kinds
        assert other.details == bar.details
