"""The monitoring stage (check job -> result -> status change) with the real HTTP check against
targets on loopback, on SQLite and PostgreSQL, with the in-process queue and Redis: every
result written once, the monitor moved forward, and exactly the confirmed changes emitted."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select, text

from runstate.checks.http import HttpCheck
from runstate.consumer import DONE, Consumer, ConsumerOptions, Outcome, Verdict
from runstate.domain.events import CheckJob, StatusChange, status_change_event_id
from runstate.domain.status import MonitorState, Status
from runstate.metrics import PipelineMetrics
from runstate.pipeline.monitor import MonitoringStage
from runstate.pipeline.status_change import StatusChangeStage
from runstate.queue.backend import QueueBackend, open_backend
from runstate.queue.base import DueCheck, Entry
from runstate.storage.tables import User, Website, WebsiteCheck
from tests.pipeline.conftest import (
    MakeMonitoringStage,
    StageDb,
    Targets,
    TcpProxy,
    job_for,
    lose_monitor_states,
    publish_and_read,
    stream_entries,
)


@dataclass
class Setup:
    db: StageDb
    backend: QueueBackend
    registry: CollectorRegistry
    targets: Targets
    stage: MonitoringStage
    prefix: str

    @property
    def status_change_stream(self) -> str:
        return f"{self.prefix}:status-change"

    def count(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    async def monitor(self, user: User, target: str, **values: object) -> Website:
        return await self.db.website(user, self.targets.url(target), **values)

    async def entries(self, *jobs: CheckJob | dict[str, str]) -> list[Entry]:
        items = [job if isinstance(job, dict) else job.to_fields() for job in jobs]
        return await publish_and_read(self.backend.queue, f"{self.prefix}:monitoring", items)

    async def batch(self, *jobs: CheckJob | dict[str, str]) -> list[Outcome]:
        """Handle ``jobs`` as one batch; the outcome of each, in order."""
        entries = await self.entries(*jobs)
        outcomes: dict[str, Outcome] = {}
        async for part in self.stage.handle_batch(entries):
            assert not set(part) & set(outcomes), "each entry is settled once"
            outcomes |= part
        assert set(outcomes) == {e.id for e in entries}
        return [outcomes[e.id] for e in entries]

    async def checks(self, website_id: uuid.UUID) -> list[WebsiteCheck]:
        return await self.db.all(
            select(WebsiteCheck)
            .where(WebsiteCheck.website_id == website_id)
            .order_by(WebsiteCheck.created_at)
        )

    async def website(self, website_id: uuid.UUID) -> Website:
        found = await self.db.get(Website, website_id)
        assert found is not None
        return found

    async def changes(self) -> list[StatusChange]:
        entries = await stream_entries(self.backend.queue, self.status_change_stream)
        return [StatusChange.from_fields(e.fields) for e in entries]


@pytest.fixture
async def setup(
    stage_db: StageDb,
    stage_backend: QueueBackend,
    stage_registry: CollectorRegistry,
    stage_prefix: str,
    http_targets: Targets,
    make_monitoring_stage: MakeMonitoringStage,
) -> AsyncIterator[Setup]:
    check = HttpCheck(allow_private=True)
    stage = make_monitoring_stage(check, concurrency=50)
    try:
        yield Setup(stage_db, stage_backend, stage_registry, http_targets, stage, stage_prefix)
    finally:
        await check.aclose()


def at_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


async def test_a_batch_writes_one_check_row_per_job_and_moves_each_monitor_forward(
    setup: Setup,
) -> None:
    user = await setup.db.user()
    up, down = await setup.monitor(user, "up"), await setup.monitor(user, "down")
    setup.targets.codes["down"] = 503

    outcomes = await setup.batch(job_for(up), job_for(down))

    assert outcomes == [DONE, DONE]
    [up_row] = await setup.checks(up.id)
    [down_row] = await setup.checks(down.id)
    assert (up_row.status, up_row.status_code, up_row.error) == ("up", 200, None)
    assert (down_row.status, down_row.status_code) == ("down", 503)
    assert down_row.error == "status 503 not in 200-399"
    assert up_row.region_id == down_row.region_id == setup.db.region_id
    assert up_row.response_time_ms is not None
    for website, row in ((up, up_row), (down, down_row)):
        moved = await setup.website(website.id)
        assert moved.last_checked_at == row.created_at
        assert moved.latest_response_time_ms == row.response_time_ms
        assert moved.current_status == row.status  # the first observation sets it
        assert moved.status_changed_at is None
    # ... the first UP without a status change; the first DOWN confirmed (confirmations 1)
    # is a change from UP, presumed until then, as any other DOWN.
    [first_down] = await setup.changes()
    assert (first_down.website_id, first_down.prev_status, first_down.current_status) == (
        down.id,
        Status.UP,
        Status.DOWN,
    )
    assert (await setup.backend.states.get(down.id)) == MonitorState(
        status=Status.DOWN, consecutive_failures=1, last_applied_ms=at_ms(down_row.created_at)
    )
    assert setup.count("runstate_check_results_written_total") == 2
    assert setup.count("runstate_checks_total", result="up") == 1
    assert setup.count("runstate_checks_total", result="status") == 1

    await setup.batch(job_for(up))

    first, second = await setup.checks(up.id)
    assert second.created_at > first.created_at
    assert (await setup.website(up.id)).last_checked_at == second.created_at


async def test_a_monitor_needing_two_confirmations_changes_once_on_the_second_failure(
    setup: Setup,
) -> None:
    user = await setup.db.user()
    website = await setup.monitor(user, "flaky", confirmations=2, recovery_confirmations=1)
    await setup.batch(job_for(website))  # up: the first observation
    setup.targets.codes["flaky"] = 500

    await setup.batch(job_for(website))
    assert await setup.changes() == []  # one failure is not yet DOWN
    await setup.batch(job_for(website))
    await setup.batch(job_for(website))  # still down: no second change

    [down] = await setup.changes()
    confirming = (await setup.checks(website.id))[2]
    assert (down.prev_status, down.current_status) == (Status.UP, Status.DOWN)
    assert down.website_id == website.id
    assert down.region_id == setup.db.region_id
    assert abs(at_ms(down.occurred_at) - at_ms(confirming.created_at)) <= 1
    assert down.event_id == status_change_event_id(website.id, at_ms(down.occurred_at))
    assert setup.count("runstate_status_changes_total", to="down") == 1

    setup.targets.codes["flaky"] = 200
    await setup.batch(job_for(website))

    _, recovered = await setup.changes()
    assert (recovered.prev_status, recovered.current_status) == (Status.DOWN, Status.UP)
    assert setup.count("runstate_status_changes_total", to="up") == 1


async def test_a_job_of_a_monitor_deleted_before_the_write_does_not_fail_the_batch(
    setup: Setup,
) -> None:
    user = await setup.db.user()
    kept, gone = await setup.monitor(user, "kept"), await setup.monitor(user, "gone")
    jobs = [job_for(kept), job_for(gone)]
    await setup.db.delete(Website, gone.id)

    outcomes = await setup.batch(*jobs)

    assert outcomes == [DONE, DONE]
    assert len(await setup.checks(kept.id)) == 1
    assert await setup.checks(gone.id) == []
    assert (await setup.website(kept.id)).current_status == "up"
    assert await setup.db.get(Website, gone.id) is None


async def test_a_lost_monitor_state_is_rebuilt_from_the_database_without_a_spurious_change(
    setup: Setup,
) -> None:
    user = await setup.db.user()
    still_down, recovering, still_up = [
        await setup.monitor(user, name) for name in ("still-down", "recovering", "still-up")
    ]
    jobs = [job_for(still_down), job_for(recovering), job_for(still_up)]
    await setup.batch(*jobs)  # all up: first observations
    setup.targets.codes |= {"still-down": 500, "recovering": 500}
    await setup.batch(*jobs)
    # The status-change stage records both changes: the database shows them DOWN.
    status_stage = StatusChangeStage(
        setup.db.sessions, setup.backend.queue, f"{setup.prefix}:notification", setup.stage.metrics
    )
    for n, down in enumerate(await setup.changes()):
        await status_stage.handle(Entry(f"{n}-1", down.to_fields()))
    assert (await setup.website(recovering.id)).current_status == "down"

    await lose_monitor_states(setup.backend, [w.id for w in (still_down, recovering, still_up)])
    assert await setup.backend.states.get(still_down.id) is None
    seen = {c.event_id for c in await setup.changes()}
    setup.targets.codes["recovering"] = 200
    await setup.batch(*jobs)

    # Rebuilt as DOWN, the recovering monitor recovers (and its incident can be resolved);
    # the others go on as the database shows them, without a change.
    [recovered] = [c for c in await setup.changes() if c.event_id not in seen]
    assert recovered.website_id == recovering.id
    assert (recovered.prev_status, recovered.current_status) == (Status.DOWN, Status.UP)
    latest = (await setup.checks(still_down.id))[-1]
    assert await setup.backend.states.get(still_down.id) == MonitorState(
        status=Status.DOWN, consecutive_failures=1, last_applied_ms=at_ms(latest.created_at)
    )
    rebuilt_up = await setup.backend.states.get(still_up.id)
    assert rebuilt_up is not None
    assert (rebuilt_up.status, rebuilt_up.consecutive_successes) == (Status.UP, 1)


async def test_the_pending_marks_of_a_batch_are_released_after_it(setup: Setup) -> None:
    user = await setup.db.user()
    websites = [await setup.monitor(user, f"pending-{n}") for n in range(3)]
    due = [DueCheck(w.id, stale_after_ms=60_000) for w in websites]
    now_ms = at_ms(datetime.now(UTC))
    assert await setup.backend.pending.mark(due, now_ms=now_ms) == [True] * 3
    assert await setup.backend.pending.mark(due, now_ms=now_ms) == [False] * 3

    await setup.batch(*(job_for(w) for w in websites))

    assert await setup.backend.pending.mark(due, now_ms=now_ms) == [True] * 3
    await setup.backend.pending.release([w.id for w in websites])


async def test_a_malformed_job_is_dead_and_the_rest_of_the_batch_is_written(
    setup: Setup,
) -> None:
    user = await setup.db.user()
    website = await setup.monitor(user, "fine")
    broken = job_for(website).to_fields()
    del broken["url"]
    wrong = {**job_for(website).to_fields(), "timeout_ms": "soon"}

    outcomes = await setup.batch(broken, job_for(website), wrong)

    first, second, third = outcomes
    assert first.verdict is Verdict.DEAD
    assert first.reason is not None
    assert "url" in first.reason
    assert second == DONE
    assert third.verdict is Verdict.DEAD
    assert len(await setup.checks(website.id)) == 1


async def test_a_batch_is_written_whole_except_for_monitors_deleted_while_it_ran(
    setup: Setup,
) -> None:
    user = await setup.db.user()
    websites = [await setup.monitor(user, f"many-{n}") for n in range(20)]
    gone = websites.pop()
    jobs = [job_for(w) for w in [*websites, gone]]
    await setup.db.delete(Website, gone.id)

    await setup.batch(*jobs)

    for website in websites:
        [row] = await setup.checks(website.id)
        assert row.status == "up"
    async with setup.db.sessions() as session:
        latest = await session.execute(
            select(Website.last_checked_at, Website.current_status).where(
                Website.id.in_([w.id for w in websites])
            )
        )
        assert all(row.last_checked_at is not None and row.current_status == "up" for row in latest)
        total = await session.scalar(text("SELECT count(*) FROM website_checks"))
    assert total == len(websites)


async def test_a_check_that_hangs_holds_back_no_other_check_of_its_batch(setup: Setup) -> None:
    """Each result is written and its entry settled when its own check ends: the healthy
    monitors' rows are in the database and their entries settled while one check hangs."""
    user = await setup.db.user()
    hanging = await setup.monitor(user, "hanging")
    healthy = [await setup.monitor(user, f"healthy-{n}") for n in range(3)]
    setup.targets.held["hanging"] = asyncio.Event()
    entries = await setup.entries(job_for(hanging), *(job_for(w) for w in healthy))
    hanging_entry = entries[0].id

    verdicts = setup.stage.handle_batch(entries)
    settled: dict[str, Outcome] = {}
    while len(settled) < len(healthy):
        settled |= await anext(verdicts)
    assert hanging_entry not in settled
    assert set(settled.values()) == {DONE}
    for website in healthy:
        assert [row.status for row in await setup.checks(website.id)] == ["up"]
    assert await setup.checks(hanging.id) == []

    setup.targets.held["hanging"].set()
    assert await anext(verdicts) == {hanging_entry: DONE}
    assert [row.status for row in await setup.checks(hanging.id)] == ["up"]


