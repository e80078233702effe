"""Stage 4 — alert -> channels, with retries and a dead-letter stream (worker-notification).

Every enabled channel of the monitor's owner whose `notify_on` matches gets the alert once:
the delivery is claimed by a row in `notification_logs`, unique per (incident, channel,
event), before anything is sent, and held by the alert's stream entry while it is
delivered (`take_delivery`, renewed every few seconds): a second copy of the alert, on
another worker, waits until the row is settled instead of sending it too, and takes it over
if the holder's claim lapses. A redelivered alert finds the row: `sent`, `dead` and
`suppressed` rows are final; a row left mid-way by a crashed worker is delivered again with
the same message id (the webhook-id), so a receiver can drop the repeat.

Transient failures retry with exponential backoff and full jitter (honouring `Retry-After`),
up to `NOTIFY_MAX_ATTEMPTS`; a permanent failure, or the last one, is written to the
dead-letter stream with its reason before the alert is acknowledged. A 410 disables the
channel. A monitor that flaps faster than `ALERT_FLAP_MAX` alerts per
`ALERT_FLAP_WINDOW_SECONDS` on a channel has its further alerts suppressed and summarised in
one message when the window ends (`flapping.py`): fewer messages, never silence.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from runstate.channels.base import Channel, Delivery, DeliveryError, WebsiteRef
from runstate.consumer import PermanentFailure
from runstate.domain.events import Alert, AlertEvent, MalformedEntry
from runstate.metrics import PipelineMetrics
from runstate.pipeline.flapping import claim_due_summaries, ensure_summary_pending
from runstate.queue.base import Entry, StreamQueue
from runstate.runtime import sleep_unless_stopped
from runstate.settings import Settings
from runstate.storage.notification_log import (
    FINAL_STATES,
    Take,
    claim_delivery,
    message_id,
    renew_claim,
    take_delivery,
)
from runstate.storage.tables import AlertChannel, NotificationLog, Website

log = logging.getLogger(__name__)

NOTIFY_ON = {AlertEvent.DOWN: ("DOWN", "BOTH"), AlertEvent.RECOVERY: ("RECOVERY", "BOTH")}
CLAIM_LEASE = timedelta(seconds=30)


def backoff_seconds(attempt: int, base: float, cap: float, retry_after: float | None) -> float:
    """Full jitter over an exponentially growing ceiling; never sooner than `Retry-After`."""
    ceiling = min(cap, base * 2 ** (attempt - 1))
    delay = random.uniform(0, ceiling)  # noqa: S311 - jitter, not security
    return max(delay, min(retry_after or 0.0, cap))


@dataclass
class NotificationStage:
    sessions: async_sessionmaker[AsyncSession]
    queue: StreamQueue
    channels: dict[str, Channel]
    settings: Settings
    metrics: PipelineMetrics
    # A claim on a delivery not renewed for this long was left by a worker that died (or
    # whose event loop stalled that long); holders renew it three times as often.
    claim_lease: timedelta = CLAIM_LEASE

    @property
    def dead_letter_stream(self) -> str:
        return self.settings.dead_letter_stream

    @property
    def abandoned_after(self) -> timedelta:
        """Longer than any delivery takes, every attempt and backoff included: a claim this
        old was left by a worker that died."""
        settings = self.settings
        return timedelta(
            seconds=settings.NOTIFY_MAX_ATTEMPTS
            * (settings.NOTIFY_RETRY_MAX_SECONDS + settings.WEBHOOK_TIMEOUT_SECONDS)
        )

    async def handle(self, entry: Entry) -> None:
        try:
            alert = Alert.from_fields(entry.fields)
        except MalformedEntry as exc:
            raise PermanentFailure(f"malformed alert: {exc}") from None
        website, channels = await self._audience(alert)
        if website is None:
            return  # the monitor was deleted: nobody to tell
        # Every channel's delivery runs to its end, even when another one fails: none is
        # left running, unowned, while the entry goes back to the stream.
        outcomes = await asyncio.gather(
            *(self._deliver(entry.id, alert, website, c) for c in channels),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _audience(self, alert: Alert) -> tuple[Website | None, list[AlertChannel]]:
        async with self.sessions() as session:
            website = await session.get(Website, alert.website_id)
            if website is None:
                return None, []
            channels = await session.scalars(
                select(AlertChannel).where(
                    AlertChannel.user_id == website.user_id,
                    AlertChannel.enabled,
                    AlertChannel.notify_on.in_(NOTIFY_ON[alert.event]),
                )
            )
            return website, list(channels)

    async def _deliver(
        self, entry_id: str, alert: Alert, website: Website, channel: AlertChannel
    ) -> None:
        row = await claim_delivery(self.sessions, alert, channel)
        if row.delivery_status in FINAL_STATES:
            return  # delivered (or settled) before: exactly once
        taken = await take_delivery(self.sessions, row.id, entry_id, self.claim_lease)
        if taken is Take.HELD:
            taken = await self._wait_for_holder(row.id, entry_id)
            if taken is Take.TAKEN:  # taken over: count the attempts the holder made
                async with self.sessions() as session:
                    reloaded = await session.get(NotificationLog, row.id)
                if reloaded is None:
                    return  # deleted with its monitor meanwhile
                row = reloaded
        if taken is Take.SETTLED:
            return
        async with self._holding(row.id, entry_id):
            await self._deliver_taken(row, alert, website, channel)

    async def _wait_for_holder(self, log_id: uuid.UUID, entry_id: str) -> Take:
        """Another copy of this alert is being delivered: its outcome settles this one too.
        Until then this entry stays unacknowledged, in case the holder's worker dies."""
        while True:
            await asyncio.sleep(self.claim_lease.total_seconds() / 6)
            taken = await take_delivery(self.sessions, log_id, entry_id, self.claim_lease)
            if taken is not Take.HELD:
                return taken

    @asynccontextmanager
    async def _holding(self, log_id: uuid.UUID, entry_id: str) -> AsyncIterator[None]:
        async def renew() -> None:
            while True:
                await asyncio.sleep(self.claim_lease.total_seconds() / 3)
                with suppress(Exception):  # a missed renewal is made up by the next one
                    await renew_claim(self.sessions, log_id, entry_id)

        renewing = asyncio.create_task(renew())
        try:
            yield
        finally:
            renewing.cancel()
            with suppress(asyncio.CancelledError):
                await renewing

    async def _deliver_taken(
        self, row: NotificationLog, alert: Alert, website: Website, channel: AlertChannel
    ) -> None:
        if await self._is_flapping(channel, website, row):
            await self._set(row.id, delivery_status="suppressed")
            self.metrics.alerts.labels(channel.type, "suppressed").inc()
            await ensure_summary_pending(self.sessions, alert, channel)
            return
        delivery = Delivery(
            message_id=message_id(row.id),
            alert=alert,
            website=WebsiteRef(website.id, website.url, website.name),
            target=channel.target,
            secret=channel.secret,
        )
        await self.attempt_until_settled(row.id, row.attempts, channel, delivery)

    async def send_due_summaries(self, stop: asyncio.Event) -> None:
        """Every few seconds, send the flapping summaries whose window has passed."""
        window = self.settings.ALERT_FLAP_WINDOW_SECONDS
        while not await sleep_unless_stopped(stop, min(15.0, window / 4)):
            try:
                abandoned_after = self.abandoned_after.total_seconds()
                for due in await claim_due_summaries(self.sessions, window, abandoned_after):
                    await self.attempt_until_settled(
                        due.log_id, due.attempts, due.channel, due.delivery
                    )
            except Exception:
                log.exception("sending flapping summaries failed; will try again")

    async def attempt_until_settled(
        self, log_id: uuid.UUID, attempts: int, channel: AlertChannel, delivery: Delivery
    ) -> None:
        """Try, retry with backoff, and settle the log row as sent or dead."""
        sender = self.channels[channel.type]
        settings = self.settings
        while True:
            attempts += 1
            try:
                await sender.deliver(delivery)
            except DeliveryError as exc:
                if exc.permanent or attempts >= settings.NOTIFY_MAX_ATTEMPTS:
                    await self._give_up(log_id, attempts, channel, delivery, exc)
                    return
                await self._set(
                    log_id, attempts=attempts, error=exc.message, delivery_status="failed"
                )
                self.metrics.alerts.labels(channel.type, "failed").inc()
                await asyncio.sleep(
                    backoff_seconds(
                        attempts,
                        settings.NOTIFY_RETRY_BASE_SECONDS,
                        settings.NOTIFY_RETRY_MAX_SECONDS,
                        exc.retry_after,
                    )
                )
                continue
            await self._set(
                log_id,
                attempts=attempts,
                error=None,
                delivery_status="sent",
                sent_at=datetime.now(UTC),
            )
            self.metrics.alerts.labels(channel.type, "sent").inc()
            return

    async def _give_up(
        self,
        log_id: uuid.UUID,
        attempts: int,
        channel: AlertChannel,
        delivery: Delivery,
        exc: DeliveryError,
    ) -> None:
        """Dead-letter the alert, then settle its row as `dead`, in that order: when the
        dead letter cannot be written, the row stays unsettled and the redelivered alert is
        dead-lettered then, instead of finding a final row and never reaching the stream."""
        await self._set(log_id, attempts=attempts, error=exc.message, delivery_status="failed")
        if exc.disable_channel:
            await self._disable(channel.id, exc.message)
        await self._dead_letter(delivery, channel, exc, attempts)
        await self._set(log_id, delivery_status="dead")

    async def _is_flapping(
        self, channel: AlertChannel, website: Website, row: NotificationLog
    ) -> bool:
        since = datetime.now(UTC) - timedelta(seconds=self.settings.ALERT_FLAP_WINDOW_SECONDS)
        async with self.sessions() as session:
            recent = await session.scalar(
                select(func.count()).where(
                    NotificationLog.channel_id == channel.id,
                    NotificationLog.website_id == website.id,
                    NotificationLog.delivery_status.in_(("sent", "failed", "dead")),
                    NotificationLog.created_at >= since,
                    NotificationLog.id != row.id,
                )
            )
        return (recent or 0) >= self.settings.ALERT_FLAP_MAX

    async def _dead_letter(
        self, delivery: Delivery, channel: AlertChannel, exc: DeliveryError, attempts: int
    ) -> None:
        reason = (
            exc.message if exc.permanent else f"gave up after {attempts} attempts: {exc.message}"
        )
        await self.queue.publish(
            self.dead_letter_stream,
            [
                {
                    **delivery.alert.to_fields(),
                    "channel_id": str(channel.id),
                    "channel": channel.type,
                    "message_id": delivery.message_id,
                    "attempts": str(attempts),
                    "dead_letter_reason": reason,
                }
            ],
        )
        self.metrics.alerts.labels(channel.type, "dead").inc()
        self.metrics.dead_letters.labels(self.settings.NOTIFICATION_STREAM).inc()
        log.warning(
            "alert dead-lettered",
            extra={
                "channel_id": str(channel.id),
                "message_id": delivery.message_id,
                "reason": reason,
            },
        )

    async def _set(self, log_id: uuid.UUID, **values: object) -> None:
        # A settled row stays settled, whoever else still works on it.
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(NotificationLog)
                .where(
                    NotificationLog.id == log_id,
                    NotificationLog.delivery_status.not_in(FINAL_STATES),
                )
                .values(**values)
            )

    async def _disable(self, channel_id: uuid.UUID, reason: str) -> None:
        async with self.sessions() as session, session.begin():
            await session.execute(
                update(AlertChannel)
                .where(AlertChannel.id == channel_id)
                .values(enabled=False, disabled_reason=f"disabled by the receiver: {reason}")
            )
        log.warning("channel disabled by its receiver", extra={"channel_id": str(channel_id)})
