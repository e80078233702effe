"""A small authoritative DNS server on loopback, for tests that must resolve names for real.

It answers every name over UDP and TCP on one port: A and AAAA records from ``records``
(an IPv4 address gives an A record, an IPv6 address an AAAA record), NOERROR with no answer
(NODATA) for a known name asked for the other type, and NXDOMAIN for every other name. It
never answers a name in ``silent``, nor any name below one (the query is read and dropped, as
an unreachable authoritative server would leave a resolver waiting). A name in ``delays`` is
answered that many seconds after its first query, as a recursive resolver answers every
query that came in while it was looking the name up. Negative answers carry
an SOA whose minimum is ``negative_ttl``, as a real zone's do.

Mind the resolver's own caches: c-ares keeps an answer for its record's TTL and an NXDOMAIN
for the SOA minimum. So ``negative_ttl`` is 0 by default (a name added later is seen as soon
as the code under test asks again), and a test that changes a record should give it a
short ``ttl``.

Every query is counted by name in ``queries`` (and by name and type in ``queries_by_type``),
so a test can prove that a resolver cached an answer. Records, TTLs and the silent set are
plain attributes and may be changed while the server runs::

    async with LocalDnsServer({"a.test": ["127.0.0.1"]}, silent={"hang.test"}, ttl=60) as dns:
        dns.address              # "127.0.0.1:PORT", the form DNS_SERVERS takes
        dns.queries["a.test"]    # queries received for a.test, of any type
        dns.set_records("a.test", ["127.0.0.2"], ttl=1)
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import Counter
from collections.abc import Iterable, Mapping
from ipaddress import IPv6Address, ip_address
from types import TracebackType
from typing import Self, cast

from dnslib import AAAA, QTYPE, RCODE, RR, SOA, A, DNSError, DNSRecord

__all__ = ["LocalDnsServer", "normalise"]


def normalise(name: str) -> str:
    """The form names are kept and counted in: lower case, without the trailing dot."""
    return name.lower().rstrip(".")


class LocalDnsServer:
    """An authoritative DNS server for tests; see the module docstring for what it answers."""

    def __init__(
        self,
        records: Mapping[str, Iterable[str]] | None = None,
        *,
        silent: Iterable[str] = (),
        ttl: int = 60,
        negative_ttl: int = 0,
        host: str = "127.0.0.1",
    ) -> None:
        self.records: dict[str, list[str]] = {
            normalise(name): list(addresses) for name, addresses in (records or {}).items()
        }
        self.ttls: dict[str, int] = {}  # per-name TTLs; others get ``ttl``
        self.silent: set[str] = {normalise(name) for name in silent}
        self.delays: dict[str, float] = {}  # normalised name -> seconds to its first answer
        self._first_asked: dict[str, float] = {}
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.queries: Counter[str] = Counter()
        self.queries_by_type: Counter[tuple[str, str]] = Counter()
        self.host = host
        self.port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tcp_clients: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        """``host:port`` (``[host]:port`` for IPv6), as DNS_SERVERS takes it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def set_records(self, name: str, addresses: Iterable[str], *, ttl: int | None = None) -> None:
        """Serve ``addresses`` for ``name`` from now on (with ``ttl`` if given)."""
        key = normalise(name)
        self.records[key] = list(addresses)
        if ttl is None:
            self.ttls.pop(key, None)
        else:
            self.ttls[key] = ttl

    def remove(self, name: str) -> None:
        """Answer NXDOMAIN for ``name`` from now on."""
        self.records.pop(normalise(name), None)
        self.ttls.pop(normalise(name), None)

    def is_silent(self, name: str) -> bool:
        name = normalise(name)
        return any(name == s or name.endswith(f".{s}") for s in self.silent)

    def delay_of(self, reply: bytes) -> float:
        """How long to hold ``reply`` back: until its name's delay after its first query."""
        if not self.delays:
            return 0.0
        name = normalise(str(DNSRecord.parse(reply).q.qname))
        if name not in self.delays:
            return 0.0
        now = asyncio.get_running_loop().time()
        first = self._first_asked.setdefault(name, now)
        return max(0.0, first + self.delays[name] - now)

    def answer(self, packet: bytes) -> bytes | None:
        """The reply to one query message; None to drop it (silent names, garbage)."""
        try:
            request = DNSRecord.parse(packet)
        except DNSError:
            return None
        name, qtype = normalise(str(request.q.qname)), QTYPE.get(request.q.qtype, "?")
        self.queries[name] += 1
        self.queries_by_type[name, qtype] += 1
        if self.is_silent(name):
            return None
        reply = request.reply()  # authoritative, recursion available
        addresses = self.records.get(name)
        if addresses is None:
            reply.header.rcode = RCODE.NXDOMAIN
        ttl = self.ttls.get(name, self.ttl)
        for text in addresses or ():
            is_v6 = isinstance(ip_address(text), IPv6Address)
            if qtype == ("AAAA" if is_v6 else "A"):
                rdata = AAAA(text) if is_v6 else A(text)
                reply.add_answer(RR(request.q.qname, request.q.qtype, rdata=rdata, ttl=ttl))
        if not reply.rr:
            times = (1, 3600, 600, 86_400, self.negative_ttl)
            soa = SOA("ns.invalid.", "hostmaster.invalid.", times)
            reply.add_auth(RR(request.q.qname, QTYPE.SOA, rdata=soa, ttl=self.negative_ttl))
        return bytes(reply.pack())

    async def start(self) -> Self:
        """Listen on ``host``, UDP and TCP on one free port."""
        loop = asyncio.get_running_loop()
        for _ in range(20):  # the UDP port may be taken for TCP by another process
            self._udp, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(self.host, 0)
            )
            self.port = self._udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self.host, self.port)
            except OSError:
                self._udp.close()
                continue
            return self
        raise OSError(f"no free port on {self.host} for both UDP and TCP")

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            for writer in self._tcp_clients:  # silent names keep theirs open
                writer.close()
            await self._tcp.wait_closed()

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tcp_clients.add(writer)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                reply = self.answer(await reader.readexactly(length))
                if reply is not None:
                    await asyncio.sleep(self.delay_of(reply))
                    writer.write(struct.pack("!H", len(reply)) + reply)
                    await writer.drain()
        self._tcp_clients.discard(writer)
        writer.close()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: LocalDnsServer) -> None:
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | bytes | int, ...]) -> None:
        reply = self._server.answer(data)
        if reply is not None and self._transport is not None:
            delay = self._server.delay_of(reply)
            asyncio.get_running_loop().call_later(delay, self._transport.sendto, reply, addr)
