"""The status-change stage (status change -> incident -> alert) on SQLite and PostgreSQL, with
the in-process queue and Redis: one incident per DOWN whatever is redelivered or raced, the
monitor's status moved only forward, and exactly the alerts that should follow."""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select

from runstate.checks.http import HttpCheck
from runstate.consumer import PermanentFailure
from runstate.domain.events import (
    Alert,
    AlertEvent,
    StatusChange,
    status_change_event_id,
)
from runstate.domain.status import Status
from runstate.metrics import PipelineMetrics
from runstate.pipeline.monitor import MonitoringStage
from runstate.pipeline.status_change import AWAITING_OUTAGE_CAUSE, StatusChangeStage
from runstate.queue.backend import QueueBackend
from runstate.queue.base import Entry
from runstate.storage.db import create_engine, session_factory
from runstate.storage.tables import Incident, Website, WebsiteCheck
from tests.pipeline.conftest import (
    MakeMonitoringStage,
    StageDb,
    Targets,
    job_for,
    publish_and_read,
    stream_entries,
    utc_ms,
)

BASE = utc_ms(datetime.now(UTC) - timedelta(minutes=10))


@dataclass
class Setup:
    db: StageDb
    backend: QueueBackend
    stage: StatusChangeStage
    metrics: PipelineMetrics
    registry: CollectorRegistry
    notification_stream: str

    def count(self, name: str) -> float:
        return self.registry.get_sample_value(name) or 0.0

    async def alerts(self) -> list[Alert]:
        entries = await stream_entries(self.backend.queue, self.notification_stream)
        return [Alert.from_fields(e.fields) for e in entries]

    async def incidents(self, website_id: uuid.UUID) -> list[Incident]:
        return await self.db.all(select(Incident).where(Incident.website_id == website_id))

    async def incidents_in_order(self, website_id: uuid.UUID) -> list[Incident]:
        return sorted(await self.incidents(website_id), key=lambda i: i.started_at)

    async def website(self, website_id: uuid.UUID) -> Website:
        found = await self.db.get(Website, website_id)
        assert found is not None
        return found


@pytest.fixture
def setup(
    stage_db: StageDb,
    stage_backend: QueueBackend,
    stage_metrics: PipelineMetrics,
    stage_registry: CollectorRegistry,
    stage_prefix: str,
) -> Setup:
    stream = f"{stage_prefix}:notification"
    stage = StatusChangeStage(stage_db.sessions, stage_backend.queue, stream, stage_metrics)
    return Setup(stage_db, stage_backend, stage, stage_metrics, stage_registry, stream)


def change(website_id: uuid.UUID, to: Status, at: datetime, *, region_id: int = 1) -> StatusChange:
    at = utc_ms(at)
    return StatusChange(
        event_id=status_change_event_id(website_id, int(at.timestamp() * 1000)),
        website_id=website_id,
        region_id=region_id,
        prev_status=Status.UP if to is Status.DOWN else Status.DOWN,
        current_status=to,
        occurred_at=at,
    )


def utc_ms_int(moment: datetime) -> int:
    return int(utc_ms(moment).timestamp() * 1000)


def entry(of: StatusChange, n: int = 1) -> Entry:
    return Entry(f"{n}-0", of.to_fields())


async def up_monitor(setup: Setup, *, since: datetime | None = BASE) -> Website:
    user = await setup.db.user()
    return await setup.db.website(
        user,
        f"https://example.com/{uuid.uuid4().hex[:8]}",
        current_status="up",
        status_changed_at=since,
    )


async def test_a_down_change_opens_one_incident_moves_the_status_and_forwards_one_alert(
    setup: Setup,
) -> None:
    website = await up_monitor(setup)
    failed_at = BASE + timedelta(minutes=1)
    await setup.db.add(
        WebsiteCheck(
            website_id=website.id,
            region_id=setup.db.region_id,
            status="down",
            status_code=200,
            error="an older error",
            created_at=failed_at - timedelta(seconds=30),
        ),
        WebsiteCheck(
            website_id=website.id,
            region_id=setup.db.region_id,
            status="down",
            status_code=503,
            error="status 503 not in 200-399",
            created_at=failed_at,
        ),
    )
    down = change(website.id, Status.DOWN, failed_at)

    await setup.stage.handle(entry(down))

    [incident] = await setup.incidents(website.id)
    assert incident.is_active
    assert incident.resolved_at is None
    assert incident.started_at == down.occurred_at
    assert incident.cause == "status 503 not in 200-399"
    assert incident.opened_by_event_id == down.event_id
    moved = await setup.website(website.id)
    assert moved.current_status == "down"
    assert moved.status_changed_at == down.occurred_at
    [alert] = await setup.alerts()
    assert alert == Alert.for_change(down, incident.id)
    assert alert.event is AlertEvent.DOWN
    assert setup.count("runstate_incidents_opened_total") == 1


