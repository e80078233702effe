"""Claiming a delivery: the row that makes an alert go out once per channel."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from enum import Enum

from sqlalchemy import or_, select, update
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


FINAL_STATES = ("sent", "dead", "suppressed")


class Take(Enum):
    TAKEN = "taken"  # this entry delivers the row now
    SETTLED = "settled"  # nothing left to do: the row is sent, dead or suppressed
    HELD = "held"  # another entry is delivering it and renewed its claim within the lease


async def take_delivery(
    sessions: async_sessionmaker[AsyncSession],
    log_id: uuid.UUID,
    entry_id: str,
    lease: timedelta,
) -> Take:
    """Take the row for the alert entry ``entry_id``, unless it is settled or another entry
    holds it: one whose claim was renewed (`renew_claim`) within ``lease``.

    A status change forwarded twice puts two copies of an alert on the stream, and two
    workers may take them at once: the second finds the row held, and waits for it to be
    settled, or for the claim to lapse (its worker died) and then takes it over. The same
    entry coming back (reclaimed after its worker died) takes its own row again.
    """
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        taken = await session.execute(
            update(NotificationLog)
            .where(
                NotificationLog.id == log_id,
                NotificationLog.delivery_status.not_in(FINAL_STATES),
                or_(
                    NotificationLog.claimed_by.is_(None),
                    NotificationLog.claimed_by == entry_id,
                    NotificationLog.claimed_at < now - lease,
                ),
            )
            .values(claimed_by=entry_id, claimed_at=now)
        )
        if getattr(taken, "rowcount", 0) == 1:
            return Take.TAKEN
        status = await session.scalar(
            select(NotificationLog.delivery_status).where(NotificationLog.id == log_id)
        )
    return Take.SETTLED if status is None or status in FINAL_STATES else Take.HELD


async def renew_claim(
    sessions: async_sessionmaker[AsyncSession], log_id: uuid.UUID, entry_id: str
) -> None:
    """Keep the row held by ``entry_id`` while it is being delivered."""
    async with sessions() as session, session.begin():
        await session.execute(
            update(NotificationLog)
            .where(NotificationLog.id == log_id, NotificationLog.claimed_by == entry_id)
            .values(claimed_at=datetime.now(UTC))
        )


def message_id(log_id: uuid.UUID) -> str:
    """The id a delivery carries (the webhook-id): the same for every attempt and redelivery."""
    return f"msg_{log_id.hex}"
