"""The e-mail channel against a real SMTP server (aiosmtpd) on loopback: plain, with AUTH, and
with STARTTLS under a test CA (trustme)."""

from __future__ import annotations

import email
import email.policy
import socket
import ssl
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from runstate.channels import Delivery, DeliveryError, WebsiteRef
from runstate.channels.email import EmailChannel
from runstate.domain.events import Alert, AlertEvent
from runstate.domain.status import Status
from runstate.settings import Settings

SENDER = "alerts@runstate.example"
RECIPIENT = "oncall@example.com"
UNKNOWN_USER = "nobody@example.com"
BUSY_USER = "busy@example.com"
SMTP_USER = "mailer"
SMTP_PASSWORD = "correct horse battery staple"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_delivery(
    event: AlertEvent = AlertEvent.DOWN,
    *,
    name: str | None = "Example",
    target: str = RECIPIENT,
    message_id: str = "msg_abc123",
) -> Delivery:
    down = event is AlertEvent.DOWN
    alert = Alert(
        event_id="e1-1714566615123",
        website_id=uuid.UUID("6f1c1f3e-5a4b-4c2d-9e8f-0a1b2c3d4e5f"),
        region_id=1,
        prev_status=Status.UP if down else Status.DOWN,
        current_status=Status.DOWN if down else Status.UP,
        occurred_at=datetime(2024, 5, 1, 12, 30, 15, tzinfo=UTC),
        incident_id=uuid.UUID("11111111-2222-4333-8444-555555555555"),
        event=event,
    )
    website = WebsiteRef(id=alert.website_id, url="https://example.com/", name=name)
    return Delivery(message_id, alert, website, target, None)


def smtp_settings(port: int, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": port,
        "SMTP_FROM": SENDER,
        "SMTP_STARTTLS": False,
        "SMTP_USERNAME": None,
        "SMTP_PASSWORD": None,
        **overrides,
    }
    return Settings(**values)


@dataclass
class Seen:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    over_tls: bool
    authenticated: bool


