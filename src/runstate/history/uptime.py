"""Time-weighted uptime: what share of the time a monitor was watched it was up.

Definitions (all times UTC; every figure of a request comes from one SQL statement):

- A window ends now. `24h` is the last 24 UTC hours, the current one included:
  [floor_hour(now) - 23 h, now). `7d`, `30d`, `90d` and `365d` are the last N UTC days,
  today included: [today 00:00 - (N - 1) days, now). A day of the daily history is
  [00:00, 24:00) of that UTC day, cut at now for today.
- Eligible time: the period clipped to [time_added, now), minus the monitor's paused periods
  (website_pauses; an open pause runs to now). paused_seconds is the paused part of the
  clipped period, so until - max(since, time_added) = paused + eligible.
- downtime_seconds: the monitor's incidents (an active one runs to now) intersected with the
  eligible time. An incident is confirmed downtime, whatever the checks inside it said.
- The rollups whose bucket starts in the period say how much of it had data: up_seconds and
  down_seconds (the time the bucket's UP and DOWN checks stand for). Regions' rollups add
  up: the monitoring workers of every region share one consumer group, so each check of a
  monitor is made by one region or another, and together they cover the period. (Should
  regions ever each check every monitor, the sum overstates the coverage, never the
  downtime: no_data is floored at 0.)
  no_data_seconds = max(0, eligible - downtime - up - max(0, down - downtime)): DOWN checks
  outside incidents (failures not confirmed) count as data, not as downtime.
- uptime_percent = 100 * (1 - downtime / (eligible - no_data)); null when eligible - no_data
  is under a second. Time without data is never counted as up: a period with no data at all
  has no uptime, not 100 %.
- incidents: how many incidents overlap the period [since, until); checks: the rollups'
  checks summed over the period.

Pauses of one monitor never overlap each other, nor do its incidents (one open at a time,
each closed before the next opens); the sums below rely on it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    CTE,
    Boolean,
    ColumnElement,
    Float,
    Integer,
    Select,
    String,
    Uuid,
    and_,
    bindparam,
    case,
    false,
    func,
    literal,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.sql.selectable import Subquery

from runstate.history.latency import LATENCY_COLUMNS, LATENCY_FIELDS, Latency, latency_from
from runstate.history.sql import (
    epoch_seconds,
    floor_int,
    greatest,
    least,
    overlap,
    rows_of,
    seconds,
)
from runstate.history.windows import DAY, WINDOW_NAMES, Window, epoch, floor_day, window
from runstate.storage.tables import (
    DailyRollup,
    HourlyRollup,
    Incident,
    Region,
    UtcDateTime,
    Website,
    WebsitePause,
)

# An eligible time with data shorter than this is none (float rounding on SQLite's julianday).
MIN_MEASURED_SECONDS = 0.5


@dataclass(frozen=True)
class Bound:
    """A moment given only when a prepared statement runs (see daily_history): two bound
    parameters, ``name`` (the time) and ``name_s`` (its epoch seconds)."""

    name: str


# A moment of a statement: known when it is built, or bound when it runs.
Moment = datetime | Bound


def _at(moment: Moment) -> Any:
    """``moment`` as a time, to compare with time columns."""
    if isinstance(moment, Bound):
        return bindparam(moment.name, type_=UtcDateTime())
    return moment


def _s(moment: Moment) -> ColumnElement[float]:
    """``moment`` as epoch seconds."""
    if isinstance(moment, Bound):
        return bindparam(f"{moment.name}_s", type_=Float())
    return seconds(epoch(moment))


def bound_values(**moments: datetime) -> dict[str, Any]:
    """The parameters of the Bound moments called by these names."""
    values: dict[str, Any] = {}
    for name, moment in moments.items():
        values[name], values[f"{name}_s"] = moment, epoch(moment)
    return values


@dataclass(frozen=True)
class BoundWindow:
    """The window ``name`` with its moments bound when the statement runs, so that the
    statement can be built once (values from :func:`bound_window_values`)."""

    name: str

    @property
    def hourly(self) -> bool:
        return self.name == "24h"

    @property
    def since(self) -> Bound:
        return Bound(f"since_{self.name}")

    @property
    def until(self) -> Bound:
        return Bound("now")


AnyWindow = Window | BoundWindow

# The moments of a statement of BoundWindows besides each window's start: where its
# periods start (lo), where each table's start, and today's day (running totals).
_LO, _TODAY = Bound("lo"), Bound("today")


def _lo_of(hourly: bool) -> Bound:
    return Bound("lo_hourly" if hourly else "lo_daily")


def bound_window_values(names: Sequence[str], now: datetime) -> dict[str, Any]:
    """The parameters of a statement of the BoundWindows ``names``, ending at ``now``."""
    spans = [window(name, now) for name in names]
    moments = {"now": now, _LO.name: min(w.since for w in spans), _TODAY.name: floor_day(now)}
    for span in spans:
        moments[BoundWindow(span.name).since.name] = span.since
    for hourly in (True, False):
        starts = [w.since for w in spans if w.hourly == hourly]
        if starts:
            moments[_lo_of(hourly).name] = min(starts)
    return bound_values(**moments)


@dataclass(frozen=True)
class Figures:
    """What one monitor's period adds up to (see the module's definitions)."""

    uptime_percent: float | None
    eligible_seconds: int
    downtime_seconds: int
    no_data_seconds: int
    paused_seconds: int
    incidents: int
    checks: int


# --- the statement ---------------------------------------------------------------------------


def _monitors(query: Select[*tuple[Any, ...]]) -> CTE:
    """The monitors a statement covers: ``query`` selects websites rows; id and added_s kept."""
    return query.add_columns(epoch_seconds(Website.time_added).label("added_s")).cte("monitors")


def _window_periods(windows: Sequence[AnyWindow]) -> CTE:
    rows = [
        select(
            literal(w.name, String()).label("key"),
            _s(w.since).label("since_s"),
            _s(w.until).label("until_s"),
            literal(w.hourly, Boolean()).label("hourly"),
        )
        for w in windows
    ]
    return (rows[0] if len(rows) == 1 else union_all(*rows)).cte("periods")


def _day_periods(first_day: Moment, days: int | ColumnElement[int], now: Moment) -> CTE:
    """One period per UTC day from ``first_day``: key n (0, 1, …) for first_day + n days."""
    numbers = select(literal(0, Integer()).label("n")).cte("day_numbers", recursive=True)
    numbers = numbers.union_all(select(numbers.c.n + 1).where(numbers.c.n < days - 1))
    since_s = _s(first_day) + numbers.c.n * 86400.0
    return select(
        numbers.c.n.label("key"),
        since_s.label("since_s"),
        least(since_s + 86400.0, _s(now)).label("until_s"),
        false().label("hourly"),
    ).cte("periods")


def _start(monitors: CTE, periods: CTE) -> ColumnElement[float]:
    """Where a monitor's period starts counting: its start, or when the monitor was added."""
    return greatest(periods.c.since_s, monitors.c.added_s)


