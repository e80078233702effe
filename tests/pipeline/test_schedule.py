"""The scheduler (due monitors -> check jobs) on SQLite and PostgreSQL, with the in-process queue
and Redis: every monitor on its own fixed grid, spread over its interval, changes picked up
within a couple of polls, no pile-up behind a pending check, and one active scheduler."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from runstate.domain.events import CheckJob
from runstate.metrics import PipelineMetrics
from runstate.pipeline.schedule import Scheduler, SchedulerOptions, next_due_ms, phase_ms
from runstate.queue import keys
from runstate.queue.backend import QueueBackend, open_backend
from runstate.queue.base import DueCheck
from runstate.storage.tables import User, Website
from tests.pipeline.conftest import StageDb, TcpProxy, eventually

POLL = 0.3  # SCHEDULER_POLL_SECONDS
LEASE = 0.6  # SCHEDULER_LEASE_SECONDS
# Where two schedulers share a lease: long enough that a busy machine stalling the test's
# event loop for a few hundred ms does not pass the lease back and forth between them.
SHARED_LEASE = 1.2


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Running:
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def halt(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 5)


@dataclass
class Seen:
    enqueued_ms: int  # from the entry id: when the scheduler appended it
    job: CheckJob

    @property
    def due_ms(self) -> int:
        return int(self.job.scheduled_at.timestamp() * 1000)


@dataclass
class Worker:
    """Stands in for the monitoring workers: takes every job off the stream and, like them,
    releases the monitor's pending mark when done (unless told not to)."""

    backend: QueueBackend
    stream: str
    release: bool = True
    seen: list[Seen] = field(default_factory=list)

    def of(self, website_id: uuid.UUID) -> list[Seen]:
        return [s for s in self.seen if s.job.website_id == website_id]

    async def run(self, stop: asyncio.Event) -> None:
        queue = self.backend.queue
        await queue.ensure_group(self.stream, "stand-in")
        while not stop.is_set():
            entries = await queue.read(self.stream, "stand-in", "w", count=1000, block_ms=50)
            if not entries:
                continue
            jobs = [CheckJob.from_fields(e.fields) for e in entries]
            self.seen += [
                Seen(int(e.id.split("-")[0]), j) for e, j in zip(entries, jobs, strict=True)
            ]
            await queue.ack(self.stream, "stand-in", [e.id for e in entries])
            if self.release:
                await self.backend.pending.release([j.website_id for j in jobs])


