"""What a public status page shows, read from the database in a fixed number of statements
whatever the number of monitors: the page, its monitors in their groups with their current
status, their uptime over 24 h, 30 d and 90 d (one statement), their 90-day bars (one
statement, runstate.history.bars), the incidents posted on the page with their updates, and
the monitors' own incidents (outages) of the last 90 days.

Also the one cheap query that says whether a rendered page is still current: the page's
version and the moment its data goes stale."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import Select, Uuid, and_, bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from runstate.history.bars import Bar, daily_bars
from runstate.history.sql import epoch_seconds, rows_of
from runstate.history.uptime import (
    BoundWindow,
    bound_window_values,
    figure_dicts,
    windows_statement,
)
from runstate.history.windows import DAY, EPOCH, floor_day
from runstate.storage.status_pages import updates_of_incidents
from runstate.storage.tables import (
    Incident,
    StatusPage,
    StatusPageIncident,
    StatusPageMonitor,
    Website,
)

BAR_DAYS = 90
UPTIME_WINDOWS = ("24h", "30d", "90d")
HISTORY = timedelta(days=90)  # how far back past incidents and outages are shown
MAX_OUTAGES = 200  # the monitors' own incidents listed in the feeds, newest first


@dataclass(frozen=True)
class PageState:
    """What decides whether a rendered page is current: its version, and when its data
    goes stale (None: never, no monitor is watched)."""

    page_id: uuid.UUID
    version: int
    stale_after: datetime | None
    newest_check: datetime | None  # of the watched monitors

    def is_stale(self, now: datetime) -> bool:
        return self.stale_after is not None and now > self.stale_after


@dataclass(frozen=True)
class Uptime:
    window: str
    uptime_percent: float | None
    downtime_seconds: int
    no_data_seconds: int


@dataclass(frozen=True)
class MonitorView:
    id: uuid.UUID
    name: str
    group: str
    position: int
    status: str  # up, down, paused or unknown (not checked yet)
    status_changed_at: datetime | None
    created_at: datetime
    uptime: list[Uptime]
    bar: Bar | None  # None: the monitor went while the page was read


@dataclass(frozen=True)
class Group:
    name: str  # empty: the monitors outside any group
    monitors: list[MonitorView]

    @property
    def status(self) -> str:
        """The worst of its monitors'."""
        return worst_status(m.status for m in self.monitors)


@dataclass(frozen=True)
class IncidentUpdate:
    id: uuid.UUID
    status: str
    body: str
    created_at: datetime


@dataclass(frozen=True)
class PostedIncident:
    id: uuid.UUID
    title: str
    impact: str
    status: str
    created_at: datetime
    updated_at: datetime
    resolved_at: datetime | None
    updates: list[IncidentUpdate]  # newest first


@dataclass(frozen=True)
class Outage:
    """A monitor's own incident: opened when it went down, resolved when it came back."""

    id: uuid.UUID
    monitor: str
    started_at: datetime
    resolved_at: datetime | None


@dataclass(frozen=True)
class PageData:
    id: uuid.UUID
    slug: str
    title: str
    description: str | None
    version: int
    version_changed_at: datetime
    created_at: datetime
    updated_at: datetime
    now: datetime
    stale: bool
    groups: list[Group]
    incidents: list[PostedIncident]  # newest first, unresolved and the last 90 days'
    outages: list[Outage] = field(default_factory=list)  # newest first

    @property
    def monitors(self) -> list[MonitorView]:
        return [m for g in self.groups for m in g.monitors]

    @property
    def active_incidents(self) -> list[PostedIncident]:
        return [i for i in self.incidents if i.resolved_at is None]

    @property
    def past_incidents(self) -> list[PostedIncident]:
        return [i for i in self.incidents if i.resolved_at is not None]


STATUS_ORDER = ("down", "unknown", "paused", "up")


def worst_status(statuses: Any) -> str:
    found = set(statuses)
    return next((s for s in STATUS_ORDER if s in found), "up")


# --- the cheap query -------------------------------------------------------------------------


def _monitors_of(page_id: Any) -> Select[Any]:
    return select(StatusPageMonitor.website_id).where(StatusPageMonitor.status_page_id == page_id)


async def page_state(session: AsyncSession, slug: str, stale_intervals: float) -> PageState | None:
    """The public page ``slug``'s version and when its data goes stale: when the newest
    check of every watched (unpaused) monitor is older than ``stale_intervals`` of its
    interval (a monitor not checked yet counts from when it was added). None when there is
    no such public page. One statement."""
    w, m = Website, StatusPageMonitor

    def over_watched(column: Any) -> Any:
        """``column`` over the page's unpaused monitors (correlated to the page's row)."""
        return (
            select(column)
            .join(m, m.website_id == w.id)
            .where(m.status_page_id == StatusPage.id, w.paused.is_(False))
            .correlate(StatusPage)
            .scalar_subquery()
        )

    fresh_until = over_watched(
        func.max(
            epoch_seconds(func.coalesce(w.last_checked_at, w.time_added))
            + w.interval_seconds * stale_intervals
        )
    )
    newest = over_watched(func.max(w.last_checked_at))
    found = (
        await session.execute(
            select(StatusPage.id, StatusPage.version, fresh_until, newest).where(
                StatusPage.slug == slug, StatusPage.is_public.is_(True)
            )
        )
    ).first()
    if found is None:
        return None
    page_id, version, until_s, newest_check = found
    stale_after = None if until_s is None else EPOCH + timedelta(seconds=float(until_s))
    return PageState(page_id, int(version), stale_after, newest_check)


