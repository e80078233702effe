"""Alert channels (contract §3, §5): creation, the one-time webhook secret, validation,
ownership. Runs against the API on SQLite and on PostgreSQL (the `api` fixture)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.api.server import ApiServer

# A public IP literal: the SSRF guard accepts it without DNS, which the tests must not need.
PUBLIC_HOST = "93.184.215.14"


def _hook_url() -> str:
    return f"https://{PUBLIC_HOST}/hooks/{uuid.uuid4().hex}"


def _address() -> str:
    return f"alerts-{uuid.uuid4().hex[:12]}@example.com"


def _create(api: ApiServer, token: str, **body: Any) -> Any:
    with api.client(token) as client:
        return client.post("/channels", json=body)


def _channels(api: ApiServer, token: str) -> list[dict[str, Any]]:
    with api.client(token) as client:
        answer = client.get("/channels")
    assert answer.status_code == 200, answer.text
    channels: list[dict[str, Any]] = answer.json()["data"]["channels"]
    return channels


@pytest.fixture(scope="module")
def rejected_token(api: ApiServer) -> str:
    """One account for the tests that only send invalid channels: it must stay without any."""
    return api.new_user()[1]


def test_a_webhook_channel_shows_its_standard_webhooks_secret_at_creation(api: ApiServer) -> None:
    _, token, _ = api.new_user()
    target = _hook_url()
    answer = _create(api, token, type="webhook", target=target, notify_on="DOWN")
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["success"] is True
    data = body["data"]
    assert data["type"] == "webhook"
    assert data["target"] == target
    assert data["notify_on"] == "DOWN"
    secret = data["secret"]
    assert isinstance(secret, str)
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    assert len(key) == 32


def test_the_webhook_secret_signs_and_verifies_with_the_standard_webhooks_library(
    api: ApiServer,
) -> None:
    _, token, _ = api.new_user()
    first = _create(api, token, type="webhook", target=_hook_url()).json()["data"]["secret"]
    second = _create(api, token, type="webhook", target=_hook_url()).json()["data"]["secret"]
    assert first != second  # every channel has its own key

    payload = json.dumps({"event_id": str(uuid.uuid4()), "event": "DOWN"})
    msg_id = f"msg_{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    signature = Webhook(first).sign(msg_id, now, payload)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    assert Webhook(first).verify(payload, headers) == json.loads(payload)

    # The library read the key as the spec says: base64 after the prefix, HMAC-SHA256 over
    # "<id>.<timestamp>.<body>".
    key = base64.b64decode(first.removeprefix("whsec_"))
    expected = hmac.new(
        key, f"{msg_id}.{int(now.timestamp())}.{payload}".encode(), hashlib.sha256
    ).digest()
    assert signature == "v1," + base64.b64encode(expected).decode()

    with pytest.raises(WebhookVerificationError):
        Webhook(second).verify(payload, headers)


def test_the_channel_list_never_shows_the_secret_again(api: ApiServer) -> None:
    _, token, _ = api.new_user()
    created = _create(api, token, type="webhook", target=_hook_url())
    assert created.status_code == 201, created.text
    secret = created.json()["data"]["secret"]
    with api.client(token) as client:
        listing = client.get("/channels")
    assert listing.status_code == 200
    channels = listing.json()["data"]["channels"]
    assert [c["id"] for c in channels] == [created.json()["data"]["id"]]
    assert all("secret" not in channel for channel in channels)
    assert secret not in listing.text
    assert secret.removeprefix("whsec_") not in listing.text


def test_an_email_channel_with_a_valid_address_has_no_secret(api: ApiServer) -> None:
    _, token, _ = api.new_user()
    address = _address()
    answer = _create(api, token, type="email", target=address, notify_on="RECOVERY")
    assert answer.status_code == 201, answer.text
    data = answer.json()["data"]
    assert data["type"] == "email"
    assert data["target"] == address
    assert data["notify_on"] == "RECOVERY"
    assert data.get("secret") is None
    assert "whsec_" not in answer.text


@pytest.mark.parametrize("target", ["not-an-address", "two@@example.com", "user@", "@example.com"])
def test_an_invalid_email_address_is_422_naming_target(
    api: ApiServer, rejected_token: str, target: str
) -> None:
    answer = _create(api, rejected_token, type="email", target=target)
    assert answer.status_code == 422
    assert answer.json()["success"] is False
    assert answer.json()["error"].startswith("target:")
    assert _channels(api, rejected_token) == []


@pytest.mark.parametrize(
    "target",
    [
        f"ftp://{PUBLIC_HOST}/hook",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "not a url",
        "https://",
        f"{PUBLIC_HOST}/hook",
    ],
)
def test_a_webhook_target_that_is_not_an_http_url_is_422_naming_target(
    api: ApiServer, rejected_token: str, target: str
) -> None:
    answer = _create(api, rejected_token, type="webhook", target=target)
    assert answer.status_code == 422, answer.text
    assert answer.json()["success"] is False
    assert answer.json()["error"].startswith("target:")
    assert _channels(api, rejected_token) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "sms", "target": "+15550100"}, "type"),
        ({"type": "WEBHOOK", "target": f"https://{PUBLIC_HOST}/x"}, "type"),
        ({"type": "webhook", "target": f"https://{PUBLIC_HOST}/x", "notify_on": "UP"}, "notify_on"),
        ({"type": "email", "target": "a@example.com", "notify_on": "both"}, "notify_on"),
        ({"type": "email", "target": "a@example.com", "notify_on": 1}, "notify_on"),
        ({"type": "email", "target": "a@example.com", "enabled": "yes"}, "enabled"),
        ({"target": "a@example.com"}, "type"),
        ({"type": "email"}, "target"),
    ],
)
def test_a_bad_type_or_notify_on_is_422_naming_the_field(
    api: ApiServer, rejected_token: str, body: dict[str, Any], field: str
) -> None:
    answer = _create(api, rejected_token, **body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["success"] is False
    assert answer.json()["error"].startswith(f"{field}:")
    assert _channels(api, rejected_token) == []


@pytest.mark.parametrize("kind", ["webhook", "email"])
def test_the_same_channel_twice_for_one_user_is_409(api: ApiServer, kind: str) -> None:
    _, token, _ = api.new_user()
    target = _hook_url() if kind == "webhook" else _address()
    assert _create(api, token, type=kind, target=target).status_code == 201
    again = _create(api, token, type=kind, target=target, notify_on="DOWN")
    assert again.status_code == 409
    assert again.json()["success"] is False
    assert len(_channels(api, token)) == 1


def test_another_user_may_add_the_same_target(api: ApiServer) -> None:
    _, first, _ = api.new_user()
    _, second, _ = api.new_user()
    target = _hook_url()
    assert _create(api, first, type="webhook", target=target).status_code == 201
    assert _create(api, second, type="webhook", target=target).status_code == 201


def test_the_channel_list_shows_only_the_callers_channels(api: ApiServer) -> None:
    _, mine, _ = api.new_user()
    _, theirs, _ = api.new_user()
    my_hook = _create(api, mine, type="webhook", target=_hook_url()).json()["data"]
    my_mail = _create(api, mine, type="email", target=_address()).json()["data"]
    their_hook = _create(api, theirs, type="webhook", target=_hook_url()).json()["data"]
    listed = _channels(api, mine)
    assert [c["id"] for c in listed] == [my_hook["id"], my_mail["id"]]
    assert their_hook["target"] not in json.dumps(listed)
    assert [c["id"] for c in _channels(api, theirs)] == [their_hook["id"]]


def test_another_user_cannot_delete_a_channel(api: ApiServer) -> None:
    _, owner, _ = api.new_user()
    _, intruder, _ = api.new_user()
    channel = _create(api, owner, type="webhook", target=_hook_url()).json()["data"]
    with api.client(intruder) as client:
        answer = client.delete(f"/channels/{channel['id']}")
    assert answer.status_code == 403
    assert answer.json()["success"] is False
    assert [c["id"] for c in _channels(api, owner)] == [channel["id"]]


def test_the_owner_may_delete_a_channel(api: ApiServer) -> None:
    _, owner, _ = api.new_user()
    channel = _create(api, owner, type="email", target=_address()).json()["data"]
    with api.client(owner) as client:
        answer = client.delete(f"/channels/{channel['id']}")
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["id"] == channel["id"]
    assert _channels(api, owner) == []


def test_an_admin_may_delete_another_users_channel(api: ApiServer) -> None:
    _, owner, _ = api.new_user()
    channel = _create(api, owner, type="webhook", target=_hook_url()).json()["data"]
    with api.client(api.admin_token()) as admin:
        answer = admin.delete(f"/channels/{channel['id']}")
    assert answer.status_code == 200, answer.text
    assert _channels(api, owner) == []


def test_deleting_an_unknown_channel_is_404(api: ApiServer) -> None:
    _, token, _ = api.new_user()
    with api.client(token) as client:
        answer = client.delete(f"/channels/{uuid.uuid4()}")
    assert answer.status_code == 404
    assert answer.json()["success"] is False


def test_channels_need_a_token(api: ApiServer) -> None:
    with api.client() as client:
        assert client.get("/channels").status_code == 401
        created = client.post("/channels", json={"type": "email", "target": _address()})
        assert created.status_code == 401


def test_a_channel_notifies_on_both_events_and_is_enabled_by_default(api: ApiServer) -> None:
    _, token, _ = api.new_user()
    answer = _create(api, token, type="webhook", target=_hook_url())
    assert answer.status_code == 201, answer.text
    assert answer.json()["data"]["notify_on"] == "BOTH"
    assert answer.json()["data"]["enabled"] is True
    (listed,) = _channels(api, token)
    assert listed["notify_on"] == "BOTH"
    assert listed["enabled"] is True
