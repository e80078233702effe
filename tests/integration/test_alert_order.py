"""Alerts that must not be lost, on the real processes: a monitor's UP handled before its DOWN
by two status-change workers (distributed: PostgreSQL and Redis), and a monitor whose
target is down from its very first check (embedded: `runstate up`)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from runstate.domain.events import StatusChange, format_time, status_change_event_id
from runstate.domain.status import Status
from tests.integration.harness import System, Target, WebhookReceiver, start_worker


def status_change(website_id: str, to: Status, at: datetime) -> StatusChange:
    monitor = uuid.UUID(website_id)
    return StatusChange(
        event_id=status_change_event_id(monitor, int(at.timestamp() * 1000)),
        website_id=monitor,
        region_id=1,
        prev_status=Status.UP if to is Status.DOWN else Status.DOWN,
        current_status=to,
        occurred_at=at,
    )


def test_a_down_handled_after_its_up_by_two_workers_gives_one_incident_and_two_late_alerts(
    distributed: System, target: Target, receiver: WebhookReceiver
) -> None:
    system, user = distributed, distributed.user()
    assert system.redis is not None
    start_worker(system, "worker-status-change-2", "status-change")
    channel = user.add_webhook(receiver.hook("ops"))
    receiver.secret("ops", channel["secret"])
    # Paused: no check of its own makes a change; the two below are the whole story.
    website_id = user.add_monitor(target.url, "Reordered", paused=True)["id"]
    went_down = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
    down = status_change(website_id, Status.DOWN, went_down)
    up = status_change(website_id, Status.UP, went_down + timedelta(seconds=60))
    stream = system.env["STATUS_CHANGE_STREAM"]

    system.redis.xadd(stream, up.to_fields())
    system.wait_for(
        "the UP to be handled",
        lambda: user.website(website_id)["current_status"] == "up",
        timeout=20,
    )
    system.redis.xadd(stream, down.to_fields())

    hooks = system.wait_for(
        "the DOWN and RECOVERY webhooks",
        lambda: (found := receiver.of("ops")) and len(found) >= 2 and found,
        timeout=20,
    )
    [incident] = user.incidents(website_id)
    assert datetime.fromisoformat(incident["started_at"]) == down.occurred_at
    assert datetime.fromisoformat(incident["resolved_at"]) == up.occurred_at
    assert incident["is_active"] is False
    # In this order at the receiver too: a RECOVERY never arrives before its DOWN.
    assert [h.payload["event"] for h in hooks] == ["DOWN", "RECOVERY"]
    for hook, change in zip(hooks, (down, up), strict=True):
        assert hook.verified
        assert hook.payload["late"] is True
        assert hook.payload["incident_id"] == incident["id"]
        assert hook.payload["event_id"] == change.event_id
        assert hook.payload["occurred_at"] == format_time(change.occurred_at)
    shown = user.website(website_id)
    assert shown["current_status"] == "up"
    assert shown["active_incident"] is None
    system.wait_for(
        "both notification rows sent",
        lambda: (
            sorted(n["delivery_status"] for n in user.notifications(website_id)) == ["sent", "sent"]
        ),
        timeout=10,
    )
    assert len(receiver.of("ops")) == 2


def test_a_monitor_whose_target_is_down_from_the_start_alerts(
    embedded: System, target: Target, receiver: WebhookReceiver
) -> None:
    system, user = embedded, embedded.user()
    channel = user.add_webhook(receiver.hook("ops"))
    receiver.secret("ops", channel["secret"])
    target.healthy = False

    website_id = user.add_monitor(target.url, "Broken from the start", confirmations=2)["id"]

    [incident] = system.wait_for("an incident", lambda: user.incidents(website_id), timeout=20)
    assert incident["is_active"] is True
    assert "503" in (incident["cause"] or ""), incident
    [hook] = system.wait_for("the DOWN webhook", lambda: receiver.of("ops", "DOWN"), timeout=20)
    assert hook.verified
    assert hook.payload["incident_id"] == incident["id"]
    assert (hook.payload["prev_status"], hook.payload["current_status"]) == ("up", "down")
    assert hook.payload["late"] is False
    assert user.website(website_id)["current_status"] == "down"
    assert len(user.checks(website_id)) >= 2

    target.healthy = True
    system.wait_for("the RECOVERY webhook", lambda: receiver.of("ops", "RECOVERY"), timeout=20)
    [resolved] = user.incidents(website_id)
    assert resolved["id"] == incident["id"]
    assert resolved["is_active"] is False
