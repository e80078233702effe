"""Migration 0006 on a database that already holds checks: every check is kept (on
PostgreSQL in its day's partition), and the rollups it builds say what the checks say."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from runstate.storage.db import create_engine
from runstate.storage.migrate import _alembic_config
from tests.api.server import postgres_database

DAY0 = datetime(2026, 11, 20, 23, 30, tzinfo=UTC)  # checks span a UTC midnight


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'runstate.db'}"
        return
    with postgres_database(request.getfixturevalue("postgres_admin_url")) as url:
        yield url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=1)
    yield engine
    await engine.dispose()


def _migrate(to: str) -> object:
    def run(connection: Connection) -> None:
        command.upgrade(_alembic_config(connection), to)

    return run


async def _seed_before_0006(engine: AsyncEngine) -> uuid.UUID:
    """A monitor at a 60 s interval with 90 checks, one minute apart, from 23:30 to 01:00,
    two of them DOWN, plus a paused monitor; written as the schema of revision 0005 holds them."""
    website_id, paused_id, user_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with engine.begin() as connection:
        await connection.run_sync(_migrate("0005"))
        region = await connection.scalar(text("SELECT id FROM regions WHERE name = 'local'"))
        if region is None:
            await connection.execute(text("INSERT INTO regions (name) VALUES ('local')"))
            region = await connection.scalar(text("SELECT id FROM regions WHERE name = 'local'"))
        await connection.execute(
            text(
                "INSERT INTO users (id, email, password_hash, role, created_at) "
                "VALUES (:id, 'a@example.com', 'x', 'USER', :now)"
            ),
            {"id": user_id.hex if engine.dialect.name == "sqlite" else user_id, "now": DAY0},
        )
        for wid, paused in ((website_id, False), (paused_id, True)):
            await connection.execute(
                text(
                    "INSERT INTO websites (id, user_id, url, interval_seconds, timeout_ms, method,"
                    " expected_status, confirmations, recovery_confirmations, paused, time_added,"
                    " updated_at) VALUES (:id, :user, :url, 60, 1000, 'GET', '200-399', 1, 1,"
                    " :paused, :at, :at)"
                ),
                {
                    "id": wid.hex if engine.dialect.name == "sqlite" else wid,
                    "user": user_id.hex if engine.dialect.name == "sqlite" else user_id,
                    "url": f"https://{wid}.example/",
                    "paused": paused,
                    "at": DAY0 - timedelta(days=1),
                },
            )
        for n in range(90):
            at = DAY0 + timedelta(minutes=n)
            stamp = at.strftime("%Y-%m-%d %H:%M:%S.%f") if engine.dialect.name == "sqlite" else at
            await connection.execute(
                text(
                    "INSERT INTO website_checks (website_id, region_id, status, response_time_ms,"
                    " created_at) VALUES (:w, :r, :s, :t, :at)"
                ),
                {
                    "w": website_id.hex if engine.dialect.name == "sqlite" else website_id,
                    "r": region,
                    "s": "down" if n in (10, 40) else "up",
                    "t": None if n in (10, 40) else 20 + n,
                    "at": stamp,
                },
            )
    return website_id


async def test_it_keeps_every_check_and_rolls_them_up(engine: AsyncEngine) -> None:
    await _seed_before_0006(engine)
    async with engine.begin() as connection:
        await connection.run_sync(_migrate("head"))
    async with engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM website_checks")) == 90
        hours = (
            await connection.execute(
                text(
                    "SELECT checks, up_checks, up_seconds, down_seconds, timed_checks,"
                    " response_time_min_ms, response_time_max_ms, rt_le_25, rt_le_50, rt_le_75,"
                    " rt_le_100 FROM check_rollups_hourly ORDER BY bucket_start"
                )
            )
        ).all()
        days = (
            await connection.execute(
                text(
                    "SELECT checks, up_checks, prior_checks, prior_up_seconds"
                    " FROM check_rollups_daily ORDER BY bucket_start"
                )
            )
        ).all()
        pauses = await connection.scalar(
            text("SELECT count(*) FROM website_pauses WHERE resumed_at IS NULL")
        )
        if engine.dialect.name == "postgresql":
            partitions = set(
                await connection.scalars(
                    text(
                        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                        " WHERE i.inhparent = 'website_checks'::regclass"
                    )
                )
            )
            assert {"website_checks_p20261120", "website_checks_p20261121"} <= partitions
            in_first_day = await connection.scalar(
                text("SELECT count(*) FROM website_checks_p20261120")
            )
            assert in_first_day == 30
    # 23:30-23:59 (30 checks, #10 down), 00:00-00:59 (60, #40 down).
    assert hours == [
        (30, 29, 1740, 60, 29, 20, 49, 6, 23, 0, 0),  # 20-25 ms, 26-49 ms (30 ms was down)
        (60, 59, 3540, 60, 59, 50, 109, 0, 1, 24, 25),  # 50, 51-75 (not 60), 76-100
    ]
    assert days == [(30, 29, 0, 0), (60, 59, 30, 1740)]  # with running totals
    assert pauses == 1
