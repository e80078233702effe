"""The due loop of the notification workers: attempts of recorded deliveries, when due.

No attempt waits in a worker slot. A failed attempt records its next due time on its row
(exponential backoff with full jitter, never sooner than the receiver's `Retry-After`, capped
by `NOTIFY_RETRY_MAX_SECONDS`) and frees its slot; the loop picks rows whose time has come,
each claimed by one worker alone (`claim_attempt`). A `Retry-After` also holds the channel
itself until then: its other deliveries wait, no other channel's do.

Each worker process runs at most `NOTIFY_MAX_PER_CHANNEL` attempts at once to one channel,
`NOTIFY_MAX_PER_USER` to one account's channels, and `NOTIFICATION_CONCURRENCY` in all; a due
row beyond a cap stays due, unclaimed, and is picked when its channel and account have room,
so a slow receiver of one account never delays another's alerts.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from runstate.channels.base import Channel
from runstate.metrics import PipelineMetrics
from runstate.pipeline.attempt import Attempt
from runstate.queue.base import StreamQueue
from runstate.settings import Settings
from runstate.storage.notification_log import (
    DueRow,
    claim_attempt,
    due_rows,
    make_undecided_due,
    renew_claim,
)

log = logging.getLogger(__name__)

# How often the loop looks for rows that other workers recorded or that became due, at most;
# the rows this worker records wake it at once.
DUE_POLL_SECONDS = 1.0


@dataclass
class Room:
    """Attempts under way in this process, by channel and by account, against the caps."""

    per_channel: int
    per_user: int
    total: int
    channels: Counter[uuid.UUID] = field(default_factory=Counter)
    users: Counter[uuid.UUID] = field(default_factory=Counter)
    running: int = 0

    @property
    def free(self) -> int:
        return self.total - self.running

    def full_channels(self) -> set[uuid.UUID]:
        return {c for c, n in self.channels.items() if n >= self.per_channel}

    def full_users(self) -> set[uuid.UUID]:
        return {u for u, n in self.users.items() if n >= self.per_user}

    def admits(self, row: DueRow) -> bool:
        return (
            self.running < self.total
            and (row.channel_id is None or self.channels[row.channel_id] < self.per_channel)
            and (row.user_id is None or self.users[row.user_id] < self.per_user)
        )

    def take(self, row: DueRow) -> None:
        self.running += 1
        if row.channel_id is not None:
            self.channels[row.channel_id] += 1
        if row.user_id is not None:
            self.users[row.user_id] += 1

    def give_back(self, row: DueRow) -> None:
        self.running -= 1
        if row.channel_id is not None:
            self.channels[row.channel_id] -= 1
            if not self.channels[row.channel_id]:
                del self.channels[row.channel_id]
        if row.user_id is not None:
            self.users[row.user_id] -= 1
            if not self.users[row.user_id]:
                del self.users[row.user_id]


@dataclass
class DueDeliveries:
    sessions: async_sessionmaker[AsyncSession]
    queue: StreamQueue
    channels: dict[str, Channel]
    settings: Settings
    metrics: PipelineMetrics
    room: Room = field(init=False)
    _wake: asyncio.Event = field(init=False, default_factory=asyncio.Event)
    _running: set[asyncio.Task[None]] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        settings = self.settings
        self.room = Room(
            settings.NOTIFY_MAX_PER_CHANNEL,
            settings.NOTIFY_MAX_PER_USER,
            settings.NOTIFICATION_CONCURRENCY,
        )

    @property
    def claim_lease(self) -> float:
        """Seconds after which a claim not renewed was left by a worker that died (or whose
        event loop stalled that long): as long as a stream entry's, `RECLAIM_IDLE_SECONDS`.
        Holders renew it three times as often."""
        return self.settings.RECLAIM_IDLE_SECONDS

    def wake(self) -> None:
        """Look for due rows now (this worker has just recorded some)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Start due attempts as room allows until ``stop``; then give the running ones
        `SHUTDOWN_TIMEOUT_SECONDS` (an attempt cut short is taken over once its claim lapses)."""
        settings = self.settings
        poll = min(DUE_POLL_SECONDS, settings.NOTIFY_RETRY_BASE_SECONDS)
        failures = 0
        next_sweep = 0.0
        while not stop.is_set():
            self._wake.clear()
            try:
                if time.monotonic() >= next_sweep:
                    await make_undecided_due(self.sessions, older_than=self._lease())
                    next_sweep = time.monotonic() + self.claim_lease
                await self.start_due()
                failures = 0
                pause = poll
            except Exception as exc:
                if not failures:
                    log.warning(
                        "cannot look for due deliveries; will try again",
                        extra={"error": type(exc).__name__},
                    )
                failures += 1
                pause = min(settings.OUTAGE_RETRY_MAX_SECONDS, 0.1 * 2**failures)
            await self._sleep(stop, pause)
        await self._finish(settings.SHUTDOWN_TIMEOUT_SECONDS)

    async def start_due(self) -> list[asyncio.Task[None]]:
        """Claim the due rows there is room for and start an attempt on each."""
        if self.room.free <= 0:
            return []
        lease = self._lease()
        found = await due_rows(
            self.sessions,
            lease=lease,
            limit=self.room.free * 2,  # some may be taken by another worker meanwhile
            busy_channels=self.room.full_channels(),
            busy_users=self.room.full_users(),
        )
        started: list[asyncio.Task[None]] = []
        for row in found:
            if not self.room.admits(row):
                continue  # stays due: its turn comes when its channel or account has room
            token = uuid.uuid4().hex
            claimed = await claim_attempt(self.sessions, row.log_id, token, lease)
            if claimed is None:
                continue  # another worker took it
            self.room.take(row)
            attempt = Attempt(self, claimed, token)
            task = asyncio.create_task(self._run_attempt(row, attempt))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            started.append(task)
        return started

    async def _run_attempt(self, row: DueRow, attempt: Attempt) -> None:
        try:
            async with self._renewing(attempt.row.id, attempt.token):
                await attempt.run()
        except Exception as exc:
            # An outage of the database or the queue: the claim lapses and another attempt
            # (here or on another worker) picks the row up again.
            log.warning(
                "a delivery attempt could not be completed; it will be taken up again",
                extra={"message_id": attempt.message_id, "error": type(exc).__name__},
            )
        finally:
            self.room.give_back(row)
            self.wake()

    @asynccontextmanager
    async def _renewing(self, log_id: uuid.UUID, token: str) -> AsyncIterator[None]:
        async def renew() -> None:
            while True:
                await asyncio.sleep(self.claim_lease / 3)
                with suppress(Exception):  # a missed renewal is made up by the next one
                    await renew_claim(self.sessions, log_id, token)

        renewing = asyncio.create_task(renew())
        try:
            yield
        finally:
            renewing.cancel()
            with suppress(asyncio.CancelledError):
                await renewing

    def _lease(self) -> timedelta:
        return timedelta(seconds=self.claim_lease)

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        woken = asyncio.create_task(self._wake.wait())
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({woken, stopped}, timeout=seconds, return_when="FIRST_COMPLETED")
        finally:
            for task in (woken, stopped):
                task.cancel()

    async def _finish(self, grace_seconds: float) -> None:
        if not self._running:
            return
        _, unfinished = await asyncio.wait(set(self._running), timeout=grace_seconds)
        for task in unfinished:
            task.cancel()
        with suppress(asyncio.CancelledError):
            await asyncio.gather(*unfinished, return_exceptions=True)