async def test_an_incident_without_any_check_row_has_no_cause(setup: Setup) -> None:
    website = await up_monitor(setup)
    await setup.stage.handle(entry(change(website.id, Status.DOWN, BASE + timedelta(minutes=1))))

    [incident] = await setup.incidents(website.id)
    assert incident.cause is None


async def test_a_redelivered_down_change_opens_no_second_incident_and_forwards_the_same_one(
    setup: Setup,
) -> None:
    website = await up_monitor(setup)
    down = change(website.id, Status.DOWN, BASE + timedelta(minutes=1))

    await setup.stage.handle(entry(down))
    await setup.stage.handle(entry(down))

    [incident] = await setup.incidents(website.id)
    first, again = await setup.alerts()
    assert first.incident_id == again.incident_id == incident.id
    assert first == again
    assert setup.count("runstate_incidents_opened_total") == 1


async def test_two_workers_handling_the_same_change_at_once_open_exactly_one_incident(
    setup: Setup,
) -> None:
    # Two workers with their own connections (their own engine); several monitors at once
    # so that the transactions really overlap.
    other_engine = create_engine(setup.db.url)
    other = StatusChangeStage(
        session_factory(other_engine),
        setup.backend.queue,
        setup.notification_stream,
        setup.metrics,
    )
    try:
        websites = [await up_monitor(setup) for _ in range(5)]
        changes = [change(w.id, Status.DOWN, BASE + timedelta(minutes=1)) for w in websites]
        await asyncio.gather(
            *(stage.handle(entry(c)) for c in changes for stage in (setup.stage, other))
        )
    finally:
        await other_engine.dispose()

    alerts = await setup.alerts()
    assert len(alerts) == 2 * len(websites)  # each worker forwards what it handled
    for website in websites:
        [incident] = await setup.incidents(website.id)
        assert incident.is_active
        forwarded = [a for a in alerts if a.website_id == website.id]
        assert [a.incident_id for a in forwarded] == [incident.id, incident.id]
        assert (await setup.website(website.id)).current_status == "down"


async def test_a_recovery_resolves_the_incident_and_forwards_it_with_the_same_incident_id(
    setup: Setup,
) -> None:
    website = await up_monitor(setup)
    down = change(website.id, Status.DOWN, BASE + timedelta(minutes=1))
    recovery = change(website.id, Status.UP, BASE + timedelta(minutes=2))

    await setup.stage.handle(entry(down))
    await setup.stage.handle(entry(recovery, 2))

    [incident] = await setup.incidents(website.id)
    assert not incident.is_active
    assert incident.resolved_at == recovery.occurred_at
    assert incident.resolved_by_event_id == recovery.event_id
    moved = await setup.website(website.id)
    assert moved.current_status == "up"
    assert moved.status_changed_at == recovery.occurred_at
    opened, resolved = await setup.alerts()
    assert opened.event is AlertEvent.DOWN
    assert resolved == Alert.for_change(recovery, incident.id)
    assert resolved.event is AlertEvent.RECOVERY
    assert setup.count("runstate_incidents_resolved_total") == 1


async def test_a_redelivered_recovery_forwards_the_incident_it_resolved_again(
    setup: Setup,
) -> None:
    website = await up_monitor(setup)
    await setup.stage.handle(entry(change(website.id, Status.DOWN, BASE + timedelta(minutes=1))))
    recovery = change(website.id, Status.UP, BASE + timedelta(minutes=2))

    await setup.stage.handle(entry(recovery, 2))
    await setup.stage.handle(entry(recovery, 2))

    [incident] = await setup.incidents(website.id)
    _, resolved, again = await setup.alerts()
    assert resolved == again
    assert again.incident_id == incident.id


