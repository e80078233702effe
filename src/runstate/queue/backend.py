"""Choosing the queue back end: Redis when a URL is configured, this process's memory otherwise."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from runstate.queue.base import Lease, MonitorStates, PendingChecks, StreamQueue
from runstate.queue.in_process import InProcessBroker
from runstate.queue.redis_state import RedisLease, RedisMonitorStates, RedisPendingChecks
from runstate.queue.redis_streams import MAX_BLOCK_MS, RedisStreamQueue

__all__ = ["QueueBackend", "open_backend"]

# Seconds a Redis command may take beyond the longest blocking read before the connection is
# presumed dead (and QueueUnavailable raised).
_SOCKET_TIMEOUT_MARGIN = 5.0


@dataclass
class QueueBackend:
    """The four queue protocols of one back end, and the Redis client they share (if any)."""

    queue: StreamQueue
    states: MonitorStates
    pending: PendingChecks
    lease: Lease
    redis: Redis | None

    async def aclose(self) -> None:
        await self.queue.aclose()
        if self.redis is not None:
            await self.redis.aclose()


def open_backend(redis_url: str | None, *, dead_letter_maxlen: int | None = None) -> QueueBackend:
    """Redis at ``redis_url``, or an in-process broker when it is None. Connects lazily, so an
    unreachable Redis shows up as `QueueUnavailable` on first use. Every dead-letter stream
    keeps about ``dead_letter_maxlen`` of its newest entries (all when None)."""
    if redis_url is None:
        broker = InProcessBroker(dead_letter_maxlen=dead_letter_maxlen)
        return QueueBackend(broker, broker, broker.pending_checks, broker.lease, None)
    redis = Redis.from_url(
        redis_url,
        socket_connect_timeout=5,
        socket_timeout=MAX_BLOCK_MS / 1000 + _SOCKET_TIMEOUT_MARGIN,
    )
    return QueueBackend(
        queue=RedisStreamQueue(redis, dead_letter_maxlen=dead_letter_maxlen),
        states=RedisMonitorStates(redis),
        pending=RedisPendingChecks(redis),
        lease=RedisLease(redis),
        redis=redis,
    )
