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

Neither making nor dropping a partition stops the writers. `CREATE TABLE ... PARTITION OF`
takes an ACCESS EXCLUSIVE lock on the parent, which queues every insert behind any long read
of the history; so a partition is made as a table of its own and attached (`ATTACH
PARTITION` takes only SHARE UPDATE EXCLUSIVE, which inserts and reads do not wait for), in
one transaction. `create_partition_sql` (the plain form) is for the migration, which runs
before any writer.

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
    """The days whose partition is attached and usable (not pending a detach)."""
    rows = await connection.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = CAST(:parent AS regclass) AND NOT i.inhdetachpending"
        ),
        {"parent": PARENT},
    )
    return {day for (name,) in rows if (day := partition_day(name)) is not None}


def _attach_statements(day: date) -> tuple[str, str]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    end = start + timedelta(days=1)
    name = partition_name(day)
    return (
        f"CREATE TABLE IF NOT EXISTS {name} (LIKE {PARENT} INCLUDING ALL)",
        f"ALTER TABLE {PARENT} ATTACH PARTITION {name} "
        f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')",
    )


async def ensure_daily_partitions(engine: AsyncEngine, days: Iterable[date]) -> set[date]:
    """Make the partitions of ``days`` that do not exist yet, each in a short transaction of
    its own, without blocking the writers (see the module's docstring); returns the days
    that have a partition now. Two processes racing to make one day's partition is
    harmless: the loser finds it made."""
    wanted = set(days)
    async with engine.connect() as connection:
        missing = wanted - await existing_partition_days(connection)
    for day in sorted(missing):
        try:
            async with engine.begin() as connection:
                for statement in _attach_statements(day):
                    await connection.execute(text(statement))
        except (ProgrammingError, DBAPIError):
            # IF NOT EXISTS is not atomic, and the winner of a race attaches first.
            async with engine.connect() as connection:
                if day not in await existing_partition_days(connection):
                    raise
    return wanted


async def drop_partitions_before(engine: AsyncEngine, first_kept: date) -> list[date]:
    """Detach (concurrently) and drop every daily partition of a day before ``first_kept``;
    returns the days dropped, oldest first. Each partition is its own short step, so an
    interrupted run leaves whole partitions, at worst one detached or pending detach and not
    yet dropped, which the next run finishes."""
    async with engine.connect() as connection:
        attached = await existing_partition_days(connection)
        pending = await _pending_detach(connection)
        detached = await _detached_leftovers(connection)
    # Only days before first_kept: a recent partition someone detached by hand is theirs.
    old = {day for day in attached | pending | detached if day < first_kept}
    dropped: list[date] = []
    for day in sorted(old):
        name = partition_name(day)
        if day in attached or day in pending:
            mode = "FINALIZE" if day in pending else "CONCURRENTLY"
            # Neither form can run inside a transaction block.
            async with engine.connect() as connection:
                autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
                await autocommit.execute(
                    text(f"ALTER TABLE {PARENT} DETACH PARTITION {name} {mode}")
                )
        async with engine.begin() as connection:
            await connection.execute(text(f"DROP TABLE IF EXISTS {name}"))
        dropped.append(day)
    return dropped


async def _pending_detach(connection: AsyncConnection) -> set[date]:
    """Days whose concurrent detach was cut short between its two transactions: still
    listed as partitions, but no query sees them, and only `DETACH ... FINALIZE` ends it."""
    rows = await connection.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = CAST(:parent AS regclass) AND i.inhdetachpending"
        ),
        {"parent": PARENT},
    )
    return {day for (name,) in rows if (day := partition_day(name)) is not None}


async def _detached_leftovers(connection: AsyncConnection) -> set[date]:
    """Days whose partition table exists but is no longer attached (a drop cut short)."""
    rows = await connection.execute(
        text(
            "SELECT c.relname FROM pg_class c WHERE c.relkind = 'r' AND c.relname LIKE :pattern "
            "AND NOT c.relispartition AND c.relnamespace = CAST(current_schema() AS regnamespace)"
        ),
        {"pattern": f"{PARENT}\\_p%"},
    )
    return {day for (name,) in rows if (day := partition_day(name)) is not None}