async def test_the_next_down_after_a_recovery_opens_a_new_incident(setup: Setup) -> None:
    website = await up_monitor(setup)
    for minute, to in ((1, Status.DOWN), (2, Status.UP), (3, Status.DOWN)):
        await setup.stage.handle(entry(change(website.id, to, BASE + timedelta(minutes=minute))))

    incidents = sorted(await setup.incidents(website.id), key=lambda i: i.started_at)
    assert [i.is_active for i in incidents] == [False, True]
    alerts = await setup.alerts()
    assert [a.incident_id for a in alerts] == [incidents[0].id, incidents[0].id, incidents[1].id]


async def test_a_later_down_while_an_incident_is_open_is_an_incident_of_its_own(
    setup: Setup,
) -> None:
    # The UP between them has not arrived yet: the first outage is cut short at the second,
    # and the UP, when it comes, resolves the first and sends its RECOVERY, late.
    website = await up_monitor(setup)
    first = change(website.id, Status.DOWN, BASE + timedelta(minutes=1))
    second = change(website.id, Status.DOWN, BASE + timedelta(minutes=3))
    await setup.stage.handle(entry(first))
    await setup.stage.handle(entry(second, 2))

    cut, open_ = await setup.incidents_in_order(website.id)
    assert (cut.started_at, cut.resolved_at, cut.is_active) == (
        first.occurred_at,
        second.occurred_at,
        False,
    )
    assert cut.resolved_by_event_id is None
    assert (open_.started_at, open_.resolved_at, open_.is_active) == (
        second.occurred_at,
        None,
        True,
    )
    assert [(a.incident_id, a.event, a.late) for a in await setup.alerts()] == [
        (cut.id, AlertEvent.DOWN, False),
        (open_.id, AlertEvent.DOWN, False),
    ]

    between = change(website.id, Status.UP, BASE + timedelta(minutes=2))
    await setup.stage.handle(entry(between, 3))

    resolved, still_open = await setup.incidents_in_order(website.id)
    assert (resolved.id, resolved.resolved_at) == (cut.id, between.occurred_at)
    assert resolved.resolved_by_event_id == between.event_id
    assert still_open.is_active
    *_, recovery = await setup.alerts()
    assert recovery == Alert.for_change(between, cut.id, late=True)
    moved = await setup.website(website.id)
    assert (moved.current_status, moved.status_changed_at) == ("down", second.occurred_at)


async def test_an_up_handled_before_its_down_is_kept_and_the_down_completes_its_incident(
    setup: Setup,
) -> None:
    website = await up_monitor(setup)
    down = change(website.id, Status.DOWN, BASE + timedelta(seconds=30))
    up = change(website.id, Status.UP, BASE + timedelta(seconds=90))
    await setup.db.add(
        WebsiteCheck(
            website_id=website.id,
            region_id=setup.db.region_id,
            status="down",
            status_code=503,
            error="status 503 not in 200-399",
            created_at=down.occurred_at,
        ),
        WebsiteCheck(
            website_id=website.id,
            region_id=setup.db.region_id,
            status="up",
            status_code=200,
            created_at=up.occurred_at,
        ),
    )

    await setup.stage.handle(entry(up))

    assert await setup.alerts() == []  # nobody was told of an outage yet
    moved = await setup.website(website.id)
    assert (moved.current_status, moved.status_changed_at) == ("up", up.occurred_at)

    await setup.stage.handle(entry(down, 2))

    [incident] = await setup.incidents(website.id)
    assert (incident.started_at, incident.resolved_at) == (down.occurred_at, up.occurred_at)
    assert (incident.opened_by_event_id, incident.resolved_by_event_id) == (
        down.event_id,
        up.event_id,
    )
    assert not incident.is_active
    assert incident.cause == "status 503 not in 200-399"
    assert await setup.alerts() == [
        Alert.for_change(down, incident.id, late=True),
        Alert.for_change(up, incident.id, late=True),
    ]
    unchanged = await setup.website(website.id)
    assert (unchanged.current_status, unchanged.status_changed_at) == ("up", up.occurred_at)
    assert setup.count("runstate_incidents_opened_total") == 1
    assert setup.count("runstate_incidents_resolved_total") == 1

    await setup.stage.handle(entry(down, 2))  # redelivered: the same alerts again
    await setup.stage.handle(entry(up))
    assert len(await setup.incidents(website.id)) == 1
    again = [(a.incident_id, a.event, a.event_id) for a in await setup.alerts()]
    assert again[2:] == [*again[:2], again[1]]


