"""Outages of runstate's own dependencies, told apart from failures of the work itself.

A handler that fails because the database, Redis or runstate's own network is down has
nothing wrong with its entry: retried once the dependency is back, it succeeds. Such a
failure must never count toward `MAX_DELIVERIES` (an outage of a few minutes would
otherwise dead-letter every entry in flight, and a status change lost that way is never
emitted again). :func:`is_outage` is the one place that decides; :class:`OutageRetry` retries
an operation in place, with capped backoff, for as long as its failures are outages.

Failures of what a user configured (a target that is down, a webhook that answers 500) are
not outages of runstate: checks report them as results and channels as delivery errors.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import socket
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import asyncpg
from sqlalchemy import exc as sa

from runstate.queue.base import QueueUnavailable
from runstate.queue.redis_streams import redis_unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

# SQLite reports a file it cannot write, open or lock by message only (every such error is
# an OperationalError, as is "no such table", which is no outage).
_SQLITE_OUTAGE_MESSAGES = (
    "database is locked",
    "database table is locked",
    "readonly database",
    "unable to open database",
    "disk i/o error",
    "database or disk is full",
)
# The network between runstate and its database or Redis: nothing answers, or the way is cut.
_NETWORK_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EHOSTDOWN,
        errno.EADDRNOTAVAIL,
    }
)
# PostgreSQL errors that mean the server cannot serve now (SQLSTATE classes 08 and 57, too
# many connections, and a standby promoted late during a failover), from asyncpg.
_POSTGRES_OUTAGES: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.ReadOnlySQLTransactionError,
)
# asyncpg's InterfaceError is an outage only when it says the connection is gone; most of
# them are bugs of the caller: an argument it cannot encode (DataError: "invalid input for
# query argument $1"), a bad configuration, an operation on a closed cursor.
_ASYNCPG_LOST_CONNECTION = ("connection is closed", "connection was closed")
_ASYNCPG_CLIENT_BUGS = (asyncpg.exceptions._base.DataError, asyncpg.ClientConfigurationError)


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` (or an error it wraps) says one of runstate's own dependencies —
    the database, Redis, the network to them — is unavailable, rather than that the work
    at hand is wrong."""
    return any(_is_outage_itself(error) for error in _chain(exc))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: SQLAlchemy's ``orig``, causes, and contexts not suppressed
    (``raise … from None`` says the error being handled is not what went wrong)."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        error = todo.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        yield error
        wrapped = [getattr(error, "orig", None), error.__cause__]
        if not error.__suppress_context__:
            wrapped.append(error.__context__)
        todo += [w for w in wrapped if isinstance(w, BaseException)]


def _is_outage_itself(error: BaseException) -> bool:
    if isinstance(error, QueueUnavailable) or redis_unavailable(error):
        return True  # unreachable, or a replica, out of memory, loading …
    if isinstance(error, TimeoutError | socket.gaierror):
        return True
    if isinstance(error, sa.TimeoutError):  # no connection free in the pool in time
        return True
    if isinstance(error, sa.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, sqlite3.OperationalError):
        return _sqlite_outage(str(error))
    if isinstance(error, sa.OperationalError):
        # SQLite's are judged by their message (the `orig` above); any other driver's
        # OperationalError is about the connection or the server, not the statement.
        return not isinstance(error.orig, sqlite3.Error) or _sqlite_outage(str(error.orig))
    if isinstance(error, _POSTGRES_OUTAGES):
        return True
    if isinstance(error, asyncpg.InterfaceError) and not isinstance(error, _ASYNCPG_CLIENT_BUGS):
        return any(marker in str(error) for marker in _ASYNCPG_LOST_CONNECTION)
    if isinstance(error, ConnectionError):  # refused, reset, aborted, broken pipe
        return True
    return isinstance(error, OSError) and error.errno in _NETWORK_ERRNOS


def _sqlite_outage(message: str) -> bool:
    lowered = message.lower()
    return any(marker in lowered for marker in _SQLITE_OUTAGE_MESSAGES)


def describe(exc: BaseException) -> str:
    """One line for a log or a reason: the error's type and message, the first line only
    (SQLAlchemy appends a background link and, for statements, the SQL)."""
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__


@dataclass
class OutageRetry:
    """Runs operations again and again while they fail with an outage (:func:`is_outage`),
    pausing with exponential backoff and full jitter, from ``base_seconds`` up to
    ``max_seconds``; any other error is raised at once.

    One object is shared by a component's concurrent operations, so that an outage is
    logged once when it begins (with the error) and once when it ends (with how long it
    lasted), however many operations wait it out.
    """

    what: str  # who waits, for the log: "status-change handler", "check results"
    max_seconds: float = 10.0
    base_seconds: float = 0.1
    outages: int = 0  # outages seen so far (an outage ends with the first success after it)
    waiting: int = 0  # operations waiting for the dependency right now
    _began_at: float | None = field(default=None, repr=False)

    async def run(self, operation: Callable[[], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            try:
                result = await operation()
            except Exception as exc:
                if not is_outage(exc):
                    raise
                attempt += 1
                self._began(exc)
                self.waiting += 1
                try:
                    await asyncio.sleep(self.pause(attempt))
                finally:
                    self.waiting -= 1
                continue
            self._ended()
            return result

    def pause(self, attempt: int) -> float:
        ceiling = min(self.max_seconds, self.base_seconds * 2**attempt)
        return random.uniform(min(self.base_seconds, ceiling), ceiling)  # noqa: S311 - jitter

    @property
    def in_outage(self) -> bool:
        return self._began_at is not None

    def _began(self, exc: BaseException) -> None:
        if self._began_at is not None:
            return
        self._began_at = time.monotonic()
        self.outages += 1
        log.warning(
            "dependency unavailable; retrying in place until it is back",
            extra={"waiting": self.what, "error": describe(exc)},
        )

    def _ended(self) -> None:
        if self._began_at is None:
            return
        lasted = time.monotonic() - self._began_at
        self._began_at = None
        log.warning(
            "dependency available again",
            extra={"waiting": self.what, "outage_s": round(lasted, 1)},
        )