def _paused(monitors: CTE, periods: CTE, lo: Moment, now: Moment) -> Subquery:
    p = WebsitePause
    p_end = func.coalesce(epoch_seconds(p.resumed_at), _s(now))
    shared = overlap(
        [epoch_seconds(p.paused_at), _start(monitors, periods)], [p_end, periods.c.until_s]
    )
    return (
        select(monitors.c.id, periods.c.key, func.sum(shared).label("paused_s"))
        .join(p, p.website_id == monitors.c.id)
        .join(periods, true())
        .where(p.paused_at < _at(now), or_(p.resumed_at.is_(None), p.resumed_at > _at(lo)))
        .group_by(monitors.c.id, periods.c.key)
        .subquery("paused")
    )


def _incident_span(now: Moment) -> tuple[ColumnElement[float], ColumnElement[float]]:
    i = Incident
    return epoch_seconds(i.started_at), func.coalesce(epoch_seconds(i.resolved_at), _s(now))


def _incidents(monitors: CTE, periods: CTE, lo: Moment, now: Moment) -> Subquery:
    i = Incident
    i_start, i_end = _incident_span(now)
    down = overlap([i_start, _start(monitors, periods)], [i_end, periods.c.until_s])
    meets = and_(i_start < periods.c.until_s, i_end > periods.c.since_s)
    return (
        select(
            monitors.c.id,
            periods.c.key,
            func.sum(down).label("incident_s"),
            func.sum(case((meets, 1), else_=0)).label("incidents"),
        )
        .join(i, i.website_id == monitors.c.id)
        .join(periods, true())
        .where(i.started_at < _at(now), or_(i.resolved_at.is_(None), i.resolved_at > _at(lo)))
        .group_by(monitors.c.id, periods.c.key)
        .subquery("incidents")
    )


