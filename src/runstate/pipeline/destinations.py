"""Fair shares of the monitoring worker between destinations.

Many monitors may point at one host: an agency's hundred sites on one server, or one
tenant's monitors on a black-holed address. Each check of such a host that hangs until its
timeout would hold a check slot that every other monitor needs. :class:`PerDestinationLimit`
caps the checks running at once against one host; the checks beyond the cap wait for their
host, not for a worker slot, and lend their read-ahead slot back meanwhile, so the worker goes
on reading and checking everyone else's monitors.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

from runstate.flow import Slots


def destination_of(url: str) -> str:
    """The host a check connects to first, as the URL names it (lower case; a name, not its
    addresses: the cap applies before anything is resolved)."""
    return (urlsplit(url).hostname or "").lower()


class PerDestinationLimit:
    """At most ``per_destination`` turns at once per destination.

    A check waiting for its turn lends its read-ahead slot back, up to ``most_lent`` slots
    in all: beyond that a waiter keeps its slot, so the worker stops reading and the entries
    stay in the stream, for other workers, rather than piling up here behind one host.
    """

    def __init__(self, per_destination: int, read_ahead: Slots, *, most_lent: int) -> None:
        self.per_destination = per_destination
        self.most_lent = most_lent
        self._read_ahead = read_ahead
        self._gates: dict[str, asyncio.Semaphore] = {}
        self._users: dict[str, int] = {}  # holders and waiters, to forget idle hosts
        self.waiting = 0  # checks waiting for a busy destination now
        self.lent = 0  # read-ahead slots lent back by waiting checks

    @asynccontextmanager
    async def turn(self, destination: str) -> AsyncIterator[None]:
        gate = self._gates.get(destination)
        if gate is None:
            gate = self._gates[destination] = asyncio.Semaphore(self.per_destination)
            self._users[destination] = 0
        self._users[destination] += 1
        try:
            if gate.locked():
                await self._wait_for(gate)
            else:
                await gate.acquire()
            try:
                yield
            finally:
                gate.release()
        finally:
            self._users[destination] -= 1
            if not self._users[destination]:
                del self._users[destination], self._gates[destination]

    async def _wait_for(self, gate: asyncio.Semaphore) -> None:
        # Waiting for a busy host is not work: lend the read-ahead slot back, while the
        # slots lent stay within bounds.
        lending = self.lent < self.most_lent
        if lending:
            self.lent += 1
            self._read_ahead.give_back(1)
        self.waiting += 1
        try:
            await gate.acquire()
        finally:
            self.waiting -= 1
            if lending:
                self.lent -= 1
                self._read_ahead.take_now(1)
