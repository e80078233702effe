"""Every Redis key and key prefix runstate uses, in one place.

Stream and group names are settings (contract §2); everything else that lives in Redis is
named here so that an operator can find, inspect or clear it.
"""

# Fixed-window counters of the authentication rate limiter. Each key holds one counter
# and expires with its window, so nothing accumulates.
RATE_LIMIT_PREFIX = "runstate:ratelimit:"
