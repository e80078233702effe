"""The monitor and alert-channel forms: validated by the API's schemas and written by the API's
own route functions, so a form accepts and refuses exactly what `/api/v1` does.

A form sends text, so its values are validated in pydantic's lax mode (the text "60" is the
number 60, a ticked box is true); every other rule — ranges, the URL's shape, the SSRF guard,
MIN_CHECK_INTERVAL_SECONDS, quotas, duplicates, rate limits — is the API's, with its message.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from runstate.api.envelope import ApiError
from runstate.api.routes import channels as channel_routes
from runstate.api.routes import websites as website_routes
from runstate.api.schemas import (
    ChannelCreate,
    ChannelCreated,
    WebsiteCreate,
    WebsitePublic,
    WebsiteUpdate,
)
from runstate.api.state import ApiState
from runstate.storage.tables import User, Website

# The fields of the monitor form, in the order the form shows them.
MONITOR_FIELDS = (
    "url",
    "name",
    "interval_seconds",
    "timeout_ms",
    "method",
    "expected_status",
    "keyword",
    "confirmations",
    "recovery_confirmations",
)
CHANNEL_FIELDS = ("type", "target", "notify_on")
# What a new monitor's form starts with: the API's defaults.
MONITOR_DEFAULTS = {
    name: str(info.default)
    for name, info in WebsiteCreate.model_fields.items()
    if name in MONITOR_FIELDS and not info.is_required() and info.default is not None
}
CHANNEL_DEFAULTS = {"type": "webhook", "target": "", "notify_on": "BOTH"}
FORM_WIDE = "form"  # the key of an error that belongs to no one field (quota, rate limit)

Body = TypeVar("Body", bound=BaseModel)


class FormProblems(Exception):
    """Why a form was refused: a message per field (FORM_WIDE for the form as a whole)."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{name}: {message}" for name, message in errors.items()))
        self.errors = errors


def form_values(form: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, str]:
    """The submitted text of each field in ``names`` ("" when absent), kept to show the form
    again as it was typed."""
    values = {}
    for name in names:
        value = form.get(name, "")
        values[name] = value.strip() if isinstance(value, str) else ""
    return values


def validated(schema: type[Body], data: dict[str, Any]) -> Body:
    """``data`` checked by ``schema`` in lax mode; FormProblems naming each bad field."""
    try:
        return schema.model_validate(data, strict=False)
    except ValidationError as exc:
        raise FormProblems(_schema_errors(exc)) from None


def _schema_errors(exc: ValidationError) -> dict[str, str]:
    errors: dict[str, str] = {}
    for error in exc.errors():
        location = error.get("loc", ())
        name = str(location[0]) if location else FORM_WIDE
        # The message only, as the API gives it: pydantic's error also carries the input.
        errors.setdefault(name, str(error.get("msg", "is invalid")).removeprefix("Value error, "))
    return errors


def problems_of(exc: ApiError, fields: tuple[str, ...], duplicate_field: str) -> FormProblems:
    """An API refusal as form problems: "field: message" (the API's 422s, and 409s that name
    a field) goes next to that field; another duplicate (409) next to ``duplicate_field``;
    anything else (quota, rate limit) above the form."""
    name, separator, message = exc.error.partition(": ")
    if exc.status in (409, 422) and separator and name in fields:
        return FormProblems({name: message})
    if exc.status == 409:
        return FormProblems({duplicate_field: exc.error})
    return FormProblems({FORM_WIDE: exc.error})


# --- monitors -------------------------------------------------------------------------


def monitor_create_body(values: dict[str, str]) -> WebsiteCreate:
    """The form's values as POST /websites' body; an empty field takes the API's default."""
    return validated(WebsiteCreate, {name: value for name, value in values.items() if value})


def monitor_update_body(values: dict[str, str], website: Website) -> WebsiteUpdate:
    """The fields the form changed, as PATCH /websites/{id}'s body. An empty name or keyword
    clears it (NULLABLE_WEBSITE_FIELDS); any other field left empty is sent as null,
    which the API refuses."""
    typed = validated(WebsiteUpdate, {name: value or None for name, value in values.items()})
    changes = {
        name: value
        for name, value in typed.model_dump(exclude_unset=True).items()
        if value != getattr(website, name)  # a required field is never null when stored
    }
    return WebsiteUpdate.model_validate(changes)


def monitor_form_values(website: Website) -> dict[str, str]:
    """A stored monitor as its form shows it."""
    return {
        name: "" if getattr(website, name) is None else str(getattr(website, name))
        for name in MONITOR_FIELDS
    }


async def create_monitor(
    state: ApiState, session: AsyncSession, user: User, values: dict[str, str]
) -> WebsitePublic:
    """The monitor the form describes, made as POST /api/v1/websites makes it."""
    body = monitor_create_body(values)
    try:
        answer = await website_routes.create_website(body, user, state, session)
    except ApiError as exc:
        raise problems_of(exc, MONITOR_FIELDS, "url") from None
    created: WebsitePublic = answer["data"]
    return created


async def change_monitor(
    state: ApiState, session: AsyncSession, user: User, website: Website, body: WebsiteUpdate
) -> None:
    """``body`` applied as PATCH /api/v1/websites/{id} applies it (nothing when empty)."""
    if not body.model_fields_set:
        return
    try:
        await website_routes.update_website(website.id, body, user, state, session)
    except ApiError as exc:
        raise problems_of(exc, MONITOR_FIELDS, "url") from None


async def delete_monitor(
    state: ApiState, session: AsyncSession, user: User, website_id: uuid.UUID
) -> None:
    """The monitor and its history deleted as DELETE /api/v1/websites/{id} deletes them."""
    await website_routes.delete_website(website_id, user, state, session)


# --- alert channels -------------------------------------------------------------------


async def create_channel(
    state: ApiState, session: AsyncSession, user: User, values: dict[str, str]
) -> ChannelCreated:
    """The channel the form describes, made as POST /api/v1/channels makes it (a webhook's
    secret is in the answer: the one time it is ever shown)."""
    body = validated(ChannelCreate, {name: value for name, value in values.items() if value})
    try:
        answer = await channel_routes.create_channel(body, user, state, session)
    except ApiError as exc:
        raise problems_of(exc, CHANNEL_FIELDS, "target") from None
    created: ChannelCreated = answer["data"]
    return created


async def delete_channel(session: AsyncSession, user: User, channel_id: uuid.UUID) -> bool:
    """Delete the channel as DELETE /api/v1/channels/{id} does; False when ``user`` may not
    see it (unknown, or another account's)."""
    try:
        await channel_routes.delete_channel(channel_id, user, session)
    except ApiError as exc:
        if exc.status in (403, 404):
            return False
        raise
    return True
