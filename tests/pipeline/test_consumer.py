"""The shared consume loop (runstate.consumer), held against both queue back ends.

Every handler here is a real coroutine; the queues are the real in-process broker and a real
Redis (database 15, a fresh stream per test). The only wrapper is `CountingQueue`, which
counts the calls the loop makes on the queue and passes them through unchanged.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, cast

import pytest

from runstate.consumer import (
    CRASH_LOOP_FACTOR,
    DONE,
    BatchHandler,
    Consumer,
    ConsumerOptions,
    Outcome,
    Outcomes,
    PermanentFailure,
    Verdict,
    each_entry,
)
from runstate.flow import Slots
from runstate.queue.backend import QueueBackend, open_backend
from runstate.queue.base import Entry, QueueUnavailable, StreamQueue
from runstate.queue.in_process import InProcessBroker

GROUP = "workers"

# Touches come every third of reclaim_idle: 1 s leaves a slow handler's claim a margin of
# about 0.7 s against a busy machine stalling the event loop.
FAST = ConsumerOptions(
    batch_size=10,
    max_in_flight=40,
    block_ms=100,
    reclaim_idle_seconds=1.0,
    max_deliveries=3,
    shutdown_timeout_seconds=1.0,
    trim_every_seconds=0.2,
)
# For tests whose handlers return at once: what they leave pending comes back sooner.
RETRYING = replace(FAST, reclaim_idle_seconds=0.5)


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(params=["in_process", pytest.param("redis", marks=pytest.mark.redis)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[QueueBackend]:
    """The in-process broker, or a client of the test Redis (db 15; streams are per test, so
    the database is shared with other suites and never flushed here)."""
    if request.param == "in_process":
        opened = open_backend(None)
    else:
        opened = open_backend(request.getfixturevalue("redis_url"))
    yield opened
    await cancel_leftovers()
    await opened.aclose()


async def cancel_leftovers() -> None:
    """Cancel what a consumer that failed its test may have left running, before the client
    it uses is closed (a task stuck on a closed Redis client would hang the loop's close)."""
    leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in leftovers:
        task.cancel()
    if leftovers:
        await asyncio.wait(leftovers, timeout=5)


@pytest.fixture
async def twin(
    backend: QueueBackend, request: pytest.FixtureRequest
) -> AsyncIterator[QueueBackend]:
    """Another process's view of the same back end: a second Redis client, or the same
    in-process broker."""
    if backend.redis is None:
        yield backend
        return
    other = open_backend(request.getfixturevalue("redis_url"))
    yield other
    await cancel_leftovers()
    await other.aclose()


@pytest.fixture
def stream() -> str:
    return f"test:consumer:{uuid.uuid4().hex}"


# -- helpers --------------------------------------------------------------------------------


class CountingQueue:
    """Passes every call through to the real queue, counting them by method name."""

    def __init__(self, inner: StreamQueue) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return await method(*args, **kwargs)

        return counted


class GoesDown:
    """Passes every call through to the real queue, except while ``down``: then each one
    fails as a queue that cannot be reached does. ``only`` limits the outage to some
    methods. Records when ``touch`` was called, and whether it failed."""

    def __init__(self, inner: StreamQueue, only: frozenset[str] | None = None) -> None:
        self.inner = inner
        self.only = only
        self.down = False
        self.touches: list[tuple[float, bool]] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        async def maybe_down(*args: Any, **kwargs: Any) -> Any:
            failing = self.down and (self.only is None or name in self.only)
            if name == "touch":
                self.touches.append((time.monotonic(), failing))
            if failing:
                raise QueueUnavailable("connection refused")
            return await method(*args, **kwargs)

        return maybe_down


def make_consumer(
    queue: StreamQueue | CountingQueue | GoesDown,
    stream: str,
    handler: BatchHandler,
    *,
    name: str = "c1",
    options: ConsumerOptions = FAST,
    on_dead_letter: Callable[[Entry, str], None] | None = None,
) -> Consumer:
    return Consumer(
        queue=cast(StreamQueue, queue),
        stream=stream,
        group=GROUP,
        name=name,
        handler=handler,
        dead_letter_stream=f"{stream}:dlq",
        options=replace(options),
        on_dead_letter=on_dead_letter,
    )


@asynccontextmanager
async def running(*consumers: Consumer) -> AsyncIterator[asyncio.Event]:
    """Run the consumers until the block ends; then stop them and surface their errors."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(consumer.run(stop)) for consumer in consumers]
    try:
        yield stop
    finally:
        stop.set()
        done, pending = await asyncio.wait(tasks, timeout=10)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    assert not pending, "a consumer did not return after stop"
    for task in done:
        task.result()


async def until(
    probe: Callable[[], bool | Awaitable[bool]], *, timeout: float = 5.0, what: str = ""
) -> None:
    """Poll ``probe`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"not true within {timeout}s: {what or probe}")
        await asyncio.sleep(0.02)


async def pending(queue: StreamQueue, stream: str) -> int:
    return (await queue.stats(stream, GROUP)).pending


async def _pending_is(queue: StreamQueue, stream: str, expected: int) -> bool:
    return await pending(queue, stream) == expected


async def _length_is(queue: StreamQueue, stream: str, expected: int) -> bool:
    return await queue.length(stream) == expected


async def dead_letters(queue: StreamQueue, stream: str) -> list[Entry]:
    """Every entry of ``<stream>:dlq``, read through a group of its own."""
    inspector = f"inspector-{uuid.uuid4().hex}"
    await queue.ensure_group(f"{stream}:dlq", inspector)
    return await queue.read(f"{stream}:dlq", inspector, "i", count=1000, block_ms=0)


async def lose_stream(backend: QueueBackend, stream: str) -> None:
    """Lose the stream and its group, as when Redis restarts empty: DEL on Redis (it takes
    the group along and spares the other suites' keys in db 15), flush() in process."""
    if backend.redis is not None:
        await backend.redis.delete(stream)
    else:
        assert isinstance(backend.queue, InProcessBroker)
        backend.queue.flush()


@dataclass
class Recorder:
    """What an entry handler saw: (entry id, deliveries) for every call, and successes."""

    calls: list[tuple[str, int]] = field(default_factory=list)
    succeeded: list[str] = field(default_factory=list)


def fields_of(n: int) -> dict[str, str]:
    return {"n": str(n), "website_id": str(uuid.uuid4())}


async def publish(queue: StreamQueue, stream: str, *items: Mapping[str, str]) -> list[str]:
    return await queue.publish(stream, list(items))


# -- acknowledgement ------------------------------------------------------------------------


async def test_an_entry_is_acknowledged_only_after_its_handler_returned(
    backend: QueueBackend, stream: str
) -> None:
    queue = backend.queue
    started, release = asyncio.Event(), asyncio.Event()
    seen = Recorder()

    async def handle(entry: Entry) -> None:
        seen.calls.append((entry.id, entry.deliveries))
        started.set()
        await release.wait()
        seen.succeeded.append(entry.id)

    consumer = make_consumer(queue, stream, each_entry(handle, 4))
    async with running(consumer):
        [entry_id] = await publish(queue, stream, fields_of(1))
        await asyncio.wait_for(started.wait(), 5)
        assert await pending(queue, stream) == 1
        # Longer than reclaim_idle: still pending, still the one call, nothing acknowledged.
        await asyncio.sleep(FAST.reclaim_idle_seconds * 1.5)
        assert await pending(queue, stream) == 1
        assert consumer.counters.handled == 0
        release.set()
        await until(lambda: _pending_is(queue, stream, 0), what="acknowledged")
        assert seen.calls == [(entry_id, 1)]
        assert seen.succeeded == [entry_id]
        assert consumer.counters.handled == 1


# -- retries --------------------------------------------------------------------------------


async def test_an_entry_whose_handler_raised_stays_pending_and_is_handled_again_with_two_deliveries(
    backend: QueueBackend, twin: QueueBackend, stream: str
) -> None:
    seen = Recorder()
    by_consumer: dict[str, list[int]] = {"a": [], "b": []}

    def handler_for(name: str) -> BatchHandler:
        async def handle(entry: Entry) -> None:
            seen.calls.append((entry.id, entry.deliveries))
            by_consumer[name].append(entry.deliveries)
            if len(seen.calls) == 1:
                raise RuntimeError("database briefly away")
            seen.succeeded.append(entry.id)

        return each_entry(handle, 4)

    first = make_consumer(backend.queue, stream, handler_for("a"), name="a", options=RETRYING)
    second = make_consumer(twin.queue, stream, handler_for("b"), name="b", options=RETRYING)
    async with running(first, second):
        await backend.queue.ensure_group(stream, GROUP)
        [entry_id] = await publish(backend.queue, stream, fields_of(1))
        await until(lambda: len(seen.calls) == 1, what="first delivery")
        # The failure left it pending; it is not acknowledged.
        assert await pending(backend.queue, stream) == 1
        await until(lambda: seen.succeeded == [entry_id], what="handled on redelivery")
        await until(lambda: _pending_is(backend.queue, stream, 0), what="acknowledged")
    assert seen.calls == [(entry_id, 1), (entry_id, 2)]
    assert first.counters.retried + second.counters.retried == 1
    assert first.counters.handled + second.counters.handled == 1
    assert sorted(by_consumer["a"] + by_consumer["b"]) == [1, 2]


async def test_when_a_batch_handler_raises_every_entry_of_the_batch_is_retried(
    backend: QueueBackend, stream: str
) -> None:
    queue = backend.queue
    batches: list[list[tuple[str, int]]] = []

    async def handle_batch(entries: Sequence[Entry]) -> AsyncGenerator[Outcomes, None]:
        batches.append([(e.id, e.deliveries) for e in entries])
        if len(batches) == 1:
            raise RuntimeError("the whole transaction failed")
        yield {e.id: DONE for e in entries}

    await queue.ensure_group(stream, GROUP)
    ids = await publish(queue, stream, fields_of(1), fields_of(2), fields_of(3))
    consumer = make_consumer(queue, stream, handle_batch, options=RETRYING)
    async with running(consumer):
        await until(lambda: consumer.counters.handled == 3, what="all handled")
        await until(lambda: _pending_is(queue, stream, 0))
    assert batches[0] == [(i, 1) for i in ids]
    assert sorted(pair for batch in batches[1:] for pair in batch) == [(i, 2) for i in ids]
    assert consumer.counters.retried == 3


async def test_each_entry_of_a_batch_gets_its_own_verdict(
    backend: QueueBackend, stream: str
) -> None:
    """DONE is acknowledged once, RETRY comes back, DEAD goes to the dead-letter stream, and
    an entry the handler gave no verdict for is retried rather than lost or acknowledged."""
    queue = backend.queue
    seen: Counter[str] = Counter()

    await queue.ensure_group(stream, GROUP)
    done_id, retry_id, dead_id, silent_id = await publish(
        queue, stream, fields_of(1), fields_of(2), fields_of(3), fields_of(4)
    )

    async def handle_batch(entries: Sequence[Entry]) -> AsyncGenerator[Outcomes, None]:
        outcomes: dict[str, Outcome] = {}
        for entry in entries:
            seen[entry.id] += 1
            if entry.id == done_id:
                outcomes[entry.id] = DONE
            elif entry.id == retry_id:
                again = entry.deliveries == 1
                outcomes[entry.id] = Outcome(Verdict.RETRY, "later") if again else DONE
            elif entry.id == dead_id:
                outcomes[entry.id] = Outcome(Verdict.DEAD, "refers to nothing")
            elif entry.deliveries > 1:  # silent_id: no verdict the first time
                outcomes[entry.id] = DONE
        yield outcomes

    consumer = make_consumer(queue, stream, handle_batch, options=RETRYING)
    async with running(consumer):
        await until(lambda: seen[retry_id] == 2 and seen[silent_id] == 2, what="redeliveries")
        await until(lambda: _pending_is(queue, stream, 0), what="all settled")
        await asyncio.sleep(RETRYING.reclaim_idle_seconds * 1.5)  # nothing else comes back
    assert seen == {done_id: 1, retry_id: 2, dead_id: 1, silent_id: 2}
    [letter] = await dead_letters(queue, stream)
    assert letter.fields["dead_letter_entry_id"] == dead_id
    assert letter.fields["dead_letter_reason"] == "refers to nothing"
    assert consumer.counters.handled == 3
    assert consumer.counters.dead_lettered == 1


# -- dead letters ---------------------------------------------------------------------------


async def test_a_permanent_failure_is_dead_lettered_with_reason_and_origin_and_never_redelivered(
    backend: QueueBackend, stream: str
) -> None:
    queue = backend.queue
    seen = Recorder()
    noticed: list[tuple[str, str]] = []

    async def handle(entry: Entry) -> None:
        seen.calls.append((entry.id, entry.deliveries))
        raise PermanentFailure("malformed: no url")

    original = {"website_id": str(uuid.uuid4()), "url": "", "scheduled_at": "2024-01-01"}
    consumer = make_consumer(
        queue,
        stream,
        each_entry(handle, 2),
        on_dead_letter=lambda entry, reason: noticed.append((entry.id, reason)),
        options=RETRYING,
    )
    async with running(consumer):
        await queue.ensure_group(stream, GROUP)
        [entry_id] = await publish(queue, stream, original)
        await until(lambda: consumer.counters.dead_lettered == 1, what="dead-lettered")
        await until(lambda: _pending_is(queue, stream, 0), what="acknowledged")
        await asyncio.sleep(RETRYING.reclaim_idle_seconds * 2)  # it would have come back by now
    assert seen.calls == [(entry_id, 1)]
    [letter] = await dead_letters(queue, stream)
    assert letter.fields == {
        **original,
        "dead_letter_reason": "malformed: no url",
        "dead_letter_stream": stream,
        "dead_letter_entry_id": entry_id,
        "dead_letter_deliveries": "1",
    }
    assert noticed == [(entry_id, "malformed: no url")]
    assert consumer.counters.handled == 0
    assert consumer.counters.retried == 0


async def test_an_entry_that_keeps_failing_is_dead_lettered_after_max_deliveries(
    backend: QueueBackend, stream: str
) -> None:
    queue = backend.queue
    seen = Recorder()
    noticed: list[tuple[str, str]] = []

    async def handle(entry: Entry) -> None:
        seen.calls.append((entry.id, entry.deliveries))
        raise RuntimeError("target table missing")

    consumer = make_consumer(
        queue,
        stream,
        each_entry(handle, 2),
        on_dead_letter=lambda entry, reason: noticed.append((entry.id, reason)),
        options=RETRYING,
    )
    async with running(consumer):
        await queue.ensure_group(stream, GROUP)
        [entry_id] = await publish(queue, stream, {"n": "1"})
        await until(lambda: len(noticed) == 1, timeout=10, what="dead-lettered")
        await until(lambda: _pending_is(queue, stream, 0), what="acknowledged")
        await asyncio.sleep(RETRYING.reclaim_idle_seconds * 2)  # and not looped any further
    # Dead as soon as its max_deliveries-th failure is counted, with the last error.
    assert seen.calls == [(entry_id, d) for d in range(1, RETRYING.max_deliveries + 1)]
    [letter] = await dead_letters(queue, stream)
    reason = letter.fields["dead_letter_reason"]
    assert reason == (
        f"failed {RETRYING.max_deliveries} times; last: RuntimeError: target table missing"
    )
    assert letter.fields["dead_letter_entry_id"] == entry_id
    assert letter.fields["dead_letter_stream"] == stream
    assert letter.fields["dead_letter_deliveries"] == str(RETRYING.max_deliveries)
    assert letter.fields["n"] == "1"
    assert noticed == [(entry_id, reason)]
    assert consumer.counters.retried == RETRYING.max_deliveries - 1
    assert consumer.counters.dead_lettered == 1


async def test_a_failing_dead_letter_callback_does_not_keep_the_entry_from_being_acknowledged(
    backend: QueueBackend, stream: str
) -> None:
    queue = backend.queue
    calls: list[str] = []

    async def handle(entry: Entry) -> None:
        calls.append(entry.id)
        raise PermanentFailure("bad")

    def broken_callback(entry: Entry, reason: str) -> None:
        raise RuntimeError("metrics are down")

    consumer = make_consumer(
        queue, stream, each_entry(handle, 1), on_dead_letter=broken_callback, options=RETRYING
    )
    async with running(consumer):
        await queue.ensure_group(stream, GROUP)
        [entry_id] = await publish(queue, stream, {"n": "1"})
        await until(lambda: calls == [entry_id])
        await until(lambda: _pending_is(queue, stream, 0), what="acknowledged")
        await asyncio.sleep(RETRYING.reclaim_idle_seconds * 2)
    assert calls == [entry_id]
    assert len(await dead_letters(queue, stream)) == 1


# -- sharing work ---------------------------------------------------------------------------


async def test_a_slow_handler_keeps_its_entry_and_a_second_consumer_does_not_take_it(
    backend: QueueBackend, twin: QueueBackend, stream: str
) -> None:
    options = FAST
    slow_for = options.reclaim_idle_seconds * 3
    started = asyncio.Event()
    slow_calls: list[str] = []
    other_calls: list[str] = []

    async def slow(entry: Entry) -> None:
        slow_calls.append(entry.id)
        started.set()
        await asyncio.sleep(slow_for)

    async def other(entry: Entry) -> None:
        other_calls.append(entry.id)

    holder = make_consumer(
        backend.queue, stream, each_entry(slow, 1), name="holder", options=options
    )
    rival = make_consumer(twin.queue, stream, each_entry(other, 1), name="rival", options=options)
    async with running(holder):
        await backend.queue.ensure_group(stream, GROUP)
        [entry_id] = await publish(backend.queue, stream, fields_of(1))
        await asyncio.wait_for(started.wait(), 5)
        async with running(rival):
            await asyncio.sleep(options.reclaim_idle_seconds * 2)
            # Idle far longer than reclaim_idle had nobody touched it: still it is not idle.
            stolen = await twin.queue.reclaim(
                stream,
                GROUP,
                "thief",
                min_idle_ms=int(options.reclaim_idle_seconds * 1000),
                count=10,
            )
            assert stolen == []
            await until(lambda: holder.counters.handled == 1, timeout=slow_for + 3)
            await until(lambda: _pending_is(backend.queue, stream, 0))
    assert slow_calls == [entry_id]
    assert other_calls == []
    assert rival.counters.reclaimed == 0
    assert holder.counters.retried == 0


async def test_two_consumers_of_one_group_split_the_entries_and_handle_each_once(
    backend: QueueBackend, twin: QueueBackend, stream: str
) -> None:
    options = replace(FAST, batch_size=3, max_in_flight=3)
    handled: dict[str, list[str]] = {"a": [], "b": []}

    def handler_for(name: str) -> BatchHandler:
        async def handle(entry: Entry) -> None:
            await asyncio.sleep(0.02)
            handled[name].append(entry.id)

        return each_entry(handle, 3)

    first = make_consumer(backend.queue, stream, handler_for("a"), name="a", options=options)
    second = make_consumer(twin.queue, stream, handler_for("b"), name="b", options=options)
    async with running(first, second):
        await backend.queue.ensure_group(stream, GROUP)
        ids = await backend.queue.publish(stream, [fields_of(i) for i in range(30)])
        await until(lambda: len(handled["a"]) + len(handled["b"]) >= 30, what="all handled")
        await until(lambda: _pending_is(backend.queue, stream, 0))
        await asyncio.sleep(FAST.reclaim_idle_seconds * 1.5)  # no second helpings
    everything = Counter(handled["a"] + handled["b"])
    assert set(everything) == set(ids)
    assert set(everything.values()) == {1}
    assert handled["a"], "each consumer gets a share"
    assert handled["b"], "each consumer gets a share"


async def test_each_entry_never_runs_more_handlers_at_once_than_its_concurrency(
    backend: QueueBackend, stream: str
) -> None:
    active = 0
    peak = 0
    finished: list[str] = []

    async def handle(entry: Entry) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        try:
            await asyncio.sleep(0.05)
        finally:
            active -= 1
        finished.append(entry.id)

    # Up to four batches of five in flight: twenty entries at hand, three at a time.
    options = replace(FAST, batch_size=5, max_in_flight=20)
    consumer = make_consumer(backend.queue, stream, each_entry(handle, 3), options=options)
    await backend.queue.ensure_group(stream, GROUP)
    ids = await backend.queue.publish(stream, [fields_of(i) for i in range(20)])
    async with running(consumer):
        await until(lambda: len(finished) == 20, what="all handled")
    assert sorted(finished) == sorted(ids)
    assert peak == 3


async def test_a_slow_entry_does_not_hold_back_the_acknowledgement_of_its_batch(
    backend: QueueBackend, stream: str
) -> None:
    queue = backend.queue
    release = asyncio.Event()
    finished: list[str] = []

    async def handle(entry: Entry) -> None:
        if entry.fields["kind"] == "slow":
            await release.wait()
        finished.append(entry.fields["kind"])

    consumer = make_consumer(queue, stream, each_entry(handle, 10))
    await queue.ensure_group(stream, GROUP)
    await publish(queue, stream, {"kind": "slow"}, *({"kind": "quick"} for _ in range(5)))
    async with running(consumer):
        await until(lambda: consumer.counters.handled == 5, what="the quick ones settled")
        assert await pending(queue, stream) == 1, "only the slow entry is still pending"
        release.set()
        await until(lambda: _pending_is(queue, stream, 0), what="the slow one settled")
    assert finished.count("quick") == 5
    assert finished[-1] == "slow"


async def test_the_consumer_reads_no_more_entries_than_it_has_free_slots(
    backend: QueueBackend, stream: str
) -> None:
    """Read-ahead by free slots: with three slots, three entries are taken and the rest stay
    in the stream (for any consumer of the group) until a slot frees."""
    queue = backend.queue
    release = asyncio.Event()
    started: list[str] = []

    async def handle(entry: Entry) -> None:
        started.append(entry.id)
        await release.wait()

    slots = Slots(3)
    consumer = make_consumer(queue, stream, each_entry(handle, 10))
    consumer.slots = slots
    await queue.ensure_group(stream, GROUP)
    await publish(queue, stream, *(fields_of(i) for i in range(8)))
    async with running(consumer):
        await until(lambda: len(started) == 3, what="three started")
        await asyncio.sleep(0.3)
        assert len(started) == 3
        assert slots.free == 0
        release.set()
        await until(lambda: consumer.counters.handled == 8, what="all handled")
    assert slots.free == 3, "every slot is given back"


class AckFailsOnce(CountingQueue):
    """The real queue, except that the first acknowledgement fails as if Redis blinked."""

    def __getattr__(self, name: str) -> Any:
        if name == "ack" and not self.calls["ack"]:
            self.calls["ack"] += 1

            async def fail(*args: Any, **kwargs: Any) -> None:
                raise QueueUnavailable("connection reset")

            return fail
        return super().__getattr__(name)


async def test_a_failed_acknowledgement_leaves_its_entry_pending_and_the_batch_goes_on(
    backend: QueueBackend, stream: str
) -> None:
    queue = backend.queue
    release = asyncio.Event()
    finished: list[str] = []
    started: Counter[str] = Counter()

    async def handle(entry: Entry) -> None:
        started[entry.id] += 1
        if entry.fields["kind"] == "later":
            await release.wait()
        finished.append(entry.fields["kind"])

    flaky = AckFailsOnce(queue)
    consumer = make_consumer(flaky, stream, each_entry(handle, 10), options=RETRYING)
    await queue.ensure_group(stream, GROUP)
    first, *later = await publish(
        queue, stream, {"kind": "first"}, *({"kind": "later"} for _ in range(3))
    )
    async with running(consumer):
        await until(lambda: finished == ["first"], what="the first entry handled")
        await asyncio.sleep(0.1)  # its acknowledgement failed meanwhile
        release.set()
        await until(lambda: consumer.counters.handled >= 4, what="the rest handled")
        await until(lambda: _pending_is(queue, stream, 0), what="all settled in the end")
    assert [started[i] for i in later] == [1, 1, 1], "the rest of the batch was not cancelled"
    assert started[first] == 2, "the entry whose acknowledgement failed came back, once"


# -- surviving the queue --------------------------------------------------------------------


async def test_after_the_queue_lost_its_stream_the_consumer_recreates_the_group_without_a_hot_loop(
    backend: QueueBackend, stream: str
) -> None:
    counting = CountingQueue(backend.queue)
    handled: list[str] = []

    async def handle(entry: Entry) -> None:
        handled.append(entry.fields["n"])

    consumer = make_consumer(counting, stream, each_entry(handle, 2))
    async with running(consumer):
        await backend.queue.ensure_group(stream, GROUP)
        await publish(backend.queue, stream, {"n": "before"})
        await until(lambda: handled == ["before"])
        counting.calls.clear()
        lost_at = time.monotonic()
        await lose_stream(backend, stream)
        await publish(backend.queue, stream, {"n": "after"})
        await until(lambda: handled == ["before", "after"], timeout=5, what="handled after")
        await until(lambda: _pending_is(backend.queue, stream, 0))
        await asyncio.sleep(max(0.0, 2.0 - (time.monotonic() - lost_at)))
        window = time.monotonic() - lost_at
        calls = dict(counting.calls)
    # block_ms is 100: about ten reads a second; a hot loop would make thousands.
    assert 1 <= calls.get("ensure_group", 0) <= 5, calls
    assert calls.get("read", 0) <= window / (FAST.block_ms / 1000) * 2 + 10, calls
    assert sum(calls.values()) < 200, calls


async def test_when_the_queue_is_unreachable_the_consumer_backs_off_and_stops_promptly() -> None:
    unreachable = open_backend("redis://127.0.0.1:1/0")
    counting = CountingQueue(unreachable.queue)
    handled: list[str] = []

    async def handle(entry: Entry) -> None:
        handled.append(entry.id)

    consumer = make_consumer(counting, "test:consumer:unreachable", each_entry(handle, 1))
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        await asyncio.sleep(2.0)
        assert not task.done(), "the consumer must ride out an outage, not crash"
        attempts = sum(counting.calls.values())
        # Backoff from 0.1 s doubling (full jitter): a handful of attempts in 2 s.
        assert 2 <= attempts <= 25, counting.calls
        assert consumer.counters.outages == 1
        stopped_at = time.monotonic()
        stop.set()
        await asyncio.wait_for(task, 2)
        assert time.monotonic() - stopped_at < 0.5
    finally:
        stop.set()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await unreachable.aclose()
    assert handled == []


# -- stopping -------------------------------------------------------------------------------


async def test_on_stop_finished_work_is_acknowledged_and_unfinished_work_stays_pending(
    backend: QueueBackend, twin: QueueBackend, stream: str
) -> None:
    queue = backend.queue
    options = replace(FAST, batch_size=1, max_in_flight=2, shutdown_timeout_seconds=1.0)
    stop = asyncio.Event()
    started: dict[str, asyncio.Event] = {"quick": asyncio.Event(), "stuck": asyncio.Event()}
    finished: list[str] = []
    cancelled: list[str] = []

    async def handle(entry: Entry) -> None:
        kind = entry.fields["kind"]
        started[kind].set()
        try:
            await stop.wait()
            await asyncio.sleep(0.2 if kind == "quick" else 3600)
        except asyncio.CancelledError:
            cancelled.append(kind)
            raise
        finished.append(kind)

    counting = CountingQueue(queue)
    consumer = make_consumer(counting, stream, each_entry(handle, 2), options=options)
    await queue.ensure_group(stream, GROUP)
    quick_id, stuck_id = await publish(queue, stream, {"kind": "quick"}, {"kind": "stuck"})
    task = asyncio.create_task(consumer.run(stop))
    try:
        await asyncio.wait_for(started["quick"].wait(), 5)
        await asyncio.wait_for(started["stuck"].wait(), 5)
        reads_before_stop = counting.calls["read"]
        stopped_at = time.monotonic()
        stop.set()
        await asyncio.wait_for(task, options.shutdown_timeout_seconds + 2)
        took = time.monotonic() - stopped_at
    finally:
        stop.set()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert took < options.shutdown_timeout_seconds + 0.5
    assert counting.calls["read"] == reads_before_stop, "no read after stop"
    assert finished == ["quick"]
    assert cancelled == ["stuck"]
    assert consumer.counters.handled == 1
    # The quick entry was acknowledged; the stuck one waits for another consumer.
    assert await pending(queue, stream) == 1
    taken = await twin.queue.reclaim(stream, GROUP, "next", min_idle_ms=0, count=10)
    assert [(e.id, e.deliveries) for e in taken] == [(stuck_id, 2)]
    assert quick_id != stuck_id


async def test_stop_returns_within_the_shutdown_timeout_even_when_every_batch_slot_is_busy(
    backend: QueueBackend, stream: str
) -> None:
    queue = backend.queue
    options = replace(FAST, max_in_flight=1, shutdown_timeout_seconds=0.5)
    started = asyncio.Event()

    async def handle(entry: Entry) -> None:
        started.set()
        await asyncio.sleep(3600)

    consumer = make_consumer(queue, stream, each_entry(handle, 1), options=options)
    await queue.ensure_group(stream, GROUP)
    await publish(queue, stream, {"n": "1"})
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        await asyncio.wait_for(started.wait(), 5)
        await publish(queue, stream, {"n": "2"})  # waits for a slot that never frees
        await asyncio.sleep(0.3)
        stopped_at = time.monotonic()
        stop.set()
        await asyncio.wait_for(task, options.shutdown_timeout_seconds + 2)
        took = time.monotonic() - stopped_at
    finally:
        stop.set()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert took < options.shutdown_timeout_seconds + 0.5
    stats = await queue.stats(stream, GROUP)
    assert (stats.pending, stats.lag) == (1, 1), "the stuck entry pending, the next unread"


async def test_a_cancelled_consumer_leaves_no_handler_running_behind_it(
    backend: QueueBackend, stream: str
) -> None:
    queue = backend.queue
    started = asyncio.Event()
    cancelled: list[str] = []

    async def handle(entry: Entry) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(entry.id)
            raise

    consumer = make_consumer(queue, stream, each_entry(handle, 1))
    await queue.ensure_group(stream, GROUP)
    [entry_id] = await publish(queue, stream, {"n": "1"})
    task = asyncio.create_task(consumer.run(asyncio.Event()))
    try:
        await asyncio.wait_for(started.wait(), 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # By the time run() is gone, so is its handler; the entry waits for another consumer.
    assert cancelled == [entry_id]
    assert await pending(queue, stream) == 1


# -- trimming -------------------------------------------------------------------------------


async def test_acknowledged_entries_are_trimmed_and_pending_ones_are_kept(
    backend: QueueBackend, stream: str
) -> None:
    queue = backend.queue
    release = asyncio.Event()
    started = asyncio.Event()
    handled: list[str] = []

    async def handle(entry: Entry) -> None:
        if entry.fields["n"] == "first":
            started.set()
            await release.wait()
        handled.append(entry.fields["n"])

    consumer = make_consumer(queue, stream, each_entry(handle, 4))
    async with running(consumer):
        await queue.ensure_group(stream, GROUP)
        await publish(queue, stream, {"n": "first"})
        await asyncio.wait_for(started.wait(), 5)
        await queue.publish(stream, [{"n": str(i)} for i in range(4)])
        await until(lambda: len(handled) == 4, what="the later four handled")
        await asyncio.sleep(FAST.trim_every_seconds * 3)
        # The oldest entry is still pending: nothing at or after it may go.
        assert await queue.length(stream) == 5
        release.set()
        await until(lambda: _pending_is(queue, stream, 0))
        released_at = time.monotonic()
        await until(lambda: _length_is(queue, stream, 0), timeout=3, what="trimmed")
        assert time.monotonic() - released_at < FAST.trim_every_seconds + 1.0


# -- outages are not failures -----------------------------------------------------------------


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def reach_the_database(port: int) -> None:
    """What a handler meets while its database is down: a real refused connection."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()


async def test_an_outage_longer_than_max_deliveries_is_waited_out_in_place_and_loses_nothing(
    backend: QueueBackend, stream: str
) -> None:
    """The database down for longer than max_deliveries x reclaim_idle: the handler is run
    again in place until it is back; the entry is never redelivered, never dead-lettered."""
    queue = backend.queue
    seen = Recorder()
    port = closed_port()
    outage_ends = time.monotonic() + RETRYING.max_deliveries * RETRYING.reclaim_idle_seconds + 1

    async def handle(entry: Entry) -> None:
        seen.calls.append((entry.id, entry.deliveries))
        if time.monotonic() < outage_ends:
            await reach_the_database(port)
        seen.succeeded.append(entry.id)

    options = replace(RETRYING, outage_retry_max_seconds=0.2)
    consumer = make_consumer(queue, stream, each_entry(handle, 2), options=options)
    async with running(consumer):
        await queue.ensure_group(stream, GROUP)
        [entry_id] = await publish(queue, stream, fields_of(1))
        await until(lambda: seen.succeeded == [entry_id], timeout=15, what="handled after")
        await until(lambda: _pending_is(queue, stream, 0), what="acknowledged")
    assert len(seen.calls) > RETRYING.max_deliveries, "tried again and again in place"
    assert {deliveries for _, deliveries in seen.calls} == {1}, "never redelivered"
    assert await dead_letters(queue, stream) == []
    assert consumer.counters.handled == 1
    assert consumer.counters.retried == 0
    assert consumer.counters.dead_lettered == 0


async def test_an_entry_redelivered_by_dying_workers_is_not_dead_without_failing_itself(
    backend: QueueBackend, twin: QueueBackend, stream: str
) -> None:
    """Deliveries alone never make an entry dead: workers that took it and died (here,
    reclaimed by consumers that never settle) are no failure of the entry."""
    queue = backend.queue
    await queue.ensure_group(stream, GROUP)
    [entry_id] = await publish(queue, stream, fields_of(1))
    await twin.queue.read(stream, GROUP, "died-0", count=1, block_ms=0)
    for n in range(RETRYING.max_deliveries + 1):
        [taken] = await twin.queue.reclaim(stream, GROUP, f"died-{n + 1}", min_idle_ms=0, count=1)
    assert taken.deliveries == RETRYING.max_deliveries + 2
    handled: list[tuple[str, int]] = []

    async def handle(entry: Entry) -> None:
        handled.append((entry.id, entry.deliveries))

    consumer = make_consumer(queue, stream, each_entry(handle, 1), options=RETRYING)
    async with running(consumer):
        await until(lambda: _pending_is(queue, stream, 0), timeout=5, what="handled")
    assert handled == [(entry_id, RETRYING.max_deliveries + 3)]
    assert await dead_letters(queue, stream) == []
    assert consumer.counters.dead_lettered == 0


async def test_an_entry_that_keeps_killing_its_workers_is_dead_after_the_crash_loop_bound(
    backend: QueueBackend, twin: QueueBackend, stream: str
) -> None:
    """An entry that kills every worker taking it (no handler ever sees a failure) would
    otherwise come back for ever: past CRASH_LOOP_FACTOR x max_deliveries deliveries
    without a verdict it is dead-lettered, never handled again."""
    queue = backend.queue
    await queue.ensure_group(stream, GROUP)
    [entry_id] = await publish(queue, stream, fields_of(1))
    await twin.queue.read(stream, GROUP, "died-0", count=1, block_ms=0)
    bound = CRASH_LOOP_FACTOR * RETRYING.max_deliveries
    for n in range(bound):
        [taken] = await twin.queue.reclaim(stream, GROUP, f"died-{n + 1}", min_idle_ms=0, count=1)
    assert taken.deliveries == bound + 1
    handled: list[str] = []

    async def handle(entry: Entry) -> None:
        handled.append(entry.id)

    consumer = make_consumer(queue, stream, each_entry(handle, 1), options=RETRYING)
    async with running(consumer):
        await until(lambda: _pending_is(queue, stream, 0), timeout=5, what="settled")
    assert handled == []
    [letter] = await dead_letters(queue, stream)
    assert letter.fields["dead_letter_entry_id"] == entry_id
    assert "its workers may be dying" in letter.fields["dead_letter_reason"]


async def test_failures_count_across_consumers_and_one_failure_in_between_outages_counts_once(
    backend: QueueBackend, twin: QueueBackend, stream: str
) -> None:
    """The count of an entry's own failures lives with the queue: a second consumer goes on
    from where the first left off, and only failures of the entry itself count."""
    seen: list[str] = []
    port = closed_port()

    def handler_for(name: str) -> BatchHandler:
        async def handle(entry: Entry) -> None:
            seen.append(name)
            if len(seen) % 2:  # every other call meets an outage first
                await reach_the_database(port)
            raise RuntimeError(f"bad entry, seen by {name}")

        return each_entry(handle, 1)

    options = replace(RETRYING, outage_retry_max_seconds=0.1)
    first = make_consumer(backend.queue, stream, handler_for("a"), name="a", options=options)
    second = make_consumer(twin.queue, stream, handler_for("b"), name="b", options=options)
    await backend.queue.ensure_group(stream, GROUP)
    await publish(backend.queue, stream, fields_of(1))
    async with running(first):
        await until(lambda: first.counters.retried == 1, what="the first failure")
    async with running(second):
        await until(lambda: second.counters.dead_lettered == 1, timeout=10, what="dead")
    [letter] = await dead_letters(backend.queue, stream)
    last = "RuntimeError: bad entry, seen by b"
    assert (
        letter.fields["dead_letter_reason"]
        == f"failed {options.max_deliveries} times; last: {last}"
    )
    assert first.counters.retried + second.counters.retried == options.max_deliveries - 1


async def test_a_dead_lettered_entry_releases_what_it_holds_before_it_is_dead_lettered_once(
    backend: QueueBackend, stream: str
) -> None:
    queue = backend.queue
    released: list[list[str]] = []
    fail_release = True

    async def release(entries: Sequence[Entry]) -> None:
        released.append([e.id for e in entries])
        if fail_release:
            raise QueueUnavailable("Redis blinked")

    async def handle(entry: Entry) -> None:
        raise PermanentFailure("malformed")

    consumer = make_consumer(queue, stream, each_entry(handle, 1), options=RETRYING)
    consumer.release = release
    await queue.ensure_group(stream, GROUP)
    [entry_id] = await publish(queue, stream, fields_of(1))
    async with running(consumer):
        await until(lambda: len(released) == 1, what="a release tried")
        await asyncio.sleep(0.1)
        assert await pending(queue, stream) == 1, "not acknowledged before its release"
        fail_release = False
        await until(lambda: _pending_is(queue, stream, 0), timeout=5, what="acknowledged")
    assert released == [[entry_id], [entry_id]]
    # Dead-lettered once: not before the release that failed, and again after the one
    # that did not.
    letters = await dead_letters(queue, stream)
    assert [letter.fields["dead_letter_entry_id"] for letter in letters] == [entry_id]


# -- claims across a queue outage -------------------------------------------------------------


async def test_after_a_queue_outage_longer_than_reclaim_idle_an_entry_is_not_handled_twice(
    backend: QueueBackend, stream: str
) -> None:
    """Touches fail while the queue is down; when it is back, the consumer's own reclaim
    finds the entry idle: it must not hand it to a second handler while the first runs."""
    queue = GoesDown(backend.queue)
    options = replace(FAST, outage_retry_max_seconds=0.2)
    running_now = 0
    most_at_once = 0
    calls: list[str] = []
    finish = asyncio.Event()

    async def handle(entry: Entry) -> None:
        nonlocal running_now, most_at_once
        calls.append(entry.id)
        running_now += 1
        most_at_once = max(most_at_once, running_now)
        try:
            await finish.wait()
        finally:
            running_now -= 1

    consumer = make_consumer(queue, stream, each_entry(handle, 4), options=options)
    async with running(consumer):
        await backend.queue.ensure_group(stream, GROUP)
        [entry_id] = await publish(backend.queue, stream, fields_of(1))
        await until(lambda: calls == [entry_id], what="handling begun")
        queue.down = True
        await asyncio.sleep(options.reclaim_idle_seconds * 1.5)
        queue.down = False
        await until(lambda: consumer.counters.outages >= 1, what="the outage seen")
        # Time for the loop to reclaim (every reclaim_idle / 2) once the queue is back.
        await asyncio.sleep(options.reclaim_idle_seconds)
        assert calls == [entry_id], "handled a second time while the first is running"
        assert consumer.counters.reclaimed == 0
        finish.set()
        await until(lambda: consumer.counters.handled == 1, what="handled")
        await until(lambda: _pending_is(backend.queue, stream, 0), what="acknowledged")
    assert most_at_once == 1


async def test_a_failed_touch_is_tried_again_soon_not_a_third_of_reclaim_idle_later(
    backend: QueueBackend, stream: str
) -> None:
    queue = GoesDown(backend.queue, only=frozenset({"touch"}))
    options = replace(FAST, reclaim_idle_seconds=6.0)  # touches every 2 s
    finish = asyncio.Event()

    async def handle(entry: Entry) -> None:
        await finish.wait()

    consumer = make_consumer(queue, stream, each_entry(handle, 1), options=options)
    async with running(consumer):
        await backend.queue.ensure_group(stream, GROUP)
        await publish(backend.queue, stream, fields_of(1))
        queue.down = True
        await until(lambda: len(queue.touches) == 1, timeout=5, what="a first touch")
        queue.down = False
        await until(lambda: len(queue.touches) == 2, timeout=5, what="the touch tried again")
        finish.set()
        await until(lambda: consumer.counters.handled == 1, what="handled")
    (failed_at, failed), (retried_at, retry_failed) = queue.touches[:2]
    assert failed
    assert not retry_failed
    assert retried_at - failed_at < options.reclaim_idle_seconds / 3 / 2
