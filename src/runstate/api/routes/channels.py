"""Alert channels: where a user's alerts go (webhook or e-mail), for all their monitors."""

from __future__ import annotations

import base64
import secrets
import uuid
from typing import Any

from email_validator import EmailNotValidError, validate_email
from fastapi import APIRouter
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from runstate.api.deps import CurrentUser, SessionDep, StateDep
from runstate.api.envelope import ApiError, Envelope, invalid, ok
from runstate.api.quotas import ensure_channel_room
from runstate.api.routes import API_PREFIX
from runstate.api.schemas import (
    ChannelCreate,
    ChannelCreated,
    ChannelPublic,
    ChannelsPublic,
    Deleted,
    HttpUrl,
)
from runstate.netguard import TargetNotAllowed, check_url_target
from runstate.settings import Settings
from runstate.storage.tables import AlertChannel

router = APIRouter(prefix=f"{API_PREFIX}/channels", tags=["channels"])

DUPLICATE_CHANNEL = "you already have this channel"
_url = TypeAdapter(HttpUrl)


def new_webhook_secret() -> str:
    """A Standard Webhooks signing key: `whsec_` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _validation_message(exc: ValidationError) -> str:
    return str(exc.errors()[0]["msg"]).removeprefix("Value error, ")


async def _normalised_target(body: ChannelCreate, settings: Settings) -> str:
    if body.type == "email":
        try:
            checked = validate_email(body.target, check_deliverability=False)
        except EmailNotValidError as exc:
            raise invalid("target", f"is not a valid e-mail address ({exc})") from None
        return checked.normalized
    try:
        url = _url.validate_python(body.target)
    except ValidationError as exc:
        raise invalid("target", _validation_message(exc)) from None
    try:
        await check_url_target(url, allow_private=settings.ALLOW_PRIVATE_TARGETS)
    except TargetNotAllowed as exc:
        raise invalid("target", str(exc)) from None
    except ValueError as exc:  # a host name that cannot be encoded (IDNA)
        raise invalid("target", f"is not a valid URL ({exc})") from None
    return url


@router.post("", status_code=201, response_model=Envelope[ChannelCreated])
async def create_channel(
    body: ChannelCreate, user: CurrentUser, state: StateDep, session: SessionDep
) -> dict[str, Any]:
    target = await _normalised_target(body, state.settings)
    # From here to the commit the account is held (quotas.py): no lookups past this point.
    await ensure_channel_room(session, user, state.settings.MAX_CHANNELS_PER_USER)
    duplicate = await session.scalar(
        select(AlertChannel.id).where(
            AlertChannel.user_id == user.id,
            AlertChannel.type == body.type,
            AlertChannel.target == target,
        )
    )
    if duplicate is not None:
        raise ApiError(409, DUPLICATE_CHANNEL)
    channel = AlertChannel(
        user_id=user.id,
        type=body.type,
        target=target,
        notify_on=body.notify_on,
        enabled=body.enabled,
        secret=new_webhook_secret() if body.type == "webhook" else None,
    )
    session.add(channel)
    try:
        await session.commit()
    except IntegrityError:
        raise ApiError(409, DUPLICATE_CHANNEL) from None
    message = "keep the secret: it is shown only now" if channel.secret else None
    return ok(ChannelCreated.model_validate(channel), message)


@router.get("", response_model=Envelope[ChannelsPublic])
async def list_channels(user: CurrentUser, session: SessionDep) -> dict[str, Any]:
    channels = await session.scalars(
        select(AlertChannel)
        .where(AlertChannel.user_id == user.id)
        .order_by(AlertChannel.created_at, AlertChannel.id)
    )
    return ok(ChannelsPublic(channels=[ChannelPublic.model_validate(c) for c in channels]))


@router.delete("/{channel_id}", response_model=Envelope[Deleted])
async def delete_channel(
    channel_id: uuid.UUID, user: CurrentUser, session: SessionDep
) -> dict[str, Any]:
    channel = await session.get(AlertChannel, channel_id)
    if channel is None:
        raise ApiError(404, "no such channel")
    if channel.user_id != user.id and user.role != "ADMIN":
        raise ApiError(403, "this channel belongs to another account")
    await session.delete(channel)
    await session.commit()
    return ok(Deleted(id=channel_id), "channel deleted")
