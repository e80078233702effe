"""The stream protocol on Redis Streams (Redis 7.0 or later).

Every method is one or a few round trips; the two that must see a consistent stream
(``touch`` and ``trim_acknowledged``) are Lua scripts. Replies are decoded here, so the client
may be created with or without ``decode_responses`` and on RESP2 or RESP3.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import (
    BusyLoadingError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT, FieldT

from runstate.queue import keys
from runstate.queue.base import Entry, GroupMissing, GroupStats, QueueUnavailable

__all__ = ["MAX_BLOCK_MS", "RedisStreamQueue", "redis_unavailable", "translate_errors"]

# The longest BLOCK of one XREADGROUP; a longer ``read`` issues several. The client's
# socket_timeout must exceed it, or a quiet stream would look like a dead server.
MAX_BLOCK_MS = 5_000

# Redis's replies that mean the group or its stream is gone: NOGROUP from most commands,
# "no such key" from XINFO, and "UNBLOCKED the stream key no longer exists" for a read that
# was blocked while the stream was deleted (e.g. by FLUSHALL).
_GONE_MARKERS = ("NOGROUP", "no such key", "no longer exists")

# Replies that mean the server cannot serve now, whatever the command: it is a replica
# (READONLY, e.g. during a failover; MASTERDOWN while its master is gone), its memory is
# full (OOM), a failed snapshot stops writes (MISCONF), a cluster slot is moving (TRYAGAIN)
# or it is loading its data (LOADING). redis-py maps most to a class of their own and strips
# the code; MISCONF keeps its code at the start of the message, which a pipeline prefixes
# with the command that failed ("Command # 1 (XADD …) of pipeline caused error: (MISCONF …").
_UNAVAILABLE_ERRORS = (ReadOnlyError, OutOfMemoryError, MasterDownError, TryAgainError)
_UNAVAILABLE_CODE = re.compile(
    r"(?:^|caused error: \W*)(?:READONLY|OOM|MISCONF|MASTERDOWN|TRYAGAIN|LOADING)\b"
)


def redis_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` is a Redis reply saying the server cannot serve now (see above),
    or a failure to reach it at all."""
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | BusyLoadingError):
        return True
    if isinstance(exc, _UNAVAILABLE_ERRORS):
        return True
    return isinstance(exc, ResponseError) and _UNAVAILABLE_CODE.search(str(exc)) is not None


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn redis-py's errors into the queue's: ``QueueUnavailable`` when Redis cannot answer
    or answers that it cannot serve now (`redis_unavailable`), ``GroupMissing`` when the
    group or stream is gone."""
    try:
        yield
    except Exception as exc:
        if isinstance(exc, TimeoutError) or redis_unavailable(exc):
            raise QueueUnavailable(str(exc)) from exc
        if isinstance(exc, ResponseError) and any(m in str(exc) for m in _GONE_MARKERS):
            raise GroupMissing(str(exc)) from exc
        raise


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {text(key): text(value) for key, value in raw.items()}


def _read_reply_entries(reply: Any) -> list[Any]:
    """The entries of the one stream read, from either reply shape redis-py produces:
    ``[[stream, entries]]`` (legacy) or ``{stream: entries}`` (unified)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return list(next(iter(reply.values())))
    return list(reply[0][1])


# Reset the idle time of the ids still pending for this consumer, and only those: a plain
# XCLAIM would also take back an entry another consumer reclaimed meanwhile. JUSTID keeps
# the delivery count as it is (verified on Redis 7.0). Returns how many were touched.
_TOUCH = """
local touched = 0
for i = 3, #ARGV do
  local mine = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #mine == 1 then
    touched = touched + #redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  end
end
return touched
"""

