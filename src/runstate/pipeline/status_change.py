"""Stage 3 — status change -> incident -> alert (worker-status-change).

For each confirmed status change, in one database transaction: move the monitor's status
forward (only when this change is newer than the one it shows) and open (DOWN) or resolve
(RECOVERY) its incident. Then forward the change, with its incident, to the notification
stream, and only then acknowledge.

Idempotent on `event_id`: a redelivered change finds the incident it opened or resolved and
forwards it again (the notification stage delivers each alert once per channel), and two
workers racing on the same change produce one incident (the database's unique indexes on
`opened_by_event_id` and on the one active incident per monitor decide).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from runstate.consumer import PermanentFailure
from runstate.domain.events import Alert, MalformedEntry, StatusChange
from runstate.domain.status import Status
from runstate.metrics import PipelineMetrics
from runstate.queue.base import Entry, StreamQueue
from runstate.storage.tables import Incident, Website, WebsiteCheck

log = logging.getLogger(__name__)


@dataclass
class StatusChangeStage:
    sessions: async_sessionmaker[AsyncSession]
    queue: StreamQueue
    notification_stream: str
    metrics: PipelineMetrics

    async def handle(self, entry: Entry) -> None:
        try:
            change = StatusChange.from_fields(entry.fields)
        except MalformedEntry as exc:
            raise PermanentFailure(f"malformed status change: {exc}") from None
        try:
            incident_id = await self.record(change)
        except IntegrityError:
            # Another worker recorded the same change first; recording again finds its work.
            incident_id = await self.record(change)
        if incident_id is None:
            return
        alert = Alert.for_change(change, incident_id)
        await self.queue.publish(self.notification_stream, [alert.to_fields()])

    async def record(self, change: StatusChange) -> uuid.UUID | None:
        """Apply ``change`` to the database; the incident to alert about, or None when
        there is nothing to alert (stale change, deleted monitor, nothing to resolve)."""
        async with self.sessions() as session, session.begin():
            # Write first: the row lock (the database lock on SQLite) orders concurrent
            # changes of one monitor, and the condition makes an older change a no-op.
            moved = await session.execute(
                update(Website)
                .where(
                    Website.id == change.website_id,
                    (Website.status_changed_at.is_(None))
                    | (Website.status_changed_at < change.occurred_at),
                )
                .values(
                    current_status=change.current_status.value,
                    status_changed_at=change.occurred_at,
                )
            )
            if getattr(moved, "rowcount", 0) == 0:
                # Already applied (a redelivery: forward its incident again), older than
                # what the monitor shows, or the monitor is gone.
                return await self._incident_of_event(session, change)
            if change.current_status is Status.DOWN:
                return await self._open_incident(session, change)
            return await self._resolve_incident(session, change)

    async def _incident_of_event(
        self, session: AsyncSession, change: StatusChange
    ) -> uuid.UUID | None:
        by_event = (
            Incident.opened_by_event_id
            if change.current_status is Status.DOWN
            else Incident.resolved_by_event_id
        )
        return await session.scalar(select(Incident.id).where(by_event == change.event_id))

    async def _open_incident(self, session: AsyncSession, change: StatusChange) -> uuid.UUID:
        active = await session.scalar(
            select(Incident.id).where(Incident.website_id == change.website_id, Incident.is_active)
        )
        if active is not None:  # still open from an earlier DOWN: one incident, not two
            return active
        cause = await session.scalar(
            select(WebsiteCheck.error)
            .where(WebsiteCheck.website_id == change.website_id)
            .order_by(WebsiteCheck.created_at.desc(), WebsiteCheck.id.desc())
            .limit(1)
        )
        incident = Incident(
            website_id=change.website_id,
            started_at=change.occurred_at,
            is_active=True,
            cause=cause,
            opened_by_event_id=change.event_id,
        )
        session.add(incident)
        await session.flush()
        self.metrics.incidents_opened.inc()
        return incident.id

    async def _resolve_incident(
        self, session: AsyncSession, change: StatusChange
    ) -> uuid.UUID | None:
        resolved = await session.scalar(
            update(Incident)
            .where(Incident.website_id == change.website_id, Incident.is_active)
            .values(
                is_active=False,
                resolved_at=change.occurred_at,
                resolved_by_event_id=change.event_id,
            )
            .returning(Incident.id)
        )
        if resolved is not None:
            self.metrics.incidents_resolved.inc()
        return resolved
