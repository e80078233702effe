"""The hourly and daily rollups, written by the monitoring stage in the transaction that
writes the checks, say what the raw checks say: after a mixed batch, a group write retried
after its commit was lost, an entry checked again after a crash, and a late result. On
SQLite and PostgreSQL, through the stage's own write path; only the targets are scripted."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import event, select, text
from sqlalchemy.orm import Session

from runstate.checks.base import CheckResult, ErrorKind
from runstate.domain.events import CheckJob
from runstate.history.latency import LATENCY_COLUMNS, bucket_index
from runstate.history.partitions import existing_partition_days, partition_name
from runstate.history.rollups import PRIOR_COLUMNS, TOTALLED
from runstate.metrics import PipelineMetrics
from runstate.pipeline.monitor import CheckedJob, MonitoringStage
from runstate.queue.backend import QueueBackend, open_backend
from runstate.storage.db import create_engine, session_factory
from runstate.storage.migrate import ensure_region, upgrade_schema
from runstate.storage.tables import DailyRollup, HourlyRollup, User, Website, WebsiteCheck
from tests.api.server import postgres_database
from tests.pipeline.conftest import StageDb, publish_and_read

HOUR, DAY = 3600, 86400


@dataclass
class ScriptedCheck:
    """A check whose target answers what ``answers`` holds for its URL (UP in 100 ms until
    told otherwise)."""

    answers: dict[str, CheckResult] = field(default_factory=dict)

    async def run(self, job: CheckJob) -> CheckResult:
        return self.answers.get(job.url, CheckResult.up(response_time_ms=100, status_code=200))

    async def aclose(self) -> None:
        return None


def up(ms: int) -> CheckResult:
    return CheckResult.up(response_time_ms=ms, status_code=200)


def down(ms: int | None = None) -> CheckResult:
    return CheckResult.down(ErrorKind.STATUS, "status 503", response_time_ms=ms, status_code=503)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'runstate.db'}"
        return
    with postgres_database(request.getfixturevalue("postgres_admin_url")) as url:
        yield url


@dataclass
class Setup:
    db: StageDb
    backend: QueueBackend
    check: ScriptedCheck
    stage: MonitoringStage
    user: User

    async def monitor(self, interval_seconds: int = 60) -> Website:
        url = f"http://target.example/{uuid.uuid4().hex[:8]}"
        return await self.db.website(self.user, url, interval_seconds=interval_seconds)

    def job(self, website: Website) -> CheckJob:
        return CheckJob(
            website_id=website.id,
            url=website.url,
            method=website.method,
            timeout_ms=5000,
            expected_status=website.expected_status,
            keyword=website.keyword,
            confirmations=website.confirmations,
            recovery_confirmations=website.recovery_confirmations,
            interval_seconds=website.interval_seconds,
            scheduled_at=datetime.now(UTC),
        )

    async def batch(self, *jobs: CheckJob, stream: str = "monitoring") -> None:
        """Check ``jobs`` as one batch read from the queue, as a worker does."""
        entries = await publish_and_read(
            self.backend.queue, stream, [job.to_fields() for job in jobs]
        )
        async for _ in self.stage.handle_batch(entries):
            pass

    async def record(self, *results: tuple[Website, CheckResult, datetime]) -> None:
        """Write one group of results that finished at the given times (a late one too)."""
        await self.stage._record(  # the group write the batches above end in
            [CheckedJob(self.job(w), result, at) for w, result, at in results]
        )

    async def raw_checks(self) -> list[WebsiteCheck]:
        return await self.db.all(select(WebsiteCheck))

    async def assert_rollups_equal_the_raw_checks(self) -> None:
        intervals = {w.id: w.interval_seconds for w in await self.db.all(select(Website))}
        checks = await self.raw_checks()
        for table, length in ((HourlyRollup, HOUR), (DailyRollup, DAY)):
            stored = {
                (r.website_id, r.bucket_start, r.region_id): _columns(r)
                for r in await self.db.all(select(table))
            }
            assert stored == _aggregate(checks, intervals, length), table.__tablename__
        await self.assert_running_totals_add_up()

    async def assert_running_totals_add_up(self) -> None:
        """Each daily rollup's prior_* is the sum of its monitor's and region's earlier ones."""
        rows = await self.db.all(select(DailyRollup))
        for row in rows:
            earlier = [
                r
                for r in rows
                if (r.website_id, r.region_id) == (row.website_id, row.region_id)
                and r.bucket_start < row.bucket_start
            ]
            priors = {f"prior_{c}": getattr(row, f"prior_{c}") for c in TOTALLED}
            sums = {f"prior_{c}": sum(getattr(r, c) for r in earlier) for c in TOTALLED}
            assert priors == sums, (row.website_id, row.bucket_start)