def _incidents_paused(monitors: CTE, periods: CTE, lo: Moment, now: Moment) -> Subquery:
    """The part of the incidents that fell in paused time (not eligible, so not downtime)."""
    i, p = Incident, WebsitePause
    i_start, i_end = _incident_span(now)
    p_end = func.coalesce(epoch_seconds(p.resumed_at), _s(now))
    shared = overlap(
        [i_start, epoch_seconds(p.paused_at), _start(monitors, periods)],
        [i_end, p_end, periods.c.until_s],
    )
    return (
        select(monitors.c.id, periods.c.key, func.sum(shared).label("paused_incident_s"))
        .join(i, i.website_id == monitors.c.id)
        .join(p, p.website_id == monitors.c.id)
        .join(periods, true())
        .where(i.started_at < _at(now), or_(i.resolved_at.is_(None), i.resolved_at > _at(lo)))
        .where(p.paused_at < _at(now), or_(p.resumed_at.is_(None), p.resumed_at > _at(lo)))
        .group_by(monitors.c.id, periods.c.key)
        .subquery("incidents_paused")
    )


@dataclass(frozen=True)
class _Source:
    """Where a statement's rollups come from: ``table``'s buckets starting in [lo, hi), each
    in the period whose [since_s, until_s) holds its start, or all in the period ``key``."""

    table: type[HourlyRollup] | type[DailyRollup]
    lo: Moment
    hi: Moment
    key: str | None = None
    # The monitors the rollups are kept to: one id, a subquery of their ids, or None for every
    # monitor. A subquery of websites rather than the monitors CTE, which PostgreSQL would not
    # let parallel workers read: it may then sum the rollups in parallel.
    monitor_ids: uuid.UUID | ColumnElement[uuid.UUID] | Select[Any] | None = None
    # Set for the periods of _day_periods from this day on (their key is the day's number).
    first_day: Moment | None = None
    # Sum one period's daily rollups from their running totals (two rows per monitor and
    # region, however many days) rather than row by row; needs LATERAL (PostgreSQL).
    from_running_totals: bool = False


def _region_sums_from_running_totals(source: _Source, monitors: CTE) -> Select[Any]:
    """Each region's daily rollups of each monitor over the one period ``source.key``, from
    the running totals (see DailyRollup): the last row's totals after it, less the first
    row's before it, whatever the period's length.

    The first and last rows are nearly always those of the period's first day and of its
    last (today): those are joined by day, a set-based read of two rows per monitor. Only
    where one is missing (a monitor added since, no check yet today) is the nearest row
    looked up, one probe of the primary key each: COALESCE evaluates that lookup only then.
    """
    # The window's first day, and today: a bound window's are parameters.
    lo = _at(source.lo)
    today = _at(_TODAY) if isinstance(source.hi, Bound) else floor_day(source.hi)
    d = DailyRollup
    region = select(Region.id).subquery("region")
    first_day, last_day = aliased(DailyRollup), aliased(DailyRollup)

    def on_day(row: type[DailyRollup], day: Any) -> ColumnElement[bool]:
        return and_(
            row.website_id == monitors.c.id,
            row.region_id == region.c.id,
            row.bucket_start == day,
        )

    in_period = (
        d.website_id == monitors.c.id,
        d.region_id == region.c.id,
        d.bucket_start >= lo,
        d.bucket_start < _at(source.hi),
    )

    def first(column: str) -> ColumnElement[Any]:
        nearest = select(d.__table__.c[f"prior_{column}"]).where(*in_period)
        return func.coalesce(
            getattr(first_day, f"prior_{column}"),
            nearest.order_by(d.bucket_start).limit(1).scalar_subquery(),
        )

    def last(column: str) -> ColumnElement[Any]:
        totals = d.__table__.c[f"prior_{column}"] + d.__table__.c[column]
        nearest = select(totals).where(*in_period)
        return func.coalesce(
            getattr(last_day, f"prior_{column}") + getattr(last_day, column),
            nearest.order_by(d.bucket_start.desc()).limit(1).scalar_subquery(),
        )

    key: ColumnElement[Any] = literal(source.key, String()).label("key")
    sums = select(
        monitors.c.id.label("website_id"),
        key,
        region.c.id.label("region_id"),
        *((last(c) - first(c)).label(label) for c, label in _RUNNING),
    )
    return (
        sums.select_from(monitors)
        .join(region, true())
        .outerjoin(first_day, on_day(first_day, lo))
        .outerjoin(last_day, on_day(last_day, today))
        .where(first("checks").is_not(None))  # no row in the period: nothing to sum
    )


