"""Status pages, their incidents and updates: the rules that create and change them, shared
by the JSON API and the dashboard's forms, and the version bumps that tell the public page
it must be rendered again.

No function here commits: each change, and the bump of the pages it touches, is made in
the caller's transaction, so a page's version never moves without its change or the
reverse. Bad input raises :class:`StatusPageError` naming the field.

Bumps lock the pages they move in the order of their ids, and every writer takes a
monitor's row before its pages': two transactions never wait for each other in a circle.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import ColumnElement, Select, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from runstate.storage.tables import (
    INCIDENT_IMPACTS,
    INCIDENT_STATUSES,
    StatusPage,
    StatusPageIncident,
    StatusPageIncidentUpdate,
    StatusPageMonitor,
    User,
    Website,
)

# (group name, monitor ids in order); an empty name: monitors shown outside any group.
Groups = Sequence[tuple[str, Sequence[uuid.UUID]]]
# Bumps and bulk deletions run on an ORM session or on a plain connection alike.
Executor = AsyncSession | AsyncConnection

SLUG_PATTERN: Final = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
SLUG_MIN, SLUG_MAX = 3, 64
# Words a slug may not be: names the site's own routes use, or that would pass for its own.
RESERVED_SLUGS: Final = frozenset(
    {
        "admin",
        "api",
        "assets",
        "badge",
        "badges",
        "dashboard",
        "docs",
        "feed",
        "health",
        "login",
        "logout",
        "metrics",
        "new",
        "openapi",
        "runstate",
        "settings",
        "signin",
        "signup",
        "static",
        "status",
        "www",
    }
)
TITLE_MAX = 200
DESCRIPTION_MAX = 2_000
GROUP_NAME_MAX = 100
MAX_GROUPS = 50
MAX_MONITORS_PER_PAGE = 1_000
BODY_MAX = 10_000


class StatusPageError(Exception):
    """Input a page, incident or update cannot take: ``field`` names it, ``message`` says
    what is wrong with it. ``conflict`` is true when the input is well formed but clashes
    with another page (a slug taken): the API answers 409 then, 422 otherwise."""

    def __init__(self, field: str, message: str, *, conflict: bool = False) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.conflict = conflict


class _Unchanged:
    """The value of an argument left out: the field keeps what it holds."""

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = _Unchanged()


def clean_slug(slug: str) -> str:
    """``slug`` trimmed and lowercased, if it is one a page may take."""
    slug = slug.strip().lower()
    if not SLUG_MIN <= len(slug) <= SLUG_MAX:
        raise StatusPageError("slug", f"must be {SLUG_MIN} to {SLUG_MAX} characters long")
    if SLUG_PATTERN.fullmatch(slug) is None:
        raise StatusPageError(
            "slug",
            "may hold only lowercase letters, digits and single hyphens between them",
        )
    if slug in RESERVED_SLUGS:
        raise StatusPageError("slug", f"'{slug}' is reserved; choose another")
    return slug


def _clean_text(field: str, value: str, maximum: int) -> str:
    value = value.strip()
    if not value:
        raise StatusPageError(field, "must not be empty")
    if len(value) > maximum:
        raise StatusPageError(field, f"must be at most {maximum} characters long")
    return value


def clean_title(title: str) -> str:
    return _clean_text("title", title, TITLE_MAX)


def clean_description(description: str | None) -> str | None:
    """None for a description that is missing or blank."""
    if description is None or not description.strip():
        return None
    return _clean_text("description", description, DESCRIPTION_MAX)


def clean_impact(impact: str) -> str:
    if impact not in INCIDENT_IMPACTS:
        raise StatusPageError("impact", f"must be one of {', '.join(INCIDENT_IMPACTS)}")
    return impact


def clean_status(status: str) -> str:
    if status not in INCIDENT_STATUSES:
        raise StatusPageError("status", f"must be one of {', '.join(INCIDENT_STATUSES)}")
    return status


def clean_groups(groups: Groups) -> list[tuple[str, list[uuid.UUID]]]:
    """``groups`` with trimmed names; each name and each monitor at most once."""
    if len(groups) > MAX_GROUPS:
        raise StatusPageError("groups", f"at most {MAX_GROUPS} groups")
    names: set[str] = set()
    seen: set[uuid.UUID] = set()
    cleaned = []
    for raw_name, website_ids in groups:
        name = raw_name.strip()
        if len(name) > GROUP_NAME_MAX:
            raise StatusPageError("groups", f"a group name must be at most {GROUP_NAME_MAX} long")
        if name in names:
            raise StatusPageError("groups", f"the group '{name}' is given twice")
        names.add(name)
        for website_id in website_ids:
            if website_id in seen:
                raise StatusPageError("website_ids", f"{website_id} is given twice")
            seen.add(website_id)
        cleaned.append((name, list(website_ids)))
    if len(seen) > MAX_MONITORS_PER_PAGE:
        raise StatusPageError("website_ids", f"at most {MAX_MONITORS_PER_PAGE} monitors a page")
    return cleaned


async def _ensure_monitors_usable(
    session: AsyncSession, owner_id: uuid.UUID, website_ids: Iterable[uuid.UUID]
) -> None:
    """Every monitor exists and is the owner's (an ADMIN's page may show any monitor). An
    unknown id and another account's id get the same message: nothing tells them apart."""
    wanted = set(website_ids)
    if not wanted:
        return
    query = select(Website.id).where(Website.id.in_(wanted))
    role = await session.scalar(select(User.role).where(User.id == owner_id))
    if role != "ADMIN":
        query = query.where(Website.user_id == owner_id)
    found = set((await session.scalars(query)).all())
    missing = sorted(wanted - found, key=str)
    if missing:
        raise StatusPageError("website_ids", f"no monitor of this account has the id {missing[0]}")


