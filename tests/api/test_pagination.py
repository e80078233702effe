"""Cursor pagination and time filters on the history lists, and the pause periods that
creating and changing a monitor record, over real HTTP on SQLite and PostgreSQL.

History is inserted straight into the database (`tests.api.rows`), ties included: rows that
share a timestamp must still each be shown exactly once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from runstate.storage.db import create_engine, session_factory
from runstate.storage.tables import Incident, NotificationLog, WebsiteCheck, WebsitePause
from tests.api import rows
from tests.api.server import ApiServer

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Timestamps with microseconds, so that a cursor that lost precision would skip or repeat.
BASE = datetime(2026, 11, 20, 8, 30, 15, 123_457, tzinfo=UTC)
LISTS = ["checks", "incidents", "notifications"]


@pytest.fixture(scope="module")
def client(api: ApiServer) -> Iterator[httpx.Client]:
    """A fresh account's client: its monitor list holds only what its tests create."""
    _, token, _ = api.new_user()
    with api.client(token) as session:
        yield session


def _data(answer: httpx.Response) -> Any:
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def _assert_invalid(answer: httpx.Response, field: str) -> None:
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert re.search(rf"(^|; ){re.escape(field)}:", error), error


def _create(client: httpx.Client, **fields: Any) -> dict[str, Any]:
    url = f"https://{uuid.uuid4().hex[:12]}.example.com/"
    answer = client.post("/websites", json={"url": url, **fields})
    assert answer.status_code == 201, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


def _walk(
    client: httpx.Client,
    path: str,
    key: str,
    limit: int,
    between_pages: Callable[[int], None] = lambda _: None,
    **params: Any,
) -> list[dict[str, Any]]:
    """Every item of the list at ``path``, page by page: each page but the last is full and
    has a next_cursor; ``between_pages(n)`` runs after page n."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for page_number in range(1000):
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        data = _data(client.get(path, params=query))
        assert len(data[key]) <= limit
        items.extend(data[key])
        cursor = data["next_cursor"]
        if cursor is None:
            return items
        assert len(data[key]) == limit, "a page before the end is full"
        between_pages(page_number)
    raise AssertionError("the walk never ended")


def _pauses(api: ApiServer, website_id: str) -> list[WebsitePause]:
    async def main() -> list[WebsitePause]:
        engine = create_engine(api.settings.database_url, pool_size=1)
        try:
            async with session_factory(engine)() as session:
                query = (
                    select(WebsitePause)
                    .where(WebsitePause.website_id == uuid.UUID(website_id))
                    .order_by(WebsitePause.paused_at)
                )
                return list(await session.scalars(query))
        finally:
            await engine.dispose()

    return asyncio.run(main())


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _microseconds(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


# --- history of one monitor, with ties -----------------------------------------------------


def _checks(website_id: str, moments: list[datetime], regions: list[int]) -> list[WebsiteCheck]:
    return [rows.check(website_id, r, m) for m in moments for r in regions]


def _incidents(website_id: str, moments: list[datetime], per_moment: int) -> list[Incident]:
    return [
        rows.incident(website_id, m, is_active=False, resolved_at=m + timedelta(seconds=1))
        for m in moments
        for _ in range(per_moment)
    ]


def _notifications(
    website_id: str, incident: Incident, moments: list[datetime], per_moment: int
) -> list[NotificationLog]:
    return [
        rows.notification(website_id, incident.id, m, channel_id=None, event=f"E{n}")
        for m in moments
        for n in range(per_moment)
    ]


def _history(api: ApiServer, client: httpx.Client, moments: list[datetime]) -> dict[str, Any]:
    """A monitor with, at each of ``moments``, three checks (three regions), two incidents
    and two notifications: every page boundary of an odd limit falls inside a tie."""
    website = _create(client)
    opened = rows.incident(website["id"], BASE - timedelta(days=30))
    rows.insert(api, *_checks(website["id"], moments, [1, 2, 3]))
    rows.insert(api, opened, *_incidents(website["id"], moments, 2))
    rows.insert(api, *_notifications(website["id"], opened, moments, 2))
    return website


def _sort_key(list_name: str, item: dict[str, Any]) -> tuple[datetime, Any]:
    """The documented order of each list, newest first: time, then the tie-breaker."""
    if list_name == "checks":
        return _at(item["created_at"]), item["region_id"]
    if list_name == "incidents":
        return _at(item["started_at"]), uuid.UUID(item["id"])
    return _at(item["sent_at"]), uuid.UUID(item["id"])  # rows.notification: sent = created


def _expected_order(list_name: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``items`` in the list's order, with the tie-breaker compared as the database does."""
    if list_name == "checks":
        return sorted(items, key=lambda i: _sort_key(list_name, i), reverse=True)
    return sorted(
        items,
        key=lambda i: (_sort_key(list_name, i)[0], _sort_key(list_name, i)[1].hex),
        reverse=True,
    )


