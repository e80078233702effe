"""Stage 4 — alert -> channels, with scheduled retries and a dead-letter stream
(worker-notification).

Handling an alert records its deliveries and sends nothing itself: every enabled channel of
the monitor's owner whose `notify_on` matches gets a row in `notification_logs`, unique per
(incident, channel, event), holding the alert and the time its first attempt is due. Once
every row is recorded, the alert's stream entry is done (acknowledged). A redelivered or
duplicated alert finds its rows and records nothing new.

The due loop (`deliveries.py`) then makes the attempts, each claimed by one worker alone,
with retries scheduled on the row (never slept in a worker slot), caps per channel and per
account, `Retry-After` honoured for its channel only, and dead letters (`attempt.py`). A
delivery whose receiver accepted it but whose row could not say `sent` (the worker died) is
sent again with the same message id (the webhook-id), so a receiver can drop the repeat.

A monitor that flaps faster than `ALERT_FLAP_MAX` alerts per `ALERT_FLAP_WINDOW_SECONDS` on a
channel has its further alerts recorded as `suppressed` and summarised in one message when
the window ends (`flapping.py`): fewer messages, never silence.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from runstate.channels.base import Channel
from runstate.consumer import PermanentFailure
from runstate.domain.events import Alert, AlertEvent, MalformedEntry
from runstate.metrics import PipelineMetrics
from runstate.pipeline.deliveries import DueDeliveries
from runstate.pipeline.flapping import SUMMARY, ensure_summary_pending
from runstate.queue.base import Entry, StreamQueue
from runstate.settings import Settings
from runstate.storage.notification_log import (
    decide,
    is_undecided,
    log_id_of,
    record_delivery,
    revive_dead_delivery,
)
from runstate.storage.tables import AlertChannel, NotificationLog, Website

NOTIFY_ON = {AlertEvent.DOWN: ("DOWN", "BOTH"), AlertEvent.RECOVERY: ("RECOVERY", "BOTH")}


@dataclass
class NotificationStage:
    sessions: async_sessionmaker[AsyncSession]
    queue: StreamQueue
    channels: dict[str, Channel]
    settings: Settings
    metrics: PipelineMetrics
    deliveries: DueDeliveries = field(init=False)

    def __post_init__(self) -> None:
        self.deliveries = DueDeliveries(
            self.sessions, self.queue, self.channels, self.settings, self.metrics
        )

    @property
    def dead_letter_stream(self) -> str:
        return self.settings.dead_letter_stream

    async def handle(self, entry: Entry) -> None:
        """Record the alert's deliveries; return once each is durably recorded, suppressed
        or scheduled (then the entry may be acknowledged)."""
        try:
            alert = Alert.from_fields(entry.fields)
        except MalformedEntry as exc:
            raise PermanentFailure(f"malformed alert: {exc}") from None
        replayed = _replayed_delivery(entry.fields)
        if replayed is not None:
            # A dead letter put back by `runstate dlq replay`: its one delivery (to one
            # channel; a flapping summary included), dead so far, is made due again. The
            # alert's other channels were settled before.
            if await revive_dead_delivery(self.sessions, replayed):
                self.deliveries.wake()
            return
        website, channels = await self._audience(alert)
        if website is None:
            return  # the monitor was deleted: nobody to tell
        # Every channel's recording runs to its end, even when another one fails.
        outcomes = await asyncio.gather(
            *(self._record(alert, website, c) for c in channels), return_exceptions=True
        )
        self.deliveries.wake()
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def deliver_due(self, stop: asyncio.Event) -> None:
        """The due loop: attempts of recorded deliveries, when due, until ``stop``."""
        await self.deliveries.run(stop)

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

    async def _record(self, alert: Alert, website: Website, channel: AlertChannel) -> None:
        row = await record_delivery(self.sessions, alert, channel)
        if not is_undecided(row):
            return  # recorded before: scheduled, under way or settled
        if await self._is_flapping(channel, website, row):
            # The summary first: a suppressed row with no summary would be silence.
            await ensure_summary_pending(
                self.sessions, alert, channel, self.settings.ALERT_FLAP_WINDOW_SECONDS
            )
            if await decide(self.sessions, row.id, due_at=None):
                self.metrics.alerts.labels(channel.type, "suppressed").inc()
            return
        # Due now, or when the channel's Retry-After hold ends (decide reads it).
        await decide(self.sessions, row.id, due_at=datetime.now(UTC))

    async def _is_flapping(
        self, channel: AlertChannel, website: Website, row: NotificationLog
    ) -> bool:
        """More than ALERT_FLAP_MAX alerts on this channel for this monitor within the
        window, counting those not suppressed (sent, failing, or still to be sent)."""
        since = datetime.now(UTC) - timedelta(seconds=self.settings.ALERT_FLAP_WINDOW_SECONDS)
        async with self.sessions() as session:
            recent = await session.scalar(
                select(func.count()).where(
                    NotificationLog.channel_id == channel.id,
                    NotificationLog.website_id == website.id,
                    NotificationLog.event != SUMMARY,
                    NotificationLog.delivery_status != "suppressed",
                    NotificationLog.created_at >= since,
                    NotificationLog.id != row.id,
                )
            )
        return (recent or 0) >= self.settings.ALERT_FLAP_MAX


def _replayed_delivery(fields: Mapping[str, str]) -> uuid.UUID | None:
    """The delivery row of a dead letter replayed onto the stream (named by its
    `message_id` field, which alerts from the status-change stage never carry), or None."""
    message = fields.get("message_id")
    if not message:
        return None
    try:
        return log_id_of(message)
    except ValueError as exc:
        raise PermanentFailure(f"malformed alert: {exc}") from None
