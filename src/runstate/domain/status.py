"""Monitor status and the rule that turns observations into confirmed status changes.

A monitor is DOWN after `confirmations` consecutive failed checks and UP again after
`recovery_confirmations` consecutive successes. A monitor whose status is not known yet (no
check applied, or a state rebuilt without a confirmed status) is presumed UP: its first UP
sets the status silently, and its first `confirmations` consecutive failures are a change
from UP to DOWN like any other, so a monitor that is broken from its very first check
alerts. An observation older than the last one applied is ignored, so a late or duplicated
result cannot flip the status back.

The `_APPLY` Lua script in `queue/redis_state.py` implements the same rule inside Redis;
the contract tests hold both to the same table of cases.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class Status(StrEnum):
    UP = "up"
    DOWN = "down"


# What a monitor is taken to be before its status is known: the change its first confirmed
# failures make is reported as up -> down (`prev_status` has no "unknown").
PRESUMED_STATUS = Status.UP


@dataclass(frozen=True, slots=True)
class MonitorState:
    """What the pipeline remembers of one monitor between checks."""

    status: Status | None = None
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    last_applied_ms: int = 0  # time of the newest observation applied, Unix milliseconds


@dataclass(frozen=True, slots=True)
class Observation:
    status: Status
    at_ms: int
    confirmations: int = 1
    recovery_confirmations: int = 1


@dataclass(frozen=True, slots=True)
class Transition:
    previous: Status
    current: Status
    at_ms: int


def apply_observation(
    state: MonitorState, seen: Observation
) -> tuple[MonitorState, Transition | None]:
    """The state after ``seen`` and the confirmed status change it causes, if any.

    A stale observation (not newer than the last applied) returns ``state`` unchanged.
    """
    if seen.at_ms <= state.last_applied_ms:
        return state, None
    if seen.status is Status.DOWN:
        failures, successes = state.consecutive_failures + 1, 0
    else:
        failures, successes = 0, state.consecutive_successes + 1
    after = replace(
        state,
        consecutive_failures=failures,
        consecutive_successes=successes,
        last_applied_ms=seen.at_ms,
    )
    presumed = state.status or PRESUMED_STATUS
    if seen.status is presumed:  # no change; a first UP becomes the known status
        return replace(after, status=seen.status), None
    if not _is_confirmed(after, seen):
        return after, None
    return replace(after, status=seen.status), Transition(presumed, seen.status, seen.at_ms)


def _is_confirmed(after: MonitorState, seen: Observation) -> bool:
    if seen.status is Status.DOWN:
        return after.consecutive_failures >= seen.confirmations
    return after.consecutive_successes >= seen.recovery_confirmations


def rebuilt_state(state: MonitorState) -> MonitorState:
    """``state`` as a store seeds it: a status without the time of the change that confirmed
    it (``last_applied_ms`` 0, as rebuilt from a database that shows only the status its
    first check wrote, before any change) is not a confirmed status, so the monitor's first
    confirmed failures still make their change."""
    if state.status is not None and state.last_applied_ms == 0:
        return replace(state, status=None)
    return state
