"""Web routes: managing status pages — list, create, edit and delete them, and post incidents
and their updates (investigating, identified, monitoring, resolved) that the public page
/status/{slug} shows.

Reads and writes go through the JSON API's route functions (runstate.web.status_forms), and
so through runstate.storage.status_pages' rules; another account's page is a 404.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import AsyncSession

from runstate.api.deps import SessionDep, StateDep
from runstate.api.routes import status_pages as page_routes
from runstate.api.status_page_schemas import StatusPagePublic
from runstate.storage.tables import INCIDENT_IMPACTS, INCIDENT_STATUSES, User
from runstate.web import status_forms as forms
from runstate.web.monitor_data import install_filters
from runstate.web.monitor_forms import FormProblems, form_values
from runstate.web.pages_common import PageRoute, page, redirect
from runstate.web.session import CsrfChecked, SignedInUser

router = APIRouter(include_in_schema=False, route_class=PageRoute)
install_filters()

NEW_INCIDENT = {"title": "", "impact": "minor", "status": "investigating", "body": ""}


async def _discard(session: AsyncSession, user: User) -> None:
    """Forget a refused change: a page may hold fields set before a later one was refused,
    and the form is shown again from what is stored. The account is read again (the
    rollback expires it) for the page's header."""
    await session.rollback()
    await session.refresh(user)


async def _stored_page(session: AsyncSession, user: User, page_id: uuid.UUID) -> StatusPagePublic:
    answer = await page_routes.get_status_page(page_id, user, session)  # 404: not the user's
    shown: StatusPagePublic = answer["data"]
    return shown


def _page_values(shown: StatusPagePublic) -> dict[str, str]:
    return {
        "slug": shown.slug,
        "title": shown.title,
        "description": shown.description or "",
        "public": "on" if shown.public else "",
    }


def _sent_page_values(form: Any) -> dict[str, str]:
    return form_values(form, forms.PAGE_FIELDS) | {"public": "on" if form.get("public") else ""}


def _choices() -> dict[str, Any]:
    return {
        "impacts": [(i, i) for i in INCIDENT_IMPACTS],
        "statuses": [(s, s) for s in INCIDENT_STATUSES],
    }


@router.get("/status-pages")
async def status_pages(request: Request, user: SignedInUser, session: SessionDep) -> HTMLResponse:
    answer = await page_routes.list_status_pages(user, session, 500, None)
    return page(request, "status_admin/list.html", pages=answer["data"].status_pages)


@router.get("/status-pages/new")
async def new_status_page(
    request: Request, user: SignedInUser, session: SessionDep
) -> HTMLResponse:
    monitors = await forms.monitors_to_pick(session, user)
    return page(
        request,
        "status_admin/new.html",
        values={"slug": "", "title": "", "description": "", "public": "on"},
        errors={},
        picks=forms.picks_of_page(monitors, None),
    )


@router.post("/status-pages/new")
async def create_status_page(
    request: Request, user: SignedInUser, state: StateDep, session: SessionDep, _: CsrfChecked
) -> Response:
    form = await request.form()
    picks = forms.picks_of_form(form, await forms.monitors_to_pick(session, user))
    try:
        created = await forms.create_page(state, session, user, form, picks)
    except FormProblems as problems:
        await _discard(session, user)
        return page(
            request,
            "status_admin/new.html",
            status_code=422,
            values=_sent_page_values(form),
            errors=problems.errors,
            picks=picks,
        )
    return redirect(
        request, f"/status-pages/{created.id}", f"Status page /status/{created.slug} created."
    )


async def _manage(
    request: Request,
    session: AsyncSession,
    user: User,
    page_id: uuid.UUID,
    status_code: int = 200,
    **forms_state: Any,
) -> HTMLResponse:
    """The page's management view; ``forms_state`` holds the values and errors of the form
    that was refused (the others are shown fresh)."""
    shown = await _stored_page(session, user, page_id)
    monitors = await forms.monitors_to_pick(session, user)
    context: dict[str, Any] = {
        "values": _page_values(shown),
        "errors": {},
        "picks": forms.picks_of_page(monitors, shown),
        "incident_values": NEW_INCIDENT,
        "incident_errors": {},
        "update_for": None,
        "update_values": {},
        "update_errors": {},
        **forms_state,
    }
    return page(
        request,
        "status_admin/manage.html",
        status_code=status_code,
        status_page=shown,
        incidents=await forms.incidents_of(session, user, page_id),
        **_choices(),
        **context,
    )


@router.get("/status-pages/{page_id}")
async def manage_status_page(
    request: Request, page_id: uuid.UUID, user: SignedInUser, session: SessionDep
) -> HTMLResponse:
    return await _manage(request, session, user, page_id)


@router.post("/status-pages/{page_id}/edit")
async def edit_status_page(
    request: Request, page_id: uuid.UUID, user: SignedInUser, session: SessionDep, _: CsrfChecked
) -> Response:
    await _stored_page(session, user, page_id)
    form = await request.form()
    picks = forms.picks_of_form(form, await forms.monitors_to_pick(session, user))
    try:
        await forms.change_page(session, user, page_id, form, picks)
    except FormProblems as problems:
        await _discard(session, user)
        return await _manage(
            request,
            session,
            user,
            page_id,
            422,
            values=_sent_page_values(form),
            errors=problems.errors,
            picks=picks,
        )
    return redirect(request, f"/status-pages/{page_id}", "Status page saved.")


@router.post("/status-pages/{page_id}/delete")
async def delete_status_page(
    request: Request, page_id: uuid.UUID, user: SignedInUser, session: SessionDep, _: CsrfChecked
) -> Response:
    shown = await _stored_page(session, user, page_id)
    await page_routes.delete_status_page(page_id, user, session)
    return redirect(request, "/status-pages", f"Status page /status/{shown.slug} deleted.")


@router.post("/status-pages/{page_id}/incidents")
async def post_incident(
    request: Request, page_id: uuid.UUID, user: SignedInUser, session: SessionDep, _: CsrfChecked
) -> Response:
    await _stored_page(session, user, page_id)
    values = form_values(await request.form(), forms.INCIDENT_FIELDS)
    try:
        await forms.post_incident(session, user, page_id, values)
    except FormProblems as problems:
        await _discard(session, user)
        return await _manage(
            request,
            session,
            user,
            page_id,
            422,
            incident_values=values,
            incident_errors=problems.errors,
        )
    return redirect(request, f"/status-pages/{page_id}#incidents", "Incident posted.")


@router.post("/status-pages/{page_id}/incidents/{incident_id}/updates")
async def post_incident_update(
    request: Request,
    page_id: uuid.UUID,
    incident_id: uuid.UUID,
    user: SignedInUser,
    session: SessionDep,
    _: CsrfChecked,
) -> Response:
    await _stored_page(session, user, page_id)
    values = form_values(await request.form(), forms.UPDATE_FIELDS)
    try:
        await forms.post_update(session, user, page_id, incident_id, values)
    except FormProblems as problems:
        await _discard(session, user)
        return await _manage(
            request,
            session,
            user,
            page_id,
            422,
            update_for=incident_id,
            update_values=values,
            update_errors=problems.errors,
        )
    return redirect(
        request, f"/status-pages/{page_id}#incident-{incident_id}", "Incident update posted."
    )
