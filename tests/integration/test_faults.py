"""The distributed system under the failures docs/architecture.md promises to survive
("What happens when…"): processes killed with SIGKILL mid-work, Redis losing everything,
PostgreSQL restarting, receivers that fail, two schedulers, an SMTP server that is gone —
and an API whose port is taken at start-up.

Every distributed test runs its own processes on a scratch database, with its own stream
names."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import StartDistributed
from tests.integration.harness import (
    NOTIFY_MAX_ATTEMPTS,
    SCHEDULER_LEASE_SECONDS,
    Cluster,
    Proc,
    Received,
    System,
    Target,
    User,
    WebhookReceiver,
    closed_port,
    metric,
    start_worker,
    stay_true,
    wait_for,
)


def checks_since(user: User, website_id: str, since: datetime) -> list[dict[str, Any]]:
    """The monitor's check rows recorded after ``since``."""
    return [
        check
        for check in user.checks(website_id)
        if datetime.fromisoformat(check["created_at"]) > since
    ]


def settled(user: User, website_id: str, count: int) -> list[dict[str, Any]] | None:
    """The monitor's notification rows once there are ``count``, all sent or dead."""
    rows = user.notifications(website_id)
    final = len(rows) == count and all(n["delivery_status"] in ("sent", "dead") for n in rows)
    return rows if final else None


def monitor_that_is_up(system: System, user: User, target: Target, **fields: Any) -> str:
    """A new monitor of ``target`` (1 s interval), once its first check shows it up."""
    website_id: str = user.add_monitor(target.url, f"Site {system.cluster.label}", **fields)["id"]
    system.wait_for(
        "the monitor's first check", lambda: user.website(website_id)["current_status"], timeout=20
    )
    assert user.website(website_id)["current_status"] == "up"
    return website_id


def consumer_of(system: System, proc: Proc, stream: str, group: str) -> dict[str, Any] | None:
    """The consumer (XINFO CONSUMERS) that ``proc`` reads ``stream`` with, if it has one."""
    assert system.redis is not None
    for consumer in system.redis.xinfo_consumers(stream, group):
        name = consumer["name"].decode()
        if f"-{proc.pid}-" in name:
            return {**consumer, "name": name}
    return None


def pending_ids(system: System, stream: str, group: str, consumer: str | None = None) -> set[str]:
    assert system.redis is not None
    entries = system.redis.xpending_range(
        stream, group, min="-", max="+", count=1000, consumername=consumer
    )
    return {entry["message_id"].decode() for entry in entries}


def group_pending(system: System, stream: str, group: str) -> int:
    assert system.redis is not None
    for info in system.redis.xinfo_groups(stream):
        if info["name"].decode() == group:
            return int(info["pending"])
    raise AssertionError(f"no group {group} on {stream}")


# --- a monitoring worker killed mid-batch -------------------------------------------------


def test_a_monitoring_worker_killed_mid_batch_loses_no_check(
    distributed: System, target: Target
) -> None:
    system, user = distributed, distributed.user()
    stream, group = system.env["MONITORING_STREAM"], system.env["MONITORING_GROUP"]
    target.delay = 1.5  # checks stay in flight for 1.5 s (within their 2 s timeout)
    website_id = monitor_that_is_up(system, user, target, interval_seconds=2, timeout_ms=2000)
    worker = system.cluster.proc("worker-monitoring")

    def in_flight() -> tuple[str, set[str]] | None:
        consumer = consumer_of(system, worker, stream, group)
        if consumer is None:
            return None
        ids = pending_ids(system, stream, group, consumer["name"])
        return (consumer["name"], ids) if ids else None

    dead_consumer, orphaned = system.wait_for("a check in flight", in_flight, timeout=10)
    worker.kill9()
    killed_at = datetime.now(UTC)

    replacement = start_worker(system, "worker-monitoring-2", "monitoring")
    system.wait_for(
        "the dead worker's entries to be reclaimed",
        lambda: not pending_ids(system, stream, group, dead_consumer),
        timeout=15,
    )
    system.wait_for(
        "the orphaned checks to be done and acknowledged",
        lambda: not orphaned & pending_ids(system, stream, group),
        timeout=15,
    )
    reclaimed = sum(entry["count"] for entry in replacement.logged("reclaimed idle entries"))
    assert reclaimed >= len(orphaned), replacement.tail()
    # The monitor stays marked pending until its orphaned check is done, so the scheduler
    # enqueues nothing new for it before: rows after the kill start with that very check.
    system.wait_for(
        "three checks recorded after the kill",
        lambda: len(checks_since(user, website_id, killed_at)) >= 3,
        timeout=20,
    )

    target.delay = 0.0  # fast checks: the group drains between them
    system.wait_for(
        "nothing pending in the monitoring group",
        lambda: group_pending(system, stream, group) == 0,
        timeout=15,
    )
    assert user.incidents(website_id) == []
    assert user.website(website_id)["current_status"] == "up"


