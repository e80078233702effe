"""The scheduler while its database is really gone — a SQLite file that cannot be opened, a
PostgreSQL database that refuses connections and whose sessions were terminated — with the
in-process queue and Redis: nothing is enqueued that the workers could not record, the
outage is logged once, the database is tried again with capped backoff, and once it answers
every monitor resumes at its next slot, with no burst of the slots it missed."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

from runstate.storage.db import create_engine, session_factory
from tests.pipeline.conftest import StageDb, eventually
from tests.pipeline.test_schedule import POLL, Setup, now_ms
from tests.pipeline.test_schedule import setup as setup  # the fixture

RETRY_MAX = 0.5  # OUTAGE_RETRY_MAX_SECONDS
OUTAGE = 4.0  # long enough that an uncapped backoff would still be waiting when it ends


def sqlite_path(db: StageDb) -> str:
    return db.url.split(":///", 1)[1]


@dataclass
class DatabaseOutage:
    """Takes the test's database away from the scheduler and gives it back."""

    db: StageDb
    engine: AsyncEngine  # the scheduler's own
    admin_url: str | None = None
    _moved: list[tuple[Path, Path]] = field(default_factory=list)

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        return session_factory(self.engine)

    async def begin(self) -> None:
        if self.db.kind == "sqlite":
            # The file is moved away: opening it fails ("unable to open database file").
            path = Path(sqlite_path(self.db))
            self._moved = [(path, path.with_name(path.name + ".away"))]
            for here, away in self._moved:
                os.rename(here, away)
        else:
            await self._admin(
                f'ALTER DATABASE "{self._name}" ALLOW_CONNECTIONS false',
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"  # noqa: S608 - ours
                f" WHERE datname = '{self._name}' AND pid <> pg_backend_pid()",
            )

    async def end(self) -> None:
        if self.db.kind == "sqlite":
            for here, away in self._moved:
                os.rename(away, here)
            self._moved = []
        else:
            await self._admin(f'ALTER DATABASE "{self._name}" ALLOW_CONNECTIONS true')

    @property
    def _name(self) -> str:
        return urlsplit(self.db.url).path.lstrip("/")

    async def _admin(self, *statements: str) -> None:
        assert self.admin_url is not None
        connection = await asyncpg.connect(self.admin_url)
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()


@pytest.fixture
async def outage(
    stage_db: StageDb, request: pytest.FixtureRequest
) -> AsyncIterator[DatabaseOutage]:
    if stage_db.kind == "sqlite":
        # A connection per session, opened read-write without creating the file: a moved
        # file is then an error, not a new empty database. (A pooled connection would go on
        # reading the moved file.)
        path = sqlite_path(stage_db)
        engine = create_async_engine(
            f"sqlite+aiosqlite:///file:{path}?mode=rw&uri=true", poolclass=NullPool
        )
        made = DatabaseOutage(stage_db, engine)
    else:
        admin_url = request.getfixturevalue("postgres_admin_url")
        made = DatabaseOutage(stage_db, create_engine(stage_db.url), admin_url)
    try:
        yield made
    finally:
        await made.end()  # whatever happened, the database is back for the next test
        await made.engine.dispose()


async def test_while_the_database_is_gone_nothing_is_enqueued_then_each_monitor_resumes_on_time(
    setup: Setup, outage: DatabaseOutage, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="runstate.pipeline.schedule")
    websites = await setup.monitors(10)  # every second
    worker = setup.worker()
    scheduler = setup.scheduler(sessions=outage.sessions, outage_retry_max_seconds=RETRY_MAX)
    running = setup.start(scheduler.run)

    async def all_flow() -> bool:
        return all(worker.of(w.id) for w in websites)

    await eventually(all_flow, timeout=3)

    await outage.begin()

    async def paused() -> bool:
        return not scheduler.database_answers

    await eventually(paused, timeout=POLL + 2)
    paused_at = now_ms() + 100  # a publish already under way may still land
    await asyncio.sleep(OUTAGE)  # every monitor falls due four times meanwhile
    assert not running.task.done()  # still running: no crash, no crash loop
    assert [s for s in worker.seen if s.enqueued_ms > paused_at] == []

    await outage.end()
    restored = now_ms()

    async def all_resumed() -> bool:
        return all(any(s.enqueued_ms > restored for s in worker.of(w.id)) for w in websites)

    # Tried again within RETRY_MAX of coming back, then each at its next slot (an interval).
    await eventually(all_resumed, timeout=RETRY_MAX + 1 + 1)
    await asyncio.sleep(0.5)
    after = [s for s in worker.seen if s.enqueued_ms > restored]
    # No burst of what was missed: every check enqueued after the outage is for a slot
    # after it, enqueued on time, one per monitor per slot.
    assert all(s.due_ms >= restored for s in after)
    assert all(s.enqueued_ms - s.due_ms < 500 for s in after)
    for w in websites:
        dues = [s.due_ms for s in worker.of(w.id) if s.enqueued_ms > restored]
        assert dues == sorted(set(dues))

    warnings = [r for r in caplog.records if "database not answering" in r.getMessage()]
    assert len(warnings) == 1  # once per outage, however many tries
    assert any("enqueuing resumed" in r.getMessage() for r in caplog.records)
