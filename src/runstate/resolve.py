"""The resolver the checks and the channels share: c-ares (through aiodns) behind a cache.

Why not aiohttp's default: its ThreadedResolver runs getaddrinfo in a small thread pool, and a
name whose servers never answer keeps its thread for glibc's timeout x attempts, long after
the check that asked gave up; a few such names starve every other lookup of the worker.
c-ares holds no thread per lookup (pycares runs one event thread per channel), and every
lookup here has its own deadline, DNS_TIMEOUT_SECONDS.

The contract of :class:`CachingResolver`:

- Answers are cached per (name, address family) for the record's TTL clamped to
  [DNS_CACHE_MIN_TTL_SECONDS, DNS_CACHE_MAX_TTL_SECONDS]; failures (NXDOMAIN, no address,
  no answer in time, SERVFAIL, ...) for DNS_NEGATIVE_TTL_SECONDS, so a name whose servers
  hang costs one wait per that period, not one per check. At most DNS_CACHE_SIZE names are
  kept; the least recently used goes first.
- Concurrent lookups of one name and family share one query; a caller that gives up (its
  check timed out) does not cancel the query for the others.
- A failure raises :class:`DnsLookupError`, a ``socket.gaierror``: aiohttp's connector turns
  it into ``ClientConnectorDNSError``, and ``strerror`` is the short reason ("NXDOMAIN").
- Names go to DNS_SERVERS, or to the system's resolvers as c-ares reads /etc/resolv.conf
  (search domains and ndots included); /etc/hosts is read first either way.

c-ares keeps a cache of its own that pycares 5 cannot turn off; :mod:`runstate.cares` renews
the c-ares channel every ``channel_seconds`` (10 s) so that cache holds little and nothing
for long: an answer is at most that much older than this resolver's TTLs allow.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, NamedTuple

import aiodns
import pycares
from aiohttp.abc import AbstractResolver, ResolveResult

from runstate.cares import CaresChannels

if TYPE_CHECKING:
    from runstate.settings import Settings

__all__ = ["CachingResolver", "DnsConfig", "DnsLookupError", "ResolverStats"]

_NUMERIC_FLAGS = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
_EAI_NODATA: int = getattr(socket, "EAI_NODATA", socket.EAI_NONAME)
_Failure = tuple[int, str]  # (EAI_* code, short reason)
_CLOSED: _Failure = (socket.EAI_AGAIN, "the resolver was closed")
_FAILURES: dict[int, _Failure] = {
    pycares.errno.ARES_ENOTFOUND: (socket.EAI_NONAME, "NXDOMAIN"),
    pycares.errno.ARES_ENODATA: (_EAI_NODATA, "no address record"),
    pycares.errno.ARES_ESERVFAIL: (socket.EAI_AGAIN, "the DNS server failed (SERVFAIL)"),
    pycares.errno.ARES_EREFUSED: (socket.EAI_AGAIN, "the DNS server refused the query"),
    pycares.errno.ARES_ECONNREFUSED: (socket.EAI_AGAIN, "the DNS server is unreachable"),
    pycares.errno.ARES_EBADNAME: (socket.EAI_NONAME, "not a valid host name"),
}


class DnsLookupError(socket.gaierror):
    """A name that did not resolve. ``strerror`` is the short reason ("NXDOMAIN", "no answer
    from the DNS server within 5.0 s"); ``str(e)`` is "<host> does not resolve (<reason>)"."""

    def __init__(self, host: str, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.host = host

    def __str__(self) -> str:
        return f"{self.host} does not resolve ({self.strerror})"


@dataclass(frozen=True, slots=True)
class DnsConfig:
    """How a :class:`CachingResolver` resolves and caches; the defaults are the settings'."""

    servers: tuple[str, ...] | None = None  # "ip:port" / "[ipv6]:port"; None: the system's
    timeout_seconds: float = 5.0
    cache_size: int = 200_000
    min_ttl_seconds: float = 5.0
    max_ttl_seconds: float = 300.0
    negative_ttl_seconds: float = 5.0
    channel_seconds: float = 10.0  # a c-ares channel's life; bounds c-ares' own cache

    @classmethod
    def from_settings(cls, settings: Settings) -> DnsConfig:
        return cls(
            servers=settings.dns_servers,
            timeout_seconds=settings.DNS_TIMEOUT_SECONDS,
            cache_size=settings.DNS_CACHE_SIZE,
            min_ttl_seconds=settings.DNS_CACHE_MIN_TTL_SECONDS,
            max_ttl_seconds=settings.DNS_CACHE_MAX_TTL_SECONDS,
            negative_ttl_seconds=settings.DNS_NEGATIVE_TTL_SECONDS,
        )


@dataclass(slots=True)
class ResolverStats:
    """Counters since the resolver was made, for metrics."""

    hits: int = 0  # lookups answered from the cache (addresses or a remembered failure)
    misses: int = 0  # lookups that sent a query
    joined: int = 0  # lookups that waited for a query another caller had sent
    failures: int = 0  # queries that failed (each once, however often it is replayed)
    evictions: int = 0  # names dropped to keep the cache within its size


class _Entry(NamedTuple):
    expires: float  # time.monotonic()
    addresses: tuple[str, ...]  # empty when failure is set
    failure: _Failure | None


class CachingResolver(AbstractResolver):
    """aiohttp resolver on c-ares with a TTL-honouring cache; see the module docstring.

    Must be made inside a running event loop (aiodns binds its channels to the loop) and used
    only from that loop. ``close()`` releases the c-ares channels; lookups then fail.
    """

    def __init__(self, config: DnsConfig | None = None) -> None:
        self.config = config or DnsConfig()
        self.stats = ResolverStats()
        self._loop = asyncio.get_running_loop()
        self._channels = CaresChannels(
            servers=self.config.servers,
            timeout_seconds=self.config.timeout_seconds,
            lifetime_seconds=self.config.channel_seconds,
        )
        self._cache: OrderedDict[tuple[str, int], _Entry] = OrderedDict()
        self._pending: dict[tuple[str, int], asyncio.Future[_Entry]] = {}
        self._timeout_failure: _Failure = (
            socket.EAI_AGAIN,
            f"no answer from the DNS server within {float(self.config.timeout_seconds)} s",
        )
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> CachingResolver:
        """A resolver configured by the DNS_* settings; call it inside the running loop."""
        return cls(DnsConfig.from_settings(settings))

    @property
    def cached_names(self) -> int:
        """Entries in the cache, expired ones not yet replaced included."""
        return len(self._cache)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The addresses of ``host`` in ``family`` (AF_INET, AF_INET6 or AF_UNSPEC), each with
        ``port``; raises :class:`DnsLookupError` when there are none."""
        key = (host.lower(), family)
        entry = self._cache.get(key)
        if entry is not None and entry.expires > time.monotonic():
            self._cache.move_to_end(key)
            self.stats.hits += 1
        else:
            entry = await self._lookup(key)
        if entry.failure is not None:
            raise DnsLookupError(host, *entry.failure)
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": _NUMERIC_FLAGS,
            }
            for address in entry.addresses
        ]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for key, shared in list(self._pending.items()):
            self._settle(key, shared, _Entry(0.0, (), _CLOSED), store=False)
        await self._channels.close()

    async def _lookup(self, key: tuple[str, int]) -> _Entry:
        if self._closed:
            return _Entry(0.0, (), _CLOSED)
        shared = self._pending.get(key)
        if shared is None:
            shared = self._send_query(key)
            self.stats.misses += 1
        else:
            self.stats.joined += 1
        # Shielded: one caller giving up must not cancel the query the others wait for.
        return await asyncio.shield(shared)

    def _send_query(self, key: tuple[str, int]) -> asyncio.Future[_Entry]:
        shared: asyncio.Future[_Entry] = self._loop.create_future()
        name, family = key
        try:
            query = self._channels.current().getaddrinfo(
                name, family=socket.AddressFamily(family), type=socket.SOCK_STREAM
            )
        except (UnicodeError, ValueError):  # a name pycares cannot even encode
            self._settle(key, shared, self._failed(_FAILURES[pycares.errno.ARES_EBADNAME]))
            return shared
        self._pending[key] = shared  # only now: nothing above may leave it unsettled
        deadline = self._loop.call_later(self.config.timeout_seconds, self._give_up, key, shared)
        query.add_done_callback(partial(self._answered, key, shared, deadline))
        return shared

    def _give_up(self, key: tuple[str, int], shared: asyncio.Future[_Entry]) -> None:
        if not shared.done():
            self._settle(key, shared, self._failed(self._timeout_failure))

    def _answered(
        self,
        key: tuple[str, int],
        shared: asyncio.Future[_Entry],
        deadline: asyncio.TimerHandle,
        query: asyncio.Future[pycares.AddrInfoResult],
    ) -> None:
        deadline.cancel()
        if shared.done():
            # The deadline came first (or close()); a late answer is still worth keeping.
            if not query.cancelled() and query.exception() is None:
                self._store(key, self._answer(query.result()))
            return
        error = None if query.cancelled() else query.exception()
        if query.cancelled() or (
            isinstance(error, aiodns.error.DNSError)
            and error.args[0] in (pycares.errno.ARES_ECANCELLED, pycares.errno.ARES_EDESTRUCTION)
        ):
            self._settle(key, shared, _Entry(0.0, (), _CLOSED), store=False)
        elif error is not None:
            self._settle(key, shared, self._failed(self._failure_of(error)))
        else:
            self._settle(key, shared, self._answer(query.result()))

    def _failure_of(self, error: BaseException) -> _Failure:
        code = error.args[0] if error.args else None
        if code == pycares.errno.ARES_ETIMEOUT:
            return self._timeout_failure
        if not isinstance(code, int):
            return socket.EAI_FAIL, f"DNS error: {error}"
        if code in _FAILURES:
            return _FAILURES[code]
        return socket.EAI_FAIL, f"DNS error: {error.args[1] if len(error.args) > 1 else code}"

    def _answer(self, result: pycares.AddrInfoResult) -> _Entry:
        addresses: list[str] = []
        for node in result.nodes:
            address = node.addr[0].decode("ascii")
            if node.family == socket.AF_INET6 and node.addr[3]:  # link-local: keep the zone
                address = f"{address}%{node.addr[3]}"
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            return self._failed(_FAILURES[pycares.errno.ARES_ENODATA])
        # An alias's TTL binds as much as the address records'.
        ttl = min([node.ttl for node in result.nodes] + [cname.ttl for cname in result.cnames])
        seconds = min(max(ttl, self.config.min_ttl_seconds), self.config.max_ttl_seconds)
        return _Entry(time.monotonic() + seconds, tuple(addresses), None)

    def _failed(self, failure: _Failure) -> _Entry:
        self.stats.failures += 1
        return _Entry(time.monotonic() + self.config.negative_ttl_seconds, (), failure)

    def _settle(
        self,
        key: tuple[str, int],
        shared: asyncio.Future[_Entry],
        entry: _Entry,
        *,
        store: bool = True,
    ) -> None:
        if self._pending.get(key) is shared:
            del self._pending[key]
        if store:
            self._store(key, entry)
        shared.set_result(entry)

    def _store(self, key: tuple[str, int], entry: _Entry) -> None:
        cache = self._cache
        cache.pop(key, None)  # re-inserted at the young end
        cache[key] = entry
        if len(cache) > self.config.cache_size:
            cache.popitem(last=False)
            self.stats.evictions += 1
