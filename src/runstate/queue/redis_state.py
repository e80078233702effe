"""Monitor status state, pending-check marks and leases in Redis.

Each read-modify-write is one Lua script, so concurrent workers and schedulers on many
machines see one order of events: a status change is recorded and emitted exactly once.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from redis.asyncio import Redis

from runstate.domain.events import format_ms
from runstate.domain.status import PRESUMED_STATUS, MonitorState, Status, rebuilt_state
from runstate.queue import keys
from runstate.queue.base import ApplyOutcome, DueCheck, ObservedCheck
from runstate.queue.redis_streams import text, translate_errors

__all__ = ["RedisLease", "RedisMonitorStates", "RedisPendingChecks"]

# domain.status.apply_observation, inside Redis, plus the status-change event. The state is
# a hash (status is "" while unknown, as seeded from a database that had none); a monitor
# whose status is unknown is presumed up (domain.status.PRESUMED_STATUS): its first up sets
# the status silently, its first confirmed failures emit up -> down.
# KEYS: state, status-change stream.
# ARGV: at_ms, observed status, confirmations, recovery_confirmations, ttl seconds,
#       event_id, website_id, region_id, occurred_at, presumed status.
# at_ms is written back as the string it came as: Lua would format a large number as 1e+12.
_APPLY = """
local state = redis.call('HMGET', KEYS[1], 'status', 'consecutive_failures',
                         'consecutive_successes', 'last_applied_ms')
if not state[4] then return 'needs_seed' end
if tonumber(ARGV[1]) <= tonumber(state[4]) then return 'stale' end
local seen, status = ARGV[2], state[1] or ''
local presumed = status
if presumed == '' then presumed = ARGV[10] end
local failures, successes = 0, 0
if seen == 'down' then
  failures = tonumber(state[2]) + 1
else
  successes = tonumber(state[3]) + 1
end
local changed = false
if seen == presumed then
  status = seen
elseif (seen == 'down' and failures >= tonumber(ARGV[3]))
    or (seen == 'up' and successes >= tonumber(ARGV[4])) then
  status, changed = seen, true
end
redis.call('HSET', KEYS[1], 'status', status, 'consecutive_failures', failures,
           'consecutive_successes', successes, 'last_applied_ms', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[5])
if not changed then return 'applied' end
redis.call('XADD', KEYS[2], '*', 'event_id', ARGV[6], 'website_id', ARGV[7],
           'region_id', ARGV[8], 'prev_status', presumed, 'current_status', status,
           'occurred_at', ARGV[9])
return 'changed'
"""

# KEYS: state. ARGV: ttl seconds, then the hash's field/value pairs.
_SEED = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""

# KEYS: the pending-checks hash. ARGV: now_ms, then website id / stale_after_ms pairs.
# Returns 1 for each monitor marked, 0 for one already pending with a fresh mark.
_MARK = """
local now, marked = tonumber(ARGV[1]), {}
for i = 2, #ARGV, 2 do
  local since = redis.call('HGET', KEYS[1], ARGV[i])
  if since and now - tonumber(since) <= tonumber(ARGV[i + 1]) then
    marked[#marked + 1] = 0
  else
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[1])
    marked[#marked + 1] = 1
  end
end
return marked
"""

# KEYS: the lease. ARGV: holder, ttl ms. Take a free lease, or extend the holder's own.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: the lease. ARGV: holder. Only the holder may let go.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _state_fields(state: MonitorState) -> list[str]:
    return [
        "status",
        state.status.value if state.status else "",
        "consecutive_failures",
        str(state.consecutive_failures),
        "consecutive_successes",
        str(state.consecutive_successes),
        "last_applied_ms",
        str(state.last_applied_ms),
    ]


class RedisMonitorStates:
    """`MonitorStates` as one hash per monitor (``keys.monitor_state_key``), expiring after
    ``keys.MONITOR_STATE_TTL_SECONDS`` without a check."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._apply = redis.register_script(_APPLY)
        self._seed = redis.register_script(_SEED)

    async def apply(
        self, checks: Sequence[ObservedCheck], *, status_change_stream: str
    ) -> list[ApplyOutcome]:
        """One EVALSHA per check, all in one round trip; each check is atomic on its own."""
        if not checks:
            return []
        with translate_errors():
            async with self._redis.pipeline(transaction=False) as pipe:
                for check in checks:
                    seen = check.observation
                    await self._apply(
                        keys=[keys.monitor_state_key(str(check.website_id)), status_change_stream],
                        args=[
                            seen.at_ms,
                            seen.status.value,
                            seen.confirmations,
                            seen.recovery_confirmations,
                            keys.MONITOR_STATE_TTL_SECONDS,
                            check.event_id,
                            str(check.website_id),
                            check.region_id,
                            format_ms(seen.at_ms),
                            PRESUMED_STATUS.value,
                        ],
                        client=pipe,
                    )
                outcomes = await pipe.execute()
        return [ApplyOutcome(text(outcome)) for outcome in outcomes]

    async def seed(self, website_id: uuid.UUID, state: MonitorState) -> None:
        """Sets `domain.status.rebuilt_state` of ``state``, unless a state exists."""
        key = keys.monitor_state_key(str(website_id))
        state = rebuilt_state(state)
        with translate_errors():
            await self._seed(
                keys=[key], args=[keys.MONITOR_STATE_TTL_SECONDS, *_state_fields(state)]
            )

    async def get(self, website_id: uuid.UUID) -> MonitorState | None:
        with translate_errors():
            raw = await self._redis.hgetall(keys.monitor_state_key(str(website_id)))
        if not raw:
            return None
        fields = {text(name): text(value) for name, value in raw.items()}
        return MonitorState(
            status=Status(fields["status"]) if fields["status"] else None,
            consecutive_failures=int(fields["consecutive_failures"]),
            consecutive_successes=int(fields["consecutive_successes"]),
            last_applied_ms=int(fields["last_applied_ms"]),
        )


class RedisPendingChecks:
    """`PendingChecks` as one hash, ``keys.PENDING_CHECKS``: website id -> time marked (ms)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._mark = redis.register_script(_MARK)

    async def mark(self, due: Sequence[DueCheck], *, now_ms: int) -> list[bool]:
        """A mark older than the check's ``stale_after_ms`` is replaced (and True)."""
        if not due:
            return []
        args: list[str | int] = [now_ms]
        for check in due:
            args += [str(check.website_id), check.stale_after_ms]
        with translate_errors():
            marked = await self._mark(keys=[keys.PENDING_CHECKS], args=args)
        return [bool(flag) for flag in marked]

    async def release(self, website_ids: Sequence[uuid.UUID]) -> None:
        if website_ids:
            with translate_errors():
                await self._redis.hdel(keys.PENDING_CHECKS, *map(str, website_ids))


class RedisLease:
    """`Lease` as a key holding the holder's name (``keys.lease_key``) with a TTL."""

    def __init__(self, redis: Redis) -> None:
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)

    async def acquire(self, name: str, holder: str, ttl_ms: int) -> bool:
        with translate_errors():
            return bool(await self._acquire(keys=[keys.lease_key(name)], args=[holder, ttl_ms]))

    async def release(self, name: str, holder: str) -> None:
        with translate_errors():
            await self._release(keys=[keys.lease_key(name)], args=[holder])
