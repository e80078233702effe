"""An account prepared through the JSON API, quickly: a monitor that was up and then went
down today (so its 90-day bar has a bad day), on a public status page with an incident.
The accessibility tests then look at the pages this account has."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from tests.api.server import PASSWORD
from tests.web.browser.harness import RunningSystem, Target

MONITOR_NAME = "Checkout API"


@dataclass(frozen=True)
class Account:
    email: str
    monitor_id: str
    slug: str


def _api(system: RunningSystem, email: str) -> httpx.Client:
    client = httpx.Client(base_url=f"{system.base_url}/api/v1", timeout=10)
    for path in ("/signup", "/signin"):
        answer = client.post(path, json={"email": email, "password": PASSWORD})
        assert answer.status_code in (200, 201), answer.text
    client.headers["authorization"] = f"Bearer {answer.json()['data']['access_token']}"
    return client


def _created(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code == 201, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


def _wait_for_status(client: httpx.Client, monitor_id: str, status: str) -> None:
    """Poll the API until the pipeline has found the monitor ``status`` (30 s at most)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = client.get(f"/websites/{monitor_id}").json()["data"]["current_status"]
        if found == status:
            return
        time.sleep(0.2)
    raise AssertionError(f"the monitor was not found {status} within 30 s")


def prepare_account(system: RunningSystem, target: Target) -> Account:
    """The account, once its monitor has been seen up and then down."""
    email = f"a11y-{uuid.uuid4().hex[:10]}@example.com"
    client = _api(system, email)
    try:
        monitor = _created(
            client.post(
                "/websites",
                json={
                    "url": target.url,
                    "name": MONITOR_NAME,
                    "interval_seconds": 1,
                    "timeout_ms": 1000,
                },
            )
        )
        _wait_for_status(client, monitor["id"], "up")
        target.stop()
        _wait_for_status(client, monitor["id"], "down")
        slug = f"a11y-{uuid.uuid4().hex[:8]}"
        page = _created(
            client.post(
                "/status-pages",
                json={
                    "slug": slug,
                    "title": "Checkout status",
                    "description": "Payments and checkout.",
                    "groups": [{"name": "Payments", "website_ids": [monitor["id"]]}],
                },
            )
        )
        _created(
            client.post(
                f"/status-pages/{page['id']}/incidents",
                json={
                    "title": "Payments failing",
                    "impact": "major",
                    "status": "identified",
                    "body": "Card payments fail; a fix is being deployed.",
                },
            )
        )
    finally:
        client.close()
    return Account(email, monitor["id"], slug)
