"""Every queue protocol in this process's memory, with the semantics of the Redis back end.

`runstate up` runs all stages in one event loop on an `InProcessBroker`; the contract tests
run the same claims against it and against Redis. Nothing here awaits while it changes
state, so each method is atomic with respect to the other tasks of the loop; the only await
is a blocked ``read`` waiting to be woken. It is not thread-safe.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from runstate.domain.events import StatusChange, time_from_ms
from runstate.domain.status import MonitorState, Observation, apply_observation, rebuilt_state
from runstate.queue import keys
from runstate.queue.base import (
    ApplyOutcome,
    DueCheck,
    Entry,
    GroupMissing,
    GroupStats,
    ObservedCheck,
)

__all__ = ["InProcessBroker", "InProcessLease", "InProcessPendingChecks"]

_MIN_SWEEP_SIZE = 1024  # monitor states are swept for expired ones from this many on

EntryId = tuple[int, int]  # (milliseconds, sequence), ordered like Redis stream ids


def _format_id(entry_id: EntryId) -> str:
    return f"{entry_id[0]}-{entry_id[1]}"


def _parse_id(text: str) -> EntryId:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


@dataclass(slots=True)
class _Delivery:
    consumer: str
    delivered_at: float  # clock seconds
    count: int
    failures: int = 0  # of the entry's own handling (record_failures)


@dataclass(slots=True)
class _Group:
    last_delivered: EntryId = (0, 0)
    pending: dict[EntryId, _Delivery] = field(default_factory=dict)


@dataclass(slots=True)
class _Stream:
    ids: list[EntryId] = field(default_factory=list)  # ascending
    data: dict[EntryId, dict[str, str]] = field(default_factory=dict)
    last_id: EntryId = (0, 0)  # the newest id ever generated, deleted or not
    groups: dict[str, _Group] = field(default_factory=dict)


def _trim_floor(group: _Group) -> EntryId:
    """The oldest entry ``group`` may still need: its oldest pending one, or else the first
    after its last delivered."""
    if group.pending:
        return min(group.pending)
    return group.last_delivered[0], group.last_delivered[1] + 1


class InProcessBroker:
    """`StreamQueue` and `MonitorStates` in one object, with `PendingChecks` and `Lease` as
    its ``pending_checks`` and ``lease`` (their ``release`` methods would clash).

    ``clock`` (seconds, monotonic) measures idle times, lease and state expiry; ``wall_ms``
    (Unix milliseconds) stamps entry ids. ``flush()`` drops everything, like FLUSHALL.
    Dead-letter streams keep at most ``dead_letter_maxlen`` entries when given.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        dead_letter_maxlen: int | None = None,
    ) -> None:
        self._clock = clock
        self._wall_ms = wall_ms
        self._dead_letter_maxlen = dead_letter_maxlen
        self._streams: dict[str, _Stream] = {}
        self._wakeups: dict[str, asyncio.Event] = {}  # set (and replaced) on every append
        self._states: dict[uuid.UUID, tuple[MonitorState, float]] = {}  # state, expires at
        self._states_sweep_at = _MIN_SWEEP_SIZE
        # Their ``release`` methods differ, so these two are objects of their own.
        self.pending_checks = InProcessPendingChecks()
        self.lease = InProcessLease(clock)

    def flush(self) -> None:
        """Drop every stream, group, state, mark and lease; blocked readers get GroupMissing."""
        self._streams.clear()
        self._states.clear()
        self.pending_checks.marks.clear()
        self.lease.held.clear()
        for stream in list(self._wakeups):
            self._wake(stream)

    # -- streams ---------------------------------------------------------------------------

    def _wake(self, stream: str) -> None:
        event = self._wakeups.pop(stream, None)
        if event is not None:
            event.set()

    def _group(self, stream: str, group: str) -> tuple[_Stream, _Group]:
        found = self._streams.get(stream)
        if found is None or group not in found.groups:
            raise GroupMissing(f"no group {group!r} on stream {stream!r}")
        return found, found.groups[group]

    def _append(self, stream: str, fields: Mapping[str, str], maxlen: int | None) -> str:
        target = self._streams.setdefault(stream, _Stream())
        now = self._wall_ms()
        last_ms, last_seq = target.last_id
        # Like Redis, a clock that stepped back keeps the last millisecond and counts on.
        new_id = (now, 0) if now > last_ms else (last_ms, last_seq + 1)
        target.last_id = new_id
        target.ids.append(new_id)
        target.data[new_id] = dict(fields)
        if maxlen is not None and len(target.ids) > maxlen:
            self._drop_oldest(target, len(target.ids) - maxlen)
        self._wake(stream)
        return _format_id(new_id)

    # Deleted entries stay pending where they were, as in Redis; reclaim and touch drop them.

    @staticmethod
    def _drop_oldest(target: _Stream, count: int) -> None:
        for entry_id in target.ids[:count]:
            del target.data[entry_id]
        del target.ids[:count]

    @staticmethod
    def _drop(target: _Stream, ids: Sequence[EntryId]) -> None:
        doomed = set(ids)
        target.ids = [entry_id for entry_id in target.ids if entry_id not in doomed]
        for entry_id in doomed:
            target.data.pop(entry_id, None)

    def delete(self, stream: str, ids: Sequence[str]) -> int:
        """XDEL: delete entries by id; returns how many existed."""
        target = self._streams.get(stream)
        if target is None:
            return 0
        doomed = [parsed for parsed in map(_parse_id, ids) if parsed in target.data]
        self._drop(target, doomed)
        return len(doomed)

    async def ensure_group(self, stream: str, group: str) -> None:
        self._streams.setdefault(stream, _Stream()).groups.setdefault(group, _Group())

    async def publish(
        self, stream: str, items: Sequence[Mapping[str, str]], *, maxlen: int | None = None
    ) -> list[str]:
        """With ``maxlen`` the stream is trimmed exactly (Redis may keep a few more)."""
        if maxlen is None and keys.is_dead_letter_stream(stream):
            maxlen = self._dead_letter_maxlen
        return [self._append(stream, item, maxlen) for item in items]

    async def read(
        self, stream: str, group: str, consumer: str, *, count: int, block_ms: int
    ) -> list[Entry]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + block_ms / 1000
        while True:
            target, state = self._group(stream, group)
            start = bisect_right(target.ids, state.last_delivered)
            taken = target.ids[start : start + count]
            if taken:
                now = self._clock()
                state.last_delivered = taken[-1]
                for entry_id in taken:
                    state.pending[entry_id] = _Delivery(consumer, now, 1)
                return [Entry(_format_id(i), dict(target.data[i])) for i in taken]
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            wakeup = self._wakeups.setdefault(stream, asyncio.Event())
            try:
                async with asyncio.timeout(remaining):
                    await wakeup.wait()
            except TimeoutError:
                return []

    async def reclaim(
        self, stream: str, group: str, consumer: str, *, min_idle_ms: int, count: int
    ) -> list[Entry]:
        target, state = self._group(stream, group)
        now = self._clock()
        claimed: list[Entry] = []
        for entry_id in sorted(state.pending):
            if len(claimed) >= count:
                break
            delivery = state.pending[entry_id]
            if (now - delivery.delivered_at) * 1000 < min_idle_ms:
                continue
            if entry_id not in target.data:  # deleted meanwhile: Redis 7 forgets it too
                del state.pending[entry_id]
                continue
            delivery.consumer, delivery.delivered_at = consumer, now
            delivery.count += 1
            claimed.append(
                Entry(
                    _format_id(entry_id),
                    dict(target.data[entry_id]),
                    delivery.count,
                    delivery.failures,
                )
            )
        return claimed

    async def touch(self, stream: str, group: str, consumer: str, ids: Sequence[str]) -> None:
        if not ids:
            return
        target, state = self._group(stream, group)
        now = self._clock()
        for entry_id in map(_parse_id, ids):
            delivery = state.pending.get(entry_id)
            if delivery is None or delivery.consumer != consumer:
                continue
            if entry_id in target.data:
                delivery.delivered_at = now
            else:
                del state.pending[entry_id]

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> None:
        """Like XACK, acknowledging on a missing stream or group is a no-op."""
        found = self._streams.get(stream)
        state = found.groups.get(group) if found else None
        if state is not None:
            for entry_id in map(_parse_id, ids):
                state.pending.pop(entry_id, None)

    async def record_failures(self, stream: str, group: str, ids: Sequence[str]) -> list[int]:
        _, state = self._group(stream, group)
        counts = []
        for entry_id in map(_parse_id, ids):
            delivery = state.pending.get(entry_id)
            if delivery is not None:
                delivery.failures += 1
            counts.append(delivery.failures if delivery is not None else 1)
        return counts

    async def stats(self, stream: str, group: str) -> GroupStats:
        target, state = self._group(stream, group)
        lag = len(target.ids) - bisect_right(target.ids, state.last_delivered)
        return GroupStats(pending=len(state.pending), lag=lag)

    async def length(self, stream: str) -> int:
        target = self._streams.get(stream)
        return len(target.ids) if target else 0

    async def trim_acknowledged(self, stream: str) -> int:
        target = self._streams.get(stream)
        if target is None or not target.groups:
            return 0
        floor = min(map(_trim_floor, target.groups.values()))
        gone = bisect_left(target.ids, floor)
        self._drop_oldest(target, gone)
        return gone

    async def aclose(self) -> None:
        """Nothing to release."""

    # -- monitor states --------------------------------------------------------------------

    def _live_state(self, website_id: uuid.UUID) -> MonitorState | None:
        found = self._states.get(website_id)
        if found is None:
            return None
        state, expires_at = found
        if expires_at <= self._clock():
            del self._states[website_id]
            return None
        return state

    def _store_state(self, website_id: uuid.UUID, state: MonitorState) -> None:
        now = self._clock()
        if website_id not in self._states and len(self._states) >= self._states_sweep_at:
            # Expired states of deleted monitors are never read again; drop them from time to
            # time, as Redis expires their keys, so the table stays about twice the live size.
            self._states = {k: v for k, v in self._states.items() if v[1] > now}
            self._states_sweep_at = max(_MIN_SWEEP_SIZE, 2 * len(self._states))
        self._states[website_id] = (state, now + keys.MONITOR_STATE_TTL_SECONDS)

    async def apply(
        self, checks: Sequence[ObservedCheck], *, status_change_stream: str
    ) -> list[ApplyOutcome]:
        return [self._apply_one(check, status_change_stream) for check in checks]

    def _apply_one(self, check: ObservedCheck, status_change_stream: str) -> ApplyOutcome:
        # Synchronous: the state update and the event append form one critical section.
        state = self._live_state(check.website_id)
        if state is None:
            return ApplyOutcome.NEEDS_SEED
        seen: Observation = check.observation
        if seen.at_ms <= state.last_applied_ms:
            return ApplyOutcome.STALE
        after, transition = apply_observation(state, seen)
        self._store_state(check.website_id, after)
        if transition is None:
            return ApplyOutcome.APPLIED
        change = StatusChange(
            event_id=check.event_id,
            website_id=check.website_id,
            region_id=check.region_id,
            prev_status=transition.previous,
            current_status=transition.current,
            occurred_at=time_from_ms(transition.at_ms),
        )
        self._append(status_change_stream, change.to_fields(), None)
        return ApplyOutcome.CHANGED

    async def seed(self, website_id: uuid.UUID, state: MonitorState) -> None:
        """Sets `domain.status.rebuilt_state` of ``state``, unless a state exists."""
        if self._live_state(website_id) is None:
            self._store_state(website_id, rebuilt_state(state))

    async def get(self, website_id: uuid.UUID) -> MonitorState | None:
        return self._live_state(website_id)


