"""Monitors ("websites") and their history: checks, incidents, alerts (uptime and response
times are in routes/history.py)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query
from sqlalchemy import Select, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from runstate.api import cursors
from runstate.api.deps import CurrentUser, SessionDep, StateDep, limit_monitor_creation
from runstate.api.envelope import ApiError, Envelope, invalid, ok
from runstate.api.quotas import ensure_monitor_room
from runstate.api.routes import API_PREFIX
from runstate.api.schemas import (
    NULLABLE_WEBSITE_FIELDS,
    CheckPublic,
    ChecksPublic,
    Deleted,
    IncidentPublic,
    IncidentsPublic,
    NotificationPublic,
    NotificationsPublic,
    WebsiteCreate,
    WebsiteDetail,
    WebsitePublic,
    WebsitesPublic,
    WebsiteUpdate,
)
from runstate.api.state import ApiState
from runstate.netguard import TargetNotAllowed, check_url_target
from runstate.storage import deletion
from runstate.storage.status_pages import bump_pages_of_monitor
from runstate.storage.tables import (
    Incident,
    NotificationLog,
    User,
    Website,
    WebsiteCheck,
    WebsitePause,
)

router = APIRouter(prefix=f"{API_PREFIX}/websites", tags=["websites"])

DUPLICATE_URL = "you already monitor this URL"
# What status pages show of a monitor: a change moves the version of the pages showing it.
SHOWN_ON_STATUS_PAGES = frozenset({"name", "url", "paused"})
HistoryLimit = Annotated[int, Query(ge=1, le=500)]
CursorParam = Annotated[
    str | None,
    Query(
        max_length=cursors.MAX_CURSOR_LENGTH,
        description="The `next_cursor` of the previous page; repeat that page's filters.",
    ),
]
Row = TypeVar("Row", bound=Any)


async def owned_website(session: AsyncSession, website_id: uuid.UUID, user: User) -> Website:
    """The monitor, when ``user`` owns it or is an ADMIN: 404 when unknown, 403 otherwise."""
    website = await session.get(Website, website_id)
    if website is None:
        raise ApiError(404, "no such website")
    if website.user_id != user.id and user.role != "ADMIN":
        raise ApiError(403, "this website belongs to another account")
    return website


async def _check_target(state: ApiState, url: str) -> None:
    try:
        await check_url_target(url, allow_private=state.settings.ALLOW_PRIVATE_TARGETS)
    except TargetNotAllowed as exc:
        raise invalid("url", str(exc)) from None
    except ValueError as exc:  # a host name that cannot be encoded (IDNA)
        raise invalid("url", f"is not a valid URL ({exc})") from None


def _check_timing(state: ApiState, interval_seconds: int, timeout_ms: int) -> None:
    minimum = state.settings.MIN_CHECK_INTERVAL_SECONDS
    if interval_seconds < minimum:
        raise invalid(
            "interval_seconds",
            f"must be at least {minimum} (MIN_CHECK_INTERVAL_SECONDS)",
        )
    if timeout_ms > interval_seconds * 1000:
        raise invalid("timeout_ms", "must not exceed interval_seconds")


async def _ensure_url_free(
    session: AsyncSession, owner_id: uuid.UUID, url: str, except_id: uuid.UUID | None = None
) -> None:
    query = select(Website.id).where(Website.user_id == owner_id, Website.url == url)
    if except_id is not None:
        query = query.where(Website.id != except_id)
    if await session.scalar(query) is not None:
        raise ApiError(409, DUPLICATE_URL)


async def _commit_or_conflict(session: AsyncSession) -> None:
    try:
        await session.commit()
    except IntegrityError:
        raise ApiError(409, DUPLICATE_URL) from None


async def _record_pause_change(
    session: AsyncSession, website: Website, paused: bool, now: datetime
) -> None:
    """Open a pause period at ``now`` when ``website`` goes from running to paused, close its
    open one when it resumes; nothing when ``paused`` is what it already is. The monitor's row
    is re-read under a lock first, so two requests racing to pause it open one period."""
    await session.refresh(website, attribute_names=["paused"], with_for_update=True)
    if paused == website.paused:
        return
    if paused:
        session.add(WebsitePause(website_id=website.id, paused_at=now))
        return
    await session.execute(
        update(WebsitePause)
        .where(WebsitePause.website_id == website.id, WebsitePause.resumed_at.is_(None))
        .values(resumed_at=now)
    )


@router.post("", status_code=201, response_model=Envelope[WebsitePublic])
async def create_website(
    body: WebsiteCreate, user: CurrentUser, state: StateDep, session: SessionDep
) -> dict[str, Any]:
    # Every attempt counts, before the target's name is resolved: the limit also bounds the
    # lookups one account can make the service do.
    await limit_monitor_creation(state, user)
    _check_timing(state, body.interval_seconds, body.timeout_ms)
    await _check_target(state, body.url)
    # From here to the commit the account is held (quotas.py): no lookups past this point.
    await ensure_monitor_room(session, user, state.settings.MAX_MONITORS_PER_USER)
    await _ensure_url_free(session, user.id, body.url)
    now = datetime.now(UTC)
    website = Website(
        id=uuid.uuid4(), user_id=user.id, time_added=now, updated_at=now, **body.model_dump()
    )
    session.add(website)
    if website.paused:
        session.add(WebsitePause(website_id=website.id, paused_at=now))
    await _commit_or_conflict(session)
    return ok(WebsitePublic.model_validate(website))


@router.get("", response_model=Envelope[WebsitesPublic])
async def list_websites(
    user: CurrentUser,
    session: SessionDep,
    limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    cursor: CursorParam = None,
) -> dict[str, Any]:
    """The caller's monitors (ADMIN: all), oldest first (`time_added`, then `id`). Without
    `limit`, all of them (after `offset` or `cursor`) and no `next_cursor`. A cursor is a
    position of its own: given with a non-zero `offset`, the request is a 422."""
    query = select(Website).order_by(Website.time_added, Website.id)
    if user.role != "ADMIN":
        query = query.where(Website.user_id == user.id)
    if cursor is not None:
        if offset:
            raise invalid("cursor", "cannot be combined with offset (leave offset out)")
        position = cursors.decode(cursor, "websites", uuid.UUID)
        query = query.where(
            cursors.after(Website.time_added, Website.id, position, descending=False)
        )
    query = query.offset(offset).limit(None if limit is None else limit + 1)
    websites, next_cursor = cursors.page(
        (await session.scalars(query)).all(), limit, "websites", _website_key
    )
    return ok(
        WebsitesPublic(
            websites=[WebsitePublic.model_validate(w) for w in websites], next_cursor=next_cursor
        )
    )


def _website_key(website: Website) -> tuple[datetime, uuid.UUID]:
    return website.time_added, website.id


@router.get("/{website_id}", response_model=Envelope[WebsiteDetail])
async def get_website(
    website_id: uuid.UUID, user: CurrentUser, session: SessionDep
) -> dict[str, Any]:
    website = await owned_website(session, website_id, user)
    active = await session.scalar(
        select(Incident).where(Incident.website_id == website.id, Incident.is_active)
    )
    detail = WebsiteDetail.model_validate(website)
    detail.active_incident = IncidentPublic.model_validate(active) if active else None
    return ok(detail)


@router.patch("/{website_id}", response_model=Envelope[WebsitePublic])
async def update_website(
    website_id: uuid.UUID,
    body: WebsiteUpdate,
    user: CurrentUser,
    state: StateDep,
    session: SessionDep,
) -> dict[str, Any]:
    website = await owned_website(session, website_id, user)
    changes = body.model_dump(exclude_unset=True)
    for field, value in changes.items():
        if value is None and field not in NULLABLE_WEBSITE_FIELDS:
            raise invalid(field, "must not be null")
    _check_timing(
        state,
        changes.get("interval_seconds", website.interval_seconds),
        changes.get("timeout_ms", website.timeout_ms),
    )
    if "url" in changes and changes["url"] != website.url:
        await _check_target(state, changes["url"])
        await _ensure_url_free(session, website.user_id, changes["url"], except_id=website.id)
    now = datetime.now(UTC)
    if "paused" in changes:
        await _record_pause_change(session, website, changes["paused"], now)
    for field, value in changes.items():
        setattr(website, field, value)
    website.updated_at = now
    if changes.keys() & SHOWN_ON_STATUS_PAGES:
        await bump_pages_of_monitor(session, website.id)
    await _commit_or_conflict(session)
    return ok(WebsitePublic.model_validate(website))


@router.delete("/{website_id}", response_model=Envelope[Deleted])
async def delete_website(
    website_id: uuid.UUID, user: CurrentUser, state: StateDep, session: SessionDep
) -> dict[str, Any]:
    """Delete the monitor with its history, in batches of DELETE_BATCH_ROWS rows (see
    storage/deletion.py); when the answer comes, the monitor and its history are gone."""
    await owned_website(session, website_id, user)
    await session.close()  # the deletion commits batch by batch on connections of its own
    await deletion.delete_website(state.engine, website_id, state.settings.DELETE_BATCH_ROWS)
    return ok(Deleted(id=website_id), "website deleted")


@router.get("/{website_id}/checks", response_model=Envelope[ChecksPublic])
async def list_checks(
    website_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: CursorParam = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """Checks within [since, until], newest first (`created_at`, then `region_id`): the
    primary key's order, so each page is one range scan of it."""
    website = await owned_website(session, website_id, user)
    query = select(WebsiteCheck).where(WebsiteCheck.website_id == website.id)
    query = _within(query, WebsiteCheck.created_at, since, until)
    checks, next_cursor = await _newest_first_page(
        session,
        query,
        (WebsiteCheck.created_at, WebsiteCheck.region_id, int),
        "checks",
        cursor,
        limit,
    )
    return ok(
        ChecksPublic(
            checks=[CheckPublic.model_validate(c) for c in checks], next_cursor=next_cursor
        )
    )