async def _ensure_slug_free(
    session: AsyncSession, slug: str, except_id: uuid.UUID | None = None
) -> None:
    query = select(StatusPage.id).where(StatusPage.slug == slug)
    if except_id is not None:
        query = query.where(StatusPage.id != except_id)
    if await session.scalar(query) is not None:
        raise _slug_taken(slug)


def _slug_taken(slug: str) -> StatusPageError:
    return StatusPageError("slug", f"'{slug}' is taken by another page", conflict=True)


async def _flush_or_slug_taken(session: AsyncSession, slug: str) -> None:
    """Flush; a slug another request took since it was checked is a conflict too."""
    try:
        await session.flush()
    except IntegrityError:
        raise _slug_taken(slug) from None


def _monitor_rows(page_id: uuid.UUID, groups: Groups) -> list[StatusPageMonitor]:
    rows, position = [], 0
    for name, website_ids in groups:
        for website_id in website_ids:
            rows.append(
                StatusPageMonitor(
                    status_page_id=page_id,
                    website_id=website_id,
                    group_name=name,
                    position=position,
                )
            )
            position += 1
    return rows


async def create_page(
    session: AsyncSession,
    owner_id: uuid.UUID,
    slug: str,
    title: str,
    groups: Groups,
    description: str | None = None,
    public: bool = True,
) -> StatusPage:
    """A new page of ``owner_id`` showing ``groups``' monitors in the order given."""
    slug, title = clean_slug(slug), clean_title(title)
    description, cleaned = clean_description(description), clean_groups(groups)
    await _ensure_monitors_usable(session, owner_id, (i for _, ids in cleaned for i in ids))
    await _ensure_slug_free(session, slug)
    now = datetime.now(UTC)
    page = StatusPage(
        id=uuid.uuid4(),
        user_id=owner_id,
        slug=slug,
        title=title,
        description=description,
        is_public=public,
        version=1,
        version_changed_at=now,
        created_at=now,
        updated_at=now,
    )
    session.add(page)
    await _flush_or_slug_taken(session, slug)
    session.add_all(_monitor_rows(page.id, cleaned))
    await session.flush()
    return page


async def update_page(
    session: AsyncSession,
    page: StatusPage,
    *,
    slug: str | _Unchanged = UNCHANGED,
    title: str | _Unchanged = UNCHANGED,
    description: str | _Unchanged | None = UNCHANGED,
    groups: Groups | _Unchanged = UNCHANGED,
    public: bool | _Unchanged = UNCHANGED,
) -> StatusPage:
    """Change what is given (``groups`` replaces the monitors and their order) and bump the
    page's version; an argument left out keeps its field as it is."""
    if not isinstance(slug, _Unchanged):
        slug = clean_slug(slug)
        await _ensure_slug_free(session, slug, except_id=page.id)
        page.slug = slug
    if not isinstance(title, _Unchanged):
        page.title = clean_title(title)
    if not isinstance(description, _Unchanged):
        page.description = clean_description(description)
    if not isinstance(public, _Unchanged):
        page.is_public = public
    if not isinstance(groups, _Unchanged):
        cleaned = clean_groups(groups)
        await _ensure_monitors_usable(session, page.user_id, (i for _, ids in cleaned for i in ids))
        await session.execute(
            delete(StatusPageMonitor).where(StatusPageMonitor.status_page_id == page.id)
        )
        session.add_all(_monitor_rows(page.id, cleaned))
    page.updated_at = datetime.now(UTC)
    await _flush_or_slug_taken(session, page.slug)
    await _bump_page(session, page)
    return page


