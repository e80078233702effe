"""Status pages and the incidents posted on them. A page is its owner's: another account's
page answers 404, as an unknown one does (an ADMIN sees every page)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from runstate.api import cursors
from runstate.api.deps import CurrentUser, SessionDep, StateDep
from runstate.api.envelope import ApiError, Envelope, invalid, ok
from runstate.api.quotas import hold_account
from runstate.api.routes import API_PREFIX
from runstate.api.schemas import Deleted
from runstate.api.status_page_schemas import (
    IncidentCreate,
    IncidentUpdateCreate,
    IncidentUpdatePublic,
    PageIncidentPublic,
    PageIncidentsPublic,
    StatusPageCreate,
    StatusPageGroupPublic,
    StatusPagePublic,
    StatusPagesPublic,
    StatusPageUpdate,
)
from runstate.storage import status_pages as pages
from runstate.storage.tables import StatusPage, StatusPageIncident, User

router = APIRouter(prefix=f"{API_PREFIX}/status-pages", tags=["status pages"])

CursorParam = Annotated[
    str | None,
    Query(
        max_length=cursors.MAX_CURSOR_LENGTH,
        description="The `next_cursor` of the previous page.",
    ),
]


def _refusal(error: pages.StatusPageError) -> ApiError:
    if error.conflict:
        return ApiError(409, f"{error.field}: {error.message}")
    return invalid(error.field, error.message)


async def owned_page(session: AsyncSession, page_id: uuid.UUID, user: User) -> StatusPage:
    """The page, when ``user`` owns it or is an ADMIN; 404 otherwise, so that nobody learns
    which ids other accounts' pages have."""
    page = await session.get(StatusPage, page_id)
    if page is None or (page.user_id != user.id and user.role != "ADMIN"):
        raise ApiError(404, "no such status page")
    return page


async def _owned_incident(
    session: AsyncSession, page: StatusPage, incident_id: uuid.UUID
) -> StatusPageIncident:
    incident = await session.get(StatusPageIncident, incident_id)
    if incident is None or incident.status_page_id != page.id:
        raise ApiError(404, "no such incident on this status page")
    return incident


async def _ensure_page_room(session: AsyncSession, user: User, limit: int) -> None:
    """403 naming MAX_STATUS_PAGES_PER_USER when ``user`` (not an ADMIN) has ``limit``
    pages; otherwise the account stays held until the new page is committed (quotas.py)."""
    if user.role == "ADMIN":
        return
    await hold_account(session, user.id)
    owned = await pages.count_pages_of_owner(session, user.id)
    if owned >= limit:
        raise ApiError(
            403,
            f"quota reached: this account has {owned} status pages, "
            f"and MAX_STATUS_PAGES_PER_USER allows {limit}",
        )


async def _public(session: AsyncSession, found: Sequence[StatusPage]) -> list[StatusPagePublic]:
    groups = await pages.groups_of_pages(session, [page.id for page in found])
    shown = []
    for page in found:
        public = StatusPagePublic.model_validate(page)
        public.groups = [
            StatusPageGroupPublic(name=name, website_ids=ids) for name, ids in groups[page.id]
        ]
        shown.append(public)
    return shown


@router.post("", status_code=201, response_model=Envelope[StatusPagePublic])
async def create_status_page(
    body: StatusPageCreate, user: CurrentUser, state: StateDep, session: SessionDep
) -> dict[str, Any]:
    await _ensure_page_room(session, user, state.settings.MAX_STATUS_PAGES_PER_USER)
    try:
        page = await pages.create_page(
            session,
            user.id,
            body.slug,
            body.title,
            body.monitor_groups() or [],
            description=body.description,
            public=body.public,
        )
    except pages.StatusPageError as error:
        raise _refusal(error) from None
    shown = (await _public(session, [page]))[0]
    await session.commit()
    return ok(shown)


@router.get("", response_model=Envelope[StatusPagesPublic])
async def list_status_pages(
    user: CurrentUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: CursorParam = None,
) -> dict[str, Any]:
    """The caller's pages (ADMIN: all), oldest first (`created_at`, then `id`)."""
    query = select(StatusPage).order_by(StatusPage.created_at, StatusPage.id)
    if user.role != "ADMIN":
        query = query.where(StatusPage.user_id == user.id)
    if cursor is not None:
        position = cursors.decode(cursor, "status-pages", uuid.UUID)
        query = query.where(
            cursors.after(StatusPage.created_at, StatusPage.id, position, descending=False)
        )
    found, next_cursor = cursors.page(
        (await session.scalars(query.limit(limit + 1))).all(), limit, "status-pages", _page_key
    )
    return ok(
        StatusPagesPublic(status_pages=await _public(session, found), next_cursor=next_cursor)
    )


def _page_key(page: StatusPage) -> tuple[datetime, uuid.UUID]:
    return page.created_at, page.id


@router.get("/{page_id}", response_model=Envelope[StatusPagePublic])
async def get_status_page(
    page_id: uuid.UUID, user: CurrentUser, session: SessionDep
) -> dict[str, Any]:
    page = await owned_page(session, page_id, user)
    return ok((await _public(session, [page]))[0])


