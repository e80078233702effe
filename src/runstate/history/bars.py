"""The daily bar of many monitors at once: each monitor's figures for each of its last N UTC
days (today included), read in one statement.

The figures are those of :mod:`runstate.history.uptime`'s daily history, by its definitions:
a day is clipped to [time_added, now); paused time is not eligible; downtime is the
incidents' time within the eligible time; the daily rollups say how much of the day had
data; time without data is never counted as up.

Most days of most monitors are plainly up: a whole past day, watched from its start, that
no incident or pause touches, and whose checks stand for all of it but under
PARTIAL_DATA_SHARE. The statement marks those in a bit mask per monitor and returns the
rows of every other day (with the incidents and pauses that meet the period), whose figures
are then worked out here. Over 500 monitors by 90 days that is a few thousand rows to read
and a loop that only does interval arithmetic where there is some to do, rather than 45,000
rows of it.

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
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    Integer,
    Select,
    and_,
    case,
    cast,
    func,
    literal,
    null,
    or_,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.selectable import CTE, Subquery

from runstate.history.sql import epoch_seconds, floor_int, greatest, rows_of, seconds
from runstate.history.uptime import MIN_MEASURED_SECONDS
from runstate.history.windows import DAY, epoch, floor_day
from runstate.storage.tables import DailyRollup, Incident, Website, WebsitePause

MAJOR_OUTAGE_BELOW_PERCENT = 99.0
# Any confirmed downtime makes a bad day, from the first moment of an outage (a page is
# rendered as its monitor goes down); this only keeps float noise (SQLite) from counting.
MIN_DOWNTIME_SECONDS = 0.01
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
    uptime_percent: float | None  # unrounded: shown rounded down, never up to 100 %
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
    if downtime >= MIN_DOWNTIME_SECONDS:
        return DayKind.DOWN if uptime < MAJOR_OUTAGE_BELOW_PERCENT else DayKind.DEGRADED
    if no_data >= PARTIAL_DATA_MIN_SECONDS and no_data >= PARTIAL_DATA_SHARE * eligible:
        return DayKind.PARTIAL_DATA
    return DayKind.UP


# --- the statement ---------------------------------------------------------------------------

# What each row of the statement is: a monitor, one day's rollups, an incident or a pause.
MONITOR, ROLLUP, INCIDENT, PAUSE = 0, 1, 2, 3
MASK_BITS = 60  # days per mask column (a BIGINT); two columns
MAX_DAYS = 2 * MASK_BITS
# A day whose checks stand for more than this has no data missing worth showing.
PLAINLY_UP_SECONDS = DAY_SECONDS * (1 - PARTIAL_DATA_SHARE)


def _bit(n: Any) -> Any:
    return cast(literal(1), BigInteger()).op("<<", return_type=BigInteger())(n)


def _day_number(moment_s: Any, first_s: Any) -> Any:
    """The number of the day (0 for the first) a moment falls in; not before the first.
    Half a day in for a day's own start, so that float seconds (SQLite) never fall short."""
    return floor_int(greatest(seconds(0), moment_s - first_s) / DAY_SECONDS)


def _touched_days(spans: CTE, first_s: Any, count: int) -> Subquery:
    """(website_id, n): the days an incident or a pause of the monitor meets."""
    numbers = select(literal(0, Integer()).label("n")).cte("day_numbers", recursive=True)
    numbers = numbers.union_all(select(numbers.c.n + 1).where(numbers.c.n < count - 1))
    first = _day_number(spans.c.start_s, first_s)
    # Less a second: a span that ends at midnight does not meet the day after.
    last = _day_number(spans.c.end_s - 1.0, first_s)
    return (
        select(spans.c.website_id, numbers.c.n)
        .join(numbers, and_(numbers.c.n >= first, numbers.c.n <= last))
        .distinct()
        .subquery("touched")
    )


def _flagged(days: CTE, spans: CTE, first_s: Any, today: datetime, count: int) -> CTE:
    """Each day with rollups, its number (n), and whether it is plainly up (plain = 1)."""
    w = Website
    touched = _touched_days(spans, first_s, count)
    n = _day_number(days.c.start_s + DAY_SECONDS / 2, first_s)
    plainly_up = and_(
        days.c.bucket_start < today,
        epoch_seconds(w.time_added) <= days.c.start_s,
        days.c.up_s + days.c.down_s > PLAINLY_UP_SECONDS,
        touched.c.n.is_(None),
    )
    return (
        select(
            days.c.website_id,
            days.c.start_s,
            days.c.up_s,
            days.c.down_s,
            case((plainly_up, 1), else_=0).label("plain"),
            n.label("n"),
        )
        .join(w, w.id == days.c.website_id)
        .outerjoin(touched, and_(touched.c.website_id == days.c.website_id, touched.c.n == n))
        .cte("flagged")
    )


