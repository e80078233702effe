"""The c-ares channels behind :mod:`runstate.resolve`: how long c-ares tries a server, and
how long one channel lives.

Tries: c-ares learns each server's latency and waits 5x its average, at least 250 ms, before
it asks again, doubling the wait each round, and it ignores an answer to a try it has given
up on. With its default rounds, a server that answers cached names in a millisecond would
see a name that takes it a second to recurse given up after under a second. So a channel
gets rounds enough to fill the lookup's deadline: the deadline, not c-ares, ends a lookup
that gets no answer.

Lifetime: c-ares (since 1.31) keeps a cache of its own that pycares 5 gives no way to turn
off (it does not expose ARES_OPT_QUERY_CACHE). Left alone, it holds each answer for its
record's TTL (up to an hour) beside runstate's cache, at about 2.7 KB of C memory per name
asked for A and AAAA (measured here: 79 MiB for 30,000 names, so some 500 MB at 200,000),
and keeps an NXDOMAIN for its zone's SOA minimum and an empty answer for the full hour
(c-ares issue 1293), however soon the name recovers. So a channel takes new lookups for
``lifetime_seconds`` only; then a fresh one, with an empty cache, takes over, and the old one
is closed (its memory given back) once the lookups it carries are past their deadline. When
pycares exposes ``qcache_max_ttl``, set it to 0 and drop this.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

import aiodns

__all__ = ["CaresChannels"]

_MIN_TRY_SECONDS = 0.25  # c-ares' floor for the wait on a server it knows to be fast
_LATE_ANSWER_SECONDS = 1.0  # an old channel outlives its last deadline by this much


class CaresChannels:
    """The c-ares channel to send new queries on (:meth:`current`), renewed every
    ``lifetime_seconds``. Made and used inside one running event loop."""

    def __init__(
        self, *, servers: Sequence[str] | None, timeout_seconds: float, lifetime_seconds: float
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._servers = list(servers or ())
        self._timeout = timeout_seconds
        self._tries = max(2, math.ceil(math.log2(timeout_seconds / _MIN_TRY_SECONDS + 1)))
        self._lifetime = lifetime_seconds
        self._current = self._open()
        self._renew_at = self._loop.time() + lifetime_seconds
        self._retired: dict[aiodns.DNSResolver, asyncio.TimerHandle] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self.opened = 1  # channels made so far

    def current(self) -> aiodns.DNSResolver:
        now = self._loop.time()
        if now >= self._renew_at:
            old, self._current = self._current, self._open()
            self._renew_at = now + self._lifetime
            self.opened += 1
            grace = self._timeout + _LATE_ANSWER_SECONDS
            self._retired[old] = self._loop.call_later(grace, self._close_retired, old)
        return self._current

    async def close(self) -> None:
        for channel, handle in self._retired.items():
            handle.cancel()
            await channel.close()
        self._retired.clear()
        await self._current.close()
        if self._closing:
            await asyncio.gather(*self._closing)

    def _open(self) -> aiodns.DNSResolver:
        return aiodns.DNSResolver(
            nameservers=self._servers,  # empty: the system's
            loop=self._loop,
            timeout=self._timeout / 3,  # the first try's, before c-ares knows the server
            tries=self._tries,
        )

    def _close_retired(self, channel: aiodns.DNSResolver) -> None:
        del self._retired[channel]
        task = self._loop.create_task(channel.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
