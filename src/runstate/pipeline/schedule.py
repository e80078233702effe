"""Stage 1 — due monitors -> check jobs (the scheduler, the original's "monitoring pusher").

Each active monitor is checked every `interval_seconds`, on a fixed grid whose phase is
derived from its id: monitors spread evenly over their interval (no thundering herd), and a
restarted or replacement scheduler keeps the same grid. A monitor whose previous check is
still waiting or running is skipped (`PendingChecks`), so a slow target or a backlog never
piles up work. Only the holder of the scheduler lease enqueues; a standby takes over when
the lease lapses.

Changes made through the API are picked up by polling: a cheap count and newest
`updated_at` every `poll_seconds`, and the changed rows (or, when monitors were deleted, the
list of ids) only when those moved.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
import uuid
import weakref
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from runstate.domain.events import CheckJob, time_from_ms
from runstate.metrics import PipelineMetrics
from runstate.queue.base import DueCheck, Lease, PendingChecks, QueueUnavailable, StreamQueue
from runstate.runtime import sleep_unless_stopped
from runstate.storage.tables import Website

log = logging.getLogger(__name__)

LEASE_NAME = "scheduler"
TICK_SECONDS = 0.05
# Clocks of API processes may differ a little: re-read rows changed shortly before the
# newest change already seen (re-reading is harmless).
CHANGE_MARGIN = timedelta(seconds=5)


def phase_ms(website_id: uuid.UUID, interval_ms: int) -> int:
    """Where in its interval a monitor's checks fall: stable, and uniform over monitors."""
    return website_id.int % interval_ms


def next_due_ms(website_id: uuid.UUID, interval_seconds: int, after_ms: int) -> int:
    """The first grid point of this monitor strictly after ``after_ms``."""
    interval_ms = interval_seconds * 1000
    phase = phase_ms(website_id, interval_ms)
    return after_ms + interval_ms - ((after_ms - phase) % interval_ms)


@dataclass(frozen=True, slots=True, weakref_slot=True)
class _CheckSettings:
    """How a monitor is checked, apart from its id and URL. Most monitors share their
    settings, so plans share one object each (see `_shared_settings`): 100,000 plans then
    cost a few hundred bytes each, not a full job each."""

    method: str
    timeout_ms: int
    expected_status: str
    keyword: str | None
    confirmations: int
    recovery_confirmations: int
    interval_seconds: int


@dataclass(slots=True)
class _Plan:
    website_id: uuid.UUID
    url: str
    settings: _CheckSettings
    due_ms: int

    def job(self, due_ms: int) -> CheckJob:
        settings = self.settings
        return CheckJob(
            website_id=self.website_id,
            url=self.url,
            method=settings.method,
            timeout_ms=settings.timeout_ms,
            expected_status=settings.expected_status,
            keyword=settings.keyword,
            confirmations=settings.confirmations,
            recovery_confirmations=settings.recovery_confirmations,
            interval_seconds=settings.interval_seconds,
            scheduled_at=time_from_ms(due_ms),
        )


# The columns a plan needs, read as plain rows (not ORM objects) and in chunks, so that
# loading 100,000 monitors never holds them all in memory at once.
_PLAN_COLUMNS = (
    Website.id,
    Website.url,
    Website.method,
    Website.timeout_ms,
    Website.expected_status,
    Website.keyword,
    Website.confirmations,
    Website.recovery_confirmations,
    Website.interval_seconds,
    Website.paused,
)


@dataclass
class SchedulerOptions:
    stream: str
    stream_maxlen: int
    poll_seconds: float = 2.0
    lease_seconds: float = 10.0
    max_batch: int = 5000
    load_chunk: int = 2000  # rows read at a time when loading the monitors
    lease_name: str = LEASE_NAME  # schedulers sharing one lease name stand in for each other


