"""Deliveries that no receiver can hold up, on SQLite and PostgreSQL, with the in-process queue
and Redis: a failed attempt becomes a due time on its row (its alert's entry acknowledged, no
slot held), `Retry-After` holds its own channel only, and caps per channel and per account
keep a slow receiver of one account from delaying another's alerts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from runstate.consumer import Consumer, ConsumerOptions, each_entry
from runstate.storage.tables import AlertChannel, Incident, NotificationLog, User
from tests.pipeline.conftest import Targets, eventually, utc_ms
from tests.pipeline.test_notify import Monitor, Setup, alert_for, down_monitor, entry, webhook
from tests.pipeline.test_notify import setup as setup  # the fixture, shared

RETRY_AFTER = {"Retry-After": "300"}


async def monitor_of(setup: Setup, owner: User, url: str) -> Monitor:
    """Another monitor of ``owner``, down, with its open incident."""
    website = await setup.db.website(owner, url)
    started = utc_ms(datetime.now(UTC) - timedelta(seconds=30))
    incident = await setup.db.add(
        Incident(website_id=website.id, started_at=started, is_active=True)
    )
    return Monitor(owner, website, incident)


async def test_a_503_with_retry_after_is_acknowledged_and_rescheduled_300_s_ahead(
    setup: Setup,
) -> None:
    monitor = await down_monitor(setup.db)
    hook = setup.receiver.hook(then=503)
    hook.replies = [(503, RETRY_AFTER)] * 5
    channel = await webhook(setup, monitor.owner, hook)
    stage = setup.stage(NOTIFY_RETRY_MAX_SECONDS=300.0)
    stream = f"{setup.prefix}:notification"
    queue = setup.backend.queue
    await queue.ensure_group(stream, "notification-group")
    await queue.publish(stream, [alert_for(monitor).to_fields()])
    consumer = Consumer(
        queue=queue,
        stream=stream,
        group="notification-group",
        name="worker-1",
        handler=each_entry(stage.handle, 4),
        dead_letter_stream=f"{stream}:dlq",
        options=ConsumerOptions(block_ms=50, reclaim_idle_seconds=1),
    )
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))
    try:
        async with setup.running(stage):

            async def attempted_and_acknowledged() -> bool:
                stats = await queue.stats(stream, "notification-group")
                return len(hook.requests) == 1 and stats.pending == 0 and stats.lag == 0

            await eventually(attempted_and_acknowledged)
            await asyncio.sleep(0.5)  # no further attempt meanwhile
            assert stage.deliveries.room.running == 0  # no slot held while waiting
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)

    assert len(hook.requests) == 1
    [log] = await setup.logs(channel)
    assert (log.delivery_status, log.attempts) == ("failed", 1)
    assert log.error is not None
    assert "503" in log.error
    assert log.next_attempt_at is not None
    ahead = (log.next_attempt_at - datetime.now(UTC)).total_seconds()
    assert 290 <= ahead <= 300
    held = await setup.db.get(AlertChannel, channel.id)
    assert held is not None
    assert held.retry_after_until is not None
    assert held.retry_after_until >= log.next_attempt_at - timedelta(seconds=1)
    assert await setup.dead_letters() == []  # retried later, not dropped


async def test_retry_after_holds_its_own_channel_and_no_other(setup: Setup) -> None:
    monitor = await down_monitor(setup.db)
    busy = setup.receiver.hook(then=503)
    busy.replies = [(503, RETRY_AFTER)] * 5
    busy_channel = await webhook(setup, monitor.owner, busy)
    other = setup.receiver.hook()  # the same account's other channel
    await webhook(setup, monitor.owner, other)
    someone_else = await down_monitor(setup.db)
    stranger = setup.receiver.hook()  # another account's
    await webhook(setup, someone_else.owner, stranger)
    stage = setup.stage(NOTIFY_RETRY_MAX_SECONDS=300.0)

    async with setup.running(stage):
        await stage.handle(entry(alert_for(monitor)))

        async def first_attempts_made() -> bool:
            return len(busy.requests) == 1 and len(other.requests) == 1

        await eventually(first_attempts_made)
        # The account's next alert waits on the held channel only; another account's
        # alert goes at once.
        second = await monitor_of(setup, monitor.owner, "https://example.com/second")
        await stage.handle(entry(alert_for(second)))
        await stage.handle(entry(alert_for(someone_else)))

        async def others_delivered() -> bool:
            return len(other.requests) == 2 and len(stranger.requests) == 1

        await eventually(others_delivered)
        await asyncio.sleep(0.5)

    assert len(busy.requests) == 1  # nothing more before Retry-After has passed
    rows = {log.website_id: log for log in await setup.logs(busy_channel)}
    assert (rows[monitor.website.id].delivery_status, rows[monitor.website.id].attempts) == (
        "failed",
        1,
    )
    waiting = rows[second.website.id]
    assert (waiting.delivery_status, waiting.attempts) == ("pending", 0)
    for row in rows.values():
        assert row.next_attempt_at is not None
        assert (row.next_attempt_at - datetime.now(UTC)).total_seconds() > 290


async def test_a_slow_receiver_of_one_account_never_delays_another_accounts_alert(
    setup: Setup, http_targets: Targets
) -> None:
    # Account A: two channels whose receivers hang until released, and 6 monitors down.
    slow_one, slow_two = asyncio.Event(), asyncio.Event()
    http_targets.held.update(slow_one=slow_one, slow_two=slow_two)
    first = await down_monitor(setup.db)
    owner = first.owner
    monitors = [first]
    for n in range(5):
        monitors.append(await monitor_of(setup, owner, f"https://example.com/{n}"))
    await setup.db.channel(owner, "webhook", http_targets.url("slow_one"))
    await setup.db.channel(owner, "webhook", http_targets.url("slow_two"))
    # Account B: one alert, to a receiver that answers at once.
    other = await down_monitor(setup.db)
    quick = setup.receiver.hook()
    await webhook(setup, other.owner, quick)
    stage = setup.stage(NOTIFY_MAX_PER_CHANNEL=2, NOTIFY_MAX_PER_USER=3, NOTIFICATION_CONCURRENCY=4)

    try:
        async with setup.running(stage):
            for monitor in monitors:
                await stage.handle(entry(alert_for(monitor)))

            async def account_a_at_its_cap() -> bool:
                return len(http_targets.hits) == 3

            await eventually(account_a_at_its_cap)
            await asyncio.sleep(0.5)  # caps hold: no more requests to A's receivers
            hits = list(http_targets.hits)
            assert len(hits) == 3  # NOTIFY_MAX_PER_USER
            assert max(hits.count("slow_one"), hits.count("slow_two")) == 2  # per channel

            await stage.handle(entry(alert_for(other)))

            async def b_delivered() -> bool:
                return len(quick.requests) == 1

            await eventually(b_delivered, timeout=5)
            assert len(http_targets.hits) == 3  # A still waits its turn

            slow_one.set()
            slow_two.set()
            await eventually(setup.all_settled, timeout=10)
    finally:
        slow_one.set()
        slow_two.set()

    assert sorted(http_targets.hits) == ["slow_one"] * 6 + ["slow_two"] * 6
    logs = await setup.db.all(select(NotificationLog))
    assert {log.delivery_status for log in logs} == {"sent"}