# --- a notification worker killed between sending and acknowledging -----------------------


def test_a_notification_worker_killed_before_settling_sends_again_with_the_same_webhook_id(
    distributed: System, target: Target, receiver: WebhookReceiver
) -> None:
    system, user = distributed, distributed.user()
    # The receiver records each request, then takes 3 s to answer 200: time to kill.
    channel = user.add_webhook(receiver.hook("slow", delay=3.0), notify_on="DOWN")
    receiver.secret("slow", channel["secret"])
    website_id = monitor_that_is_up(system, user, target)

    target.healthy = False
    [first] = system.wait_for("the DOWN webhook", lambda: receiver.of("slow"), timeout=20)
    system.cluster.proc("worker-notification").kill9()
    assert [n["delivery_status"] for n in user.notifications(website_id)] != ["sent"]

    start_worker(system, "worker-notification-2", "notification")
    system.wait_for(
        "the notification row to be sent",
        lambda: [n["delivery_status"] for n in user.notifications(website_id)] == ["sent"],
        timeout=30,
    )
    deliveries = receiver.of("slow")
    assert len(deliveries) == 2, deliveries
    assert {d.webhook_id for d in deliveries} == {first.webhook_id}
    assert all(d.verified for d in deliveries)
    assert all(d.payload == first.payload for d in deliveries)
    assert len(user.incidents(website_id)) == 1


# --- Redis loses everything ---------------------------------------------------------------


def test_every_process_survives_redis_losing_everything_and_work_resumes(
    distributed: System, target: Target, receiver: WebhookReceiver
) -> None:
    system, user = distributed, distributed.user()
    channel = user.add_webhook(receiver.hook("ops"), notify_on="DOWN")
    receiver.secret("ops", channel["secret"])
    website_id = monitor_that_is_up(system, user, target)
    assert system.redis is not None

    system.redis.flushdb()
    flushed_at = datetime.now(UTC)
    system.wait_for(
        "checks recorded again after the flush",
        lambda: len(checks_since(user, website_id, flushed_at)) >= 2,
        timeout=10,
    )
    # The stages after it work again too: an outage still becomes an incident and an alert.
    target.healthy = False
    system.wait_for("an incident", lambda: user.incidents(website_id), timeout=15)
    [alert] = system.wait_for("the DOWN webhook", lambda: receiver.of("ops", "DOWN"), timeout=15)
    assert alert.verified

    system.cluster.check_alive()
    for name in ("worker-monitoring", "worker-status-change", "worker-notification"):
        proc = system.cluster.proc(name)
        assert proc.logged("consumer group missing; recreating it"), proc.tail()
    monitoring = system.cluster.proc("worker-monitoring")
    # Once at the first check, once after the flush: the lost monitor state was rebuilt.
    assert len(monitoring.logged("monitor states rebuilt from the database")) >= 2


# --- PostgreSQL restarts ------------------------------------------------------------------


def _postgres_ready() -> bool:
    return subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"], check=False).returncode == 0


def _postgres_cluster() -> tuple[str, str]:
    """pg_ctlcluster and the version of the one local cluster; skipped (failed on CI) when
    PostgreSQL is not managed by this machine's pg_ctlcluster as root."""
    command = shutil.which("pg_ctlcluster")
    versions = sorted(p.name for p in Path("/etc/postgresql").glob("*")) if command else []
    problem = None
    if command is None:
        problem = "pg_ctlcluster is not installed: cannot restart PostgreSQL"
    elif len(versions) != 1:
        problem = f"expected one cluster version in /etc/postgresql, found {versions}"
    elif os.geteuid() != 0:
        problem = "restarting PostgreSQL with pg_ctlcluster needs root"
    if problem is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    assert command is not None
    return command, versions[0]


