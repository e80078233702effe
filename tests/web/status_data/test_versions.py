"""A status page's version moves in the pipeline's own transactions, on SQLite and
PostgreSQL: a monitor's status change (the status-change stage), its first status (the
monitoring stage's batch write), and a new UTC day (housekeeping); never for a monitor on no
page, and once per change."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from runstate.checks.http import HttpCheck
from runstate.domain.events import StatusChange, status_change_event_id
from runstate.domain.status import Status
from runstate.metrics import PipelineMetrics
from runstate.pipeline.monitor import MonitoringStage
from runstate.pipeline.status_change import StatusChangeStage
from runstate.queue.backend import QueueBackend
from runstate.storage import status_pages
from runstate.storage.housekeeping import status_pages_new_day_job
from runstate.storage.tables import StatusPage, User, Website
from tests.pipeline.conftest import (
    MakeMonitoringStage,
    StageDb,
    Targets,
    job_for,
    publish_and_read,
)


async def new_page(db: StageDb, owner: User, *website_ids: uuid.UUID) -> uuid.UUID:
    async with db.sessions() as session, session.begin():
        page = await status_pages.create_page(
            session, owner.id, f"page-{uuid.uuid4().hex[:8]}", "Status", [("", list(website_ids))]
        )
        return page.id


async def version(db: StageDb, page_id: uuid.UUID) -> tuple[int, datetime]:
    page = await db.get(StatusPage, page_id)
    assert page is not None
    return page.version, page.version_changed_at


def change(db: StageDb, website: Website, to: Status, at: datetime) -> StatusChange:
    return StatusChange(
        event_id=status_change_event_id(website.id, int(at.timestamp() * 1000)),
        website_id=website.id,
        region_id=db.region_id,
        prev_status=Status.UP if to is Status.DOWN else Status.DOWN,
        current_status=to,
        occurred_at=at,
    )


@pytest.fixture
def status_stage(
    stage_db: StageDb, stage_backend: QueueBackend, stage_metrics: PipelineMetrics
) -> StatusChangeStage:
    return StatusChangeStage(
        stage_db.sessions, stage_backend.queue, "test:notifications", stage_metrics
    )


async def test_a_status_change_bumps_the_pages_of_its_monitor_and_no_other(
    stage_db: StageDb, status_stage: StatusChangeStage
) -> None:
    owner = await stage_db.user()
    shown = await stage_db.website(owner, "https://shown.example/", current_status="up")
    elsewhere = await stage_db.website(owner, "https://elsewhere.example/", current_status="up")
    both = await new_page(stage_db, owner, shown.id)
    also = await new_page(stage_db, owner, shown.id, elsewhere.id)
    other = await new_page(stage_db, owner, elsewhere.id)
    before = await version(stage_db, both)
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)

    await status_stage.record(change(stage_db, shown, Status.DOWN, at))

    moved = await version(stage_db, both)
    assert moved[0] == 2
    assert moved[1] > before[1]
    assert (await version(stage_db, also))[0] == 2
    assert (await version(stage_db, other))[0] == 1
    # An older change arriving late shows nothing new: no bump.
    await status_stage.record(change(stage_db, shown, Status.UP, at - timedelta(minutes=1)))
    assert (await version(stage_db, both))[0] == 2
    await status_stage.record(change(stage_db, shown, Status.UP, at + timedelta(minutes=1)))
    assert (await version(stage_db, both))[0] == 3


async def test_a_monitor_on_no_page_changes_status_without_touching_any_page(
    stage_db: StageDb, status_stage: StatusChangeStage
) -> None:
    owner = await stage_db.user()
    lonely = await stage_db.website(owner, "https://lonely.example/", current_status="up")
    page = await new_page(stage_db, owner)
    await status_stage.record(change(stage_db, lonely, Status.DOWN, datetime.now(UTC)))
    assert (await version(stage_db, page))[0] == 1
    assert (await stage_db.get(Website, lonely.id)).current_status == "down"  # type: ignore[union-attr]


@pytest.fixture
async def monitoring(
    http_targets: Targets, make_monitoring_stage: MakeMonitoringStage
) -> AsyncIterator[MonitoringStage]:
    check = HttpCheck(allow_private=True)
    try:
        yield make_monitoring_stage(check, concurrency=10)
    finally:
        await check.aclose()


async def run_batch(
    stage: MonitoringStage, backend: QueueBackend, prefix: str, *websites: Website
) -> None:
    items = [job_for(w).to_fields() for w in websites]
    entries = await publish_and_read(backend.queue, f"{prefix}:monitoring", items)
    async for _ in stage.handle_batch(entries):
        pass


async def test_a_first_status_set_by_a_batch_bumps_its_pages_once(
    stage_db: StageDb,
    stage_backend: QueueBackend,
    stage_prefix: str,
    http_targets: Targets,
    monitoring: MonitoringStage,
) -> None:
    owner = await stage_db.user()
    new = await stage_db.website(owner, http_targets.url("new"))
    known = await stage_db.website(owner, http_targets.url("known"), current_status="up")
    lonely = await stage_db.website(owner, http_targets.url("lonely"))
    page_of_new = await new_page(stage_db, owner, new.id)
    page_of_known = await new_page(stage_db, owner, known.id)

    await run_batch(monitoring, stage_backend, stage_prefix, new, known, lonely)

    assert (await stage_db.get(Website, new.id)).current_status == "up"  # type: ignore[union-attr]
    assert (await version(stage_db, page_of_new))[0] == 2
    assert (await version(stage_db, page_of_known))[0] == 1
    await run_batch(monitoring, stage_backend, stage_prefix, new, known)  # nothing new shown
    assert (await version(stage_db, page_of_new))[0] == 2


async def test_a_new_utc_day_bumps_each_page_not_bumped_since_once(stage_db: StageDb) -> None:
    owner = await stage_db.user()
    stale, fresh = await new_page(stage_db, owner), await new_page(stage_db, owner)
    yesterday = datetime.now(UTC) - timedelta(days=1)
    await stage_db.update(StatusPage, stale, version_changed_at=yesterday)
    job = status_pages_new_day_job(stage_db.sessions)

    await job.run()
    await job.run()  # again the same day: nothing more

    assert (await version(stage_db, stale))[0] == 2
    assert (await version(stage_db, fresh))[0] == 1
