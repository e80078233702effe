"""Migration 0007 on SQLite and PostgreSQL: it makes the status page tables as the models
declare them (columns, indexes, constraints), and goes down and up again cleanly."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from runstate.storage.db import create_engine
from runstate.storage.migrate import _alembic_config
from runstate.storage.tables import Base
from tests.api.server import postgres_database

TABLES = {
    "status_pages",
    "status_page_monitors",
    "status_page_incidents",
    "status_page_incident_updates",
}


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


def _upgrade(to: str) -> object:
    def run(connection: Connection) -> None:
        command.upgrade(_alembic_config(connection), to)

    return run


def _downgrade(to: str) -> object:
    def run(connection: Connection) -> None:
        command.downgrade(_alembic_config(connection), to)

    return run


def _differences(connection: Connection) -> list[object]:
    """What tells the status page tables in the database apart from the models."""
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return [d for d in compare_metadata(context, Base.metadata) if "status_page" in str(d)]


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names()) & TABLES


async def test_it_makes_the_tables_the_models_declare(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade("0007"))
    async with engine.connect() as connection:
        assert await connection.run_sync(_tables) == TABLES
        assert await connection.run_sync(_differences) == []


async def test_it_goes_down_and_up_again(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade("0007"))
    async with engine.begin() as connection:
        await connection.run_sync(_downgrade("0006"))
    async with engine.connect() as connection:
        assert await connection.run_sync(_tables) == set()
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade("0007"))
    async with engine.connect() as connection:
        assert await connection.run_sync(_tables) == TABLES
