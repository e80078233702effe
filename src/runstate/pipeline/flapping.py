"""Flapping: one summary instead of a storm of alerts, never silence.

When a monitor's alerts on a channel exceed `ALERT_FLAP_MAX` within
`ALERT_FLAP_WINDOW_SECONDS`, the notification stage records further alerts as `suppressed`
and makes sure a `SUMMARY` row is pending for that channel and monitor. Every notification
worker sweeps for pending summaries whose window has passed and sends each once: how many
alerts were held back and what the monitor's status is now.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from runstate.channels.base import Delivery, WebsiteRef
from runstate.domain.events import Alert, AlertEvent
from runstate.domain.status import Status
from runstate.storage.notification_log import claim_delivery, message_id
from runstate.storage.tables import AlertChannel, Incident, NotificationLog, Website

log = logging.getLogger(__name__)

SUMMARY = "SUMMARY"


async def ensure_summary_pending(
    sessions: async_sessionmaker[AsyncSession], alert: Alert, channel: AlertChannel
) -> None:
    """Make sure a summary will follow the alerts being suppressed on ``channel``."""
    async with sessions() as session:
        waiting = await session.scalar(
            select(NotificationLog.id).where(
                NotificationLog.channel_id == channel.id,
                NotificationLog.website_id == alert.website_id,
                NotificationLog.event == SUMMARY,
                NotificationLog.delivery_status == "pending",
            )
        )
    if waiting is None:
        await claim_delivery(
            sessions, alert, channel, event=SUMMARY, event_id=f"summary-{alert.event_id}"
        )


@dataclass(frozen=True, slots=True)
class DueSummary:
    log_id: uuid.UUID
    attempts: int
    channel: AlertChannel
    delivery: Delivery


async def claim_due_summaries(
    sessions: async_sessionmaker[AsyncSession],
    window_seconds: float,
    abandoned_after_seconds: float,
) -> list[DueSummary]:
    """Summaries whose window has passed, each claimed by this worker alone: pending ones,
    and ones whose claim is older than ``abandoned_after_seconds`` (the claimer died)."""
    now = datetime.now(UTC)
    due_before = now - timedelta(seconds=window_seconds)
    abandoned_before = now - timedelta(seconds=abandoned_after_seconds)
    claimed: list[DueSummary] = []
    async with sessions() as session:
        rows = list(
            await session.scalars(
                select(NotificationLog).where(
                    NotificationLog.event == SUMMARY,
                    (
                        (NotificationLog.delivery_status == "pending")
                        & (NotificationLog.created_at <= due_before)
                    )
                    | (
                        (NotificationLog.delivery_status == "failed")
                        & (NotificationLog.claimed_at < abandoned_before)
                    ),
                )
            )
        )
    for row in rows:
        summary = await _claim(sessions, row, now)
        if summary is not None:
            claimed.append(summary)
    return claimed


async def _claim(
    sessions: async_sessionmaker[AsyncSession], row: NotificationLog, now: datetime
) -> DueSummary | None:
    async with sessions() as session, session.begin():
        unchanged = (
            NotificationLog.claimed_at.is_(None)
            if row.claimed_at is None
            else NotificationLog.claimed_at == row.claimed_at
        )
        taken = await session.execute(
            update(NotificationLog)
            .where(
                NotificationLog.id == row.id,
                NotificationLog.delivery_status == row.delivery_status,
                unchanged,
            )
            .values(delivery_status="failed", claimed_at=now)  # in progress until settled
        )
        if getattr(taken, "rowcount", 0) != 1:
            return None  # another worker took it
        summary = await _build(session, row, now)
        if summary is None:  # nothing left to summarise: settle it rather than retry forever
            await session.execute(
                update(NotificationLog)
                .where(NotificationLog.id == row.id)
                .values(delivery_status="dead", error="monitor, channel or incident is gone")
            )
        return summary


async def _build(session: AsyncSession, row: NotificationLog, now: datetime) -> DueSummary | None:
    channel = await session.get(AlertChannel, row.channel_id) if row.channel_id else None
    website = await session.get(Website, row.website_id)
    if channel is None or website is None:
        return None
    held_back = await session.scalar(
        select(func.count()).where(
            NotificationLog.channel_id == row.channel_id,
            NotificationLog.website_id == row.website_id,
            NotificationLog.delivery_status == "suppressed",
            NotificationLog.created_at >= row.created_at - timedelta(seconds=1),
        )
    )
    latest = await session.scalar(
        select(Incident)
        .where(Incident.website_id == website.id)
        .order_by(Incident.started_at.desc())
    )
    if latest is None:
        return None
    down_now = latest.is_active
    alert = Alert(
        event_id=row.event_id,
        website_id=website.id,
        region_id=0,
        prev_status=Status.UP if down_now else Status.DOWN,
        current_status=Status.DOWN if down_now else Status.UP,
        occurred_at=latest.started_at if down_now else (latest.resolved_at or now),
        incident_id=latest.id,
        event=AlertEvent.DOWN if down_now else AlertEvent.RECOVERY,
    )
    window = now - row.created_at
    text = (
        f"{held_back or 0} further alert(s) were held back in the last "
        f"{int(window.total_seconds() // 60) + 1} minutes because the monitor is flapping; "
        f"it is now {'DOWN' if down_now else 'UP'}."
    )
    delivery = Delivery(
        message_id=message_id(row.id),
        alert=alert,
        website=WebsiteRef(website.id, website.url, website.name),
        target=channel.target,
        secret=channel.secret,
        summary=text,
    )
    return DueSummary(row.id, row.attempts, channel, delivery)
