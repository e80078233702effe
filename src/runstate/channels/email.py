"""E-mail channel: a plain-text and HTML message per alert, sent through the SMTP_* server.

One SMTP session per message (alerts are rare; a pooled connection would mostly be a stale
one). With SMTP_STARTTLS the session is upgraded before anything else is sent, and a server
that does not offer STARTTLS is refused rather than spoken to in clear text.
"""

from __future__ import annotations

import asyncio
import html
import re
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from typing import TYPE_CHECKING, Self

import aiosmtplib

from runstate.channels.base import Delivery, DeliveryError
from runstate.domain.events import AlertEvent, format_time

if TYPE_CHECKING:
    from runstate.channels.base import Channel
    from runstate.settings import Settings

_NOT_IN_MSG_ID = re.compile(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def message_id_header(message_id: str) -> str:
    """A Message-ID that is the same for every attempt of one delivery."""
    return f"<{_NOT_IN_MSG_ID.sub('-', message_id) or 'alert'}@runstate>"


def subject_for(delivery: Delivery) -> str:
    """E.g. "[runstate] DOWN: Example (https://example.com/)"; "RECOVERED" on recovery."""
    website = delivery.website
    word = "DOWN" if delivery.alert.event is AlertEvent.DOWN else "RECOVERED"
    if delivery.summary:
        word = f"FLAPPING, now {word}"
    label = f"{website.name} ({website.url})" if website.name else website.url
    return _CONTROL.sub(" ", f"[runstate] {word}: {label}")


def _facts(delivery: Delivery) -> list[tuple[str, str]]:
    alert, website = delivery.alert, delivery.website
    return [
        ("Monitor", website.name or website.url),
        ("URL", website.url),
        ("Status", f"{alert.prev_status.value} -> {alert.current_status.value}"),
        ("At", format_time(alert.occurred_at)),
        ("Incident", str(alert.incident_id)),
        ("Event", alert.event_id),
    ]


def build_message(delivery: Delivery, *, sender: str) -> EmailMessage:
    """The alert e-mail; ValueError if an address cannot go into a header."""
    label = delivery.website.name or delivery.website.url
    if delivery.alert.event is AlertEvent.DOWN:
        headline = f"{label} is DOWN."
    else:
        headline = f"{label} has RECOVERED: it is up again."
    if delivery.summary:
        headline = f"{headline} {delivery.summary}"
    facts = _facts(delivery)
    text = "\n".join([headline, "", *(f"{key}: {value}" for key, value in facts), ""])
    rows = "\n".join(
        f'<tr><th align="left">{key}</th><td>{html.escape(value)}</td></tr>' for key, value in facts
    )
    body_html = (
        f"<!DOCTYPE html>\n<html><body>\n<p><strong>{html.escape(headline)}</strong></p>\n"
        f"<table>\n{rows}\n</table>\n</body></html>\n"
    )
    message = EmailMessage()
    message["Subject"] = subject_for(delivery)
    message["From"] = sender
    message["To"] = delivery.target
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = message_id_header(delivery.message_id)
    message.set_content(text)
    message.add_alternative(body_html, subtype="html")
    return message


class EmailChannel:
    """Sends each alert to its target address through the configured SMTP server.

    ``tls_context`` replaces the system trust store for STARTTLS (a private CA, or tests).
    """

    kind = "email"

    def __init__(
        self,
        settings: Settings,
        *,
        tls_context: ssl.SSLContext | None = None,
        timeout_seconds: float = 30.0,
        max_connections: int = 10,
    ) -> None:
        self._settings = settings
        self._tls_context = tls_context
        self._timeout = timeout_seconds
        self._slots = asyncio.Semaphore(max_connections)

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(settings)

    async def deliver(self, delivery: Delivery) -> None:
        settings = self._settings
        if not settings.SMTP_HOST:
            raise DeliveryError("SMTP_HOST is not set: cannot send e-mail", permanent=True)
        if not settings.SMTP_FROM:
            raise DeliveryError("SMTP_FROM is not set: cannot send e-mail", permanent=True)
        try:
            message = build_message(delivery, sender=settings.SMTP_FROM)
        except ValueError as exc:
            raise DeliveryError(f"cannot build the message: {exc}", permanent=True) from None
        async with self._slots:
            try:
                await self._send(settings.SMTP_HOST, message, delivery.target)
            except DeliveryError:
                raise
            except (aiosmtplib.SMTPException, OSError, ValueError) as exc:
                raise classify_smtp_error(exc) from None

    async def _send(self, host: str, message: EmailMessage, recipient: str) -> None:
        settings = self._settings
        client = aiosmtplib.SMTP(
            hostname=host,
            port=settings.SMTP_PORT,
            timeout=self._timeout,
            start_tls=False,  # done below, so that a server without it is a clear error
            tls_context=self._tls_context,
        )
        async with client:
            if settings.SMTP_STARTTLS:
                await client.ehlo()
                if not client.supports_extension("starttls"):
                    raise DeliveryError(
                        f"SMTP_STARTTLS is true but {host}:{settings.SMTP_PORT} does not offer "
                        "STARTTLS; refusing to send in clear text (set SMTP_STARTTLS=false "
                        "only for a server you trust on this network)",
                        permanent=True,
                    )
                await client.starttls()
            if settings.SMTP_USERNAME:
                await client.ehlo()
                if not client.supports_extension("auth"):
                    raise DeliveryError(
                        "SMTP_USERNAME is set but the server does not offer AUTH", permanent=True
                    )
                await client.login(settings.SMTP_USERNAME, settings.SMTP_PASSWORD or "")
            await client.send_message(message, recipients=[recipient])

    async def aclose(self) -> None:
        """Nothing to release: each delivery opens and closes its own SMTP session."""


def classify_smtp_error(exc: Exception) -> DeliveryError:
    """5xx replies, bad addresses, refused logins and untrusted certificates are permanent;
    4xx replies, timeouts and lost or refused connections are retried."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        replies = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
        permanent = all(r.code >= 500 for r in exc.recipients)
        return DeliveryError(f"recipient refused: {replies}", permanent=permanent)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return DeliveryError(
            f"SMTP_USERNAME/SMTP_PASSWORD: the server refused the login ({exc.code} {exc.message})",
            permanent=exc.code >= 500,
        )
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return DeliveryError(
            f"SMTP_FROM: the server refused the sender ({exc.code} {exc.message})",
            permanent=exc.code >= 500,
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return DeliveryError(f"SMTP {exc.code} {exc.message}", permanent=exc.code >= 500)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return DeliveryError(
            f"SMTP_HOST: the server's TLS certificate is not trusted ({exc.verify_message})",
            permanent=True,
        )
    if isinstance(exc, aiosmtplib.SMTPNotSupported | ValueError):
        return DeliveryError(f"cannot send this message: {exc}", permanent=True)
    # Timeouts, refused or lost connections, TLS handshake failures, DNS errors.
    return DeliveryError(f"{type(exc).__name__}: {exc}")


if TYPE_CHECKING:

    def _satisfies_channel(channel: EmailChannel) -> Channel:
        return channel
