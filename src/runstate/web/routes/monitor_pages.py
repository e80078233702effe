"""Web routes: a monitor's detail page, its forms (add, edit, pause, resume, delete), the
data its response-time chart draws, and the alert channels.

Every write goes through the API's own route functions (runstate.web.monitor_forms), so a
form is refused exactly when `/api/v1` would refuse the same change, with the same message
shown next to the field. A monitor of another account answers 404, as an unknown one does.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse

from runstate.api.deps import SessionDep, StateDep
from runstate.api.envelope import ApiError
from runstate.api.schemas import ChannelCreated, WebsiteUpdate
from runstate.storage.tables import Website
from runstate.web import monitor_data as data
from runstate.web import monitor_forms as forms
from runstate.web.monitor_data import ChartRange
from runstate.web.pages_common import PageRoute, page, redirect
from runstate.web.session import CsrfChecked, SignedInUser

router = APIRouter(include_in_schema=False, route_class=PageRoute)
data.install_filters()

NO_SUCH_MONITOR = "no such monitor"
RangeParam = Annotated[ChartRange, Query(alias="range")]


async def _website(session: SessionDep, website_id: uuid.UUID, user: SignedInUser) -> Website:
    website = await data.visible_website(session, website_id, user)
    if website is None:
        raise ApiError(404, NO_SUCH_MONITOR)
    return website


def _form_page(
    request: Request,
    state: StateDep,
    values: dict[str, str],
    errors: dict[str, str],
    website: Website | None = None,
) -> HTMLResponse:
    return page(
        request,
        "monitors/form.html",
        status_code=422 if errors else 200,
        website=website,
        values=values,
        errors=errors,
        min_interval=state.settings.MIN_CHECK_INTERVAL_SECONDS,
    )


@router.get("/monitors/new")
async def new_monitor(request: Request, user: SignedInUser, state: StateDep) -> HTMLResponse:
    defaults = {name: "" for name in forms.MONITOR_FIELDS} | forms.MONITOR_DEFAULTS
    return _form_page(request, state, defaults, {})


@router.post("/monitors/new")
async def add_monitor(
    request: Request, user: SignedInUser, state: StateDep, session: SessionDep, _: CsrfChecked
) -> Response:
    values = forms.form_values(await request.form(), forms.MONITOR_FIELDS)
    try:
        created = await forms.create_monitor(state, session, user, values)
    except forms.FormProblems as problems:
        return _form_page(request, state, values, problems.errors)
    return redirect(request, f"/monitors/{created.id}", "Monitor added.")


@router.get("/monitors/{website_id}")
async def monitor_detail(
    request: Request,
    website_id: uuid.UUID,
    user: SignedInUser,
    session: SessionDep,
    chart_range: RangeParam = "24h",
) -> HTMLResponse:
    website = await _website(session, website_id, user)
    now = datetime.now(UTC)
    chart = await data.chart_series(session, website, user, chart_range, now)
    return page(
        request,
        "monitors/detail.html",
        website=website,
        windows=await data.uptime_windows(session, website.id, now),
        days=await data.day_bar(session, website.id, now),
        incidents=await data.latest_incidents(session, website, user, now),
        checks=await data.latest_checks(session, website, user),
        alerts=await data.latest_alerts(session, website, user),
        chart=chart,
        chart_rows=data.chart_rows(chart),
        chart_ranges=list(data.CHART_RANGES),
    )


@router.get("/monitors/{website_id}/response-times.json")
async def monitor_chart_data(
    website_id: uuid.UUID,
    user: SignedInUser,
    session: SessionDep,
    chart_range: RangeParam = "24h",
) -> JSONResponse:
    """The chart's points for one range, for static/js/chart.js to draw."""
    website = await _website(session, website_id, user)
    series = await data.chart_series(session, website, user, chart_range, datetime.now(UTC))
    return JSONResponse(series, headers={"Cache-Control": "no-store"})


@router.get("/monitors/{website_id}/edit")
async def edit_monitor(
    request: Request,
    website_id: uuid.UUID,
    user: SignedInUser,
    state: StateDep,
    session: SessionDep,
) -> HTMLResponse:
    website = await _website(session, website_id, user)
    return _form_page(request, state, forms.monitor_form_values(website), {}, website)


