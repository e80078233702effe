"""The run's database and the few reads the harness makes of it, on either back end:

- :class:`PostgresStore`: a scratch database `runstate_bench_<id>` (distributed mode),
  seeded by COPY, with a trigger that NOTIFYs the harness when an incident opens or
  resolves, and dropped at the end;
- :class:`SqliteStore`: a SQLite file in the run's work directory (`runstate up`), seeded
  by executemany in chunks (the running process shares its one writer lock), read
  through runstate's own engine (WAL: the harness's reads never wait for its writes).

Both are created with `runstate migrate`, as an operator would, and seeded with the same
rows (bench/seed.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol

import asyncpg
from sqlalchemy import func, insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.procs import BenchError
from bench.seed import SeedRows
from runstate.storage.db import create_engine
from runstate.storage.tables import Base, Incident, Website, WebsiteCheck

# (website_id, created_at, response_time_ms): what the grid analysis needs of a check.
CheckRow = tuple[uuid.UUID, datetime, int | None]
# (website_id, created_at, error) of a check that came out down.
DownRow = tuple[uuid.UUID, datetime, str | None]
# (incident_id, website_id, started_at, resolved_at), the times in seconds since the epoch.
IncidentRow = tuple[uuid.UUID, uuid.UUID, float, float | None]
Notified = Callable[[IncidentRow], None]


class StoreUnavailable(Exception):
    """A read failed (the server restarted under the harness, say); the next one may work."""


class IncidentReader(Protocol):
    async def incidents_since(self, moment: datetime) -> list[IncidentRow]: ...


async def migrate(url: str) -> None:
    """`runstate migrate`, as an operator would run it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "runstate",
        "migrate",
        env={**os.environ, "DATABASE_URL": url},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise BenchError(f"runstate migrate failed:\n{output.decode(errors='replace')[-2000:]}")


class Store(ABC):
    url: str  # the DATABASE_URL runstate's processes are given
    description: ClassVar[str]
    # Whether the harness hears of incidents as they commit; otherwise it only polls.
    notifies: ClassVar[bool]

    @abstractmethod
    async def create(self) -> None:
        """Created and migrated, ready to be seeded."""

    @abstractmethod
    async def seed(self, rows: SeedRows) -> None: ...

    @abstractmethod
    async def unchecked_monitors(self) -> int:
        """How many monitors have never been checked."""

    @abstractmethod
    async def check_rows(self, since: datetime, until: datetime) -> list[CheckRow]:
        """The checks recorded with `created_at` in [since, until)."""

    @abstractmethod
    async def down_checks(self) -> list[DownRow]:
        """Every check of the run that came out down."""

    @abstractmethod
    def incidents(self, notified: Notified) -> AbstractAsyncContextManager[IncidentReader]:
        """A reader of `incidents`; ``notified`` is called for each incident opened or
        resolved as it commits, when the back end can tell (:attr:`notifies`)."""

    @abstractmethod
    async def close(self) -> None:
        """Let go of the harness's connections; the data stays."""

    @abstractmethod
    async def drop(self) -> None:
        """Closed, and the data gone."""


# --- PostgreSQL ----------------------------------------------------------------------------

# Installed in the scratch database only: every commit that opens or resolves an incident
# notifies the harness, which notes the time the notification arrives (commit time, give
# or take a millisecond). Only incidents are touched, so the pipeline's cost is unchanged.
NOTIFY_CHANNEL = "bench_incidents"
NOTIFY_TRIGGER = f"""
CREATE FUNCTION bench_incident_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('{NOTIFY_CHANNEL}', concat_ws(' ', NEW.id, NEW.website_id,
    extract(epoch FROM NEW.started_at), extract(epoch FROM NEW.resolved_at)));
  RETURN NULL;
END $$;
CREATE TRIGGER bench_incident_notify AFTER INSERT OR UPDATE OF resolved_at ON incidents
  FOR EACH ROW EXECUTE FUNCTION bench_incident_notify();
"""
_PG_COUNTERS = ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted")
_PG_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


