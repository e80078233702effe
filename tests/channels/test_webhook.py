"""The webhook channel against a real receiver on loopback that verifies every request with the
Standard Webhooks reference library (contract §5)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import socket
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import trustme
from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from runstate.channels import CHANNELS, Delivery, DeliveryError, WebsiteRef, load_channel_class
from runstate.channels.webhook import WebhookChannel
from runstate.domain.events import Alert, AlertEvent
from runstate.domain.status import Status
from runstate.settings import Settings
from tests.dns_server import LocalDnsServer

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
# A Slack-style webhook URL: its path and query are the credential.
PATH_SECRETS = ("T0PATHSECRET", "B1PATHSECRET", "xoxbPATHTOKEN")
QUERY_SECRET = "QUERYSECRET"
LOCATION_SECRET = "LOCATIONSECRET"
SECRET_PATH = "/services/" + "/".join(PATH_SECRETS) + f"?token={QUERY_SECRET}"
WEBSITE_ID = uuid.UUID("6f1c1f3e-5a4b-4c2d-9e8f-0a1b2c3d4e5f")
INCIDENT_ID = uuid.UUID("11111111-2222-4333-8444-555555555555")


def make_delivery(target: str, *, message_id: str = "msg_abc123", secret: str = SECRET) -> Delivery:
    alert = Alert(
        event_id="6f1c1f3e5a4b4c2d9e8f0a1b2c3d4e5f-1714566615123",
        website_id=WEBSITE_ID,
        region_id=1,
        prev_status=Status.UP,
        current_status=Status.DOWN,
        occurred_at=datetime(2024, 5, 1, 12, 30, 15, 123_000, tzinfo=UTC),
        incident_id=INCIDENT_ID,
        event=AlertEvent.DOWN,
    )
    website = WebsiteRef(id=WEBSITE_ID, url="https://example.com/shop?a=1", name="Café ☕")
    return Delivery(message_id, alert, website, target, secret)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool


@dataclass
class Receiver:
    base: str
    requests: list[Received] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """Answers /ok with 200, /status/<code> with that code, /slow after a long wait,
    /redirect with a 302 to /moved; records every request and whether its signature held."""
    state = Receiver(base="")

    async def record(request: web.Request) -> None:
        body = await request.read()
        headers = {key.lower(): value for key, value in request.headers.items()}
        try:
            Webhook(SECRET).verify(body, headers)
            verified = True
        except WebhookVerificationError:
            verified = False
        state.requests.append(Received(request.path, headers, body, verified))

    async def ok(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(status=200, text="thanks")

    async def status(request: web.Request) -> web.Response:
        await record(request)
        code = int(request.match_info["code"])
        headers = {}
        if "retry_after" in request.query:
            headers["Retry-After"] = request.query["retry_after"]
        return web.Response(status=code, headers=headers)

    async def slow(request: web.Request) -> web.Response:
        await record(request)
        with contextlib.suppress(TimeoutError):  # released at teardown, or gives up
            await asyncio.wait_for(state.release.wait(), 5)
        return web.Response(status=200)

    async def redirect(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(status=302, headers={"Location": "/moved"})

    async def by_query(request: web.Request) -> web.Response:
        # /services/<secret path>?token=<secret>&code=<status or "slow">
        await record(request)
        code = request.query.get("code", "200")
        if code == "slow":
            return await slow(request)
        location = {"Location": f"https://elsewhere.example/{LOCATION_SECRET}?k=v"}
        return web.Response(status=int(code), headers=location if code == "302" else {})

    app = web.Application()
    app.router.add_post("/services/{tail:.*}", by_query)
    app.router.add_post("/ok", ok)
    app.router.add_post("/status/{code}", status)
    app.router.add_post("/slow", slow)
    app.router.add_post("/redirect", redirect)
    app.router.add_route("*", "/moved", ok)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    state.base = f"http://127.0.0.1:{server.port}"
    try:
        yield state
    finally:
        state.release.set()
        await server.close()


@pytest.fixture
async def channel() -> AsyncIterator[WebhookChannel]:
    webhook = WebhookChannel(allow_private=True, timeout_seconds=2.0)
    yield webhook
    await webhook.aclose()


async def failure(channel: WebhookChannel, delivery: Delivery) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        await channel.deliver(delivery)
    error = caught.value
    assert SECRET not in str(error)
    assert SECRET.removeprefix("whsec_") not in repr(error)
    return error


async def test_a_delivered_alert_is_signed_and_carries_the_contract_payload(
    receiver: Receiver, channel: WebhookChannel
) -> None:
    await channel.deliver(make_delivery(receiver.url("/ok")))

    [request] = receiver.requests
    assert request.verified
    assert request.headers["webhook-id"] == "msg_abc123"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("runstate")
    assert json.loads(request.body) == {
        "event_id": "6f1c1f3e5a4b4c2d9e8f0a1b2c3d4e5f-1714566615123",
        "event": "DOWN",
        "website": {
            "id": "6f1c1f3e-5a4b-4c2d-9e8f-0a1b2c3d4e5f",
            "url": "https://example.com/shop?a=1",
            "name": "Café ☕",
        },
        "incident_id": "11111111-2222-4333-8444-555555555555",
        "prev_status": "up",
        "current_status": "down",
        "occurred_at": "2024-05-01T12:30:15.123Z",
        "late": False,
    }


async def test_every_attempt_of_one_delivery_carries_the_same_webhook_id(
    receiver: Receiver, channel: WebhookChannel
) -> None:
    await channel.deliver(make_delivery(receiver.url("/ok"), message_id="msg_same"))
    await channel.deliver(make_delivery(receiver.url("/ok"), message_id="msg_same"))
    await channel.deliver(make_delivery(receiver.url("/ok"), message_id="msg_other"))

    ids = [request.headers["webhook-id"] for request in receiver.requests]
    assert ids == ["msg_same", "msg_same", "msg_other"]
    assert all(request.verified for request in receiver.requests)


@pytest.mark.parametrize("code", [201, 202, 204])
async def test_any_2xx_is_success(receiver: Receiver, channel: WebhookChannel, code: int) -> None:
    await channel.deliver(make_delivery(receiver.url(f"/status/{code}")))
    assert len(receiver.requests) == 1


@pytest.mark.parametrize("code", [500, 502, 504, 408])
async def test_a_server_error_or_request_timeout_is_retried(
    receiver: Receiver, channel: WebhookChannel, code: int
) -> None:
    error = await failure(channel, make_delivery(receiver.url(f"/status/{code}")))
    assert not error.permanent
    assert not error.disable_channel
    assert str(code) in str(error)


async def test_429_is_retried_after_the_seconds_the_receiver_asked_for(
    receiver: Receiver, channel: WebhookChannel
) -> None:
    error = await failure(channel, make_delivery(receiver.url("/status/429?retry_after=7")))
    assert not error.permanent
    assert error.retry_after == 7


async def test_503_with_an_http_date_retry_after_is_retried_after_that_date(
    receiver: Receiver, channel: WebhookChannel
) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    error = await failure(channel, make_delivery(receiver.url(f"/status/503?retry_after={when}")))
    assert not error.permanent
    assert error.retry_after is not None
    assert 110 <= error.retry_after <= 121


async def test_410_is_permanent_and_disables_the_channel(
    receiver: Receiver, channel: WebhookChannel
) -> None:
    error = await failure(channel, make_delivery(receiver.url("/status/410")))
    assert error.permanent
    assert error.disable_channel


@pytest.mark.parametrize("code", [400, 401, 403, 404, 422])
async def test_other_client_errors_are_permanent(
    receiver: Receiver, channel: WebhookChannel, code: int
) -> None:
    error = await failure(channel, make_delivery(receiver.url(f"/status/{code}")))
    assert error.permanent
    assert not error.disable_channel


async def test_a_redirect_is_a_permanent_failure_and_is_not_followed(
    receiver: Receiver, channel: WebhookChannel
) -> None:
    error = await failure(channel, make_delivery(receiver.url("/redirect")))
    assert error.permanent
    assert [request.path for request in receiver.requests] == ["/redirect"]


async def test_a_receiver_slower_than_the_timeout_is_retried(receiver: Receiver) -> None:
    impatient = WebhookChannel(allow_private=True, timeout_seconds=0.3)
    try:
        error = await failure(impatient, make_delivery(receiver.url("/slow")))
    finally:
        await impatient.aclose()
    assert not error.permanent
    assert len(receiver.requests) == 1


async def test_a_target_with_nothing_listening_is_retried(channel: WebhookChannel) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    error = await failure(channel, make_delivery(f"http://127.0.0.1:{port}/hook"))
    assert not error.permanent


async def test_a_private_target_is_refused_permanently_unless_allowed(
    receiver: Receiver,
) -> None:
    guarded = WebhookChannel(allow_private=False)
    try:
        error = await failure(guarded, make_delivery(receiver.url("/ok")))
    finally:
        await guarded.aclose()
    assert error.permanent
    assert "ALLOW_PRIVATE_TARGETS" in str(error)
    assert receiver.requests == []


async def test_a_malformed_secret_is_permanent_and_not_repeated_in_the_error(
    receiver: Receiver, channel: WebhookChannel
) -> None:
    bad_secret = "whsec_this-is-not*base64!"
    with pytest.raises(DeliveryError) as caught:
        await channel.deliver(make_delivery(receiver.url("/ok"), secret=bad_secret))
    assert caught.value.permanent
    assert "this-is-not" not in str(caught.value)
    assert receiver.requests == []


async def test_every_registered_channel_loads_as_its_kind() -> None:
    settings = Settings(SMTP_HOST="127.0.0.1", SMTP_FROM="runstate@example.com")
    assert set(CHANNELS) == {"webhook", "email"}
    for kind in CHANNELS:
        cls = load_channel_class(kind)
        assert cls.kind == kind
        instance = cls.from_settings(settings)
        assert instance.kind == kind
        await instance.aclose()


async def test_a_target_name_is_resolved_through_dns_servers(
    receiver: Receiver, dns_server: LocalDnsServer
) -> None:
    dns_server.set_records("hooks.test", ["127.0.0.1"])
    port = receiver.base.rsplit(":", 1)[1]
    settings = Settings(ALLOW_PRIVATE_TARGETS=True, DNS_SERVERS=dns_server.address)
    webhook = WebhookChannel.from_settings(settings)
    try:
        await webhook.deliver(make_delivery(f"http://hooks.test:{port}/ok"))
        error = await failure(webhook, make_delivery(f"http://gone.test:{port}/ok"))
    finally:
        await webhook.aclose()
    assert [request.path for request in receiver.requests] == ["/ok"]
    assert dns_server.queries["hooks.test"] >= 1
    assert "NXDOMAIN" in str(error)
    assert not error.permanent  # DNS may be fixed by the next attempt


# --- no secret in any error ----------------------------------------------------------------


def assert_names_only_the_host(error: DeliveryError, host: str) -> None:
    """The error says which host failed, and nothing of the URL's path or query."""
    for text in (str(error), error.message, repr(error)):
        for secret in (*PATH_SECRETS, QUERY_SECRET, LOCATION_SECRET, "/services/"):
            assert secret not in text, text
    assert host in str(error), str(error)