class Recorder:
    """aiosmtpd handler: refuses UNKNOWN_USER (550) and BUSY_USER (450), records the rest."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if address == UNKNOWN_USER:
            return "550 no such user"
        if address == BUSY_USER:
            return "450 mailbox busy, try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        mail_from = envelope.mail_from or ""
        tls, authenticated = session.ssl is not None, bool(session.authenticated)
        self.seen.append(Seen(mail_from, list(envelope.rcpt_tos), parsed, tls, authenticated))
        return "250 OK"


def check_password(
    server: Any, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data == (
        SMTP_USER.encode(),
        SMTP_PASSWORD.encode(),
    )
    # handled=False: on failure the server answers 535 itself.
    return AuthResult(success=ok, handled=False)


@dataclass
class SmtpServer:
    port: int
    recorder: Recorder


@pytest.fixture
def smtp_server() -> Iterator[Callable[..., SmtpServer]]:
    """Starts an aiosmtpd server on 127.0.0.1 with the given SMTP options; stops it after."""
    controllers: list[Controller] = []

    def start(**smtp_options: Any) -> SmtpServer:
        recorder = Recorder()
        port = free_port()
        controller = Controller(recorder, hostname="127.0.0.1", port=port, **smtp_options)
        controller.start()
        controllers.append(controller)
        return SmtpServer(port, recorder)

    yield start
    for controller in controllers:
        controller.stop()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def failure(channel: EmailChannel, delivery: Delivery) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        await channel.deliver(delivery)
    return caught.value


async def test_a_down_alert_is_mailed_with_text_and_html_parts(
    smtp_server: Callable[..., SmtpServer],
) -> None:
    server = smtp_server()
    await EmailChannel(smtp_settings(server.port)).deliver(make_delivery())

    [seen] = server.recorder.seen
    assert seen.mail_from == SENDER
    assert seen.rcpt_tos == [RECIPIENT]
    message = seen.message
    assert message["Subject"] == "[runstate] DOWN: Example (https://example.com/)"
    assert message["From"] == SENDER
    assert message["To"] == RECIPIENT
    assert message["Date"] is not None
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None
    assert html is not None
    assert "Example is DOWN" in text.get_content()
    assert "https://example.com/" in text.get_content()
    assert "Example is DOWN" in html.get_content()


async def test_a_recovery_says_recovered_and_names_a_nameless_monitor_by_its_url(
    smtp_server: Callable[..., SmtpServer],
) -> None:
    server = smtp_server()
    channel = EmailChannel(smtp_settings(server.port))
    await channel.deliver(make_delivery(AlertEvent.RECOVERY, name=None))

    [seen] = server.recorder.seen
    assert seen.message["Subject"] == "[runstate] RECOVERED: https://example.com/"
    assert "DOWN:" not in seen.message["Subject"]


async def test_user_content_is_escaped_in_the_html_part_and_kept_on_one_subject_line(
    smtp_server: Callable[..., SmtpServer],
) -> None:
    server = smtp_server()
    name = 'Shop <script>alert("x")</script>\r\nBcc: victim@example.com'
    await EmailChannel(smtp_settings(server.port)).deliver(make_delivery(name=name))

    [seen] = server.recorder.seen
    html = seen.message.get_body(("html",))
    assert html is not None
    assert "<script>" not in html.get_content()
    assert "&lt;script&gt;" in html.get_content()
    assert seen.message["Bcc"] is None
    assert seen.rcpt_tos == [RECIPIENT]
    assert "Shop <script>" in seen.message["Subject"]


async def test_every_attempt_of_one_delivery_has_the_same_message_id(
    smtp_server: Callable[..., SmtpServer],
) -> None:
    server = smtp_server()
    channel = EmailChannel(smtp_settings(server.port))
    await channel.deliver(make_delivery(message_id="msg_same"))
    await channel.deliver(make_delivery(message_id="msg_same"))
    await channel.deliver(make_delivery(message_id="msg_other"))

    ids = [seen.message["Message-ID"] for seen in server.recorder.seen]
    assert ids[0] == ids[1] == "<msg_same@runstate>"
    assert ids[2] != ids[0]


# aiosmtpd warns that AUTH without TLS is unsafe; loopback in a test is the exception.
AUTH_WITHOUT_TLS = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


@AUTH_WITHOUT_TLS
async def test_the_right_password_logs_in_and_delivers(
    smtp_server: Callable[..., SmtpServer],
) -> None:
    server = smtp_server(authenticator=check_password, auth_require_tls=False, auth_required=True)
    settings = smtp_settings(server.port, SMTP_USERNAME=SMTP_USER, SMTP_PASSWORD=SMTP_PASSWORD)
    await EmailChannel(settings).deliver(make_delivery())
    [seen] = server.recorder.seen
    assert seen.authenticated


@AUTH_WITHOUT_TLS
async def test_a_wrong_password_is_permanent_and_names_smtp_username(
    smtp_server: Callable[..., SmtpServer],
) -> None:
    server = smtp_server(authenticator=check_password, auth_require_tls=False, auth_required=True)
    settings = smtp_settings(server.port, SMTP_USERNAME=SMTP_USER, SMTP_PASSWORD="wrong")
    error = await failure(EmailChannel(settings), make_delivery())
    assert error.permanent
    assert "SMTP_USERNAME" in str(error)
    assert "wrong" not in str(error)
    assert server.recorder.seen == []


async def test_starttls_upgrades_the_session_before_sending(
    smtp_server: Callable[..., SmtpServer], ca: trustme.CA
) -> None:
    server = smtp_server(tls_context=server_tls(ca), require_starttls=True)
    settings = smtp_settings(server.port, SMTP_STARTTLS=True)
    await EmailChannel(settings, tls_context=client_tls(ca)).deliver(make_delivery())

    [seen] = server.recorder.seen
    assert seen.over_tls


async def test_starttls_with_an_untrusted_certificate_is_permanent(
    smtp_server: Callable[..., SmtpServer], ca: trustme.CA
) -> None:
    server = smtp_server(tls_context=server_tls(ca), require_starttls=True)
    settings = smtp_settings(server.port, SMTP_STARTTLS=True)
    error = await failure(EmailChannel(settings), make_delivery())  # system CAs only
    assert error.permanent
    assert server.recorder.seen == []


async def test_starttls_required_but_not_offered_is_permanent_and_sends_nothing(
    smtp_server: Callable[..., SmtpServer],
) -> None:
    server = smtp_server()
    error = await failure(
        EmailChannel(smtp_settings(server.port, SMTP_STARTTLS=True)), make_delivery()
    )
    assert error.permanent
    assert "SMTP_STARTTLS" in str(error)
    assert server.recorder.seen == []


async def test_a_refused_recipient_is_permanent(smtp_server: Callable[..., SmtpServer]) -> None:
    server = smtp_server()
    error = await failure(
        EmailChannel(smtp_settings(server.port)), make_delivery(target=UNKNOWN_USER)
    )
    assert error.permanent
    assert "550" in str(error)


async def test_a_temporarily_refused_recipient_is_retried(
    smtp_server: Callable[..., SmtpServer],
) -> None:
    server = smtp_server()
    error = await failure(EmailChannel(smtp_settings(server.port)), make_delivery(target=BUSY_USER))
    assert not error.permanent


async def test_an_unreachable_smtp_server_is_retried() -> None:
    error = await failure(EmailChannel(smtp_settings(free_port())), make_delivery())
    assert not error.permanent


async def test_without_smtp_host_delivery_fails_permanently_naming_it() -> None:
    error = await failure(EmailChannel(smtp_settings(25, SMTP_HOST=None)), make_delivery())
    assert error.permanent
    assert "SMTP_HOST" in str(error)


async def test_without_smtp_from_delivery_fails_permanently_naming_it(
    smtp_server: Callable[..., SmtpServer],
) -> None:
    server = smtp_server()
    error = await failure(EmailChannel(smtp_settings(server.port, SMTP_FROM=None)), make_delivery())
    assert error.permanent
    assert "SMTP_FROM" in str(error)
    assert server.recorder.seen == []