def _columns(rollup: HourlyRollup | DailyRollup) -> dict[str, Any]:
    key = ("website_id", "bucket_start", "region_id")
    names = [c.name for c in rollup.__table__.columns if c.name not in (*key, *PRIOR_COLUMNS)]
    return {name: getattr(rollup, name) for name in names}


def _aggregate(
    checks: list[WebsiteCheck], intervals: dict[uuid.UUID, int], length: int
) -> dict[tuple[uuid.UUID, datetime, int], dict[str, Any]]:
    """What the raw checks add up to, bucket by bucket (the reference the rollups must meet:
    every bucket here is written by one group write, so the cap applies once)."""
    found: dict[tuple[uuid.UUID, datetime, int], dict[str, Any]] = {}
    for c in checks:
        seconds = c.created_at.timestamp() // length * length
        start = datetime.fromtimestamp(seconds, UTC)
        row = found.setdefault(
            (c.website_id, start, c.region_id),
            {"checks": 0, "up_checks": 0, "up": 0, "down": 0, "times": []},
        )
        row["checks"] += 1
        row["up_checks"] += c.status == "up"
        row["up" if c.status == "up" else "down"] += intervals[c.website_id]
        if c.response_time_ms is not None:
            row["times"].append(c.response_time_ms)
    expected = {}
    for key, row in found.items():
        times = row["times"]
        histogram = [0] * len(LATENCY_COLUMNS)
        for ms in times:
            histogram[bucket_index(ms)] += 1
        up_seconds = min(row["up"], length)
        expected[key] = {
            "checks": row["checks"],
            "up_checks": row["up_checks"],
            "up_seconds": up_seconds,
            "down_seconds": min(row["down"], length - up_seconds),
            "timed_checks": len(times),
            "response_time_sum_ms": sum(times),
            "response_time_min_ms": min(times, default=None),
            "response_time_max_ms": max(times, default=None),
            **dict(zip(LATENCY_COLUMNS, histogram, strict=True)),
        }
    return expected


@pytest.fixture
async def setup(database_url: str) -> AsyncIterator[Setup]:
    engine = create_engine(database_url)
    await upgrade_schema(engine)
    region_id = await ensure_region(engine, "local")
    kind = "postgres" if engine.dialect.name == "postgresql" else "sqlite"
    db = StageDb(kind, database_url, engine, session_factory(engine), region_id)
    backend = open_backend(None)
    check = ScriptedCheck()
    stage = MonitoringStage(
        sessions=db.sessions,
        states=backend.states,
        pending=backend.pending,
        check=check,
        region_id=region_id,
        status_change_stream="status-change",
        metrics=PipelineMetrics(CollectorRegistry()),
        outage_retry_max_seconds=0.2,
    )
    try:
        yield Setup(db, backend, check, stage, await db.user())
    finally:
        await stage.aclose()
        await backend.aclose()
        await engine.dispose()