async def test_checks_beyond_the_cap_of_one_host_wait_without_holding_a_slot(
    setup: Setup,
) -> None:
    """With at most two checks at once per host, two checks of a hung host run and two wait
    for it, lending their read-ahead slots back; a monitor on another host is checked
    meanwhile."""
    stage = replace(setup.stage, concurrency=10, per_destination=2)
    user = await setup.db.user()
    hung_url = setup.targets.url("hung")
    hung = [await setup.db.website(user, f"{hung_url}?n={n}") for n in range(4)]
    other_url = setup.targets.url("other").replace("127.0.0.1", "localhost")
    other = await setup.db.website(user, other_url)
    release = setup.targets.held["hung"] = asyncio.Event()
    entries = await setup.entries(*(job_for(w) for w in hung), job_for(other))
    # As the consumer does: one read-ahead slot per entry read, back when it is settled.
    assert await stage.read_ahead.take(len(entries), asyncio.Event()) == 5

    verdicts = stage.handle_batch(entries)
    assert await anext(verdicts) == {entries[-1].id: DONE}
    stage.read_ahead.give_back(1)
    assert setup.targets.hits.count("hung") == 2
    assert stage.read_ahead.free == 10 - 4 + 2  # the two waiting checks lent theirs back

    release.set()
    settled: dict[str, Outcome] = {}
    async for part in verdicts:
        settled |= part
        stage.read_ahead.give_back(len(part))
    assert settled == dict.fromkeys((e.id for e in entries[:-1]), DONE)
    assert setup.targets.hits.count("hung") == 4
    assert stage.read_ahead.free == 10


