"""Every Redis key and key prefix runstate uses, in one place.

Stream and group names are settings (contract §2); everything else that lives in Redis is
named here so that an operator can find, inspect or clear it.
"""

# Fixed-window counters of the authentication rate limiter. Each key holds one counter
# and expires with its window, so nothing accumulates.
RATE_LIMIT_PREFIX = "runstate:ratelimit:"

# Per-monitor status state of the monitoring workers: a hash per monitor. It expires when a
# monitor has not been checked for MONITOR_STATE_TTL_SECONDS (deleted monitors clean up by
# themselves); a missing state is rebuilt from the database.
MONITOR_STATE_PREFIX = "runstate:monitor-state:"
MONITOR_STATE_TTL_SECONDS = 8 * 86_400  # longer than the longest check interval (7 days)

# Monitors with a check enqueued or running: one hash, website id -> time marked (ms).
PENDING_CHECKS = "runstate:pending-checks"

# Leases (the active scheduler): a plain key holding the holder's name, with a TTL.
LEASE_PREFIX = "runstate:lease:"

# Failures of an entry's own handling (not deliveries: a worker that died, or an outage of a
# dependency, is no failure of the entry): a hash per stream and group, entry id -> count.
# A field goes when its entry is acknowledged; the hash expires when no entry of the group
# has failed for FAILURES_TTL_SECONDS (entries deleted unacknowledged leave nothing behind).
FAILURES_PREFIX = "runstate:failures:"
FAILURES_TTL_SECONDS = 8 * 86_400

# Where entries no consumer could handle go: `<stream>:dlq` (contract §2 for the
# notification stream; the same rule for every stream).
DEAD_LETTER_SUFFIX = ":dlq"

# Liveness of each consumer: a key per process, refreshed by its heartbeat, with a TTL.
HEARTBEAT_PREFIX = "runstate:heartbeat:"


def monitor_state_key(website_id: str) -> str:
    return f"{MONITOR_STATE_PREFIX}{website_id}"


def failures_key(stream: str, group: str) -> str:
    return f"{FAILURES_PREFIX}{stream}:{group}"


def dead_letter_stream(stream: str) -> str:
    return f"{stream}{DEAD_LETTER_SUFFIX}"


def is_dead_letter_stream(stream: str) -> bool:
    return stream.endswith(DEAD_LETTER_SUFFIX)


def lease_key(name: str) -> str:
    return f"{LEASE_PREFIX}{name}"


def heartbeat_key(process: str) -> str:
    return f"{HEARTBEAT_PREFIX}{process}"
