"""Tests that every HTTP check connects afresh and records its phases, against real servers on
loopback: raw asyncio HTTP servers that keep connections alive (so a client that reused one
would be caught), TLS with trustme certificates, and names served by a real DNS server.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import trustme

from runstate.checks import ErrorKind
from runstate.checks.http import HttpCheck
from runstate.domain.status import Status
from runstate.resolve import CachingResolver, DnsConfig
from tests.checks.test_http import SECRET, assert_down, job, server_context
from tests.dns_server import LocalDnsServer

NAME = "site.test"  # served by the local DNS server, and the name on the certificates


class KeepAliveServer:
    """An HTTP/1.1 server on 127.0.0.1 (TLS when given a context) that answers "ok" to every
    request and keeps each connection open until the client closes it.

    Counts the connections it accepted (after the handshake, with TLS) and whether each TLS
    session was resumed."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.context = context
        self.connections = 0
        self.resumed: list[bool] = []
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def __aenter__(self) -> KeepAliveServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.stop_listening()
        for writer in list(self._open):
            writer.close()

    def stop_listening(self) -> None:
        """Close the listening socket; the connections already accepted stay open."""
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        tls = writer.get_extra_info("ssl_object")
        if tls is not None:
            self.resumed.append(tls.session_reused)
        self._open.add(writer)
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        self._open.discard(writer)
        writer.close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
async def resolver(dns_server: LocalDnsServer) -> AsyncIterator[CachingResolver]:
    """The checks' resolver, asking the local DNS server, which serves NAME as 127.0.0.1."""
    dns_server.set_records(NAME, ["127.0.0.1"])
    made = CachingResolver(DnsConfig(servers=(dns_server.address,)))
    yield made
    await made.close()


async def test_two_checks_of_one_monitor_open_two_connections() -> None:
    check = HttpCheck(allow_private=True)
    async with KeepAliveServer() as server:
        url = f"http://127.0.0.1:{server.port}/"
        results = [await check.run(job(url)), await check.run(job(url))]
        await check.aclose()
    assert [r.status for r in results] == [Status.UP, Status.UP]
    assert server.connections == 2


async def test_two_https_checks_make_two_full_handshakes(ca: trustme.CA) -> None:
    check = HttpCheck(allow_private=True, ssl_context=trusting(ca))
    # The server's default context issues session tickets: a client could resume.
    async with KeepAliveServer(server_context(ca.issue_cert("127.0.0.1"))) as server:
        url = f"https://127.0.0.1:{server.port}/"
        results = [await check.run(job(url)), await check.run(job(url))]
        await check.aclose()
    assert [r.status for r in results] == [Status.UP, Status.UP]
    assert server.resumed == [False, False]


async def test_a_certificate_that_expired_since_the_last_check_is_caught(
    ca: trustme.CA,
) -> None:
    context = server_context(ca.issue_cert("127.0.0.1"))
    check = HttpCheck(allow_private=True, ssl_context=trusting(ca))
    async with KeepAliveServer(context) as server:
        url = f"https://127.0.0.1:{server.port}/"
        first = await check.run(job(url))
        past = datetime.now(UTC) - timedelta(days=1)
        expired = ca.issue_cert("127.0.0.1", not_before=past - timedelta(days=30), not_after=past)
        expired.configure_cert(context)  # new handshakes get the expired certificate
        second = await check.run(job(url))
        await check.aclose()
    assert first.status is Status.UP, first
    assert_down(second, ErrorKind.TLS)
    assert "expired" in (second.error or "")


async def test_a_server_that_stops_accepting_connections_is_down_at_once() -> None:
    check = HttpCheck(allow_private=True)
    async with KeepAliveServer() as server:
        url = f"http://127.0.0.1:{server.port}/?token={SECRET}"
        first = await check.run(job(url))
        # A visitor's kept-alive connection still works; a new visitor's is refused.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        server.stop_listening()
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200")
        second = await check.run(job(url))
        writer.close()
        await check.aclose()
    assert first.status is Status.UP, first
    assert_down(second, ErrorKind.REFUSED)