async def test_a_down_older_than_the_up_the_monitor_shows_unrecorded_ends_at_that_up(
    setup: Setup,
) -> None:
    # A recovery applied before incidents recorded every change: the monitor shows it, and
    # a late DOWN before it is an outage that it ended (not an incident left open).
    shown_since = BASE + timedelta(minutes=5)
    website = await up_monitor(setup, since=shown_since)
    late = change(website.id, Status.DOWN, BASE + timedelta(minutes=4))

    await setup.stage.handle(entry(late))

    [incident] = await setup.incidents(website.id)
    assert (incident.started_at, incident.resolved_at, incident.is_active) == (
        late.occurred_at,
        shown_since,
        False,
    )
    shown_up = status_change_event_id(website.id, utc_ms_int(shown_since))
    assert incident.resolved_by_event_id == shown_up
    assert [(a.event, a.late, a.event_id) for a in await setup.alerts()] == [
        (AlertEvent.DOWN, True, late.event_id),
        (AlertEvent.RECOVERY, True, shown_up),
    ]
    unchanged = await setup.website(website.id)
    assert (unchanged.current_status, unchanged.status_changed_at) == ("up", shown_since)


async def test_a_down_inside_a_resolved_incident_becomes_its_own_with_that_incidents_up(
    setup: Setup,
) -> None:
    website = await up_monitor(setup)
    first = change(website.id, Status.DOWN, BASE + timedelta(minutes=1))
    up = change(website.id, Status.UP, BASE + timedelta(minutes=3))
    await setup.stage.handle(entry(first))
    await setup.stage.handle(entry(up, 2))

    late = change(website.id, Status.DOWN, BASE + timedelta(minutes=2))
    await setup.stage.handle(entry(late, 3))

    cut, split = await setup.incidents_in_order(website.id)
    assert (cut.started_at, cut.resolved_at, cut.resolved_by_event_id) == (
        first.occurred_at,
        late.occurred_at,
        None,
    )
    assert (split.started_at, split.resolved_at, split.resolved_by_event_id) == (
        late.occurred_at,
        up.occurred_at,
        up.event_id,
    )
    assert not cut.is_active
    assert not split.is_active
    _, _, *forwarded = await setup.alerts()
    assert forwarded == [
        Alert.for_change(late, split.id, late=True),
        Alert.for_change(up, split.id, late=True),
    ]
    assert (await setup.website(website.id)).current_status == "up"


async def test_an_up_inside_a_resolved_incident_resolves_it_and_its_later_up_awaits_an_outage(
    setup: Setup,
) -> None:
    website = await up_monitor(setup)
    down = change(website.id, Status.DOWN, BASE + timedelta(minutes=1))
    later_up = change(website.id, Status.UP, BASE + timedelta(minutes=4))
    await setup.stage.handle(entry(down))
    await setup.stage.handle(entry(later_up, 2))

    up = change(website.id, Status.UP, BASE + timedelta(minutes=2))
    await setup.stage.handle(entry(up, 3))

    resolved, awaiting = await setup.incidents_in_order(website.id)
    assert (resolved.resolved_at, resolved.resolved_by_event_id) == (up.occurred_at, up.event_id)
    assert awaiting.opened_by_event_id is None
    assert awaiting.resolved_by_event_id == later_up.event_id
    assert awaiting.started_at == awaiting.resolved_at == later_up.occurred_at
    assert awaiting.cause == AWAITING_OUTAGE_CAUSE

    between = change(website.id, Status.DOWN, BASE + timedelta(minutes=3))
    await setup.stage.handle(entry(between, 4))

    first, second = await setup.incidents_in_order(website.id)
    assert (first.started_at, first.resolved_at) == (down.occurred_at, up.occurred_at)
    assert (second.id, second.started_at, second.resolved_at) == (
        awaiting.id,
        between.occurred_at,
        later_up.occurred_at,
    )


async def test_a_recovery_with_no_outage_before_it_forwards_nothing(setup: Setup) -> None:
    user = await setup.db.user()
    website = await setup.db.website(
        user, "https://example.com/", current_status="down", status_changed_at=BASE
    )
    up = change(website.id, Status.UP, BASE + timedelta(minutes=1))

    await setup.stage.handle(entry(up))

    [awaiting] = await setup.incidents(website.id)
    assert awaiting.opened_by_event_id is None
    assert not awaiting.is_active
    assert await setup.alerts() == []
    assert (await setup.website(website.id)).current_status == "up"


