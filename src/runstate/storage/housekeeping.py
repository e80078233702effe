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

The job runs every `PRUNE_INTERVAL_SECONDS` in one process only, the scheduler holding the
lease, and deletes at most `DELETE_BATCH_ROWS` rows per statement, each statement its own
short transaction, so that the write lock (SQLite's, for one) is never held for long.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, and_, delete, exists, or_, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from runstate.runtime import sleep_unless_stopped
from runstate.storage.tables import RefreshToken

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


@dataclass
class Housekeeping:
    """Runs the pruning every ``interval_seconds`` while ``is_leader()`` says this process
    is the one that prunes. A database that does not answer is tried again with capped
    backoff (``retry_max_seconds``), logged once per outage; the job never stops the process.
    """

    sessions: async_sessionmaker[AsyncSession]
    interval_seconds: float
    batch_rows: int
    retry_max_seconds: float
    is_leader: Callable[[], bool]

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_run = 0.0
        failures = 0
        while not stop.is_set():
            until_due = next_run - loop.time()
            if not self.is_leader() or until_due > 0:
                # Asked again at least every LEADER_CHECK_SECONDS: the lease can move.
                pause = until_due if self.is_leader() else LEADER_CHECK_SECONDS
                await sleep_unless_stopped(stop, min(pause, LEADER_CHECK_SECONDS))
                continue
            try:
                deleted = await prune_refresh_tokens(self.sessions, batch_rows=self.batch_rows)
            except (SQLAlchemyError, OSError) as exc:
                if failures == 0:
                    log.warning(
                        "pruning failed; retrying with backoff",
                        extra={"error": f"{type(exc).__name__}: {_first_line(exc)}"},
                    )
                failures += 1
                ceiling = min(
                    self.retry_max_seconds, FIRST_RETRY_SECONDS * 2.0 ** min(failures, 30)
                )
                jittered = ceiling * random.uniform(0.5, 1.0)  # noqa: S311 - jitter
                await sleep_unless_stopped(stop, jittered)
                continue
            if failures:
                log.info("pruning resumed")
            failures = 0
            if deleted:
                log.info("pruned refresh tokens", extra={"deleted": deleted})
            next_run = loop.time() + self.interval_seconds


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""
