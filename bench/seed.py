"""A scratch database per run: created, migrated with `runstate migrate`, filled in bulk
(COPY) with users, their webhook channel and the monitors, and dropped at the end.

The rows carry the same values the ORM's defaults and the API would give them
(src/runstate/storage/tables.py), except `interval_seconds` and `timeout_ms`, which come
from the preset.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from bench.procs import BenchError

MONITORS_PER_USER = 100

_WEBSITE_COLUMNS = (
    "id",
    "user_id",
    "url",
    "name",
    "interval_seconds",
    "timeout_ms",
    "method",
    "expected_status",
    "keyword",
    "confirmations",
    "recovery_confirmations",
    "paused",
    "current_status",
    "last_checked_at",
    "latest_response_time_ms",
    "status_changed_at",
    "time_added",
    "updated_at",
)


def database_url(admin_url: str, name: str) -> str:
    base, _, _ = admin_url.partition("?")
    return base.rsplit("/", 1)[0] + f"/{name}"


async def _admin(admin_url: str, statement: str) -> None:
    connection = await asyncpg.connect(admin_url, timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def create_database(admin_url: str, name: str) -> str:
    try:
        await _admin(admin_url, f'CREATE DATABASE "{name}"')
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchError(f"cannot create a database on {admin_url}: {exc}") from exc
    return database_url(admin_url, name)


async def drop_database(admin_url: str, name: str) -> None:
    await _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def migrate(url: str, env: dict[str, str]) -> None:
    """`runstate migrate`, as an operator would run it."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "runstate",
        "migrate",
        env={**os.environ, **env, "DATABASE_URL": url},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise BenchError(f"runstate migrate failed:\n{output.decode(errors='replace')[-2000:]}")


@dataclass
class Seeded:
    website_ids: list[uuid.UUID]  # index i is the monitor of target i
    users: int


async def seed(
    url: str,
    urls: list[str],
    *,
    interval_seconds: int,
    timeout_ms: int,
    webhook_url: str,
    webhook_secret: str,
) -> Seeded:
    """Users (one per MONITORS_PER_USER monitors), each with a webhook channel to the
    receiver, and one monitor per target URL."""
    now = datetime.now(UTC)
    users = [uuid.uuid4() for _ in range(-(-len(urls) // MONITORS_PER_USER))]
    website_ids = [uuid.uuid4() for _ in urls]
    connection = await asyncpg.connect(url, timeout=10)
    try:
        async with connection.transaction():
            await connection.copy_records_to_table(
                "users",
                records=[
                    (u, f"bench-{n}@example.com", "!bench-no-login", "USER", now)
                    for n, u in enumerate(users)
                ],
                columns=["id", "email", "password_hash", "role", "created_at"],
            )
            await connection.copy_records_to_table(
                "alert_channels",
                records=[
                    (uuid.uuid4(), u, "webhook", webhook_url, "BOTH", True, webhook_secret, now)
                    for u in users
                ],
                columns=[
                    "id",
                    "user_id",
                    "type",
                    "target",
                    "notify_on",
                    "enabled",
                    "secret",
                    "created_at",
                ],
            )
            await connection.copy_records_to_table(
                "websites",
                records=[
                    (
                        website_ids[i],
                        users[i // MONITORS_PER_USER],
                        target,
                        f"target {i}",
                        interval_seconds,
                        timeout_ms,
                        "GET",
                        "200-399",
                        None,
                        1,
                        1,
                        False,
                        None,
                        None,
                        None,
                        None,
                        now,
                        now,
                    )
                    for i, target in enumerate(urls)
                ],
                columns=list(_WEBSITE_COLUMNS),
            )
        await connection.execute("ANALYZE")
    finally:
        await connection.close()
    return Seeded(website_ids, len(users))