@dataclass
class Scheduler:
    sessions: async_sessionmaker[AsyncSession]
    queue: StreamQueue
    pending: PendingChecks
    lease: Lease
    holder: str
    metrics: PipelineMetrics
    options: SchedulerOptions
    plans: dict[uuid.UUID, _Plan] = field(default_factory=dict)
    _heap: list[tuple[int, uuid.UUID]] = field(default_factory=list)
    _paused: set[uuid.UUID] = field(default_factory=set)
    _settings: weakref.WeakValueDictionary[tuple[Any, ...], _CheckSettings] = field(
        default_factory=weakref.WeakValueDictionary
    )
    _seen_count: int = -1
    _last_change: float = 0.0
    _seen_newest: datetime | None = None
    is_active: bool = False
    _failing: bool = False

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_lease = next_poll = 0.0
        while not stop.is_set():
            now = loop.time()
            if now >= next_lease:
                await self._hold_lease()
                next_lease = now + self.options.lease_seconds / 3
            try:
                if self.is_active and now >= next_poll:
                    next_poll = now + self.options.poll_seconds
                    await self._refresh()
                if self.is_active:
                    await self._enqueue_due()
            except (QueueUnavailable, SQLAlchemyError, OSError) as exc:
                # An outage of the queue or the database: pause and try again (the lease
                # check goes on), as the workers do, rather than take the process down.
                self._outage(exc)
                await sleep_unless_stopped(stop, min(1.0, self.options.lease_seconds / 3))
                continue
            self._outage(None)
            await sleep_unless_stopped(stop, TICK_SECONDS)
        if self.is_active:
            with suppress(QueueUnavailable):  # the lease lapses by itself then
                await self.lease.release(self.options.lease_name, self.holder)

    def _outage(self, error: Exception | None) -> None:
        """Log the start and the end of an outage once each, not every tick."""
        if error is not None and not self._failing:
            log.warning("scheduling failed; retrying", extra={"error": str(error)})
        elif error is None and self._failing:
            log.info("scheduling resumed")
        self._failing = error is not None

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
                self._seen_count, self._seen_newest = -1, None
        self.is_active = held
        self.metrics.scheduler_active.set(1 if held else 0)

    async def _refresh(self) -> None:
        async with self.sessions() as session:
            count, newest = (
                await session.execute(select(func.count(), func.max(Website.updated_at)))
            ).one()
            quiet = time.monotonic() - self._last_change > CHANGE_MARGIN.total_seconds()
            # After a change, look again for a while: a transaction that committed late
            # carries an updated_at older than the newest already seen.
            if count == self._seen_count and newest == self._seen_newest and quiet:
                return
            query = select(*_PLAN_COLUMNS)
            if self._seen_newest is not None:
                query = query.where(Website.updated_at >= self._seen_newest - CHANGE_MARGIN)
            rows = await session.stream(query.execution_options(yield_per=self.options.load_chunk))
            async for chunk in rows.partitions():
                self._apply_changes(chunk)
            gone: list[uuid.UUID] = []
            if count != len(self.plans) + len(self._paused):
                # Some were deleted, or committed so late that the query above missed them:
                # find which, so that the counts agree again.
                existing = set(await session.scalars(select(Website.id)))
                gone = [website_id for website_id in self.plans if website_id not in existing]
                self._paused &= existing
                missed = list(existing.difference(self.plans, self._paused))
                for start in range(0, len(missed), self.options.load_chunk):
                    ids = missed[start : start + self.options.load_chunk]
                    late = await session.execute(select(*_PLAN_COLUMNS).where(Website.id.in_(ids)))
                    self._apply_changes(list(late))
        for website_id in gone:
            del self.plans[website_id]
        if gone:  # their marks would otherwise stay in the pending hash for good
            await self.pending.release(gone)
        if (count, newest) != (self._seen_count, self._seen_newest):
            self._last_change = time.monotonic()
        self._seen_count, self._seen_newest = count, newest

    def _apply_changes(self, changed: Sequence[Any]) -> None:
        now_ms = int(time.time() * 1000)
        for website in changed:
            if website.paused:
                self.plans.pop(website.id, None)
                self._paused.add(website.id)
                continue
            self._paused.discard(website.id)
            settings = self._shared_settings(website)
            plan = self.plans.get(website.id)
            if plan is not None and plan.settings.interval_seconds == settings.interval_seconds:
                plan.url, plan.settings = website.url, settings  # keeps its slot
                continue
            due = next_due_ms(website.id, settings.interval_seconds, now_ms)
            self.plans[website.id] = _Plan(website.id, website.url, settings, due)
            heapq.heappush(self._heap, (due, website.id))

    def _shared_settings(self, website: Any) -> _CheckSettings:
        key = (
            website.method,
            website.timeout_ms,
            website.expected_status,
            website.keyword,
            website.confirmations,
            website.recovery_confirmations,
            website.interval_seconds,
        )
        settings = self._settings.get(key)
        if settings is None:
            # Held weakly (the key is a plain tuple, not the settings): settings that no
            # plan uses any more are forgotten.
            settings = self._settings[key] = _CheckSettings(*key)
        return settings

    async def _enqueue_due(self) -> None:
        now_ms = int(time.time() * 1000)
        due: list[tuple[CheckJob, int]] = []
        while self._heap and self._heap[0][0] <= now_ms and len(due) < self.options.max_batch:
            due_ms, website_id = heapq.heappop(self._heap)
            plan = self.plans.get(website_id)
            if plan is None or plan.due_ms != due_ms:
                continue  # deleted, paused, or rescheduled since
            due.append((plan.job(due_ms), due_ms))
            plan.due_ms = next_due_ms(website_id, plan.settings.interval_seconds, now_ms)
            heapq.heappush(self._heap, (plan.due_ms, website_id))
        if due:
            await self._publish(due, now_ms)

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


def _stale_after_ms(job: CheckJob) -> int:
    # A mark is presumed lost (its worker died and the entry was dead-lettered, or the
    # queue lost it) after several intervals; until then the check is still on its way.
    return max(3 * job.interval_seconds * 1000, 5 * 60 * 1000)