async def test_a_change_of_a_deleted_monitor_forwards_nothing(setup: Setup) -> None:
    website = await up_monitor(setup)
    await setup.db.delete(Website, website.id)

    await setup.stage.handle(entry(change(website.id, Status.DOWN, BASE + timedelta(minutes=1))))
    await setup.stage.handle(entry(change(uuid.uuid4(), Status.DOWN, BASE)))

    assert await setup.db.all(select(Incident)) == []
    assert await setup.alerts() == []


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"event_id": "e", "website_id": "not-a-uuid", "region_id": "1", "prev_status": "up",
         "current_status": "down", "occurred_at": "2024-05-01T12:00:00Z"},
        {"event_id": "e", "website_id": str(uuid.uuid4()), "region_id": "1",
         "prev_status": "up", "current_status": "sideways", "occurred_at": "2024-05-01T12:00:00Z"},
        {"event_id": "e", "website_id": str(uuid.uuid4()), "region_id": "1",
         "prev_status": "up", "current_status": "down", "occurred_at": "yesterday"},
    ],
    ids=["empty", "bad-uuid", "bad-status", "bad-time"],
)  # fmt: skip
async def test_a_malformed_change_is_a_permanent_failure(
    setup: Setup, fields: dict[str, str]
) -> None:
    with pytest.raises(PermanentFailure, match="malformed status change"):
        await setup.stage.handle(Entry("1-0", fields))
    assert await setup.alerts() == []


# -- the order changes arrive in does not matter -------------------------------------------

ORDERINGS = list(itertools.permutations(range(4)))


def two_outages(website_id: uuid.UUID) -> list[StatusChange]:
    """DOWN1, UP1, DOWN2, UP2, a minute apart."""
    return [
        change(website_id, to, BASE + timedelta(minutes=minute))
        for minute, to in enumerate((Status.DOWN, Status.UP, Status.DOWN, Status.UP), 1)
    ]


async def assert_two_outages_recorded(
    setup: Setup,
    website_id: uuid.UUID,
    changes: list[StatusChange],
    ordering: object,
    *,
    in_turn: bool = True,
) -> list[tuple[uuid.UUID, AlertEvent]]:
    """Each DOWN -> UP is its own resolved incident, the monitor shows the newest change,
    and each incident's DOWN and RECOVERY were forwarded (the DOWN first when the changes
    were handled ``in_turn``: workers racing publish in the order they finish); the
    (incident, event) pairs forwarded, in order."""
    down1, up1, down2, up2 = changes
    incidents = await setup.incidents_in_order(website_id)
    assert [
        (
            i.started_at,
            i.resolved_at,
            i.opened_by_event_id,
            i.resolved_by_event_id,
            i.is_active,
        )
        for i in incidents
    ] == [
        (down1.occurred_at, up1.occurred_at, down1.event_id, up1.event_id, False),
        (down2.occurred_at, up2.occurred_at, down2.event_id, up2.event_id, False),
    ], ordering
    shown = await setup.website(website_id)
    assert (shown.current_status, shown.status_changed_at) == ("up", up2.occurred_at), ordering
    alerts = [a for a in await setup.alerts() if a.website_id == website_id]
    forwarded = [(a.incident_id, a.event) for a in alerts]
    first, second = (i.id for i in incidents)
    expected = {(i, e) for i in (first, second) for e in (AlertEvent.DOWN, AlertEvent.RECOVERY)}
    assert set(forwarded) == expected, ordering
    for incident_id in (first, second):
        events = [e for i, e in forwarded if i == incident_id]
        assert events[0] is AlertEvent.DOWN or not in_turn, ordering
    downs = {a.incident_id: a.event_id for a in alerts if a.event is AlertEvent.DOWN}
    assert downs == {first: down1.event_id, second: down2.event_id}, ordering
    return forwarded


async def test_every_ordering_of_two_outages_gives_two_incidents_and_their_four_alerts(
    setup: Setup,
) -> None:
    for ordering in ORDERINGS:
        website = await up_monitor(setup)
        changes = two_outages(website.id)
        for n in ordering:
            await setup.stage.handle(entry(changes[n], n + 1))
        forwarded = await assert_two_outages_recorded(setup, website.id, changes, ordering)

        # Every change redelivered, in the same order: nothing new.
        for n in ordering:
            await setup.stage.handle(entry(changes[n], n + 1))
        again = await assert_two_outages_recorded(setup, website.id, changes, ordering)
        assert set(again) == set(forwarded)


