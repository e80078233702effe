"""Rate limiting for the API: sign-ins, signups, token refreshes, monitor creation.

The API asks ``await limiter.hit(key, limit=..., window_seconds=...)`` once per request, with a
key that names both what is limited and for whom (say ``"signin:ip:203.0.113.7"`` or
``"signin:account:ada@example.com"``), and refuses the request when the answer is not allowed.

Scheme: a **fixed window** per key. The first hit on a key opens a window of
``window_seconds``; up to ``limit`` hits are allowed inside it; every later hit in the same window
is refused with ``retry_after`` = the whole seconds until the window ends (rounded up, at least
1). When the window ends the key starts afresh with the full ``limit``.

Refused hits do not count and do not move the window. A client that keeps hammering while it is
limited is therefore let back in exactly when the window it exhausted ends, as ``retry_after``
promised, instead of locking itself out for as long as it keeps retrying (which would also let an
attacker keep a victim's account locked by hammering its key). The cost is that a fixed window
admits up to ``2 * limit`` hits across a window boundary; that is acceptable for slowing down
password guessing and much cheaper than a sliding log.

``window_seconds`` is fixed by the window's first hit. A later hit with a *shorter*
``window_seconds`` shortens the running window to at most that length, so a key never outlives
the window it is used with; a longer one does not stretch it.

Two implementations:

* :class:`InProcessRateLimiter` keeps the windows in a dict. It is exact within one process (and
  one event loop) and is what a one-process deployment uses when no Redis is configured.
* :class:`RedisRateLimiter` keeps one counter per key in Redis, under ``RATE_LIMIT_PREFIX``,
  updated by a single Lua script, so every API process shares the same counts and concurrent hits
  can never over-admit. When Redis fails it answers from an in-process fallback instead of failing
  the request or letting everything through.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import MaxConnectionsError, RedisError

from runstate.queue.keys import RATE_LIMIT_PREFIX

logger = logging.getLogger(__name__)

__all__ = [
    "Decision",
    "InProcessRateLimiter",
    "RateLimiter",
    "RedisRateLimiter",
    "address_bucket",
]

# One IPv6 client normally holds a whole /64 (SLAAC, privacy addresses), so it is counted as
# one: keyed by full address, a /64 would give it 2**64 buckets.
IPV6_CLIENT_PREFIX = 64


def address_bucket(host: str) -> str:
    """The part of a client address that names one client for a per-IP limit: an IPv4
    address whole (IPv4-mapped IPv6 included), an IPv6 address by its /64, as
    ``"2001:db8:1:2::/64"``. Anything that is not an IP address is returned unchanged."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_CLIENT_PREFIX), strict=False))
    return str(address)


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one hit.

    ``retry_after`` is 0 when the hit is allowed; otherwise it is the whole number of seconds
    (rounded up, at least 1) until the key's window ends and a hit is allowed again. It is meant
    for the ``Retry-After`` header of a 429 response.
    """

    allowed: bool
    retry_after: int


class RateLimiter(Protocol):
    """What the API depends on; see the module docstring for the counting rules."""

    async def hit(self, key: str, *, limit: int, window_seconds: int) -> Decision:
        """Count one hit on ``key`` unless the window is exhausted, and say whether it is allowed.

        At most ``limit`` hits are allowed per window of ``window_seconds``; refused hits are not
        counted. Raises ``ValueError`` when ``limit`` or ``window_seconds`` is below 1.
        """
        ...

    async def aclose(self) -> None:
        """Release what the limiter holds. The limiter must not be used afterwards."""
        ...


def _check_arguments(limit: int, window_seconds: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if window_seconds < 1:
        raise ValueError(f"window_seconds must be at least 1, got {window_seconds}")


def _refused(seconds_left: float) -> Decision:
    # Rounded up so that a client which waits exactly retry_after seconds finds the window over;
    # at least 1 because "retry in 0 seconds" on a refusal would invite a busy loop.
    return Decision(allowed=False, retry_after=max(1, math.ceil(seconds_left)))


_ALLOWED = Decision(allowed=True, retry_after=0)


class _Window:
    __slots__ = ("count", "ends_at")

    def __init__(self, ends_at: float) -> None:
        self.ends_at = ends_at
        self.count = 0


# The in-process table is swept for expired windows when it reaches this many entries, and
# after each sweep when it has doubled again; see InProcessRateLimiter.
_MIN_SWEEP_SIZE = 1024


class InProcessRateLimiter:
    """Fixed-window limiter that keeps its windows in this process's memory.

    Counts are exact for the process, and ``hit`` never awaits, so concurrent hits from one event
    loop cannot over-admit. It is not thread-safe: use it from one event loop.

    Memory stays proportional to the keys hit recently: whenever a new key would grow the table to
    the sweep size, every window that has ended is dropped, and the next sweep size becomes twice
    what is left (at least ``1024``). The table thus holds at most about twice the live keys, and
    each sweep is paid for by the insertions since the previous one (amortised O(1) per hit).

    ``clock`` returns seconds on a monotonic scale; tests inject a fake one.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._sweep_size = _MIN_SWEEP_SIZE

    @property
    def tracked_keys(self) -> int:
        """How many windows the table holds now, including ended ones not yet swept."""
        return len(self._windows)

    async def hit(self, key: str, *, limit: int, window_seconds: int) -> Decision:
        """Count one hit on ``key``; see :meth:`RateLimiter.hit`."""
        _check_arguments(limit, window_seconds)
        now = self._clock()
        window = self._windows.get(key)
        if window is None or window.ends_at <= now:
            if window is None and len(self._windows) >= self._sweep_size:
                self._sweep(now)
            window = _Window(ends_at=now + window_seconds)
            self._windows[key] = window
        else:
            # Same rule as the Redis script: a shorter window caps the running one.
            window.ends_at = min(window.ends_at, now + window_seconds)
        if window.count >= limit:
            return _refused(window.ends_at - now)
        window.count += 1
        return _ALLOWED

    def _sweep(self, now: float) -> None:
        self._windows = {k: w for k, w in self._windows.items() if w.ends_at > now}
        self._sweep_size = max(_MIN_SWEEP_SIZE, 2 * len(self._windows))

    async def aclose(self) -> None:
        """Forget every window."""
        self._windows.clear()
        self._sweep_size = _MIN_SWEEP_SIZE