@router.patch("/{page_id}", response_model=Envelope[StatusPagePublic])
async def update_status_page(
    page_id: uuid.UUID, body: StatusPageUpdate, user: CurrentUser, session: SessionDep
) -> dict[str, Any]:
    """Change the fields given; `groups` or `website_ids` replaces every monitor of the
    page. The page's version moves."""
    page = await owned_page(session, page_id, user)
    changes: dict[str, Any] = {}
    for field in ("slug", "title", "public"):
        if field in body.model_fields_set:
            value = getattr(body, field)
            if value is None:
                raise invalid(field, "must not be null")
            changes[field] = value
    if "description" in body.model_fields_set:
        changes["description"] = body.description
    groups = body.monitor_groups()
    if groups is not None:
        changes["groups"] = groups
    try:
        await pages.update_page(session, page, **changes)
    except pages.StatusPageError as error:
        raise _refusal(error) from None
    shown = (await _public(session, [page]))[0]
    await session.commit()
    return ok(shown)


@router.delete("/{page_id}", response_model=Envelope[Deleted])
async def delete_status_page(
    page_id: uuid.UUID, user: CurrentUser, session: SessionDep
) -> dict[str, Any]:
    page = await owned_page(session, page_id, user)
    await pages.delete_page(session, page)
    await session.commit()
    return ok(Deleted(id=page_id), "status page deleted")


async def _incident_public(
    session: AsyncSession, incidents: Sequence[StatusPageIncident]
) -> list[PageIncidentPublic]:
    timelines = await pages.updates_of_incidents(session, [i.id for i in incidents])
    shown = []
    for incident in incidents:
        public = PageIncidentPublic.model_validate(incident)
        public.updates = [IncidentUpdatePublic.model_validate(u) for u in timelines[incident.id]]
        shown.append(public)
    return shown


@router.post("/{page_id}/incidents", status_code=201, response_model=Envelope[PageIncidentPublic])
async def post_incident(
    page_id: uuid.UUID, body: IncidentCreate, user: CurrentUser, session: SessionDep
) -> dict[str, Any]:
    """A new incident, with its first update (`status`, `body`)."""
    page = await owned_page(session, page_id, user)
    try:
        incident = await pages.post_incident(
            session, page, body.title, body.impact, body.status, body.body
        )
    except pages.StatusPageError as error:
        raise _refusal(error) from None
    shown = (await _incident_public(session, [incident]))[0]
    await session.commit()
    return ok(shown)


@router.get("/{page_id}/incidents", response_model=Envelope[PageIncidentsPublic])
async def list_incidents(
    page_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: CursorParam = None,
) -> dict[str, Any]:
    """The page's incidents, newest first (`created_at`, then `id`), each with its updates."""
    page = await owned_page(session, page_id, user)
    query = select(StatusPageIncident).where(StatusPageIncident.status_page_id == page.id)
    if cursor is not None:
        position = cursors.decode(cursor, "status-page-incidents", uuid.UUID)
        query = query.where(
            cursors.after(
                StatusPageIncident.created_at, StatusPageIncident.id, position, descending=True
            )
        )
    query = query.order_by(StatusPageIncident.created_at.desc(), StatusPageIncident.id.desc())
    found, next_cursor = cursors.page(
        (await session.scalars(query.limit(limit + 1))).all(),
        limit,
        "status-page-incidents",
        lambda incident: (incident.created_at, incident.id),
    )
    return ok(
        PageIncidentsPublic(
            incidents=await _incident_public(session, found), next_cursor=next_cursor
        )
    )


@router.get("/{page_id}/incidents/{incident_id}", response_model=Envelope[PageIncidentPublic])
async def get_incident(
    page_id: uuid.UUID, incident_id: uuid.UUID, user: CurrentUser, session: SessionDep
) -> dict[str, Any]:
    page = await owned_page(session, page_id, user)
    incident = await _owned_incident(session, page, incident_id)
    return ok((await _incident_public(session, [incident]))[0])


@router.post(
    "/{page_id}/incidents/{incident_id}/updates",
    status_code=201,
    response_model=Envelope[PageIncidentPublic],
)
async def post_incident_update(
    page_id: uuid.UUID,
    incident_id: uuid.UUID,
    body: IncidentUpdateCreate,
    user: CurrentUser,
    session: SessionDep,
) -> dict[str, Any]:
    """A new update; the answer is the incident with its whole timeline. `resolved`
    resolves the incident; any other status after `resolved` reopens it."""
    page = await owned_page(session, page_id, user)
    incident = await _owned_incident(session, page, incident_id)
    try:
        await pages.post_update(session, incident, body.status, body.body)
    except pages.StatusPageError as error:
        raise _refusal(error) from None
    shown = (await _incident_public(session, [incident]))[0]
    await session.commit()
    return ok(shown)


@router.delete("/{page_id}/incidents/{incident_id}", response_model=Envelope[Deleted])
async def delete_incident(
    page_id: uuid.UUID, incident_id: uuid.UUID, user: CurrentUser, session: SessionDep
) -> dict[str, Any]:
    page = await owned_page(session, page_id, user)
    incident = await _owned_incident(session, page, incident_id)
    await pages.delete_incident(session, incident)
    await session.commit()
    return ok(Deleted(id=incident_id), "incident deleted")
