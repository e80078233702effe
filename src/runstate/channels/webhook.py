"""Webhook channel: a signed JSON POST per contract §5, per the Standard Webhooks specification.

Every connection goes through the SSRF guard (:func:`runstate.netguard.guarded_connector`), so
a target that resolves to a private address is refused at connect time unless
ALLOW_PRIVATE_TARGETS; names are resolved as the DNS_* settings say (runstate.resolve).
Redirects are never followed: a receiver that moved must be updated by its owner, and
following would let a public target bounce us to a private one.

A webhook URL is often itself a secret (a Slack-style URL carries its token in the path), so
no error says it: every message names the receiver's host only, built from the parts of the
failure, never from ``str()`` of an aiohttp exception (which may hold the whole URL).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import socket
import ssl
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Self
from urllib.parse import urlsplit

import aiohttp
import orjson

from runstate import __version__
from runstate.channels.base import Delivery, DeliveryError, render_payload
from runstate.netguard import TargetNotAllowed, guarded_connector, is_blocked_error
from runstate.resolve import CachingResolver, DnsConfig

if TYPE_CHECKING:
    from runstate.channels.base import Channel
    from runstate.settings import Settings

USER_AGENT = f"runstate-webhooks/{__version__}"
SECRET_PREFIX = "whsec_"
_RETRY_AFTER_STATUSES = frozenset({429, 503})
_TRANSIENT_4XX = frozenset({408, 429})


def signing_key(secret: str) -> bytes:
    """The HMAC key a ``whsec_<base64>`` secret stands for; ValueError if it is malformed."""
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the channel's signing secret is not whsec_<base64>") from None


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for exactly these body bytes."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or HTTP-date); None if
    absent or unreadable. A date in the past gives 0."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def receiver_host(url: str) -> str:
    """The host a webhook URL names, for messages: never its path, query or credentials."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        host = None
    return host or "the webhook receiver"


def error_for_status(
    status: int, reason: str | None, headers: Mapping[str, str], host: str = "the receiver"
) -> DeliveryError:
    """The DeliveryError for a non-2xx response from ``host``: 410 disables the channel, 408,
    429 and 5xx are retried (honouring Retry-After on 429 and 503), every other status is
    permanent."""
    label = f"HTTP {status} {reason or ''}".strip()[:120] + f" from {host}"
    if status == 410:
        return DeliveryError(f"{label}: the receiver is gone", permanent=True, disable_channel=True)
    if 300 <= status < 400:
        where = receiver_host(headers.get("Location", "")) if "Location" in headers else "?"
        return DeliveryError(
            f"{label}: redirects are not followed (to a URL on {where})", permanent=True
        )
    if status in _TRANSIENT_4XX or status >= 500:
        retry_after = None
        if status in _RETRY_AFTER_STATUSES:
            retry_after = parse_retry_after(headers.get("Retry-After"))
        return DeliveryError(label, retry_after=retry_after)
    return DeliveryError(label, permanent=True)


def error_for_client_failure(exc: aiohttp.ClientError, host: str) -> DeliveryError:
    """The DeliveryError for a request to ``host`` that got no response, said from the
    failure's parts (its kind, the OS or TLS reason), never from ``str(exc)``."""
    if is_blocked_error(exc):
        return DeliveryError(_blocked_message(exc), permanent=True)
    if isinstance(exc, aiohttp.InvalidURL):
        return DeliveryError(f"the webhook URL for {host} is not a valid URL", permanent=True)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return DeliveryError(_connect_failure(exc, host))
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return DeliveryError(f"{host} closed the connection without answering")
    if isinstance(exc, aiohttp.ClientResponseError):
        return DeliveryError(f"{host} sent a response that could not be read (HTTP {exc.status})")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return DeliveryError(f"the connection to {host} broke while sending the alert")
    if isinstance(exc, aiohttp.ClientOSError):
        return DeliveryError(f"the connection to {host} failed: {_os_reason(exc)}")
    return DeliveryError(f"{type(exc).__name__} while sending to {host}")


