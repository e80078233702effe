"""The uptime arithmetic of runstate.history.uptime, on SQLite and PostgreSQL, at a fixed now.

Rows are written straight into a migrated database; nothing of the pipeline runs.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from runstate.history.latency import LATENCY_COLUMNS, bucket_index
from runstate.history.rollups import TOTAL_EVERY_DAY_FROM_SCRATCH
from runstate.history.uptime import (
    BoundWindow,
    Figures,
    bound_window_values,
    daily_history,
    figures_of,
    website_uptime,
    windows_statement,
)
from runstate.history.windows import window
from runstate.storage.db import create_engine, session_factory
from runstate.storage.migrate import upgrade_schema
from runstate.storage.tables import (
    Base,
    DailyRollup,
    HourlyRollup,
    Incident,
    Region,
    User,
    Website,
    WebsitePause,
)
from tests.api.server import postgres_database

NOW = datetime(2026, 11, 30, 12, 30, tzinfo=UTC)
TODAY = datetime(2026, 11, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    def migrated(url: str) -> str:
        async def run() -> None:
            engine = create_engine(url, pool_size=1)
            await upgrade_schema(engine)
            await engine.dispose()

        asyncio.run(run())
        return url

    if request.param == "sqlite":
        yield migrated(f"sqlite:///{tmp_path_factory.mktemp('uptime') / 'runstate.db'}")
        return
    with postgres_database(request.getfixturevalue("postgres_admin_url")) as url:
        yield migrated(url)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=1)
    yield engine
    await engine.dispose()


@pytest.fixture
async def session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    async with session_factory(engine)() as session:
        yield session


async def _monitor(session: AsyncSession, added: datetime, *rows: Base) -> uuid.UUID:
    """A new monitor added at ``added``, with ``rows`` (built by the helpers below for id 0)."""
    user = User(id=uuid.uuid4(), email=f"{uuid.uuid4().hex}@example.com", password_hash="x")
    website = Website(
        id=uuid.uuid4(),
        user_id=user.id,
        url=f"https://{uuid.uuid4().hex}.example/",
        time_added=added,
        updated_at=added,
    )
    session.add(user)
    await session.flush()
    session.add(website)
    await session.flush()
    for row in rows:
        row.website_id = website.id  # type: ignore[attr-defined]
        session.add(row)
    await session.flush()
    await session.execute(text(TOTAL_EVERY_DAY_FROM_SCRATCH))  # as the pipeline keeps them
    await session.commit()
    return website.id


def _histogram(times: list[int]) -> dict[str, int]:
    counts = dict.fromkeys(LATENCY_COLUMNS, 0)
    for ms in times:
        counts[LATENCY_COLUMNS[bucket_index(ms)]] += 1
    return counts


def _rollup(
    table: type[HourlyRollup] | type[DailyRollup],
    start: datetime,
    up: int,
    down: int = 0,
    times: list[int] | None = None,
    region_id: int = 1,
) -> Any:
    times = times if times is not None else [100]
    return table(
        website_id=uuid.UUID(int=0),
        bucket_start=start,
        region_id=region_id,
        checks=len(times),
        up_checks=len(times),
        up_seconds=up,
        down_seconds=down,
        timed_checks=len(times),
        response_time_sum_ms=sum(times),
        response_time_min_ms=min(times, default=None),
        response_time_max_ms=max(times, default=None),
        **_histogram(times),
    )


def _full_days(first: datetime, last: datetime) -> list[Any]:
    """Daily rollups all UP from day ``first`` to day ``last`` (today up to NOW)."""
    rows, day = [], first
    while day <= last:
        up = int(min(DAY, NOW - day).total_seconds())
        rows.append(_rollup(DailyRollup, day, up))
        day += DAY
    return rows


def _full_hours(first: datetime) -> list[Any]:
    rows, hour = [], first
    while hour < NOW:
        rows.append(_rollup(HourlyRollup, hour, int(min(HOUR, NOW - hour).total_seconds())))
        hour += HOUR
    return rows


def _incident(started: datetime, resolved: datetime | None) -> Incident:
    return Incident(
        id=uuid.uuid4(),
        website_id=uuid.UUID(int=0),
        started_at=started,
        resolved_at=resolved,
        is_active=resolved is None,
        opened_by_event_id=uuid.uuid4().hex,
    )


def _pause(paused: datetime, resumed: datetime | None) -> WebsitePause:
    return WebsitePause(website_id=uuid.UUID(int=0), paused_at=paused, resumed_at=resumed)


async def _windows(session: AsyncSession, website_id: uuid.UUID) -> dict[str, Figures]:
    return {w.name: f for w, f in await website_uptime(session, website_id, NOW)}


def test_windows_are_whole_utc_hours_and_days_ending_now() -> None:
    assert window("24h", NOW).since == datetime(2026, 11, 29, 13, tzinfo=UTC)
    assert window("7d", NOW).since == datetime(2026, 11, 24, tzinfo=UTC)
    assert window("365d", NOW).since == datetime(2025, 12, 1, tzinfo=UTC)
    assert window("30d", NOW).until == NOW


async def test_an_incident_across_a_window_edge_counts_only_its_part_inside(
    session: AsyncSession,
) -> None:
    edge = window("7d", NOW).since
    website_id = await _monitor(
        session,
        TODAY - 40 * DAY,
        *_full_days(TODAY - 40 * DAY, TODAY),
        _incident(edge - HOUR, edge + 2 * HOUR),
    )

    figures = await _windows(session, website_id)

    span_7d = (NOW - edge).total_seconds()
    assert figures["7d"].downtime_seconds == 7200
    assert figures["30d"].downtime_seconds == 10800
    assert figures["7d"].incidents == figures["30d"].incidents == 1
    assert figures["24h"].incidents == 0
    assert figures["7d"].no_data_seconds == 0
    assert figures["7d"].uptime_percent == round(100 * (1 - 7200 / span_7d), 4)
    assert figures["7d"].checks == 7


async def test_paused_time_is_left_out_and_reported_apart(session: AsyncSession) -> None:
    paused, resumed = TODAY - 4 * DAY, TODAY - 2 * DAY
    days = [
        d for d in _full_days(TODAY - 10 * DAY, TODAY) if not paused <= d.bucket_start < resumed
    ]
    website_id = await _monitor(
        session,
        TODAY - 10 * DAY,
        *days,
        _pause(paused, resumed),
        # Down while paused: not eligible time, so not downtime.
        _incident(paused + HOUR, paused + 3 * HOUR),
    )

    figures = (await _windows(session, website_id))["7d"]

    assert figures.paused_seconds == 2 * 86400
    assert figures.eligible_seconds == (NOW - window("7d", NOW).since).total_seconds() - 172800
    assert figures.downtime_seconds == 0
    assert figures.no_data_seconds == 0
    assert figures.uptime_percent == 100.0


async def test_a_gap_without_data_is_no_data_never_up(session: AsyncSession) -> None:
    gap = TODAY - 3 * DAY
    days = [d for d in _full_days(TODAY - 10 * DAY, TODAY) if d.bucket_start != gap]
    down_day = next(d for d in days if d.bucket_start == TODAY - DAY)
    down_day.up_seconds, down_day.down_seconds = 86400 - 3600, 3600
    website_id = await _monitor(
        session, TODAY - 10 * DAY, *days, _incident(TODAY - DAY, TODAY - DAY + HOUR)
    )

    figures = (await _windows(session, website_id))["7d"]

    eligible = (NOW - window("7d", NOW).since).total_seconds()
    assert figures.no_data_seconds == 86400
    assert figures.uptime_percent == round(100 * (1 - 3600 / (eligible - 86400)), 4)


async def test_a_window_without_any_data_has_no_uptime(session: AsyncSession) -> None:
    website_id = await _monitor(session, TODAY - 10 * DAY)

    figures = await _windows(session, website_id)

    assert all(f.uptime_percent is None for f in figures.values())
    assert figures["24h"].no_data_seconds == 86400 - 1800
    assert figures["7d"].checks == 0


async def test_a_monitor_added_mid_window_counts_from_when_it_was_added(
    session: AsyncSession,
) -> None:
    added = TODAY - 2 * DAY + 6 * HOUR
    first = _rollup(DailyRollup, TODAY - 2 * DAY, up=18 * 3600)
    website_id = await _monitor(session, added, first, *_full_days(TODAY - DAY, TODAY))

    figures = await _windows(session, website_id)

    assert figures["7d"].eligible_seconds == (NOW - added).total_seconds()
    assert figures["30d"].eligible_seconds == figures["7d"].eligible_seconds
    assert figures["7d"].no_data_seconds == 0
    assert figures["7d"].uptime_percent == figures["365d"].uptime_percent == 100.0


async def test_an_active_incident_runs_to_now(session: AsyncSession) -> None:
    website_id = await _monitor(
        session,
        TODAY - 5 * DAY,
        *_full_hours(NOW - 30 * HOUR),
        *_full_days(TODAY - 5 * DAY, TODAY),
        _incident(NOW - 150 * timedelta(minutes=1), None),
    )

    figures = await _windows(session, website_id)

    assert figures["24h"].downtime_seconds == 9000
    assert figures["24h"].incidents == 1
    assert figures["24h"].uptime_percent == round(100 * (1 - 9000 / (23.5 * 3600)), 4)


async def test_regions_sharing_a_monitors_checks_cover_the_period_together(
    session: AsyncSession,
) -> None:
    """The workers of two regions took turns at the checks: each saw half of the day."""
    day = TODAY - DAY
    website_id = await _monitor(
        session,
        day,
        _rollup(DailyRollup, day, up=41400, down=1800, region_id=1),
        _rollup(DailyRollup, day, up=41400, down=1800, region_id=2),
        _incident(day + 6 * HOUR, day + 7 * HOUR),
    )

    (yesterday, _today) = await daily_history(session, website_id, 2, NOW)

    assert yesterday.figures.no_data_seconds == 0
    assert yesterday.figures.downtime_seconds == 3600
    assert yesterday.figures.uptime_percent == round(100 * (1 - 3600 / 86400), 4)
    assert yesterday.figures.checks == 2


async def test_daily_history_lists_every_day_with_grey_ones_null(session: AsyncSession) -> None:
    times = [20, 40, 60, 80, 120, 180, 250, 400, 900, 3000]
    website_id = await _monitor(
        session,
        TODAY - 2 * DAY,
        _rollup(DailyRollup, TODAY - 2 * DAY, up=86400 - 3600, down=3600, times=times),
        _rollup(DailyRollup, TODAY, up=45000),
        _incident(TODAY - 2 * DAY + HOUR, TODAY - 2 * DAY + 2 * HOUR),
    )

    days = await daily_history(session, website_id, 5, NOW)

    assert [d.date.isoformat() for d in days] == [
        "2026-11-26",
        "2026-11-27",
        "2026-11-28",
        "2026-11-29",
        "2026-11-30",
    ]
    before, _, first, grey, today = days
    assert before.figures.uptime_percent is None
    assert before.figures.no_data_seconds == 0
    assert first.figures.downtime_seconds == 3600
    assert first.figures.uptime_percent == round(100 * (1 - 3600 / 86400), 4)
    assert first.figures.checks == 10
    assert first.latency.avg_ms == sum(times) / 10
    assert first.latency.p95_ms is not None
    assert 900 < first.latency.p95_ms <= 3000
    assert grey.figures.uptime_percent is None
    assert grey.figures.no_data_seconds == 86400
    assert grey.latency.avg_ms is None
    assert grey.latency.p95_ms is None
    assert today.figures.uptime_percent == 100.0


async def test_the_figures_of_many_monitors_are_one_statement(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    owner = None
    for _ in range(5):
        website_id = await _monitor(session, TODAY - 3 * DAY, *_full_days(TODAY - 3 * DAY, TODAY))
        owner = owner or website_id
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        rows = (
            await session.execute(
                windows_statement(
                    select(Website.id, Website.time_added).order_by(Website.time_added).limit(100),
                    [window("30d", NOW)],
                )
            )
        ).all()
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)

    assert len(statements) == 1
    assert len(rows) >= 5


async def test_running_totals_give_the_figures_that_summing_day_by_day_gives(
    session: AsyncSession,
) -> None:
    """PostgreSQL sums a window of days from two rows per monitor (the running totals); the
    figures are the ones summing every day gives, with gaps, two regions, a late start."""
    if session.get_bind().dialect.name != "postgresql":
        pytest.skip("the running totals are read with LATERAL, on PostgreSQL")
    first = TODAY - 120 * DAY
    await _monitor(session, first, *_full_days(first, TODAY))
    gappy = [r for n, r in enumerate(_full_days(first, TODAY)) if n % 7 not in (2, 3)]
    await _monitor(session, first, *gappy, _incident(TODAY - 40 * DAY, TODAY - 39 * DAY))
    second_region = [
        _rollup(DailyRollup, TODAY - n * DAY, up=40_000, down=2_000, region_id=2)
        for n in range(0, 50, 3)
    ]
    await _monitor(session, first, *_full_days(first, TODAY), *second_region)
    await _monitor(session, TODAY - 10 * DAY, *_full_days(TODAY - 10 * DAY, TODAY))
    await _monitor(session, first)  # no data at all
    for region_id in (1, 2):  # the regions the workers would have registered
        if await session.get(Region, region_id) is None:
            session.add(Region(id=region_id, name=f"region-{region_id}"))
    await session.commit()

    monitors = select(Website.id, Website.time_added).order_by(Website.time_added, Website.id)
    for name in ("7d", "30d", "90d", "365d"):
        span = [window(name, NOW)]
        summed = (await session.execute(windows_statement(monitors, span))).all()
        totals = (
            await session.execute(windows_statement(monitors, span, running_totals=True))
        ).all()
        assert [figures_of(row) for row in totals] == [figures_of(row) for row in summed], name

    # Several windows at once (a status page's 24 h, 30 d and 90 d), with bound moments too.
    names = ("24h", "30d", "90d")
    spans = [window(name, NOW) for name in names]
    summed = (await session.execute(windows_statement(monitors, spans))).all()
    totals = (await session.execute(windows_statement(monitors, spans, running_totals=True))).all()
    bound = (
        await session.execute(
            windows_statement(monitors, [BoundWindow(n) for n in names], running_totals=True),
            bound_window_values(names, NOW),
        )
    ).all()

    def listed(rows: Any) -> list[tuple[Any, str, Figures]]:
        return sorted((row.id, row.period, figures_of(row)) for row in rows)

    assert listed(totals) == listed(summed)
    assert listed(bound) == listed(summed)