# --- everything the page shows ---------------------------------------------------------------


def _status_of(current_status: str | None, paused: bool) -> str:
    if paused:
        return "paused"
    return current_status if current_status in ("up", "down") else "unknown"


_Work = Callable[[AsyncSession], Awaitable[Any]]


async def _each_in_a_session(
    sessions: async_sessionmaker[AsyncSession], *works: _Work
) -> list[Any]:
    """Run ``works`` at once, each on a connection of its own: the database works on the
    uptime and the bars side by side, and the page waits for the longer, not the sum."""

    async def run(work: _Work) -> Any:
        async with sessions() as session:
            return await work(session)

    return list(await asyncio.gather(*(run(work) for work in works)))


async def _monitor_rows(session: AsyncSession, page_id: uuid.UUID) -> Sequence[Any]:
    m, w = StatusPageMonitor, Website
    return await rows_of(
        session,
        select(
            w.id, w.name, m.group_name, m.position, w.current_status, w.paused,
            w.status_changed_at, w.time_added,
        )
        .join(m, and_(m.website_id == w.id, m.status_page_id == page_id))
        .order_by(m.position, w.time_added, w.id),
    )  # fmt: skip


@lru_cache(maxsize=2)
def _uptime_statement(running_totals: bool) -> Select[Any]:
    """The uptime of the monitors of the page ``page_id`` (a parameter) over UPTIME_WINDOWS,
    built once. On PostgreSQL each window of days is summed from the daily rollups' running
    totals: two rows per monitor and window, rather than every day of 90."""
    page_id = bindparam("page_id", type_=Uuid())
    monitors = select(Website.id).where(Website.id.in_(_monitors_of(page_id)))
    windows = [BoundWindow(name) for name in UPTIME_WINDOWS]
    return windows_statement(monitors, windows, running_totals=running_totals)


async def _uptime(
    session: AsyncSession, page_id: uuid.UUID, now: datetime
) -> dict[uuid.UUID, list[Uptime]]:
    """Each monitor's uptime over UPTIME_WINDOWS, in that order (one statement)."""
    running_totals = session.get_bind().dialect.name == "postgresql"
    values = {**bound_window_values(UPTIME_WINDOWS, now), "page_id": page_id}
    rows = await rows_of(session, _uptime_statement(running_totals), values)
    uptime: dict[uuid.UUID, list[Uptime]] = {}
    for row, figures in zip(rows, figure_dicts(rows), strict=True):
        uptime.setdefault(row.id, []).append(
            Uptime(
                row.period,
                figures["uptime_percent"],
                figures["downtime_seconds"],
                figures["no_data_seconds"],
            )
        )
    order = {name: n for n, name in enumerate(UPTIME_WINDOWS)}
    return {key: sorted(found, key=lambda u: order[u.window]) for key, found in uptime.items()}


def _monitor_views(
    rows: Sequence[Any], uptime: dict[uuid.UUID, list[Uptime]], bars: dict[uuid.UUID, Bar]
) -> list[MonitorView]:
    return [
        MonitorView(
            id=r.id,
            # The URL is never shown: it may name hosts the public is not meant to know.
            name=r.name or "Unnamed monitor",
            group=r.group_name,
            position=r.position,
            status=_status_of(r.current_status, r.paused),
            status_changed_at=r.status_changed_at,
            created_at=r.time_added,
            uptime=uptime.get(r.id, []),
            bar=bars.get(r.id),
        )
        for r in rows
    ]


def _grouped(monitors: Sequence[MonitorView]) -> list[Group]:
    """Groups in the order of their first monitor; monitors in page order."""
    groups: dict[str, list[MonitorView]] = {}
    for monitor in monitors:
        groups.setdefault(monitor.group, []).append(monitor)
    return [Group(name, members) for name, members in groups.items()]


async def _posted_incidents(
    session: AsyncSession, page_id: uuid.UUID, now: datetime
) -> list[PostedIncident]:
    i = StatusPageIncident
    found = (
        await session.scalars(
            select(i)
            .where(
                i.status_page_id == page_id,
                or_(i.resolved_at.is_(None), i.resolved_at >= now - HISTORY),
            )
            .order_by(i.created_at.desc(), i.id)
        )
    ).all()
    timelines = await updates_of_incidents(session, [incident.id for incident in found])
    return [
        PostedIncident(
            id=incident.id,
            title=incident.title,
            impact=incident.impact,
            status=incident.status,
            created_at=incident.created_at,
            updated_at=incident.updated_at,
            resolved_at=incident.resolved_at,
            updates=[
                IncidentUpdate(u.id, u.status, u.body, u.created_at)
                for u in reversed(timelines[incident.id])
            ],
        )
        for incident in found
    ]