# The totalled columns, and what the sums are called.
_RUNNING = (
    ("checks", "checks"),
    ("up_checks", "up_checks"),
    ("up_seconds", "up_s"),
    ("down_seconds", "down_s"),
)


def _region_sums(source: _Source, monitors: CTE, periods: CTE, latency: bool) -> Select[Any]:
    """Each region's rollups of each (monitor, period), summed."""
    if source.from_running_totals and source.key is not None and not latency:
        return _region_sums_from_running_totals(source, monitors)
    r = source.table.__table__.c
    columns: list[ColumnElement[Any]] = [
        func.sum(r.checks).label("checks"),
        func.sum(r.up_checks).label("up_checks"),
        func.sum(r.up_seconds).label("up_s"),
        func.sum(r.down_seconds).label("down_s"),
    ]
    if latency:
        columns += [
            func.sum(r.timed_checks).label("timed_checks"),
            func.sum(r.response_time_sum_ms).label("rt_sum"),
            func.min(r.response_time_min_ms).label("rt_min"),
            func.max(r.response_time_max_ms).label("rt_max"),
            *(func.sum(r[column]).label(column) for column in LATENCY_COLUMNS),
        ]
    in_range = [r.bucket_start >= _at(source.lo), r.bucket_start < _at(source.hi)]
    if isinstance(source.monitor_ids, Select):
        in_range.append(r.website_id.in_(source.monitor_ids))
    elif source.monitor_ids is not None:
        in_range.append(r.website_id == source.monitor_ids)
    if source.key is not None:  # one period: no need to find each bucket's
        key: ColumnElement[Any] = literal(source.key, String()).label("key")
        return (
            select(r.website_id, key, r.region_id, *columns)
            .where(*in_range)
            .group_by(r.website_id, r.region_id)
        )
    start = epoch_seconds(r.bucket_start)
    if source.first_day is not None:  # day periods: a bucket's key is its day's number
        # Half a day in, so that float seconds on SQLite never fall just short of a day.
        day = floor_int((start - _s(source.first_day) + 43200.0) / 86400.0)
        return (
            select(r.website_id, day.label("key"), r.region_id, *columns)
            .where(*in_range)
            .group_by(r.website_id, day, r.region_id)
        )
    # A bucket's start is exact; its float seconds on SQLite may not be: a second's margin.
    in_period = and_(start > periods.c.since_s - 1.0, start < periods.c.until_s - 1.0)
    return (
        select(r.website_id, periods.c.key, r.region_id, *columns)
        .join(periods, in_period)
        .where(*in_range, periods.c.hourly == (source.table is HourlyRollup))
        .group_by(r.website_id, periods.c.key, r.region_id)
    )


def _rollups(
    sources: Sequence[_Source], monitors: CTE, periods: CTE, latency: bool = False
) -> Subquery:
    """The rollups of each (monitor, period), every region's added up (see the module's
    definitions)."""
    parts = [_region_sums(source, monitors, periods, latency) for source in sources]
    b = (parts[0] if len(parts) == 1 else union_all(*parts)).subquery("region_sums")
    columns: list[ColumnElement[Any]] = [
        func.sum(b.c.checks).label("checks"),
        func.sum(b.c.up_checks).label("up_checks"),
        func.sum(b.c.up_s).label("up_s"),
        func.sum(b.c.down_s).label("down_s"),
    ]
    if latency:
        columns += [
            func.sum(b.c.timed_checks).label("timed_checks"),
            func.sum(b.c.rt_sum).label("rt_sum"),
            func.min(b.c.rt_min).label("rt_min"),
            func.max(b.c.rt_max).label("rt_max"),
            *(func.sum(b.c[column]).label(column) for column in LATENCY_COLUMNS),
        ]
    return (
        select(b.c.website_id, b.c.key, *columns)
        .group_by(b.c.website_id, b.c.key)
        .subquery("rollups")
    )


_ROLLUP_FIGURES = {"website_id", "key", "checks", "up_checks", "up_s", "down_s"}


