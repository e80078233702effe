"""Stage 2 — check job -> result -> status change (worker-monitoring).

Each due check runs as soon as a slot is free, whatever else is running. Its result joins
the next group write: results are written together in one transaction (on PostgreSQL as one
array per column), with the hourly and daily rollups they add to (runstate.history.rollups:
only the rows inserted count, so a group written twice counts once), then applied to their
monitors' states; a result that confirms a change
emits the status-change event in the same atomic step (`MonitorStates.apply`). An entry is
acknowledged only after all of that, and on its own: a crash at any point leaves it pending,
and it is checked again; a check that hangs until its timeout holds back nothing but itself.

While the database or Redis is down, each step of a group write is retried in place, with
capped backoff, until it succeeds: the results wait in hand (their entries still claimed)
instead of being checked again or dead-lettered. An entry that is dead-lettered all the same
(malformed, or a check that keeps failing) releases its monitor's pending mark
(`release_dead_letters`), so the monitor is checked again at its next due time.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import CursorResult, Result, Uuid, bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from runstate.checks.base import Check, CheckResult
from runstate.consumer import DONE, Outcome, Outcomes, Verdict
from runstate.domain.events import CheckJob, MalformedEntry, status_change_event_id
from runstate.domain.status import MonitorState, Observation, Status
from runstate.flow import Slots, as_settled
from runstate.group_commit import GroupCommit
from runstate.history.partitions import day_of, ensure_daily_partitions
from runstate.history.rollups import (
    InsertedCheck,
    add_to_rollups,
    earlier_days,
    retotal_later_days,
    rollup_ctes,
    settle_new_daily_rows,
)
from runstate.metrics import PipelineMetrics
from runstate.outages import OutageRetry, describe
from runstate.pipeline.destinations import PerDestinationLimit, destination_of
from runstate.queue.base import (
    ApplyOutcome,
    Entry,
    MonitorStates,
    ObservedCheck,
    PendingChecks,
)
from runstate.storage.status_pages import (
    bump_pages_of_monitors,
    bump_pages_of_monitors_without_status,
)
from runstate.storage.tables import UtcDateTime, Website

log = logging.getLogger(__name__)

CHECK_COLUMNS = (
    "website_id",
    "region_id",
    "status",
    "response_time_ms",
    "status_code",
    "error",
    "created_at",
    "dns_ms",
    "connect_ms",
    "tls_ms",
    "ttfb_ms",
    "cert_expires_at",
)


@dataclass(frozen=True, slots=True)
class CheckedJob:
    job: CheckJob
    result: CheckResult
    finished_at: datetime

    @property
    def at_ms(self) -> int:
        return int(self.finished_at.timestamp() * 1000)


@dataclass
class MonitoringStage:
    """Runs each check as soon as a slot is free and settles it as soon as its result is
    written: no check waits for another. ``concurrency`` bounds the entries in hand (checks
    running and results waiting for their write); ``read_ahead`` is that bound, shared with
    the consumer so that it reads only as many entries as there are free slots. At most
    ``per_destination`` checks run against one host at once. Results are written in groups
    of up to ``flush_results``, or every ``flush_seconds``, whichever comes first; a step
    of a group write that meets an outage is tried again, pausing up to
    ``outage_retry_max_seconds``, until it succeeds."""

    sessions: async_sessionmaker[AsyncSession]
    states: MonitorStates
    pending: PendingChecks
    check: Check
    region_id: int
    status_change_stream: str
    metrics: PipelineMetrics
    concurrency: int = 500
    per_destination: int = 20
    flush_results: int = 500
    flush_seconds: float = 0.05
    outage_retry_max_seconds: float = 10.0
    read_ahead: Slots = field(init=False)
    _destinations: PerDestinationLimit = field(init=False)
    _results: GroupCommit[CheckedJob] = field(init=False)
    _outages: OutageRetry = field(init=False)
    _partition_days: set[date] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self.read_ahead = Slots(self.concurrency)
        self._destinations = PerDestinationLimit(
            self.per_destination, self.read_ahead, most_lent=self.concurrency
        )
        self._results = GroupCommit(
            self._record, max_items=self.flush_results, max_wait=self.flush_seconds
        )
        self._outages = OutageRetry("check results", self.outage_retry_max_seconds)

    async def handle_batch(self, entries: Sequence[Entry]) -> AsyncGenerator[Outcomes, None]:
        """Yields each entry's outcome once its check is written and applied (those written
        together, together); a malformed entry is dead at once."""
        jobs: dict[str, CheckJob] = {}
        malformed: Outcomes = {}
        for entry in entries:
            try:
                jobs[entry.id] = CheckJob.from_fields(entry.fields)
            except MalformedEntry as exc:
                malformed[entry.id] = Outcome(Verdict.DEAD, f"malformed check job: {exc}")
        if malformed:
            yield malformed
        running = {entry_id: self._check_and_record(job) for entry_id, job in jobs.items()}
        async with aclosing(as_settled(running)) as settled:
            async for outcomes in settled:
                yield outcomes

    async def _check_and_record(self, job: CheckJob) -> Outcome:
        """DONE once the check's result is written and applied; RETRY (the entry stays
        pending and the check runs again) when it could not be, for this entry alone."""
        try:
            async with self._destinations.turn(destination_of(job.url)):
                checked = await self._run(job)
        except Exception as exc:  # a bug: checks report a failing target as a DOWN result
            log.exception("check failed", extra={"website_id": str(job.website_id)})
            return Outcome(Verdict.RETRY, describe(exc))
        try:
            await self._results.add(checked)
        except Exception as exc:  # logged once per group by _record
            return Outcome(Verdict.RETRY, describe(exc))
        return DONE

    async def _record(self, checked: Sequence[CheckedJob]) -> None:
        """Write a group of results, apply them to the monitors' states (emitting the changes
        they confirm), and release the monitors' pending marks: after this, acknowledging
        their entries loses nothing. Each step waits out outages in place (a step done is
        not done again), so only an error of the results themselves gets through."""
        website_ids = [c.job.website_id for c in checked]
        try:
            await self._outages.run(lambda: self._write_results(checked))
            await self._outages.run(lambda: self._apply_to_states(checked))
            await self._outages.run(lambda: self.pending.release(website_ids))
        except Exception as exc:
            log.warning(
                "check results not recorded; their checks will run again",
                extra={"count": len(checked), "error": describe(exc)},
            )
            raise

    async def release_dead_letters(self, entries: Sequence[Entry]) -> None:
        """Release the pending marks of dead-lettered entries' monitors, so that each is
        checked again at its next due time (not only once its mark is presumed lost)."""
        website_ids = []
        for entry in entries:
            try:
                website_ids.append(uuid.UUID(entry.fields.get("website_id", "")))
            except ValueError:
                continue  # no monitor named: no mark was made for it
        if website_ids:
            await self.pending.release(website_ids)

    @property
    def outages(self) -> OutageRetry:
        """The outages the group writes waited out."""
        return self._outages

    def waiting_for_host(self) -> int:
        """Checks waiting now for their turn at a busy host."""
        return self._destinations.waiting

    async def aclose(self, grace_seconds: float = 10.0) -> None:
        """Let the result writes under way end (within ``grace_seconds``); start no more."""
        await self._results.aclose(grace_seconds)

    async def _run(self, job: CheckJob) -> CheckedJob:
        now = datetime.now(UTC)
        lateness = (now - job.scheduled_at).total_seconds()
        self.metrics.check_start_lateness.observe(max(lateness, 0.0))
        started = time.perf_counter()
        result = await self.check.run(job)
        self.metrics.check_duration.observe(time.perf_counter() - started)
        label = "up" if result.status is Status.UP else str(result.error_kind or "down")
        self.metrics.checks.labels(label).inc()
        return CheckedJob(job, result, datetime.now(UTC))

    def _rows(self, checked: Sequence[CheckedJob]) -> list[dict[str, Any]]:
        """The check rows of ``checked``, each primary key once (the first result wins, as
        the insert would have it), in key order: the order every writer locks them in."""
        rows: dict[tuple[Any, Any], dict[str, Any]] = {}
        for row in (
            {
                "website_id": c.job.website_id,
                "region_id": self.region_id,
                "status": c.result.status.value,
                "response_time_ms": c.result.response_time_ms,
                "status_code": c.result.status_code,
                "error": c.result.error,
                "created_at": c.finished_at,
                "dns_ms": c.result.dns_ms,
                "connect_ms": c.result.connect_ms,
                "tls_ms": c.result.tls_ms,
                "ttfb_ms": c.result.ttfb_ms,
                "cert_expires_at": c.result.cert_expires_at,
                "interval_seconds": c.job.interval_seconds,
            }
            for c in checked
        ):
            rows.setdefault((row["website_id"], row["created_at"]), row)
        return [rows[key] for key in sorted(rows, key=lambda k: (str(k[0]), k[1]))]

    async def _write_results(self, checked: Sequence[CheckedJob]) -> None:
        """In one transaction: insert the results of monitors that still exist (a result
        already written is skipped), add the rows inserted to their hourly and daily
        rollups, and move each monitor's latest check forward. Done twice, the second time
        changes nothing."""
        if not checked:
            return
        rows = self._rows(checked)
        postgresql = self._engine.dialect.name == "postgresql"
        if postgresql:
            await self._ensure_partitions({day_of(row["created_at"]) for row in rows})
        async with self.sessions() as session, session.begin():
            if postgresql:
                inserted = await _write_batch_as_arrays(session, rows)
            else:
                inserted = await _insert_results(session, rows)
        self.metrics.check_results_written.inc(inserted)

    @property
    def _engine(self) -> AsyncEngine:
        engine = self.sessions.kw["bind"]
        assert isinstance(engine, AsyncEngine)
        return engine

    async def _ensure_partitions(self, days: set[date]) -> None:
        """Make the partitions of ``days`` that are missing (PostgreSQL has no default
        partition: a row of a day without one is refused). The days known to exist are
        kept, so a batch of today's results asks the database nothing."""
        missing = days - self._partition_days
        if missing:
            self._partition_days |= await ensure_daily_partitions(self._engine, missing)

    async def _apply_to_states(self, checked: Sequence[CheckedJob]) -> None:
        observed = [self._observed(c) for c in checked]
        outcomes = await self.states.apply(observed, status_change_stream=self.status_change_stream)
        unseeded = [
            o for o, out in zip(observed, outcomes, strict=True) if out is ApplyOutcome.NEEDS_SEED
        ]
        if unseeded:
            await self._seed_from_database([o.website_id for o in unseeded])
            outcomes += await self.states.apply(
                unseeded, status_change_stream=self.status_change_stream
            )
        for obs, outcome in zip(observed + unseeded, outcomes, strict=True):
            if outcome is ApplyOutcome.CHANGED:
                self.metrics.status_changes.labels(obs.observation.status.value).inc()

    def _observed(self, c: CheckedJob) -> ObservedCheck:
        return ObservedCheck(
            website_id=c.job.website_id,
            observation=Observation(
                status=c.result.status,
                at_ms=c.at_ms,
                confirmations=c.job.confirmations,
                recovery_confirmations=c.job.recovery_confirmations,
            ),
            event_id=status_change_event_id(c.job.website_id, c.at_ms),
            region_id=self.region_id,
        )

    async def _seed_from_database(self, website_ids: list[uuid.UUID]) -> None:
        """Rebuild lost state from what the database shows: the confirmed status and the
        time it was confirmed (older results are then stale, as they were before)."""
        async with self.sessions() as session:
            rows = await session.execute(
                select(Website.id, Website.current_status, Website.status_changed_at).where(
                    Website.id.in_(website_ids)
                )
            )
            known = {row.id: row for row in rows}
        for website_id in website_ids:
            row = known.get(website_id)
            status = Status(row.current_status) if row and row.current_status else None
            changed = row.status_changed_at if row else None
            last_ms = int(changed.timestamp() * 1000) if changed else 0
            await self.states.seed(website_id, MonitorState(status=status, last_applied_ms=last_ms))
        log.info("monitor states rebuilt from the database", extra={"count": len(website_ids)})


