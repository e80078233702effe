"""One attempt of one claimed delivery row: send, then settle the row or schedule its next try.

A transient failure records the error, the attempt count and the next due time, and
releases the row; a `Retry-After` also holds the channel (`hold_channel`). A permanent
failure, or the last of `NOTIFY_MAX_ATTEMPTS`, writes the alert to the dead-letter stream
with its reason, then marks the row `dead`, in that order: when the dead letter cannot be
written the row stays unsettled and a later attempt dead-letters it instead of finding a
final row that never reached the stream. A 410 disables the channel. A row whose channel
was deleted or disabled meanwhile is dead-lettered with that reason.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import orjson
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from runstate.channels.base import Delivery, DeliveryError, WebsiteRef
from runstate.domain.events import Alert, AlertEvent
from runstate.domain.status import Status
from runstate.pipeline.flapping import SUMMARY, build_summary
from runstate.storage.notification_log import (
    FINAL_STATES,
    hold_channel,
    message_id,
    update_attempt,
)
from runstate.storage.tables import AlertChannel, Incident, NotificationLog, Website

if TYPE_CHECKING:
    from runstate.pipeline.deliveries import DueDeliveries

log = logging.getLogger(__name__)


def backoff_seconds(attempt: int, base: float, cap: float, retry_after: float | None) -> float:
    """Full jitter over an exponentially growing ceiling; never sooner than `Retry-After`."""
    ceiling = min(cap, base * 2 ** (attempt - 1))
    delay = random.uniform(0, ceiling)  # noqa: S311 - jitter, not security
    return max(delay, min(retry_after or 0.0, cap))


@dataclass
class Attempt:
    loop: DueDeliveries
    row: NotificationLog
    token: str

    @property
    def message_id(self) -> str:
        return message_id(self.row.id)

    async def run(self) -> None:
        async with self.loop.sessions() as session:
            channel = await session.get(AlertChannel, self.row.channel_id)
            delivery = await self._delivery(session, channel)
        if delivery is None:
            return  # nothing left to send: settled
        row, settings = self.row, self.loop.settings
        if channel is None or not channel.enabled:
            why = "deleted" if channel is None else f"disabled ({channel.disabled_reason})"
            await self._give_up(
                row.attempts, DeliveryError(f"the channel was {why}", permanent=True), delivery
            )
            return
        if row.attempts >= settings.NOTIFY_MAX_ATTEMPTS:  # the last dead letter was not written
            await self._give_up(
                row.attempts, DeliveryError(row.error or "no error recorded"), delivery
            )
            return
        attempts = row.attempts + 1
        try:
            await self.loop.channels[row.channel].deliver(delivery)
        except DeliveryError as exc:
            if exc.permanent or attempts >= settings.NOTIFY_MAX_ATTEMPTS:
                await self._give_up(attempts, exc, delivery)
            else:
                await self._retry_later(attempts, exc)
            return
        except Exception as exc:  # a fault in the channel itself: retried, then dead-lettered
            log.exception("a channel failed unexpectedly", extra={"message_id": self.message_id})
            failure = DeliveryError(f"unexpected {type(exc).__name__} in the {row.channel} channel")
            if attempts >= settings.NOTIFY_MAX_ATTEMPTS:
                await self._give_up(attempts, failure, delivery)
            else:
                await self._retry_later(attempts, failure)
            return
        await self._end(
            attempts=attempts, error=None, delivery_status="sent", sent_at=datetime.now(UTC)
        )
        self.loop.metrics.alerts.labels(row.channel, "sent").inc()

    async def _delivery(
        self, session: AsyncSession, channel: AlertChannel | None
    ) -> Delivery | None:
        row = self.row
        if row.event == SUMMARY:
            summary = await build_summary(session, row)
            if summary is None:
                await self._end(
                    delivery_status="dead", error="monitor, channel or incident is gone"
                )
            return summary
        website = await session.get(Website, row.website_id)
        try:
            alert = await stored_alert(session, row)
        except ValueError as exc:  # not JSON, or not an alert
            await self._end(
                delivery_status="dead", error=f"the recorded alert is unreadable: {exc}"
            )
            return None
        if website is None or alert is None:
            await self._end(delivery_status="dead", error="the monitor or incident is gone")
            return None
        return Delivery(
            message_id=self.message_id,
            alert=alert,
            website=WebsiteRef(website.id, website.url, website.name),
            target=channel.target if channel else row.recipient,
            secret=channel.secret if channel else None,
        )

    async def _retry_later(self, attempts: int, exc: DeliveryError) -> None:
        settings, row = self.loop.settings, self.row
        now = datetime.now(UTC)
        delay = backoff_seconds(
            attempts,
            settings.NOTIFY_RETRY_BASE_SECONDS,
            settings.NOTIFY_RETRY_MAX_SECONDS,
            exc.retry_after,
        )
        await self._end(
            attempts=attempts,
            error=exc.message,
            delivery_status="failed",
            next_attempt_at=now + timedelta(seconds=delay),
        )
        self.loop.metrics.alerts.labels(row.channel, "failed").inc()
        if exc.retry_after and row.channel_id is not None:
            wait = min(exc.retry_after, settings.NOTIFY_RETRY_MAX_SECONDS)
            await hold_channel(self.loop.sessions, row.channel_id, now + timedelta(seconds=wait))

    async def _give_up(self, attempts: int, exc: DeliveryError, delivery: Delivery) -> None:
        row = self.row
        await update_attempt(
            self.loop.sessions,
            row.id,
            self.token,
            release=False,
            attempts=attempts,
            error=exc.message,
            delivery_status="failed",
        )
        if exc.disable_channel and row.channel_id is not None:
            await self._disable(row.channel_id, exc.message)
        await self._dead_letter(delivery, exc, attempts)
        await self._end(delivery_status="dead")

    async def _dead_letter(self, delivery: Delivery, exc: DeliveryError, attempts: int) -> None:
        row, loop = self.row, self.loop
        reason = (
            exc.message if exc.permanent else f"gave up after {attempts} attempts: {exc.message}"
        )
        await loop.queue.publish(
            loop.settings.dead_letter_stream,
            [
                {
                    **delivery.alert.to_fields(),
                    "channel_id": str(row.channel_id or ""),
                    "channel": row.channel,
                    "message_id": self.message_id,
                    "attempts": str(attempts),
                    "dead_letter_reason": reason,
                }
            ],
        )
        loop.metrics.alerts.labels(row.channel, "dead").inc()
        loop.metrics.dead_letters.labels(loop.settings.NOTIFICATION_STREAM).inc()
        log.warning(
            "alert dead-lettered",
            extra={
                "channel_id": str(row.channel_id),
                "message_id": self.message_id,
                "reason": reason,
            },
        )

    async def _disable(self, channel_id: object, reason: str) -> None:
        async with self.loop.sessions() as session, session.begin():
            await session.execute(
                update(AlertChannel)
                .where(AlertChannel.id == channel_id)
                .values(enabled=False, disabled_reason=f"disabled by the receiver: {reason}")
            )
        log.warning("channel disabled by its receiver", extra={"channel_id": str(channel_id)})

    async def _end(self, **values: object) -> None:
        if values.get("delivery_status") in FINAL_STATES:
            values["next_attempt_at"] = None
        await update_attempt(self.loop.sessions, self.row.id, self.token, release=True, **values)


async def stored_alert(session: AsyncSession, row: NotificationLog) -> Alert | None:
    """The alert a row sends: as recorded with it, or, for a row an older version left
    unsettled, rebuilt from its incident; None when that incident is gone."""
    if row.alert is not None:
        return Alert.from_fields(orjson.loads(row.alert))
    incident = await session.get(Incident, row.incident_id)
    if incident is None:
        return None
    down = row.event == AlertEvent.DOWN.value
    return Alert(
        event_id=row.event_id,
        website_id=row.website_id,
        region_id=0,
        prev_status=Status.UP if down else Status.DOWN,
        current_status=Status.DOWN if down else Status.UP,
        occurred_at=incident.started_at if down else (incident.resolved_at or incident.started_at),
        incident_id=incident.id,
        event=AlertEvent(row.event),
    )