async def test_the_rollups_of_a_mixed_batch_equal_the_raw_checks(setup: Setup) -> None:
    """UP and DOWN, timed and not, every histogram boundary, two checks of one monitor, and
    buckets whose seconds are capped (two 50-minute checks in one hour stand for the hour)."""
    answers = [up(5), up(10), up(11), down(None), down(40), up(10_000), up(10_001), up(2500)]
    monitors = [await setup.monitor() for _ in answers]
    for website, answer in zip(monitors, answers, strict=True):
        setup.check.answers[website.url] = answer
    long_up = await setup.monitor(interval_seconds=3000)
    mixed = await setup.monitor(interval_seconds=2000)
    setup.check.answers[mixed.url] = down(None)
    now = datetime.now(UTC)
    await setup.batch(*(setup.job(w) for w in monitors), setup.job(monitors[0]))
    await setup.record(
        (long_up, up(20), now),
        (long_up, up(30), now + timedelta(microseconds=1)),
        (mixed, up(20), now),
        (mixed, down(None), now + timedelta(microseconds=1)),
    )

    assert len(await setup.raw_checks()) == len(answers) + 1 + 4
    await setup.assert_rollups_equal_the_raw_checks()
    [hour] = await setup.db.all(select(HourlyRollup).where(HourlyRollup.website_id == long_up.id))
    assert (hour.up_seconds, hour.down_seconds) == (HOUR, 0)
    [hour] = await setup.db.all(select(HourlyRollup).where(HourlyRollup.website_id == mixed.id))
    assert (hour.up_seconds, hour.down_seconds) == (2000, HOUR - 2000)
    [day] = await setup.db.all(select(DailyRollup).where(DailyRollup.website_id == mixed.id))
    assert (day.up_seconds, day.down_seconds) == (2000, 2000)


async def test_a_group_write_retried_after_its_commit_was_lost_counts_once(
    setup: Setup,
) -> None:
    """The first commit succeeds but its answer never arrives: the write is tried again, in
    place, and finds its rows already there."""
    websites = [await setup.monitor() for _ in range(3)]
    lost: list[bool] = []

    def lose_the_first_answer(_session: Session) -> None:
        if not lost:
            lost.append(True)
            raise ConnectionResetError("the answer to COMMIT was lost")

    event.listen(Session, "after_commit", lose_the_first_answer)
    try:
        await setup.batch(*(setup.job(w) for w in websites))
    finally:
        event.remove(Session, "after_commit", lose_the_first_answer)

    assert lost, "a commit was lost"
    assert setup.stage.outages.outages == 1
    assert len(await setup.raw_checks()) == 3
    for website in websites:
        [hour] = await setup.db.all(
            select(HourlyRollup).where(HourlyRollup.website_id == website.id)
        )
        assert hour.checks == 1
    await setup.assert_rollups_equal_the_raw_checks()


async def test_the_same_group_written_twice_counts_once(setup: Setup) -> None:
    website = await setup.monitor()
    at = datetime.now(UTC)
    group = [(website, up(120), at), (website, down(30), at + timedelta(seconds=1))]

    await setup.record(*group)
    await setup.record(*group)

    assert len(await setup.raw_checks()) == 2
    [hour] = await setup.db.all(select(HourlyRollup))
    assert (hour.checks, hour.up_checks, hour.up_seconds, hour.down_seconds) == (2, 1, 60, 60)
    await setup.assert_rollups_equal_the_raw_checks()


async def test_an_entry_checked_again_after_a_crash_before_its_ack_adds_its_second_result(
    setup: Setup,
) -> None:
    """Written, then the worker dies before acknowledging: the entry is checked again, a
    second real result, and the rollups count both results, as the raw checks do."""
    website = await setup.monitor()
    job = setup.job(website)
    entries = await publish_and_read(setup.backend.queue, "monitoring", [job.to_fields()])
    async for _ in setup.stage.handle_batch(entries):
        pass  # written; never acknowledged
    setup.check.answers[website.url] = down(None)
    async for _ in setup.stage.handle_batch(entries):  # redelivered
        pass

    assert [c.status for c in await setup.raw_checks()] in (["up", "down"], ["down", "up"])
    [day] = await setup.db.all(select(DailyRollup))
    assert (day.checks, day.up_checks, day.timed_checks) == (2, 1, 1)
    await setup.assert_rollups_equal_the_raw_checks()


