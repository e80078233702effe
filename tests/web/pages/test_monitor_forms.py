"""Adding, editing, pausing, resuming and deleting a monitor through the forms, on SQLite and
PostgreSQL: the API's validation messages next to the field, the input kept, nothing written
on refusal, post/redirect/get with a message, and no form accepted without its CSRF token."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from runstate.storage.tables import Website, WebsitePause
from tests.api import rows
from tests.api.server import ApiServer
from tests.web.pages.web import field_error, field_value, new_browser, random_host


def _monitors(api: ApiServer, token: str) -> list[dict[str, Any]]:
    with api.client(token) as client:
        answer = client.get("/websites")
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["data"]["websites"]
    return found


def _monitor(api: ApiServer, token: str, website_id: str) -> dict[str, Any]:
    with api.client(token) as client:
        answer = client.get(f"/websites/{website_id}")
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()["data"]
    return found


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"url": "ftp://files.example/"}, "url", "must be an http:// or https:// URL"),
        ({"url": "http://127.0.0.1:8080/"}, "url", "loopback"),
        ({"url": ""}, "url", "Field required"),
        (
            {"interval_seconds": "5"},
            "interval_seconds",
            "must be at least 30 (MIN_CHECK_INTERVAL_SECONDS)",
        ),
        ({"interval_seconds": "soon"}, "interval_seconds", "Input should be a valid integer"),
        ({"timeout_ms": "50"}, "timeout_ms", "greater than or equal to 100"),
        ({"expected_status": "400-200"}, "expected_status", "range 400-200 is reversed"),
    ],
)
def test_an_invalid_monitor_is_refused_next_to_its_field_and_nothing_is_created(
    api: ApiServer, fields: dict[str, str], field: str, message: str
) -> None:
    browser, _, token = new_browser(api)
    typed = {"url": random_host(), "name": "Kept as typed", **fields}

    answer = browser.post("/monitors/new", typed)

    assert answer.status_code == 422, answer.text
    shown = field_error(answer.text, field)
    assert shown is not None, f"no message next to {field}"
    assert message in shown
    assert field_value(answer.text, "name") == "Kept as typed"
    assert field_value(answer.text, field) == fields[field]
    assert _monitors(api, token) == []
    browser.close()


def test_a_monitor_is_added_and_edited_through_the_forms(api: ApiServer) -> None:
    browser, _, token = new_browser(api)
    url = random_host()

    added = browser.post("/monitors/new", {"url": url, "name": "Blog", "interval_seconds": "120"})

    assert added.status_code == 303, added.text
    website_id = added.headers["location"].rsplit("/", 1)[1]
    assert "Monitor added." in browser.get(added.headers["location"]).text
    stored = _monitor(api, token, website_id)
    assert (stored["url"], stored["name"], stored["interval_seconds"]) == (url, "Blog", 120)
    assert stored["timeout_ms"] == 10_000  # the API's default for a field left out

    form = browser.get(f"/monitors/{website_id}/edit").text
    assert field_value(form, "interval_seconds") == "120"
    values = {
        "url": url,
        "name": "",
        "interval_seconds": "10",
        "timeout_ms": "10000",
        "method": "GET",
        "expected_status": "200-399",
        "keyword": "",
        "confirmations": "1",
        "recovery_confirmations": "1",
    }
    refused = browser.post(f"/monitors/{website_id}/edit", values)
    assert refused.status_code == 422
    assert "MIN_CHECK_INTERVAL_SECONDS" in (field_error(refused.text, "interval_seconds") or "")
    assert field_value(refused.text, "interval_seconds") == "10"
    assert _monitor(api, token, website_id)["interval_seconds"] == 120

    saved = browser.post(
        f"/monitors/{website_id}/edit", {**values, "interval_seconds": "300", "keyword": "Welcome"}
    )
    assert saved.status_code == 303, saved.text
    assert "Monitor saved." in browser.get(saved.headers["location"]).text
    stored = _monitor(api, token, website_id)
    assert (stored["name"], stored["interval_seconds"], stored["keyword"]) == (None, 300, "Welcome")
    browser.close()


def test_a_url_already_monitored_is_refused_next_to_the_url(api: ApiServer) -> None:
    browser, _, token = new_browser(api)
    url = random_host()
    assert browser.post("/monitors/new", {"url": url}).status_code == 303

    again = browser.post("/monitors/new", {"url": url})

    assert again.status_code == 422
    assert field_error(again.text, "url") == "you already monitor this URL"
    assert len(_monitors(api, token)) == 1
    browser.close()


def test_the_monitor_quota_is_shown_above_the_form(api: ApiServer) -> None:
    browser, user, token = new_browser(api)
    now = datetime.now(UTC)
    rows.insert(
        api,
        *(
            Website(
                user_id=uuid.UUID(user["id"]), url=random_host(), time_added=now, updated_at=now
            )
            for _ in range(api.settings.MAX_MONITORS_PER_USER)
        ),
    )

    refused = browser.post("/monitors/new", {"url": random_host()})

    assert refused.status_code == 422
    assert "MAX_MONITORS_PER_USER" in refused.text
    assert len(_monitors(api, token)) == api.settings.MAX_MONITORS_PER_USER
    browser.close()


def test_pause_resume_and_delete_work_from_the_detail_page(api: ApiServer) -> None:
    browser, _, token = new_browser(api)
    added = browser.post("/monitors/new", {"url": random_host()})
    website_id = added.headers["location"].rsplit("/", 1)[1]

    paused = browser.post(f"/monitors/{website_id}/pause")
    assert paused.status_code == 303
    assert _monitor(api, token, website_id)["paused"] is True
    assert rows.count(api, WebsitePause, website_id) == 1  # as PATCH records a pause
    assert "Resume" in browser.get(f"/monitors/{website_id}").text

    assert browser.post(f"/monitors/{website_id}/resume").status_code == 303
    assert _monitor(api, token, website_id)["paused"] is False
    assert rows.count_where(api, WebsitePause, resumed_at=None) == 0

    deleted = browser.post(f"/monitors/{website_id}/delete")
    assert deleted.status_code == 303
    assert deleted.headers["location"] == "/"
    with api.client(token) as client:
        assert client.get(f"/websites/{website_id}").status_code == 404
    assert browser.get(f"/monitors/{website_id}").status_code == 404
    browser.close()


def test_forms_without_a_valid_csrf_token_are_refused(api: ApiServer) -> None:
    browser, _, token = new_browser(api)
    added = browser.post("/monitors/new", {"url": random_host()})
    website_id = added.headers["location"].rsplit("/", 1)[1]

    no_token = browser.post("/monitors/new", {"url": random_host()}, csrf=False)
    wrong = browser.post("/monitors/new", {"url": random_host(), "csrf_token": "0" * 64})
    delete = browser.post(f"/monitors/{website_id}/delete", csrf=False)
    pause = browser.post(f"/monitors/{website_id}/pause", {"csrf_token": "forged"})

    assert [a.status_code for a in (no_token, wrong, delete, pause)] == [403] * 4
    assert [m["id"] for m in _monitors(api, token)] == [website_id]
    assert _monitor(api, token, website_id)["paused"] is False
    browser.close()
