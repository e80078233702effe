"""Pruning of refresh tokens on SQLite and PostgreSQL: expired tokens and the tokens of
families that can no longer be used go; live tokens, and every token of a family still in
use, stay; deletes go in batches of at most DELETE_BATCH_ROWS, each its own transaction; the
jobs run only in the scheduler holding the lease, every PRUNE_INTERVAL_SECONDS, each on its
own schedule (a failing one holds up no other)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import event, select

from runstate.processes import Pipeline
from runstate.queue.backend import open_backend
from runstate.storage.housekeeping import (
    Housekeeping,
    Job,
    prune_refresh_tokens,
    prune_refresh_tokens_job,
)
from runstate.storage.tables import RefreshToken, User
from tests.pipeline.conftest import StageDb, eventually, open_stage_db, stage_settings
from tests.pipeline.conftest import stage_postgres_url as stage_postgres_url  # the fixture

HOUR = timedelta(hours=1)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StageDb]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'runstate.db'}"
    else:
        url = request.getfixturevalue("stage_postgres_url")
    opened = await open_stage_db(request.param, url)
    try:
        yield opened
    finally:
        await opened.engine.dispose()


def token(user: User, family: uuid.UUID, *, expires_in: timedelta, revoked: bool) -> RefreshToken:
    now = datetime.now(UTC)
    return RefreshToken(
        id=uuid.uuid4(),
        user_id=user.id,
        family_id=family,
        token_hash=uuid.uuid4().hex + uuid.uuid4().hex,
        created_at=now - HOUR,
        expires_at=now + expires_in,
        revoked_at=now - timedelta(minutes=5) if revoked else None,
    )


async def remaining(db: StageDb) -> set[uuid.UUID]:
    return set(await db.all(select(RefreshToken.id)))


async def test_expired_tokens_and_families_no_longer_usable_go_and_the_rest_stays(
    db: StageDb,
) -> None:
    user = await db.user()
    in_use, signed_out, unusable, alone = (uuid.uuid4() for _ in range(4))
    # A family in use: its rotated token (revoked, not expired) must stay, for the re-use of
    # a stolen copy to revoke the family; its current token stays too.
    rotated = token(user, in_use, expires_in=HOUR, revoked=True)
    current = token(user, in_use, expires_in=2 * HOUR, revoked=False)
    live = token(user, alone, expires_in=HOUR, revoked=False)
    going = [
        # signed out: every token revoked, none expired
        token(user, signed_out, expires_in=HOUR, revoked=True),
        token(user, signed_out, expires_in=2 * HOUR, revoked=True),
        # a revoked token whose family's only unrevoked token has expired
        token(user, unusable, expires_in=HOUR, revoked=True),
        token(user, unusable, expires_in=-HOUR, revoked=False),
        # expired, revoked or not, of a family otherwise in use
        token(user, in_use, expires_in=-timedelta(seconds=1), revoked=False),
        token(user, in_use, expires_in=-2 * HOUR, revoked=True),
    ]
    await db.add(rotated, current, live, *going)

    deleted = await prune_refresh_tokens(db.sessions, batch_rows=100)

    assert deleted == len(going)
    assert await remaining(db) == {rotated.id, current.id, live.id}
    assert await prune_refresh_tokens(db.sessions, batch_rows=100) == 0


async def test_pruning_deletes_in_batches_of_at_most_delete_batch_rows_each_committed_alone(
    db: StageDb,
) -> None:
    user = await db.user()
    family = uuid.uuid4()
    expired = [token(user, family, expires_in=-HOUR, revoked=False) for _ in range(250)]
    keep = token(user, uuid.uuid4(), expires_in=HOUR, revoked=False)
    await db.add(*expired, keep)
    deletes: list[int] = []
    commits: list[int] = []

    def after_execute(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM REFRESH_TOKENS"):
            deletes.append(cursor.rowcount)

    def after_commit(conn: Any) -> None:
        commits.append(len(deletes))

    event.listen(db.engine.sync_engine, "after_cursor_execute", after_execute)
    event.listen(db.engine.sync_engine, "commit", after_commit)
    try:
        deleted = await prune_refresh_tokens(db.sessions, batch_rows=100)
    finally:
        event.remove(db.engine.sync_engine, "after_cursor_execute", after_execute)
        event.remove(db.engine.sync_engine, "commit", after_commit)

    assert deleted == 250
    assert deletes == [100, 100, 50]
    assert commits == [1, 2, 3]  # each statement committed before the next began
    assert await remaining(db) == {keep.id}


async def test_housekeeping_prunes_only_while_it_leads_and_again_every_interval(
    db: StageDb,
) -> None:
    user = await db.user()
    leading = False
    housekeeping = Housekeeping(
        jobs=[prune_refresh_tokens_job(db.sessions, batch_rows=100)],
        interval_seconds=1.0,
        retry_max_seconds=0.5,
        is_leader=lambda: leading,
    )
    first = token(user, uuid.uuid4(), expires_in=-HOUR, revoked=False)
    await db.add(first)
    stop = asyncio.Event()
    running = asyncio.create_task(housekeeping.run(stop))
    try:
        await asyncio.sleep(1.5)
        assert first.id in await remaining(db)  # a standby prunes nothing

        leading = True

        async def first_gone() -> bool:
            return first.id not in await remaining(db)

        await eventually(first_gone, timeout=2)
        second = token(user, uuid.uuid4(), expires_in=-HOUR, revoked=False)
        await db.add(second)

        async def second_gone() -> bool:
            return second.id not in await remaining(db)

        await eventually(second_gone, timeout=2.5)  # the next run, an interval later
    finally:
        stop.set()
        await asyncio.wait_for(running, 5)


async def test_a_failing_job_is_retried_with_backoff_and_never_holds_up_the_others() -> None:
    runs = {"failing": 0, "healthy": 0}

    async def failing() -> None:
        runs["failing"] += 1
        raise OSError("the database does not answer")

    async def healthy() -> None:
        runs["healthy"] += 1

    housekeeping = Housekeeping(
        jobs=[Job("failing", failing), Job("healthy", healthy)],
        interval_seconds=0.4,
        retry_max_seconds=0.1,
        is_leader=lambda: True,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(housekeeping.run(stop))
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.wait_for(running, 5)

    assert runs["healthy"] == 3  # at start, then every interval: 0, 0.4, 0.8 s
    assert runs["failing"] >= 8  # retried every 0.05 to 0.1 s, not every interval


async def test_the_scheduler_process_prunes_every_prune_interval(
    db: StageDb, tmp_path: Path
) -> None:
    settings = stage_settings(
        db, tmp_path, f"test:{uuid.uuid4().hex[:12]}", PRUNE_INTERVAL_SECONDS=0.5
    )
    pipeline = Pipeline.open(settings, CollectorRegistry(), backend=open_backend(None))
    user = await db.user()
    expired = token(user, uuid.uuid4(), expires_in=-HOUR, revoked=False)
    live = token(user, uuid.uuid4(), expires_in=HOUR, revoked=False)
    await db.add(expired, live)
    stop = asyncio.Event()
    running = asyncio.create_task(pipeline.scheduler()(stop))
    try:

        async def pruned() -> bool:
            return await remaining(db) == {live.id}

        await eventually(pruned, timeout=5)
    finally:
        stop.set()
        await asyncio.wait_for(running, 5)
        await pipeline.aclose()
