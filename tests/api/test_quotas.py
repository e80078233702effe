"""Quotas per account (MAX_MONITORS_PER_USER, MAX_CHANNELS_PER_USER): one more is a 403
whose error names the setting; ADMIN accounts are exempt; requests racing for the last free
place never get past it. Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.api.conftest import serve_on
from tests.api.server import ApiServer

MAX_MONITORS = 3
MAX_CHANNELS = 2
RACERS = 12


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def quota_api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    with serve_on(
        request,
        tmp_path_factory,
        request.param,
        MAX_MONITORS_PER_USER=MAX_MONITORS,
        MAX_CHANNELS_PER_USER=MAX_CHANNELS,
    ) as server:
        yield server


def _monitor() -> dict[str, Any]:
    return {"url": f"http://93.184.215.14/{uuid.uuid4().hex}"}


def _channel() -> dict[str, Any]:
    return {"type": "email", "target": f"oncall-{uuid.uuid4().hex[:10]}@example.com"}


RESOURCES: dict[str, tuple[str, Callable[[], dict[str, Any]], int, str]] = {
    "monitors": ("/websites", _monitor, MAX_MONITORS, "MAX_MONITORS_PER_USER"),
    "channels": ("/channels", _channel, MAX_CHANNELS, "MAX_CHANNELS_PER_USER"),
}


def _count(client: httpx.Client, kind: str) -> int:
    path = RESOURCES[kind][0]
    answer = client.get(path)
    assert answer.status_code == 200, answer.text
    return len(answer.json()["data"]["websites" if kind == "monitors" else "channels"])


def _assert_quota_refusal(answer: httpx.Response, kind: str) -> None:
    _, _, limit, setting = RESOURCES[kind]
    assert answer.status_code == 403, answer.text
    body = answer.json()
    assert body["success"] is False
    assert body["data"] is None
    assert setting in body["error"]
    assert f"{limit} {kind}" in body["error"]


@pytest.mark.parametrize("kind", RESOURCES)
def test_one_more_than_the_quota_is_403_naming_the_setting(quota_api: ApiServer, kind: str) -> None:
    path, body, limit, _ = RESOURCES[kind]
    _, token, _ = quota_api.new_user()
    with quota_api.client(token) as client:
        created = []
        for _ in range(limit):
            answer = client.post(path, json=body())
            assert answer.status_code == 201, answer.text
            created.append(answer.json()["data"]["id"])
        _assert_quota_refusal(client.post(path, json=body()), kind)
        assert _count(client, kind) == limit
        # Deleting one makes room for one.
        assert client.delete(f"{path}/{created[0]}").status_code == 200
        assert client.post(path, json=body()).status_code == 201
        _assert_quota_refusal(client.post(path, json=body()), kind)


@pytest.mark.parametrize("kind", RESOURCES)
def test_the_quota_is_per_account(quota_api: ApiServer, kind: str) -> None:
    path, body, limit, _ = RESOURCES[kind]
    _, full, _ = quota_api.new_user()
    _, other, _ = quota_api.new_user()
    with quota_api.client(full) as client:
        for _ in range(limit):
            assert client.post(path, json=body()).status_code == 201
        _assert_quota_refusal(client.post(path, json=body()), kind)
    with quota_api.client(other) as client:
        assert client.post(path, json=body()).status_code == 201


@pytest.mark.parametrize("kind", RESOURCES)
def test_an_admin_is_exempt_from_the_quota(quota_api: ApiServer, kind: str) -> None:
    path, body, limit, _ = RESOURCES[kind]
    with quota_api.client(quota_api.admin_token()) as admin:
        before = _count(admin, kind) if kind == "channels" else None
        for _ in range(limit + 2):
            answer = admin.post(path, json=body())
            assert answer.status_code == 201, answer.text
        if before is not None:
            assert _count(admin, kind) == before + limit + 2


@pytest.mark.parametrize("kind", RESOURCES)
def test_concurrent_creates_never_get_past_the_quota(quota_api: ApiServer, kind: str) -> None:
    path, body, limit, _ = RESOURCES[kind]
    _, token, _ = quota_api.new_user()
    start = threading.Barrier(RACERS)

    def create(_: int) -> httpx.Response:
        with quota_api.client(token) as client:
            start.wait()
            return client.post(path, json=body())

    with ThreadPoolExecutor(RACERS) as pool:
        answers = list(pool.map(create, range(RACERS)))
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [201] * limit + [403] * (RACERS - limit), [a.text for a in answers]
    for answer in answers:
        if answer.status_code == 403:
            _assert_quota_refusal(answer, kind)
    with quota_api.client(token) as client:
        assert _count(client, kind) == limit
