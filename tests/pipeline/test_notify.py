"""The notification stage (alert -> channels) against a real webhook receiver that verifies
Standard Webhooks signatures and a real SMTP server, on SQLite and PostgreSQL, with the
in-process queue and Redis: each alert once per matching channel, retries with backoff, dead
letters with their reason, disabled channels, and flapping summaries. Handling an alert only
records its deliveries; the due loop (run here as the worker runs it) makes the attempts."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from runstate.channels.base import CHANNELS, Channel, load_channel_class
from runstate.channels.email import message_id_header
from runstate.consumer import PermanentFailure
from runstate.domain.events import Alert, AlertEvent, format_time, status_change_event_id
from runstate.domain.status import Status
from runstate.metrics import PipelineMetrics
from runstate.pipeline.flapping import SUMMARY
from runstate.pipeline.notify import NotificationStage
from runstate.queue.backend import QueueBackend, open_backend
from runstate.queue.base import Entry, StreamQueue
from runstate.storage.db import create_engine, session_factory
from runstate.storage.notification_log import (
    FINAL_STATES,
    claim_attempt,
    is_undecided,
    message_id,
    record_delivery,
)
from runstate.storage.tables import AlertChannel, Incident, NotificationLog, User, Website
from tests.pipeline.conftest import (
    Hook,
    SmtpServer,
    StageDb,
    WebhookReceiver,
    eventually,
    free_port,
    stage_settings,
    stream_entries,
    utc_ms,
)

OWNER_MAIL = "oncall@example.com"


@dataclass
class Setup:
    db: StageDb
    backend: QueueBackend
    registry: CollectorRegistry
    metrics: PipelineMetrics
    receiver: WebhookReceiver
    smtp: SmtpServer
    tmp_path: Path
    prefix: str
    opened: list[Channel] = field(default_factory=list)

    def stage(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession] | None = None,
        queue: StreamQueue | None = None,
        **overrides: Any,
    ) -> NotificationStage:
        """A notification worker's stage (on its own connections when given ``sessions``)."""
        settings = stage_settings(
            self.db, self.tmp_path, self.prefix, smtp_port=self.smtp.port, **overrides
        )
        channels = {kind: load_channel_class(kind).from_settings(settings) for kind in CHANNELS}
        self.opened += channels.values()
        return NotificationStage(
            sessions or self.db.sessions,
            queue or self.backend.queue,
            channels,
            settings,
            self.metrics,
        )

    @asynccontextmanager
    async def running(self, *stages: NotificationStage) -> AsyncIterator[None]:
        """The stages' due loops, running as in their workers, stopped at the end."""
        stop = asyncio.Event()
        loops = [asyncio.create_task(stage.deliver_due(stop)) for stage in stages]
        try:
            yield
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*loops), 10)

    async def settle(self, stage: NotificationStage, *alerts: Alert, timeout: float = 10) -> None:
        """Handle ``alerts`` as the worker does, then run its due loop until every alert
        delivery is settled (sent, dead or suppressed)."""
        for alert in alerts:
            await stage.handle(entry(alert))
        async with self.running(stage):
            await eventually(self.all_settled, timeout=timeout)

    async def all_settled(self) -> bool:
        rows = await self.db.all(select(NotificationLog).where(NotificationLog.event != SUMMARY))
        return all(row.delivery_status in FINAL_STATES for row in rows)

    def count(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    async def dead_letters(self) -> list[dict[str, str]]:
        entries = await stream_entries(self.backend.queue, f"{self.prefix}:notification:dlq")
        return [e.fields for e in entries]

    async def logs(self, channel: AlertChannel) -> list[NotificationLog]:
        return await self.db.all(
            select(NotificationLog)
            .where(NotificationLog.channel_id == channel.id)
            .order_by(NotificationLog.created_at)
        )


@pytest.fixture
async def setup(
    stage_db: StageDb,
    stage_backend: QueueBackend,
    stage_registry: CollectorRegistry,
    stage_metrics: PipelineMetrics,
    stage_prefix: str,
    webhook_receiver: WebhookReceiver,
    smtp_server: SmtpServer,
    tmp_path: Path,
) -> AsyncIterator[Setup]:
    made = Setup(
        stage_db, stage_backend, stage_registry, stage_metrics, webhook_receiver, smtp_server,
        tmp_path, stage_prefix,
    )  # fmt: skip
    try:
        yield made
    finally:
        for channel in made.opened:
            await channel.aclose()


@dataclass
class Monitor:
    owner: User
    website: Website
    incident: Incident


async def down_monitor(db: StageDb, *, started: datetime | None = None) -> Monitor:
    owner = await db.user()
    website = await db.website(owner, "https://example.com/shop", name="Shop")
    started = utc_ms(started or datetime.now(UTC) - timedelta(minutes=1))
    incident = await db.add(
        Incident(
            website_id=website.id,
            started_at=started,
            is_active=True,
            opened_by_event_id=status_change_event_id(website.id, int(started.timestamp() * 1000)),
        )
    )
    return Monitor(owner, website, incident)


def alert_for(monitor: Monitor, event: AlertEvent = AlertEvent.DOWN, **values: Any) -> Alert:
    down = event is AlertEvent.DOWN
    occurred = monitor.incident.started_at
    fields: dict[str, Any] = {
        "event_id": status_change_event_id(monitor.website.id, int(occurred.timestamp() * 1000)),
        "website_id": monitor.website.id,
        "region_id": 1,
        "prev_status": Status.UP if down else Status.DOWN,
        "current_status": Status.DOWN if down else Status.UP,
        "occurred_at": occurred,
        "incident_id": monitor.incident.id,
        "event": event,
        **values,
    }
    return Alert(**fields)


def entry(alert: Alert) -> Entry:
    return Entry("1-0", alert.to_fields())


async def webhook(setup: Setup, owner: User, hook: Hook, **values: Any) -> AlertChannel:
    return await setup.db.channel(owner, "webhook", hook.url, secret=hook.secret, **values)


def gaps(hook: Hook) -> list[float]:
    times = [r.at for r in hook.requests]
    return [later - earlier for earlier, later in itertools.pairwise(times)]


async def test_an_alert_goes_once_to_each_matching_channel_of_the_owner_and_to_no_other(
    setup: Setup,
) -> None:
    monitor = await down_monitor(setup.db)
    both, down_only, recovery_only, disabled, strangers = (setup.receiver.hook() for _ in range(5))
    webhook_channel = await webhook(setup, monitor.owner, both)
    await webhook(setup, monitor.owner, down_only, notify_on="DOWN")
    await webhook(setup, monitor.owner, recovery_only, notify_on="RECOVERY")
    await webhook(setup, monitor.owner, disabled, enabled=False)
    await webhook(setup, await setup.db.user(), strangers)
    email_channel = await setup.db.channel(monitor.owner, "email", OWNER_MAIL)
    stage = setup.stage()
    alert = alert_for(monitor)

    await setup.settle(stage, alert)

    [request] = both.requests
    assert request.verified
    [log] = await setup.logs(webhook_channel)
    assert request.headers["webhook-id"] == message_id(log.id)
    assert request.payload == {
        "event_id": alert.event_id,
        "event": "DOWN",
        "website": {"id": str(monitor.website.id), "url": "https://example.com/shop",
                    "name": "Shop"},
        "incident_id": str(monitor.incident.id),
        "prev_status": "up",
        "current_status": "down",
        "occurred_at": format_time(alert.occurred_at),
        "late": False,
    }  # fmt: skip
    assert (log.delivery_status, log.attempts, log.event) == ("sent", 1, "DOWN")
    assert log.sent_at is not None
    assert log.incident_id == monitor.incident.id
    assert len(down_only.requests) == 1
    assert recovery_only.requests == disabled.requests == strangers.requests == []
    [mail] = setup.smtp.mails
    assert mail.recipients == [OWNER_MAIL]
    assert "DOWN" in mail.message["Subject"]
    assert "Shop" in mail.message["Subject"]
    [mail_log] = await setup.logs(email_channel)
    assert (mail_log.delivery_status, mail_log.attempts) == ("sent", 1)
    assert mail.message["Message-ID"] == message_id_header(message_id(mail_log.id))
    assert setup.count("runstate_alerts_total", channel="webhook", outcome="sent") == 2
    assert setup.count("runstate_alerts_total", channel="email", outcome="sent") == 1


async def test_a_recovery_skips_down_only_channels(setup: Setup) -> None:
    monitor = await down_monitor(setup.db)
    both, down_only = setup.receiver.hook(), setup.receiver.hook()
    await webhook(setup, monitor.owner, both)
    await webhook(setup, monitor.owner, down_only, notify_on="DOWN")
    await setup.db.channel(monitor.owner, "email", OWNER_MAIL, notify_on="DOWN")

    await setup.settle(setup.stage(), alert_for(monitor, AlertEvent.RECOVERY))

    [request] = both.requests
    assert request.payload["event"] == "RECOVERY"
    assert down_only.requests == []
    assert setup.smtp.mails == []


async def test_handling_the_same_alert_again_sends_nothing_more(setup: Setup) -> None:
    monitor = await down_monitor(setup.db)
    hook = setup.receiver.hook()
    channel = await webhook(setup, monitor.owner, hook)
    await setup.db.channel(monitor.owner, "email", OWNER_MAIL)
    stage = setup.stage()
    alert = alert_for(monitor)

    await setup.settle(stage, alert)
    await setup.settle(stage, alert)
    await setup.settle(setup.stage(), alert)  # another worker, too

    assert len(hook.requests) == 1
    assert len(setup.smtp.mails) == 1
    [log] = await setup.logs(channel)
    assert (log.delivery_status, log.attempts) == ("sent", 1)


async def test_a_webhook_answering_500_then_200_is_delivered_on_retry_with_the_same_webhook_id(
    setup: Setup,
) -> None:
    monitor = await down_monitor(setup.db)
    hook = setup.receiver.hook(500)
    channel = await webhook(setup, monitor.owner, hook)

    await setup.settle(setup.stage(), alert_for(monitor))

    first, second = hook.requests
    assert first.verified
    assert second.verified
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body
    [log] = await setup.logs(channel)
    assert (log.delivery_status, log.attempts, log.error) == ("sent", 2, None)
    assert await setup.dead_letters() == []
    assert setup.count("runstate_alerts_total", channel="webhook", outcome="failed") == 1
    assert setup.count("runstate_alerts_total", channel="webhook", outcome="sent") == 1


async def test_a_webhook_failing_every_time_is_dead_lettered_after_max_attempts(
    setup: Setup,
) -> None:
    monitor = await down_monitor(setup.db)
    hook = setup.receiver.hook(then=500)
    channel = await webhook(setup, monitor.owner, hook)
    alert = alert_for(monitor)

    await setup.settle(setup.stage(), alert)

    assert len(hook.requests) == 3  # NOTIFY_MAX_ATTEMPTS
    assert len({r.headers["webhook-id"] for r in hook.requests}) == 1
    assert all(gap < 1.0 for gap in gaps(hook))  # NOTIFY_RETRY_MAX_SECONDS is 0.2
    [log] = await setup.logs(channel)
    assert (log.delivery_status, log.attempts) == ("dead", 3)
    assert log.error is not None
    assert "500" in log.error
    [dead] = await setup.dead_letters()
    assert Alert.from_fields(dead) == alert
    assert dead["channel_id"] == str(channel.id)
    assert dead["channel"] == "webhook"
    assert dead["message_id"] == message_id(log.id)
    assert dead["attempts"] == "3"
    assert "500" in dead["dead_letter_reason"]
    assert setup.count("runstate_alerts_total", channel="webhook", outcome="dead") == 1
    assert setup.count("runstate_dead_letters_total", stream=f"{setup.prefix}:notification") == 1

    await setup.settle(setup.stage(), alert)  # redelivered: dead is final
    assert len(hook.requests) == 3
    assert len(await setup.dead_letters()) == 1


async def test_a_replayed_dead_letter_is_delivered_again_to_its_channel_alone(
    setup: Setup,
) -> None:
    """`runstate dlq replay` puts a dead letter back without its dead_letter_* fields: its
    channel's delivery, dead so far, gets a fresh round of attempts, with the same
    webhook-id; the alert's other channels, settled before, are not sent again."""
    monitor = await down_monitor(setup.db)
    failing = setup.receiver.hook(500, 500, 500, then=200)
    healthy = setup.receiver.hook()
    channel = await webhook(setup, monitor.owner, failing)
    await webhook(setup, monitor.owner, healthy)
    alert = alert_for(monitor)
    await setup.settle(setup.stage(), alert)
    [dead] = await setup.dead_letters()
    assert (len(failing.requests), len(healthy.requests)) == (3, 1)

    replayed = {k: v for k, v in dead.items() if not k.startswith("dead_letter_")}
    await setup.stage().handle(Entry("2-0", replayed))
    async with setup.running(setup.stage()):
        await eventually(setup.all_settled)

    [log] = await setup.logs(channel)
    assert (log.delivery_status, log.attempts) == ("sent", 1)
    assert len(failing.requests) == 4
    assert failing.requests[-1].headers["webhook-id"] == message_id(log.id) == dead["message_id"]
    assert len(healthy.requests) == 1


async def test_a_replayed_dead_letter_of_a_delivery_sent_meanwhile_sends_nothing(
    setup: Setup,
) -> None:
    monitor = await down_monitor(setup.db)
    hook = setup.receiver.hook()
    channel = await webhook(setup, monitor.owner, hook)
    alert = alert_for(monitor)
    await setup.settle(setup.stage(), alert)
    [log] = await setup.logs(channel)
    replayed = alert.to_fields() | {
        "channel_id": str(channel.id),
        "channel": "webhook",
        "message_id": message_id(log.id),
    }

    await setup.stage().handle(Entry("2-0", replayed))
    async with setup.running(setup.stage()):
        await eventually(setup.all_settled)

    assert len(hook.requests) == 1
    [log] = await setup.logs(channel)
    assert log.delivery_status == "sent"


async def test_a_recovery_recorded_before_its_down_is_still_sent_after_it(setup: Setup) -> None:
    """A late DOWN and its RECOVERY reach the notification stage together and are recorded
    concurrently, so the RECOVERY's row may be the older one: the receiver still gets the
    DOWN first (the order follows the incident, not the order of recording)."""
    monitor = await down_monitor(setup.db)
    hook = setup.receiver.hook()
    await webhook(setup, monitor.owner, hook)
    stage = setup.stage()
    await stage.handle(entry(alert_for(monitor, AlertEvent.RECOVERY, late=True)))
    await stage.handle(entry(alert_for(monitor, late=True)))

    async def both_sent() -> bool:
        return len(hook.requests) == 2

    async with setup.running(stage):
        await eventually(both_sent)

    assert [r.payload["event"] for r in hook.requests] == ["DOWN", "RECOVERY"]


async def test_a_delivery_whose_recording_was_cut_short_is_sent_once_its_lease_has_passed(
    setup: Setup,
) -> None:
    """Recorded but never decided (the worker died between the two steps, and the stream
    entry never came back): the due loop sends it anyway after RECLAIM_IDLE_SECONDS, and
    the monitor's later alerts on that channel are not held behind it for ever."""
    monitor = await down_monitor(setup.db)
    hook = setup.receiver.hook()
    channel = await webhook(setup, monitor.owner, hook)
    row = await record_delivery(setup.db.sessions, alert_for(monitor), channel)
    assert is_undecided(row)

    async def sent() -> bool:
        return len(hook.requests) == 1

    async with setup.running(setup.stage()):  # RECLAIM_IDLE_SECONDS is 1
        await eventually(sent, timeout=10)

    assert hook.requests[0].headers["webhook-id"] == message_id(row.id)
    [log] = await setup.logs(channel)
    assert log.delivery_status == "sent"


async def test_a_410_disables_the_channel_and_dead_letters_the_alert(setup: Setup) -> None:
    monitor = await down_monitor(setup.db)
    hook = setup.receiver.hook(then=410)
    channel = await webhook(setup, monitor.owner, hook)

    await setup.settle(setup.stage(), alert_for(monitor))

    assert len(hook.requests) == 1
    disabled = await setup.db.get(AlertChannel, channel.id)
    assert disabled is not None
    assert not disabled.enabled
    assert disabled.disabled_reason is not None
    assert "410" in disabled.disabled_reason
    [log] = await setup.logs(channel)
    assert (log.delivery_status, log.attempts) == ("dead", 1)
    [dead] = await setup.dead_letters()
    assert "410" in dead["dead_letter_reason"]

    # The next alert of the monitor no longer goes to the disabled channel.
    await setup.db.update(Incident, monitor.incident.id, is_active=False)
    await setup.settle(setup.stage(), alert_for(monitor, AlertEvent.RECOVERY))
    assert len(hook.requests) == 1


async def test_a_permanent_client_error_is_dead_lettered_without_a_retry(setup: Setup) -> None:
    monitor = await down_monitor(setup.db)
    hook = setup.receiver.hook(then=400)
    channel = await webhook(setup, monitor.owner, hook)

    await setup.settle(setup.stage(), alert_for(monitor))

    assert len(hook.requests) == 1
    [log] = await setup.logs(channel)
    assert (log.delivery_status, log.attempts) == ("dead", 1)
    assert (await setup.db.get(AlertChannel, channel.id)).enabled  # type: ignore[union-attr]
    assert len(await setup.dead_letters()) == 1


async def test_an_unreachable_smtp_server_is_retried_then_dead_lettered(setup: Setup) -> None:
    monitor = await down_monitor(setup.db)
    channel = await setup.db.channel(monitor.owner, "email", OWNER_MAIL)
    stage = setup.stage(SMTP_PORT=free_port())  # nothing listens there

    await setup.settle(stage, alert_for(monitor))

    [log] = await setup.logs(channel)
    assert (log.delivery_status, log.attempts) == ("dead", 3)
    [dead] = await setup.dead_letters()
    assert dead["channel"] == "email"
    assert dead["dead_letter_reason"].startswith("gave up after 3 attempts")
    assert setup.count("runstate_alerts_total", channel="email", outcome="failed") == 2
    assert setup.count("runstate_alerts_total", channel="email", outcome="dead") == 1


async def test_a_429_retry_after_is_honoured_up_to_the_retry_cap(setup: Setup) -> None:
    monitor = await down_monitor(setup.db)
    hook = setup.receiver.hook((429, {"Retry-After": "30"}), (503, {"Retry-After": "0"}))
    channel = await webhook(setup, monitor.owner, hook)
    # Without Retry-After the first retry would wait at most 0.01 s (full jitter).
    stage = setup.stage(NOTIFY_RETRY_BASE_SECONDS=0.01, NOTIFY_RETRY_MAX_SECONDS=0.5)

    started = time.monotonic()
    await setup.settle(stage, alert_for(monitor))

    assert len(hook.requests) == 3
    after_429, after_503 = gaps(hook)
    assert 0.45 <= after_429 < 2.0  # Retry-After: 30, capped at NOTIFY_RETRY_MAX_SECONDS
    assert after_503 < 0.45
    assert time.monotonic() - started < 5
    [log] = await setup.logs(channel)
    assert (log.delivery_status, log.attempts) == ("sent", 3)


async def test_two_copies_of_one_alert_on_two_workers_at_once_send_it_once(
    setup: Setup,
) -> None:
    # A status change forwarded twice puts two copies of its alert on the stream; each
    # worker records the same rows and runs its own due loop on its own connections.
    monitors = [await down_monitor(setup.db) for _ in range(4)]
    hooks = [setup.receiver.hook(500) for _ in monitors]  # one failure, then 200
    for monitor, hook in zip(monitors, hooks, strict=True):
        await webhook(setup, monitor.owner, hook)
    other_engine = create_engine(setup.db.url)
    try:
        first = setup.stage()
        second = setup.stage(sessions=session_factory(other_engine))
        for monitor in monitors:
            fields = alert_for(monitor).to_fields()
            await asyncio.gather(
                first.handle(Entry("1-0", fields)), second.handle(Entry("2-0", fields))
            )
        async with setup.running(first, second):
            await eventually(setup.all_settled, timeout=10)
            await asyncio.sleep(0.3)  # more passes of both loops find nothing more to do
    finally:
        await other_engine.dispose()

    for hook in hooks:  # the failed attempt and its retry, no attempt twice
        assert len(hook.requests) == 2
        assert len({r.headers["webhook-id"] for r in hook.requests}) == 1
    logs = await setup.db.all(select(NotificationLog))
    assert sorted((log.delivery_status, log.attempts) for log in logs) == [("sent", 2)] * 4


async def test_an_attempt_whose_worker_died_is_taken_over_once_its_claim_lapses(
    setup: Setup,
) -> None:
    monitor = await down_monitor(setup.db)
    hook = setup.receiver.hook()
    channel = await webhook(setup, monitor.owner, hook)
    alert = alert_for(monitor)
    stage = setup.stage()  # RECLAIM_IDLE_SECONDS=1: the lease
    await stage.handle(entry(alert))
    [row] = await setup.logs(channel)
    # Another worker claimed the attempt (after two failed ones), then died: no renewals.
    await setup.db.update(NotificationLog, row.id, delivery_status="failed", attempts=2)
    lease = timedelta(seconds=stage.deliveries.claim_lease)
    assert await claim_attempt(setup.db.sessions, row.id, "dead-worker", lease) is not None
    claimed = time.monotonic()

    async with setup.running(stage):
        await eventually(setup.all_settled, timeout=10)

    [request] = hook.requests
    assert request.at - claimed >= lease.total_seconds() * 0.9  # not before the claim lapsed
    assert request.headers["webhook-id"] == message_id(row.id)
    [log] = await setup.logs(channel)
    assert (log.delivery_status, log.attempts) == ("sent", 3)
    assert log.claimed_by not in (None, "dead-worker")


@pytest.mark.parametrize("left_as", ["pending", "failed"])
async def test_a_delivery_left_unsettled_by_a_crashed_worker_is_sent_with_its_id(
    setup: Setup, left_as: str
) -> None:
    monitor = await down_monitor(setup.db)
    hook = setup.receiver.hook()
    channel = await webhook(setup, monitor.owner, hook)
    alert = alert_for(monitor)
    # What a worker that died mid-attempt leaves: the row due and claimed long ago, maybe
    # after one failed attempt. The alert's entry comes back too (never acknowledged).
    row = await record_delivery(
        setup.db.sessions, alert, channel, due_at=datetime.now(UTC) - timedelta(hours=1)
    )
    attempts = 1 if left_as == "failed" else 0
    await setup.db.update(
        NotificationLog,
        row.id,
        delivery_status=left_as,
        attempts=attempts,
        claimed_by="dead-worker",
        claimed_at=datetime.now(UTC) - timedelta(hours=1),
    )

    await setup.settle(setup.stage(), alert)

    [request] = hook.requests
    assert request.verified
    assert request.headers["webhook-id"] == message_id(row.id)
    [log] = await setup.logs(channel)
    assert log.id == row.id
    assert (log.delivery_status, log.attempts) == ("sent", attempts + 1)


async def test_a_dead_letter_that_cannot_be_written_leaves_the_delivery_to_be_retried(
    setup: Setup,
) -> None:
    monitor = await down_monitor(setup.db)
    hook = setup.receiver.hook(then=500)
    channel = await webhook(setup, monitor.owner, hook)
    alert = alert_for(monitor)
    unreachable = open_backend(f"redis://127.0.0.1:{free_port()}/0")
    try:
        cut_off = setup.stage(queue=unreachable.queue)
        await cut_off.handle(entry(alert))
        async with setup.running(cut_off):

            async def gave_up() -> bool:
                [log] = await setup.logs(channel)
                return log.attempts == 3 and len(hook.requests) == 3

            await eventually(gave_up)
            await asyncio.sleep(0.3)
    finally:
        await unreachable.aclose()
    [log] = await setup.logs(channel)
    assert log.delivery_status != "dead"  # else nothing would ever dead-letter it

    await setup.settle(setup.stage(), alert)  # another attempt, with the queue back

    [log] = await setup.logs(channel)
    assert log.delivery_status == "dead"
    assert len(hook.requests) == 3  # given up without sending a fourth time
    [dead] = await setup.dead_letters()
    assert dead["message_id"] == message_id(log.id)
    assert dead["dead_letter_reason"].startswith("gave up after 3 attempts")


async def test_an_alert_for_a_deleted_monitor_sends_nothing(setup: Setup) -> None:
    monitor = await down_monitor(setup.db)
    hook = setup.receiver.hook()
    await webhook(setup, monitor.owner, hook)
    alert = alert_for(monitor)
    await setup.db.delete(Website, monitor.website.id)

    await setup.settle(setup.stage(), alert)

    assert hook.requests == []
    assert await setup.db.all(select(NotificationLog)) == []


async def test_a_malformed_alert_is_a_permanent_failure(setup: Setup) -> None:
    monitor = await down_monitor(setup.db)
    fields = alert_for(monitor).to_fields()
    fields["event"] = "SIDEWAYS"
    with pytest.raises(PermanentFailure, match="malformed alert"):
        await setup.stage().handle(Entry("1-0", fields))
    del fields["incident_id"]
    with pytest.raises(PermanentFailure, match="malformed alert"):
        await setup.stage().handle(Entry("1-0", fields))


# --- flapping ----------------------------------------------------------------------------


async def flapping_monitor(setup: Setup) -> tuple[Monitor, list[Alert]]:
    """A monitor that went DOWN, UP, DOWN, UP, DOWN within seconds: three incidents, the
    last still open, and its five alerts."""
    first = await down_monitor(setup.db, started=datetime.now(UTC) - timedelta(seconds=5))
    website = first.website
    await setup.db.update(Website, website.id, current_status="down")
    alerts: list[Alert] = []
    incident = first.incident
    for n in range(3):
        if n:
            started = utc_ms(first.incident.started_at + timedelta(seconds=n))
            incident = await setup.db.add(
                Incident(website_id=website.id, started_at=started, is_active=True)
            )
        monitor = Monitor(first.owner, website, incident)
        alerts.append(alert_for(monitor, event_id=f"down-{n}"))
        if n < 2:
            resolved_at = incident.started_at + timedelta(milliseconds=500)
            await setup.db.update(Incident, incident.id, is_active=False, resolved_at=resolved_at)
            alerts.append(
                alert_for(monitor, AlertEvent.RECOVERY, event_id=f"up-{n}", occurred_at=resolved_at)
            )
    return Monitor(first.owner, website, incident), alerts


async def test_a_flapping_monitor_is_summarised_once_instead_of_alerting_every_time(
    setup: Setup,
) -> None:
    monitor, alerts = await flapping_monitor(setup)
    hook = setup.receiver.hook()
    channel = await webhook(setup, monitor.owner, hook)
    # A window long enough that the five alerts surely fall within it, short enough to wait.
    stage = setup.stage(ALERT_FLAP_MAX=2, ALERT_FLAP_WINDOW_SECONDS=2.0)

    for alert in alerts:  # recorded: decided at once, sent or not
        await stage.handle(entry(alert))

    logs = await setup.logs(channel)
    by_event = {(log.event_id, log.delivery_status) for log in logs if log.event != SUMMARY}
    assert by_event == {
        ("down-0", "pending"),
        ("up-0", "pending"),
        ("down-1", "suppressed"),
        ("up-1", "suppressed"),
        ("down-2", "suppressed"),
    }
    [summary_row] = [log for log in logs if log.event == SUMMARY]
    assert summary_row.delivery_status == "pending"
    assert summary_row.next_attempt_at is not None
    assert summary_row.next_attempt_at >= summary_row.created_at + timedelta(seconds=1.9)
    assert setup.count("runstate_alerts_total", channel="webhook", outcome="suppressed") == 3

    # The due loop sends the two alerts at once, in order, and one summary once the window
    # has passed, and nothing after that.
    async with setup.running(stage):

        async def summarised() -> bool:
            return len(hook.requests) == 3

        await eventually(summarised, timeout=5)
        await asyncio.sleep(0.5)  # a few more passes
    assert [r.payload["event_id"] for r in hook.requests[:2]] == ["down-0", "up-0"]
    assert len(hook.requests) == 3
    summary = hook.requests[-1]
    assert summary.at - hook.requests[0].at >= 1.5  # not before the window passed
    assert summary.verified
    assert summary.headers["webhook-id"] == message_id(summary_row.id)
    payload = summary.payload
    assert "3" in payload["summary"]  # how many were held back
    assert payload["event"] == "DOWN"  # what the monitor is now
    assert payload["incident_id"] == str(monitor.incident.id)
    sent = await setup.db.get(NotificationLog, summary_row.id)
    assert sent is not None
    assert (sent.delivery_status, sent.attempts) == ("sent", 1)

    # Another worker (or a restart) finds nothing more to send.
    async with setup.running(setup.stage(ALERT_FLAP_WINDOW_SECONDS=2.0)):
        await asyncio.sleep(0.5)
    assert len(hook.requests) == 3


async def test_flapping_is_counted_per_channel(setup: Setup) -> None:
    monitor, alerts = await flapping_monitor(setup)
    early = setup.receiver.hook()
    await webhook(setup, monitor.owner, early)
    stage = setup.stage(ALERT_FLAP_MAX=2, ALERT_FLAP_WINDOW_SECONDS=60.0)
    for alert in alerts[:3]:
        await stage.handle(entry(alert))
    late = setup.receiver.hook()
    await webhook(setup, monitor.owner, late)  # added while the monitor flaps

    await setup.settle(stage, *alerts[3:])

    assert len(early.requests) == 2
    assert [r.payload["event_id"] for r in late.requests] == ["up-1", "down-2"]


async def test_two_workers_send_one_summary(setup: Setup) -> None:
    monitor, alerts = await flapping_monitor(setup)
    hook = setup.receiver.hook()
    await webhook(setup, monitor.owner, hook)
    stage = setup.stage(ALERT_FLAP_MAX=2, ALERT_FLAP_WINDOW_SECONDS=0.5)
    for alert in alerts:
        await stage.handle(entry(alert))
    other_engine = create_engine(setup.db.url)  # the other worker's own connections
    try:
        other = setup.stage(sessions=session_factory(other_engine))
        async with setup.running(stage, other):

            async def summarised() -> bool:
                return len(hook.requests) == 3

            await eventually(summarised, timeout=5)
            await asyncio.sleep(0.5)
    finally:
        await other_engine.dispose()

    assert len(hook.requests) == 3
    assert hook.requests[-1].verified
    assert "summary" in hook.requests[-1].payload


async def test_a_summary_whose_claimer_died_is_sent_by_another_worker(setup: Setup) -> None:
    monitor, alerts = await flapping_monitor(setup)
    hook = setup.receiver.hook()
    channel = await webhook(setup, monitor.owner, hook)
    stage = setup.stage(ALERT_FLAP_MAX=2, ALERT_FLAP_WINDOW_SECONDS=0.2)
    for alert in alerts:
        await stage.handle(entry(alert))
    [summary_row] = [log for log in await setup.logs(channel) if log.event == SUMMARY]
    await asyncio.sleep(0.3)  # the window passes; a worker claims the summary and dies
    lease = timedelta(seconds=stage.deliveries.claim_lease)
    assert await claim_attempt(setup.db.sessions, summary_row.id, "dead-worker", lease)

    async with setup.running(stage):

        async def summarised() -> bool:
            return any("summary" in r.payload for r in hook.requests)

        await eventually(summarised, timeout=5)
    assert [r.headers["webhook-id"] for r in hook.requests if "summary" in r.payload] == [
        message_id(summary_row.id)
    ]