# On PostgreSQL a batch travels as one array per column and is expanded by unnest: two
# statements a batch whatever its size, prepared once per connection, and planned with the
# index on `websites` at any size. (A temporary staging table filled by COPY is never
# analysed: PostgreSQL guesses its size and, around 10,000 monitors, scans `websites`.)
_UNNEST_BATCH = """unnest(
    CAST(:website_id AS uuid[]), CAST(:region_id AS integer[]), CAST(:status AS varchar[]),
    CAST(:response_time_ms AS integer[]), CAST(:status_code AS integer[]),
    CAST(:error AS text[]), CAST(:created_at AS timestamptz[]),
    CAST(:dns_ms AS integer[]), CAST(:connect_ms AS integer[]), CAST(:tls_ms AS integer[]),
    CAST(:ttfb_ms AS integer[]), CAST(:cert_expires_at AS timestamptz[]),
    CAST(:interval_seconds AS integer[])
) AS b(website_id, region_id, status, response_time_ms, status_code, error, created_at,
    dns_ms, connect_ms, tls_ms, ttfb_ms, cert_expires_at, interval_seconds)"""
# Inserts the results and adds the rows it inserted (none of a result already written) to
# their rollups; answers how many it inserted.
_INSERT_BATCH_WITH_ROLLUPS = text(f"""
WITH b AS (SELECT * FROM {_UNNEST_BATCH}),
inserted AS (
    INSERT INTO website_checks ({", ".join(CHECK_COLUMNS)})
    SELECT {", ".join("b." + c for c in CHECK_COLUMNS)}
    -- Only the rows of monitors that still exist: a monitor deleted while its check ran
    -- must not fail the whole batch.
    FROM b JOIN websites w ON w.id = b.website_id
    ON CONFLICT DO NOTHING
    RETURNING website_id, created_at, region_id, status, response_time_ms
),
added AS (
    SELECT i.website_id, i.created_at, i.region_id, i.status, i.response_time_ms,
        b.interval_seconds
    FROM inserted i JOIN b ON b.website_id = i.website_id AND b.created_at = i.created_at
        AND b.region_id = i.region_id
),
{rollup_ctes("added")},
made AS (SELECT * FROM check_rollups_daily_added WHERE created)
SELECT (SELECT count(*) FROM inserted) AS inserted,
    ARRAY(SELECT website_id FROM made) AS made_website_ids,
    ARRAY(SELECT bucket_start FROM made) AS made_bucket_starts,
    ARRAY(SELECT region_id FROM made) AS made_region_ids
""")  # noqa: S608 - fixed names
# The newest result of each monitor in the batch (a batch may hold two checks of one). Run
# first, it locks every monitor of the batch (a late result's too, left as it was) until the
# commit: a deletion under way is waited for, and then the insert finds the monitor gone; a
# deletion that comes later waits, and then finds these rows, which it deletes with the
# monitor (runstate.storage.deletion). Either way nothing is left behind. Answers the
# monitors that had no status before (`known` reads the rows as they were): their status
# pages move on.
_UPDATE_LATEST_OF_BATCH = text(f"""
WITH moved AS (
UPDATE websites AS w SET
    last_checked_at = GREATEST(w.last_checked_at, b.created_at),
    latest_response_time_ms = CASE
        WHEN w.last_checked_at IS NULL OR w.last_checked_at < b.created_at
        THEN b.response_time_ms ELSE w.latest_response_time_ms END,
    current_status = COALESCE(w.current_status, b.status)
FROM (
    SELECT DISTINCT ON (website_id) website_id, created_at, response_time_ms, status
    FROM {_UNNEST_BATCH} ORDER BY website_id, created_at DESC
) AS b, websites AS known
WHERE w.id = b.website_id AND known.id = w.id
RETURNING w.id, known.current_status IS NULL AS first_status
)
SELECT ARRAY(SELECT id FROM moved WHERE first_status) AS first_status_ids
""")  # noqa: S608 - fixed names


