"""A real API server on SQLite and on PostgreSQL whose status pages are revalidated every
REVALIDATE seconds (short, so that the tests can watch a rendered page expire), and an
account that owns monitors and pages on it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from tests.api.conftest import serve_on
from tests.api.server import ApiServer

REVALIDATE = 1.5


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def status_api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    with serve_on(
        request, tmp_path_factory, request.param, STATUS_PAGE_REVALIDATE_SECONDS=REVALIDATE
    ) as server:
        yield server


class Owner:
    """A signed-in account: its monitors and pages through the API."""

    def __init__(self, api: ApiServer, token: str) -> None:
        self.api = api
        self.client = api.client(token)

    def monitor(self, name: str, **values: Any) -> str:
        url = f"https://{uuid.uuid4().hex[:10]}.example.com/"
        answer = self.client.post("/websites", json={"url": url, "name": name, **values})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["data"]["id"])

    def page(self, groups: list[tuple[str, list[str]]], **body: Any) -> dict[str, Any]:
        body.setdefault("slug", f"page-{uuid.uuid4().hex[:10]}")
        body.setdefault("title", "Acme status")
        body["groups"] = [{"name": name, "website_ids": ids} for name, ids in groups]
        answer = self.client.post("/status-pages", json=body)
        assert answer.status_code == 201, answer.text
        return dict(answer.json()["data"])

    def edit(self, page_id: str, **body: Any) -> None:
        answer = self.client.patch(f"/status-pages/{page_id}", json=body)
        assert answer.status_code == 200, answer.text

    def incident(self, page_id: str, **body: Any) -> dict[str, Any]:
        answer = self.client.post(f"/status-pages/{page_id}/incidents", json=body)
        assert answer.status_code == 201, answer.text
        return dict(answer.json()["data"])

    def update(self, page_id: str, incident_id: str, status: str, body: str) -> None:
        answer = self.client.post(
            f"/status-pages/{page_id}/incidents/{incident_id}/updates",
            json={"status": status, "body": body},
        )
        assert answer.status_code == 201, answer.text


@pytest.fixture
def owner(status_api: ApiServer) -> Iterator[Owner]:
    _, token, _ = status_api.new_user()
    account = Owner(status_api, token)
    yield account
    account.client.close()


@pytest.fixture
def public(status_api: ApiServer) -> Iterator[httpx.Client]:
    """A visitor: no token, the site's root as base URL."""
    with httpx.Client(base_url=status_api.base_url, timeout=30) as client:
        yield client


class StatementCounter:
    """Counts the SQL statements any engine of this process runs (the server runs in it)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, *_: Any) -> None:
        self.count += 1


@pytest.fixture
def statements() -> Iterator[StatementCounter]:
    counter = StatementCounter()
    event.listen(Engine, "before_cursor_execute", counter)
    yield counter
    event.remove(Engine, "before_cursor_execute", counter)


def wait_for_revalidation() -> None:
    time.sleep(REVALIDATE + 0.2)


def day_start(days_ago: int) -> datetime:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days_ago)