def closed_port() -> int:
    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize(
    ("code", "permanent"),
    [("500", False), ("503", False), ("429", False), ("410", True), ("400", True),
     ("302", True)],
)  # fmt: skip
async def test_an_http_error_names_the_host_and_never_the_secret_url(
    receiver: Receiver, channel: WebhookChannel, code: str, permanent: bool
) -> None:
    url = receiver.url(f"{SECRET_PATH}&code={code}")
    error = await failure(channel, make_delivery(url))
    assert_names_only_the_host(error, "127.0.0.1")
    assert code in str(error)
    assert error.permanent is permanent
    [request] = receiver.requests
    assert request.path.startswith("/services/T0PATHSECRET")  # the secret URL was used


async def test_a_refused_connection_names_the_host_and_never_the_secret_url(
    channel: WebhookChannel,
) -> None:
    error = await failure(channel, make_delivery(f"http://127.0.0.1:{closed_port()}{SECRET_PATH}"))
    assert_names_only_the_host(error, "127.0.0.1")
    assert "refused" in str(error).lower()
    assert not error.permanent


async def test_a_timeout_names_the_host_and_never_the_secret_url(receiver: Receiver) -> None:
    impatient = WebhookChannel(allow_private=True, timeout_seconds=0.3)
    try:
        error = await failure(impatient, make_delivery(receiver.url(f"{SECRET_PATH}&code=slow")))
    finally:
        await impatient.aclose()
    assert_names_only_the_host(error, "127.0.0.1")
    assert "within 0.3 seconds" in str(error)
    assert not error.permanent