# -- outages and dead letters ------------------------------------------------------------------


async def test_a_dead_lettered_check_releases_its_monitors_pending_mark(
    setup: Setup, stage_prefix: str
) -> None:
    """A job no retry can fix goes to the dead-letter stream and its monitor's pending mark
    goes with it: the monitor is checked again at its next due time, not minutes later."""
    user = await setup.db.user()
    website = await setup.monitor(user, "fine")
    due = [DueCheck(website.id, stale_after_ms=3_600_000)]
    now_ms = at_ms(datetime.now(UTC))
    assert await setup.backend.pending.mark(due, now_ms=now_ms) == [True]
    malformed = {**job_for(website).to_fields(), "timeout_ms": "soon"}
    stream = f"{stage_prefix}:monitoring"
    consumer = Consumer(
        queue=setup.backend.queue,
        stream=stream,
        group="monitoring",
        name="m1",
        handler=setup.stage.handle_batch,
        dead_letter_stream=f"{stream}:dlq",
        options=ConsumerOptions(block_ms=50, reclaim_idle_seconds=1),
        release=setup.stage.release_dead_letters,
    )
    await setup.backend.queue.ensure_group(stream, "monitoring")
    await setup.backend.queue.publish(stream, [malformed, {"website_id": "not a uuid"}])
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))
    try:
        for _ in range(250):
            if consumer.counters.dead_lettered == 2:
                break
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await running
    assert consumer.counters.dead_lettered == 2
    assert await setup.backend.pending.mark(due, now_ms=now_ms) == [True], "released"
    await setup.backend.pending.release([website.id])


