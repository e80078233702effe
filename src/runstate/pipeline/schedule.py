"""Stage 1 — due monitors -> check jobs (the scheduler, the original's "monitoring pusher").

Each active monitor is checked every `interval_seconds`, on a fixed grid whose phase is
derived from its id: monitors spread evenly over their interval (no thundering herd), and a
restarted or replacement scheduler keeps the same grid. A monitor whose previous check is
still waiting or running is skipped (`PendingChecks`), so a slow target or a backlog never
piles up work. Only the holder of the scheduler lease enqueues; a standby takes over when
the lease lapses.

Two loops run side by side. One holds the lease and enqueues what is due. The other keeps
the plan book equal to the database (`schedule_sync`): a cheap change poll every
`poll_seconds`, and a full reconcile every `reconcile_seconds`, so that no change is missed
whatever the writers' clocks say; a slow reconcile delays no check. While the database does
not answer, nothing is enqueued (the workers could not record a result): each monitor's due
slots pass unused, the poll is retried with capped backoff, and when the database answers
again each monitor resumes at its next slot, with no burst of what was missed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass, field

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from runstate.domain.events import CheckJob
from runstate.metrics import PipelineMetrics
from runstate.pipeline.schedule_sync import Plan, PlanBook, next_due_ms, phase_ms
from runstate.queue.base import DueCheck, Lease, PendingChecks, QueueUnavailable, StreamQueue
from runstate.runtime import sleep_unless_stopped

__all__ = ["Scheduler", "SchedulerOptions", "next_due_ms", "phase_ms"]

log = logging.getLogger(__name__)

LEASE_NAME = "scheduler"
TICK_SECONDS = 0.05
# Errors that say the database cannot answer right now (a restart, a failover, a refused or
# cut connection, a file that cannot be opened): the scheduler waits them out.
DATABASE_OUTAGES = (SQLAlchemyError, OSError)
FIRST_RETRY_SECONDS = 0.25


@dataclass
class SchedulerOptions:
    stream: str
    stream_maxlen: int
    poll_seconds: float = 2.0
    lease_seconds: float = 10.0
    max_batch: int = 5000
    load_chunk: int = 2000  # rows read at a time when loading the monitors
    lease_name: str = LEASE_NAME  # schedulers sharing one lease name stand in for each other
    reconcile_seconds: float = 300.0  # a full reload of every monitor, this often
    outage_retry_max_seconds: float = 10.0  # the longest wait between two tries of the database


@dataclass
class _Outage:
    """Since when the database has not answered, and what was given up meanwhile."""

    since: float = field(default_factory=time.monotonic)
    tries: int = 0
    slots_skipped: int = 0

    def next_delay(self, cap: float) -> float:
        """Capped exponential backoff with jitter (half to full), so that schedulers do not
        retry in step."""
        self.tries += 1
        ceiling = min(cap, FIRST_RETRY_SECONDS * 2.0 ** min(self.tries - 1, 30))
        return ceiling * random.uniform(0.5, 1.0)  # noqa: S311 - jitter


@dataclass
class Scheduler:
    sessions: async_sessionmaker[AsyncSession]
    queue: StreamQueue
    pending: PendingChecks
    lease: Lease
    holder: str
    metrics: PipelineMetrics
    options: SchedulerOptions
    book: PlanBook = field(init=False)
    is_active: bool = False
    # Set when the lease is taken: the book is emptied and reloaded before anything is
    # enqueued, so that a returning holder does not enqueue the slots it missed.
    _fresh_start: bool = False
    _outage: _Outage | None = None  # the database's, while it lasts
    _queue_failing: bool = False
    _unreleased: list[uuid.UUID] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.book = PlanBook(load_chunk=self.options.load_chunk)

    @property
    def plans(self) -> dict[uuid.UUID, Plan]:
        return self.book.plans

    @property
    def database_answers(self) -> bool:
        return self._outage is None

    async def run(self, stop: asyncio.Event) -> None:
        sync = asyncio.create_task(self._keep_in_sync(stop), name="scheduler-sync")
        try:
            await self._lead_and_enqueue(stop, sync)
        finally:
            sync.cancel()  # a read of the monitors is safe to cut short
            with suppress(asyncio.CancelledError):
                await sync  # raises what made it fail, if anything did

    # --- the lease and the enqueuing ----------------------------------------------------

    async def _lead_and_enqueue(self, stop: asyncio.Event, sync: asyncio.Task[None]) -> None:
        loop = asyncio.get_running_loop()
        next_lease = 0.0
        while not stop.is_set() and not sync.done():
            now = loop.time()
            if now >= next_lease:
                await self._hold_lease()
                next_lease = now + self.options.lease_seconds / 3
            if self.is_active and not self._fresh_start:
                try:
                    await self._enqueue_due()
                except (QueueUnavailable, OSError) as exc:
                    # An outage of the queue: pause and try again (the lease check goes
                    # on), as the workers do, rather than take the process down.
                    self._note_queue_outage(exc)
                    await sleep_unless_stopped(stop, min(1.0, self.options.lease_seconds / 3))
                    continue
                self._note_queue_outage(None)
            await sleep_unless_stopped(stop, TICK_SECONDS)
        if self.is_active:
            with suppress(QueueUnavailable):  # the lease lapses by itself then
                await self.lease.release(self.options.lease_name, self.holder)

    def _note_queue_outage(self, error: Exception | None) -> None:
        """Log the start and the end of an outage once each, not every tick."""
        if error is not None and not self._queue_failing:
            log.warning("scheduling failed; retrying", extra={"error": str(error)})
        elif error is None and self._queue_failing:
            log.info("scheduling resumed")
        self._queue_failing = error is not None

    async def _hold_lease(self) -> None:
        try:
            held = await self.lease.acquire(
                self.options.lease_name, self.holder, int(self.options.lease_seconds * 1000)
            )
        except QueueUnavailable as exc:
            log.warning("cannot reach the lease; standing by", extra={"error": str(exc)})
            held = False
        if held != self.is_active:
            log.info("scheduler %s", "active" if held else "standing by")
            if held:  # a fresh start: whatever the last holder planned is re-read
                self._fresh_start = True
        self.is_active = held
        self.metrics.scheduler_active.set(1 if held else 0)

    async def _enqueue_due(self) -> None:
        now_ms = int(time.time() * 1000)
        due = self.book.pop_due(now_ms, self.options.max_batch)
        if not due:
            return
        if self._outage is not None:
            # Nothing is enqueued that the workers could not record: the slot passes.
            self._outage.slots_skipped += len(due)
            return
        await self._publish([(plan.job(due_ms), due_ms) for plan, due_ms in due], now_ms)

    async def _publish(self, due: list[tuple[CheckJob, int]], now_ms: int) -> None:
        marks = await self.pending.mark(
            [DueCheck(job.website_id, _stale_after_ms(job)) for job, _ in due], now_ms=now_ms
        )
        ready = [item for item, marked in zip(due, marks, strict=True) if marked]
        self.metrics.skipped_pending.inc(len(due) - len(ready))
        for _, due_ms in ready:
            self.metrics.lateness.observe(max(now_ms - due_ms, 0) / 1000)
        if not ready:
            return
        try:
            await self.queue.publish(
                self.options.stream,
                [job.to_fields() for job, _ in ready],
                maxlen=self.options.stream_maxlen,
            )
        except Exception:
            # Not enqueued, so not pending: left marked, these monitors would wait for the
            # marks to go stale (minutes) instead of their next slot.
            with suppress(Exception):
                await self.pending.release([job.website_id for job, _ in ready])
            raise
        self.metrics.enqueued.inc(len(ready))

    # --- keeping the book equal to the database -----------------------------------------

    async def _keep_in_sync(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_reconcile = 0.0
        while not stop.is_set():
            if not self.is_active:
                await sleep_unless_stopped(stop, TICK_SECONDS)
                continue
            if self._fresh_start:
                self.book.clear()
                self._fresh_start, next_reconcile = False, 0.0
            started = loop.time()
            # While the database is down, the cheap poll tells when it answers again; the
            # reconcile follows at once.
            reconcile = started >= next_reconcile and self._outage is None
            try:
                async with self.sessions() as session:
                    book = self.book
                    gone = await (book.reconcile(session) if reconcile else book.poll(session))
            except DATABASE_OUTAGES as exc:
                delay = self._note_database_outage(exc)
                await sleep_unless_stopped(stop, delay)
                continue
            if reconcile:
                next_reconcile = started + self.options.reconcile_seconds
            elif self._outage is not None:
                self._note_database_answers()
                next_reconcile = 0.0
            await self._release_marks_of(gone)
            await sleep_unless_stopped(stop, self.options.poll_seconds)

    def _note_database_outage(self, error: Exception) -> float:
        """Pause enqueuing until the database answers (logged once per outage); returns how
        long to wait before trying it again."""
        if self._outage is None:
            self._outage = _Outage()
            log.warning(
                "database not answering; enqueuing paused until it does",
                extra={"error": _first_line(error)},
            )
        return self._outage.next_delay(self.options.outage_retry_max_seconds)

    def _note_database_answers(self) -> None:
        outage, self._outage = self._outage, None
        if outage is not None:
            log.info(
                "database answering again; enqueuing resumed at each monitor's next slot",
                extra={
                    "outage_s": round(time.monotonic() - outage.since, 1),
                    "slots_skipped": outage.slots_skipped,
                },
            )

    async def _release_marks_of(self, gone: list[uuid.UUID]) -> None:
        """Release the pending marks of deleted monitors (they would otherwise stay in the
        hash for good); kept for the next round while the queue is unreachable."""
        self._unreleased += gone
        if not self._unreleased:
            return
        try:
            await self.pending.release(self._unreleased)
        except QueueUnavailable:
            return
        self._unreleased = []


def _first_line(error: Exception) -> str:
    # SQLAlchemy appends the statement and a link on further lines: the first says it all.
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _stale_after_ms(job: CheckJob) -> int:
    # A mark is presumed lost (its worker died and the entry was dead-lettered, or the
    # queue lost it) after several intervals; until then the check is still on its way.
    return max(3 * job.interval_seconds * 1000, 5 * 60 * 1000)