def _within(
    query: Select[Row],
    column: InstrumentedAttribute[datetime],
    since: datetime | None,
    until: datetime | None,
) -> Select[Row]:
    """``query`` kept to rows whose ``column`` lies in [since, until] (a time without a zone
    is UTC); since after until is a 422 naming `since`."""
    start, end = as_utc("since", since), as_utc("until", until)
    if start is not None and end is not None and start > end:
        raise invalid("since", "must not be after until")
    if start is not None:
        query = query.where(column >= start)
    if end is not None:
        query = query.where(column <= end)
    return query


def as_utc(field: str, moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # a time without a zone is taken as UTC
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise invalid(field, "is outside the range of representable times") from None


@router.get("/{website_id}/incidents", response_model=Envelope[IncidentsPublic])
async def list_incidents(
    website_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    limit: HistoryLimit = 50,
    cursor: CursorParam = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """Incidents that started within [since, until], newest first (`started_at`, then `id`)."""
    website = await owned_website(session, website_id, user)
    query = select(Incident).where(Incident.website_id == website.id)
    query = _within(query, Incident.started_at, since, until)
    incidents, next_cursor = await _newest_first_page(
        session, query, (Incident.started_at, Incident.id, uuid.UUID), "incidents", cursor, limit
    )
    return ok(
        IncidentsPublic(
            incidents=[IncidentPublic.model_validate(i) for i in incidents],
            next_cursor=next_cursor,
        )
    )


@router.get("/{website_id}/notifications", response_model=Envelope[NotificationsPublic])
async def list_notifications(
    website_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    limit: HistoryLimit = 50,
    cursor: CursorParam = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    """Alert deliveries recorded within [since, until], newest first (`created_at`, then
    `id`)."""
    website = await owned_website(session, website_id, user)
    query = select(NotificationLog).where(NotificationLog.website_id == website.id)
    query = _within(query, NotificationLog.created_at, since, until)
    logs, next_cursor = await _newest_first_page(
        session,
        query,
        (NotificationLog.created_at, NotificationLog.id, uuid.UUID),
        "notifications",
        cursor,
        limit,
    )
    return ok(
        NotificationsPublic(
            notifications=[NotificationPublic.model_validate(n) for n in logs],
            next_cursor=next_cursor,
        )
    )


async def _newest_first_page(
    session: AsyncSession,
    query: Select[Any],
    order: tuple[InstrumentedAttribute[datetime], InstrumentedAttribute[Any], type[Any]],
    list_name: str,
    cursor: str | None,
    limit: int,
) -> tuple[Sequence[Any], str | None]:
    """One page of ``query``'s rows, newest first by ``order`` (a time column, the column
    that breaks its ties, and that column's type), after ``cursor``; and the cursor of the
    next page (None at the end)."""
    moment, tiebreak, tiebreak_type = order
    if cursor is not None:
        position = cursors.decode(cursor, list_name, tiebreak_type)
        query = query.where(cursors.after(moment, tiebreak, position, descending=True))
    found = await session.scalars(query.order_by(moment.desc(), tiebreak.desc()).limit(limit + 1))
    return cursors.page(
        found.all(),
        limit,
        list_name,
        lambda row: (getattr(row, moment.key), getattr(row, tiebreak.key)),
    )
