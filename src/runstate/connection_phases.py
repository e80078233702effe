"""When an outgoing connection reached each of its phases: name resolved, TCP connected, TLS
handshake done.

aiohttp's request traces mark the DNS lookup and the connection as a whole, never the moment
between the TCP connect and the TLS handshake, which only the connector sees. So the
connector marks every phase itself: :class:`TimedConnector` (the base of
runstate.netguard's guarded connector) writes the moments of each connection it makes into
the :class:`ConnectionPhases` that the current task handed it with :func:`recording`. One
mechanism for all the phases, and cheaper than aiohttp's TraceConfig, which costs a Trace
object and an await per signal per request. A connection made outside ``recording`` costs
one ContextVar lookup.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

import aiohappyeyeballs
import aiohttp
from aiohttp.abc import ResolveResult
from aiohttp.client_proto import ResponseHandler
from aiohttp.helpers import ceil_timeout, is_ip_address
from aiohttp.tracing import Trace

Phase = Literal["waiting", "dns", "connect", "tls", "ready"]


@dataclass(slots=True)
class ConnectionPhases:
    """The moments (``time.perf_counter()``) the latest connection made while recording
    reached; None where it has not (yet). A connection to an IP literal has no DNS phase."""

    host: str | None = None  # the name looked up
    dns_started: float | None = None
    dns_done: float | None = None
    connect_started: float | None = None
    connected: float | None = None  # TCP established
    tls: bool = False  # a TLS handshake follows the TCP connect
    ready: float | None = None  # for the request: handshake done, or connected without TLS
    certificate: dict[str, Any] | None = None  # the verified peer's, as getpeercert() has it

    @property
    def phase(self) -> Phase:
        """The phase in progress: "waiting" before the first, "ready" after the last."""
        if self.ready is not None:
            return "ready"
        if self.connected is not None:
            return "tls"
        if self.dns_started is not None and self.dns_done is None:
            return "dns"
        if self.connect_started is not None or self.dns_done is not None:
            return "connect"
        return "waiting"


_recording: ContextVar[ConnectionPhases | None] = ContextVar(
    "runstate_connection_phases", default=None
)


@contextmanager
def recording(phases: ConnectionPhases) -> Iterator[ConnectionPhases]:
    """Within the block (and the tasks it starts), connections mark their phases in
    ``phases``; a later connection overwrites an earlier one's moments."""
    token = _recording.set(phases)
    try:
        yield phases
    finally:
        _recording.reset(token)


class TimedConnector(aiohttp.TCPConnector):
    """A TCPConnector that marks the phases of each connection it makes while recording.

    It connects as aiohttp does (``TCPConnector._wrap_create_connection`` of aiohttp 3.14,
    same timeouts and errors), marking the moment the TCP connection is up before the TLS
    handshake starts. Without recording it is aiohttp's connector unchanged.
    """

    async def _resolve_host(
        self, host: str, port: int, traces: Sequence[Trace] | None = None
    ) -> list[ResolveResult]:
        phases = _recording.get()
        if phases is None or is_ip_address(host):
            return await super()._resolve_host(host, port, traces)
        phases.host, phases.dns_started = host, time.perf_counter()
        results = await super()._resolve_host(host, port, traces)
        phases.dns_done = time.perf_counter()
        return results

    async def _wrap_create_connection(
        self,
        *args: Any,
        addr_infos: list[aiohappyeyeballs.AddrInfoType],
        req: aiohttp.ClientRequest,
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 (aiohttp's signature)
        client_error: type[Exception] = aiohttp.ClientConnectorError,
        **kwargs: Any,
    ) -> tuple[asyncio.Transport, ResponseHandler]:
        phases = _recording.get()
        if phases is None:
            return await super()._wrap_create_connection(
                *args,
                addr_infos=addr_infos,
                req=req,
                timeout=timeout,
                client_error=client_error,
                **kwargs,
            )
        # aiohttp calls this once per address it tries: each attempt starts from scratch,
        # or a failed attempt's moments would be taken for this one's.
        phases.connected = phases.ready = phases.certificate = None
        phases.tls = bool(kwargs.get("ssl"))
        try:
            async with ceil_timeout(timeout.sock_connect, ceil_threshold=timeout.ceil_threshold):
                phases.connect_started = time.perf_counter()
                sock = await aiohappyeyeballs.start_connection(
                    addr_infos=addr_infos,
                    local_addr_infos=self._local_addr_infos,
                    happy_eyeballs_delay=self._happy_eyeballs_delay,
                    interleave=self._interleave,
                    loop=self._loop,
                    socket_factory=self._socket_factory,
                )
                phases.connected = time.perf_counter()
                if phases.tls and self._ssl_shutdown_timeout:
                    kwargs["ssl_shutdown_timeout"] = self._ssl_shutdown_timeout
                transport, protocol = await self._loop.create_connection(*args, **kwargs, sock=sock)
                phases.ready = time.perf_counter()
        except ssl.CertificateError as exc:
            raise aiohttp.ClientConnectorCertificateError(req.connection_key, exc) from exc
        except ssl.SSLError as exc:
            raise aiohttp.ClientConnectorSSLError(req.connection_key, exc) from exc
        except OSError as exc:
            if exc.errno is None and isinstance(exc, asyncio.TimeoutError):
                raise
            raise client_error(req.connection_key, exc) from exc
        if phases.tls:
            phases.certificate = transport.get_extra_info("peercert")
        return transport, protocol
