"""Alert channels through the forms, on SQLite and PostgreSQL: the API's validation, a
webhook's secret shown once (right after it is added, never again), deletion, ownership."""

from __future__ import annotations

import re
from typing import Any

from tests.api.server import ApiServer
from tests.web.pages.web import field_error, new_browser

SECRET = re.compile(r"whsec_[A-Za-z0-9+/=]+")


def _channels(api: ApiServer, token: str) -> list[dict[str, Any]]:
    with api.client(token) as client:
        answer = client.get("/channels")
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["data"]["channels"]
    return found


def test_a_webhook_secret_is_shown_once_right_after_it_is_added(api: ApiServer) -> None:
    browser, _, token = new_browser(api)

    added = browser.post(
        "/channels",
        {"type": "webhook", "target": "https://hooks.example.com/runstate", "notify_on": "DOWN"},
    )

    assert added.status_code == 200, added.text
    assert "no-store" in added.headers["cache-control"]
    secrets = SECRET.findall(added.text)
    assert len(set(secrets)) == 1
    later = browser.get("/channels")
    assert later.status_code == 200
    assert "whsec_" not in later.text
    assert "https://hooks.example.com/runstate" in later.text
    assert "whsec_" not in "".join(later.headers.values())
    [channel] = _channels(api, token)
    assert (channel["type"], channel["notify_on"]) == ("webhook", "DOWN")
    assert "secret" not in channel
    browser.close()


def test_an_email_channel_is_added_without_a_secret(api: ApiServer) -> None:
    browser, _, token = new_browser(api)

    added = browser.post("/channels", {"type": "email", "target": "Oncall@Example.com"})

    assert added.status_code == 200
    assert "whsec_" not in added.text
    assert [c["target"] for c in _channels(api, token)] == ["Oncall@example.com"]
    browser.close()


def test_invalid_channels_are_refused_next_to_the_target(api: ApiServer) -> None:
    browser, _, token = new_browser(api)
    cases = [
        ({"type": "email", "target": "not an address"}, "target", "is not a valid e-mail address"),
        ({"type": "webhook", "target": "http://127.0.0.1/hook"}, "target", "loopback"),
        ({"type": "webhook", "target": "hooks.example.com"}, "target", "http:// or https://"),
        ({"type": "webhook", "target": ""}, "target", "Field required"),
        ({"type": "sms", "target": "+15550100"}, "type", "'webhook' or 'email'"),
    ]
    for fields, field, message in cases:
        answer = browser.post("/channels", fields)
        assert answer.status_code == 422, fields
        assert message in (field_error(answer.text, field) or ""), (fields, answer.text)
        assert "whsec_" not in answer.text
    assert _channels(api, token) == []

    browser.post("/channels", {"type": "email", "target": "ops@example.com"})
    duplicate = browser.post("/channels", {"type": "email", "target": "ops@example.com"})
    assert field_error(duplicate.text, "target") == "you already have this channel"
    assert len(_channels(api, token)) == 1
    browser.close()


def test_a_channel_is_deleted_by_its_owner_only(api: ApiServer) -> None:
    owner, _, token = new_browser(api)
    owner.post("/channels", {"type": "email", "target": "ops@example.com"})
    [channel] = _channels(api, token)
    stranger, _, _ = new_browser(api)

    assert stranger.post(f"/channels/{channel['id']}/delete").status_code == 404
    assert owner.post(f"/channels/{channel['id']}/delete", csrf=False).status_code == 403
    assert len(_channels(api, token)) == 1

    deleted = owner.post(f"/channels/{channel['id']}/delete")
    assert deleted.status_code == 303
    assert "Channel deleted." in owner.get("/channels").text
    assert _channels(api, token) == []
    owner.close()
    stranger.close()