def _connect_failure(exc: aiohttp.ClientConnectorError, host: str) -> str:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert_error = exc.certificate_error
        why = getattr(cert_error, "verify_message", None) or type(cert_error).__name__
        return f"TLS: the certificate of {host} is not trusted ({why})"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS: the handshake with {host} failed ({_ssl_reason(exc)})"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"DNS: {host} does not resolve ({_os_reason(exc.os_error)})"
    return f"cannot connect to {host}: {_os_reason(exc.os_error)}"


def _os_reason(error: OSError) -> str:
    if isinstance(error, ssl.SSLError):
        return error.reason or type(error).__name__
    if isinstance(error, socket.gaierror):  # the resolver's short reason ("NXDOMAIN", …)
        return error.strerror or "no address"
    if error.errno is not None and error.errno > 0:
        return os.strerror(error.errno)
    return error.strerror or type(error).__name__


def _ssl_reason(exc: aiohttp.ClientSSLError) -> str:
    cause = exc.os_error
    if isinstance(cause, ssl.SSLError) and cause.reason:
        return cause.reason
    return type(cause).__name__


class WebhookChannel:
    """POSTs each alert to its target URL, signed with the channel's secret."""

    kind = "webhook"

    def __init__(
        self,
        *,
        allow_private: bool,
        timeout_seconds: float = 10.0,
        max_connections: int = 100,
        dns: DnsConfig | None = None,
    ) -> None:
        self._allow_private = allow_private
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._max_connections = max_connections
        self._dns = dns or DnsConfig()
        self._resolver: CachingResolver | None = None
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(
            allow_private=settings.ALLOW_PRIVATE_TARGETS,
            timeout_seconds=settings.WEBHOOK_TIMEOUT_SECONDS,
            dns=DnsConfig.from_settings(settings),
        )

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use: the resolver and the guarded connector need a running loop.
        if self._session is None or self._session.closed:
            if self._resolver is None:
                self._resolver = CachingResolver(self._dns)
            self._session = aiohttp.ClientSession(
                connector=guarded_connector(
                    allow_private=self._allow_private,
                    limit=self._max_connections,
                    resolver=self._resolver,
                ),
                timeout=self._timeout,
                headers={"user-agent": USER_AGENT},
                trust_env=False,  # a proxy would defeat the guard
            )
        return self._session

    async def deliver(self, delivery: Delivery) -> None:
        if not delivery.secret:
            raise DeliveryError("the webhook channel has no signing secret", permanent=True)
        try:
            key = signing_key(delivery.secret)
        except ValueError as exc:
            raise DeliveryError(str(exc), permanent=True) from None
        body = orjson.dumps(render_payload(delivery))
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": delivery.message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(key, delivery.message_id, timestamp, body),
        }
        host = receiver_host(delivery.target)
        try:
            async with self._client().post(
                delivery.target, data=body, headers=headers, allow_redirects=False
            ) as response:
                if 200 <= response.status < 300:
                    return
                raise error_for_status(response.status, response.reason, response.headers, host)
        except DeliveryError:
            raise
        except TimeoutError:
            raise DeliveryError(
                f"no response from {host} within {self._timeout.total:g} seconds"
            ) from None
        except aiohttp.ClientError as exc:
            raise error_for_client_failure(exc, host) from None
        except ValueError:  # a URL yarl cannot parse
            raise DeliveryError(
                f"the webhook URL for {host} is not a valid URL", permanent=True
            ) from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._resolver is not None:
            await self._resolver.close()
            self._resolver = None


def _blocked_message(exc: BaseException) -> str:
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, TargetNotAllowed):
            return str(current)  # names ALLOW_PRIVATE_TARGETS
        current = current.__cause__
    return "the webhook target is not a public address; set ALLOW_PRIVATE_TARGETS=true to allow it"


if TYPE_CHECKING:

    def _satisfies_channel(channel: WebhookChannel) -> Channel:
        return channel