def test_every_process_survives_a_postgres_restart_and_work_resumes(
    distributed: System, target: Target, receiver: WebhookReceiver
) -> None:
    command, version = _postgres_cluster()
    system, user = distributed, distributed.user()
    channel = user.add_webhook(receiver.hook("ops"), notify_on="DOWN")
    receiver.secret("ops", channel["secret"])
    website_id = monitor_that_is_up(system, user, target)
    try:
        subprocess.run(
            [command, "--skip-systemctl-redirect", version, "main", "restart"],
            check=True,
            timeout=60,
            capture_output=True,
        )
        restarted_at = datetime.now(UTC)
        system.wait_for(
            "checks recorded after the restart",
            lambda: len(checks_since(user, website_id, restarted_at)) >= 3,
            timeout=30,
        )
    finally:
        if not _postgres_ready():
            subprocess.run(
                [command, "--skip-systemctl-redirect", version, "main", "start"],
                check=False,
                timeout=60,
                capture_output=True,
            )
        wait_for("PostgreSQL to accept connections", _postgres_ready, timeout=60, interval=0.5)
    ready = httpx.get(f"{system.base_url}/api/v1/health/ready", timeout=5)
    assert ready.status_code == 200, ready.text
    # Every stage reconnected: an outage still becomes one incident and one alert.
    target.healthy = False
    system.wait_for("an incident", lambda: user.incidents(website_id), timeout=15)
    [alert] = system.wait_for("the DOWN webhook", lambda: receiver.of("ops", "DOWN"), timeout=15)
    assert alert.verified
    assert len(user.incidents(website_id)) == 1
    system.cluster.check_alive()


# --- receivers that fail ------------------------------------------------------------------


def test_a_failing_webhook_is_dead_lettered_and_one_answering_410_is_disabled(
    distributed: System, target: Target, receiver: WebhookReceiver
) -> None:
    system, user = distributed, distributed.user()
    broken = user.add_webhook(receiver.hook("broken", status=500), notify_on="DOWN")
    gone = user.add_webhook(receiver.hook("gone", status=410), notify_on="DOWN")
    receiver.secret("broken", broken["secret"])
    receiver.secret("gone", gone["secret"])
    website_id = monitor_that_is_up(system, user, target)

    target.healthy = False
    rows = system.wait_for(
        "both deliveries to end dead", lambda: settled(user, website_id, 2), timeout=20
    )
    by_target = {n["recipient"]: n for n in rows}
    assert {n["delivery_status"] for n in rows} == {"dead"}, rows
    assert by_target[broken["target"]]["attempts"] == NOTIFY_MAX_ATTEMPTS
    assert "500" in by_target[broken["target"]]["error"]
    assert by_target[gone["target"]]["attempts"] == 1

    # Every attempt of the failing delivery carried the same webhook-id.
    attempts: list[Received] = receiver.of("broken")
    assert len(attempts) == NOTIFY_MAX_ATTEMPTS
    assert len({a.webhook_id for a in attempts}) == 1
    assert all(a.verified for a in attempts)
    assert len(receiver.of("gone")) == 1

    assert system.redis is not None
    dead_letters = {
        fields[b"channel_id"].decode(): {k.decode(): v.decode() for k, v in fields.items()}
        for _, fields in system.redis.xrange(f"{system.env['NOTIFICATION_STREAM']}:dlq")
    }
    assert set(dead_letters) == {broken["id"], gone["id"]}, dead_letters
    broken_letter = dead_letters[broken["id"]]
    assert broken_letter["event"] == "DOWN"
    assert broken_letter["website_id"] == website_id
    assert broken_letter["message_id"] == attempts[0].webhook_id
    assert f"gave up after {NOTIFY_MAX_ATTEMPTS} attempts" in broken_letter["dead_letter_reason"]
    assert "500" in broken_letter["dead_letter_reason"]
    assert "410" in dead_letters[gone["id"]]["dead_letter_reason"]

    exposed = system.cluster.proc("worker-notification").metrics()
    assert (metric(exposed, "runstate_alerts_total", outcome="dead") or 0) >= 1

    channels = {c["id"]: c for c in user.channels()}
    assert channels[gone["id"]]["enabled"] is False
    assert channels[gone["id"]]["disabled_reason"]
    assert channels[broken["id"]]["enabled"] is True