async def test_two_workers_racing_on_shuffled_changes_of_several_monitors_agree(
    setup: Setup,
) -> None:
    # Each worker handles every change (each is delivered twice), in its own order.
    other_engine = create_engine(setup.db.url)
    other = StatusChangeStage(
        session_factory(other_engine),
        setup.backend.queue,
        setup.notification_stream,
        setup.metrics,
    )
    shuffle = random.Random(10)
    try:
        websites = [await up_monitor(setup) for _ in range(6)]
        plans = {w.id: two_outages(w.id) for w in websites}
        work = []
        for stage in (setup.stage, other):
            for changes in plans.values():
                mine = changes[:]
                shuffle.shuffle(mine)
                work.append(handle_in_turn(stage, mine))
        await asyncio.gather(*work)
    finally:
        await other_engine.dispose()

    for website_id, changes in plans.items():
        await assert_two_outages_recorded(setup, website_id, changes, "raced", in_turn=False)
    assert setup.count("runstate_incidents_opened_total") == 2 * len(plans)


async def handle_in_turn(stage: StatusChangeStage, changes: list[StatusChange]) -> None:
    for n, one in enumerate(changes, 1):
        await stage.handle(entry(one, n))


# -- a monitor down from its very first check ----------------------------------------------


async def check_once(
    setup: Setup, monitoring: MonitoringStage, website: Website, prefix: str
) -> None:
    """One check of ``website`` by the monitoring stage, then every status change it emitted
    through the status-change stage, as the two workers would."""
    job = job_for(website)
    queue = setup.backend.queue
    entries = await publish_and_read(queue, f"{prefix}:monitoring", [job.to_fields()])
    async for _ in monitoring.handle_batch(entries):
        pass
    changes = f"{prefix}:status-change"
    await queue.ensure_group(changes, "status-change")
    for emitted in await queue.read(changes, "status-change", "w", count=100, block_ms=0):
        await setup.stage.handle(emitted)


@pytest.mark.parametrize("confirmations", [1, 3])
async def test_a_monitor_down_from_its_first_checks_opens_an_incident_and_alerts(
    setup: Setup,
    make_monitoring_stage: MakeMonitoringStage,
    http_targets: Targets,
    stage_prefix: str,
    confirmations: int,
) -> None:
    check = HttpCheck(allow_private=True)
    monitoring = make_monitoring_stage(check, concurrency=10)
    try:
        user = await setup.db.user()
        http_targets.codes["broken"] = 503
        website = await setup.db.website(
            user, http_targets.url("broken"), confirmations=confirmations
        )
        for _ in range(confirmations - 1):
            await check_once(setup, monitoring, website, stage_prefix)
            assert await setup.incidents(website.id) == []
            assert await setup.alerts() == []
        await check_once(setup, monitoring, website, stage_prefix)
        await check_once(setup, monitoring, website, stage_prefix)  # still down: nothing new
    finally:
        await check.aclose()

    [incident] = await setup.incidents(website.id)
    assert incident.is_active
    assert incident.cause == "status 503 not in 200-399"
    [alert] = await setup.alerts()
    assert (alert.incident_id, alert.event, alert.late) == (incident.id, AlertEvent.DOWN, False)
    assert (alert.prev_status, alert.current_status) == (Status.UP, Status.DOWN)
    assert alert.occurred_at == incident.started_at
    shown = await setup.website(website.id)
    assert (shown.current_status, shown.status_changed_at) == ("down", incident.started_at)


async def test_a_monitor_up_from_its_first_check_changes_nothing(
    setup: Setup,
    make_monitoring_stage: MakeMonitoringStage,
    http_targets: Targets,
    stage_prefix: str,
) -> None:
    check = HttpCheck(allow_private=True)
    monitoring = make_monitoring_stage(check, concurrency=10)
    try:
        website = await setup.db.website(await setup.db.user(), http_targets.url("fine"))
        await check_once(setup, monitoring, website, stage_prefix)
    finally:
        await check.aclose()

    assert await setup.incidents(website.id) == []
    assert await setup.alerts() == []
    assert (await setup.website(website.id)).current_status == "up"
