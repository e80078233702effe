"""Alert channels: ``base.py`` (the interface and the registry) and one module per kind."""

from runstate.channels.base import (
    CHANNELS,
    Channel,
    Delivery,
    DeliveryError,
    WebsiteRef,
    load_channel_class,
    render_payload,
)

__all__ = [
    "CHANNELS",
    "Channel",
    "Delivery",
    "DeliveryError",
    "WebsiteRef",
    "load_channel_class",
    "render_payload",
]
