"""The scheduler's full reconcile, on SQLite and PostgreSQL with the in-process queue and
Redis: an edit stamped with an `updated_at` far behind the newest the scheduler has seen (an
API process whose clock is behind, a commit that waited on a lock) escapes the change poll,
and the next reconcile applies it all the same — pause, URL change, deletion, creation."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from runstate.pipeline.schedule import Scheduler
from runstate.storage.tables import Website
from tests.pipeline.conftest import eventually
from tests.pipeline.test_schedule import POLL, Setup, Worker, now_ms, website
from tests.pipeline.test_schedule import setup as setup  # the fixture

RECONCILE = 1.5  # SCHEDULER_RECONCILE_SECONDS
HOUR = timedelta(hours=1)


@dataclass
class Edited:
    paused: Website
    moved: Website
    deleted: Website
    created: Website
    bystander: Website
    new_url: str
    at_ms: int  # when the edits committed


async def edit_with_a_lagging_clock(setup: Setup, worker: Worker, scheduler: Scheduler) -> Edited:
    """Four monitors scheduled; then, in one transaction stamped an hour in the past, one
    paused, one moved to a new URL, one deleted and one created (the count stays the same,
    and the newest `updated_at` does not move)."""
    paused, moved, deleted = await setup.monitors(3)
    # The newest change stays where it was (on a monitor the edits leave alone), as it does
    # among many monitors: the edits do not move it.
    [bystander] = await setup.monitors(1)
    setup.start(scheduler.run)

    async def all_scheduled() -> bool:
        return all(worker.of(w.id) for w in (paused, moved, deleted))

    await eventually(all_scheduled, timeout=3)
    await asyncio.sleep(2 * POLL)  # the polls have seen the newest change
    past = datetime.now(UTC) - HOUR
    new_url = f"{moved.url}/moved"
    created = website(await setup.db.user(), 99, updated_at=past, time_added=past)
    setup.website_ids.append(created.id)
    async with setup.db.sessions() as session, session.begin():
        for row, values in ((paused, {"paused": True}), (moved, {"url": new_url})):
            found = await session.get(Website, row.id)
            assert found is not None
            for name, value in {**values, "updated_at": past}.items():
                setattr(found, name, value)
        gone = await session.get(Website, deleted.id)
        assert gone is not None
        await session.delete(gone)
        session.add(created)
    return Edited(paused, moved, deleted, created, bystander, new_url, now_ms())


async def test_edits_stamped_far_in_the_past_are_applied_by_the_next_reconcile(
    setup: Setup,
) -> None:
    worker = setup.worker()
    scheduler = setup.scheduler(reconcile_seconds=RECONCILE)
    edited = await edit_with_a_lagging_clock(setup, worker, scheduler)
    # The next reconcile starts within RECONCILE of the edits (plus a poll it may wait
    # behind); from then on the scheduler must show all of them.
    settled = edited.at_ms + int((RECONCILE + POLL + 0.5) * 1000)

    async def created_and_moved_are_scheduled() -> bool:
        return bool(worker.of(edited.created.id)) and any(
            s.job.url == edited.new_url for s in worker.of(edited.moved.id)
        )

    await eventually(created_and_moved_are_scheduled, timeout=RECONCILE + POLL + 2)
    await asyncio.sleep(max(settled - now_ms(), 0) / 1000 + 1.3)  # past settled, an interval

    assert [s for s in worker.of(edited.paused.id) if s.enqueued_ms > settled] == []
    assert [s for s in worker.of(edited.deleted.id) if s.enqueued_ms > settled] == []
    later = [s for s in worker.of(edited.moved.id) if s.enqueued_ms > settled]
    assert later
    assert all(s.job.url == edited.new_url for s in later)
    assert edited.paused.id in scheduler.book.paused
    assert set(scheduler.plans) == {edited.moved.id, edited.created.id, edited.bystander.id}


async def test_the_change_poll_alone_misses_edits_stamped_in_the_past(setup: Setup) -> None:
    """Why the reconcile exists: with none due for an hour, the same edits go unseen for
    many polls (the paused monitor is still checked, the URL is the old one, the created
    monitor is never checked)."""
    worker = setup.worker()
    scheduler = setup.scheduler(reconcile_seconds=3600)
    edited = await edit_with_a_lagging_clock(setup, worker, scheduler)
    await asyncio.sleep(10 * POLL)

    late = edited.at_ms + int(3 * POLL * 1000)
    assert [s for s in worker.of(edited.paused.id) if s.enqueued_ms > late]
    assert all(s.job.url == edited.moved.url for s in worker.of(edited.moved.id))
    assert worker.of(edited.created.id) == []


async def test_a_reconcile_keeps_each_unchanged_monitor_on_its_slot_and_reads_in_chunks(
    setup: Setup,
) -> None:
    websites = await setup.monitors(150, interval_seconds=2)  # several 64-row chunks
    worker = setup.worker()
    scheduler = setup.scheduler(reconcile_seconds=0.5)
    setup.start(scheduler.run)
    await asyncio.sleep(4.5)  # several reconciles

    assert set(scheduler.plans) == {w.id for w in websites}
    for w in websites:
        dues = [s.due_ms for s in worker.of(w.id)]
        # Never enqueued twice for a slot, never a slot skipped: a reconcile leaves a plan
        # that did not change where it was.
        assert dues == sorted(set(dues))
        assert all(later - earlier == 2000 for earlier, later in itertools.pairwise(dues))
        assert len(dues) >= 2
    assert len({id(plan.settings) for plan in scheduler.plans.values()}) == 1