async def test_https_records_every_phase_and_the_certificate_expiry(
    ca: trustme.CA, resolver: CachingResolver
) -> None:
    not_after = datetime.now(UTC).replace(microsecond=0) + timedelta(days=45)
    cert = ca.issue_cert(NAME, not_after=not_after)
    check = HttpCheck(allow_private=True, ssl_context=trusting(ca), resolver=resolver)
    async with KeepAliveServer(server_context(cert)) as server:
        result = await check.run(job(f"https://{NAME}:{server.port}/"))
        await check.aclose()
    assert result.status is Status.UP, result
    for phase in (result.dns_ms, result.connect_ms, result.tls_ms, result.ttfb_ms):
        assert phase is not None
        assert 0 <= phase < 1000
    assert result.cert_expires_at == not_after


async def test_plain_http_records_no_tls_phase(resolver: CachingResolver) -> None:
    check = HttpCheck(allow_private=True, resolver=resolver)
    async with KeepAliveServer() as server:
        result = await check.run(job(f"http://{NAME}:{server.port}/"))
        await check.aclose()
    assert result.status is Status.UP, result
    assert None not in (result.dns_ms, result.connect_ms, result.ttfb_ms)
    assert (result.tls_ms, result.cert_expires_at) == (None, None)


async def test_an_ip_literal_has_no_dns_phase() -> None:
    check = HttpCheck(allow_private=True)
    async with KeepAliveServer() as server:
        result = await check.run(job(f"http://127.0.0.1:{server.port}/"))
        await check.aclose()
    assert result.dns_ms is None
    assert None not in (result.connect_ms, result.ttfb_ms)


async def test_a_down_response_keeps_its_phases(ca: trustme.CA) -> None:
    check = HttpCheck(allow_private=True, ssl_context=trusting(ca))
    async with KeepAliveServer(server_context(ca.issue_cert("127.0.0.1"))) as server:
        result = await check.run(job(f"https://127.0.0.1:{server.port}/", keyword="absent"))
        await check.aclose()
    assert_down(result, ErrorKind.KEYWORD)
    assert None not in (result.connect_ms, result.tls_ms, result.ttfb_ms, result.cert_expires_at)


async def test_a_timeout_while_resolving_is_a_dns_failure(
    dns_server: LocalDnsServer, resolver: CachingResolver
) -> None:
    dns_server.silent.add("hang.test")
    check = HttpCheck(allow_private=True, resolver=resolver)
    result = await check.run(job(f"http://hang.test/?token={SECRET}", timeout_ms=300))
    await check.aclose()
    assert_down(result, ErrorKind.DNS)
    assert result.error == "DNS: no answer for hang.test within 300 ms"
    assert (result.dns_ms, result.connect_ms) == (None, None)


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A loopback port that accepts TCP connections but never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


async def test_a_timeout_during_the_tls_handshake_says_so(
    ca: trustme.CA, resolver: CachingResolver, silent_listener: int
) -> None:
    check = HttpCheck(allow_private=True, ssl_context=trusting(ca), resolver=resolver)
    result = await check.run(job(f"https://{NAME}:{silent_listener}/", timeout_ms=300))
    await check.aclose()
    assert_down(result, ErrorKind.TIMEOUT)
    assert result.error == "timeout after 300 ms during TLS handshake"
    assert None not in (result.dns_ms, result.connect_ms)
    assert (result.tls_ms, result.ttfb_ms) == (None, None)


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A loopback port whose accept queue is full: Linux drops further SYNs, so a new
    connection hangs in the TCP handshake as if the host were unreachable."""
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        for _ in range(2):  # a backlog of 0 still queues one; the second waits unacknowledged
            client = stack.enter_context(socket.socket())
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", port))
        yield port


async def test_a_timeout_while_connecting_says_so(full_backlog: int) -> None:
    check = HttpCheck(allow_private=True)
    result = await check.run(job(f"http://127.0.0.1:{full_backlog}/", timeout_ms=300))
    await check.aclose()
    assert_down(result, ErrorKind.TIMEOUT)
    assert result.error == "timeout after 300 ms connecting"
    assert result.connect_ms is None
