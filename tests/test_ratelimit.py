"""The authentication rate limiter: the same behaviour in process and in Redis, plus what only
Redis has (atomicity across connections, key expiry, falling back when Redis is down)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from runstate.queue.keys import RATE_LIMIT_PREFIX
from runstate.ratelimit import (
    Decision,
    InProcessRateLimiter,
    RateLimiter,
    RedisRateLimiter,
    address_bucket,
)

LOGGER = "runstate.ratelimit"


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Harness:
    """A limiter and a way to let time pass for it (a fake clock, or real sleeping for Redis)."""

    limiter: RateLimiter
    advance: Callable[[float], Awaitable[None]]


@pytest.fixture
def ns() -> str:
    """A key namespace of this test alone, so concurrent runs on one Redis do not collide."""
    return f"test:{uuid.uuid4().hex}:"


async def _delete_namespace(client: Redis, ns: str) -> None:
    keys = [key async for key in client.scan_iter(match=f"{RATE_LIMIT_PREFIX}{ns}*")]
    if keys:
        await client.delete(*keys)


@pytest.fixture
async def redis_client(redis_url: str, ns: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await _delete_namespace(client, ns)
    await client.aclose()


@pytest.fixture(params=["in_process", "redis"])
async def harness(request: pytest.FixtureRequest, ns: str) -> AsyncIterator[Harness]:
    if request.param == "in_process":
        clock = FakeClock()

        async def advance_clock(seconds: float) -> None:
            clock.advance(seconds)

        limiter = InProcessRateLimiter(clock=clock)
        yield Harness(limiter, advance_clock)
        await limiter.aclose()
        return

    # Asked for only here, so that the in-process half runs where there is no Redis.
    redis_url: str = request.getfixturevalue("redis_url")
    client = Redis.from_url(redis_url)
    redis_limiter = RedisRateLimiter(client)
    yield Harness(redis_limiter, asyncio.sleep)
    await redis_limiter.aclose()
    await _delete_namespace(client, ns)
    await client.aclose()


# --- behaviour shared by both limiters ------------------------------------------------------


async def test_allows_exactly_limit_then_refuses(harness: Harness, ns: str) -> None:
    limiter = harness.limiter
    for _ in range(5):
        assert await limiter.hit(ns + "k", limit=5, window_seconds=60) == Decision(True, 0)

    for _ in range(3):
        refused = await limiter.hit(ns + "k", limit=5, window_seconds=60)
        assert not refused.allowed
        assert 1 <= refused.retry_after <= 60


async def test_keys_are_independent(harness: Harness, ns: str) -> None:
    limiter = harness.limiter
    assert (await limiter.hit(ns + "a", limit=1, window_seconds=60)).allowed
    assert not (await limiter.hit(ns + "a", limit=1, window_seconds=60)).allowed

    assert (await limiter.hit(ns + "b", limit=1, window_seconds=60)).allowed
    assert not (await limiter.hit(ns + "b", limit=1, window_seconds=60)).allowed


async def test_key_is_allowed_again_after_the_window(harness: Harness, ns: str) -> None:
    limiter = harness.limiter
    for _ in range(2):
        assert (await limiter.hit(ns + "k", limit=2, window_seconds=1)).allowed
    assert not (await limiter.hit(ns + "k", limit=2, window_seconds=1)).allowed

    await harness.advance(1.1)

    # A whole new window: the full limit again, nothing carried over.
    for _ in range(2):
        assert (await limiter.hit(ns + "k", limit=2, window_seconds=1)).allowed
    assert not (await limiter.hit(ns + "k", limit=2, window_seconds=1)).allowed


async def test_refused_hits_do_not_extend_the_window(harness: Harness, ns: str) -> None:
    limiter = harness.limiter
    assert (await limiter.hit(ns + "k", limit=1, window_seconds=1)).allowed

    await harness.advance(0.6)
    # Hammering while limited: if these counted or restarted the window, it would end at
    # 1.6 s or later and the hit at 1.1 s below would be refused.
    for _ in range(20):
        refused = await limiter.hit(ns + "k", limit=1, window_seconds=1)
        assert refused == Decision(False, 1)

    await harness.advance(0.5)
    assert (await limiter.hit(ns + "k", limit=1, window_seconds=1)).allowed


async def test_shorter_window_caps_the_running_one(harness: Harness, ns: str) -> None:
    limiter = harness.limiter
    assert (await limiter.hit(ns + "k", limit=1, window_seconds=60)).allowed
    assert await limiter.hit(ns + "k", limit=1, window_seconds=1) == Decision(False, 1)

    await harness.advance(1.1)
    assert (await limiter.hit(ns + "k", limit=1, window_seconds=1)).allowed


async def test_concurrent_hits_never_over_admit(harness: Harness, ns: str) -> None:
    decisions = await asyncio.gather(
        *(harness.limiter.hit(ns + "k", limit=50, window_seconds=60) for _ in range(200))
    )
    assert sum(d.allowed for d in decisions) == 50
    assert all(d.retry_after >= 1 for d in decisions if not d.allowed)


@pytest.mark.parametrize(("limit", "window_seconds"), [(0, 60), (-1, 60), (5, 0), (5, -3)])
async def test_rejects_nonsense_arguments(
    harness: Harness, ns: str, limit: int, window_seconds: int
) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        await harness.limiter.hit(ns + "k", limit=limit, window_seconds=window_seconds)


# --- in-process only --------------------------------------------------------------------------


async def test_retry_after_counts_down_and_rounds_up() -> None:
    clock = FakeClock()
    limiter = InProcessRateLimiter(clock=clock)
    assert (await limiter.hit("k", limit=1, window_seconds=60)).allowed
    assert await limiter.hit("k", limit=1, window_seconds=60) == Decision(False, 60)

    clock.advance(30.2)
    assert await limiter.hit("k", limit=1, window_seconds=60) == Decision(False, 30)

    clock.advance(29.7)  # 0.1 s left: still a whole second to wait, never 0
    assert await limiter.hit("k", limit=1, window_seconds=60) == Decision(False, 1)

    clock.advance(0.1)  # exactly at the end of the window
    assert await limiter.hit("k", limit=1, window_seconds=60) == Decision(True, 0)


async def test_in_process_table_sheds_expired_keys() -> None:
    clock = FakeClock()
    limiter = InProcessRateLimiter(clock=clock)
    per_round = 1_000
    sizes = []
    for round_ in range(30):
        for i in range(per_round):
            await limiter.hit(f"r{round_}:{i}", limit=1, window_seconds=1)
        sizes.append(limiter.tracked_keys)
        clock.advance(2)  # every key of this round has expired before the next round

    # 30 000 distinct keys went through; only a bounded number (the live round plus what has
    # not been swept yet) is ever held.
    assert max(sizes) <= 4 * per_round


async def test_in_process_sweep_keeps_live_windows() -> None:
    clock = FakeClock()
    limiter = InProcessRateLimiter(clock=clock)
    assert (await limiter.hit("long-lived", limit=1, window_seconds=3600)).allowed
    for i in range(5_000):
        await limiter.hit(f"short:{i}", limit=1, window_seconds=1)
    clock.advance(2)
    for i in range(5_000):
        await limiter.hit(f"later:{i}", limit=1, window_seconds=1)

    # The table outgrew its sweep size after the clock moved, so a sweep ran: it dropped the
    # 5 000 ended windows and only those (the hour-long one is still there, and exhausted).
    assert limiter.tracked_keys == 1 + 5_000
    assert not (await limiter.hit("long-lived", limit=1, window_seconds=3600)).allowed


async def test_in_process_aclose_forgets_everything() -> None:
    limiter = InProcessRateLimiter(clock=FakeClock())
    await limiter.hit("k", limit=1, window_seconds=60)
    await limiter.aclose()
    assert limiter.tracked_keys == 0


# --- Redis only -------------------------------------------------------------------------------


async def test_redis_is_atomic_across_connections(redis_url: str, ns: str) -> None:
    first, second = Redis.from_url(redis_url), Redis.from_url(redis_url)
    try:
        limiters = [RedisRateLimiter(first), RedisRateLimiter(second)]
        decisions = await asyncio.gather(
            *(limiters[i % 2].hit(ns + "k", limit=50, window_seconds=60) for i in range(200))
        )
        assert sum(d.allowed for d in decisions) == 50
        assert await first.get(RATE_LIMIT_PREFIX + ns + "k") == b"50"
    finally:
        await _delete_namespace(first, ns)
        await first.aclose()
        await second.aclose()


async def test_redis_burst_beyond_the_pool_is_queued_not_spilled(redis_url: str, ns: str) -> None:
    # redis-py's pool raises MaxConnectionsError instead of waiting; a burst larger than the pool
    # must wait for connections, not be answered by the fallback (which would admit 50 more).
    client = Redis.from_url(redis_url, max_connections=4)
    try:
        limiter = RedisRateLimiter(client)
        decisions = await asyncio.gather(
            *(limiter.hit(ns + "k", limit=50, window_seconds=60) for _ in range(200))
        )
        assert sum(d.allowed for d in decisions) == 50
        assert await client.get(RATE_LIMIT_PREFIX + ns + "k") == b"50"
    finally:
        await _delete_namespace(client, ns)
        await client.aclose()


async def test_pool_exhausted_by_others_is_not_an_outage(
    redis_url: str, ns: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = Redis.from_url(redis_url, max_connections=2)
    limiter = RedisRateLimiter(client)
    counter = RATE_LIMIT_PREFIX + ns + "k"
    try:
        # Someone else holds every connection of the shared client.
        held = [await client.connection_pool.get_connection() for _ in range(2)]
        with caplog.at_level(logging.INFO, logger=LOGGER):
            assert (await limiter.hit(ns + "k", limit=10, window_seconds=60)).allowed
            for connection in held:
                await client.connection_pool.release(connection)
            # Not sent to the fallback for retry_interval: the very next hit is on Redis.
            assert (await limiter.hit(ns + "k", limit=10, window_seconds=60)).allowed
            assert await client.get(counter) == b"1"
    finally:
        await _delete_namespace(client, ns)
        await client.aclose()

    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(messages) == 2
    assert "MaxConnectionsError" in messages[0]
    assert "answers again" in messages[1]


async def test_redis_key_always_carries_a_ttl(redis_client: Redis, ns: str) -> None:
    limiter = RedisRateLimiter(redis_client)
    key = RATE_LIMIT_PREFIX + ns + "k"
    await limiter.hit(ns + "k", limit=2, window_seconds=60)
    assert 0 < await redis_client.pttl(key) <= 60_000

    for _ in range(5):  # allowed, then refused hits: the TTL stays and only runs down
        await limiter.hit(ns + "k", limit=2, window_seconds=60)
        assert 0 < await redis_client.pttl(key) <= 60_000


async def test_redis_heals_a_counter_without_ttl(redis_client: Redis, ns: str) -> None:
    # A counter left without expiry (by hand, or by an older version) must not live forever.
    key = RATE_LIMIT_PREFIX + ns + "k"
    await redis_client.set(key, 7)
    assert await redis_client.ttl(key) == -1

    limiter = RedisRateLimiter(redis_client)
    refused = await limiter.hit(ns + "k", limit=5, window_seconds=30)
    assert refused == Decision(False, 30)
    assert 0 < await redis_client.pttl(key) <= 30_000


async def test_redis_aclose_leaves_the_client_open(redis_client: Redis, ns: str) -> None:
    limiter = RedisRateLimiter(redis_client)
    await limiter.hit(ns + "k", limit=1, window_seconds=60)
    await limiter.aclose()
    assert await redis_client.ping()


# --- Redis failures ---------------------------------------------------------------------------


async def test_redis_down_falls_back_to_in_process_limits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    limiter = RedisRateLimiter(client)
    limiter.retry_interval = 0.0  # try Redis on every hit: still only one warning
    key = "signin:account:ada@example.com"
    try:
        with caplog.at_level(logging.DEBUG, logger=LOGGER):
            for _ in range(3):
                assert (await limiter.hit(key, limit=3, window_seconds=60)).allowed
            refused = await limiter.hit(key, limit=3, window_seconds=60)
            assert not refused.allowed
            assert refused.retry_after >= 1
            assert (await limiter.hit("signin:account:other", limit=3, window_seconds=60)).allowed
    finally:
        await limiter.aclose()
        await client.aclose()

    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "ConnectionError" in warnings[0].getMessage()
    assert all("ada@example.com" not in r.getMessage() for r in caplog.records)


async def test_redis_down_uses_the_given_fallback() -> None:
    clock = FakeClock()
    fallback = InProcessRateLimiter(clock=clock)
    client = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    limiter = RedisRateLimiter(client, fallback=fallback)
    try:
        assert (await limiter.hit("k", limit=1, window_seconds=10)).allowed
        assert fallback.tracked_keys == 1
        assert await limiter.hit("k", limit=1, window_seconds=10) == Decision(False, 10)
        clock.advance(10)
        assert (await limiter.hit("k", limit=1, window_seconds=10)).allowed
        await limiter.aclose()
        assert fallback.tracked_keys == 0  # aclose closes the fallback
    finally:
        await client.aclose()


class TcpProxy:
    """A TCP forwarder to the real Redis that can be stopped and restarted on the same port:
    a Redis outage and recovery without touching the shared server."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for writer in self._writers:
            writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._writers.clear()
        self._tasks.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        self._writers += [writer, upstream_writer]
        await asyncio.gather(
            self._pipe(reader, upstream_writer),
            self._pipe(upstream_reader, writer),
            return_exceptions=True,
        )

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65_536):
                writer.write(data)
                await writer.drain()
        writer.close()


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[TcpProxy]:
    parts = urlsplit(redis_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    await proxy.start()
    yield proxy
    with contextlib.suppress(AssertionError):
        await proxy.stop()


def _via(proxy: TcpProxy, redis_url: str) -> Redis:
    database = urlsplit(redis_url).path or "/0"
    return Redis.from_url(
        f"redis://127.0.0.1:{proxy.port}{database}", socket_connect_timeout=0.5, socket_timeout=1
    )


async def test_redis_recovery_shares_limits_again(
    proxy: TcpProxy, redis_url: str, redis_client: Redis, ns: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = _via(proxy, redis_url)
    limiter = RedisRateLimiter(client)
    limiter.retry_interval = 0.0
    counter = RATE_LIMIT_PREFIX + ns + "k"
    try:
        with caplog.at_level(logging.INFO, logger=LOGGER):
            assert (await limiter.hit(ns + "k", limit=10, window_seconds=60)).allowed
            assert await redis_client.get(counter) == b"1"

            await proxy.stop()
            assert (await limiter.hit(ns + "k", limit=10, window_seconds=60)).allowed
            assert await redis_client.get(counter) == b"1"  # answered by the fallback

            await proxy.start()
            assert (await limiter.hit(ns + "k", limit=10, window_seconds=60)).allowed
            assert await redis_client.get(counter) == b"2"  # back on Redis
    finally:
        await client.aclose()

    levels = [r.levelno for r in caplog.records if r.name == LOGGER]
    assert levels == [logging.WARNING, logging.INFO]


async def test_redis_is_not_retried_before_retry_interval(
    proxy: TcpProxy, redis_url: str, redis_client: Redis, ns: str
) -> None:
    client = _via(proxy, redis_url)
    limiter = RedisRateLimiter(client)  # default retry_interval: seconds, not milliseconds
    counter = RATE_LIMIT_PREFIX + ns + "k"
    try:
        await proxy.stop()
        assert (await limiter.hit(ns + "k", limit=10, window_seconds=60)).allowed
        await proxy.start()
        # Redis is back, but the limiter does not knock on it again until retry_interval has
        # passed: during an outage with slow timeouts requests must not each pay for them.
        for _ in range(3):
            assert (await limiter.hit(ns + "k", limit=10, window_seconds=60)).allowed
        assert await redis_client.get(counter) is None
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("host", "bucket"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("203.0.113.8", "203.0.113.8"),  # IPv4 neighbours are distinct clients
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2:A::B", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:198.51.100.4", "198.51.100.4"),  # an IPv4 client on a dual-stack socket
        ("unknown", "unknown"),
    ],
)
def test_an_address_bucket_is_an_ipv4_address_or_an_ipv6_64(host: str, bucket: str) -> None:
    assert address_bucket(host) == bucket
