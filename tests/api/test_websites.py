"""Monitors ("websites") over real HTTP, on SQLite and PostgreSQL: contract §3.

History (checks, incidents, alert deliveries) is inserted straight into the database with
`tests.api.rows`, as the monitoring pipeline will write it.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from runstate.storage.tables import Incident, NotificationLog, WebsiteCheck
from tests.api import rows
from tests.api.server import ApiServer

DEFAULTS = {
    "name": None,
    "interval_seconds": 60,
    "timeout_ms": 10_000,
    "method": "GET",
    "expected_status": "200-399",
    "keyword": None,
    "confirmations": 1,
    "recovery_confirmations": 1,
    "paused": False,
    "current_status": None,
    "last_checked_at": None,
    "latest_response_time_ms": None,
}
LIST_FIELDS = {
    "id",
    "url",
    "name",
    "current_status",
    "last_checked_at",
    "latest_response_time_ms",
    "time_added",
}
PHASE_FIELDS = {"dns_ms", "connect_ms", "tls_ms", "ttfb_ms", "cert_expires_at"}
CHECK_FIELDS = {
    "id",
    "website_id",
    "region_id",
    "status",
    "response_time_ms",
    "status_code",
    "error",
    "created_at",
} | PHASE_FIELDS
POINT_FIELDS = {"timestamp", "response_time_ms", "status", "region_id"} | PHASE_FIELDS
CERT_EXPIRES_AT = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The phases of an https check that got a response; a refused one got no further than DNS.
ANSWERED = {"dns_ms": 3, "connect_ms": 11, "tls_ms": 25, "ttfb_ms": 40}
ANSWERED_CERT = {**ANSWERED, "cert_expires_at": CERT_EXPIRES_AT}
REFUSED = {"dns_ms": 3, "connect_ms": None, "tls_ms": None, "ttfb_ms": None}
INCIDENT_FIELDS = {"id", "website_id", "started_at", "resolved_at", "is_active", "cause"}
NOTIFICATION_FIELDS = {
    "id",
    "incident_id",
    "channel",
    "recipient",
    "event",
    "delivery_status",
    "attempts",
    "error",
    "sent_at",
}

# Every route under /websites/{id}: (method, suffix, JSON body).
MONITOR_ROUTES = [
    ("GET", "", None),
    ("PATCH", "", {"name": "renamed"}),
    ("DELETE", "", None),
    ("GET", "/checks", None),
    ("GET", "/response-times", None),
    ("GET", "/incidents", None),
    ("GET", "/notifications", None),
]
ROUTE_IDS = [f"{method} {suffix or '/'}" for method, suffix, _ in MONITOR_ROUTES]


_CLIENTS: dict[tuple[str, str | None], httpx.Client] = {}


@contextmanager
def _session(api: ApiServer, token: str | None = None) -> Iterator[httpx.Client]:
    """A client of ``api`` for ``token``, kept open for the module: building an httpx client
    costs ~45 ms (its TLS context), more than most requests here."""
    key = (api.base_url, token)
    if key not in _CLIENTS:
        _CLIENTS[key] = api.client(token)
    yield _CLIENTS[key]


@pytest.fixture(scope="module", autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    for client in _CLIENTS.values():
        client.close()
    _CLIENTS.clear()


@dataclass
class Account:
    id: str
    token: str


@pytest.fixture(scope="module")
def alice(api: ApiServer) -> Account:
    user, token, _ = api.new_user()
    return Account(user["id"], token)


@pytest.fixture(scope="module")
def bob(api: ApiServer) -> Account:
    user, token, _ = api.new_user()
    return Account(user["id"], token)


@pytest.fixture(scope="module")
def alices_monitor(api: ApiServer, alice: Account) -> dict[str, Any]:
    """One monitor of alice's with history on every route, for the tests that only read it
    or whose requests must be refused (they check it is unchanged)."""
    website = _create(api, alice.token, name="alice's shared monitor")
    opened = rows.incident(website["id"], rows.seconds_ago(600))
    rows.insert(
        api,
        rows.check(website["id"], rows.local_region_id(api), rows.seconds_ago(5)),
        opened,
    )
    rows.insert(api, rows.notification(website["id"], opened.id, rows.seconds_ago(590)))
    return website


def _monitor_for(
    api: ApiServer, alice: Account, alices_monitor: dict[str, Any], method: str
) -> dict[str, Any]:
    """The shared monitor for a read, a fresh one for a request that might change it."""
    return alices_monitor if method == "GET" else _create(api, alice.token)


def _url(path: str = "/health") -> str:
    return f"https://{uuid.uuid4().hex[:12]}.example.com{path}"


def _create(api: ApiServer, token: str, **fields: Any) -> dict[str, Any]:
    body = {"url": _url(), **fields}
    with _session(api, token) as client:
        answer = client.post("/websites", json=body)
    _expect(answer, 201)
    data: dict[str, Any] = answer.json()["data"]
    return data


def _get(api: ApiServer, token: str, path: str, **params: Any) -> httpx.Response:
    with _session(api, token) as client:
        return client.get(path, params=params)


def _no_server_error(answer: httpx.Response) -> None:
    """Fail plainly on a 5xx: never a 500, whatever the input.

    The failure is reported without a source traceback on purpose: uvicorn logs the server's
    traceback in its own thread just after answering, and on Python 3.11 two threads running
    ast.parse at once (pytest rendering the failure, the traceback module placing its carets)
    can raise "SystemError: AST constructor recursion depth mismatch" (CPython gh-106905),
    which aborts the whole pytest run with an INTERNALERROR.
    """
    if answer.status_code >= 500:
        time.sleep(0.3)  # let the server thread finish logging its traceback
        request = answer.request
        pytest.fail(
            f"{request.method} {request.url} answered {answer.status_code}: {answer.text}",
            pytrace=False,
        )


def _expect(answer: httpx.Response, status: int) -> None:
    _no_server_error(answer)
    assert answer.status_code == status, answer.text


def _data(answer: httpx.Response) -> Any:
    _expect(answer, 200)
    body = answer.json()
    assert body["success"] is True
    return body["data"]


def _assert_invalid(answer: httpx.Response, field: str) -> str:
    """A 422 in the envelope whose error names ``field``; returns the error."""
    _expect(answer, 422)
    body = answer.json()
    assert body["success"] is False
    error: str = body["error"]
    assert re.search(rf"(^|; ){re.escape(field)}:", error), error
    return error


def _at(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None, f"{text} has no time zone"
    return moment


def _request(
    client: httpx.Client, method: str, path: str, body: dict[str, Any] | None
) -> httpx.Response:
    if body is None:
        return client.request(method, path)
    return client.request(method, path, json=body)


# --- create, read, list ----------------------------------------------------------------


def test_a_monitor_created_with_only_a_url_gets_every_default(
    api: ApiServer, alice: Account
) -> None:
    url = _url()
    with _session(api, alice.token) as client:
        answer = client.post("/websites", json={"url": url})
    _expect(answer, 201)
    body = answer.json()
    assert body["success"] is True
    data = body["data"]
    assert data["url"] == url
    assert uuid.UUID(data["id"])
    assert {key: data[key] for key in DEFAULTS} == DEFAULTS
    assert _at(data["time_added"]) <= datetime.now(UTC) + timedelta(seconds=5)


def test_a_monitor_created_with_every_field_keeps_them_and_normalises_scheme_and_host(
    api: ApiServer, alice: Account
) -> None:
    host = uuid.uuid4().hex[:12]
    fields = {
        "name": "Status page",
        "interval_seconds": 300,
        "timeout_ms": 5_000,
        "method": "HEAD",
        "expected_status": "200-299,418",
        "keyword": "healthy",
        "confirmations": 3,
        "recovery_confirmations": 2,
        "paused": True,
    }
    created = _create(api, alice.token, url=f"HTTPS://{host}.Example.ORG/Status?x=1", **fields)
    assert created["url"] == f"https://{host}.example.org/Status?x=1"
    assert {key: created[key] for key in fields} == fields
    stored = _data(_get(api, alice.token, f"/websites/{created['id']}"))
    assert {key: stored[key] for key in fields} == fields
    assert stored["url"] == created["url"]


def test_the_list_holds_only_the_callers_monitors_with_the_contract_fields(
    api: ApiServer,
) -> None:
    _, carol, _ = api.new_user()
    _, dave, _ = api.new_user()
    mine = [_create(api, carol)["id"], _create(api, carol)["id"]]
    theirs = _create(api, dave)["id"]
    checked_at = rows.seconds_ago(30)
    rows.set_website_state(
        api, mine[0], current_status="down", last_checked_at=checked_at, latest_response_time_ms=321
    )

    websites = _data(_get(api, carol, "/websites"))["websites"]

    assert sorted(w["id"] for w in websites) == sorted(mine)
    assert theirs not in {w["id"] for w in websites}
    for website in websites:
        assert set(website) >= LIST_FIELDS, website
    first = next(w for w in websites if w["id"] == mine[0])
    assert first["current_status"] == "down"
    assert _at(first["last_checked_at"]) == checked_at
    assert first["latest_response_time_ms"] == 321
    second = next(w for w in websites if w["id"] == mine[1])
    assert second["current_status"] is None


def test_a_user_without_monitors_gets_an_empty_list(api: ApiServer) -> None:
    _, token, _ = api.new_user()
    assert _data(_get(api, token, "/websites")) == {"websites": [], "next_cursor": None}


def test_an_admin_lists_every_users_monitors(api: ApiServer, alice: Account, bob: Account) -> None:
    ids = {_create(api, alice.token)["id"], _create(api, bob.token)["id"]}
    websites = _data(_get(api, api.admin_token(), "/websites"))["websites"]
    assert ids <= {w["id"] for w in websites}


def test_one_monitor_shows_its_active_incident_and_only_an_active_one(
    api: ApiServer, alice: Account
) -> None:
    website = _create(api, alice.token)
    path = f"/websites/{website['id']}"
    detail = _data(_get(api, alice.token, path))
    assert detail["id"] == website["id"]
    assert "active_incident" in detail
    assert detail["active_incident"] is None

    resolved = rows.incident(
        website["id"],
        rows.seconds_ago(3600),
        is_active=False,
        resolved_at=rows.seconds_ago(3000),
    )
    rows.insert(api, resolved)
    assert _data(_get(api, alice.token, path))["active_incident"] is None

    started = rows.seconds_ago(120)
    active = rows.incident(website["id"], started, cause="HTTP 503")
    rows.insert(api, active)
    shown = _data(_get(api, alice.token, path))["active_incident"]
    assert shown is not None
    assert set(shown) >= INCIDENT_FIELDS
    assert shown["id"] == str(active.id)
    assert shown["website_id"] == website["id"]
    assert shown["is_active"] is True
    assert shown["resolved_at"] is None
    assert shown["cause"] == "HTTP 503"
    assert _at(shown["started_at"]) == started


# --- update and delete -----------------------------------------------------------------


def test_patch_changes_the_fields_given_and_nothing_else(api: ApiServer, alice: Account) -> None:
    website = _create(api, alice.token, name="before", keyword="ok")
    path = f"/websites/{website['id']}"
    with _session(api, alice.token) as client:
        answer = client.patch(path, json={"interval_seconds": 120, "method": "POST"})
    updated = _data(answer)
    assert updated["interval_seconds"] == 120
    assert updated["method"] == "POST"
    stored = _data(_get(api, alice.token, path))
    unchanged = {k: v for k, v in website.items() if k not in {"interval_seconds", "method"}}
    assert {k: stored[k] for k in unchanged} == unchanged
    assert stored["interval_seconds"] == 120
    assert stored["method"] == "POST"


def test_patch_pauses_and_resumes_a_monitor(api: ApiServer, alice: Account) -> None:
    website = _create(api, alice.token)
    path = f"/websites/{website['id']}"
    with _session(api, alice.token) as client:
        assert _data(client.patch(path, json={"paused": True}))["paused"] is True
        assert _data(client.get(path))["paused"] is True
        assert _data(client.patch(path, json={"paused": False}))["paused"] is False
        assert _data(client.get(path))["paused"] is False


def test_patch_sets_name_and_keyword_to_null(api: ApiServer, alice: Account) -> None:
    website = _create(api, alice.token, name="Shop", keyword="Add to cart")
    path = f"/websites/{website['id']}"
    with _session(api, alice.token) as client:
        updated = _data(client.patch(path, json={"name": None, "keyword": None}))
        stored = _data(client.get(path))
    assert (updated["name"], updated["keyword"]) == (None, None)
    assert (stored["name"], stored["keyword"]) == (None, None)


@pytest.mark.parametrize(
    "field",
    [
        "url",
        "interval_seconds",
        "timeout_ms",
        "method",
        "expected_status",
        "confirmations",
        "recovery_confirmations",
        "paused",
    ],
)
def test_patch_refuses_null_for_a_field_that_cannot_be_null(
    api: ApiServer, alice: Account, field: str
) -> None:
    website = _create(api, alice.token)
    path = f"/websites/{website['id']}"
    with _session(api, alice.token) as client:
        answer = client.patch(path, json={field: None})
        stored = _data(client.get(path))
    _assert_invalid(answer, field)
    assert stored[field] == website[field]


def test_patch_refuses_a_url_the_same_user_already_monitors(api: ApiServer, alice: Account) -> None:
    taken = _create(api, alice.token)
    other = _create(api, alice.token)
    path = f"/websites/{other['id']}"
    with _session(api, alice.token) as client:
        answer = client.patch(
            path, json={"url": taken["url"].upper().replace("/HEALTH", "/health")}
        )
        stored = _data(client.get(path))
    _expect(answer, 409)
    assert answer.json()["success"] is False
    assert stored["url"] == other["url"]


def test_patch_to_the_monitors_own_url_in_other_case_is_not_a_conflict(
    api: ApiServer, alice: Account
) -> None:
    website = _create(api, alice.token)
    shouted = website["url"].replace("https://", "HTTPS://").replace(".example.com", ".EXAMPLE.com")
    with _session(api, alice.token) as client:
        answer = client.patch(f"/websites/{website['id']}", json={"url": shouted})
    assert _data(answer)["url"] == website["url"]


def test_two_users_may_monitor_the_same_url(api: ApiServer, alice: Account, bob: Account) -> None:
    url = _url()
    assert _create(api, alice.token, url=url)["url"] == url
    assert _create(api, bob.token, url=url)["url"] == url
    moved = _create(api, bob.token)
    other_url = _url()
    _create(api, alice.token, url=other_url)
    with _session(api, bob.token) as client:
        answer = client.patch(f"/websites/{moved['id']}", json={"url": other_url})
    assert _data(answer)["url"] == other_url


def test_patch_checks_timing_against_the_stored_values(api: ApiServer, alice: Account) -> None:
    website = _create(api, alice.token, interval_seconds=30, timeout_ms=5_000)
    path = f"/websites/{website['id']}"
    with _session(api, alice.token) as client:
        too_long = client.patch(path, json={"timeout_ms": 30_001})
        too_often = client.patch(path, json={"interval_seconds": 29})
        shorter_than_timeout = client.patch(
            f"/websites/{_create(api, alice.token, interval_seconds=60, timeout_ms=50_000)['id']}",
            json={"interval_seconds": 40},
        )
        stored = _data(client.get(path))
    _assert_invalid(too_long, "timeout_ms")
    assert "MIN_CHECK_INTERVAL_SECONDS" in _assert_invalid(too_often, "interval_seconds")
    _expect(shorter_than_timeout, 422)
    assert (stored["interval_seconds"], stored["timeout_ms"]) == (30, 5_000)


def test_a_deleted_monitor_is_gone(api: ApiServer, alice: Account) -> None:
    website = _create(api, alice.token)
    path = f"/websites/{website['id']}"
    with _session(api, alice.token) as client:
        deleted = client.delete(path)
        after = client.get(path)
        again = client.delete(path)
        listed = _data(client.get("/websites"))["websites"]
    _expect(deleted, 200)
    assert deleted.json()["success"] is True
    _expect(after, 404)
    assert after.json()["success"] is False
    _expect(again, 404)
    assert website["id"] not in {w["id"] for w in listed}


def test_deleting_a_monitor_deletes_its_checks_incidents_and_notifications(
    api: ApiServer, alice: Account
) -> None:
    doomed = _create(api, alice.token)["id"]
    kept = _create(api, alice.token)["id"]
    region = rows.local_region_id(api)
    for website_id in (doomed, kept):
        opened = rows.incident(website_id, rows.seconds_ago(600))
        rows.insert(
            api,
            *[rows.check(website_id, region, rows.seconds_ago(60 * i)) for i in range(3)],
            opened,
        )
        rows.insert(api, rows.notification(website_id, opened.id, rows.seconds_ago(590)))
    tables = (WebsiteCheck, Incident, NotificationLog)
    assert [rows.count(api, t, doomed) for t in tables] == [3, 1, 1]

    with _session(api, alice.token) as client:
        _expect(client.delete(f"/websites/{doomed}"), 200)

    assert [rows.count(api, t, doomed) for t in tables] == [0, 0, 0]
    assert [rows.count(api, t, kept) for t in tables] == [3, 1, 1]


# --- validation ------------------------------------------------------------------------

# (id, body fields, the field the error must name). For creation the fields are merged into
# a valid body; for PATCH they are sent as they are.
INVALID_FIELDS: list[tuple[str, dict[str, Any], str]] = [
    ("url_without_scheme", {"url": "example.com/health"}, "url"),
    ("url_scheme_relative", {"url": "//example.com/health"}, "url"),
    ("ftp_url", {"url": "ftp://example.com/file.txt"}, "url"),
    ("javascript_url", {"url": "javascript:alert(1)"}, "url"),
    ("file_url", {"url": "file:///etc/passwd"}, "url"),
    ("url_without_host", {"url": "http://"}, "url"),
    ("url_with_only_a_port", {"url": "http://:8080/"}, "url"),
    ("url_with_credentials", {"url": "https://user:s3cret@example.com/"}, "url"),
    ("url_with_user_only", {"url": "https://user@example.com/"}, "url"),
    ("url_with_non_numeric_port", {"url": "https://example.com:http/"}, "url"),
    ("url_with_port_out_of_range", {"url": "https://example.com:65536/"}, "url"),
    ("url_with_negative_port", {"url": "https://example.com:-1/"}, "url"),
    ("url_with_port_zero", {"url": "https://example.com:0/"}, "url"),
    ("url_with_broken_ipv6", {"url": "http://[::1/"}, "url"),
    ("url_with_whitespace", {"url": "https://exa mple.com/"}, "url"),
    ("url_too_long", {"url": "https://example.com/" + "a" * 2029}, "url"),
    ("url_empty", {"url": ""}, "url"),
    ("url_as_list", {"url": ["https://example.com/"]}, "url"),
    ("url_as_number", {"url": 42}, "url"),
    ("url_with_nul", {"url": "https://example.com/\x00"}, "url"),
    ("name_with_nul", {"name": "sho\x00p"}, "name"),
    ("name_as_object", {"name": {"en": "Shop"}}, "name"),
    ("name_too_long", {"name": "n" * 201}, "name"),
    ("keyword_with_nul", {"keyword": "ok\x00"}, "keyword"),
    ("keyword_too_long", {"keyword": "k" * 201}, "keyword"),
    ("interval_huge", {"interval_seconds": 10**30}, "interval_seconds"),
    ("interval_float_huge", {"interval_seconds": 1e308}, "interval_seconds"),
    ("interval_fraction", {"interval_seconds": 60.5}, "interval_seconds"),
    ("interval_as_string", {"interval_seconds": "60"}, "interval_seconds"),
    ("interval_as_bool", {"interval_seconds": True}, "interval_seconds"),
    ("interval_negative", {"interval_seconds": -60}, "interval_seconds"),
    ("interval_above_a_week", {"interval_seconds": 7 * 86_400 + 1}, "interval_seconds"),
    ("timeout_below_100ms", {"timeout_ms": 99}, "timeout_ms"),
    ("timeout_above_60s", {"interval_seconds": 120, "timeout_ms": 60_001}, "timeout_ms"),
    ("timeout_longer_than_interval", {"interval_seconds": 30, "timeout_ms": 30_001}, "timeout_ms"),
    ("timeout_huge", {"timeout_ms": 10**30}, "timeout_ms"),
    ("timeout_as_bool", {"timeout_ms": False}, "timeout_ms"),
    ("method_unknown", {"method": "TRACE"}, "method"),
    ("method_connect", {"method": "CONNECT"}, "method"),
    ("method_as_number", {"method": 1}, "method"),
    ("expected_status_words", {"expected_status": "success"}, "expected_status"),
    ("expected_status_reversed", {"expected_status": "399-200"}, "expected_status"),
    ("expected_status_below_100", {"expected_status": "050-200"}, "expected_status"),
    ("expected_status_above_599", {"expected_status": "200-600"}, "expected_status"),
    ("expected_status_open_range", {"expected_status": "200-"}, "expected_status"),
    ("expected_status_three_parts", {"expected_status": "200-300-400"}, "expected_status"),
    ("expected_status_empty_item", {"expected_status": "200,,300"}, "expected_status"),
    ("expected_status_superscript_digit", {"expected_status": "²00"}, "expected_status"),
    ("expected_status_non_ascii_digits", {"expected_status": "٢٠٠-٣٩٩"}, "expected_status"),
    ("expected_status_with_nul", {"expected_status": "200\x00"}, "expected_status"),
    ("confirmations_zero", {"confirmations": 0}, "confirmations"),
    ("confirmations_21", {"confirmations": 21}, "confirmations"),
    ("confirmations_huge", {"confirmations": 10**30}, "confirmations"),
    ("recovery_confirmations_zero", {"recovery_confirmations": 0}, "recovery_confirmations"),
    ("recovery_confirmations_21", {"recovery_confirmations": 21}, "recovery_confirmations"),
    ("paused_as_string", {"paused": "false"}, "paused"),
    ("paused_as_number", {"paused": 0}, "paused"),
    ("unknown_field", {"colour": "red"}, "colour"),
]


@pytest.mark.parametrize(
    ("fields", "field"), [case[1:] for case in INVALID_FIELDS], ids=[c[0] for c in INVALID_FIELDS]
)
def test_an_invalid_monitor_is_refused_with_422_naming_the_field(
    api: ApiServer, alice: Account, fields: dict[str, Any], field: str
) -> None:
    with _session(api, alice.token) as client:
        answer = client.post("/websites", json={"url": _url(), **fields})
    error = _assert_invalid(answer, field)
    assert "s3cret" not in answer.text
    assert "\x00" not in error


@pytest.mark.parametrize(
    ("fields", "field"), [case[1:] for case in INVALID_FIELDS], ids=[c[0] for c in INVALID_FIELDS]
)
def test_an_invalid_change_is_refused_with_422_naming_the_field(
    api: ApiServer,
    alice: Account,
    alices_monitor: dict[str, Any],
    fields: dict[str, Any],
    field: str,
) -> None:
    path = f"/websites/{alices_monitor['id']}"
    with _session(api, alice.token) as client:
        before = _data(client.get(path))
        answer = client.patch(path, json=fields)
        after = _data(client.get(path))
    _assert_invalid(answer, field)
    assert after == before


def test_a_monitor_needs_a_url(api: ApiServer, alice: Account) -> None:
    with _session(api, alice.token) as client:
        answer = client.post("/websites", json={"name": "no url"})
    _assert_invalid(answer, "url")


@pytest.mark.parametrize("interval", [29, 1])
def test_an_interval_below_the_minimum_names_the_field_and_the_setting(
    api: ApiServer, alice: Account, interval: int
) -> None:
    assert api.settings.MIN_CHECK_INTERVAL_SECONDS == 30
    with _session(api, alice.token) as client:
        answer = client.post(
            "/websites", json={"url": _url(), "interval_seconds": interval, "timeout_ms": 500}
        )
    error = _assert_invalid(answer, "interval_seconds")
    assert "MIN_CHECK_INTERVAL_SECONDS" in error
    assert "30" in error


def test_an_interval_at_the_minimum_is_accepted(api: ApiServer, alice: Account) -> None:
    website = _create(api, alice.token, interval_seconds=30, timeout_ms=30_000)
    assert (website["interval_seconds"], website["timeout_ms"]) == (30, 30_000)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://localhost:8080/admin",
        "http://10.0.0.5/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://0x7f000001/",
    ],
)
def test_a_private_target_is_refused_naming_the_setting(
    api: ApiServer, alice: Account, alices_monitor: dict[str, Any], url: str
) -> None:
    path = f"/websites/{alices_monitor['id']}"
    with _session(api, alice.token) as client:
        created = client.post("/websites", json={"url": url})
        changed = client.patch(path, json={"url": url})
        stored = _data(client.get(path))
    for answer in (created, changed):
        assert "ALLOW_PRIVATE_TARGETS" in _assert_invalid(answer, "url")
    assert stored["url"] == alices_monitor["url"]


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'{"url": "https://example.com/", }',
        b"",
        b"null",
        b"[]",
        b'"https://example.com/"',
        b'{"url": "https://example.com/", "interval_seconds": 1e999}',
        b'{"url": "https://example.com/", "interval_seconds": NaN}',
        b"\xff\xfe\x00",
        b"[" * 60_000,  # far deeper than any parser recurses, within MAX_REQUEST_BODY_BYTES
    ],
    ids=[
        "broken",
        "trailing_comma",
        "empty",
        "null",
        "array",
        "string",
        "infinite_number",
        "nan",
        "not_utf8",
        "nested_too_deep",
    ],
)
@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_a_body_that_is_not_a_json_object_is_422(
    api: ApiServer, alice: Account, alices_monitor: dict[str, Any], content: bytes, method: str
) -> None:
    path = "/websites" if method == "POST" else f"/websites/{alices_monitor['id']}"
    with _session(api, alice.token) as client:
        answer = client.request(
            method, path, content=content, headers={"content-type": "application/json"}
        )
    field = "interval_seconds" if b"interval_seconds" in content else "body"
    _assert_invalid(answer, field)


@pytest.mark.parametrize(
    ("suffix", "params", "field"),
    [
        ("/checks", {"limit": "0"}, "limit"),
        ("/checks", {"limit": "101"}, "limit"),
        ("/checks", {"limit": "abc"}, "limit"),
        ("/checks", {"limit": "-1"}, "limit"),
        ("/checks", {"limit": str(10**30)}, "limit"),
        ("/response-times", {"limit": "0"}, "limit"),
        ("/response-times", {"limit": "501"}, "limit"),
        ("/response-times", {"limit": "1e308"}, "limit"),
        ("/response-times", {"since": "not-a-date"}, "since"),
        ("/response-times", {"until": "yesterday"}, "until"),
        ("/response-times", {"since": "2026-13-45T00:00:00Z"}, "since"),
        ("/incidents", {"limit": "abc"}, "limit"),
        ("/notifications", {"limit": "0"}, "limit"),
        ("/checks", {"since": "not-a-date"}, "since"),
        ("/incidents", {"until": "yesterday"}, "until"),
        ("/notifications", {"since": "2026-13-45T00:00:00Z"}, "since"),
        ("/checks", {"cursor": "not-a-cursor"}, "cursor"),
    ],
)
def test_an_invalid_query_parameter_is_422_naming_it(
    api: ApiServer,
    alice: Account,
    alices_monitor: dict[str, Any],
    suffix: str,
    params: dict[str, str],
    field: str,
) -> None:
    path = f"/websites/{alices_monitor['id']}{suffix}"
    _assert_invalid(_get(api, alice.token, path, **params), field)


@pytest.mark.parametrize("params", [{"limit": "0"}, {"limit": "abc"}, {"offset": "-1"}])
def test_an_invalid_list_parameter_is_422_naming_it(
    api: ApiServer, alice: Account, params: dict[str, str]
) -> None:
    _assert_invalid(_get(api, alice.token, "/websites", **params), next(iter(params)))


@pytest.mark.parametrize(
    "moment",
    ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "99999999999999999999"],
    ids=["overflows_after_utc", "underflows_after_utc", "huge_timestamp"],
)
@pytest.mark.parametrize("param", ["since", "until"])
@pytest.mark.parametrize("suffix", ["/response-times", "/checks", "/incidents", "/notifications"])
def test_an_extreme_time_window_is_never_a_500(
    api: ApiServer,
    alice: Account,
    alices_monitor: dict[str, Any],
    moment: str,
    param: str,
    suffix: str,
) -> None:
    path = f"/websites/{alices_monitor['id']}{suffix}"
    answer = _get(api, alice.token, path, **{param: moment})
    _no_server_error(answer)
    assert answer.status_code in (200, 422), answer.text
    if answer.status_code == 422:
        _assert_invalid(answer, param)


@pytest.mark.parametrize(("method", "suffix", "body"), MONITOR_ROUTES, ids=ROUTE_IDS)
@pytest.mark.parametrize("bad_id", ["not-a-uuid", "123", "00000000-0000-0000-0000-00000000000g"])
def test_a_website_id_that_is_not_a_uuid_is_422(
    api: ApiServer,
    alice: Account,
    method: str,
    suffix: str,
    body: dict[str, Any] | None,
    bad_id: str,
) -> None:
    with _session(api, alice.token) as client:
        answer = _request(client, method, f"/websites/{bad_id}{suffix}", body)
    _assert_invalid(answer, "website_id")


@pytest.mark.parametrize(("method", "suffix", "body"), MONITOR_ROUTES, ids=ROUTE_IDS)
def test_an_unknown_website_id_is_404(
    api: ApiServer, alice: Account, method: str, suffix: str, body: dict[str, Any] | None
) -> None:
    with _session(api, alice.token) as client:
        answer = _request(client, method, f"/websites/{uuid.uuid4()}{suffix}", body)
    _expect(answer, 404)
    assert answer.json()["success"] is False


# --- duplicates ------------------------------------------------------------------------


def test_the_same_url_twice_for_one_user_is_409(api: ApiServer, alice: Account) -> None:
    url = _url()
    _create(api, alice.token, url=url)
    with _session(api, alice.token) as client:
        again = client.post("/websites", json={"url": url, "name": "again"})
        listed = _data(client.get("/websites"))["websites"]
    _expect(again, 409)
    assert again.json()["success"] is False
    assert again.json()["error"]
    assert [w["url"] for w in listed].count(url) == 1


def test_urls_differing_only_in_scheme_and_host_case_are_duplicates(
    api: ApiServer, alice: Account
) -> None:
    host = uuid.uuid4().hex[:12]
    _create(api, alice.token, url=f"https://{host}.example.com/x")
    with _session(api, alice.token) as client:
        again = client.post("/websites", json={"url": f"HTTPS://{host.upper()}.Example.COM/x"})
    _expect(again, 409)


def test_urls_differing_in_path_case_are_different_monitors(api: ApiServer, alice: Account) -> None:
    host = uuid.uuid4().hex[:12]
    lower = _create(api, alice.token, url=f"https://{host}.example.com/x")
    upper = _create(api, alice.token, url=f"https://{host}.example.com/X")
    assert lower["id"] != upper["id"]
    assert upper["url"].endswith("/X")


# --- who may use a monitor -------------------------------------------------------------


@pytest.mark.parametrize(("method", "suffix", "body"), MONITOR_ROUTES, ids=ROUTE_IDS)
def test_another_user_is_forbidden_on_every_route_of_a_monitor(
    api: ApiServer,
    alice: Account,
    bob: Account,
    alices_monitor: dict[str, Any],
    method: str,
    suffix: str,
    body: dict[str, Any] | None,
) -> None:
    path = f"/websites/{_monitor_for(api, alice, alices_monitor, method)['id']}"
    before = _data(_get(api, alice.token, path))
    with _session(api, bob.token) as client:
        answer = _request(client, method, f"{path}{suffix}", body)
    _expect(answer, 403)
    assert answer.json()["success"] is False
    assert answer.json()["data"] is None
    assert _data(_get(api, alice.token, path)) == before


def test_another_users_patch_and_delete_leave_the_monitor_unchanged(
    api: ApiServer, alice: Account, bob: Account
) -> None:
    website = _create(api, alice.token, name="mine", paused=False)
    path = f"/websites/{website['id']}"
    before = _data(_get(api, alice.token, path))
    with _session(api, bob.token) as client:
        _expect(client.patch(path, json={"url": _url(), "paused": True}), 403)
        _expect(client.patch(path, json={"name": None}), 403)
        _expect(client.delete(path), 403)
        assert website["id"] not in {w["id"] for w in _data(client.get("/websites"))["websites"]}
    assert _data(_get(api, alice.token, path)) == before


@pytest.mark.parametrize(("method", "suffix", "body"), MONITOR_ROUTES, ids=ROUTE_IDS)
def test_an_admin_may_use_every_route_of_any_monitor(
    api: ApiServer,
    alice: Account,
    alices_monitor: dict[str, Any],
    method: str,
    suffix: str,
    body: dict[str, Any] | None,
) -> None:
    website = _monitor_for(api, alice, alices_monitor, method)
    with _session(api, api.admin_token()) as client:
        data = _data(_request(client, method, f"/websites/{website['id']}{suffix}", body))
    if method == "GET" and suffix:  # the owner's history, not an empty list
        [items] = [value for key, value in data.items() if key != "next_cursor"]
        assert len(items) == 1, data
    elif method != "DELETE":
        assert data["id"] == website["id"]


def test_an_admins_patch_keeps_the_owner(api: ApiServer, alice: Account) -> None:
    website = _create(api, alice.token)
    with _session(api, api.admin_token()) as client:
        updated = _data(client.patch(f"/websites/{website['id']}", json={"paused": True}))
    assert updated["paused"] is True
    assert updated.get("user_id", alice.id) == alice.id
    assert website["id"] in {
        w["id"] for w in _data(_get(api, alice.token, "/websites"))["websites"]
    }


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [*MONITOR_ROUTES, ("POST", None, {"url": "https://example.com/"}), ("GET", None, None)],
    ids=[*ROUTE_IDS, "POST /websites", "GET /websites"],
)
@pytest.mark.parametrize("token", [None, "not-a-jwt"], ids=["no_token", "garbage_token"])
def test_every_monitor_route_needs_a_valid_token(
    api: ApiServer,
    alice: Account,
    method: str,
    suffix: str | None,
    body: dict[str, Any] | None,
    token: str | None,
    alices_monitor: dict[str, Any],
) -> None:
    website = _monitor_for(api, alice, alices_monitor, method)
    path = "/websites" if suffix is None else f"/websites/{website['id']}{suffix}"
    before = _data(_get(api, alice.token, f"/websites/{website['id']}"))
    with _session(api, token) as client:
        answer = _request(client, method, path, body)
    _expect(answer, 401)
    assert answer.json()["success"] is False
    assert _data(_get(api, alice.token, f"/websites/{website['id']}")) == before


# --- history ---------------------------------------------------------------------------


def test_checks_are_newest_first_twenty_by_default_with_the_contract_fields(
    api: ApiServer, alice: Account
) -> None:
    website = _create(api, alice.token)
    region = rows.local_region_id(api)
    base = rows.seconds_ago(3600)
    inserted = [
        rows.check(
            website["id"],
            region,
            base + timedelta(seconds=10 * i),
            status="down" if i % 5 == 0 else "up",
            response_time_ms=None if i % 5 == 0 else 100 + i,
            status_code=None if i % 5 == 0 else 200,
            error="connection refused" if i % 5 == 0 else None,
            **(REFUSED if i % 5 == 0 else ANSWERED_CERT),
        )
        for i in range(25)
    ]
    rows.insert(api, *inserted)

    checks = _data(_get(api, alice.token, f"/websites/{website['id']}/checks"))["checks"]

    assert len(checks) == 20
    assert all(set(c) >= CHECK_FIELDS for c in checks)
    times = [_at(c["created_at"]) for c in checks]
    assert times == [base + timedelta(seconds=10 * i) for i in range(24, 4, -1)]
    assert {c["website_id"] for c in checks} == {website["id"]}
    assert {c["region_id"] for c in checks} == {region}
    newest, down = checks[0], checks[4]  # i = 24, i = 20
    assert (newest["status"], newest["response_time_ms"], newest["status_code"]) == (
        "up",
        124,
        200,
    )
    assert newest["error"] is None
    # A check's id is its time in microseconds since the Unix epoch.
    assert newest["id"] == (base + timedelta(seconds=240) - EPOCH) // timedelta(microseconds=1)
    assert {name: newest[name] for name in ANSWERED} == ANSWERED
    assert _at(newest["cert_expires_at"]) == CERT_EXPIRES_AT
    assert (down["status"], down["response_time_ms"], down["status_code"], down["error"]) == (
        "down",
        None,
        None,
        "connection refused",
    )
    assert {name: down[name] for name in REFUSED} == REFUSED
    assert down["cert_expires_at"] is None


def test_checks_limit_may_be_raised_to_100(api: ApiServer, alice: Account) -> None:
    website = _create(api, alice.token)
    region = rows.local_region_id(api)
    base = rows.seconds_ago(7200)
    rows.insert(
        api, *[rows.check(website["id"], region, base + timedelta(seconds=i)) for i in range(105)]
    )
    path = f"/websites/{website['id']}/checks"
    assert len(_data(_get(api, alice.token, path, limit=100))["checks"]) == 100
    few = _data(_get(api, alice.token, path, limit=3))["checks"]
    assert [_at(c["created_at"]) for c in few] == [
        base + timedelta(seconds=i) for i in (104, 103, 102)
    ]


def test_response_times_are_the_newest_limit_points_returned_oldest_first(
    api: ApiServer, alice: Account
) -> None:
    website = _create(api, alice.token)
    region = rows.local_region_id(api)
    base = rows.seconds_ago(86_400)
    rows.insert(
        api,
        *[
            rows.check(
                website["id"],
                region,
                base + timedelta(minutes=i),
                response_time_ms=1000 + i,
                status="down" if i == 58 else "up",
                **(REFUSED if i == 58 else ANSWERED_CERT),
            )
            for i in range(60)
        ],
    )
    path = f"/websites/{website['id']}/response-times"

    default = _data(_get(api, alice.token, path))["points"]
    three = _data(_get(api, alice.token, path, limit=3))["points"]

    assert [_at(p["timestamp"]) for p in default] == [
        base + timedelta(minutes=i) for i in range(10, 60)
    ]
    assert all(set(p) >= POINT_FIELDS for p in default)
    assert [(p["response_time_ms"], p["status"], p["region_id"]) for p in three] == [
        (1057, "up", region),
        (1058, "down", region),
        (1059, "up", region),
    ]
    answered, refused = three[0], three[1]
    assert {name: answered[name] for name in ANSWERED} == ANSWERED
    assert _at(answered["cert_expires_at"]) == CERT_EXPIRES_AT
    assert {name: refused[name] for name in REFUSED} == REFUSED
    assert refused["cert_expires_at"] is None


def test_response_times_limit_may_be_raised_to_500(api: ApiServer, alice: Account) -> None:
    website = _create(api, alice.token)
    region = rows.local_region_id(api)
    base = rows.seconds_ago(86_400)
    rows.insert(
        api, *[rows.check(website["id"], region, base + timedelta(seconds=i)) for i in range(501)]
    )
    points = _data(_get(api, alice.token, f"/websites/{website['id']}/response-times", limit=500))
    times = [_at(p["timestamp"]) for p in points["points"]]
    assert times == [base + timedelta(seconds=i) for i in range(1, 501)]


def _utc_z(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _utc_offset(moment: datetime) -> str:
    return moment.isoformat()


def _plus_two_hours(moment: datetime) -> str:
    return moment.astimezone(timezone(timedelta(hours=2))).isoformat()


def _minus_five_hours(moment: datetime) -> str:
    return moment.astimezone(timezone(timedelta(hours=-5))).isoformat()


def _naive_utc(moment: datetime) -> str:
    return moment.replace(tzinfo=None).isoformat()


@pytest.mark.parametrize(
    "spell",
    [_utc_z, _utc_offset, _plus_two_hours, _minus_five_hours, _naive_utc],
    ids=["Z", "+00:00", "+02:00", "-05:00", "no_zone_is_utc"],
)
def test_response_times_since_and_until_bound_the_window_inclusively_limit_keeps_the_newest(
    api: ApiServer, alice: Account, spell: Any
) -> None:
    website = _create(api, alice.token)
    region = rows.local_region_id(api)
    base = rows.seconds_ago(86_400)
    rows.insert(
        api,
        *[rows.check(website["id"], region, base + timedelta(minutes=i)) for i in range(10)],
    )
    path = f"/websites/{website['id']}/response-times"
    since, until = spell(base + timedelta(minutes=2)), spell(base + timedelta(minutes=5))

    def minutes(**params: str) -> list[int]:
        points = _data(_get(api, alice.token, path, **params))["points"]
        return [int((_at(p["timestamp"]) - base) / timedelta(minutes=1)) for p in points]

    assert minutes(since=since, until=until) == [2, 3, 4, 5]
    assert minutes(since=since) == list(range(2, 10))
    assert minutes(until=until) == list(range(0, 6))
    assert minutes(since=since, until=until, limit="2") == [4, 5]
    assert minutes(since=until, until=since) == []


def test_incidents_are_newest_first_with_their_state(api: ApiServer, alice: Account) -> None:
    website = _create(api, alice.token)
    base = rows.seconds_ago(86_400)
    oldest = rows.incident(
        website["id"],
        base,
        is_active=False,
        resolved_at=base + timedelta(minutes=10),
        cause="timeout",
    )
    middle = rows.incident(
        website["id"],
        base + timedelta(hours=1),
        is_active=False,
        resolved_at=base + timedelta(hours=1, minutes=5),
        cause="HTTP 500",
    )
    newest = rows.incident(website["id"], base + timedelta(hours=2), cause=None)
    rows.insert(api, middle, newest, oldest)

    incidents = _data(_get(api, alice.token, f"/websites/{website['id']}/incidents"))["incidents"]

    assert all(set(i) >= INCIDENT_FIELDS for i in incidents)
    assert [i["id"] for i in incidents] == [str(newest.id), str(middle.id), str(oldest.id)]
    assert [i["is_active"] for i in incidents] == [True, False, False]
    assert incidents[0]["resolved_at"] is None
    assert _at(incidents[1]["resolved_at"]) == base + timedelta(hours=1, minutes=5)
    assert _at(incidents[2]["started_at"]) == base
    assert [i["cause"] for i in incidents] == [None, "HTTP 500", "timeout"]
    assert {i["website_id"] for i in incidents} == {website["id"]}


def test_notifications_carry_the_contract_fields_newest_first(
    api: ApiServer, alice: Account
) -> None:
    website = _create(api, alice.token)
    base = rows.seconds_ago(86_400)
    opened = rows.incident(
        website["id"], base, is_active=False, resolved_at=base + timedelta(minutes=10)
    )
    down = rows.notification(website["id"], opened.id, base + timedelta(seconds=5))
    recovery = rows.notification(
        website["id"],
        opened.id,
        base + timedelta(minutes=10, seconds=5),
        channel="email",
        recipient="ops@example.org",
        event="RECOVERY",
        delivery_status="failed",
        attempts=3,
        error="SMTP 451 try again later",
        sent_at=None,
    )
    rows.insert(api, opened)
    rows.insert(api, down, recovery)

    logs = _data(_get(api, alice.token, f"/websites/{website['id']}/notifications"))[
        "notifications"
    ]

    assert all(set(n) >= NOTIFICATION_FIELDS for n in logs)
    assert [n["id"] for n in logs] == [str(recovery.id), str(down.id)]
    first, second = logs
    assert {k: first[k] for k in NOTIFICATION_FIELDS - {"id"}} == {
        "incident_id": str(opened.id),
        "channel": "email",
        "recipient": "ops@example.org",
        "event": "RECOVERY",
        "delivery_status": "failed",
        "attempts": 3,
        "error": "SMTP 451 try again later",
        "sent_at": None,
    }
    assert (second["event"], second["delivery_status"], second["attempts"]) == ("DOWN", "sent", 1)
    assert (second["channel"], second["recipient"]) == (
        "webhook",
        "https://hooks.example.org/runstate",
    )
    assert second["error"] is None
    assert _at(second["sent_at"]) == base + timedelta(seconds=5)


def test_history_routes_show_only_that_monitors_rows(api: ApiServer, alice: Account) -> None:
    quiet = _create(api, alice.token)
    busy = _create(api, alice.token)
    region = rows.local_region_id(api)
    opened = rows.incident(busy["id"], rows.seconds_ago(300))
    rows.insert(api, rows.check(busy["id"], region, rows.seconds_ago(10)), opened)
    rows.insert(api, rows.notification(busy["id"], opened.id, rows.seconds_ago(290)))
    base = f"/websites/{quiet['id']}"
    assert _data(_get(api, alice.token, f"{base}/checks")) == {"checks": [], "next_cursor": None}
    assert _data(_get(api, alice.token, f"{base}/response-times")) == {"points": []}
    assert _data(_get(api, alice.token, f"{base}/incidents")) == {
        "incidents": [],
        "next_cursor": None,
    }
    assert _data(_get(api, alice.token, f"{base}/notifications")) == {
        "notifications": [],
        "next_cursor": None,
    }
    assert _data(_get(api, alice.token, base))["active_incident"] is None
