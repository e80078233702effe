"""The rollups, updated in the same transaction as the checks they summarise.

Every check written adds itself to its monitor's hourly and daily rollup (one row per
monitor, region and bucket; `HourlyRollup`, `DailyRollup`). Only the rows actually inserted
are added: the checks' primary key turns a result written twice (a group write retried after
its commit was lost) into nothing, and the rollups with it. So the rollups always say what
the raw checks say, after a crash, a redelivery or a late result (whose time falls in an
older bucket, and updates that bucket).

A bucket's `up_seconds` and `down_seconds` are the time its UP and DOWN checks stand for
(each check its monitor's interval; any status but "up" is down), capped together at the
bucket's length: adding ``add_up`` and ``add_down`` to a bucket holding ``up`` and ``down``
gives ``new_up = min(up + add_up, L - down)`` and ``new_down = min(down + add_down, L -
new_up)`` (:func:`capped_seconds`).

Two ways in, one upsert: on PostgreSQL the rows a batch inserted (`INSERT … RETURNING` in a
data-modifying CTE) are grouped by bucket in SQL (:func:`rollup_ctes`); elsewhere they are
grouped here (:class:`RollupDelta`) and upserted bucket by bucket (:func:`add_to_rollups`).
Both end in the same ``ON CONFLICT … DO UPDATE`` (:func:`_on_conflict`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Uuid, bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from runstate.history.latency import LATENCY_BOUNDS_MS, LATENCY_COLUMNS, bucket_index
from runstate.storage.tables import UtcDateTime

HOUR_SECONDS = 3600
DAY_SECONDS = 86400


@dataclass(frozen=True, slots=True)
class Granularity:
    table: str
    seconds: int  # the bucket's length
    postgres_field: str  # date_trunc's field


HOURLY = Granularity("check_rollups_hourly", HOUR_SECONDS, "hour")
DAILY = Granularity("check_rollups_daily", DAY_SECONDS, "day")
GRANULARITIES = (HOURLY, DAILY)

_KEY = ("website_id", "bucket_start", "region_id")
_SUMMED = ("checks", "up_checks", "timed_checks", "response_time_sum_ms", *LATENCY_COLUMNS)
ROLLUP_COLUMNS = (
    *_KEY,
    "checks",
    "up_checks",
    "up_seconds",
    "down_seconds",
    "timed_checks",
    "response_time_sum_ms",
    "response_time_min_ms",
    "response_time_max_ms",
    *LATENCY_COLUMNS,
)


def bucket_start(moment: datetime, seconds: int) -> datetime:
    """The start (UTC) of the hour (``seconds`` 3600) or UTC day (86400) holding ``moment``."""
    utc = moment.astimezone(UTC)
    if seconds == DAY_SECONDS:
        return utc.replace(hour=0, minute=0, second=0, microsecond=0)
    if seconds == HOUR_SECONDS:
        return utc.replace(minute=0, second=0, microsecond=0)
    raise ValueError(f"no rollup of {seconds} s")


def capped_seconds(up: int, down: int, add_up: int, add_down: int, length: int) -> tuple[int, int]:
    """A bucket's (up_seconds, down_seconds) once ``add_up`` and ``add_down`` are added to
    ``up`` and ``down``, capped so that together they never exceed the bucket's ``length``
    (up first: what an UP check stands for is taken before what a DOWN one does)."""
    new_up = min(up + add_up, length - down)
    return new_up, min(down + add_down, length - new_up)


@dataclass(frozen=True, slots=True)
class InsertedCheck:
    """What a rollup needs of a check row that was inserted."""

    website_id: uuid.UUID
    created_at: datetime
    region_id: int
    status: str
    response_time_ms: int | None
    interval_seconds: int


@dataclass
class RollupDelta:
    """What some checks of one bucket add to it (seconds not yet capped)."""

    checks: int = 0
    up_checks: int = 0
    up_seconds: int = 0
    down_seconds: int = 0
    timed_checks: int = 0
    response_time_sum_ms: int = 0
    response_time_min_ms: int | None = None
    response_time_max_ms: int | None = None
    histogram: list[int] = field(default_factory=lambda: [0] * len(LATENCY_COLUMNS))

    def add(self, check: InsertedCheck) -> None:
        self.checks += 1
        if check.status == "up":
            self.up_checks += 1
            self.up_seconds += check.interval_seconds
        else:
            self.down_seconds += check.interval_seconds
        rt = check.response_time_ms
        if rt is not None:
            self.timed_checks += 1
            self.response_time_sum_ms += rt
            low, high = self.response_time_min_ms, self.response_time_max_ms
            self.response_time_min_ms = rt if low is None else min(low, rt)
            self.response_time_max_ms = rt if high is None else max(high, rt)
            self.histogram[bucket_index(rt)] += 1

    def row(self, length: int) -> dict[str, Any]:
        """The columns of a new bucket holding just these checks (seconds capped)."""
        up, down = capped_seconds(0, 0, self.up_seconds, self.down_seconds, length)
        return {
            "checks": self.checks,
            "up_checks": self.up_checks,
            "up_seconds": up,
            "down_seconds": down,
            "timed_checks": self.timed_checks,
            "response_time_sum_ms": self.response_time_sum_ms,
            "response_time_min_ms": self.response_time_min_ms,
            "response_time_max_ms": self.response_time_max_ms,
            **dict(zip(LATENCY_COLUMNS, self.histogram, strict=True)),
        }


RollupKey = tuple[uuid.UUID, datetime, int]


def rollup_deltas(checks: Iterable[InsertedCheck], seconds: int) -> dict[RollupKey, RollupDelta]:
    """The checks grouped by (website_id, bucket_start, region_id), in key order."""
    deltas: dict[RollupKey, RollupDelta] = {}
    for check in checks:
        key = (check.website_id, bucket_start(check.created_at, seconds), check.region_id)
        deltas.setdefault(key, RollupDelta()).add(check)
    return dict(sorted(deltas.items(), key=lambda item: (str(item[0][0]), *item[0][1:])))


def _on_conflict(table: str, length: int, least: str, greatest: str) -> str:
    """Add the incoming bucket (``excluded``, its seconds already capped) to the stored one.
    A reference to ``table``'s column is the value before this update, on both back ends,
    so the new up_seconds is spelt out again inside down_seconds."""
    new_up = f"{least}({table}.up_seconds + excluded.up_seconds, {length} - {table}.down_seconds)"
    sets = [f"{c} = {table}.{c} + excluded.{c}" for c in _SUMMED]
    sets += [
        f"up_seconds = {new_up}",
        f"down_seconds = {least}({table}.down_seconds + excluded.down_seconds,"
        f" {length} - {new_up})",
        # Either side may be NULL (no timed check): NULL only when both are.
        f"response_time_min_ms = {least}(COALESCE({table}.response_time_min_ms,"
        " excluded.response_time_min_ms), COALESCE(excluded.response_time_min_ms,"
        f" {table}.response_time_min_ms))",
        f"response_time_max_ms = {greatest}(COALESCE({table}.response_time_max_ms,"
        " excluded.response_time_max_ms), COALESCE(excluded.response_time_max_ms,"
        f" {table}.response_time_max_ms))",
    ]
    return f"ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET " + ", ".join(sets)


def _functions(dialect: str) -> tuple[str, str]:
    return ("LEAST", "GREATEST") if dialect == "postgresql" else ("MIN", "MAX")


def _upsert_values(granularity: Granularity, dialect: str) -> Any:
    names = ", ".join(ROLLUP_COLUMNS)
    values = ", ".join(f":{c}" for c in ROLLUP_COLUMNS)
    conflict = _on_conflict(granularity.table, granularity.seconds, *_functions(dialect))
    return text(
        f"INSERT INTO {granularity.table} ({names}) VALUES ({values}) {conflict}"  # noqa: S608
    ).bindparams(
        bindparam("website_id", type_=Uuid()), bindparam("bucket_start", type_=UtcDateTime())
    )


async def add_to_rollups(session: AsyncSession, checks: Iterable[InsertedCheck]) -> None:
    """Add ``checks`` (rows just inserted, in the caller's transaction) to their hourly and
    daily rollups: one upsert per bucket, in key order (the order every writer locks them)."""
    dialect = session.get_bind().dialect.name
    kept = list(checks)
    if not kept:
        return
    for granularity in GRANULARITIES:
        deltas = rollup_deltas(kept, granularity.seconds)
        rows = [
            {"website_id": w, "bucket_start": b, "region_id": r, **d.row(granularity.seconds)}
            for (w, b, r), d in deltas.items()
        ]
        await session.execute(_upsert_values(granularity, dialect), rows)
    await settle_new_daily_rows(session, daily_keys(kept))
    await retotal_later_days(
        session, earlier_days((c.website_id, c.created_at, c.region_id) for c in kept)
    )


# --- PostgreSQL: the same arithmetic in SQL, over the rows one statement inserted ----------


def _histogram_counts(column: str) -> list[str]:
    parts = []
    low: int | None = None
    for _column, high in zip(LATENCY_COLUMNS, (*LATENCY_BOUNDS_MS, None), strict=True):
        conditions = [f"{column} IS NOT NULL"]
        if low is not None:
            conditions.append(f"{column} > {low}")
        if high is not None:
            conditions.append(f"{column} <= {high}")
        parts.append(f"COUNT(*) FILTER (WHERE {' AND '.join(conditions)})")
        low = high
    return parts


def _upsert_grouped(granularity: Granularity, source: str) -> str:
    length = granularity.seconds
    bucket = f"date_trunc('{granularity.postgres_field}', a.created_at, 'UTC')"
    up = f"LEAST(COALESCE(SUM(a.interval_seconds) FILTER (WHERE a.status = 'up'), 0), {length})"
    down = "COALESCE(SUM(a.interval_seconds) FILTER (WHERE a.status <> 'up'), 0)"
    selected = [
        "a.website_id",
        bucket,
        "a.region_id",
        "COUNT(*)",
        "COUNT(*) FILTER (WHERE a.status = 'up')",
        up,
        f"LEAST({down}, {length} - {up})",
        "COUNT(a.response_time_ms)",
        "COALESCE(SUM(a.response_time_ms), 0)",
        "MIN(a.response_time_ms)",
        "MAX(a.response_time_ms)",
        *_histogram_counts("a.response_time_ms"),
    ]
    return (
        f"INSERT INTO {granularity.table} ({', '.join(ROLLUP_COLUMNS)}) "  # noqa: S608
        f"SELECT {', '.join(selected)} FROM {source} AS a "
        # One row per bucket (ON CONFLICT DO UPDATE cannot touch a row twice in a statement),
        # in key order: the order every writer locks them in, so two never deadlock.
        f"GROUP BY 1, 2, 3 ORDER BY 1, 2, 3 "
        f"{_on_conflict(granularity.table, length, 'LEAST', 'GREATEST')}"
        # Which rows it made (xmax is 0 on a row version this statement inserted): a new
        # daily row still needs its running totals (settle_new_daily_rows).
        " RETURNING website_id, bucket_start, region_id, (xmax = 0) AS created"
    )


def rollup_ctes(source: str) -> str:
    """The data-modifying CTEs (``<rollup table>_added AS (…)``, one a rollup) that add the
    rows of the relation ``source`` (website_id, created_at, region_id, status, response_time_ms,
    interval_seconds: the checks a preceding CTE inserted) to their rollups. Each answers
    the keys of the rows it touched, and whether it made them (`created`)."""
    return ",\n".join(f"{g.table}_added AS ({_upsert_grouped(g, source)})" for g in GRANULARITIES)


# --- running totals of the daily rollups ------------------------------------------------------
#
# A daily rollup's `prior_*` columns are the sums of its monitor's and region's earlier daily
# rollups. A new row gets them from the row before it (`settle_new_daily_rows`), in the
# transaction that makes it. A result that lands on a day older than the newest (a late
# result, or one of yesterday written just after midnight) changes the sums every later row
# was given: those are recomputed from the changed day on (`retotal_later_days`), in the same
# transaction. Two transactions could only race here if one monitor's checks were written
# by two workers at once around midnight; retention recomputes the last days' totals on each
# pass, so even that heals.

TOTALLED = ("checks", "up_checks", "up_seconds", "down_seconds")
PRIOR_COLUMNS = tuple(f"prior_{column}" for column in TOTALLED)
_DAILY = DAILY.table
_KEY_PARAMS = (
    bindparam("website_id", type_=Uuid()),
    bindparam("bucket_start", type_=UtcDateTime()),
)


def _totals_before(column: str) -> str:
    return (
        f"COALESCE((SELECT p.prior_{column} + p.{column} FROM {_DAILY} AS p"  # noqa: S608
        f" WHERE p.website_id = {_DAILY}.website_id AND p.region_id = {_DAILY}.region_id"
        f" AND p.bucket_start < {_DAILY}.bucket_start ORDER BY p.bucket_start DESC LIMIT 1), 0)"
    )


_SETTLE_NEW_ROW = text(
    f"UPDATE {_DAILY} SET "  # noqa: S608 - fixed names
    + ", ".join(f"prior_{c} = {_totals_before(c)}" for c in TOTALLED)
    + " WHERE website_id = :website_id AND bucket_start = :bucket_start"
    " AND region_id = :region_id AND prior_checks IS NULL"
).bindparams(*_KEY_PARAMS)


def _retotal_from_day(scope: str) -> str:
    """The statement that recomputes the running totals of the daily rollups from
    :bucket_start on, of the rows ``scope`` keeps (SQL on `x`): each (monitor, region)'s from
    its first such row (whose totals a change on or after that day does not touch) plus every
    row's before it. Rows already right are left alone."""
    return (
        f"UPDATE {_DAILY} SET "  # noqa: S608 - fixed names
        + ", ".join(f"prior_{c} = t.prior_{c}" for c in TOTALLED)
        + " FROM (SELECT x.website_id, x.bucket_start, x.region_id, "
        + ", ".join(
            f"FIRST_VALUE(x.prior_{c}) OVER running + SUM(x.{c}) OVER running - x.{c} AS prior_{c}"
            for c in TOTALLED
        )
        + f" FROM {_DAILY} AS x WHERE x.bucket_start >= :bucket_start{scope}"
        " WINDOW running AS (PARTITION BY x.website_id, x.region_id ORDER BY x.bucket_start"
        " ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
        f") AS t WHERE {_DAILY}.website_id = t.website_id AND {_DAILY}.region_id = t.region_id"
        f" AND {_DAILY}.bucket_start = t.bucket_start AND ("
        + " OR ".join(f"{_DAILY}.prior_{c} <> t.prior_{c}" for c in TOTALLED)
        + ")"
    )


_RETOTAL_FROM_DAY = text(
    _retotal_from_day(" AND x.website_id = :website_id AND x.region_id = :region_id")
).bindparams(*_KEY_PARAMS)


async def settle_new_daily_rows(session: AsyncSession, keys: Iterable[RollupKey]) -> None:
    """Give the daily rollups of ``keys`` made in this transaction (their totals still null)
    the running totals of the rows before them; a row that has them is left alone."""
    rows = [
        {"website_id": w, "bucket_start": b, "region_id": r}
        for w, b, r in sorted(keys, key=lambda k: (k[1], str(k[0]), k[2]))  # oldest first
    ]
    if rows:
        await session.execute(_SETTLE_NEW_ROW, rows)


async def retotal_later_days(session: AsyncSession, keys: Iterable[RollupKey]) -> None:
    """Recompute the running totals of the daily rollups after each of ``keys`` (a monitor's
    region and a day whose rollup just changed), so that they include the change."""
    rows = [{"website_id": w, "bucket_start": b, "region_id": r} for w, b, r in set(keys)]
    if rows:
        await session.execute(_RETOTAL_FROM_DAY, rows)


def daily_keys(checks: Iterable[InsertedCheck]) -> set[RollupKey]:
    """The daily rollups ``checks`` add to."""
    return {(c.website_id, bucket_start(c.created_at, DAY_SECONDS), c.region_id) for c in checks}


def earlier_days(
    checks: Iterable[tuple[uuid.UUID, datetime, int]], now: datetime | None = None
) -> set[RollupKey]:
    """The daily rollups that ``checks`` (website_id, created_at, region_id) add to on a day
    before today (UTC): days that later days may follow. Nearly always none, found without
    building anything for the others."""
    today = bucket_start(now or datetime.now(UTC), DAY_SECONDS)
    return {
        (website_id, bucket_start(created_at, DAY_SECONDS), region_id)
        for website_id, created_at, region_id in checks
        if created_at < today
    }


# Every daily rollup's running totals from scratch, for rollups loaded in bulk (the migration
# keeps its own copy). Right only while no daily rollup has been deleted: those retention
# deleted would be missing from the sums.
TOTAL_EVERY_DAY_FROM_SCRATCH = (
    f"UPDATE {_DAILY} SET "  # noqa: S608 - fixed names
    + ", ".join(f"prior_{c} = t.prior_{c}" for c in TOTALLED)
    + " FROM (SELECT website_id, bucket_start, region_id, "
    + ", ".join(f"COALESCE(SUM({c}) OVER earlier, 0) AS prior_{c}" for c in TOTALLED)
    + f" FROM {_DAILY} WINDOW earlier AS (PARTITION BY website_id, region_id"
    " ORDER BY bucket_start ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)) AS t"
    f" WHERE {_DAILY}.website_id = t.website_id AND {_DAILY}.bucket_start = t.bucket_start"
    f" AND {_DAILY}.region_id = t.region_id"
)

# The running totals of every daily rollup from a day on, recomputed from each monitor's and
# region's first row on or after that day: what retention runs each pass over the last days,
# so that totals a race left short (see above) heal. Rows already right are left alone.
_RETOTAL_EVERY_MONITOR_FROM_DAY = text(_retotal_from_day("")).bindparams(
    bindparam("bucket_start", type_=UtcDateTime())
)


async def retotal_every_monitor_from(connection: AsyncConnection, day: datetime) -> int:
    """Recompute the running totals of the daily rollups of ``day`` (00:00 UTC) and after,
    every monitor's; returns how many rows were wrong and are now right."""
    result = await connection.execute(_RETOTAL_EVERY_MONITOR_FROM_DAY, {"bucket_start": day})
    return int(getattr(result, "rowcount", 0) or 0)