async def _execute(url: str, statement: str) -> None:
    connection = await asyncpg.connect(url, timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


class PostgresStore(Store):
    description = "PostgreSQL"
    notifies = True

    def __init__(self, admin_url: str, name: str) -> None:
        self.admin_url = admin_url
        self.name = name
        base, _, _ = admin_url.partition("?")
        self.url = base.rsplit("/", 1)[0] + f"/{name}"

    async def create(self) -> None:
        try:
            await _execute(self.admin_url, f'CREATE DATABASE "{self.name}"')
        except (OSError, asyncpg.PostgresError) as exc:
            raise BenchError(f"cannot create a database on {self.admin_url}: {exc}") from exc
        await migrate(self.url)
        await _execute(self.url, NOTIFY_TRIGGER)

    async def seed(self, rows: SeedRows) -> None:
        connection = await asyncpg.connect(self.url, timeout=10)
        try:
            async with connection.transaction():
                for table, columns, records in rows.tables():
                    await connection.copy_records_to_table(
                        table, records=records, columns=list(columns)
                    )
            # Statistics as autovacuum would soon have them: plans of a database in use.
            await connection.execute("ANALYZE")
        finally:
            await connection.close()

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        connection = await asyncpg.connect(self.url, timeout=10)
        try:
            records: list[asyncpg.Record] = await connection.fetch(query, *args)
        finally:
            await connection.close()
        return records

    async def unchecked_monitors(self) -> int:
        (record,) = await self._fetch("SELECT count(*) FROM websites WHERE last_checked_at IS NULL")
        return int(record[0])

    async def check_rows(self, since: datetime, until: datetime) -> list[CheckRow]:
        records = await self._fetch(
            "SELECT website_id, created_at, response_time_ms FROM website_checks"
            " WHERE created_at >= $1 AND created_at < $2",
            since,
            until,
        )
        return [(r[0], r[1], r[2]) for r in records]

    async def down_checks(self) -> list[DownRow]:
        records = await self._fetch(
            "SELECT website_id, created_at, error FROM website_checks WHERE status = 'down'"
        )
        return [(r[0], r[1], r[2]) for r in records]

    async def counters(self) -> dict[str, int]:
        """The scratch database's own counters (pg_stat_database): transactions and rows."""
        (record,) = await self._fetch(
            f"SELECT {', '.join(_PG_COUNTERS)} FROM pg_stat_database"  # noqa: S608 - constants
            " WHERE datname = current_database()"
        )
        return {name: int(record[name] or 0) for name in _PG_COUNTERS}

    @contextlib.asynccontextmanager
    async def incidents(self, notified: Notified) -> AsyncIterator[IncidentReader]:
        reader = _ListeningReader(self.url, notified)
        try:
            yield reader
        finally:
            await reader.close()

    async def close(self) -> None:
        """Every read opens its own connection: nothing to let go of."""

    async def drop(self) -> None:
        await _execute(self.admin_url, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class _ListeningReader:
    """Reads `incidents` on one connection that also LISTENs to the trigger's notifications.
    After an error (the server restarted) the next read connects anew."""

    def __init__(self, url: str, notified: Notified) -> None:
        self.url = url
        self.notified = notified
        self.connection: Any = None

    async def incidents_since(self, moment: datetime) -> list[IncidentRow]:
        try:
            if self.connection is None:
                self.connection = await asyncpg.connect(self.url, timeout=10)
                await self.connection.add_listener(NOTIFY_CHANNEL, self._on_notify)
            records = await self.connection.fetch(
                "SELECT id, website_id, started_at, resolved_at FROM incidents"
                " WHERE started_at >= $1",
                moment,
            )
        except _PG_ERRORS as exc:
            if self.connection is not None:
                self.connection.terminate()
            self.connection = None
            raise StoreUnavailable(str(exc)) from exc
        return [_incident_row(*record) for record in records]

    def _on_notify(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        parts = payload.split(" ")
        resolved_at = float(parts[3]) if len(parts) > 3 else None
        self.notified((uuid.UUID(parts[0]), uuid.UUID(parts[1]), float(parts[2]), resolved_at))

    async def close(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(*_PG_ERRORS):
                await self.connection.close()


def _incident_row(
    incident_id: uuid.UUID, website_id: uuid.UUID, started_at: datetime, resolved_at: Any
) -> IncidentRow:
    resolved = resolved_at.timestamp() if resolved_at is not None else None
    return incident_id, website_id, started_at.timestamp(), resolved


# --- SQLite ----------------------------------------------------------------------------

# Rows per seeding transaction: `runstate up` may be running, and SQLite has one writer, so
# the seed holds the lock in short turns rather than for the whole insert.
SQLITE_SEED_CHUNK = 2_000


class SqliteStore(Store):
    description = "SQLite"
    notifies = False

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite+aiosqlite:///{path}"
        self._engine: AsyncEngine | None = None

    @property
    def engine(self) -> AsyncEngine:
        """runstate's own engine (WAL, foreign keys, busy timeout), opened on first use."""
        if self._engine is None:
            self._engine = create_engine(self.url)
        return self._engine

    async def create(self) -> None:
        await migrate(self.url)

    async def seed(self, rows: SeedRows) -> None:
        # No ANALYZE, unlike PostgreSQL: nothing runs it on a `runstate up` database in use.
        for table, columns, records in rows.tables():
            for start in range(0, len(records), SQLITE_SEED_CHUNK):
                chunk = records[start : start + SQLITE_SEED_CHUNK]
                async with self.engine.begin() as connection:
                    await connection.execute(
                        insert(Base.metadata.tables[table]),
                        [dict(zip(columns, row, strict=True)) for row in chunk],
                    )

    async def unchecked_monitors(self) -> int:
        query = select(func.count()).select_from(Website).where(Website.last_checked_at.is_(None))
        async with self.engine.connect() as connection:
            return int((await connection.execute(query)).scalar_one())

    async def check_rows(self, since: datetime, until: datetime) -> list[CheckRow]:
        query = select(
            WebsiteCheck.website_id, WebsiteCheck.created_at, WebsiteCheck.response_time_ms
        ).where(WebsiteCheck.created_at >= since, WebsiteCheck.created_at < until)
        async with self.engine.connect() as connection:
            return [(r[0], r[1], r[2]) for r in await connection.execute(query)]

    async def down_checks(self) -> list[DownRow]:
        query = select(WebsiteCheck.website_id, WebsiteCheck.created_at, WebsiteCheck.error).where(
            WebsiteCheck.status == "down"
        )
        async with self.engine.connect() as connection:
            return [(r[0], r[1], r[2]) for r in await connection.execute(query)]

    @contextlib.asynccontextmanager
    async def incidents(self, notified: Notified) -> AsyncIterator[IncidentReader]:
        """SQLite cannot notify another process: ``notified`` is never called, the harness
        polls."""
        yield self

    async def incidents_since(self, moment: datetime) -> list[IncidentRow]:
        query = select(
            Incident.id, Incident.website_id, Incident.started_at, Incident.resolved_at
        ).where(Incident.started_at >= moment)
        try:
            async with self.engine.connect() as connection:
                rows = list(await connection.execute(query))
        except SQLAlchemyError as exc:
            raise StoreUnavailable(str(exc)) from exc
        return [_incident_row(*row) for row in rows]

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    async def drop(self) -> None:
        await self.close()
        for suffix in ("", "-wal", "-shm"):
            await asyncio.to_thread(Path(f"{self.path}{suffix}").unlink, missing_ok=True)