async def _write_batch_as_arrays(session: AsyncSession, rows: list[dict[str, Any]]) -> int:
    """Two statements whatever the batch's size, the monitors' rows locked first; returns
    how many rows were inserted."""
    columns = {name: [row[name] for row in rows] for name in (*CHECK_COLUMNS, "interval_seconds")}
    # The statements are prepared once per connection, but PostgreSQL plans them again for
    # every batch's arrays; the generic plan is as good at any size (websites by index) and
    # spares a third of a small batch's time (bench: 3.4 -> 2.3 ms for 25 results).
    await session.execute(_GENERIC_PLANS)
    first_status = (await session.execute(_UPDATE_LATEST_OF_BATCH, columns)).scalar_one()
    await bump_pages_of_monitors(session, first_status)
    written = (await session.execute(_INSERT_BATCH_WITH_ROLLUPS, columns)).one()
    made = zip(
        written.made_website_ids, written.made_bucket_starts, written.made_region_ids, strict=True
    )
    await settle_new_daily_rows(session, made)
    # Days before today may have later days whose running totals now fall short.
    late = earlier_days((row["website_id"], row["created_at"], row["region_id"]) for row in rows)
    await retotal_later_days(session, late)
    return int(written.inserted)


_GENERIC_PLANS = text("SET LOCAL plan_cache_mode = force_generic_plan")