@pytest.mark.parametrize("list_name", LISTS)
@pytest.mark.parametrize("limit", [1, 3, 4])
def test_walking_a_history_list_with_the_cursor_shows_every_row_once_in_order_ties_included(
    api: ApiServer, client: httpx.Client, list_name: str, limit: int
) -> None:
    moments = [BASE - timedelta(minutes=n, microseconds=n) for n in range(5)]
    website = _history(api, client, moments)
    path = f"/websites/{website['id']}/{list_name}"

    walked = _walk(client, path, list_name, limit)
    everything = _data(client.get(path, params={"limit": 100}))[list_name]

    if list_name == "incidents":
        everything = [i for i in everything if _at(i["started_at"]) >= moments[-1]]
        walked = [i for i in walked if _at(i["started_at"]) >= moments[-1]]
    per_moment = 3 if list_name == "checks" else 2
    assert len(walked) == len(moments) * per_moment
    assert walked == everything == _expected_order(list_name, walked)


def test_a_checks_id_is_its_time_in_microseconds_unique_per_region(
    api: ApiServer, client: httpx.Client
) -> None:
    website = _create(client)
    rows.insert(api, *_checks(website["id"], [BASE], [4, 9]))
    checks = _data(client.get(f"/websites/{website['id']}/checks"))["checks"]
    assert [(c["id"], c["region_id"]) for c in checks] == [
        (_microseconds(BASE), 9),
        (_microseconds(BASE), 4),
    ]


@pytest.mark.parametrize("list_name", LISTS)
def test_a_walk_during_inserts_shows_every_earlier_row_once_and_none_twice(
    api: ApiServer, client: httpx.Client, list_name: str
) -> None:
    moments = [BASE - timedelta(minutes=n) for n in range(6)]
    website = _history(api, client, moments)
    path = f"/websites/{website['id']}/{list_name}"
    before = _data(client.get(path, params={"limit": 100}))[list_name]
    opened = rows.incident(website["id"], BASE - timedelta(days=29), is_active=False)
    rows.insert(api, opened)

    def insert_newer_tied_and_older_rows(page: int) -> None:
        # Newer than the walk's position, at the very times already walked, and older.
        when = [BASE + timedelta(minutes=page + 1), moments[page % 6], BASE - timedelta(hours=1)]
        if list_name == "checks":
            rows.insert(api, *_checks(website["id"], when, [10 + page]))
        elif list_name == "incidents":
            rows.insert(api, *_incidents(website["id"], when, 1))
        else:
            rows.insert(api, *_notifications(website["id"], opened, when, 1))

    walked = _walk(client, path, list_name, 4, between_pages=insert_newer_tied_and_older_rows)

    seen = [(item["id"], item.get("region_id")) for item in walked]
    assert len(seen) == len(set(seen)), "a row was shown twice"
    assert set(seen) >= {(item["id"], item.get("region_id")) for item in before}
    assert walked == _expected_order(list_name, walked), "the walk went back in time"


@pytest.mark.parametrize("list_name", LISTS)
def test_since_and_until_bound_a_list_inclusively_and_hold_across_pages(
    api: ApiServer, client: httpx.Client, list_name: str
) -> None:
    moments = [BASE - timedelta(minutes=n) for n in range(8)]
    website = _history(api, client, moments)
    path = f"/websites/{website['id']}/{list_name}"
    since, until = moments[5], moments[2]  # minutes -5 to -2, both included
    expected = {m for m in moments if since <= m <= until}

    def times(items: list[dict[str, Any]]) -> set[datetime]:
        return {_sort_key(list_name, i)[0] for i in items}

    window = {"since": since.isoformat(), "until": until.isoformat()}
    per_moment = 3 if list_name == "checks" else 2
    walked = _walk(client, path, list_name, 3, **window)
    assert times(walked) == expected
    assert len(walked) == len(expected) * per_moment
    naive = {"since": since.replace(tzinfo=None).isoformat()}  # no zone: UTC
    older_bound = _data(client.get(path, params={"limit": 100, **naive}))[list_name]
    assert times(older_bound) == {m for m in moments if m >= since}
    assert times(_data(client.get(path, params={"until": until.isoformat()}))[list_name]) >= {
        m for m in moments if m <= until
    }


