"""Flapping: one summary instead of a storm of alerts, never silence.

When a monitor's alerts on a channel exceed `ALERT_FLAP_MAX` within
`ALERT_FLAP_WINDOW_SECONDS`, the notification stage records further alerts as `suppressed`
and makes sure a `SUMMARY` row is waiting for that channel and monitor, due when the window
has passed. The due loop sends it like any delivery (retries included), built at that moment:
how many alerts were held back and what the monitor's status is now.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from runstate.channels.base import Delivery, WebsiteRef
from runstate.domain.events import Alert, AlertEvent
from runstate.domain.status import Status
from runstate.storage.notification_log import UNSETTLED_STATES, message_id, record_delivery
from runstate.storage.tables import AlertChannel, Incident, NotificationLog, Website

log = logging.getLogger(__name__)

SUMMARY = "SUMMARY"


async def ensure_summary_pending(
    sessions: async_sessionmaker[AsyncSession],
    alert: Alert,
    channel: AlertChannel,
    window_seconds: float,
) -> None:
    """Make sure a summary will follow the alerts being suppressed on ``channel``: one due
    when the flapping window has passed."""
    async with sessions() as session:
        waiting = await session.scalar(
            select(NotificationLog.id).where(
                NotificationLog.channel_id == channel.id,
                NotificationLog.website_id == alert.website_id,
                NotificationLog.event == SUMMARY,
                NotificationLog.delivery_status.in_(UNSETTLED_STATES),
            )
        )
    if waiting is None:
        await record_delivery(
            sessions,
            alert,
            channel,
            event=SUMMARY,
            event_id=f"summary-{alert.event_id}",
            due_at=datetime.now(UTC) + timedelta(seconds=window_seconds),
        )


async def build_summary(session: AsyncSession, row: NotificationLog) -> Delivery | None:
    """The summary a SUMMARY row sends now; None when its monitor, channel or incidents are
    gone (nothing left to summarise)."""
    return await _build(session, row, datetime.now(UTC))


async def _build(session: AsyncSession, row: NotificationLog, now: datetime) -> Delivery | None:
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
    return Delivery(
        message_id=message_id(row.id),
        alert=alert,
        website=WebsiteRef(website.id, website.url, website.name),
        target=channel.target,
        secret=channel.secret,
        summary=text,
    )
