"""Outages of runstate's own dependencies lose no alert (issue 10): the database or Redis
gone for longer than MAX_DELIVERIES x RECLAIM_IDLE_SECONDS while a target goes down, and
still exactly one incident, one DOWN alert per channel and, once the target recovers, one
RECOVERY alert.

The servers that go away are the test's own (`private_services`), never the machine's
shared ones. To make sure a status change is *in hand* when its dependency goes, the test
holds the `incidents` table locked (a PostgreSQL session of its own): the status-change
worker's transaction waits on it, and the outage begins under it.

In embedded mode (`runstate up` on SQLite) the outage is a SQLite file that cannot be
written: the test holds an exclusive lock on it (`BEGIN EXCLUSIVE`; permission bits do not
stop root), so every writer fails with "database is locked" after its busy timeout.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.integration.harness import (
    Cluster,
    LoopThread,
    Received,
    System,
    Target,
    User,
    WebhookReceiver,
    start_distributed,
    start_embedded,
    stay_true,
)
from tests.integration.private_services import PrivatePostgres, PrivateRedis

# Small, so that an outage of ~15 s outlasts MAX_DELIVERIES x RECLAIM_IDLE_SECONDS by far.
OUTAGE_TIMINGS = {
    "MAX_DELIVERIES": "2",
    "RECLAIM_IDLE_SECONDS": "2",
    "OUTAGE_RETRY_MAX_SECONDS": "1",
}
OUTAGE_SECONDS = 15.0


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def systems(cluster: Cluster) -> Iterator[list[System]]:
    started: list[System] = []
    yield started
    cluster.kill_all()  # before the servers are stopped
    for system in started:
        system.close()
        if system.redis is not None:
            system.redis.close()


class TableLock:
    """A PostgreSQL session of the test's own holding a table in EXCLUSIVE mode: reads go
    on, writes to the table wait until ``release`` (or until the session is cut)."""

    def __init__(self, loop: LoopThread, database_url: str, table: str) -> None:
        self._loop = loop
        self._connection: asyncpg.Connection = loop.run(asyncpg.connect(database_url))
        loop.run(self._connection.execute("BEGIN"))
        loop.run(self._connection.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE"))

    def release(self) -> None:
        with contextlib.suppress(Exception):  # cut by a stopped server: released anyway
            self._loop.run(self._connection.execute("COMMIT"))
        with contextlib.suppress(Exception):
            self._loop.run(self._connection.close(timeout=5))


def monitor_that_is_up(system: System, user: User, target: Target) -> str:
    website_id: str = user.add_monitor(target.url, f"Site {system.cluster.label}")["id"]
    system.wait_for(
        "the monitor's first check", lambda: user.website(website_id)["current_status"], timeout=30
    )
    assert user.website(website_id)["current_status"] == "up"
    return website_id


def webhook(user: User, receiver: WebhookReceiver, name: str) -> None:
    channel = user.add_webhook(receiver.hook(name), notify_on="BOTH")
    receiver.secret(name, channel["secret"])


def alerts(receiver: WebhookReceiver, name: str, event: str) -> list[Received]:
    return receiver.of(name, event)


def status_change_in_hand(system: System) -> bool:
    """A status change read by a status-change worker and not yet acknowledged."""
    assert system.redis is not None
    stream, group = system.env["STATUS_CHANGE_STREAM"], system.env["STATUS_CHANGE_GROUP"]
    groups = system.redis.xinfo_groups(stream)
    return any(g["name"].decode() == group and int(g["pending"]) > 0 for g in groups)


def dead_letters(system: System) -> dict[str, list[Any]]:
    assert system.redis is not None
    streams = ("MONITORING_STREAM", "STATUS_CHANGE_STREAM", "NOTIFICATION_STREAM")
    found = {s: system.redis.xrange(f"{system.env[s]}:dlq") for s in streams}
    return {s: letters for s, letters in found.items() if letters}


def expect_one_outage_alerted_then_recovered(
    system: System, user: User, website_id: str, target: Target, receiver: WebhookReceiver
) -> None:
    """After the outage: exactly one incident and one DOWN alert (which stay one), then,
    once the target is healthy again, one RECOVERY alert and the incident resolved."""
    [down] = system.wait_for("the DOWN alert", lambda: alerts(receiver, "ops", "DOWN"), timeout=60)
    assert down.verified
    assert down.payload["website"]["id"] == website_id
    system.wait_for("the incident", lambda: user.incidents(website_id), timeout=20)
    stay_true(
        "exactly one incident and one DOWN alert",
        lambda: len(alerts(receiver, "ops", "DOWN")) == 1 and len(user.incidents(website_id)) == 1,
        seconds=4,
        guard=system.cluster.check_alive,
    )
    target.healthy = True
    [recovery] = system.wait_for(
        "the RECOVERY alert", lambda: alerts(receiver, "ops", "RECOVERY"), timeout=30
    )
    assert recovery.payload["incident_id"] == down.payload["incident_id"]
    [incident] = user.incidents(website_id)
    assert incident["is_active"] is False
    stay_true(
        "one alert of each kind",
        lambda: len(receiver.of("ops")) == 2,
        seconds=3,
        guard=system.cluster.check_alive,
    )


# --- distributed: PostgreSQL goes away ---------------------------------------------------


def test_a_postgres_outage_longer_than_max_deliveries_loses_no_alert(
    cluster: Cluster,
    systems: list[System],
    private_postgres: PrivatePostgres,
    integration_redis_url: str,
    loop_thread: LoopThread,
    target: Target,
    receiver: WebhookReceiver,
) -> None:
    cluster.env.update(OUTAGE_TIMINGS)
    system = start_distributed(cluster, private_postgres.url, integration_redis_url)
    systems.append(system)
    user = system.user()
    webhook(user, receiver, "ops")
    website_id = monitor_that_is_up(system, user, target)

    lock = TableLock(loop_thread, private_postgres.url, "incidents")
    try:
        target.healthy = False
        system.wait_for(
            "the DOWN change in hand", lambda: status_change_in_hand(system), timeout=30
        )
        private_postgres.stop()  # cuts the lock's session and the worker's alike
    finally:
        lock.release()
    time.sleep(OUTAGE_SECONDS)
    system.cluster.check_alive()
    private_postgres.start()

    expect_one_outage_alerted_then_recovered(system, user, website_id, target, receiver)
    assert dead_letters(system) == {}
    waited = system.cluster.proc("worker-status-change").logged(
        "dependency unavailable; retrying in place until it is back"
    )
    assert waited, system.cluster.proc("worker-status-change").tail()


# --- distributed: Redis restarts empty -----------------------------------------------------


def test_a_redis_restart_that_loses_everything_loses_no_alert(
    cluster: Cluster,
    systems: list[System],
    scratch_database: str,
    private_redis: PrivateRedis,
    loop_thread: LoopThread,
    target: Target,
    receiver: WebhookReceiver,
) -> None:
    """The status change is recorded in the database while Redis is gone: its alert waits
    in the worker until Redis is back (empty), instead of being lost with the stream."""
    cluster.env.update(OUTAGE_TIMINGS)
    system = start_distributed(cluster, scratch_database, private_redis.url)
    systems.append(system)
    user = system.user()
    webhook(user, receiver, "ops")
    website_id = monitor_that_is_up(system, user, target)

    lock = TableLock(loop_thread, scratch_database, "incidents")
    try:
        target.healthy = False
        system.wait_for(
            "the DOWN change in hand", lambda: status_change_in_hand(system), timeout=30
        )
        private_redis.stop()
    finally:
        lock.release()  # the incident is recorded now; its alert has nowhere to go yet
    time.sleep(OUTAGE_SECONDS / 2)
    system.cluster.check_alive()
    private_redis.start()

    expect_one_outage_alerted_then_recovered(system, user, website_id, target, receiver)
    assert dead_letters(system) == {}


# --- embedded: the SQLite file cannot be written --------------------------------------------


def test_a_sqlite_file_that_cannot_be_written_for_a_while_loses_no_alert(
    cluster: Cluster, systems: list[System], target: Target, receiver: WebhookReceiver
) -> None:
    # One delivery only: before, a single failed write of a check result dead-lettered it
    # on redelivery and kept its monitor from being checked for minutes.
    cluster.env.update({**OUTAGE_TIMINGS, "MAX_DELIVERIES": "1"})
    system = start_embedded(cluster)
    systems.append(system)
    user = system.user()
    webhook(user, receiver, "ops")
    website_id = monitor_that_is_up(system, user, target)

    database = Path(cluster.env["RUNSTATE_DATA_DIR"]) / "runstate.db"
    holder = sqlite3.connect(database, isolation_level=None, timeout=30)
    try:
        holder.execute("BEGIN EXCLUSIVE")  # every writer now fails: "database is locked"
        target.healthy = False
        # Longer than a writer's busy timeout (10 s) plus a reclaim: writes fail meanwhile.
        time.sleep(OUTAGE_SECONDS)
        system.cluster.check_alive()
    finally:
        holder.rollback()
        holder.close()

    expect_one_outage_alerted_then_recovered(system, user, website_id, target, receiver)
    waited = system.cluster.proc("up").logged(
        "dependency unavailable; retrying in place until it is back"
    )
    assert waited, system.cluster.proc("up").tail()