class InProcessPendingChecks:
    """`PendingChecks` in a dict: website id -> time marked (ms)."""

    def __init__(self) -> None:
        self.marks: dict[uuid.UUID, int] = {}

    async def mark(self, due: Sequence[DueCheck], *, now_ms: int) -> list[bool]:
        """A mark older than the check's ``stale_after_ms`` is replaced (and True)."""
        marked: list[bool] = []
        for check in due:
            since = self.marks.get(check.website_id)
            fresh = since is not None and now_ms - since <= check.stale_after_ms
            if not fresh:
                self.marks[check.website_id] = now_ms
            marked.append(not fresh)
        return marked

    async def release(self, website_ids: Sequence[uuid.UUID]) -> None:
        for website_id in website_ids:
            self.marks.pop(website_id, None)


class InProcessLease:
    """`Lease` in a dict: name -> (holder, expiry on ``clock``)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.held: dict[str, tuple[str, float]] = {}

    async def acquire(self, name: str, holder: str, ttl_ms: int) -> bool:
        now = self._clock()
        current = self.held.get(name)
        if current is not None and current[1] > now and current[0] != holder:
            return False
        self.held[name] = (holder, now + ttl_ms / 1000)
        return True

    async def release(self, name: str, holder: str) -> None:
        current = self.held.get(name)
        if current is not None and current[0] == holder:
            del self.held[name]