async def test_a_dns_failure_names_the_host_and_never_the_secret_url(
    receiver: Receiver, dns_server: LocalDnsServer
) -> None:
    port = receiver.base.rsplit(":", 1)[1]
    settings = Settings(ALLOW_PRIVATE_TARGETS=True, DNS_SERVERS=dns_server.address)
    webhook = WebhookChannel.from_settings(settings)
    try:
        error = await failure(webhook, make_delivery(f"http://hooks.gone.test:{port}{SECRET_PATH}"))
    finally:
        await webhook.aclose()
    assert_names_only_the_host(error, "hooks.gone.test")
    assert "NXDOMAIN" in str(error)
    assert not error.permanent


async def test_an_untrusted_certificate_names_the_host_and_never_the_secret_url(
    channel: WebhookChannel,
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("127.0.0.1").configure_cert(context)  # a CA nobody trusts

    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/{tail:.*}", answer)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(ssl=context)
    try:
        url = f"https://127.0.0.1:{server.port}{SECRET_PATH}"
        error = await failure(channel, make_delivery(url))
    finally:
        await server.close()
    assert_names_only_the_host(error, "127.0.0.1")
    assert "certificate" in str(error)
    assert not error.permanent  # the receiver may fix its certificate


async def test_a_failed_tls_handshake_names_the_host_and_never_the_secret_url(
    receiver: Receiver, channel: WebhookChannel
) -> None:
    # https:// to a server that speaks plain HTTP: the handshake fails.
    url = receiver.url(SECRET_PATH).replace("http://", "https://")
    error = await failure(channel, make_delivery(url))
    assert_names_only_the_host(error, "127.0.0.1")
    assert "TLS" in str(error)


async def test_a_receiver_closing_without_answering_names_the_host_and_never_the_secret_url(
    channel: WebhookChannel,
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        error = await failure(channel, make_delivery(f"http://127.0.0.1:{port}{SECRET_PATH}"))
    finally:
        server.close()
        await server.wait_closed()
    assert_names_only_the_host(error, "127.0.0.1")
    assert not error.permanent


async def test_an_invalid_url_is_permanent_and_never_repeated(channel: WebhookChannel) -> None:
    error = await failure(channel, make_delivery(f"http://127.0.0.1:99999{SECRET_PATH}"))
    assert error.permanent
    for secret in (*PATH_SECRETS, QUERY_SECRET):
        assert secret not in str(error)
