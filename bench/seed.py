"""The rows a run seeds its database with: users (one per MONITORS_PER_USER monitors), each
with a webhook channel to the receiver, and one monitor per target URL.

The rows carry the same values the ORM's defaults and the API would give them
(src/runstate/storage/tables.py), except `interval_seconds` and `timeout_ms`, which come
from the preset. Both stores (bench/store.py) insert exactly these rows: PostgreSQL by COPY,
SQLite by executemany.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

MONITORS_PER_USER = 100

USER_COLUMNS = ("id", "email", "password_hash", "role", "created_at")
CHANNEL_COLUMNS = (
    "id",
    "user_id",
    "type",
    "target",
    "notify_on",
    "enabled",
    "secret",
    "created_at",
)
WEBSITE_COLUMNS = (
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

Row = tuple[Any, ...]


@dataclass
class SeedRows:
    users: list[Row]
    channels: list[Row]
    websites: list[Row]

    @property
    def website_ids(self) -> list[uuid.UUID]:
        """Index i is the monitor of target i."""
        return [row[0] for row in self.websites]

    def tables(self) -> Iterator[tuple[str, tuple[str, ...], list[Row]]]:
        """(table, columns, rows) in insertion order: a user before the rows that refer to it."""
        yield "users", USER_COLUMNS, self.users
        yield "alert_channels", CHANNEL_COLUMNS, self.channels
        yield "websites", WEBSITE_COLUMNS, self.websites


def seed_rows(
    urls: list[str],
    *,
    interval_seconds: int,
    timeout_ms: int,
    webhook_url: str,
    webhook_secret: str,
) -> SeedRows:
    now = datetime.now(UTC)
    users = [uuid.uuid4() for _ in range(-(-len(urls) // MONITORS_PER_USER))]
    return SeedRows(
        users=[
            (u, f"bench-{n}@example.com", "!bench-no-login", "USER", now)
            for n, u in enumerate(users)
        ],
        channels=[
            (uuid.uuid4(), u, "webhook", webhook_url, "BOTH", True, webhook_secret, now)
            for u in users
        ],
        websites=[
            (
                uuid.uuid4(),
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
    )