def _figures(
    monitors: CTE, periods: CTE, rollups: Subquery, lo: Moment, now: Moment
) -> Select[Any]:
    """One row per (monitor, period): the figures, the monitor's columns and the latency.

    Each figure is computed once, in a layer of its own, from the layer before: written as
    one expression, downtime would be repeated inside no_data and no_data inside the uptime,
    and PostgreSQL would evaluate each copy, for every monitor (a third of the statement's
    time over 10,000 monitors). OFFSET 0 keeps the database from merging the layers back."""
    paused = _paused(monitors, periods, lo, now)
    incidents = _incidents(monitors, periods, lo, now)
    incidents_paused = _incidents_paused(monitors, periods, lo, now)
    zero = seconds(0)
    paused_s = func.coalesce(paused.c.paused_s, zero)
    span = greatest(zero, periods.c.until_s - _start(monitors, periods))
    incident_s = func.coalesce(incidents.c.incident_s, zero) - func.coalesce(
        incidents_paused.c.paused_incident_s, zero
    )

    def on(sub: Subquery) -> ColumnElement[bool]:
        return and_(sub.c[monitors.c.id.name] == monitors.c.id, sub.c.key == periods.c.key)

    rollup_on = and_(rollups.c.website_id == monitors.c.id, rollups.c.key == periods.c.key)
    base = (
        select(
            monitors,
            periods.c.key.label("period"),
            greatest(zero, span - paused_s).label("eligible_s"),
            incident_s.label("incident_s"),
            func.coalesce(rollups.c.up_s, zero).label("up_s"),
            func.coalesce(rollups.c.down_s, zero).label("down_s"),
            paused_s.label("paused_s"),
            func.coalesce(incidents.c.incidents, 0).label("incident_count"),
            func.coalesce(rollups.c.checks, 0).label("check_count"),
            func.coalesce(rollups.c.up_checks, 0).label("up_check_count"),
            *(c for c in rollups.c if c.name not in _ROLLUP_FIGURES),
        )
        .select_from(monitors)
        .join(periods, true())
        .outerjoin(paused, on(paused))
        .outerjoin(incidents, on(incidents))
        .outerjoin(incidents_paused, on(incidents_paused))
        .outerjoin(rollups, rollup_on)
        .offset(0)
        .subquery("base")
    )
    downtime = least(base.c.eligible_s, greatest(zero, base.c.incident_s))
    timed = select(base, downtime.label("downtime_s")).offset(0).subquery("timed")
    no_data = greatest(
        zero,
        timed.c.eligible_s
        - timed.c.downtime_s
        - timed.c.up_s
        - greatest(zero, timed.c.down_s - timed.c.downtime_s),
    )
    figured = select(timed, no_data.label("no_data_s")).offset(0).subquery("figured")
    measured = figured.c.eligible_s - figured.c.no_data_s
    uptime = case(
        (measured >= MIN_MEASURED_SECONDS, 100.0 * (1.0 - figured.c.downtime_s / measured))
    )
    hidden = {"incident_s", "up_s", "down_s"}
    return select(*(c for c in figured.c if c.name not in hidden), uptime.label("uptime_percent"))


_FIGURE_COLUMNS = (
    "uptime_percent",
    "eligible_s",
    "downtime_s",
    "no_data_s",
    "paused_s",
    "incident_count",
    "check_count",
)


def _as_shown(
    uptime: float | None,
    eligible: float,
    downtime: float,
    no_data: float,
    paused: float,
    incidents: int,
    checks: int,
) -> dict[str, Any]:
    """The fields of Figures from a row's figure columns, rounded as the API shows them."""
    return {
        "uptime_percent": None if uptime is None else round(uptime, 4),
        "eligible_seconds": round(eligible),
        "downtime_seconds": round(downtime),
        "no_data_seconds": round(no_data),
        "paused_seconds": round(paused),
        "incidents": int(incidents),
        "checks": int(checks),
    }


def figures_of(row: Any) -> Figures:
    return Figures(**_as_shown(*(getattr(row, name) for name in _FIGURE_COLUMNS)))


