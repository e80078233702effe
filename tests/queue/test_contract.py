"""The queue contract (queue/base.py), held against both back ends: in process and Redis."""

from __future__ import annotations

import asyncio
import re
import socket
import time
import uuid
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from runstate.domain.events import StatusChange, status_change_event_id, time_from_ms
from runstate.domain.status import (
    MonitorState,
    Observation,
    Status,
    apply_observation,
    rebuilt_state,
)
from runstate.queue import keys
from runstate.queue.backend import QueueBackend, open_backend
from runstate.queue.base import (
    ApplyOutcome,
    DueCheck,
    GroupMissing,
    ObservedCheck,
    QueueUnavailable,
)
from runstate.queue.in_process import InProcessBroker
from runstate.queue.redis_streams import RedisStreamQueue
from tests.queue.conftest import delete_entries, flush

UP, DOWN = Status.UP, Status.DOWN


def items(count: int, start: int = 0) -> list[dict[str, str]]:
    return [{"n": str(i), "text": f"entry {i}"} for i in range(start, start + count)]


async def read_all(backend: QueueBackend, stream: str, group: str, consumer: str) -> list[str]:
    entries = await backend.queue.read(stream, group, consumer, count=1000, block_ms=0)
    return [entry.id for entry in entries]


def id_key(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


# -- streams ------------------------------------------------------------------------------


async def test_published_entries_get_increasing_redis_style_ids_and_read_back_as_strings(
    backend: QueueBackend, stream: str
) -> None:
    await backend.queue.ensure_group(stream, "g")
    ids = await backend.queue.publish(stream, items(5))
    assert all(re.fullmatch(r"\d+-\d+", entry_id) for entry_id in ids)
    assert [id_key(i) for i in ids] == sorted({id_key(i) for i in ids})
    entries = await backend.queue.read(stream, "g", "c1", count=10, block_ms=0)
    assert [(e.id, e.fields, e.deliveries) for e in entries] == [
        (entry_id, fields, 1) for entry_id, fields in zip(ids, items(5), strict=True)
    ]
    assert await backend.queue.length(stream) == 5


async def test_a_group_created_after_publishing_reads_from_the_start(
    backend: QueueBackend, stream: str
) -> None:
    assert await backend.queue.length(stream) == 0
    ids = await backend.queue.publish(stream, items(3))
    await backend.queue.ensure_group(stream, "late")
    await backend.queue.ensure_group(stream, "late")  # exists: a no-op, not an error
    assert await read_all(backend, stream, "late", "c1") == ids


async def test_ensure_group_creates_an_empty_stream(backend: QueueBackend, stream: str) -> None:
    await backend.queue.ensure_group(stream, "g")
    assert await backend.queue.read(stream, "g", "c1", count=10, block_ms=0) == []
    assert await backend.queue.length(stream) == 0


async def test_an_entry_goes_to_exactly_one_consumer_of_a_group_and_to_every_group(
    backend: QueueBackend, stream: str
) -> None:
    for group in ("a", "b"):
        await backend.queue.ensure_group(stream, group)
    ids = await backend.queue.publish(stream, items(10))
    seen: dict[str, list[str]] = {"c1": [], "c2": []}
    while True:
        delivered = 0
        for consumer, got in seen.items():
            batch = await backend.queue.read(stream, "a", consumer, count=3, block_ms=0)
            got += [entry.id for entry in batch]
            delivered += len(batch)
        if not delivered:
            break
    assert seen["c1"], "each consumer gets a share"
    assert seen["c2"], "each consumer gets a share"
    assert not set(seen["c1"]) & set(seen["c2"])
    assert sorted(seen["c1"] + seen["c2"], key=id_key) == ids
    assert await read_all(backend, stream, "b", "c3") == ids


async def test_publish_with_maxlen_trims_the_stream_to_about_that_length(
    backend: QueueBackend, stream: str
) -> None:
    await backend.queue.publish(stream, items(300), maxlen=10)
    # Redis trims whole nodes of up to 100 entries, so it may keep up to a node more.
    assert 10 <= await backend.queue.length(stream) <= 110


async def test_unacknowledged_entries_stay_pending_and_another_consumer_reclaims_them_when_idle(
    backend: QueueBackend, stream: str
) -> None:
    await backend.queue.ensure_group(stream, "g")
    ids = await backend.queue.publish(stream, items(3))
    await read_all(backend, stream, "g", "crashed")
    await backend.queue.ack(stream, "g", ids[:1])
    assert await backend.queue.reclaim(stream, "g", "c2", min_idle_ms=150, count=10) == []
    await asyncio.sleep(0.2)
    reclaimed = await backend.queue.reclaim(stream, "g", "c2", min_idle_ms=150, count=10)
    assert [(e.id, e.fields, e.deliveries) for e in reclaimed] == [
        (ids[1], items(3)[1], 2),
        (ids[2], items(3)[2], 2),
    ]
    assert (await backend.queue.stats(stream, "g")).pending == 2
    # Reclaiming took them over: they are idle again, and not new to the group.
    assert await backend.queue.reclaim(stream, "g", "c3", min_idle_ms=150, count=10) == []
    assert await read_all(backend, stream, "g", "c3") == []


async def test_reclaim_collects_past_one_autoclaim_page(backend: QueueBackend, stream: str) -> None:
    await backend.queue.ensure_group(stream, "g")
    ids = await backend.queue.publish(stream, items(250))
    assert len(await read_all(backend, stream, "g", "c1")) == 250
    some = await backend.queue.reclaim(stream, "g", "c2", min_idle_ms=0, count=130)
    assert [e.id for e in some] == ids[:130]
    everything = await backend.queue.reclaim(stream, "g", "c3", min_idle_ms=0, count=250)
    assert [e.id for e in everything] == ids
    assert [e.deliveries for e in everything] == [3] * 130 + [2] * 120


async def test_reclaim_drops_entries_deleted_while_pending(
    backend: QueueBackend, stream: str
) -> None:
    await backend.queue.ensure_group(stream, "g")
    ids = await backend.queue.publish(stream, items(150))
    await read_all(backend, stream, "g", "c1")
    # More than a page of deleted entries first: reclaim must follow the cursor past them.
    await delete_entries(backend, stream, ids[:120])
    reclaimed = await backend.queue.reclaim(stream, "g", "c2", min_idle_ms=0, count=100)
    assert [e.id for e in reclaimed] == ids[120:]
    assert all(e.deliveries == 2 for e in reclaimed)
    assert (await backend.queue.stats(stream, "g")).pending == 30


async def test_touch_keeps_an_entry_from_being_reclaimed_without_counting_a_delivery(
    backend: QueueBackend, stream: str
) -> None:
    await backend.queue.ensure_group(stream, "g")
    ids = await backend.queue.publish(stream, items(2))
    await read_all(backend, stream, "g", "slow")
    await asyncio.sleep(0.12)
    await backend.queue.touch(stream, "g", "slow", ids[:1])
    reclaimed = await backend.queue.reclaim(stream, "g", "c2", min_idle_ms=100, count=10)
    assert [e.id for e in reclaimed] == ids[1:]
    await asyncio.sleep(0.12)
    reclaimed = await backend.queue.reclaim(stream, "g", "c3", min_idle_ms=100, count=10)
    assert [(e.id, e.deliveries) for e in reclaimed] == [(ids[0], 2), (ids[1], 3)]


async def test_touch_does_not_take_back_an_entry_another_consumer_reclaimed(
    backend: QueueBackend, stream: str
) -> None:
    await backend.queue.ensure_group(stream, "g")
    ids = await backend.queue.publish(stream, items(1))
    await read_all(backend, stream, "g", "slow")
    assert len(await backend.queue.reclaim(stream, "g", "c2", min_idle_ms=0, count=1)) == 1
    await asyncio.sleep(0.12)
    await backend.queue.touch(stream, "g", "slow", ids)  # no longer its entry: no effect
    reclaimed = await backend.queue.reclaim(stream, "g", "c3", min_idle_ms=100, count=1)
    assert [(e.id, e.deliveries) for e in reclaimed] == [(ids[0], 3)]


async def test_an_acknowledged_entry_is_never_delivered_again(
    backend: QueueBackend, stream: str
) -> None:
    await backend.queue.ensure_group(stream, "g")
    ids = await backend.queue.publish(stream, items(2))
    await read_all(backend, stream, "g", "c1")
    await backend.queue.ack(stream, "g", ids)
    await backend.queue.ack(stream, "g", ids)  # twice: harmless
    assert await backend.queue.reclaim(stream, "g", "c2", min_idle_ms=0, count=10) == []
    assert await read_all(backend, stream, "g", "c2") == []
    assert (await backend.queue.stats(stream, "g")).pending == 0


async def test_stats_report_pending_and_lag(backend: QueueBackend, stream: str) -> None:
    await backend.queue.ensure_group(stream, "g")
    ids = await backend.queue.publish(stream, items(5))
    assert await _stats(backend, stream) == (0, 5)
    await backend.queue.read(stream, "g", "c1", count=2, block_ms=0)
    assert await _stats(backend, stream) == (2, 3)
    await backend.queue.ack(stream, "g", ids[:1])
    assert await _stats(backend, stream) == (1, 3)
    # Redis stops tracking the lag when an undelivered entry is deleted; it is still right.
    await delete_entries(backend, stream, ids[3:4])
    assert await _stats(backend, stream) == (1, 2)


async def _stats(backend: QueueBackend, stream: str) -> tuple[int, int]:
    stats = await backend.queue.stats(stream, "g")
    return stats.pending, stats.lag


async def test_stats_of_a_missing_group_or_stream_raise_group_missing(
    backend: QueueBackend, stream: str
) -> None:
    with pytest.raises(GroupMissing):
        await backend.queue.stats(stream, "g")
    await backend.queue.ensure_group(stream, "g")
    with pytest.raises(GroupMissing):
        await backend.queue.stats(stream, "other")


async def test_read_waits_up_to_block_ms_for_new_entries(
    backend: QueueBackend, stream: str
) -> None:
    await backend.queue.ensure_group(stream, "g")
    started = time.monotonic()
    assert await backend.queue.read(stream, "g", "c1", count=10, block_ms=150) == []
    assert 0.13 <= time.monotonic() - started < 1.0
    started = time.monotonic()
    assert await backend.queue.read(stream, "g", "c1", count=10, block_ms=0) == []
    assert time.monotonic() - started < 0.1


async def test_a_blocked_read_wakes_as_soon_as_something_is_published(
    backend: QueueBackend, twin: QueueBackend, stream: str
) -> None:
    await backend.queue.ensure_group(stream, "g")
    started = time.monotonic()
    reader = asyncio.create_task(backend.queue.read(stream, "g", "c1", count=10, block_ms=3000))
    await asyncio.sleep(0.05)
    ids = await twin.queue.publish(stream, items(1))
    entries = await asyncio.wait_for(reader, 2)
    assert [e.id for e in entries] == ids
    assert time.monotonic() - started < 1.0


async def test_reading_a_stream_that_never_existed_raises_group_missing(
    backend: QueueBackend, stream: str
) -> None:
    with pytest.raises(GroupMissing):
        await backend.queue.read(stream, "g", "c1", count=1, block_ms=0)


async def test_after_a_flush_reads_raise_group_missing_until_ensure_group_recreates_it(
    backend: QueueBackend, stream: str
) -> None:
    await backend.queue.ensure_group(stream, "g")
    ids = await backend.queue.publish(stream, items(2))
    await read_all(backend, stream, "g", "c1")
    await flush(backend)
    with pytest.raises(GroupMissing):
        await backend.queue.read(stream, "g", "c1", count=10, block_ms=50)
    with pytest.raises(GroupMissing):
        await backend.queue.reclaim(stream, "g", "c1", min_idle_ms=0, count=10)
    with pytest.raises(GroupMissing):
        await backend.queue.touch(stream, "g", "c1", ids)
    with pytest.raises(GroupMissing):
        await backend.queue.stats(stream, "g")
    assert await backend.queue.length(stream) == 0
    await backend.queue.ensure_group(stream, "g")
    new_ids = await backend.queue.publish(stream, items(1))
    assert await read_all(backend, stream, "g", "c1") == new_ids


async def test_a_read_blocked_when_the_data_is_flushed_raises_group_missing(
    backend: QueueBackend, twin: QueueBackend, stream: str
) -> None:
    await backend.queue.ensure_group(stream, "g")
    reader = asyncio.create_task(backend.queue.read(stream, "g", "c1", count=10, block_ms=3000))
    await asyncio.sleep(0.05)
    await flush(twin)
    with pytest.raises(GroupMissing):
        await asyncio.wait_for(reader, 2)


async def test_trim_acknowledged_removes_only_what_every_group_received_and_acknowledged(
    backend: QueueBackend, stream: str
) -> None:
    for group in ("fast", "slow"):
        await backend.queue.ensure_group(stream, group)
    ids = await backend.queue.publish(stream, items(6))
    await read_all(backend, stream, "fast", "c1")
    await backend.queue.ack(stream, "fast", ids[:3])  # fast: 4-6 pending
    await backend.queue.read(stream, "slow", "c1", count=5, block_ms=0)
    await backend.queue.ack(stream, "slow", [ids[0], ids[1], ids[4]])  # slow: 3, 4 pending

    assert await backend.queue.trim_acknowledged(stream) == 2
    assert await backend.queue.length(stream) == 4
    assert await backend.queue.trim_acknowledged(stream) == 0

    # What survived is still delivered: slow's pending 3 and 4, and its undelivered 6.
    reclaimed = await backend.queue.reclaim(stream, "slow", "c2", min_idle_ms=0, count=10)
    assert [e.id for e in reclaimed] == [ids[2], ids[3]]
    assert await read_all(backend, stream, "slow", "c2") == [ids[5]]
    await backend.queue.ack(stream, "slow", ids)
    assert await backend.queue.trim_acknowledged(stream) == 1  # fast still holds 4-6
    await backend.queue.ack(stream, "fast", ids)
    assert await backend.queue.trim_acknowledged(stream) == 3
    assert await backend.queue.length(stream) == 0


async def test_trim_acknowledged_keeps_entries_no_group_has_received(
    backend: QueueBackend, stream: str
) -> None:
    await backend.queue.publish(stream, items(3))
    assert await backend.queue.trim_acknowledged(stream) == 0  # no group at all
    await backend.queue.ensure_group(stream, "g")
    assert await backend.queue.trim_acknowledged(stream) == 0
    assert await backend.queue.trim_acknowledged(f"{stream}:missing") == 0
    assert await backend.queue.length(stream) == 3
    first = await backend.queue.read(stream, "g", "c1", count=1, block_ms=0)
    await backend.queue.ack(stream, "g", [first[0].id])
    assert await backend.queue.trim_acknowledged(stream) == 1
    assert await backend.queue.length(stream) == 2
    assert len(await read_all(backend, stream, "g", "c1")) == 2


# -- monitor states -----------------------------------------------------------------------

T = 1_700_000_000_000  # a Unix time in ms; observations are seconds after it


def seen(status: Status, second: int, confirmations: int = 1, recovery: int = 1) -> Observation:
    return Observation(status, T + second * 1000, confirmations, recovery)


@dataclass(frozen=True)
class Case:
    initial: MonitorState
    observations: list[Observation]
    outcomes: list[ApplyOutcome]
    changes: list[tuple[Status, Status, int]]  # previous, current, at second
    final: MonitorState


A, C, S = ApplyOutcome.APPLIED, ApplyOutcome.CHANGED, ApplyOutcome.STALE
CASES = {
    "a first up sets the status without an event": Case(
        MonitorState(),
        [seen(UP, 1, recovery=3)],
        [A],
        [],
        MonitorState(UP, 0, 1, T + 1000),
    ),
    "a first down with confirmations 1 is a change from presumed up": Case(
        MonitorState(),
        [seen(DOWN, 1)],
        [C],
        [(UP, DOWN, 1)],
        MonitorState(DOWN, 1, 0, T + 1000),
    ),
    "the first three downs with confirmations 3 change on the third": Case(
        MonitorState(),
        [seen(DOWN, s, confirmations=3) for s in (1, 2, 3, 4)],
        [A, A, C, A],
        [(UP, DOWN, 3)],
        MonitorState(DOWN, 4, 0, T + 4000),
    ),
    "an unconfirmed first down leaves the status unknown until an up sets it": Case(
        MonitorState(),
        [seen(DOWN, 1, confirmations=3), seen(DOWN, 2, confirmations=3), seen(UP, 3)]
        + [seen(DOWN, s, confirmations=3) for s in (4, 5)],
        [A, A, A, A, A],
        [],
        MonitorState(UP, 2, 0, T + 5000),
    ),
    "a state seeded with a status but no time is unknown": Case(
        MonitorState(DOWN, 0, 0, 0),
        [seen(DOWN, 1, confirmations=2), seen(DOWN, 2, confirmations=2)],
        [A, C],
        [(UP, DOWN, 2)],
        MonitorState(DOWN, 2, 0, T + 2000),
    ),
    "down only on the third failure with confirmations 3": Case(
        MonitorState(UP, 0, 5, T),
        [seen(DOWN, s, confirmations=3) for s in (1, 2, 3)],
        [A, A, C],
        [(UP, DOWN, 3)],
        MonitorState(DOWN, 3, 0, T + 3000),
    ),
    "up again on the second success with recovery_confirmations 2": Case(
        MonitorState(DOWN, 4, 0, T),
        [seen(UP, s, recovery=2) for s in (1, 2)],
        [A, C],
        [(DOWN, UP, 2)],
        MonitorState(UP, 0, 2, T + 2000),
    ),
    "stale and duplicate observations are ignored": Case(
        MonitorState(UP, 0, 1, T),
        [seen(DOWN, s, confirmations=2) for s in (2, 2, 1, 0, 3)],
        [A, S, S, S, C],
        [(UP, DOWN, 3)],
        MonitorState(DOWN, 2, 0, T + 3000),
    ),
    "flapping under the confirmations never emits": Case(
        MonitorState(UP, 0, 1, T),
        [
            seen(status, s, confirmations=3)
            for s, status in enumerate([DOWN, DOWN, UP, DOWN, DOWN, UP, DOWN, DOWN], 1)
        ],
        [A] * 8,
        [],
        MonitorState(UP, 2, 0, T + 8000),
    ),
    "with one confirmation every change emits at once": Case(
        MonitorState(UP, 0, 1, T),
        [seen(DOWN, 1), seen(UP, 2), seen(UP, 3)],
        [C, C, A],
        [(UP, DOWN, 1), (DOWN, UP, 2)],
        MonitorState(UP, 0, 2, T + 3000),
    ),
}


def run_rule(
    case: Case,
) -> tuple[list[ApplyOutcome], list[tuple[Status, Status, int]], MonitorState]:
    """The case through `domain.status.apply_observation` alone."""
    state = rebuilt_state(case.initial)  # as the stores seed it
    outcomes: list[ApplyOutcome] = []
    changes: list[tuple[Status, Status, int]] = []
    for observation in case.observations:
        after, transition = apply_observation(state, observation)
        outcomes.append(S if after is state else C if transition else A)
        if transition:
            changes.append(
                (transition.previous, transition.current, (transition.at_ms - T) // 1000)
            )
        state = after
    return outcomes, changes, state


@pytest.mark.parametrize("name", list(CASES))
def test_the_status_rule_gives_the_expected_outcomes(name: str) -> None:
    case = CASES[name]
    assert run_rule(case) == (case.outcomes, case.changes, case.final)


@pytest.mark.parametrize("name", list(CASES))
async def test_the_store_applies_the_status_rule_and_emits_each_change_once(
    backend: QueueBackend, stream: str, name: str
) -> None:
    case, website = CASES[name], uuid.uuid4()
    await backend.queue.ensure_group(stream, "g")
    await backend.states.seed(website, case.initial)
    checks = [
        ObservedCheck(website, o, status_change_event_id(website, o.at_ms), region_id=7)
        for o in case.observations
    ]
    outcomes = await backend.states.apply(checks, status_change_stream=stream)
    assert outcomes == case.outcomes
    assert await backend.states.get(website) == case.final

    entries = await backend.queue.read(stream, "g", "c1", count=100, block_ms=0)
    emitted = [StatusChange.from_fields(entry.fields) for entry in entries]
    assert emitted == [
        StatusChange(
            event_id=status_change_event_id(website, T + second * 1000),
            website_id=website,
            region_id=7,
            prev_status=previous,
            current_status=current,
            occurred_at=time_from_ms(T + second * 1000),
        )
        for previous, current, second in case.changes
    ]


async def test_an_unknown_monitor_needs_seeding_and_then_applies(
    backend: QueueBackend, stream: str
) -> None:
    website = uuid.uuid4()
    check = ObservedCheck(website, seen(DOWN, 1, confirmations=2), "event-1", region_id=1)
    assert await backend.states.get(website) is None
    assert await backend.states.apply([check], status_change_stream=stream) == [
        ApplyOutcome.NEEDS_SEED
    ]
    assert await backend.states.get(website) is None
    await backend.states.seed(website, MonitorState(UP, 0, 3, T))
    assert await backend.states.apply([check], status_change_stream=stream) == [A]
    assert await backend.states.get(website) == MonitorState(UP, 1, 0, T + 1000)
    assert await backend.queue.length(stream) == 0


async def test_seed_keeps_a_state_that_exists(backend: QueueBackend) -> None:
    website = uuid.uuid4()
    await backend.states.seed(website, MonitorState(DOWN, 2, 0, T))
    await backend.states.seed(website, MonitorState(UP, 0, 9, T + 5000))
    assert await backend.states.get(website) == MonitorState(DOWN, 2, 0, T)


async def test_a_batch_is_applied_in_order_and_per_monitor(
    backend: QueueBackend, stream: str
) -> None:
    known, unknown = uuid.uuid4(), uuid.uuid4()
    await backend.states.seed(known, MonitorState(UP, 0, 1, T))
    checks = [
        ObservedCheck(known, seen(DOWN, 1, confirmations=2), "e1", region_id=1),
        ObservedCheck(unknown, seen(DOWN, 1), "e2", region_id=1),
        ObservedCheck(known, seen(DOWN, 2, confirmations=2), "e3", region_id=1),
        ObservedCheck(known, seen(DOWN, 2, confirmations=2), "e4", region_id=1),
    ]
    assert await backend.states.apply(checks, status_change_stream=stream) == [
        A,
        ApplyOutcome.NEEDS_SEED,
        C,
        S,
    ]
    assert await backend.states.apply([], status_change_stream=stream) == []


async def test_concurrent_applies_of_one_observation_emit_exactly_one_event(
    backend: QueueBackend, twin: QueueBackend, stream: str
) -> None:
    website = uuid.uuid4()
    await backend.states.seed(website, MonitorState(UP, 2, 0, T))
    check = ObservedCheck(website, seen(DOWN, 1, confirmations=3), "event-1", region_id=1)
    clients = [backend, twin]  # on Redis: two connections pools, as two workers would have
    results = await asyncio.gather(
        *(clients[i % 2].states.apply([check], status_change_stream=stream) for i in range(50))
    )
    outcomes = [outcome for (outcome,) in results]
    assert outcomes.count(C) == 1
    assert outcomes.count(S) == 49
    assert await backend.queue.length(stream) == 1


async def test_a_monitor_state_expires_after_its_ttl(backend: QueueBackend) -> None:
    website = uuid.uuid4()
    await backend.states.seed(website, MonitorState(UP, 0, 1, T))
    if backend.redis is not None:
        ttl = await backend.redis.ttl(keys.monitor_state_key(str(website)))
        assert keys.MONITOR_STATE_TTL_SECONDS - 5 <= ttl <= keys.MONITOR_STATE_TTL_SECONDS
        return
    clock = FakeClock()
    broker = InProcessBroker(clock=clock)
    await broker.seed(website, MonitorState(UP, 0, 1, T))
    clock.now += keys.MONITOR_STATE_TTL_SECONDS - 1
    check = ObservedCheck(website, seen(UP, 1), "e", region_id=1)
    assert await broker.apply([check], status_change_stream="s") == [A]  # renews the TTL
    clock.now += keys.MONITOR_STATE_TTL_SECONDS - 1
    assert await broker.get(website) is not None
    clock.now += 2
    assert await broker.get(website) is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


# -- pending checks -----------------------------------------------------------------------


async def test_a_monitor_is_marked_pending_once_until_released_or_stale(
    backend: QueueBackend,
) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    due_a, due_b = DueCheck(a, stale_after_ms=5000), DueCheck(b, stale_after_ms=5000)
    assert await backend.pending.mark([due_a, due_b, due_a], now_ms=T) == [True, True, False]
    assert await backend.pending.mark([due_a], now_ms=T + 5000) == [False]
    assert await backend.pending.mark([due_a], now_ms=T + 5001) == [True]  # stale: replaced
    assert await backend.pending.mark([due_a], now_ms=T + 6000) == [False]  # from T + 5001
    await backend.pending.release([b])
    assert await backend.pending.mark([due_b, due_a], now_ms=T + 6000) == [True, False]
    await backend.pending.release([a, b, uuid.uuid4()])
    assert await backend.pending.mark([due_a, due_b], now_ms=T + 6000) == [True, True]
    assert await backend.pending.mark([], now_ms=T) == []


# -- leases -------------------------------------------------------------------------------


async def test_a_lease_is_held_by_one_holder_until_it_expires(backend: QueueBackend) -> None:
    name = f"test-{uuid.uuid4().hex}"
    assert await backend.lease.acquire(name, "a", 150)
    assert not await backend.lease.acquire(name, "b", 150)
    await asyncio.sleep(0.2)
    assert await backend.lease.acquire(name, "b", 150)
    assert not await backend.lease.acquire(name, "a", 150)


async def test_the_holder_renews_its_lease(backend: QueueBackend) -> None:
    name = f"test-{uuid.uuid4().hex}"
    assert await backend.lease.acquire(name, "a", 150)
    await asyncio.sleep(0.1)
    assert await backend.lease.acquire(name, "a", 150)
    await asyncio.sleep(0.1)  # past the first term, within the renewed one
    assert not await backend.lease.acquire(name, "b", 150)


async def test_only_the_holder_releases_a_lease(backend: QueueBackend) -> None:
    name = f"test-{uuid.uuid4().hex}"
    assert await backend.lease.acquire(name, "a", 10_000)
    await backend.lease.release(name, "b")
    assert not await backend.lease.acquire(name, "b", 10_000)
    await backend.lease.release(name, "a")
    assert await backend.lease.acquire(name, "b", 10_000)
    await backend.lease.release(f"{name}-never-taken", "b")


# -- specific to one back end ------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_an_unreachable_redis_raises_queue_unavailable() -> None:
    unreachable = open_backend(f"redis://127.0.0.1:{_closed_port()}/0")
    website = uuid.uuid4()
    calls = [
        unreachable.queue.ensure_group("s", "g"),
        unreachable.queue.publish("s", items(1)),
        unreachable.queue.read("s", "g", "c", count=1, block_ms=10),
        unreachable.queue.reclaim("s", "g", "c", min_idle_ms=0, count=1),
        unreachable.queue.touch("s", "g", "c", ["1-0"]),
        unreachable.queue.ack("s", "g", ["1-0"]),
        unreachable.queue.stats("s", "g"),
        unreachable.queue.length("s"),
        unreachable.queue.trim_acknowledged("s"),
        unreachable.states.apply(
            [ObservedCheck(website, seen(UP, 1), "e", 1)], status_change_stream="s"
        ),
        unreachable.states.seed(website, MonitorState()),
        unreachable.states.get(website),
        unreachable.pending.mark([DueCheck(website, 1000)], now_ms=T),
        unreachable.pending.release([website]),
        unreachable.lease.acquire("l", "a", 1000),
        unreachable.lease.release("l", "a"),
    ]
    for call in calls:
        with pytest.raises(QueueUnavailable):
            await call
    await unreachable.aclose()


def test_a_socket_timeout_shorter_than_a_blocking_read_is_refused() -> None:
    client = Redis.from_url("redis://127.0.0.1:6379/15", socket_timeout=2)
    with pytest.raises(ValueError, match="socket_timeout"):
        RedisStreamQueue(client, max_block_ms=5000)
    RedisStreamQueue(client, max_block_ms=1000)


async def test_a_redis_read_longer_than_one_block_waits_out_block_ms_and_still_wakes_early(
    clean_redis_db: str, stream: str
) -> None:
    client = Redis.from_url(clean_redis_db)
    queue = RedisStreamQueue(client, max_block_ms=50)  # a 300 ms read is six BLOCKs
    try:
        await queue.ensure_group(stream, "g")
        started = time.monotonic()
        assert await queue.read(stream, "g", "c1", count=1, block_ms=300) == []
        assert 0.28 <= time.monotonic() - started < 1.0
        reader = asyncio.create_task(queue.read(stream, "g", "c1", count=1, block_ms=3000))
        await asyncio.sleep(0.12)
        ids = await queue.publish(stream, items(1))
        started = time.monotonic()
        assert [e.id for e in await asyncio.wait_for(reader, 2)] == ids
        assert time.monotonic() - started < 0.5
    finally:
        await client.aclose()


async def test_in_process_ids_keep_increasing_when_the_wall_clock_steps_back() -> None:
    wall = iter([T, T, T - 5000, T + 1])
    broker = InProcessBroker(wall_ms=lambda: next(wall))
    assert await broker.publish("s", items(4)) == [f"{T}-0", f"{T}-1", f"{T}-2", f"{T + 1}-0"]
