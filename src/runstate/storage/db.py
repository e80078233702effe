"""Engines and sessions for SQLite (aiosqlite, WAL) and PostgreSQL (asyncpg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from runstate.storage.urls import DriverURL, database_url_for_driver

SQLITE_BUSY_TIMEOUT_MS = 10_000


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (the API) proceed while a writer (the workers) commits; NORMAL
    # synchronous is durable across process crashes in WAL mode; foreign keys are off
    # by default in SQLite and the schema relies on their cascades.
    cursor = dbapi_connection.cursor()
    for pragma in (
        "journal_mode=WAL",
        "synchronous=NORMAL",
        "foreign_keys=ON",
        f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
    ):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def create_engine(raw_url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An async engine for ``raw_url`` (any URL :func:`database_url_for_driver` accepts)."""
    driver: DriverURL = database_url_for_driver(raw_url)
    if driver.is_sqlite:
        path = driver.url.split(":///", 1)[1] if ":///" in driver.url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(driver.url, connect_args={"timeout": 30}, hide_parameters=True)
        event.listen(engine.sync_engine, "connect", _tune_sqlite)
        return engine
    # JIT compiling pays off for long analytical queries only: for the reports here (the
    # uptime of thousands of monitors) it costs more (100-150 ms) than the query itself.
    server_settings = {"jit": "off", **driver.connect_args.get("server_settings", {})}
    return create_async_engine(
        driver.url,
        connect_args={"timeout": 10, **driver.connect_args, "server_settings": server_settings},
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,  # a restarted Postgres costs one failed ping, not a failed request
        pool_recycle=1800,
        hide_parameters=True,  # error messages would otherwise carry hashes and secrets
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
