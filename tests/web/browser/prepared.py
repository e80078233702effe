"""Accounts prepared through the JSON API, quickly, for the tests that look at pages rather
than at how they were made: monitors of loopback sites, public status pages, incidents."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from tests.api.server import PASSWORD
from tests.web.browser.harness import RunningSystem, Target

MONITOR_NAME = "Checkout API"
PIPELINE_WAIT_SECONDS = 30


def _created(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code == 201, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


class Api:
    """A new user of the JSON API (signed up and signed in)."""

    def __init__(self, system: RunningSystem) -> None:
        self.email = f"user-{uuid.uuid4().hex[:10]}@example.com"
        self.client = httpx.Client(base_url=f"{system.base_url}/api/v1", timeout=10)
        for path in ("/signup", "/signin"):
            answer = self.client.post(path, json={"email": self.email, "password": PASSWORD})
            assert answer.status_code in (200, 201), answer.text
        token = answer.json()["data"]["access_token"]
        self.client.headers["authorization"] = f"Bearer {token}"

    def close(self) -> None:
        self.client.close()

    def add_monitor(self, target: Target, name: str) -> str:
        """A monitor of ``target`` checked every second; its id."""
        body = {"url": target.url, "name": name, "interval_seconds": 1, "timeout_ms": 1000}
        return str(_created(self.client.post("/websites", json=body))["id"])

    def add_page(self, slug: str, title: str, group: str, monitor_id: str) -> str:
        groups = [{"name": group, "website_ids": [monitor_id]}]
        body = {"slug": slug, "title": title, "description": f"{title}.", "groups": groups}
        return str(_created(self.client.post("/status-pages", json=body))["id"])

    def post_incident(self, page_id: str, title: str, body: str) -> None:
        incident = {"title": title, "impact": "major", "status": "identified", "body": body}
        _created(self.client.post(f"/status-pages/{page_id}/incidents", json=incident))

    def monitor(self, monitor_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self.client.get(f"/websites/{monitor_id}").json()["data"]
        return data

    def todays_downtime(self, monitor_id: str) -> int:
        days = self.client.get(f"/websites/{monitor_id}/daily", params={"days": 1}).json()
        return int(days["data"]["days"][-1]["downtime_seconds"])

    def wait_until(self, what: str, condition: Callable[[], bool]) -> None:
        """Poll the API until ``condition`` holds: the pipeline's pace, not a guess at it."""
        deadline = time.monotonic() + PIPELINE_WAIT_SECONDS
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {PIPELINE_WAIT_SECONDS} s")
            time.sleep(0.1)

    def wait_for_status(self, monitor_id: str, status: str) -> None:
        self.wait_until(
            f"the monitor found {status}",
            lambda: self.monitor(monitor_id)["current_status"] == status,
        )


@dataclass(frozen=True)
class Account:
    email: str
    monitor_id: str
    slug: str


def prepare_account(system: RunningSystem, target: Target) -> Account:
    """An account whose monitor was up today, then went down and has been down for some
    seconds (so today has downtime to show), on a public status page with an incident."""
    api = Api(system)
    try:
        monitor_id = api.add_monitor(target, MONITOR_NAME)
        api.wait_for_status(monitor_id, "up")
        target.stop()
        api.wait_for_status(monitor_id, "down")
        api.wait_until("two seconds of downtime", lambda: api.todays_downtime(monitor_id) >= 2)
        slug = f"a11y-{uuid.uuid4().hex[:8]}"
        page_id = api.add_page(slug, "Checkout status", "Payments", monitor_id)
        api.post_incident(page_id, "Payments failing", "Card payments fail; a fix is deployed.")
    finally:
        api.close()
    return Account(api.email, monitor_id, slug)
