"""Delivery rows: the row that makes an alert go out once per channel, and its schedule.

A row is recorded `pending` with no due time; the stage then either suppresses it (the
monitor flaps) or makes it due. The notification workers' due loop claims due rows one at a
time with a compare-and-set on `claimed_at` (a lease, renewed while the attempt runs), so
several workers never make the same attempt twice; the attempt ends by settling the row
(`sent`, `dead`) or by setting its next due time, and releasing the claim.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from sqlalchemy import ColumnElement, and_, case, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from runstate.domain.events import Alert
from runstate.storage.tables import AlertChannel, Incident, NotificationLog

FINAL_STATES = ("sent", "dead", "suppressed")
UNSETTLED_STATES = ("pending", "failed")


async def record_delivery(
    sessions: async_sessionmaker[AsyncSession],
    alert: Alert,
    channel: AlertChannel,
    *,
    event: str | None = None,
    event_id: str | None = None,
    due_at: datetime | None = None,
) -> NotificationLog:
    """The log row of (alert's incident, channel, event), created `pending` when new, with
    the alert it sends (none for a flapping summary, whose ``event`` is given) and
    ``due_at`` as its first due time (none: not decided yet).

    Two workers recording the same delivery get the same row: the unique constraint on
    (incident_id, channel_id, event) makes the second insert a no-op.
    """
    summary = event is not None
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
        "alert": None if summary else orjson.dumps(alert.to_fields()).decode(),
        "next_attempt_at": due_at,
    }
    async with sessions() as session, session.begin():
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        await session.execute(
            insert(NotificationLog)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["incident_id", "channel_id", "event"])
        )
        if not summary:  # a row left by an older version has no alert yet: it gets this one
            await session.execute(
                update(NotificationLog)
                .where(*_same_delivery(values), NotificationLog.alert.is_(None))
                .values(alert=values["alert"])
            )
        row = await session.scalar(select(NotificationLog).where(*_same_delivery(values)))
    assert row is not None
    return row


def _same_delivery(values: dict[str, object]) -> tuple[ColumnElement[bool], ...]:
    return (
        NotificationLog.incident_id == values["incident_id"],
        NotificationLog.channel_id == values["channel_id"],
        NotificationLog.event == values["event"],
    )


def is_undecided(row: NotificationLog) -> bool:
    """Recorded, but neither suppressed nor scheduled yet (the recording was cut short)."""
    return row.delivery_status == "pending" and row.next_attempt_at is None


async def decide(
    sessions: async_sessionmaker[AsyncSession], log_id: uuid.UUID, *, due_at: datetime | None
) -> bool:
    """Schedule an undecided row's first attempt at ``due_at``, or suppress it (``None``).
    False when it was decided already (a copy of the alert got there first)."""
    values: dict[str, object] = (
        {"delivery_status": "suppressed"}
        if due_at is None
        else {"next_attempt_at": _not_before_the_channels_hold(due_at)}
    )
    async with sessions() as session, session.begin():
        decided = await session.execute(
            update(NotificationLog)
            .where(
                NotificationLog.id == log_id,
                NotificationLog.delivery_status == "pending",
                NotificationLog.next_attempt_at.is_(None),
            )
            .values(**values)
        )
    return getattr(decided, "rowcount", 0) == 1


async def revive_dead_delivery(
    sessions: async_sessionmaker[AsyncSession], log_id: uuid.UUID, *, now: datetime | None = None
) -> bool:
    """Make a `dead` delivery due again, with a fresh count of attempts (an operator
    replayed its dead letter: the receiver is fixed). False when the row is not dead (sent
    meanwhile, or still under way) or gone: nothing to revive. Its last error stays until
    the next attempt replaces it."""
    async with sessions() as session, session.begin():
        revived = await session.execute(
            update(NotificationLog)
            .where(NotificationLog.id == log_id, NotificationLog.delivery_status == "dead")
            .values(
                delivery_status="failed",
                attempts=0,
                next_attempt_at=_not_before_the_channels_hold(now or datetime.now(UTC)),
                claimed_by=None,
                claimed_at=None,
            )
        )
    return getattr(revived, "rowcount", 0) == 1


def _not_before_the_channels_hold(due_at: datetime) -> ColumnElement[datetime]:
    """``due_at``, or the row's channel's Retry-After hold when that is later: read in the
    same statement, so a hold set while the alert was being recorded is not missed."""
    held = (
        select(AlertChannel.retry_after_until)
        .where(AlertChannel.id == NotificationLog.channel_id)
        .scalar_subquery()
    )
    due = literal(due_at, NotificationLog.next_attempt_at.type)
    return case((held > due, held), else_=due)


async def make_undecided_due(
    sessions: async_sessionmaker[AsyncSession], *, older_than: timedelta
) -> int:
    """Rows recorded but never decided (the recording was cut short: a worker died, or its
    stream entry was lost with a Redis that restarted empty) for longer than ``older_than``
    are made due now, rather than wait for a redelivery that may never come. They are sent,
    not suppressed: an alert too many is better than silence. How many were."""
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        made = await session.execute(
            update(NotificationLog)
            .where(
                NotificationLog.delivery_status == "pending",
                NotificationLog.next_attempt_at.is_(None),
                NotificationLog.created_at < now - older_than,
            )
            .values(next_attempt_at=_not_before_the_channels_hold(now))
        )
    return int(getattr(made, "rowcount", 0) or 0)


@dataclass(frozen=True, slots=True)
class DueRow:
    log_id: uuid.UUID
    channel_id: uuid.UUID | None  # None: the channel was deleted
    user_id: uuid.UUID | None


async def due_rows(
    sessions: async_sessionmaker[AsyncSession],
    *,
    lease: timedelta,
    limit: int,
    busy_channels: Collection[uuid.UUID] = (),
    busy_users: Collection[uuid.UUID] = (),
) -> list[DueRow]:
    """Up to ``limit`` rows whose attempt is due and unclaimed (or whose claim lapsed),
    soonest first, leaving out channels and accounts that have no room, channels whose
    receiver asked to wait (Retry-After), and rows behind an older one of their monitor on
    their channel."""
    now = datetime.now(UTC)
    query = (
        select(NotificationLog.id, NotificationLog.channel_id, AlertChannel.user_id)
        .outerjoin(AlertChannel, AlertChannel.id == NotificationLog.channel_id)
        .where(
            NotificationLog.next_attempt_at <= now,
            NotificationLog.delivery_status.in_(UNSETTLED_STATES),
            _unclaimed(now, lease),
            or_(AlertChannel.retry_after_until.is_(None), AlertChannel.retry_after_until <= now),
            ~_earlier_unsettled(),
        )
        .order_by(NotificationLog.next_attempt_at)
        .limit(limit)
    )
    # A deleted channel's rows (no channel, no account) are never busy: they are settled
    # (dead-lettered) as soon as they are due. `NULL NOT IN (...)` would leave them out.
    if busy_channels:
        query = query.where(
            or_(
                NotificationLog.channel_id.is_(None),
                NotificationLog.channel_id.not_in(list(busy_channels)),
            )
        )
    if busy_users:
        query = query.where(
            or_(AlertChannel.user_id.is_(None), AlertChannel.user_id.not_in(list(busy_users)))
        )
    async with sessions() as session:
        return [DueRow(*found) for found in await session.execute(query)]


def _earlier_unsettled() -> ColumnElement[bool]:
    """A delivery to the same channel about the same monitor that must go first is not
    settled yet: one of an incident that started earlier, or the DOWN of this row's own
    incident. So a receiver gets one monitor's alerts in order, never a RECOVERY before its
    DOWN, whichever row was recorded first (a late DOWN and its RECOVERY are recorded at
    once) and whatever the workers' clocks say."""
    earlier = aliased(NotificationLog)
    earlier_incident = aliased(Incident)
    this_started = (
        select(Incident.started_at)
        .where(Incident.id == NotificationLog.incident_id)
        .correlate(NotificationLog)  # the outer row, two levels up
        .scalar_subquery()
    )
    return (
        select(earlier.id)
        .join(earlier_incident, earlier_incident.id == earlier.incident_id)
        .where(
            earlier.channel_id == NotificationLog.channel_id,
            earlier.website_id == NotificationLog.website_id,
            earlier.delivery_status.in_(UNSETTLED_STATES),
            earlier.event != "SUMMARY",
            earlier.id != NotificationLog.id,
            or_(
                earlier_incident.started_at < this_started,
                and_(
                    earlier.incident_id == NotificationLog.incident_id,
                    earlier.event == "DOWN",
                    NotificationLog.event != "DOWN",
                ),
            ),
        )
        .exists()
    )


def _unclaimed(now: datetime, lease: timedelta) -> ColumnElement[bool]:
    return or_(NotificationLog.claimed_at.is_(None), NotificationLog.claimed_at < now - lease)


async def claim_attempt(
    sessions: async_sessionmaker[AsyncSession], log_id: uuid.UUID, token: str, lease: timedelta
) -> NotificationLog | None:
    """Claim a due row for one attempt (``token`` names it); None when it is no longer
    due, settled, or claimed by another worker whose lease has not lapsed."""
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        claimed = await session.execute(
            update(NotificationLog)
            .where(
                NotificationLog.id == log_id,
                NotificationLog.next_attempt_at <= now,
                NotificationLog.delivery_status.in_(UNSETTLED_STATES),
                _unclaimed(now, lease),
            )
            .values(claimed_by=token, claimed_at=now)
        )
        if getattr(claimed, "rowcount", 0) != 1:
            return None
        return await session.get(NotificationLog, log_id)


async def renew_claim(
    sessions: async_sessionmaker[AsyncSession], log_id: uuid.UUID, token: str
) -> None:
    """Keep the row claimed by the attempt ``token`` while it runs."""
    async with sessions() as session, session.begin():
        await session.execute(
            update(NotificationLog)
            .where(
                NotificationLog.id == log_id,
                NotificationLog.claimed_by == token,
                NotificationLog.claimed_at.is_not(None),
            )
            .values(claimed_at=datetime.now(UTC))
        )


async def update_attempt(
    sessions: async_sessionmaker[AsyncSession],
    log_id: uuid.UUID,
    token: str,
    *,
    release: bool,
    **values: object,
) -> None:
    """Record what the attempt ``token`` found (and with ``release``, end its claim). Does
    nothing once the row is settled or another worker has taken the claim over."""
    if release:
        values["claimed_at"] = None
    async with sessions() as session, session.begin():
        await session.execute(
            update(NotificationLog)
            .where(
                NotificationLog.id == log_id,
                NotificationLog.claimed_by == token,
                NotificationLog.delivery_status.not_in(FINAL_STATES),
            )
            .values(**values)
        )


async def hold_channel(
    sessions: async_sessionmaker[AsyncSession], channel_id: uuid.UUID, until: datetime
) -> None:
    """The channel's receiver asked not to be called before ``until``: its rows wait until
    then (and say so in their due time); no other channel's do."""
    async with sessions() as session, session.begin():
        await session.execute(
            update(AlertChannel)
            .where(
                AlertChannel.id == channel_id,
                or_(
                    AlertChannel.retry_after_until.is_(None), AlertChannel.retry_after_until < until
                ),
            )
            .values(retry_after_until=until)
        )
        await session.execute(
            update(NotificationLog)
            .where(
                NotificationLog.channel_id == channel_id,
                NotificationLog.delivery_status.in_(UNSETTLED_STATES),
                NotificationLog.next_attempt_at < until,
            )
            .values(next_attempt_at=until)
        )


def message_id(log_id: uuid.UUID) -> str:
    """The id a delivery carries (the webhook-id): the same for every attempt and redelivery."""
    return f"msg_{log_id.hex}"


def log_id_of(message: str) -> uuid.UUID:
    """The delivery row a message id names; ValueError when it names none."""
    prefix, _, hex_id = message.partition("_")
    if prefix != "msg" or len(hex_id) != 32:
        raise ValueError(f"{message!r} is not a delivery's message id")
    return uuid.UUID(hex=hex_id)
