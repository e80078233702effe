"""The scheduler's plan book: every active monitor with its next slot, kept equal to the
database in two ways, both reading only the columns a plan needs, in chunks.

- **The change poll** (`PlanBook.poll`, every `SCHEDULER_POLL_SECONDS`): a count and the
  newest `updated_at`; when they moved, the rows changed since shortly before the newest
  already seen, and the list of ids when the count disagrees. Cheap and prompt, but it
  trusts the writers' clocks: an edit stamped older than that (an API process whose clock
  is behind, a commit that waited on a lock) can escape it.
- **The full reconcile** (`PlanBook.reconcile`, every `SCHEDULER_RECONCILE_SECONDS`, and
  whenever the scheduler starts afresh): every monitor's row, streamed in chunks, and the
  book made to match it exactly: monitors added, updated, paused and removed. It depends on
  no clock, so no change is missed for longer than one reconcile period.
"""

from __future__ import annotations

import heapq
import time
import uuid
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from runstate.domain.events import CheckJob, time_from_ms
from runstate.storage.tables import Website

# Clocks of API processes may differ a little: the poll re-reads rows changed shortly before
# the newest change already seen (re-reading is harmless). What escapes it, the reconcile
# catches.
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
class CheckSettings:
    """How a monitor is checked, apart from its id and URL. Most monitors share their
    settings, so plans share one object each (see `PlanBook._shared_settings`): 100,000 plans
    then cost a few hundred bytes each, not a full job each."""

    method: str
    timeout_ms: int
    expected_status: str
    keyword: str | None
    confirmations: int
    recovery_confirmations: int
    interval_seconds: int


@dataclass(slots=True)
class Plan:
    website_id: uuid.UUID
    url: str
    settings: CheckSettings
    due_ms: int
    seen_in: int  # the reconcile round that last saw this monitor's row

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
class PlanBook:
    load_chunk: int = 2000  # rows read at a time
    plans: dict[uuid.UUID, Plan] = field(default_factory=dict)
    paused: set[uuid.UUID] = field(default_factory=set)
    _heap: list[tuple[int, uuid.UUID]] = field(default_factory=list)
    _settings: weakref.WeakValueDictionary[tuple[Any, ...], CheckSettings] = field(
        default_factory=weakref.WeakValueDictionary
    )
    _round: int = 0
    _seen_count: int = -1
    _seen_newest: datetime | None = None
    _last_change: float = 0.0

    def clear(self) -> None:
        """Forget every plan: the next poll or reconcile reads every monitor afresh."""
        self.plans.clear()
        self.paused.clear()
        self._heap.clear()
        self._seen_count, self._seen_newest = -1, None

    def pop_due(self, now_ms: int, limit: int) -> list[tuple[Plan, int]]:
        """Up to ``limit`` plans due at ``now_ms``, each with the slot it was due at, and each
        moved on to its first slot after ``now_ms`` (so a late monitor never catches up on the
        slots it missed)."""
        due: list[tuple[Plan, int]] = []
        heap = self._heap
        while heap and heap[0][0] <= now_ms and len(due) < limit:
            due_ms, website_id = heapq.heappop(heap)
            plan = self.plans.get(website_id)
            if plan is None or plan.due_ms != due_ms:
                continue  # deleted, paused, or rescheduled since
            due.append((plan, due_ms))
            plan.due_ms = next_due_ms(website_id, plan.settings.interval_seconds, now_ms)
            heapq.heappush(heap, (plan.due_ms, website_id))
        return due

    async def poll(self, session: AsyncSession) -> list[uuid.UUID]:
        """Apply what changed since the last look, judged by the count and the newest
        `updated_at`; returns the ids of the monitors that are gone."""
        count, newest = await self._count_and_newest(session)
        quiet = time.monotonic() - self._last_change > CHANGE_MARGIN.total_seconds()
        # After a change, look again for a while: a transaction that committed late
        # carries an updated_at older than the newest already seen.
        if count == self._seen_count and newest == self._seen_newest and quiet:
            return []
        query = select(*_PLAN_COLUMNS)
        if self._seen_newest is not None:
            query = query.where(Website.updated_at >= self._seen_newest - CHANGE_MARGIN)
        rows = await session.stream(query.execution_options(yield_per=self.load_chunk))
        async for chunk in rows.partitions():
            self._apply(chunk, self.paused)
        gone: list[uuid.UUID] = []
        if count != len(self.plans) + len(self.paused):
            # Some were deleted, or committed so late that the query above missed them:
            # find which, so that the counts agree again.
            existing = set(await session.scalars(select(Website.id)))
            gone = [website_id for website_id in self.plans if website_id not in existing]
            self.paused &= existing
            missed = list(existing.difference(self.plans, self.paused))
            for start in range(0, len(missed), self.load_chunk):
                ids = missed[start : start + self.load_chunk]
                late = await session.execute(select(*_PLAN_COLUMNS).where(Website.id.in_(ids)))
                self._apply(late, self.paused)
        for website_id in gone:
            del self.plans[website_id]
        self._note_seen(count, newest)
        return gone

    async def reconcile(self, session: AsyncSession) -> list[uuid.UUID]:
        """Make the book match every monitor's row, whatever the clocks said; returns the ids
        of the monitors that are gone.

        Rows are streamed ``load_chunk`` at a time and applied as they come; a monitor is
        known to be gone when no row of this round marked its plan (no second set of ids is
        built)."""
        # Read before the rows: a change committed in between moves them again, and the
        # next poll reads it.
        count, newest = await self._count_and_newest(session)
        self._round += 1
        paused: set[uuid.UUID] = set()
        rows = await session.stream(
            select(*_PLAN_COLUMNS).execution_options(yield_per=self.load_chunk)
        )
        async for chunk in rows.partitions():
            self._apply(chunk, paused)
        gone = [w for w, plan in self.plans.items() if plan.seen_in != self._round]
        for website_id in gone:
            del self.plans[website_id]
        self.paused = paused
        self._note_seen(count, newest)
        return gone

    @staticmethod
    async def _count_and_newest(session: AsyncSession) -> tuple[int, datetime | None]:
        count, newest = (
            await session.execute(select(func.count(), func.max(Website.updated_at)))
        ).one()
        return int(count), newest

    def _note_seen(self, count: int, newest: datetime | None) -> None:
        if (count, newest) != (self._seen_count, self._seen_newest):
            self._last_change = time.monotonic()
        self._seen_count, self._seen_newest = count, newest

    def _apply(self, rows: Iterable[Any], paused: set[uuid.UUID]) -> None:
        now_ms = int(time.time() * 1000)
        for website in rows:
            if website.paused:
                self.plans.pop(website.id, None)
                paused.add(website.id)
                continue
            paused.discard(website.id)
            settings = self._shared_settings(website)
            plan = self.plans.get(website.id)
            if plan is not None and plan.settings.interval_seconds == settings.interval_seconds:
                plan.url, plan.settings = website.url, settings  # keeps its slot
                plan.seen_in = self._round
                continue
            due = next_due_ms(website.id, settings.interval_seconds, now_ms)
            self.plans[website.id] = Plan(website.id, website.url, settings, due, self._round)
            heapq.heappush(self._heap, (due, website.id))

    def _shared_settings(self, website: Any) -> CheckSettings:
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
            settings = self._settings[key] = CheckSettings(*key)
        return settings
