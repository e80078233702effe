"""PostgreSQL's daily partitions of `website_checks`: made ahead, dropped when they age out.

Each UTC day of checks is a table of its own, `website_checks_pYYYYMMDD`, holding
[day 00:00 UTC, next day 00:00 UTC). A day ages out by detaching its partition
(`DETACH PARTITION ... CONCURRENTLY`, which waits for the queries that may still read it
without blocking the writers) and dropping it: no DELETE, no dead rows, no vacuum, and its
disk space comes back at once.

There is no default partition: PostgreSQL refuses to detach concurrently from a table that
has one. So partitions are made ahead (PARTITION_DAYS_AHEAD days, by housekeeping and by the
migration), and a writer that meets a day without one makes it before writing
(`ensure_daily_partitions`), so a result is never refused for its date.

SQLite keeps `website_checks` as one table; its retention deletes in small batches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

PARENT = "website_checks"
PARTITION_DAYS_AHEAD = 3
_NAME = re.compile(r"^website_checks_p(\d{8})$")


def partition_name(day: date) -> str:
    return f"{PARENT}_p{day:%Y%m%d}"


def day_of(moment: datetime) -> date:
    """The UTC day ``moment`` falls on, which names its partition."""
    return moment.astimezone(UTC).date()


def partition_day(name: str) -> date | None:
    """The day a partition's name stands for; None for a table that is not one."""
    match = _NAME.match(name)
    return datetime.strptime(match.group(1), "%Y%m%d").date() if match else None


def create_partition_sql(day: date) -> str:
    """The statement that makes ``day``'s partition, unless it exists."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = start + timedelta(days=1)
    return (
        f"CREATE TABLE IF NOT EXISTS {partition_name(day)} PARTITION OF {PARENT} "
        f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
    )


def days_between(first: date, last: date) -> list[date]:
    """Every day from ``first`` to ``last``, both included."""
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


async def existing_partition_days(connection: AsyncConnection) -> set[date]:
    rows = await connection.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = CAST(:parent AS regclass)"
        ),
        {"parent": PARENT},
    )
    return {day for (name,) in rows if (day := partition_day(name)) is not None}


async def ensure_daily_partitions(engine: AsyncEngine, days: Iterable[date]) -> set[date]:
    """Make the partitions of ``days`` that do not exist yet, each in a short transaction of
    its own; returns the days that have a partition now. Two processes racing to make one
    day's partition is harmless: the loser finds it made."""
    wanted = set(days)
    async with engine.connect() as connection:
        missing = wanted - await existing_partition_days(connection)
    for day in sorted(missing):
        try:
            async with engine.begin() as connection:
                await connection.execute(text(create_partition_sql(day)))
        except (ProgrammingError, DBAPIError) as exc:
            # IF NOT EXISTS is not atomic: a concurrent creator can still win the race.
            if "already exists" not in str(exc):
                raise
    return wanted


async def drop_partitions_before(engine: AsyncEngine, first_kept: date) -> list[date]:
    """Detach (concurrently) and drop every daily partition of a day before ``first_kept``;
    returns the days dropped, oldest first. Each partition is its own short step, so an
    interrupted run leaves whole partitions, at worst one detached and not yet dropped
    (which the next run finishes)."""
    async with engine.connect() as connection:
        attached = await existing_partition_days(connection)
        detached = await _detached_leftovers(connection)
    dropped: list[date] = []
    for day in sorted(d for d in attached | detached if d < first_kept):
        name = partition_name(day)
        if day in attached:
            # CONCURRENTLY cannot run inside a transaction block.
            async with engine.connect() as connection:
                autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
                await autocommit.execute(
                    text(f"ALTER TABLE {PARENT} DETACH PARTITION {name} CONCURRENTLY")
                )
        async with engine.begin() as connection:
            await connection.execute(text(f"DROP TABLE IF EXISTS {name}"))
        dropped.append(day)
    return dropped


async def _detached_leftovers(connection: AsyncConnection) -> set[date]:
    """Days whose partition table exists but is no longer attached (a drop cut short)."""
    rows = await connection.execute(
        text(
            "SELECT c.relname FROM pg_class c WHERE c.relkind = 'r' AND c.relname LIKE :pattern "
            "AND NOT c.relispartition"
        ),
        {"pattern": f"{PARENT}\\_p%"},
    )
    return {day for (name,) in rows if (day := partition_day(name)) is not None}
