"""The stream protocol every queue back end implements (Redis Streams, in-process).

The semantics are those of Redis Streams with consumer groups, which the in-process back end
reproduces so that `runstate up` behaves like the distributed system:

- an entry published to a stream is delivered to one consumer of each group;
- a delivered entry stays *pending* for its group until acknowledged;
- a pending entry idle longer than a bound can be reclaimed by another consumer (its
  delivery count grows), which is how work survives a crashed consumer;
- `touch` resets an entry's idle time, so a slow handler keeps its claim;
- failures of an entry's own handling are counted apart from its deliveries
  (`record_failures`), so that only they can make an entry dead; acknowledging an entry
  forgets them;
- every dead-letter stream (`<stream>:dlq`) is capped: a back end created with a
  ``dead_letter_maxlen`` trims each of them to about that many entries on publish.

Back ends raise `GroupMissing` when the group (or the stream) vanished, e.g. after Redis
lost its data, and `QueueUnavailable` when they cannot be reached; callers recreate the
group or back off.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from runstate.domain.status import MonitorState, Observation


class QueueUnavailable(Exception):
    """The queue back end cannot be reached right now."""


class GroupMissing(Exception):
    """The consumer group or its stream does not exist (any more)."""


@dataclass(frozen=True, slots=True)
class Entry:
    id: str
    fields: dict[str, str]
    deliveries: int = 1  # how many times this entry has been handed to a consumer
    failures: int = 0  # how many of those failed on the entry itself (`record_failures`)


@dataclass(frozen=True, slots=True)
class GroupStats:
    pending: int  # delivered, not yet acknowledged
    lag: int  # in the stream, not yet delivered to the group


class StreamQueue(Protocol):
    async def ensure_group(self, stream: str, group: str) -> None:
        """Create ``group`` on ``stream`` (and the stream) unless it exists."""

    async def publish(
        self, stream: str, items: Sequence[Mapping[str, str]], *, maxlen: int | None = None
    ) -> list[str]:
        """Append ``items`` in one round trip; returns their entry ids. With ``maxlen`` the
        stream is trimmed approximately to that many entries; a dead-letter stream is
        trimmed to the back end's ``dead_letter_maxlen`` when no ``maxlen`` is given."""

    async def read(
        self, stream: str, group: str, consumer: str, *, count: int, block_ms: int
    ) -> list[Entry]:
        """Up to ``count`` entries never delivered to ``group``, waiting up to ``block_ms``."""

    async def reclaim(
        self, stream: str, group: str, consumer: str, *, min_idle_ms: int, count: int
    ) -> list[Entry]:
        """Take over up to ``count`` pending entries idle for ``min_idle_ms`` or longer, with
        their delivery and failure counts. Entries deleted from the stream meanwhile are
        dropped."""

    async def touch(self, stream: str, group: str, consumer: str, ids: Sequence[str]) -> None:
        """Reset the idle time of ``ids``, still pending for ``consumer``."""

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> None:
        """Acknowledge ``ids``: they are done and will not be delivered again (and their
        failures are forgotten)."""

    async def record_failures(self, stream: str, group: str, ids: Sequence[str]) -> list[int]:
        """Count one more failure of each of ``ids``, pending for ``group``, on the entry
        itself; returns each one's failures so far."""

    async def stats(self, stream: str, group: str) -> GroupStats:
        """Pending and undelivered entries of ``group``."""

    async def length(self, stream: str) -> int:
        """The number of entries in ``stream`` (0 when it does not exist)."""

    async def trim_acknowledged(self, stream: str) -> int:
        """Delete the entries every group of ``stream`` has both received and acknowledged
        (never an undelivered or pending one); returns how many went."""

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ObservedCheck:
    """A check result to apply to a monitor's state, with the status-change event to emit
    if it confirms a change (its fields are filled in by the store)."""

    website_id: uuid.UUID
    observation: Observation
    event_id: str
    region_id: int


class ApplyOutcome(Enum):
    NEEDS_SEED = "needs_seed"  # no state for this monitor: seed it from the database first
    STALE = "stale"  # not newer than the last observation applied: ignored
    APPLIED = "applied"  # state updated, no change of status
    CHANGED = "changed"  # state updated and the status-change event was emitted


class MonitorStates(Protocol):
    """Per-monitor status state, updated atomically with the emission of the status-change
    event, so that a transition is never recorded without its event or emitted twice."""

    async def apply(
        self, checks: Sequence[ObservedCheck], *, status_change_stream: str
    ) -> list[ApplyOutcome]:
        """Apply each observation (`domain.status.apply_observation`) in order; for each
        confirmed change, append a `StatusChange` entry to ``status_change_stream`` in the
        same atomic step."""

    async def seed(self, website_id: uuid.UUID, state: MonitorState) -> None:
        """Set the state of a monitor that has none (rebuilt from the database); a state
        that exists meanwhile is kept."""

    async def get(self, website_id: uuid.UUID) -> MonitorState | None: ...


@dataclass(frozen=True, slots=True)
class DueCheck:
    website_id: uuid.UUID
    stale_after_ms: int  # a mark older than this is presumed lost and may be replaced


class PendingChecks(Protocol):
    """Which monitors have a check waiting or running, so the scheduler never piles up a
    second one behind a slow target or a backlog."""

    async def mark(self, due: Sequence[DueCheck], *, now_ms: int) -> list[bool]:
        """Mark each monitor pending; False for one already pending (and not stale)."""

    async def release(self, website_ids: Sequence[uuid.UUID]) -> None: ...


class Lease(Protocol):
    """A named lease held by one process at a time (the active scheduler)."""

    async def acquire(self, name: str, holder: str, ttl_ms: int) -> bool:
        """Take the lease when free, or extend it when ``holder`` has it; False otherwise."""

    async def release(self, name: str, holder: str) -> None: ...
