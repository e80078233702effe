"""The status page forms: a page (slug, title, description, public, and which monitors in
which groups), a new incident, and an update on an incident.

Each is validated by the JSON API's body schema and written by the API's own route function,
which applies runstate.storage.status_pages' rules (and MAX_STATUS_PAGES_PER_USER): a
StatusPageError comes back as "field: message" and is shown next to that field.

The monitor picker sends, per monitor of the account, a `monitor` checkbox (its id), a
`group-<id>` name and a `position-<id>` number. The page shows the ticked monitors ordered
by position (a blank one after the numbered, in the picker's order); a group comes where its
first monitor does, and an empty group name puts a monitor outside any group.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData

from runstate.api.envelope import ApiError
from runstate.api.routes import status_pages as page_routes
from runstate.api.routes.websites import list_websites
from runstate.api.schemas import WebsitePublic
from runstate.api.state import ApiState
from runstate.api.status_page_schemas import (
    IncidentCreate,
    IncidentUpdateCreate,
    PageIncidentPublic,
    StatusPageCreate,
    StatusPagePublic,
    StatusPageUpdate,
)
from runstate.storage.tables import User
from runstate.web.monitor_forms import Body, FormProblems, form_values, problems_of, validated

PAGE_FIELDS = ("slug", "title", "description")
INCIDENT_FIELDS = ("title", "impact", "status", "body")
UPDATE_FIELDS = ("status", "body")
MONITORS = "monitors"  # where the picker's messages go
# The API's fields whose messages belong next to the picker.
_PICKER_FIELDS = ("groups", "website_ids")


@dataclass(frozen=True)
class Pick:
    """One monitor of the picker, as the form shows it."""

    website: WebsitePublic
    chosen: bool
    group: str
    position: str


def _problems(exc: ApiError, fields: tuple[str, ...]) -> FormProblems:
    """The API's refusal as form problems; an unknown page or incident stays a 404."""
    if exc.status == 404:
        raise exc
    name, separator, message = exc.error.partition(": ")
    if separator and name in _PICKER_FIELDS:
        return FormProblems({MONITORS: message})
    return problems_of(exc, fields, "slug")


def _validated(schema: type[Body], data: dict[str, Any]) -> Body:
    """``data`` checked by ``schema``; a message on the groups goes next to the picker."""
    try:
        return validated(schema, data)
    except FormProblems as problems:
        raise FormProblems(
            {MONITORS if k in _PICKER_FIELDS else k: v for k, v in problems.errors.items()}
        ) from None


async def monitors_to_pick(session: AsyncSession, user: User) -> list[WebsitePublic]:
    """The monitors ``user`` may show (an ADMIN: all), as GET /websites lists them."""
    answer = await list_websites(user, session, None, 0, None)
    monitors: list[WebsitePublic] = answer["data"].websites
    return monitors


def picks_of_page(monitors: Sequence[WebsitePublic], page: StatusPagePublic | None) -> list[Pick]:
    """The picker as a stored page fills it (a new page: nothing ticked, numbered in order)."""
    placed: dict[uuid.UUID, tuple[str, int]] = {}
    for group in page.groups if page else []:
        for website_id in group.website_ids:
            placed[website_id] = (group.name, len(placed) + 1)
    picks = []
    for index, website in enumerate(monitors, start=1):
        group_name, position = placed.get(website.id, ("", len(placed) + index))
        picks.append(Pick(website, website.id in placed, group_name, str(position)))
    return sorted(picks, key=lambda pick: (not pick.chosen, int(pick.position)))


def picks_of_form(form: FormData, monitors: Sequence[WebsitePublic]) -> list[Pick]:
    """The picker as it was sent, to show it again."""
    chosen = {value for value in form.getlist("monitor") if isinstance(value, str)}
    return [
        Pick(
            website,
            str(website.id) in chosen,
            _text(form, f"group-{website.id}"),
            _text(form, f"position-{website.id}"),
        )
        for website in monitors
    ]


def _text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name, "")
    return value.strip() if isinstance(value, str) else ""


def groups_of(picks: Sequence[Pick]) -> list[dict[str, Any]]:
    """The ticked monitors as the API's `groups` (see the module's docstring for the order)."""
    ordered = []
    for index, pick in enumerate(picks):
        if not pick.chosen:
            continue
        rank = _position(pick)
        ordered.append((rank is None, rank or 0, index, pick))
    groups: dict[str, list[str]] = {}
    for *_, pick in sorted(ordered, key=lambda item: item[:3]):
        groups.setdefault(pick.group, []).append(str(pick.website.id))
    return [{"name": name, "website_ids": ids} for name, ids in groups.items()]


def _position(pick: Pick) -> int | None:
    if not pick.position:
        return None
    if len(pick.position) <= 9:  # a bound on the text: int() of a long one costs time
        try:
            return int(pick.position)
        except ValueError:
            pass
    name = pick.website.name or pick.website.url
    raise FormProblems({MONITORS: f"the position of {name} must be a whole number"})


def _page_data(form: Mapping[str, Any], picks: Sequence[Pick]) -> dict[str, Any]:
    values = form_values(form, PAGE_FIELDS)
    return {
        "slug": values["slug"],
        "title": values["title"],
        "description": values["description"] or None,
        "public": form.get("public") == "on",
        "groups": groups_of(picks),
    }


async def create_page(
    state: ApiState, session: AsyncSession, user: User, form: Mapping[str, Any], picks: list[Pick]
) -> StatusPagePublic:
    """The page the form describes, made as POST /api/v1/status-pages makes it."""
    body = _validated(StatusPageCreate, _page_data(form, picks))
    try:
        answer = await page_routes.create_status_page(body, user, state, session)
    except ApiError as exc:
        raise _problems(exc, PAGE_FIELDS) from None
    created: StatusPagePublic = answer["data"]
    return created


async def change_page(
    session: AsyncSession,
    user: User,
    page_id: uuid.UUID,
    form: Mapping[str, Any],
    picks: list[Pick],
) -> None:
    """The page changed as PATCH /api/v1/status-pages/{id} changes it (every field given)."""
    body = _validated(StatusPageUpdate, _page_data(form, picks))
    try:
        await page_routes.update_status_page(page_id, body, user, session)
    except ApiError as exc:
        raise _problems(exc, PAGE_FIELDS) from None


async def post_incident(
    session: AsyncSession, user: User, page_id: uuid.UUID, values: dict[str, str]
) -> None:
    """A new incident with its first update, as POST …/incidents posts it."""
    body = validated(IncidentCreate, {name: value for name, value in values.items() if value})
    try:
        await page_routes.post_incident(page_id, body, user, session)
    except ApiError as exc:
        raise _problems(exc, INCIDENT_FIELDS) from None


async def post_update(
    session: AsyncSession,
    user: User,
    page_id: uuid.UUID,
    incident_id: uuid.UUID,
    values: dict[str, str],
) -> None:
    """An update on the incident, as POST …/incidents/{id}/updates posts it."""
    body = validated(IncidentUpdateCreate, {n: v for n, v in values.items() if v})
    try:
        await page_routes.post_incident_update(page_id, incident_id, body, user, session)
    except ApiError as exc:
        raise _problems(exc, UPDATE_FIELDS) from None


async def incidents_of(
    session: AsyncSession, user: User, page_id: uuid.UUID
) -> list[PageIncidentPublic]:
    """The page's newest incidents with their timelines, as GET …/incidents lists them."""
    answer = await page_routes.list_incidents(page_id, user, session, 50, None)
    incidents: list[PageIncidentPublic] = answer["data"].incidents
    return incidents
