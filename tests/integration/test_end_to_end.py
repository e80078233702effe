"""One monitor's life, driven through the HTTP API as a user would, on the whole system run
both ways an operator runs it: embedded (`runstate up`: SQLite and the in-process queue) and
distributed (`runstate api`, `scheduler` and the three workers as separate processes on
PostgreSQL and Redis). Contract §1 (processes), §3 (API), §4 (events) and §5 (alerts)."""

from __future__ import annotations

import httpx
import pytest

from runstate.queue import keys
from tests.integration.harness import (
    PIPELINE,
    SHUTDOWN_TIMEOUT_SECONDS,
    SmtpServer,
    System,
    Target,
    WebhookReceiver,
    metric,
)

EMAIL = "ops@example.com"


@pytest.fixture(params=["embedded", "distributed"])
def system(request: pytest.FixtureRequest) -> System:
    found: System = request.getfixturevalue(request.param)
    return found


def test_a_monitor_that_goes_down_and_recovers_gets_one_incident_and_one_alert_per_channel(
    system: System, target: Target, receiver: WebhookReceiver, smtp: SmtpServer
) -> None:
    user = system.user()
    webhook = user.add_webhook(receiver.hook("ops"))
    receiver.secret("ops", webhook["secret"])
    user.add_email(EMAIL)
    name = f"Shop {system.cluster.label}"
    monitor = user.add_monitor(target.url, name)
    website_id = monitor["id"]

    # Up: the first check sets the status, without an alert.
    system.wait_for(
        "the monitor to show up", lambda: user.website(website_id)["current_status"], timeout=20
    )
    assert user.website(website_id)["current_status"] == "up"
    assert user.incidents(website_id) == []

    # Down: one incident, one signed DOWN webhook, one DOWN e-mail.
    target.healthy = False
    [incident] = system.wait_for("an incident", lambda: user.incidents(website_id), timeout=20)
    assert incident["is_active"] is True
    assert incident["resolved_at"] is None
    assert "503" in (incident["cause"] or ""), incident
    system.wait_for(
        "the DOWN webhook and e-mail",
        lambda: receiver.of("ops", "DOWN") and smtp.mailbox.subjects("DOWN"),
        timeout=20,
    )
    down = user.website(website_id)
    assert down["current_status"] == "down"
    assert down["active_incident"]["id"] == incident["id"]

    # Up again: the incident is resolved, one RECOVERY webhook, one RECOVERED e-mail.
    target.healthy = True
    system.wait_for(
        "the incident to be resolved",
        lambda: not user.incidents(website_id)[0]["is_active"],
        timeout=20,
    )
    system.wait_for(
        "the RECOVERY webhook and e-mail",
        lambda: receiver.of("ops", "RECOVERY") and smtp.mailbox.subjects("RECOVERED"),
        timeout=20,
    )
    recovered = user.website(website_id)
    assert recovered["current_status"] == "up"
    assert recovered["active_incident"] is None

    # A few more intervals: checks go on, nothing is repeated.
    seen = len(user.checks(website_id))
    system.wait_for(
        "three more checks", lambda: len(user.checks(website_id)) >= seen + 3, timeout=15
    )
    system.wait_for(
        "every notification row to settle",
        lambda: all(n["delivery_status"] == "sent" for n in user.notifications(website_id)),
        timeout=10,
    )

    [resolved] = user.incidents(website_id)
    assert resolved["id"] == incident["id"]
    assert resolved["resolved_at"] is not None

    hooks = receiver.of("ops")
    assert [h.payload["event"] for h in hooks] == ["DOWN", "RECOVERY"]
    assert all(h.verified for h in hooks), "a webhook failed Standard Webhooks verification"
    assert len({h.webhook_id for h in hooks}) == 2
    for hook, (before, after) in zip(hooks, [("up", "down"), ("down", "up")], strict=True):
        assert hook.payload["website"] == {"id": website_id, "url": target.url, "name": name}
        assert hook.payload["incident_id"] == incident["id"]
        assert (hook.payload["prev_status"], hook.payload["current_status"]) == (before, after)

    subjects = smtp.mailbox.subjects()
    assert len(subjects) == 2, subjects
    assert "DOWN" in subjects[0], subjects
    assert "RECOVERED" in subjects[1], subjects
    assert all(name in subject for subject in subjects), subjects
    assert all(m["To"] == EMAIL for m in smtp.mailbox.messages)

    notifications = user.notifications(website_id)
    assert sorted((n["channel"], n["event"], n["delivery_status"]) for n in notifications) == [
        ("email", "DOWN", "sent"),
        ("email", "RECOVERY", "sent"),
        ("webhook", "DOWN", "sent"),
        ("webhook", "RECOVERY", "sent"),
    ]
    assert all(n["incident_id"] == incident["id"] for n in notifications)

    if system.mode == "embedded":
        exposed = httpx.get(f"{system.base_url}/metrics", timeout=5).text
        assert (metric(exposed, "http_requests_total") or 0) > 0
    else:
        exposed = system.cluster.proc("worker-monitoring").metrics()
        # Each pipeline process keeps its liveness key alive (docs/architecture.md).
        assert system.redis is not None
        for process in ("scheduler", *PIPELINE):
            assert system.redis.ttl(keys.heartbeat_key(process)) > 0, process
    assert (metric(exposed, "runstate_checks_total", result="up") or 0) > 0
    assert (metric(exposed, "runstate_checks_total") or 0) > (
        metric(exposed, "runstate_checks_total", result="up") or 0
    ), "no failed check was counted"

    # Every process stops cleanly on SIGTERM, within its shutdown timeout (and a margin),
    # having logged nothing but JSON lines, heartbeats included.
    procs = list(system.cluster.procs)
    stopped = system.cluster.stop()
    assert [s.name for s in stopped] == [p.name for p in procs]
    for outcome in stopped:
        assert outcome.returncode == 0, outcome
        assert outcome.seconds <= SHUTDOWN_TIMEOUT_SECONDS + 5, outcome
    for proc in procs:
        messages = [entry["msg"] for entry in proc.json_log()]
        assert "heartbeat" in messages, f"{proc.name} logged no heartbeat"
