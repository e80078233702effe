"""Retention: raw checks are kept for days, hourly rollups for months, daily rollups for ever
(or as long as configured); everything older goes, a little at a time.

**What "kept N days" means.** Days are UTC days. A setting of N keeps today and the N whole
days before it: everything from 00:00 UTC on day ``today - N`` on stays, everything before
it goes. So a check (or a rollup's bucket) is kept at least N days of 24 hours and at
most N + 1 days plus one PRUNE_INTERVAL_SECONDS. The rule is the same on both back ends
and for the three kinds of history: a whole day goes at once, which is what a daily
partition can do. An hourly rollup goes when the day of its bucket's start does; a daily
rollup when its day does; DAILY_ROLLUP_RETENTION_DAYS=0 keeps daily rollups for ever.

**How.** One pass (`apply_retention`), run by housekeeping in the process holding the
scheduler lease, once at start and every PRUNE_INTERVAL_SECONDS:

- PostgreSQL: the partitions of today … today + PARTITION_DAYS_AHEAD are made (if missing),
  and those of days before the first kept day are detached concurrently and dropped
  (runstate.history.partitions). Raw checks are never DELETEd there.
- SQLite: raw checks before the cutoff are deleted in batches of at most DELETE_BATCH_ROWS,
  each its own short transaction. `website_checks` is a rowid table written in time order,
  so the oldest rows come first in rowid order: each batch looks at the next DELETE_BATCH_ROWS
  rowids only (a bounded range of the rowid B-tree, never a scan of the table under the write
  lock) and deletes those before the cutoff; the pass stops at the first batch that held
  none. A row written far out of order (a clock far behind) may so wait, at most until the
  rows before it age out too.
- Both: hourly and daily rollups before their cutoffs are deleted in batches of at most
  DELETE_BATCH_ROWS by `bucket_start` (which is indexed); and the daily rollups' running
  totals of the last RUNNING_TOTALS_HEALED_DAYS days and today are recomputed, correcting
  any that a race of two writers left short (a warning says so).

Each step runs whatever happened to the ones before it; the first failure is raised at the
end of the pass, so housekeeping retries the pass with its backoff and no step's failure
stops the others for good. What went is logged (days of partitions, counts of rows).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Table, bindparam, delete, select, text, tuple_
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from runstate.history.partitions import (
    PARTITION_DAYS_AHEAD,
    days_between,
    drop_partitions_before,
    ensure_daily_partitions,
)
from runstate.history.rollups import retotal_every_monitor_from
from runstate.storage.tables import DailyRollup, HourlyRollup, UtcDateTime, WebsiteCheck

if TYPE_CHECKING:
    from runstate.settings import Settings

log = logging.getLogger(__name__)

# How many days before today the running totals are recomputed from, each pass.
RUNNING_TOTALS_HEALED_DAYS = 2

CHECKS: Table = WebsiteCheck.__table__  # type: ignore[assignment]
HOURLY: Table = HourlyRollup.__table__  # type: ignore[assignment]
DAILY: Table = DailyRollup.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class RetentionPolicy:
    check_days: int
    hourly_rollup_days: int
    daily_rollup_days: int  # 0: for ever
    batch_rows: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        return cls(
            check_days=settings.CHECK_RETENTION_DAYS,
            hourly_rollup_days=settings.HOURLY_ROLLUP_RETENTION_DAYS,
            daily_rollup_days=settings.DAILY_ROLLUP_RETENTION_DAYS,
            batch_rows=settings.DELETE_BATCH_ROWS,
        )


def first_kept_day(today: date, days: int) -> date:
    """The oldest day a setting of ``days`` keeps: today and the ``days`` days before it."""
    return today - timedelta(days=days)


def cutoff(today: date, days: int) -> datetime:
    """00:00 UTC of the first kept day: what starts before it goes."""
    day = first_kept_day(today, days)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@dataclass
class RetentionReport:
    partitions_dropped: list[date] = field(default_factory=list)
    checks_deleted: int = 0
    hourly_rollups_deleted: int = 0
    daily_rollups_deleted: int = 0
    failed_steps: list[str] = field(default_factory=list)


async def apply_retention(
    engine: AsyncEngine, policy: RetentionPolicy, *, now: datetime | None = None
) -> RetentionReport:
    """One pass of retention as of ``now`` (see the module's docstring). Every step runs;
    if any failed, the first failure is raised once the others are done."""
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    retention = _Pass(engine, policy, today)
    errors: list[SQLAlchemyError | OSError] = []
    # Ahead first: a writer must never meet a missing day because an old drop failed.
    for name, work in (
        ("partitions ahead", retention.make_partitions_ahead),
        ("checks", retention.drop_old_checks),
        ("hourly rollups", retention.drop_old_hourly_rollups),
        ("daily rollups", retention.drop_old_daily_rollups),
        ("running totals", retention.heal_running_totals),
    ):
        try:
            await work()
        except (SQLAlchemyError, OSError) as exc:
            retention.report.failed_steps.append(name)
            errors.append(exc)
    if errors:
        raise errors[0]
    return retention.report


@dataclass
class _Pass:
    engine: AsyncEngine
    policy: RetentionPolicy
    today: date
    report: RetentionReport = field(default_factory=RetentionReport)

    @property
    def partitioned(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    async def make_partitions_ahead(self) -> None:
        if self.partitioned:
            days = days_between(self.today, self.today + timedelta(days=PARTITION_DAYS_AHEAD))
            await ensure_daily_partitions(self.engine, days)

    async def drop_old_checks(self) -> None:
        if self.partitioned:
            first_kept = first_kept_day(self.today, self.policy.check_days)
            dropped = await drop_partitions_before(self.engine, first_kept)
            self.report.partitions_dropped = dropped
            if dropped:
                log.info(
                    "retention dropped the partitions of old checks",
                    extra={"days": [day.isoformat() for day in dropped]},
                )
            return
        before = cutoff(self.today, self.policy.check_days)
        deleted = await delete_checks_in_rowid_order(
            self.engine, before, batch_rows=self.policy.batch_rows
        )
        self.report.checks_deleted = deleted
        if deleted:
            log.info(
                "retention deleted old checks",
                extra={"deleted": deleted, "before": before.isoformat()},
            )

    async def drop_old_hourly_rollups(self) -> None:
        deleted = await self._drop_old_rollups(HOURLY, self.policy.hourly_rollup_days)
        self.report.hourly_rollups_deleted = deleted

    async def drop_old_daily_rollups(self) -> None:
        if self.policy.daily_rollup_days == 0:
            return  # kept for ever
        deleted = await self._drop_old_rollups(DAILY, self.policy.daily_rollup_days)
        self.report.daily_rollups_deleted = deleted

    async def heal_running_totals(self) -> None:
        """Recompute the daily rollups' running totals of the last days (see
        runstate.history.rollups): a race of two writers around midnight can leave them
        short, and this is where that heals."""
        since = cutoff(self.today, RUNNING_TOTALS_HEALED_DAYS)
        async with self.engine.begin() as connection:
            healed = await retotal_every_monitor_from(connection, since)
        if healed:
            log.warning(
                "retention corrected running totals of daily rollups",
                extra={"rows": healed, "since": since.isoformat()},
            )

    async def _drop_old_rollups(self, table: Table, days: int) -> int:
        before = cutoff(self.today, days)
        deleted = await delete_rollups_before(
            self.engine, table, before, batch_rows=self.policy.batch_rows
        )
        if deleted:
            log.info(
                "retention deleted old rollups",
                extra={"table": table.name, "deleted": deleted, "before": before.isoformat()},
            )
        return deleted


# SQLite only: the rowid of the last of the next :n rows, and the old rows up to it.
_UPPER_ROWID = text(
    "SELECT max(r) FROM (SELECT rowid AS r FROM website_checks WHERE rowid > :after "
    "ORDER BY rowid LIMIT :n)"
)
_DELETE_OLD_UP_TO = text(
    "DELETE FROM website_checks WHERE rowid > :after AND rowid <= :upper AND created_at < :before"
).bindparams(bindparam("before", type_=UtcDateTime()))


async def delete_checks_in_rowid_order(
    engine: AsyncEngine, before: datetime, *, batch_rows: int
) -> int:
    """SQLite: delete the checks created before ``before``, walking the table in rowid
    (written) order ``batch_rows`` rowids at a time, each batch its own transaction; stops
    at the first batch holding nothing old. Returns how many went."""
    deleted = 0
    after = 0
    while True:
        async with engine.connect() as connection:
            upper = await connection.scalar(_UPPER_ROWID, {"after": after, "n": batch_rows})
        if upper is None:
            return deleted
        async with engine.begin() as connection:
            result = await connection.execute(
                _DELETE_OLD_UP_TO, {"after": after, "upper": upper, "before": before}
            )
        removed = int(result.rowcount or 0)
        if removed == 0:
            return deleted
        deleted += removed
        after = upper
        await asyncio.sleep(0)  # between two batches, writers get the lock and the loop


async def delete_rollups_before(
    engine: AsyncEngine, table: Table, before: datetime, *, batch_rows: int
) -> int:
    """Delete the rollups of ``table`` whose bucket starts before ``before``, at most
    ``batch_rows`` per statement and transaction; returns how many went."""
    key = tuple_(table.c.website_id, table.c.bucket_start, table.c.region_id)
    batch = (
        select(table.c.website_id, table.c.bucket_start, table.c.region_id)
        .where(table.c.bucket_start < before)
        .limit(batch_rows)
    )
    statement = delete(table).where(key.in_(batch))
    deleted = 0
    while True:
        async with engine.begin() as connection:
            result = await connection.execute(statement)
        removed = int(result.rowcount or 0)
        deleted += removed
        if removed < batch_rows:
            return deleted
        await asyncio.sleep(0)