@pytest.mark.parametrize("list_name", LISTS)
def test_since_after_until_is_422_naming_since(client: httpx.Client, list_name: str) -> None:
    website = _create(client)
    params = {"since": BASE.isoformat(), "until": (BASE - timedelta(seconds=1)).isoformat()}
    _assert_invalid(client.get(f"/websites/{website['id']}/{list_name}", params=params), "since")


def _b64(payload: Any) -> str:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


BAD_CURSORS = {
    "empty": "",
    "not_base64": "!!!not base64!!!",
    "base64_of_bytes": _b64(b"\xff\xfe\x00garbage"),
    "base64_of_text": _b64(b"hello"),
    "json_list": _b64([1, 2]),
    "older_version": _b64({"v": 0, "l": "checks", "t": 1, "k": 1}),
    "no_time": _b64({"v": 1, "l": "checks", "k": 1}),
    "time_a_string": _b64({"v": 1, "l": "checks", "t": "1", "k": 1}),
    "time_a_bool": _b64({"v": 1, "l": "checks", "t": True, "k": 1}),
    "time_past_year_9999": _b64({"v": 1, "l": "checks", "t": 10**20, "k": 1}),
    "time_a_float": _b64({"v": 1, "l": "checks", "t": 1.5, "k": 1}),
    "region_too_big": _b64({"v": 1, "l": "checks", "t": 1, "k": 2**31}),
    "region_negative": _b64({"v": 1, "l": "checks", "t": 1, "k": -1}),
    "region_a_string": _b64({"v": 1, "l": "checks", "t": 1, "k": "1"}),
    "too_long": "A" * 513,
    "nested": _b64({"v": 1, "l": "checks", "t": {"a": [[[]]]}, "k": 1}),
}


@pytest.mark.parametrize("cursor", BAD_CURSORS.values(), ids=BAD_CURSORS.keys())
@pytest.mark.parametrize("list_name", LISTS)
def test_a_cursor_that_is_not_one_is_422_naming_cursor(
    client: httpx.Client, list_name: str, cursor: str
) -> None:
    website = _create(client)
    answer = client.get(f"/websites/{website['id']}/{list_name}", params={"cursor": cursor})
    _assert_invalid(answer, "cursor")


@pytest.mark.parametrize("cursor", ["", "%%%", _b64({"v": 1, "l": "websites", "t": 0, "k": "x"})])
def test_a_bad_cursor_on_the_monitor_list_is_422_naming_cursor(
    client: httpx.Client, cursor: str
) -> None:
    _assert_invalid(client.get("/websites", params={"cursor": cursor, "limit": 1}), "cursor")


def test_a_cursor_used_on_another_list_is_422_naming_cursor(
    api: ApiServer, client: httpx.Client
) -> None:
    website = _history(api, client, [BASE, BASE - timedelta(minutes=1)])
    _create(client)
    path = f"/websites/{website['id']}"
    cursors = {
        name: _data(client.get(f"{path}/{name}", params={"limit": 1}))["next_cursor"]
        for name in LISTS
    }
    cursors["websites"] = _data(client.get("/websites", params={"limit": 1}))["next_cursor"]
    paths = {name: f"{path}/{name}" for name in LISTS} | {"websites": "/websites"}
    for issued, cursor in cursors.items():
        assert cursor is not None
        for used, used_path in paths.items():
            answer = client.get(used_path, params={"cursor": cursor, "limit": 1})
            if used == issued:
                assert answer.status_code == 200, answer.text
            else:
                _assert_invalid(answer, "cursor")


# --- what clients that know no cursor see ---------------------------------------------------


def test_without_a_cursor_the_lists_keep_their_default_limits_and_say_whether_more_follow(
    api: ApiServer, client: httpx.Client
) -> None:
    moments = [BASE - timedelta(minutes=n) for n in range(26)]
    website = _history(api, client, moments)  # 78 checks, 53 incidents, 52 notifications
    path = f"/websites/{website['id']}"
    checks = _data(client.get(f"{path}/checks"))
    incidents = _data(client.get(f"{path}/incidents"))
    notifications = _data(client.get(f"{path}/notifications"))
    assert (len(checks["checks"]), len(incidents["incidents"])) == (20, 50)
    assert len(notifications["notifications"]) == 50
    assert None not in {d["next_cursor"] for d in (checks, incidents, notifications)}
    everything = _data(client.get(f"{path}/notifications", params={"limit": 52}))
    assert (len(everything["notifications"]), everything["next_cursor"]) == (52, None)


