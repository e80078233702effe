"""Housekeeping: rows nothing will ever need again are deleted, in short batches.

Refresh tokens are the rows that pile up: every sign-in adds a family, every refresh adds a
token and keeps the one it replaced (revoked), so that the re-use of a stolen, already
rotated token can be recognised and its whole family revoked. A token can go once it can
no longer matter:

- it has **expired**: a refresh with it is refused before anything else is looked at, so
  whether its row exists changes nothing (this takes whole families with it as they age);
- it is **revoked and its family can no longer be used**: no token of its sign-in is both
  unrevoked and unexpired (the user signed out, or the family was revoked for a re-use).
  A revoked token of a family still in use stays: it is what recognises a re-use.

History is the other thing that piles up: retention (runstate.history.retention) drops the
checks and rollups that aged out and makes the partitions of the days ahead.

Status pages are rendered once per version: after 00:00 UTC every page whose version has
not moved since then is bumped once, so that its 90-day bar moves on to the new day.

The jobs run once at start and then every `PRUNE_INTERVAL_SECONDS`, in one process only (the
scheduler holding the lease: in `runstate up` that is always the one process), and delete at
most `DELETE_BATCH_ROWS` rows per statement, each statement its own short transaction, so
that the write lock (SQLite's, for one) is never held for long. Each job runs in a loop of
its own, with its own schedule and backoff: one that fails or waits never holds up another.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, and_, delete, exists, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from runstate.history.retention import RetentionPolicy, apply_retention
from runstate.runtime import sleep_unless_stopped
from runstate.storage.status_pages import bump_pages_unchanged_since
from runstate.storage.tables import RefreshToken

if TYPE_CHECKING:
    from runstate.settings import Settings

log = logging.getLogger(__name__)

# How often a process that does not prune (a standby scheduler) asks again whether it does.
LEADER_CHECK_SECONDS = 1.0
FIRST_RETRY_SECONDS = 0.5


def _unusable(token: type[RefreshToken], now: datetime) -> ColumnElement[bool]:
    """True for a row of ``token`` that no refresh can ever accept or learn from again."""
    live = aliased(RefreshToken)
    family_in_use = exists().where(
        live.family_id == token.family_id,
        live.revoked_at.is_(None),
        live.expires_at > now,
    )
    return or_(token.expires_at <= now, and_(token.revoked_at.is_not(None), ~family_in_use))


async def prune_refresh_tokens(
    sessions: async_sessionmaker[AsyncSession], *, batch_rows: int, now: datetime | None = None
) -> int:
    """Delete every refresh token that can no longer matter (see the module's docstring),
    at most ``batch_rows`` per statement and transaction; returns how many went."""
    moment = now or datetime.now(UTC)
    candidate = aliased(RefreshToken)
    batch = select(candidate.id).where(_unusable(candidate, moment)).limit(batch_rows)
    statement = delete(RefreshToken).where(RefreshToken.id.in_(batch.scalar_subquery()))
    deleted = 0
    while True:
        async with sessions() as session, session.begin():
            result = await session.execute(statement.execution_options(synchronize_session=False))
        removed = int(getattr(result, "rowcount", 0) or 0)
        deleted += removed
        if removed < batch_rows:
            return deleted
        await asyncio.sleep(0)  # between two batches, others get the lock and the loop


@dataclass(frozen=True)
class Job:
    """One housekeeping job: a name for the logs, and one run of it (idempotent; a database
    error means "try again later")."""

    name: str
    run: Callable[[], Awaitable[None]]


def prune_refresh_tokens_job(sessions: async_sessionmaker[AsyncSession], batch_rows: int) -> Job:
    async def run() -> None:
        deleted = await prune_refresh_tokens(sessions, batch_rows=batch_rows)
        if deleted:
            log.info("pruned refresh tokens", extra={"deleted": deleted})

    return Job("refresh tokens", run)


def retention_job(engine: AsyncEngine, policy: RetentionPolicy) -> Job:
    async def run() -> None:
        await apply_retention(engine, policy)

    return Job("retention", run)


def status_pages_new_day_job(sessions: async_sessionmaker[AsyncSession]) -> Job:
    async def run() -> None:
        start_of_day = datetime.combine(datetime.now(UTC).date(), time(), tzinfo=UTC)
        async with sessions() as session, session.begin():
            bumped = await bump_pages_unchanged_since(session, start_of_day)
        if bumped:
            log.info("status pages moved on to a new day", extra={"pages": bumped})

    return Job("status pages' new day", run)


@dataclass
class _Schedule:
    next_run: float = 0.0  # due at once: every job runs at start
    failures: int = 0


@dataclass
class Housekeeping:
    """Runs each of ``jobs`` every ``interval_seconds`` while ``is_leader()`` says this
    process is the one that keeps house. A job whose database does not answer is tried again
    with capped backoff (``retry_max_seconds``), logged once per outage, on its own schedule;
    no job stops the process or the other jobs.
    """

    jobs: Sequence[Job]
    interval_seconds: float
    retry_max_seconds: float
    is_leader: Callable[[], bool]

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        is_leader: Callable[[], bool],
    ) -> Housekeeping:
        return cls(
            jobs=[
                prune_refresh_tokens_job(sessions, settings.DELETE_BATCH_ROWS),
                retention_job(engine, RetentionPolicy.from_settings(settings)),
                status_pages_new_day_job(sessions),
            ],
            interval_seconds=settings.PRUNE_INTERVAL_SECONDS,
            retry_max_seconds=settings.OUTAGE_RETRY_MAX_SECONDS,
            is_leader=is_leader,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Each job in a loop of its own: a job that waits long (a detach behind a long
        transaction) holds up no other."""
        await asyncio.gather(*(self._run_job(job, stop) for job in self.jobs))

    async def _run_job(self, job: Job, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        schedule = _Schedule()
        while not stop.is_set():
            if not self.is_leader():
                # Asked again every LEADER_CHECK_SECONDS: the lease can move.
                await sleep_unless_stopped(stop, LEADER_CHECK_SECONDS)
                continue
            if schedule.next_run <= loop.time():
                await self._run_once(job, schedule, loop.time)
            until_due = schedule.next_run - loop.time()
            if until_due > 0:
                await sleep_unless_stopped(stop, min(until_due, LEADER_CHECK_SECONDS))

    async def _run_once(self, job: Job, schedule: _Schedule, clock: Callable[[], float]) -> None:
        try:
            await job.run()
        except (SQLAlchemyError, OSError) as exc:
            if schedule.failures == 0:
                log.warning(
                    "housekeeping failed; retrying with backoff",
                    extra={"job": job.name, "error": f"{type(exc).__name__}: {_first_line(exc)}"},
                )
            schedule.failures += 1
            ceiling = min(
                self.retry_max_seconds, FIRST_RETRY_SECONDS * 2.0 ** min(schedule.failures, 30)
            )
            jittered = ceiling * random.uniform(0.5, 1.0)  # noqa: S311 - jitter
            schedule.next_run = clock() + jittered
            return
        if schedule.failures:
            log.info("housekeeping resumed", extra={"job": job.name})
        schedule.failures = 0
        schedule.next_run = clock() + self.interval_seconds


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""
