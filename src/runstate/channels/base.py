"""The alert channel interface: one delivery in; success, or a DeliveryError saying if to retry.

A channel kind is a module with one class satisfying :class:`Channel`, registered by one line
in :data:`CHANNELS`. The notification worker retries a transient :class:`DeliveryError` (after
``retry_after`` seconds when the receiver asked for that) and sends a permanent one straight to
the dead-letter stream.
"""

from __future__ import annotations

import importlib
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Self

from runstate.domain.events import Alert, format_time

if TYPE_CHECKING:
    from runstate.settings import Settings


@dataclass(frozen=True, slots=True)
class WebsiteRef:
    """The monitor an alert is about, as the receiver sees it."""

    id: uuid.UUID
    url: str
    name: str | None


@dataclass(frozen=True, slots=True)
class Delivery:
    """One alert to one channel."""

    message_id: str  # stable across retries and redeliveries: the webhook-id, the Message-ID
    alert: Alert
    website: WebsiteRef
    target: str  # URL or e-mail address
    secret: str | None  # whsec_… for webhooks
    # Set on a flapping summary: what was held back. The alert is then the monitor's
    # latest change, and the message says it summarises.
    summary: str | None = None

    def __repr__(self) -> str:  # the dataclass repr would print the secret into logs
        return (
            f"Delivery(message_id={self.message_id!r}, event={self.alert.event.value}, "
            f"website={self.website.id}, target={self.target!r})"
        )


class DeliveryError(Exception):
    """A delivery that did not succeed.

    ``permanent``: retrying cannot help (dead-letter it now). ``retry_after``: the receiver's
    requested delay in seconds, if it gave one. ``disable_channel``: the receiver said the
    target is gone for good (HTTP 410); the worker should disable the channel.
    """

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        retry_after: float | None = None,
        disable_channel: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.retry_after = retry_after
        self.disable_channel = disable_channel

    def __repr__(self) -> str:
        return (
            f"DeliveryError({self.message!r}, permanent={self.permanent}, "
            f"retry_after={self.retry_after}, disable_channel={self.disable_channel})"
        )


class Channel(Protocol):
    """One kind of alert channel. An instance is shared by all deliveries of a worker."""

    kind: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """The channel as the notification worker configures it."""
        ...

    async def deliver(self, delivery: Delivery) -> None:
        """Return when the receiver accepted the alert; raise DeliveryError otherwise."""
        ...

    async def aclose(self) -> None:
        """Release connections; the channel is not used afterwards."""
        ...


# kind -> "module:Class", imported on first use so a worker loads only what it needs.
CHANNELS: dict[str, str] = {
    "webhook": "runstate.channels.webhook:WebhookChannel",
    "email": "runstate.channels.email:EmailChannel",
}


def load_channel_class(kind: str) -> type[Channel]:
    """The class registered for ``kind``; KeyError for an unknown kind."""
    module_name, _, class_name = CHANNELS[kind].partition(":")
    cls: type[Channel] = getattr(importlib.import_module(module_name), class_name)
    return cls


def render_payload(delivery: Delivery) -> dict[str, Any]:
    """The alert as contract §5 describes it (the webhook body)."""
    alert = delivery.alert
    return {
        "event_id": alert.event_id,
        "event": alert.event.value,
        "website": {
            "id": str(delivery.website.id),
            "url": delivery.website.url,
            "name": delivery.website.name,
        },
        "incident_id": str(alert.incident_id),
        "prev_status": alert.prev_status.value,
        "current_status": alert.current_status.value,
        "occurred_at": format_time(alert.occurred_at),
        "late": alert.late,
        **({"summary": delivery.summary} if delivery.summary else {}),
    }