@pytest.mark.parametrize(
    ("list_name", "too_many"), [("checks", 101), ("incidents", 501), ("notifications", 501)]
)
def test_the_maximum_limits_are_unchanged(
    client: httpx.Client, list_name: str, too_many: int
) -> None:
    website = _create(client)
    path = f"/websites/{website['id']}/{list_name}"
    _assert_invalid(client.get(path, params={"limit": too_many}), "limit")
    assert _data(client.get(path, params={"limit": too_many - 1}))[list_name] == []


# --- the monitor list -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def monitors(api: ApiServer) -> Iterator[tuple[httpx.Client, list[str]]]:
    """An account with seven monitors, four of them added at the same moment; their ids in
    the list's order (time_added, then id)."""
    _, token, _ = api.new_user()
    with api.client(token) as owner:
        yield owner, _seven_monitors(api, owner)


def _seven_monitors(api: ApiServer, owner: httpx.Client) -> list[str]:
    ids = [_create(owner)["id"] for _ in range(7)]
    tied = datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)
    for n, website_id in enumerate(ids):
        moment = tied if n < 4 else tied + timedelta(microseconds=n)
        rows.set_website_state(api, website_id, time_added=moment)
    tie = sorted(ids[:4], key=lambda i: uuid.UUID(i).hex)
    return tie + ids[4:]


def test_walking_the_monitor_list_with_the_cursor_shows_each_once_oldest_first(
    monitors: tuple[httpx.Client, list[str]],
) -> None:
    owner, ordered = monitors
    for limit in (1, 2, 3, 7):
        assert [w["id"] for w in _walk(owner, "/websites", "websites", limit)] == ordered


def test_the_monitor_list_without_a_limit_is_all_of_it_and_offset_works_as_before(
    monitors: tuple[httpx.Client, list[str]],
) -> None:
    owner, ordered = monitors
    everything = _data(owner.get("/websites"))
    assert ([w["id"] for w in everything["websites"]], everything["next_cursor"]) == (ordered, None)
    offset = _data(owner.get("/websites", params={"offset": 2, "limit": 3}))
    assert [w["id"] for w in offset["websites"]] == ordered[2:5]
    after_offset = _data(owner.get("/websites", params={"cursor": offset["next_cursor"]}))
    assert ([w["id"] for w in after_offset["websites"]], after_offset["next_cursor"]) == (
        ordered[5:],
        None,
    )
    assert [w["id"] for w in _data(owner.get("/websites", params={"offset": 5}))["websites"]] == (
        ordered[5:]
    )
    last = _data(owner.get("/websites", params={"offset": 4, "limit": 3}))
    assert last["next_cursor"] is None


def test_a_cursor_with_an_offset_is_422_naming_cursor(
    monitors: tuple[httpx.Client, list[str]],
) -> None:
    owner, _ = monitors
    cursor = _data(owner.get("/websites", params={"limit": 1}))["next_cursor"]
    _assert_invalid(owner.get("/websites", params={"cursor": cursor, "offset": 1}), "cursor")
    assert _data(owner.get("/websites", params={"cursor": cursor, "offset": 0}))["websites"]


# --- pause periods --------------------------------------------------------------------------


def test_a_monitor_created_paused_opens_a_pause_at_its_creation(
    api: ApiServer, client: httpx.Client
) -> None:
    website = _create(client, paused=True)
    [pause] = _pauses(api, website["id"])
    assert (pause.paused_at, pause.resumed_at) == (_at(website["time_added"]), None)
    assert _pauses(api, _create(client)["id"]) == []


def test_pausing_opens_a_period_and_resuming_closes_it(
    api: ApiServer, client: httpx.Client
) -> None:
    website = _create(client)
    path = f"/websites/{website['id']}"

    def patch(**body: Any) -> None:
        assert client.patch(path, json=body).status_code == 200

    patch(paused=True)
    patch(paused=True, name="still paused")  # no change of state, no new period
    [opened] = _pauses(api, website["id"])
    assert opened.resumed_at is None
    patch(paused=False)
    patch(paused=False)
    patch(name="running")
    [closed] = _pauses(api, website["id"])
    assert closed.resumed_at is not None
    assert closed.resumed_at >= closed.paused_at
    patch(paused=True)
    first, second = _pauses(api, website["id"])
    assert first.resumed_at == closed.resumed_at
    assert second.resumed_at is None
    assert second.paused_at >= first.resumed_at
    assert _data(client.get(path))["paused"] is True