@pytest.mark.redis
async def test_results_met_by_a_redis_outage_wait_in_place_and_are_written_once(
    stage_db: StageDb,
    stage_metrics: PipelineMetrics,
    stage_prefix: str,
    http_targets: Targets,
    redis_proxy: tuple[TcpProxy, str],
) -> None:
    """Redis gone while a group of results is recorded: the database write is not repeated,
    the state update waits until Redis is back, and the entry is DONE, not retried."""
    proxy, proxied_url = redis_proxy
    backend = open_backend(proxied_url)
    check = HttpCheck(allow_private=True)
    stage = MonitoringStage(
        sessions=stage_db.sessions,
        states=backend.states,
        pending=backend.pending,
        check=check,
        region_id=stage_db.region_id,
        status_change_stream=f"{stage_prefix}:status-change",
        metrics=stage_metrics,
        outage_retry_max_seconds=0.2,
    )
    user = await stage_db.user()
    website = await stage_db.website(user, http_targets.url("up"))
    stream = f"{stage_prefix}:monitoring"
    try:
        [entry] = await publish_and_read(backend.queue, stream, [job_for(website).to_fields()])
        await proxy.cut()
        handled = asyncio.create_task(_outcomes(stage, [entry]))
        await asyncio.sleep(1.5)  # the outage: longer than a few retries
        assert not handled.done(), "waiting for Redis, not given up"
        await proxy.restore()
        assert await asyncio.wait_for(handled, 10) == {entry.id: DONE}
        assert stage.outages.outages >= 1
        rows = await stage_db.all(select(WebsiteCheck).where(WebsiteCheck.website_id == website.id))
        assert len(rows) == 1, "the database write is not repeated"
        state = await backend.states.get(website.id)
        assert state is not None
        assert state.status is Status.UP
    finally:
        await stage.aclose()
        await check.aclose()
        if backend.redis is not None:
            await backend.redis.delete(stream, f"{stage_prefix}:status-change")
        await backend.aclose()


async def _outcomes(stage: MonitoringStage, entries: list[Entry]) -> dict[str, Outcome]:
    found: dict[str, Outcome] = {}
    async for part in stage.handle_batch(entries):
        found |= part
    return found