async def delete_page(session: AsyncSession, page: StatusPage) -> None:
    """Delete the page with its monitors' places, incidents and updates (children first,
    written out rather than left to the foreign keys' cascades)."""
    incidents = select(StatusPageIncident.id).where(StatusPageIncident.status_page_id == page.id)
    await session.execute(
        delete(StatusPageIncidentUpdate).where(StatusPageIncidentUpdate.incident_id.in_(incidents))
    )
    for table in (StatusPageIncident, StatusPageMonitor):
        await session.execute(delete(table).where(table.status_page_id == page.id))
    await session.delete(page)
    await session.flush()


async def groups_of_page(
    session: AsyncSession, page_id: uuid.UUID
) -> list[tuple[str, list[uuid.UUID]]]:
    """The page's monitors as :data:`Groups`, in the page's order."""
    return (await groups_of_pages(session, [page_id]))[page_id]


async def groups_of_pages(
    session: AsyncSession, page_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[tuple[str, list[uuid.UUID]]]]:
    """Each page's monitors as :data:`Groups` (one query for all the pages)."""
    groups: dict[uuid.UUID, list[tuple[str, list[uuid.UUID]]]] = {i: [] for i in page_ids}
    if not page_ids:
        return groups
    rows = await session.execute(
        select(
            StatusPageMonitor.status_page_id,
            StatusPageMonitor.group_name,
            StatusPageMonitor.website_id,
        )
        .where(StatusPageMonitor.status_page_id.in_(page_ids))
        .order_by(StatusPageMonitor.status_page_id, StatusPageMonitor.position)
    )
    for page_id, name, website_id in rows:
        page_groups = groups[page_id]
        if not page_groups or page_groups[-1][0] != name:
            page_groups.append((name, []))
        page_groups[-1][1].append(website_id)
    return groups


async def pages_of_owner(session: AsyncSession, owner_id: uuid.UUID) -> Sequence[StatusPage]:
    """The owner's pages, oldest first."""
    found = await session.scalars(
        select(StatusPage)
        .where(StatusPage.user_id == owner_id)
        .order_by(StatusPage.created_at, StatusPage.id)
    )
    return found.all()


async def post_incident(
    session: AsyncSession, page: StatusPage, title: str, impact: str, status: str, body: str
) -> StatusPageIncident:
    """A new incident on ``page`` with its first update (``status`` and ``body``)."""
    title, impact = clean_title(title), clean_impact(impact)
    status, body = clean_status(status), _clean_text("body", body, BODY_MAX)
    now = datetime.now(UTC)
    incident = StatusPageIncident(
        id=uuid.uuid4(),
        status_page_id=page.id,
        title=title,
        impact=impact,
        status=status,
        created_at=now,
        updated_at=now,
        resolved_at=now if status == "resolved" else None,
    )
    session.add(incident)
    await session.flush()
    session.add(_update_row(incident.id, status, body, now))
    await session.flush()
    await _bump_page(session, page)
    return incident


async def post_update(
    session: AsyncSession, incident: StatusPageIncident, status: str, body: str
) -> StatusPageIncidentUpdate:
    """A new update on ``incident``, whose status becomes the update's. A `resolved` update
    resolves it; any other status after `resolved` reopens it (`resolved_at` cleared)."""
    status, body = clean_status(status), _clean_text("body", body, BODY_MAX)
    now = datetime.now(UTC)
    incident.status = status
    incident.updated_at = now
    incident.resolved_at = now if status == "resolved" else None
    added = _update_row(incident.id, status, body, now)
    session.add(added)
    await session.flush()
    await bump_pages(session, [incident.status_page_id])
    return added


def _update_row(
    incident_id: uuid.UUID, status: str, body: str, now: datetime
) -> StatusPageIncidentUpdate:
    return StatusPageIncidentUpdate(
        id=uuid.uuid4(), incident_id=incident_id, status=status, body=body, created_at=now
    )


