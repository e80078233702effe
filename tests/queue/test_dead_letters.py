"""The queue's part in dead letters, on both back ends: failures of an entry's own handling
are counted apart from its deliveries and forgotten when it is acknowledged, and every
dead-letter stream is capped."""

from __future__ import annotations

import pytest

from runstate.queue import keys
from runstate.queue.backend import QueueBackend, open_backend

GROUP = "workers"


async def test_failures_are_counted_per_entry_carried_by_reclaim_and_forgotten_on_ack(
    backend: QueueBackend, twin: QueueBackend, stream: str
) -> None:
    queue = backend.queue
    await queue.ensure_group(stream, GROUP)
    first, second = await queue.publish(stream, [{"n": "1"}, {"n": "2"}])
    await queue.read(stream, GROUP, "a", count=2, block_ms=0)
    assert await queue.record_failures(stream, GROUP, [first]) == [1]
    assert await queue.record_failures(stream, GROUP, [first, second]) == [2, 1]

    # Another consumer taking them over sees the failures, and its deliveries on top.
    taken = await twin.queue.reclaim(stream, GROUP, "b", min_idle_ms=0, count=10)
    assert [(e.id, e.deliveries, e.failures) for e in taken] == [(first, 2, 2), (second, 2, 1)]

    await twin.queue.ack(stream, GROUP, [first])
    [again] = await queue.reclaim(stream, GROUP, "c", min_idle_ms=0, count=10)
    assert (again.id, again.failures) == (second, 1)
    if backend.redis is not None:
        assert await backend.redis.hkeys(keys.failures_key(stream, GROUP)) == [second.encode()]
        await twin.queue.ack(stream, GROUP, [second])
        assert await backend.redis.exists(keys.failures_key(stream, GROUP)) == 0


async def test_a_delivery_without_failure_counts_none(
    backend: QueueBackend, twin: QueueBackend, stream: str
) -> None:
    queue = backend.queue
    await queue.ensure_group(stream, GROUP)
    await queue.publish(stream, [{"n": "1"}])
    await queue.read(stream, GROUP, "a", count=1, block_ms=0)
    for consumer in ("b", "c", "d"):
        [entry] = await twin.queue.reclaim(stream, GROUP, consumer, min_idle_ms=0, count=1)
    assert (entry.deliveries, entry.failures) == (4, 0)


@pytest.mark.parametrize("kind", ["in_process", "redis"])
async def test_every_dead_letter_stream_is_capped_and_other_streams_are_not(
    kind: str, stream: str, request: pytest.FixtureRequest
) -> None:
    url = None if kind == "in_process" else request.getfixturevalue("clean_redis_db")
    backend = open_backend(url, dead_letter_maxlen=10)
    dead_letters = keys.dead_letter_stream(stream)
    try:
        for n in range(30):  # one at a time, as the consumers dead-letter
            await backend.queue.publish(dead_letters, [{"n": str(n)} for _ in range(10)])
        await backend.queue.publish(stream, [{"n": str(n)} for n in range(300)])
        capped = await backend.queue.length(dead_letters)
        kept = await backend.queue.length(stream)
    finally:
        if backend.redis is not None:
            await backend.redis.delete(stream, dead_letters)
        await backend.aclose()
    # Redis trims whole nodes of the stream (approximate MAXLEN): about the cap, never all.
    assert 10 <= capped <= (10 if kind == "in_process" else 110), capped
    assert kept == 300