# Delete what every group has received and acknowledged. A group's floor is its oldest
# pending id, or the id after its last-delivered one when nothing is pending; the stream is
# trimmed to the lowest floor. In one script so that no delivery, ack or new group lands
# between reading the groups and trimming. A stream without groups is left alone.
_TRIM_ACKNOWLEDGED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local function parse(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local floor_ms, floor_seq
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
  local ms, seq
  if info['pending'] > 0 then
    ms, seq = parse(redis.call('XPENDING', KEYS[1], info['name'])[2])
  else
    ms, seq = parse(info['last-delivered-id'])
    seq = seq + 1
  end
  if floor_ms == nil or ms < floor_ms or (ms == floor_ms and seq < floor_seq) then
    floor_ms, floor_seq = ms, seq
  end
end
if floor_ms == nil then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', string.format('%.0f-%.0f', floor_ms, floor_seq))
"""

# XINFO GROUPS reports no lag after an undelivered entry was deleted; count it instead.
_COUNT_AFTER = """
local count, start = 0, '(' .. ARGV[1]
while true do
  local page = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', 1000)
  count = count + #page
  if #page < 1000 then return count end
  start = '(' .. page[#page][1]
end
"""


class RedisStreamQueue:
    """`StreamQueue` on Redis Streams and consumer groups.

    The client belongs to the caller (``aclose`` leaves it open). Its ``socket_timeout``, if
    set, must exceed ``max_block_ms``, the longest BLOCK one XREADGROUP waits.
    ``reclaim_page`` is the COUNT of each XAUTOCLAIM; ``reclaim`` follows the cursor.
    Dead-letter streams are trimmed to about ``dead_letter_maxlen`` entries when given.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        max_block_ms: int = MAX_BLOCK_MS,
        reclaim_page: int = 100,
        dead_letter_maxlen: int | None = None,
    ) -> None:
        timeout = redis.connection_pool.connection_kwargs.get("socket_timeout")
        if timeout is not None and timeout * 1000 <= max_block_ms:
            raise ValueError(
                f"socket_timeout {timeout}s must exceed the read block of {max_block_ms} ms"
            )
        self._redis = redis
        self._max_block_ms = max_block_ms
        self._reclaim_page = reclaim_page
        self._dead_letter_maxlen = dead_letter_maxlen
        self._touch = redis.register_script(_TOUCH)
        self._trim_acknowledged = redis.register_script(_TRIM_ACKNOWLEDGED)
        self._count_after = redis.register_script(_COUNT_AFTER)

    async def ensure_group(self, stream: str, group: str) -> None:
        try:
            with translate_errors():
                await self._redis.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def publish(
        self, stream: str, items: Sequence[Mapping[str, str]], *, maxlen: int | None = None
    ) -> list[str]:
        if not items:
            return []
        if maxlen is None and keys.is_dead_letter_stream(stream):
            maxlen = self._dead_letter_maxlen
        with translate_errors():
            # One MULTI/EXEC: a waiting reader wakes to the whole batch, not its first entry,
            # so the consumers handle full batches (fewer transactions and round trips).
            async with self._redis.pipeline(transaction=True) as pipe:
                for item in items:
                    fields: dict[FieldT, EncodableT] = {key: value for key, value in item.items()}
                    pipe.xadd(stream, fields, maxlen=maxlen, approximate=True)
                ids = await pipe.execute()
        return [text(entry_id) for entry_id in ids]

    async def read(
        self, stream: str, group: str, consumer: str, *, count: int, block_ms: int
    ) -> list[Entry]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + block_ms / 1000
        with translate_errors():
            while True:
                remaining_ms = math.ceil((deadline - loop.time()) * 1000)
                # BLOCK 0 would wait forever; no BLOCK at all returns at once.
                block = min(remaining_ms, self._max_block_ms) if remaining_ms > 0 else None
                reply = await self._redis.xreadgroup(
                    group, consumer, {stream: ">"}, count=count, block=block
                )
                entries = [
                    Entry(text(entry_id), _fields(raw))
                    for entry_id, raw in _read_reply_entries(reply)
                ]
                if entries or block is None or remaining_ms <= self._max_block_ms:
                    return entries

    async def reclaim(
        self, stream: str, group: str, consumer: str, *, min_idle_ms: int, count: int
    ) -> list[Entry]:
        claimed: list[tuple[str, dict[str, str]]] = []
        cursor = "0-0"
        with translate_errors():
            while len(claimed) < count:
                reply = await self._redis.xautoclaim(
                    stream,
                    group,
                    consumer,
                    min_idle_ms,
                    cursor,
                    count=min(self._reclaim_page, count - len(claimed)),
                )
                cursor = text(reply[0])
                # Redis 7 lists deleted entries apart (reply[2]) and drops them from the
                # pending list; Redis 6.2 put a nil in their place.
                claimed.extend(
                    (text(entry_id), _fields(raw))
                    for entry_id, raw in reply[1]
                    if entry_id is not None and raw is not None
                )
                if cursor == "0-0":
                    break
            return await self._with_deliveries(stream, group, consumer, claimed)

    async def _with_deliveries(
        self, stream: str, group: str, consumer: str, claimed: list[tuple[str, dict[str, str]]]
    ) -> list[Entry]:
        """The claimed entries with their delivery counts (XAUTOCLAIM does not report them).
        One that is no longer pending for ``consumer`` (taken or acked meanwhile) is left out."""
        if not claimed:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for entry_id, _ in claimed:
                pipe.xpending_range(
                    stream, group, min=entry_id, max=entry_id, count=1, consumername=consumer
                )
            pipe.hmget(keys.failures_key(stream, group), [entry_id for entry_id, _ in claimed])
            *details, failures = await pipe.execute()
        return [
            Entry(
                entry_id,
                fields,
                deliveries=int(detail[0]["times_delivered"]),
                failures=int(failed or 0),
            )
            for (entry_id, fields), detail, failed in zip(claimed, details, failures, strict=True)
            if detail
        ]

    async def touch(self, stream: str, group: str, consumer: str, ids: Sequence[str]) -> None:
        if ids:
            with translate_errors():
                await self._touch(keys=[stream], args=[group, consumer, *ids])

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> None:
        if ids:
            with translate_errors():
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.xack(stream, group, *ids)
                    pipe.hdel(keys.failures_key(stream, group), *ids)
                    await pipe.execute()

    async def record_failures(self, stream: str, group: str, ids: Sequence[str]) -> list[int]:
        if not ids:
            return []
        key = keys.failures_key(stream, group)
        with translate_errors():
            async with self._redis.pipeline(transaction=True) as pipe:
                for entry_id in ids:
                    pipe.hincrby(key, entry_id, 1)
                pipe.expire(key, keys.FAILURES_TTL_SECONDS)
                *counts, _ = await pipe.execute()
        return [int(count) for count in counts]

    async def stats(self, stream: str, group: str) -> GroupStats:
        with translate_errors():
            groups = await self._redis.xinfo_groups(stream)
            info = next((g for g in groups if text(g["name"]) == group), None)
            if info is None:
                raise GroupMissing(f"no group {group!r} on stream {stream!r}")
            lag = info.get("lag")
            if lag is None:
                last_delivered = text(info["last-delivered-id"])
                lag = await self._count_after(keys=[stream], args=[last_delivered])
        return GroupStats(pending=int(info["pending"]), lag=int(lag))

    async def length(self, stream: str) -> int:
        with translate_errors():
            return int(await self._redis.xlen(stream))

    async def trim_acknowledged(self, stream: str) -> int:
        with translate_errors():
            return int(await self._trim_acknowledged(keys=[stream]))

    async def aclose(self) -> None:
        """Nothing to release: the client is closed by whoever created it."""