def bars_statement(monitor_ids: Select[Any], first_day: datetime, now: datetime) -> Select[Any]:
    """Rows (part, website_id, start_s, end_s, up_s, down_s, mask_lo, mask_hi) of the
    monitors that ``monitor_ids`` selects, over the days from ``first_day`` to ``now``:

    - MONITOR: start_s when it was added; mask_lo and mask_hi the days (bits 0-59 and
      60-119 from first_day) that are plainly up (see the module's docstring);
    - ROLLUP: every other day with rollups (start_s the day), summed over regions;
    - INCIDENT and PAUSE: those that meet the period (end_s: their end, now while open).
    """
    now_s, first_s = seconds(epoch(now)), seconds(epoch(first_day))
    today = floor_day(now)
    none, no_mask = null().cast(Float()), null().cast(BigInteger())
    d, i, p, w = DailyRollup, Incident, WebsitePause, Website

    def part(n: int) -> Any:
        return literal(n, Integer()).label("part")

    days = (
        select(
            d.website_id,
            d.bucket_start,
            epoch_seconds(d.bucket_start).label("start_s"),
            func.sum(d.up_seconds).label("up_s"),
            func.sum(d.down_seconds).label("down_s"),
        )
        .where(d.website_id.in_(monitor_ids), d.bucket_start >= first_day, d.bucket_start < now)
        .group_by(d.website_id, d.bucket_start)
        .cte("days")
    )
    spans = union_all(
        select(
            part(INCIDENT),
            i.website_id,
            epoch_seconds(i.started_at).label("start_s"),
            func.coalesce(epoch_seconds(i.resolved_at), now_s).label("end_s"),
        ).where(
            i.website_id.in_(monitor_ids),
            i.started_at < now,
            or_(i.resolved_at.is_(None), i.resolved_at > first_day),
        ),
        select(
            part(PAUSE),
            p.website_id,
            epoch_seconds(p.paused_at),
            func.coalesce(epoch_seconds(p.resumed_at), now_s),
        ).where(
            p.website_id.in_(monitor_ids),
            p.paused_at < now,
            or_(p.resumed_at.is_(None), p.resumed_at > first_day),
        ),
    ).cte("spans")
    flagged = _flagged(days, spans, first_s, today, (now - first_day) // DAY + 1)
    f = flagged.c
    is_plain = f.plain == 1

    def mask(word: int) -> Any:
        in_word = and_(is_plain, f.n >= word * MASK_BITS, f.n < (word + 1) * MASK_BITS)
        bit = case((in_word, _bit(f.n - word * MASK_BITS)), else_=0)
        return cast(func.sum(bit), BigInteger())

    masks = (
        select(f.website_id, mask(0).label("lo"), mask(1).label("hi"))
        .group_by(f.website_id)
        .subquery("masks")
    )
    monitors = (
        select(
            part(MONITOR),
            w.id.label("website_id"),
            epoch_seconds(w.time_added).label("start_s"),
            none.label("end_s"),
            none.label("up_s"),
            none.label("down_s"),
            func.coalesce(masks.c.lo, 0).label("mask_lo"),
            func.coalesce(masks.c.hi, 0).label("mask_hi"),
        )
        .outerjoin(masks, masks.c.website_id == w.id)
        .where(w.id.in_(monitor_ids))
    )
    rollups = select(
        part(ROLLUP),
        f.website_id,
        f.start_s,
        none,
        f.up_s.cast(Float()),
        f.down_s.cast(Float()),
        no_mask,
        no_mask,
    ).where(~is_plain)
    intervals = select(
        spans.c.part, spans.c.website_id, spans.c.start_s, spans.c.end_s, none, none,
        no_mask, no_mask,
    )  # fmt: skip
    return select(union_all(monitors, rollups, intervals).subquery("parts"))


# --- the arithmetic --------------------------------------------------------------------------


Interval = tuple[float, float]


@dataclass
class _Monitor:
    added_s: float = 0.0
    plain: int = 0  # bit n: day n is plainly up
    rollups: dict[int, tuple[float, float]] = field(default_factory=dict)  # n: (up_s, down_s)
    incidents: list[Interval] = field(default_factory=list)
    pauses: list[Interval] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Bar:
    """One monitor's days, oldest first: each day's kind, and the figures of the days that
    are not plainly up (``details``, by the day's number)."""

    dates: Sequence[date]
    kinds: list[DayKind]
    details: dict[int, BarDay]

    def days(self) -> list[BarDay | None]:
        return [self.details.get(n) for n in range(len(self.kinds))]

    def head(self, count: int) -> Bar:
        """The first ``count`` days."""
        details = {n: day for n, day in self.details.items() if n < count}
        return Bar(self.dates[:count], self.kinds[:count], details)

    def then(self, later: Bar) -> Bar:
        """This bar followed by the days of ``later``."""
        offset = len(self.kinds)
        details = dict(self.details)
        details.update((offset + n, day) for n, day in later.details.items())
        return Bar([*self.dates, *later.dates], self.kinds + later.kinds, details)


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
    for part, website_id, start_s, end_s, up_s, down_s, mask_lo, mask_hi in rows:
        m = monitors[website_id]
        if part == MONITOR:
            m.added_s = start_s
            m.plain = int(mask_lo) | (int(mask_hi) << MASK_BITS)
        elif part == ROLLUP:
            m.rollups[days.index_of(start_s)] = (up_s or 0.0, down_s or 0.0)
        elif part == INCIDENT:
            m.incidents.append((start_s, end_s))
        else:
            m.pauses.append((start_s, end_s))
    return monitors


class _Spans:
    """A monitor's incidents and pauses spread over the days they meet."""

    def __init__(self, m: _Monitor, days: _Days) -> None:
        count = days.count
        self.paused, self.incident = [0.0] * count, [0.0] * count
        self.incident_paused, self.incidents = [0.0] * count, [0] * count
        for interval in m.pauses:
            days.spread(interval, m.added_s, self.paused)
        for start, end in m.incidents:
            days.spread((start, end), m.added_s, self.incident)
            for n in days.met_by(start, end):
                since, until = days.span(n)
                self.incidents[n] += start < until and end > since
        for interval in _intersections(m.incidents, m.pauses):
            days.spread(interval, m.added_s, self.incident_paused)


def _day(m: _Monitor, spans: _Spans, days: _Days, n: int) -> BarDay:
    """Day n's figures, by the definitions of runstate.history.uptime."""
    since, until = days.span(n)
    paused = spans.paused[n]
    eligible = max(0.0, max(0.0, until - max(since, m.added_s)) - paused)
    downtime = min(eligible, max(0.0, spans.incident[n] - spans.incident_paused[n]))
    up_s, down_s = m.rollups.get(n, (0.0, 0.0))
    no_data = max(0.0, eligible - downtime - up_s - max(0.0, down_s - downtime))
    measured = eligible - no_data
    uptime = 100.0 * (1.0 - downtime / measured) if measured >= MIN_MEASURED_SECONDS else None
    return BarDay(
        days.dates[n],
        day_kind(uptime, eligible, downtime, no_data),
        uptime,
        round(eligible),
        round(downtime),
        round(no_data),
        round(paused),
        spans.incidents[n],
    )


def _bar(m: _Monitor, days: _Days) -> Bar:
    count = days.count
    plain = format(m.plain, f"0{count}b")[::-1]  # character n: day n
    kinds = [DayKind.UP] * count
    details: dict[int, BarDay] = {}
    to_work_out = [n for n, bit in enumerate(plain[:count]) if bit == "0"]
    if to_work_out:
        spans = _Spans(m, days)
        for n in to_work_out:
            day = details[n] = _day(m, spans, days, n)
            kinds[n] = day.kind
    return Bar(days.dates, kinds, details)


async def daily_bars(
    session: AsyncSession, monitor_ids: Select[Any], days: int, now: datetime
) -> dict[uuid.UUID, Bar]:
    """The last ``days`` UTC days (oldest first, today last; at most MAX_DAYS) of every
    monitor that ``monitor_ids`` (a query of website ids) selects, in one statement."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"a bar has 1 to {MAX_DAYS} days, not {days}")
    first_day = floor_day(now) - (days - 1) * DAY
    the_days = _Days(first_day, days, now)
    rows = await rows_of(session, bars_statement(monitor_ids, first_day, now))
    return {key: _bar(m, the_days) for key, m in _read(rows, the_days).items()}