@router.post("/monitors/{website_id}/edit")
async def save_monitor(
    request: Request,
    website_id: uuid.UUID,
    user: SignedInUser,
    state: StateDep,
    session: SessionDep,
    _: CsrfChecked,
) -> Response:
    website = await _website(session, website_id, user)
    values = forms.form_values(await request.form(), forms.MONITOR_FIELDS)
    try:
        body = forms.monitor_update_body(values, website)
        await forms.change_monitor(state, session, user, website, body)
    except forms.FormProblems as problems:
        return _form_page(request, state, values, problems.errors, website)
    return redirect(request, f"/monitors/{website_id}", "Monitor saved.")


async def _set_paused(
    request: Request,
    website_id: uuid.UUID,
    user: SignedInUser,
    state: StateDep,
    session: SessionDep,
    paused: bool,
) -> Response:
    website = await _website(session, website_id, user)
    try:
        await forms.change_monitor(state, session, user, website, WebsiteUpdate(paused=paused))
    except forms.FormProblems as problems:
        return redirect(
            request, f"/monitors/{website_id}", "; ".join(problems.errors.values()), "error"
        )
    message = "Monitor paused: it is not checked until resumed." if paused else "Monitor resumed."
    return redirect(request, f"/monitors/{website_id}", message)


@router.post("/monitors/{website_id}/pause")
async def pause_monitor(
    request: Request,
    website_id: uuid.UUID,
    user: SignedInUser,
    state: StateDep,
    session: SessionDep,
    _: CsrfChecked,
) -> Response:
    return await _set_paused(request, website_id, user, state, session, paused=True)


@router.post("/monitors/{website_id}/resume")
async def resume_monitor(
    request: Request,
    website_id: uuid.UUID,
    user: SignedInUser,
    state: StateDep,
    session: SessionDep,
    _: CsrfChecked,
) -> Response:
    return await _set_paused(request, website_id, user, state, session, paused=False)


@router.post("/monitors/{website_id}/delete")
async def delete_monitor(
    request: Request,
    website_id: uuid.UUID,
    user: SignedInUser,
    state: StateDep,
    session: SessionDep,
    _: CsrfChecked,
) -> Response:
    website = await _website(session, website_id, user)
    shown = website.name or website.url
    await forms.delete_monitor(state, session, user, website.id)
    return redirect(request, "/", f"Monitor {shown} deleted, with its history.")


# --- alert channels ---------------------------------------------------------------------


async def _channels_page(
    request: Request,
    session: SessionDep,
    user: SignedInUser,
    values: dict[str, str],
    errors: dict[str, str],
    created: ChannelCreated | None = None,
) -> HTMLResponse:
    return page(
        request,
        "channels/list.html",
        status_code=422 if errors else 200,
        channels=await data.channels_of(session, user),
        values=values,
        errors=errors,
        created=created,
    )


@router.get("/channels")
async def channels(request: Request, user: SignedInUser, session: SessionDep) -> HTMLResponse:
    return await _channels_page(request, session, user, forms.CHANNEL_DEFAULTS, {})


@router.post("/channels")
async def add_channel(
    request: Request, user: SignedInUser, state: StateDep, session: SessionDep, _: CsrfChecked
) -> Response:
    """Add a channel. Not a redirect: a webhook's secret is shown in this answer (which, as
    every page, no cache keeps), the only time it is shown; it is never put in a cookie or a
    URL to survive a redirect."""
    values = forms.form_values(await request.form(), forms.CHANNEL_FIELDS)
    try:
        created = await forms.create_channel(state, session, user, values)
    except forms.FormProblems as problems:
        return await _channels_page(request, session, user, values, problems.errors)
    return await _channels_page(request, session, user, forms.CHANNEL_DEFAULTS, {}, created=created)


@router.post("/channels/{channel_id}/delete")
async def delete_channel(
    request: Request, channel_id: uuid.UUID, user: SignedInUser, session: SessionDep, _: CsrfChecked
) -> Response:
    if not await forms.delete_channel(session, user, channel_id):
        raise ApiError(404, "no such channel")
    return redirect(request, "/channels", "Channel deleted.")