@dataclass
class Setup:
    db: StageDb
    backend: QueueBackend
    twin: QueueBackend
    registry: CollectorRegistry
    metrics: PipelineMetrics
    prefix: str
    running: list[Running] = field(default_factory=list)
    website_ids: list[uuid.UUID] = field(default_factory=list)

    @property
    def stream(self) -> str:
        return f"{self.prefix}:monitoring"

    def scheduler(
        self,
        backend: QueueBackend | None = None,
        metrics: PipelineMetrics | None = None,
        *,
        lease_seconds: float = LEASE,
        sessions: async_sessionmaker[AsyncSession] | None = None,
        **options: Any,
    ) -> Scheduler:
        """A scheduler on the test's database and queue; ``options`` override the
        `SchedulerOptions` (``reconcile_seconds``, ``outage_retry_max_seconds``, …)."""
        backend = backend or self.backend
        return Scheduler(
            sessions=sessions or self.db.sessions,
            queue=backend.queue,
            pending=backend.pending,
            lease=backend.lease,
            holder=f"scheduler-{uuid.uuid4().hex[:6]}",
            metrics=metrics or self.metrics,
            options=SchedulerOptions(
                stream=self.stream,
                stream_maxlen=1_000_000,
                poll_seconds=POLL,
                lease_seconds=lease_seconds,
                lease_name=f"{self.prefix}:scheduler",
                load_chunk=64,  # several chunks per load
                **options,
            ),
        )

    def worker(self, *, release: bool = True) -> Worker:
        worker = Worker(self.backend, self.stream, release)
        self.start(worker.run)
        return worker

    def start(self, run: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> Running:
        stop = asyncio.Event()
        started = Running(stop, asyncio.create_task(run(stop)))
        self.running.append(started)
        return started

    async def monitors(self, count: int, **values: Any) -> list[Website]:
        user = await self.db.user()
        websites = [website(user, n, **values) for n in range(count)]
        await self.db.add(*websites)
        self.website_ids += [w.id for w in websites]
        return websites


def website(user: User, n: int, **values: Any) -> Website:
    values.setdefault("interval_seconds", 1)
    return Website(
        id=uuid.uuid4(), user_id=user.id, url=f"https://example.com/{n}/{uuid.uuid4().hex[:6]}",
        **values,
    )  # fmt: skip


@pytest.fixture
async def setup(
    stage_db: StageDb,
    stage_backend: QueueBackend,
    stage_twin: QueueBackend,
    stage_registry: CollectorRegistry,
    stage_metrics: PipelineMetrics,
    stage_prefix: str,
) -> AsyncIterator[Setup]:
    made = Setup(stage_db, stage_backend, stage_twin, stage_registry, stage_metrics, stage_prefix)
    try:
        yield made
    finally:
        for running in made.running:
            running.stop.set()
        if made.running:
            await asyncio.wait([r.task for r in made.running], timeout=5)
        # Marks live in one hash shared with other tests on the Redis: leave none behind.
        await stage_backend.pending.release(made.website_ids)


def count(registry: CollectorRegistry, name: str) -> float:
    return registry.get_sample_value(name) or 0.0


async def test_monitors_are_enqueued_once_per_interval_on_their_grid_and_spread_over_it(
    setup: Setup,
) -> None:
    websites = await setup.monitors(200, interval_seconds=2)
    worker = setup.worker()
    planner = setup.scheduler()
    scheduler = setup.start(planner.run)
    await asyncio.sleep(4.5)
    await scheduler.halt()
    # Loaded in chunks, and monitors checked alike share one settings object (memory).
    assert len(planner.plans) == 200
    assert len({id(plan.settings) for plan in planner.plans.values()}) == 1
    await asyncio.sleep(0.2)  # the stand-in worker takes the last ones off

    per_monitor = Counter(s.job.website_id for s in worker.seen)
    assert set(per_monitor) == {w.id for w in websites}
    assert set(per_monitor.values()) <= {1, 2, 3}
    assert 360 <= len(worker.seen) <= 520  # 200 monitors x 4.5 s / 2 s = 450
    for w in websites:
        seen = worker.of(w.id)
        dues = [s.due_ms for s in seen]
        assert all(due % 2000 == phase_ms(w.id, 2000) for due in dues)  # on its grid
        assert all(later - earlier == 2000 for earlier, later in itertools.pairwise(dues))
        assert all(s.enqueued_ms >= s.due_ms for s in seen)  # never early
        assert seen[0].job.url == w.url
        assert seen[0].job.interval_seconds == 2
    # No herd: at most a quarter of a round (200 monitors) due in any 200 ms slice ...
    assert max(Counter(s.due_ms // 200 for s in worker.seen).values()) <= 50
    # ... and each enqueued close to when it is due. (Counting enqueue times per slice too
    # would fail whenever the machine stalls the test's event loop for a few hundred ms.)
    lateness = sorted(s.enqueued_ms - s.due_ms for s in worker.seen)
    assert lateness[len(lateness) // 2] < 200
    assert lateness[len(lateness) * 9 // 10] < 500
    assert count(setup.registry, "runstate_scheduler_enqueued_total") == len(worker.seen)
    assert count(setup.registry, "runstate_scheduler_skipped_pending_total") == 0


async def test_created_paused_changed_and_deleted_monitors_take_effect_within_two_polls(
    setup: Setup,
) -> None:
    paused, changed, deleted = await setup.monitors(3)
    worker = setup.worker()
    setup.start(setup.scheduler().run)

    async def all_scheduled() -> bool:
        return all(worker.of(w.id) for w in (paused, changed, deleted))

    await eventually(all_scheduled, timeout=3)
    changed_at = now_ms()
    [created] = await setup.monitors(1)
    new_url = f"{changed.url}/moved"
    moment = datetime.now(UTC)
    await setup.db.update(Website, paused.id, paused=True, updated_at=moment)
    await setup.db.update(Website, changed.id, url=new_url, updated_at=moment)
    await setup.db.delete(Website, deleted.id)
    # From two polls after the last change committed, the scheduler must show all of them.
    settled = now_ms() + int(2 * POLL * 1000)

    async def created_and_changed_are_scheduled() -> bool:
        return bool(worker.of(created.id)) and any(
            s.job.url == new_url for s in worker.of(changed.id)
        )

    await eventually(created_and_changed_are_scheduled, timeout=2 * POLL + 1 + 0.5)
    await asyncio.sleep(1.3)  # more than an interval

    assert [s for s in worker.of(paused.id) if s.enqueued_ms > settled] == []
    assert [s for s in worker.of(deleted.id) if s.enqueued_ms > settled] == []
    assert all(s.job.url == new_url for s in worker.of(changed.id) if s.enqueued_ms > settled)
    assert len([s for s in worker.of(changed.id) if s.enqueued_ms > settled]) >= 1
    # Planned within two polls, then enqueued at its first slot (within an interval).
    assert worker.of(created.id)[0].enqueued_ms <= changed_at + (2 * POLL + 1) * 1000 + 500

    resumed_at = now_ms()
    await setup.db.update(Website, paused.id, paused=False, updated_at=datetime.now(UTC))

    async def resumed() -> bool:
        return any(s.enqueued_ms >= resumed_at for s in worker.of(paused.id))

    await eventually(resumed, timeout=2 * POLL + 1 + 0.5)


async def test_a_monitor_committed_with_an_old_change_time_is_still_scheduled(
    setup: Setup,
) -> None:
    [early] = await setup.monitors(1)
    worker = setup.worker()
    setup.start(setup.scheduler().run)

    async def early_scheduled() -> bool:
        return bool(worker.of(early.id))

    await eventually(early_scheduled, timeout=3)
    # A transaction that committed long after it stamped its row (a writer held up, or an
    # API process whose clock is behind): older than anything a change query looks for.
    [late] = await setup.monitors(1, updated_at=datetime.now(UTC) - timedelta(hours=1))

    async def late_scheduled() -> bool:
        return bool(worker.of(late.id))

    await eventually(late_scheduled, timeout=2 * POLL + 1 + 0.5)


async def test_a_monitor_whose_check_is_still_pending_is_not_enqueued_again(
    setup: Setup,
) -> None:
    website_, deleted = await setup.monitors(2)
    worker = setup.worker(release=False)  # the checks never finish
    setup.start(setup.scheduler().run)

    await asyncio.sleep(2.3)  # two more slots pass

    assert len(worker.of(website_.id)) == len(worker.of(deleted.id)) == 1
    assert count(setup.registry, "runstate_scheduler_skipped_pending_total") >= 2
    assert count(setup.registry, "runstate_scheduler_enqueued_total") == 2

    await setup.backend.pending.release([website_.id])  # its check finished

    async def enqueued_again() -> bool:
        return len(worker.of(website_.id)) == 2

    await eventually(enqueued_again, timeout=2)

    # A deleted monitor's mark goes with it (or it would stay in the hash for good).
    await setup.db.delete(Website, deleted.id)
    due = [DueCheck(deleted.id, stale_after_ms=3_600_000)]

    async def mark_released() -> bool:
        return await setup.backend.pending.mark(due, now_ms=now_ms()) == [True]

    await eventually(mark_released, timeout=2 * POLL + 0.5, every=0.05)


async def test_of_two_schedulers_only_the_lease_holder_enqueues_and_the_other_takes_over(
    setup: Setup,
) -> None:
    await setup.monitors(5)
    worker = setup.worker()
    first = setup.scheduler(lease_seconds=SHARED_LEASE)
    other_registry = CollectorRegistry()
    second = setup.scheduler(
        setup.twin, PipelineMetrics(other_registry), lease_seconds=SHARED_LEASE
    )
    running_first = setup.start(first.run)

    async def first_is_active() -> bool:
        return first.is_active

    await eventually(first_is_active, timeout=2)
    setup.start(second.run)
    await asyncio.sleep(1.5)

    assert not second.is_active
    assert count(other_registry, "runstate_scheduler_enqueued_total") == 0
    assert count(setup.registry, "runstate_scheduler_enqueued_total") >= 5
    assert count(other_registry, "runstate_scheduler_active") == 0
    assert count(setup.registry, "runstate_scheduler_active") == 1

    await running_first.halt()  # lets go of the lease
    stopped = time.monotonic()

    async def second_is_active() -> bool:
        return second.is_active

    await eventually(second_is_active, timeout=2 * SHARED_LEASE, every=0.01)
    assert time.monotonic() - stopped < 2 * SHARED_LEASE
    before = len(worker.seen)

    async def second_enqueues() -> bool:
        return count(other_registry, "runstate_scheduler_enqueued_total") > 0

    await eventually(second_enqueues, timeout=2)
    assert len(worker.seen) > before


async def test_a_standby_takes_over_when_the_holder_dies_without_letting_go(
    setup: Setup,
) -> None:
    await setup.monitors(2)
    setup.worker()
    first, second = (
        setup.scheduler(lease_seconds=SHARED_LEASE),
        setup.scheduler(
            setup.twin, PipelineMetrics(CollectorRegistry()), lease_seconds=SHARED_LEASE
        ),
    )
    running_first = setup.start(first.run)

    async def first_is_active() -> bool:
        return first.is_active

    await eventually(first_is_active, timeout=2)
    setup.start(second.run)
    await asyncio.sleep(0.5)
    assert not second.is_active

    running_first.task.cancel()  # dies: the lease is left to expire
    died = time.monotonic()

    async def second_is_active() -> bool:
        return second.is_active

    await eventually(second_is_active, timeout=2 * SHARED_LEASE + 0.5, every=0.01)
    # Not before the lease expired (renewed a third of a lease or less before it died) ...
    assert time.monotonic() - died > SHARED_LEASE / 2
    # ... and within two lease periods.
    assert time.monotonic() - died < 2 * SHARED_LEASE


def test_a_due_time_is_the_first_grid_point_strictly_after_the_given_time() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        website_id = uuid.UUID(int=rng.getrandbits(128), version=4)
        interval = rng.choice((1, 2, 30, 60, 3600))
        interval_ms = interval * 1000
        after = rng.randrange(1_600_000_000_000, 1_900_000_000_000)
        phase = phase_ms(website_id, interval_ms)
        due = next_due_ms(website_id, interval, after)

        assert 0 <= phase < interval_ms
        assert after < due <= after + interval_ms
        assert (due - phase) % interval_ms == 0
        assert next_due_ms(website_id, interval, due) == due + interval_ms
        assert next_due_ms(website_id, interval, due - 1) == due
        assert phase_ms(website_id, interval_ms) == phase  # stable


def test_phases_spread_monitors_evenly_over_their_interval() -> None:
    phases = [phase_ms(uuid.uuid4(), 2000) for _ in range(4000)]
    per_tenth = Counter(p * 10 // 2000 for p in phases)
    assert sorted(per_tenth) == list(range(10))
    assert all(300 <= n <= 500 for n in per_tenth.values())  # 400 expected in each tenth


@pytest.mark.redis
async def test_the_scheduler_rides_out_an_outage_of_redis_and_goes_on_enqueuing(
    stage_db: StageDb,
    stage_registry: CollectorRegistry,
    stage_metrics: PipelineMetrics,
    stage_prefix: str,
    redis_url: str,
    redis_proxy: tuple[TcpProxy, str],
) -> None:
    proxy, proxied_url = redis_proxy
    direct, proxied = open_backend(redis_url), open_backend(proxied_url)
    # The scheduler reaches Redis through the proxy; the stand-in worker directly.
    setup = Setup(stage_db, direct, direct, stage_registry, stage_metrics, stage_prefix)
    try:
        websites = await setup.monitors(10)
        worker = setup.worker()
        # A long lease: the outage shows up in enqueuing, not first in renewing the lease.
        scheduler = setup.start(setup.scheduler(proxied, lease_seconds=6).run)

        async def checks_flow() -> bool:
            return len(worker.seen) >= 10

        await eventually(checks_flow, timeout=3)
        await proxy.cut()
        await asyncio.sleep(1.5)  # every monitor falls due meanwhile
        assert not scheduler.task.done()  # still running, standing by

        await proxy.restore()
        restored = now_ms()

        async def flowing_again() -> bool:
            return {s.job.website_id for s in worker.seen if s.enqueued_ms > restored} == {
                w.id for w in websites
            }

        await eventually(flowing_again, timeout=6)
        await scheduler.halt()
    finally:
        for running in setup.running:
            running.stop.set()
        await asyncio.wait([r.task for r in setup.running], timeout=5)
        await direct.pending.release(setup.website_ids)
        assert direct.redis is not None
        await direct.redis.delete(setup.stream, keys.lease_key(f"{stage_prefix}:scheduler"))
        await proxied.aclose()
        await direct.aclose()