async def _outages(session: AsyncSession, page_id: uuid.UUID, now: datetime) -> list[Outage]:
    i, w = Incident, Website
    rows = await rows_of(
        session,
        select(i.id, w.name, i.started_at, i.resolved_at)
        .join(w, w.id == i.website_id)
        .where(
            i.website_id.in_(_monitors_of(page_id)),
            or_(i.resolved_at.is_(None), i.resolved_at >= now - HISTORY),
        )
        .order_by(i.started_at.desc(), i.id)
        .limit(MAX_OUTAGES),
    )
    return [Outage(r.id, r.name or "Unnamed monitor", r.started_at, r.resolved_at) for r in rows]


class PastBars:
    """The settled days of each page's bars, kept for the UTC day.

    A day that is over does not change: its incidents, pauses and rollups are written by
    then (its incidents' parts before midnight included, open or not). So the bars are read
    whole once a day per page (one statement), and each later rendering reads only the days
    not settled yet, today's (one statement over a day of rollups). A day counts as settled
    SETTLE after it ends, for the checks and incidents written a little late."""

    SETTLE = timedelta(minutes=15)
    MAX_PAGES = 1_000

    def __init__(self) -> None:
        # page id -> (first day, first unsettled day, each monitor's settled days)
        self._kept: dict[uuid.UUID, tuple[datetime, datetime, dict[uuid.UUID, Bar]]] = {}

    def _unsettled_from(self, now: datetime) -> datetime:
        today = floor_day(now)
        return today - DAY if now - today < self.SETTLE else today

    async def bars(
        self, session: AsyncSession, page_id: uuid.UUID, now: datetime
    ) -> dict[uuid.UUID, Bar]:
        """The page's monitors' bars of BAR_DAYS days ending today."""
        first_day = floor_day(now) - (BAR_DAYS - 1) * DAY
        unsettled = self._unsettled_from(now)
        settled_days = (unsettled - first_day) // DAY
        kept = self._kept.get(page_id)
        if kept is None or kept[:2] != (first_day, unsettled):
            whole = await daily_bars(session, _monitors_of(page_id), BAR_DAYS, now)
            self._keep(page_id, first_day, unsettled, whole, settled_days)
            return whole
        settled = kept[2]
        ids = [
            i for (i,) in (await session.execute(_monitors_of(page_id))).all() if i not in settled
        ]
        if ids:  # monitors added to the page since: their whole bars
            whole = await daily_bars(
                session, select(Website.id).where(Website.id.in_(ids)), BAR_DAYS, now
            )
            settled.update((i, bar.head(settled_days)) for i, bar in whole.items())
        live = await daily_bars(session, _monitors_of(page_id), BAR_DAYS - settled_days, now)
        return {i: settled[i].then(bar) for i, bar in live.items() if i in settled}

    def _keep(
        self,
        page_id: uuid.UUID,
        first_day: datetime,
        unsettled: datetime,
        whole: dict[uuid.UUID, Bar],
        settled_days: int,
    ) -> None:
        if page_id not in self._kept and len(self._kept) >= self.MAX_PAGES:
            del self._kept[next(iter(self._kept))]
        settled = {i: bar.head(settled_days) for i, bar in whole.items()}
        self._kept[page_id] = (first_day, unsettled, settled)


async def load_page(
    sessions: async_sessionmaker[AsyncSession],
    state: PageState,
    past_bars: PastBars,
    now: datetime | None = None,
) -> PageData | None:
    """Everything the public page of ``state`` shows, as of ``now``; None when the page has
    gone (or stopped being public) since ``state`` was read."""
    now = now or datetime.now(UTC)
    page_id = state.page_id

    async def page_and_incidents(session: AsyncSession) -> Any:
        page = await session.get(StatusPage, page_id)
        if page is None or not page.is_public:
            return None
        return (
            page,
            await _monitor_rows(session, page_id),
            await _posted_incidents(session, page_id, now),
            await _outages(session, page_id, now),
        )

    async def bars(session: AsyncSession) -> dict[uuid.UUID, Bar]:
        return await past_bars.bars(session, page_id, now)

    async def uptime(session: AsyncSession) -> dict[uuid.UUID, list[Uptime]]:
        return await _uptime(session, page_id, now)

    found, uptime_of, bars_of = await _each_in_a_session(sessions, page_and_incidents, uptime, bars)
    if found is None:
        return None
    page, rows, incidents, outages = found
    return PageData(
        id=page.id,
        slug=page.slug,
        title=page.title,
        description=page.description,
        version=page.version,
        version_changed_at=page.version_changed_at,
        created_at=page.created_at,
        updated_at=page.updated_at,
        now=now,
        stale=state.is_stale(now),
        groups=_grouped(_monitor_views(rows, uptime_of, bars_of)),
        incidents=incidents,
        outages=outages,
    )
