"""Stage 3 — status change -> incident -> alert (worker-status-change).

One monitor's changes may arrive in any order: batches run concurrently, there can be
several workers, and a retried entry comes back later. The result does not depend on it.
Each change is applied in one database transaction that first takes the monitor's row (the
database's write lock on SQLite), so one monitor's changes are applied one at a time:

1. the monitor's status moves to this change if it is newer than the one it shows
   (`websites.current_status` and `status_changed_at` always end as the newest change says);
2. the change is recorded on the monitor's incidents where its time puts it
   (`domain.incidents`): a DOWN opens an incident, or completes the recovery that arrived
   before it, or cuts the incident it falls in; an UP resolves the incident it falls in, or
   waits as a recovery awaiting its outage. Only the incidents starting just before and just
   after the change are read, through the index on (website_id, started_at).

Then the alerts the change makes true are forwarded to the notification stream, and only
then is the entry acknowledged: a DOWN's alert, and the RECOVERY of its incident when that
incident's UP was recorded first; an UP's RECOVERY when its incident has its DOWN. An alert
sent when the monitor has already moved on (a newer change is shown) is marked ``late``.

Idempotent on `event_id`: a redelivered change finds the incident that records it and
forwards its alerts again (the notification stage delivers each alert once per channel),
and two workers racing on the same change produce one incident (the row lock orders them;
the unique indexes on `opened_by_event_id`, `resolved_by_event_id` and the one active
incident per monitor would refuse a second one).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from runstate.consumer import PermanentFailure
from runstate.domain.events import Alert, MalformedEntry, StatusChange, status_change_event_id
from runstate.domain.incidents import Recorded, Shown, Span, alerts_of, place_down, place_up
from runstate.domain.status import Status
from runstate.metrics import PipelineMetrics
from runstate.queue.base import Entry, StreamQueue
from runstate.storage.status_pages import bump_pages_of_monitor
from runstate.storage.tables import Incident, UtcDateTime, Website, WebsiteCheck

log = logging.getLogger(__name__)

# The cause of a recovery awaiting its outage, until the DOWN that began it arrives.
AWAITING_OUTAGE_CAUSE = "recovered; the change that began this outage has not arrived yet"


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
            alerts = await self.record(change)
        except IntegrityError:
            # Another worker recorded the same change first; recording again finds its work.
            alerts = await self.record(change)
        if alerts:
            await self.queue.publish(self.notification_stream, [a.to_fields() for a in alerts])

    async def record(self, change: StatusChange) -> list[Alert]:
        """Apply ``change`` to the database; the alerts it makes true, in the order they
        happened (none for a deleted monitor or a recovery still awaiting its outage)."""
        async with self.sessions() as session, session.begin():
            shown = await self._move_status(session, change)
            if shown is None:
                return []  # the monitor is gone
            incident = await self._incident_recording(session, change)
            if incident is None:
                incident = await self._place(session, change, shown)
            late = shown.change.at > change.occurred_at
            return alerts_of(change, _span(incident), late=late)

    async def _move_status(self, session: AsyncSession, change: StatusChange) -> Shown | None:
        """Take the monitor's row and move its status to ``change`` if that is newer; the
        newest change it shows then, or None when the monitor does not exist."""
        # A write first, whether or not the status moves: the row lock (the database lock
        # on SQLite) orders every change of one monitor.
        newer = Website.status_changed_at.is_(None) | (
            Website.status_changed_at < change.occurred_at
        )
        row = (
            await session.execute(
                update(Website)
                .where(Website.id == change.website_id)
                .values(
                    current_status=case(
                        (newer, change.current_status.value), else_=Website.current_status
                    ),
                    status_changed_at=case(
                        (newer, literal(change.occurred_at, UtcDateTime())),
                        else_=Website.status_changed_at,
                    ),
                )
                .returning(Website.current_status, Website.status_changed_at)
            )
        ).one_or_none()
        if row is None:
            return None
        at = row.status_changed_at
        if at == change.occurred_at:  # this change is the one shown: its pages move on
            await bump_pages_of_monitor(session, change.website_id)
        if at == change.occurred_at or row.current_status not in _STATUSES:
            return Shown(change.current_status, Recorded(change.event_id, change.occurred_at))
        shown = Recorded(status_change_event_id(change.website_id, _ms(at)), at)
        return Shown(Status(row.current_status), shown)

    async def _incident_recording(
        self, session: AsyncSession, change: StatusChange
    ) -> Incident | None:
        """The incident that already records ``change`` (a redelivery), if any."""
        by_event = (
            Incident.opened_by_event_id
            if change.current_status is Status.DOWN
            else Incident.resolved_by_event_id
        )
        return await session.scalar(select(Incident).where(by_event == change.event_id))

    async def _place(self, session: AsyncSession, change: StatusChange, shown: Shown) -> Incident:
        before = await session.scalar(
            select(Incident)
            .where(
                Incident.website_id == change.website_id,
                Incident.started_at < change.occurred_at,
            )
            .order_by(Incident.started_at.desc())
            .limit(1)
        )
        if change.current_status is Status.UP:
            return await self._place_up(session, change, before)
        after = await session.scalar(
            select(Incident)
            .where(
                Incident.website_id == change.website_id,
                Incident.started_at > change.occurred_at,
            )
            .order_by(Incident.started_at)
            .limit(1)
        )
        return await self._place_down(session, change, before, after, shown)

    async def _place_down(
        self,
        session: AsyncSession,
        change: StatusChange,
        before: Incident | None,
        after: Incident | None,
        shown: Shown,
    ) -> Incident:
        placed = place_down(change.occurred_at, _span_of(before), _span_of(after), shown)
        if placed.cut is not None and before is not None:
            before.is_active = False
            before.resolved_at = change.occurred_at
            before.resolved_by_event_id = None
            await session.flush()  # frees its resolver and the active slot first
        cause = await self._cause(session, change)
        self.metrics.incidents_opened.inc()
        if placed.complete is not None and after is not None:
            after.started_at = change.occurred_at
            after.opened_by_event_id = change.event_id
            after.cause = cause
            self.metrics.incidents_resolved.inc()
            return after
        incident = Incident(
            website_id=change.website_id,
            started_at=change.occurred_at,
            is_active=placed.ends_at is None,
            resolved_at=placed.ends_at,
            resolved_by_event_id=placed.resolved_by.event_id if placed.resolved_by else None,
            cause=cause,
            opened_by_event_id=change.event_id,
        )
        session.add(incident)
        await session.flush()
        if placed.resolved_by is not None:
            self.metrics.incidents_resolved.inc()
        return incident

    async def _place_up(
        self, session: AsyncSession, change: StatusChange, before: Incident | None
    ) -> Incident:
        placed = place_up(change.occurred_at, _span_of(before))
        if placed.resolve is not None and before is not None:
            before.is_active = False
            before.resolved_at = change.occurred_at
            before.resolved_by_event_id = change.event_id
            await session.flush()  # frees the displaced resolver first
            self.metrics.incidents_resolved.inc()
            if placed.displaced is not None:
                session.add(_awaiting_outage(change.website_id, placed.displaced))
                await session.flush()
            return before
        awaiting = _awaiting_outage(
            change.website_id, Recorded(change.event_id, change.occurred_at)
        )
        session.add(awaiting)
        await session.flush()
        return awaiting

    async def _cause(self, session: AsyncSession, change: StatusChange) -> str | None:
        """The error of the monitor's newest check up to the DOWN (a check row keeps its
        time to the microsecond, the change to the millisecond)."""
        return await session.scalar(
            select(WebsiteCheck.error)
            .where(
                WebsiteCheck.website_id == change.website_id,
                WebsiteCheck.created_at < change.occurred_at + timedelta(milliseconds=1),
            )
            .order_by(WebsiteCheck.created_at.desc(), WebsiteCheck.region_id.desc())
            .limit(1)
        )


_STATUSES = frozenset(status.value for status in Status)


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def _span(incident: Incident) -> Span:
    resolver = None
    if incident.resolved_by_event_id is not None and incident.resolved_at is not None:
        resolver = Recorded(incident.resolved_by_event_id, incident.resolved_at)
    ends_at = None if incident.is_active else incident.resolved_at
    return Span(incident.id, incident.started_at, incident.opened_by_event_id, ends_at, resolver)


def _span_of(incident: Incident | None) -> Span | None:
    return None if incident is None else _span(incident)


def _awaiting_outage(website_id: uuid.UUID, up: Recorded) -> Incident:
    return Incident(
        website_id=website_id,
        started_at=up.at,
        resolved_at=up.at,
        is_active=False,
        cause=AWAITING_OUTAGE_CAUSE,
        resolved_by_event_id=up.event_id,
    )
