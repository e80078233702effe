"""Claiming a delivery: the row that makes an alert go out once per channel."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from runstate.domain.events import Alert
from runstate.storage.tables import AlertChannel, NotificationLog


async def claim_delivery(
    sessions: async_sessionmaker[AsyncSession],
    alert: Alert,
    channel: AlertChannel,
    *,
    event: str | None = None,
    event_id: str | None = None,
) -> NotificationLog:
    """The log row of (alert's incident, channel, event), created `pending` when new.

    Two workers claiming the same delivery get the same row: the unique constraint on
    (incident_id, channel_id, event) makes the second insert a no-op.
    """
    values = {
        "incident_id": alert.incident_id,
        "website_id": alert.website_id,
        "channel_id": channel.id,
        "channel": channel.type,
        "recipient": channel.target,
        "event": event or alert.event.value,
        "event_id": event_id or alert.event_id,
        "delivery_status": "pending",
        "attempts": 0,
    }
    async with sessions() as session, session.begin():
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        await session.execute(
            insert(NotificationLog)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["incident_id", "channel_id", "event"])
        )
        row = await session.scalar(
            select(NotificationLog).where(
                NotificationLog.incident_id == values["incident_id"],
                NotificationLog.channel_id == channel.id,
                NotificationLog.event == values["event"],
            )
        )
    assert row is not None
    return row


def message_id(log_id: uuid.UUID) -> str:
    """The id a delivery carries (the webhook-id): the same for every attempt and redelivery."""
    return f"msg_{log_id.hex}"