# Bound with the columns' own types, so values are stored exactly as the ORM stores them.
_TYPED = (bindparam("website_id", type_=Uuid()), bindparam("created_at", type_=UtcDateTime()))
_INSERT_IF_MONITOR_EXISTS = text(
    f"INSERT INTO website_checks ({', '.join(CHECK_COLUMNS)}) "  # noqa: S608 - fixed names
    f"SELECT {', '.join(':' + c for c in CHECK_COLUMNS)} "
    "WHERE EXISTS (SELECT 1 FROM websites WHERE id = :website_id) "
    "ON CONFLICT DO NOTHING"
).bindparams(*_TYPED, bindparam("cert_expires_at", type_=UtcDateTime()))
_MOVE_LATEST = text(
    "UPDATE websites SET last_checked_at = :created_at,"
    " latest_response_time_ms = :response_time_ms,"
    " current_status = COALESCE(current_status, :status)"
    " WHERE id = :website_id AND (last_checked_at IS NULL OR last_checked_at < :created_at)"
).bindparams(*_TYPED)


async def _insert_results(session: AsyncSession, rows: list[dict[str, Any]]) -> int:
    """One row at a time, to learn which were inserted; returns how many were."""
    # Statements that write from the first one: SQLite takes its write lock at once instead
    # of failing a read-then-write transaction that another writer overtook.
    inserted = [
        _inserted_check(row)
        for row in rows
        if _rowcount(await session.execute(_INSERT_IF_MONITOR_EXISTS, row)) == 1
    ]
    await add_to_rollups(session, inserted)
    await bump_pages_of_monitors_without_status(session, [row["website_id"] for row in rows])
    await session.execute(_MOVE_LATEST, rows)
    return len(inserted)


def _rowcount(result: Result[Any]) -> int:
    assert isinstance(result, CursorResult)
    return result.rowcount


def _inserted_check(row: dict[str, Any]) -> InsertedCheck:
    return InsertedCheck(
        website_id=row["website_id"],
        created_at=row["created_at"],
        region_id=row["region_id"],
        status=row["status"],
        response_time_ms=row["response_time_ms"],
        interval_seconds=row["interval_seconds"],
    )
