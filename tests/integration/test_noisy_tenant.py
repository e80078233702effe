"""A noisy tenant cannot hold up anyone else's alerts, on the whole system run both ways
(embedded and distributed): user A's webhook answers 503 with `Retry-After: 300` to 8 DOWN
alerts, and user B's DOWN alert still arrives within 5 s of B's incident. A's alerts are not
dropped: each waits for its due time, about 300 s ahead, recorded on its row."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import asyncpg
import pytest
from aiohttp import web

from tests.integration.conftest import StartDistributed
from tests.integration.harness import (
    Cluster,
    LoopThread,
    System,
    Target,
    WebhookReceiver,
    start_embedded,
)

ALERTS_OF_A = 8
# A small worker, as an operator of a small instance runs it: 8 alerts in hand at once.
SETTINGS = {"NOTIFY_RETRY_MAX_SECONDS": "300", "NOTIFICATION_CONCURRENCY": "8"}


class BusyReceiver(WebhookReceiver):
    """The harness's receiver, whose 503 answers carry `Retry-After: 300`, and which notes
    when each request arrived."""

    def __init__(self, loop: LoopThread) -> None:
        self.arrived: dict[str, list[float]] = {}
        super().__init__(loop)

    async def _handle(self, request: web.Request) -> web.Response:
        self.arrived.setdefault(request.match_info["name"], []).append(time.monotonic())
        response = await super()._handle(request)
        if response.status == 503:
            response.headers["Retry-After"] = "300"
        return response


@pytest.fixture
def busy_receiver(loop_thread: LoopThread) -> Iterator[BusyReceiver]:
    hooks = BusyReceiver(loop_thread)
    yield hooks
    hooks.stop_listening()


@pytest.fixture(params=["embedded", "distributed"])
def system(request: pytest.FixtureRequest, cluster: Cluster) -> Iterator[System]:
    if request.param == "distributed":
        start_system: StartDistributed = request.getfixturevalue("start_system")
        yield start_system(**SETTINGS)
        return
    cluster.env.update(SETTINGS)
    started = start_embedded(cluster)
    yield started
    started.close()


def due_times(system: System, recipient: str) -> list[tuple[str, int, datetime | None]]:
    """(status, attempts, next_attempt_at) of every delivery to ``recipient``, read from the
    database itself (the API does not show due times)."""
    query = (
        "SELECT delivery_status, attempts, next_attempt_at FROM notification_logs "
        "WHERE recipient = %s"
    )
    if system.mode == "distributed":
        url = system.env["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")

        async def read() -> list[tuple[str, int, datetime | None]]:
            connection = await asyncpg.connect(url)
            try:
                rows = await connection.fetch(query.replace("%s", "$1"), recipient)
            finally:
                await connection.close()
            return [(row[0], row[1], row[2]) for row in rows]

        return asyncio.run(read())
    path = f"{system.env['RUNSTATE_DATA_DIR']}/runstate.db"
    with sqlite3.connect(path) as connection:
        rows = connection.execute(query.replace("%s", "?"), (recipient,)).fetchall()
    return [
        (status, attempts, datetime.fromisoformat(at).replace(tzinfo=UTC) if at else None)
        for status, attempts, at in rows
    ]


def test_a_webhook_asking_to_retry_in_300_s_never_delays_another_users_alert(
    system: System, busy_receiver: BusyReceiver, loop_thread: LoopThread
) -> None:
    site_of_a, site_of_b = Target(loop_thread), Target(loop_thread)
    try:
        a, b = system.user(), system.user()
        busy = busy_receiver.hook("busy", status=503)
        a.add_webhook(busy, notify_on="DOWN")
        quick = b.add_webhook(busy_receiver.hook("quick"), notify_on="DOWN")
        busy_receiver.secret("quick", quick["secret"])
        monitors_of_a = [
            a.add_monitor(f"{site_of_a.base_url}/page/{n}", f"A{n}")["id"]
            for n in range(ALERTS_OF_A)
        ]
        monitor_of_b = b.add_monitor(site_of_b.url, "B")["id"]
        for website_id in [*monitors_of_a, monitor_of_b]:
            system.wait_for(
                "the first checks",
                lambda w=website_id: (a if w != monitor_of_b else b).website(w)["current_status"],
                timeout=30,
            )

        site_of_a.healthy = False
        system.wait_for(
            "A's 8 alerts to be tried and refused",
            lambda: (
                len(busy_receiver.arrived.get("busy", [])) >= 1
                and sum(1 for s, _, _ in due_times(system, busy) if s in ("pending", "failed"))
                == ALERTS_OF_A
            ),
            timeout=30,
        )

        site_of_b.healthy = False
        system.wait_for("B's incident", lambda: b.incidents(monitor_of_b), timeout=20)
        opened = time.monotonic()
        [alert] = system.wait_for(
            "B's DOWN alert", lambda: busy_receiver.of("quick", "DOWN"), timeout=20
        )
        arrived = busy_receiver.arrived["quick"][0]
        assert arrived - opened <= 5.0, f"B's alert came {arrived - opened:.1f} s after"
        assert alert.verified
        assert alert.payload["website"]["id"] == monitor_of_b

        # A's alerts are kept, each due again about 300 s after A's receiver said so.
        rows = due_times(system, busy)
        assert len(rows) == ALERTS_OF_A
        now = datetime.now(UTC)
        for status, attempts, next_attempt_at in rows:
            assert status in ("pending", "failed")
            assert attempts <= 1
            assert next_attempt_at is not None
            assert 250 <= (next_attempt_at - now).total_seconds() <= 300
        # Held for its channel: A's receiver was not called again meanwhile.
        assert len(busy_receiver.arrived["busy"]) <= 4  # NOTIFY_MAX_PER_CHANNEL at once
    finally:
        site_of_a.stop_listening()
        site_of_b.stop_listening()