async def test_a_late_result_updates_its_older_hour_and_day_and_not_the_latest_check(
    setup: Setup,
) -> None:
    website = await setup.monitor()
    now = datetime.now(UTC)
    await setup.record((website, up(100), now))
    before = {r.bucket_start: r.checks for r in await setup.db.all(select(HourlyRollup))}

    three_hours_ago, two_days_ago = now - timedelta(hours=3), now - timedelta(days=2)
    await setup.record((website, down(None), three_hours_ago), (website, up(50), two_days_ago))

    hours = {r.bucket_start: r.checks for r in await setup.db.all(select(HourlyRollup))}
    assert hours == {
        **before,
        three_hours_ago.replace(minute=0, second=0, microsecond=0): 1,
        two_days_ago.replace(minute=0, second=0, microsecond=0): 1,
    }
    days = {r.bucket_start.date() for r in await setup.db.all(select(DailyRollup))}
    assert days == {now.date(), three_hours_ago.date(), two_days_ago.date()}
    moved = await setup.db.get(Website, website.id)
    assert moved is not None
    assert (moved.last_checked_at, moved.latest_response_time_ms) == (now, 100), "not moved back"
    await setup.assert_rollups_equal_the_raw_checks()


@pytest.mark.postgres
async def test_a_result_of_a_day_without_a_partition_makes_the_partition(setup: Setup) -> None:
    if setup.db.kind != "postgres":
        pytest.skip("SQLite keeps the checks in one table")
    day = date.today() - timedelta(days=20)
    async with setup.db.engine.begin() as connection:
        await connection.execute(text(f"DROP TABLE IF EXISTS {partition_name(day)}"))
        assert day not in await existing_partition_days(connection)
    website = await setup.monitor()
    then = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)

    await setup.record((website, up(80), then))

    async with setup.db.engine.connect() as connection:
        assert day in await existing_partition_days(connection)
    [row] = await setup.raw_checks()
    assert row.created_at == then
    await setup.assert_rollups_equal_the_raw_checks()


async def test_a_monitor_deleted_while_its_check_ran_leaves_no_check_and_no_rollup(
    setup: Setup,
) -> None:
    kept, gone = await setup.monitor(), await setup.monitor()
    jobs = [setup.job(kept), setup.job(gone)]
    await setup.db.delete(Website, gone.id)

    await setup.batch(*jobs)

    assert [c.website_id for c in await setup.raw_checks()] == [kept.id]
    for table in (HourlyRollup, DailyRollup):
        assert [r.website_id for r in await setup.db.all(select(table))] == [kept.id]
    await setup.assert_rollups_equal_the_raw_checks()


@pytest.mark.postgres
async def test_results_of_a_monitor_whose_deletion_commits_during_their_write_are_not_kept(
    setup: Setup,
) -> None:
    """The write waits for the monitor's deletion to end and then skips its results: none
    is left behind that the deletion, done by then, would never remove."""
    if setup.db.kind != "postgres":
        pytest.skip("SQLite's writers take turns")
    kept, gone = await setup.monitor(), await setup.monitor()
    now = datetime.now(UTC)
    async with setup.db.engine.connect() as deletion:
        await deletion.begin()
        await deletion.execute(text("DELETE FROM websites WHERE id = :id"), {"id": gone.id})
        writing = asyncio.create_task(setup.record((kept, up(10), now), (gone, up(20), now)))
        await asyncio.sleep(0.5)
        assert not writing.done(), "the write waits for the deletion"
        await deletion.commit()
    await asyncio.wait_for(writing, 10)

    assert [c.website_id for c in await setup.raw_checks()] == [kept.id]
    for table in (HourlyRollup, DailyRollup):
        assert [r.website_id for r in await setup.db.all(select(table))] == [kept.id]