def figure_dicts(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """The figures of each of ``rows`` (Rows of a statement of this module) as the fields of
    Figures. Read by position: over thousands of monitors, looking each column up by name
    costs more than the query."""
    if not rows:
        return []
    at = {name: index for index, name in enumerate(rows[0]._fields)}
    positions = [at[name] for name in _FIGURE_COLUMNS]
    return [_as_shown(*(row[i] for i in positions)) for row in rows]


def windows_statement(
    monitors_query: Select[*tuple[Any, ...]],
    windows: Sequence[Window] | Sequence[BoundWindow],
    *,
    every_monitor: bool = False,
    website_id: uuid.UUID | None = None,
    running_totals: bool = False,
) -> Select[Any]:
    """The figures of every monitor ``monitors_query`` selects (websites rows, with any
    columns, ORDER BY and LIMIT it likes) over each of ``windows`` (all ending at one now):
    one row per (monitor, window), ordered as the monitors are. ``every_monitor`` says that
    the query selects all monitors (the rollups are then summed without a filter);
    ``website_id`` that it selects that one. ``running_totals`` sums each window of days
    from the daily rollups' running totals (PostgreSQL), which reads two rows per monitor
    and window instead of one per day. With BoundWindows, the statement takes
    its moments as parameters (bound_window_values): it can be built once and kept."""
    bound = isinstance(windows[0], BoundWindow)
    now: Moment = windows[0].until
    lo: Moment = _LO if bound else min(w.since for w in windows if isinstance(w, Window))
    monitors = _monitors(monitors_query)
    periods = _window_periods(windows)
    monitor_ids: uuid.UUID | Select[Any] | None = website_id
    if website_id is None and not every_monitor:
        monitor_ids = monitors_query.with_only_columns(Website.id)
    sources = []
    for table, hourly in ((HourlyRollup, True), (DailyRollup, False)):
        chosen = [w for w in windows if w.hourly == hourly]
        if not chosen:
            continue
        if running_totals and table is DailyRollup:
            # Each window of days from its own two rows per monitor, however many windows.
            sources += [
                _Source(table, w.since, now, w.name, monitor_ids, None, True) for w in chosen
            ]
            continue
        key = chosen[0].name if len(chosen) == 1 else None
        lo_of_table: Moment = (
            _lo_of(hourly) if bound else min(w.since for w in chosen if isinstance(w, Window))
        )
        sources.append(_Source(table, lo_of_table, now, key, monitor_ids))
    rollups = _rollups(sources, monitors, periods)
    statement = _figures(monitors, periods, rollups, lo, now)
    return statement.order_by(*_monitor_order(statement))


def _monitor_order(statement: Select[Any]) -> list[ColumnElement[Any]]:
    columns = statement.selected_columns
    return [columns.time_added, columns.id] if "time_added" in columns else []


async def website_uptime(
    session: AsyncSession, website_id: uuid.UUID, now: datetime
) -> list[tuple[Window, Figures]]:
    """One monitor's figures over every window of WINDOW_NAMES, in that order."""
    windows = [window(name, now) for name in WINDOW_NAMES]
    statement = windows_statement(
        select(Website.id).where(Website.id == website_id), windows, website_id=website_id
    )
    by_name = {row.period: figures_of(row) for row in await rows_of(session, statement)}
    return [(w, by_name[w.name]) for w in windows if w.name in by_name]


@dataclass(frozen=True)
class Day:
    date: date
    figures: Figures
    latency: Latency


async def daily_history(
    session: AsyncSession, website_id: uuid.UUID, days: int, now: datetime
) -> list[Day]:
    """One monitor's last ``days`` UTC days (today included), oldest first, each day listed
    whether it has rollups or not."""
    first_day = floor_day(now) - (days - 1) * DAY
    values = {"website_id": website_id, "days": days, **bound_values(first_day=first_day, now=now)}
    rows = await rows_of(session, _daily_statement(), values)
    if not rows:
        return []
    # Read by position: 365 rows of 30 columns, each looked up by name, cost more than the
    # statement itself.
    at = {name: index for index, name in enumerate(rows[0]._fields)}
    period, figures_at = at["period"], [at[name] for name in _FIGURE_COLUMNS]
    latency_at = [at[name] for name in LATENCY_FIELDS]
    return [
        Day(
            (first_day + row[period] * DAY).date(),
            Figures(**_as_shown(*(row[i] for i in figures_at))),
            latency_from([row[i] for i in latency_at]),
        )
        for row in rows
    ]


@lru_cache(maxsize=1)
def _daily_statement() -> Select[Any]:
    """daily_history's statement, built once: every value it depends on is a parameter
    (website_id, days, and the Bound first_day and now). Building it costs more than
    running it."""
    website_id = bindparam("website_id", type_=Uuid())
    first_day, now = Bound("first_day"), Bound("now")
    monitors = _monitors(select(Website.id).where(Website.id == website_id))
    periods = _day_periods(first_day, bindparam("days", type_=Integer()), now)
    source = _Source(DailyRollup, first_day, now, monitor_ids=website_id, first_day=first_day)
    rollups = _rollups([source], monitors, periods, latency=True)
    return _figures(monitors, periods, rollups, first_day, now).order_by("period")