# KEYS[1] = the counter; ARGV[1] = limit; ARGV[2] = window in milliseconds.
# Returns {allowed (1 or 0), count after this hit, milliseconds left in the window}.
#
# Everything happens inside one script, so no other client can run between reading the count,
# incrementing it and setting the expiry: concurrent hits from any number of processes never
# over-admit, and a counter can never be left without an expiry by a crash between INCR and
# PEXPIRE. A refused hit does not INCR, so it neither counts nor moves the window.
# The PEXPIRE branch also runs when the TTL is missing (-1: first hit, or a counter left without
# one by anything else) or longer than this call's window, so a key never outlives its window.
_HIT_SCRIPT = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
local allowed = 0
if count < limit then
  count = redis.call('INCR', KEYS[1])
  allowed = 1
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 or ttl > window then
  redis.call('PEXPIRE', KEYS[1], window)
  ttl = window
end
return {allowed, count, ttl}
"""


def _redact(key: str) -> str:
    """The key as it may appear in logs: keys holding an e-mail address are replaced by a hash."""
    if "@" not in key:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"sha256:{digest}"


# At most this many scripts of one RedisRateLimiter are in flight at once (fewer if the client's
# pool is smaller). redis-py's asyncio pool raises MaxConnectionsError instead of waiting when it
# is exhausted (100 connections by default, shared with the rest of the process); a burst of
# logins must queue here for a connection rather than spill into the fallback, which would admit
# hits on top of those Redis already counted.
_MAX_IN_FLIGHT = 16


class RedisRateLimiter:
    """Fixed-window limiter shared by every process through Redis.

    Each key is one integer counter at ``RATE_LIMIT_PREFIX + key`` that expires when its window
    ends, so Redis holds nothing for keys that are not being hit. The count, the expiry and the
    decision are made by one Lua script (see ``_HIT_SCRIPT``), so hits from many processes and
    connections are counted exactly. At most 16 hits of one limiter (no more than the client's
    pool size) wait on Redis at a time; the rest queue in the event loop.

    When Redis fails (connection refused, timeout, or any other ``RedisError``) the hit is answered
    by ``fallback`` (a fresh :class:`InProcessRateLimiter` by default): limits become per-process
    for the duration of the outage, instead of the request failing or going unlimited. After a
    failure the limiter goes straight to the fallback for ``retry_interval`` seconds before it
    tries Redis again, so an outage with slow timeouts does not add that delay to every request.
    A connection pool exhausted by other users of the client is not an outage: that one hit is
    answered by the fallback, and the next one tries Redis again.

    It logs one warning when Redis starts failing (the key is included, hashed if it holds an
    e-mail address) and one info line when Redis answers again; failures in between are logged at
    debug level only.

    The Redis client belongs to the caller: :meth:`aclose` closes the fallback but not the client,
    which is typically shared with the rest of the process.
    """

    #: Seconds to answer from the fallback after a Redis failure before trying Redis again.
    retry_interval: float = 5.0

    def __init__(self, redis: Redis, *, fallback: RateLimiter | None = None) -> None:
        self._script = redis.register_script(_HIT_SCRIPT)
        self._fallback: RateLimiter = InProcessRateLimiter() if fallback is None else fallback
        pool_size = getattr(redis.connection_pool, "max_connections", _MAX_IN_FLIGHT)
        self._in_flight = asyncio.Semaphore(max(1, min(_MAX_IN_FLIGHT, pool_size)))
        # True from the first failure until Redis answers again: one warning per outage.
        self._failing = False
        # monotonic time before which Redis is not tried again after an outage-like failure.
        self._retry_at = 0.0

    async def hit(self, key: str, *, limit: int, window_seconds: int) -> Decision:
        """Count one hit on ``key`` in Redis, or in the fallback when Redis cannot answer."""
        # Checked here so that a caller's mistake is a ValueError, not a script error that
        # would be taken for an outage.
        _check_arguments(limit, window_seconds)
        async with self._in_flight:
            decision = await self._hit_redis(key, limit, window_seconds)
        if decision is None:
            decision = await self._fallback.hit(key, limit=limit, window_seconds=window_seconds)
        return decision

    async def _hit_redis(self, key: str, limit: int, window_seconds: int) -> Decision | None:
        """Run the script; None when Redis is not to be asked or failed to answer."""
        # Tested after queueing for the semaphore, so that hits queued behind a failing call
        # see the failure at once instead of each waiting for its own timeout.
        if time.monotonic() < self._retry_at:
            return None
        try:
            allowed, _count, ttl_ms = await self._script(
                keys=[RATE_LIMIT_PREFIX + key], args=[limit, window_seconds * 1000]
            )
        except MaxConnectionsError as exc:
            # Redis itself is fine; other users of the client hold every connection.
            self._note_failure(key, exc, outage=False)
            return None
        # OSError covers the builtin TimeoutError and socket errors that a client may let through
        # unwrapped; redis-py wraps most of them in its ConnectionError/TimeoutError.
        except (RedisError, OSError) as exc:
            self._note_failure(key, exc, outage=True)
            return None
        if self._failing:
            self._failing = False
            logger.info("rate limiter: Redis answers again; limits are shared across processes")
        if allowed:
            return _ALLOWED
        return _refused(int(ttl_ms) / 1000)

    def _note_failure(self, key: str, exc: BaseException, *, outage: bool) -> None:
        if not self._failing:
            self._failing = True
            logger.warning(
                "rate limiter: Redis failed (%s: %s) on key %s; limits are per-process until it "
                "answers again",
                type(exc).__name__,
                exc,
                _redact(key),
            )
        else:
            logger.debug("rate limiter: Redis still failing (%s: %s)", type(exc).__name__, exc)
        if outage:
            self._retry_at = time.monotonic() + self.retry_interval

    async def aclose(self) -> None:
        """Close the fallback. The Redis client is left open for its owner to close."""
        await self._fallback.aclose()
