"""Rows the monitoring pipeline writes, put straight into the API's database.

These helpers let the API tests read history without running the pipeline: ORM rows in the
same database the running API uses (``api.settings.database_url``). Checks go in with
:func:`insert_checks` (which also adds them to the hourly and daily rollups, as the pipeline
does) or :func:`insert` (raw rows only); both make PostgreSQL's daily partitions they need.
Each call opens its own engine and runs its own event loop, so it can be used from the
synchronous tests.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from runstate.history.partitions import day_of, ensure_daily_partitions
from runstate.history.rollups import TOTAL_EVERY_DAY_FROM_SCRATCH, InsertedCheck, add_to_rollups
from runstate.storage.db import create_engine, session_factory
from runstate.storage.tables import (
    Base,
    DailyRollup,
    Incident,
    NotificationLog,
    Region,
    User,
    Website,
    WebsiteCheck,
)
from tests.api.server import ApiServer

T = TypeVar("T")


def _run(api: ApiServer, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    async def main() -> T:
        engine = create_engine(api.settings.database_url, pool_size=1)
        try:
            async with session_factory(engine)() as session:
                return await work(session)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def insert(api: ApiServer, *rows: Base) -> None:
    """Insert ``rows`` in one transaction. On PostgreSQL the partitions of the days of the
    checks among them are made first (a check of a day without one is refused). Checks
    inserted this way are not in the rollups: see :func:`insert_checks`."""

    async def work(session: AsyncSession) -> None:
        await _ensure_partitions(session, rows)
        session.add_all(rows)
        await session.flush()
        if any(isinstance(row, DailyRollup) for row in rows):  # as the pipeline keeps them
            await session.execute(text(TOTAL_EVERY_DAY_FROM_SCRATCH))
        await session.commit()

    _run(api, work)


def insert_checks(api: ApiServer, *checks: WebsiteCheck) -> None:
    """Insert ``checks`` (see :func:`check`) as the monitoring worker writes them: in one
    transaction with their hourly and daily rollups, each check standing for its monitor's
    ``interval_seconds``. For tests that read uptime or latency figures without running
    the pipeline; the monitors must exist."""

    async def work(session: AsyncSession) -> None:
        await _ensure_partitions(session, checks)
        ids = {c.website_id for c in checks}
        found = await session.execute(
            select(Website.id, Website.interval_seconds).where(Website.id.in_(ids))
        )
        intervals = {row.id: row.interval_seconds for row in found}
        session.add_all(checks)
        await session.flush()
        await add_to_rollups(
            session,
            [
                InsertedCheck(
                    website_id=c.website_id,
                    created_at=c.created_at,
                    region_id=c.region_id,
                    status=c.status,
                    response_time_ms=c.response_time_ms,
                    interval_seconds=intervals[c.website_id],
                )
                for c in checks
            ],
        )
        await session.commit()

    _run(api, work)


async def _ensure_partitions(session: AsyncSession, rows: Iterable[Base]) -> None:
    days = {day_of(row.created_at) for row in rows if isinstance(row, WebsiteCheck)}
    engine = session.bind
    if days and isinstance(engine, AsyncEngine) and engine.dialect.name == "postgresql":
        await ensure_daily_partitions(engine, days)


def local_region_id(api: ApiServer) -> int:
    """The id of the region the migration seeds, "local"."""

    async def work(session: AsyncSession) -> int:
        region_id = await session.scalar(select(Region.id).where(Region.name == "local"))
        assert region_id is not None, "the migration did not seed the region 'local'"
        return region_id

    return _run(api, work)


def count(api: ApiServer, table: type[Base], website_id: str | uuid.UUID) -> int:
    """How many rows of ``table`` (any table with a website_id column) belong to a monitor."""
    column = table.__table__.c.website_id

    async def work(session: AsyncSession) -> int:
        query = select(func.count()).select_from(table).where(column == uuid.UUID(str(website_id)))
        return int(await session.scalar(query) or 0)

    return _run(api, work)


def count_where(api: ApiServer, table: type[Base], **equals: Any) -> int:
    """How many rows of ``table`` have the given column values."""
    columns = table.__table__.c

    async def work(session: AsyncSession) -> int:
        query = select(func.count()).select_from(table)
        for name, value in equals.items():
            query = query.where(columns[name] == value)
        return int(await session.scalar(query) or 0)

    return _run(api, work)


def set_website_state(api: ApiServer, website_id: str | uuid.UUID, **values: Any) -> None:
    """Update columns of a monitor the way the monitoring worker does (current_status, …)."""

    async def work(session: AsyncSession) -> None:
        await session.execute(
            update(Website).where(Website.id == uuid.UUID(str(website_id))).values(**values)
        )
        await session.commit()

    _run(api, work)


# --- row builders with the values a test does not care about filled in ---------------------


def check(
    website_id: str | uuid.UUID,
    region_id: int,
    created_at: datetime,
    **values: Any,
) -> WebsiteCheck:
    fields: dict[str, Any] = {
        "status": "up",
        "response_time_ms": 120,
        "status_code": 200,
        "error": None,
        **values,
    }
    return WebsiteCheck(
        website_id=uuid.UUID(str(website_id)), region_id=region_id, created_at=created_at, **fields
    )


def incident(website_id: str | uuid.UUID, started_at: datetime, **values: Any) -> Incident:
    fields: dict[str, Any] = {
        "id": uuid.uuid4(),
        "resolved_at": None,
        "is_active": True,
        "cause": "connection refused",
        "opened_by_event_id": uuid.uuid4().hex,
        **values,
    }
    return Incident(website_id=uuid.UUID(str(website_id)), started_at=started_at, **fields)


def notification(
    website_id: str | uuid.UUID, incident_id: uuid.UUID, created_at: datetime, **values: Any
) -> NotificationLog:
    fields: dict[str, Any] = {
        "id": uuid.uuid4(),
        "channel": "webhook",
        "recipient": "https://hooks.example.org/runstate",
        "event": "DOWN",
        "event_id": uuid.uuid4().hex,
        "delivery_status": "sent",
        "attempts": 1,
        "error": None,
        "sent_at": created_at,
        **values,
    }
    return NotificationLog(
        website_id=uuid.UUID(str(website_id)),
        incident_id=incident_id,
        created_at=created_at,
        **fields,
    )


def seconds_ago(seconds: float) -> datetime:
    """A UTC moment in the past, to the whole second (as the API echoes it back)."""
    now = datetime.now(UTC).replace(microsecond=0)
    return now - timedelta(seconds=seconds)


def password_hash(api: ApiServer, email: str) -> str:
    async def work(session: AsyncSession) -> str:
        stored = await session.scalar(select(User.password_hash).where(User.email == email))
        assert stored is not None, f"no user {email}"
        return stored

    return _run(api, work)


def set_password_hash(api: ApiServer, email: str, new_hash: str) -> None:
    async def work(session: AsyncSession) -> None:
        await session.execute(
            update(User).where(User.email == email).values(password_hash=new_hash)
        )
        await session.commit()

    _run(api, work)