def test_an_unreachable_smtp_server_dead_letters_the_email_while_the_webhook_is_sent(
    start_system: StartDistributed, target: Target, receiver: WebhookReceiver
) -> None:
    system = start_system(SMTP_PORT=str(closed_port()))
    user = system.user()
    webhook = user.add_webhook(receiver.hook("ops"), notify_on="DOWN")
    receiver.secret("ops", webhook["secret"])
    user.add_email("ops@example.com", notify_on="DOWN")
    website_id = monitor_that_is_up(system, user, target)

    target.stop_listening()  # down: connections refused
    rows = system.wait_for(
        "both deliveries to settle", lambda: settled(user, website_id, 2), timeout=20
    )
    by_channel = {n["channel"]: n for n in rows}
    assert by_channel["webhook"]["delivery_status"] == "sent"
    assert by_channel["email"]["delivery_status"] == "dead"
    assert by_channel["email"]["attempts"] == NOTIFY_MAX_ATTEMPTS
    assert by_channel["email"]["error"]
    [incident] = user.incidents(website_id)
    assert incident["is_active"] is True
    [alert] = receiver.of("ops")
    assert alert.verified
    assert alert.payload["event"] == "DOWN"

    assert system.redis is not None
    [(_, letter)] = system.redis.xrange(f"{system.env['NOTIFICATION_STREAM']}:dlq")
    assert letter[b"channel"] == b"email"
    assert f"gave up after {NOTIFY_MAX_ATTEMPTS} attempts".encode() in letter[b"dead_letter_reason"]


# --- two schedulers -----------------------------------------------------------------------


def _active_flags(schedulers: list[Proc]) -> dict[str, float | None]:
    return {p.name: metric(p.metrics(), "runstate_scheduler_active") for p in schedulers}


def test_of_two_schedulers_exactly_one_is_active_and_the_standby_takes_over_when_it_dies(
    start_system: StartDistributed, target: Target
) -> None:
    system = start_system(schedulers=2)
    schedulers = [system.cluster.proc("scheduler"), system.cluster.proc("scheduler-2")]

    def one_active() -> dict[str, float | None] | None:
        flags = _active_flags(schedulers)
        return flags if sorted(v or 0.0 for v in flags.values()) == [0.0, 1.0] else None

    flags = system.wait_for("exactly one active scheduler", one_active, timeout=10)
    stay_true(
        "exactly one active scheduler",
        lambda: one_active() is not None,
        seconds=SCHEDULER_LEASE_SECONDS,
        guard=system.cluster.check_alive,
    )
    active = next(p for p in schedulers if flags[p.name] == 1.0)
    standby = next(p for p in schedulers if p is not active)

    user = system.user()
    website_id = monitor_that_is_up(system, user, target)
    active.kill9()
    killed, killed_at = time.monotonic(), datetime.now(UTC)
    system.wait_for(
        "the standby to become active",
        lambda: metric(standby.metrics(), "runstate_scheduler_active") == 1.0,
        timeout=2 * SCHEDULER_LEASE_SECONDS + 3,
    )
    took = time.monotonic() - killed
    assert took <= 2 * SCHEDULER_LEASE_SECONDS + 1, f"the standby took {took:.1f} s"
    assert standby.logged("scheduler active")
    system.wait_for(
        "checks recorded after the takeover",
        lambda: len(checks_since(user, website_id, killed_at)) >= 3,
        timeout=15,
    )


# --- an API that cannot have its port ----------------------------------------------------


@pytest.mark.parametrize("command", ["up", "api"])
def test_a_process_whose_api_port_is_taken_stops_at_once_with_one_line_naming_port(
    cluster: Cluster, command: str
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cluster.env.update(
            PORT=str(port),
            RUNSTATE_DATA_DIR=str(cluster.workdir / "data"),
            DATABASE_URL=f"sqlite:///{cluster.workdir / 'data' / 'runstate.db'}",
        )
        started = time.monotonic()
        result = cluster.run(command, command, timeout=30)
    assert time.monotonic() - started < 15
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"runstate: PORT: cannot listen on 127.0.0.1:{port}: Address already in use"]