async def delete_incident(session: AsyncSession, incident: StatusPageIncident) -> None:
    """Delete the incident and its updates, and bump its page."""
    await session.execute(
        delete(StatusPageIncidentUpdate).where(StatusPageIncidentUpdate.incident_id == incident.id)
    )
    page_id = incident.status_page_id
    await session.delete(incident)
    await session.flush()
    await bump_pages(session, [page_id])


async def updates_of_incidents(
    session: AsyncSession, incident_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[StatusPageIncidentUpdate]]:
    """Each incident's updates, oldest first (one query for all of them)."""
    timeline: dict[uuid.UUID, list[StatusPageIncidentUpdate]] = {i: [] for i in incident_ids}
    if not incident_ids:
        return timeline
    found = await session.scalars(
        select(StatusPageIncidentUpdate)
        .where(StatusPageIncidentUpdate.incident_id.in_(incident_ids))
        .order_by(StatusPageIncidentUpdate.created_at, StatusPageIncidentUpdate.id)
    )
    for update_row in found:
        timeline[update_row.incident_id].append(update_row)
    return timeline


# Version bumps. Each is one statement, whatever the number of pages it moves.


def _pages_locked_in_order(pages: Select[Any] | None) -> ColumnElement[bool]:
    """The condition choosing the pages to bump: those ``pages`` selects (all when None),
    locked in the order of their ids first (on PostgreSQL; SQLite locks the database)."""
    locked = select(StatusPage.id).order_by(StatusPage.id).with_for_update()
    if pages is not None:
        locked = locked.where(StatusPage.id.in_(pages))
    return StatusPage.id.in_(locked)


async def _bump(executor: Executor, pages: Select[Any] | None) -> int:
    now = datetime.now(UTC)
    result = await executor.execute(
        update(StatusPage)
        .where(_pages_locked_in_order(pages))
        .values(version=StatusPage.version + 1, version_changed_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def bump_pages(executor: Executor, page_ids: Sequence[uuid.UUID]) -> int:
    """Bump the pages ``page_ids``; how many there were."""
    if not page_ids:
        return 0
    return await _bump(executor, select(StatusPage.id).where(StatusPage.id.in_(page_ids)))


async def bump_pages_of_monitor(executor: Executor, website_id: uuid.UUID) -> int:
    """Bump every page that shows the monitor (none: one index probe, nothing written)."""
    return await bump_pages_of_monitors(executor, [website_id])


async def bump_pages_of_monitors(executor: Executor, website_ids: Sequence[uuid.UUID]) -> int:
    """Bump every page that shows any of the monitors, each once."""
    if not website_ids:
        return 0
    shown_on = select(StatusPageMonitor.status_page_id).where(
        StatusPageMonitor.website_id.in_(website_ids)
    )
    return await _bump(executor, shown_on)


async def bump_pages_of_monitors_without_status(
    executor: Executor, website_ids: Sequence[uuid.UUID]
) -> int:
    """Bump the pages of those monitors that have no status yet (their first check is
    about to give them one). One statement; a batch of monitors on no page writes nothing."""
    if not website_ids:
        return 0
    unknown = select(Website.id).where(
        Website.id.in_(website_ids), Website.current_status.is_(None)
    )
    shown_on = select(StatusPageMonitor.status_page_id).where(
        StatusPageMonitor.website_id.in_(unknown)
    )
    return await _bump(executor, shown_on)


async def bump_all_pages(executor: Executor) -> int:
    """Bump every page."""
    return await _bump(executor, None)


async def bump_pages_unchanged_since(executor: Executor, moment: datetime) -> int:
    """Bump the pages whose version has not moved since ``moment`` (the start of the UTC
    day: a new day moves every page's history bar; a page bumped since shows it already).
    Done twice, the second time bumps nothing."""
    return await _bump(
        executor, select(StatusPage.id).where(StatusPage.version_changed_at < moment)
    )


async def _bump_page(session: AsyncSession, page: StatusPage) -> None:
    await bump_pages(session, [page.id])
    await session.refresh(page, attribute_names=["version", "version_changed_at"])


async def count_pages_of_owner(session: AsyncSession, owner_id: uuid.UUID) -> int:
    found = await session.scalar(
        select(func.count()).select_from(StatusPage).where(StatusPage.user_id == owner_id)
    )
    return int(found or 0)
