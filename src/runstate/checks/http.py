"""The HTTP(S) check: one request to a monitor's URL, following its redirects by hand.

Every check connects afresh, as a first-time visitor would: each request (the first and each
redirect hop) resolves the name, opens a new TCP connection and, for https, makes a full TLS
handshake that verifies the certificate; nothing is kept alive for the next. A reused
connection would hide a server that no longer accepts connections, or a certificate that
expired since the connection was opened.

Every connection goes through :func:`runstate.netguard.guarded_connector`, which checks the
address actually connected to (after DNS resolution, so DNS rebinding gains nothing) and
marks the connection's phases (:mod:`runstate.connection_phases`). Redirects are followed
here rather than by aiohttp so that each Location is resolved, limited to http/https and
counted.
"""

from __future__ import annotations

import codecs
import socket
import ssl
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from runstate import __version__
from runstate.checks.base import CheckResult, ErrorKind, Phases
from runstate.connection_phases import ConnectionPhases, recording
from runstate.domain.events import CheckJob
from runstate.netguard import TargetNotAllowed, guarded_connector, is_blocked_error

if TYPE_CHECKING:
    from runstate.checks.base import Check

USER_AGENT = f"runstate/{__version__} (+uptime check)"
MAX_BODY_BYTES = 1 << 20  # a keyword is looked for in the first MiB of the body only
_READ_CHUNK = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_SCHEMES = frozenset({"http", "https"})


class RedirectRefused(ValueError):
    """A redirect whose Location is not an http(s) URL with a host."""


class _TooManyRedirects(Exception):
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code  # of the last redirect


StatusRanges = tuple[tuple[int, int], ...]


@lru_cache(maxsize=256)
def parse_expected_status(text: str) -> StatusRanges:
    """``"200-299,418"`` -> ``((200, 299), (418, 418))``; codes within 100-599.

    Raises ValueError for anything else. Cached: every job of a monitor repeats its string.
    """
    ranges = []
    for part in text.split(","):
        low, dash, high = (piece.strip() for piece in part.partition("-"))
        valid = low.isdigit() and (high.isdigit() if dash else not high)
        if not valid or not 100 <= int(low) <= int(high or low) <= 599:
            raise ValueError(f"expected status {text!r}: {part.strip()!r} is not within 100-599")
        ranges.append((int(low), int(high or low)))
    return tuple(ranges)


def _is_expected(status: int, expected: StatusRanges) -> bool:
    return any(low <= status <= high for low, high in expected)


def _next_hop(current_url: str, location: str) -> str:
    """The URL a redirect leads to: ``location`` resolved against ``current_url``.

    Raises RedirectRefused unless the result is an http or https URL with a host.
    """
    try:
        target = URL(current_url).join(URL(location))
    except ValueError as exc:
        raise RedirectRefused("redirect to an invalid URL") from exc
    if target.scheme not in _SCHEMES:
        raise RedirectRefused(f"redirect to {target.scheme}: refused (only http and https)")
    if not target.raw_host:
        raise RedirectRefused("redirect to a URL without a host")
    return str(target)


def _method_after_redirect(method: str, status: int) -> str:
    # As browsers do (Fetch standard, HTTP-redirect fetch): 303 turns anything but GET and
    # HEAD into GET, 301 and 302 turn POST into GET, 307 and 308 keep the method.
    if (status == 303 and method not in ("GET", "HEAD")) or (
        status in (301, 302) and method == "POST"
    ):
        return "GET"
    return method


class HttpCheck:
    """The ``http`` check kind; build one per worker process and share it between jobs.

    One aiohttp session (created on first use, inside the running loop) and one TLS context
    serve every check, as building either costs more than a check; but no connection outlives
    its request (at most ``max_connections`` are open at once), and aiohttp's DNS cache is
    off: names are resolved by ``resolver`` (which may cache, honouring TTLs), else by the
    guard's default. TLS certificates are verified against the system's CAs, or against
    ``ssl_context`` when given (a private CA). No TLS session is resumed: Python's ssl resumes
    only a session handed to it, and asyncio hands none. Cookies are never kept.
    """

    def __init__(
        self,
        *,
        allow_private: bool,
        max_connections: int = 1000,
        max_redirects: int = 5,
        user_agent: str = USER_AGENT,
        ssl_context: ssl.SSLContext | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self._allow_private = allow_private
        self._max_connections = max_connections
        self._max_redirects = max_redirects
        self._user_agent = user_agent
        self._ssl_context = ssl_context
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = guarded_connector(
                allow_private=self._allow_private,
                resolver=self._resolver,  # wrapped by the guard; closed by whoever made it
                limit=self._max_connections,
                force_close=True,
                use_dns_cache=False,
                # aiohttp's default context (made once per process) when there is none given
                ssl=self._ssl_context if self._ssl_context is not None else True,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": self._user_agent},
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None),  # each request sets its own
                trust_env=False,  # no proxies: the guard would only see the proxy's address
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def run(self, job: CheckJob) -> CheckResult:
        """Request ``job.url`` with ``job.method`` and judge the final response.

        UP when the final status is in ``job.expected_status`` and, if ``job.keyword`` is
        set, the keyword occurs in the first MiB of the body (decoded with the response's
        charset, else UTF-8). ``job.timeout_ms`` bounds the whole exchange, redirects and
        body included. ``response_time_ms`` runs from the first request to the final
        response's headers, or, with a keyword, to the end of reading its body (which stops
        as soon as the keyword is found). Without a keyword the body is never read.

        The phases (DOWN results too, as far as the check got) are those of the last request
        made: the final one after redirects, or the one that failed. ``dns_ms`` is None for
        an IP literal; a name answered from the resolver's cache is timed all the same
        (about 0). ``tls_ms`` is None for http and for a handshake that failed; ``ttfb_ms``
        runs from the ready connection to the response's headers. ``cert_expires_at`` is
        the soonest notAfter of the leaf certificates of all the https requests made (a
        visitor passes every hop). A timeout is classified by the phase it cut short: while
        resolving, it is a DNS failure.
        """
        try:
            expected = parse_expected_status(job.expected_status)
        except ValueError as exc:
            return CheckResult.down(ErrorKind.STATUS, str(exc))
        started = time.perf_counter()
        progress = _Progress()
        try:
            deadline = started + job.timeout_ms / 1000
            status_code, found = await self._fetch(job, expected, deadline, progress)
        except _TooManyRedirects as exc:
            message = f"more than {self._max_redirects} redirects"
            return CheckResult.down(
                ErrorKind.REDIRECTS, message, status_code=exc.status_code, phases=progress.phases()
            )
        except RedirectRefused as exc:
            return CheckResult.down(ErrorKind.REDIRECTS, str(exc), phases=progress.phases())
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            kind, message = _classify(exc, job.timeout_ms, progress)
            return CheckResult.down(kind, message, phases=progress.phases())
        elapsed_ms = round((time.perf_counter() - started) * 1000)
        phases = progress.phases()
        if not _is_expected(status_code, expected):
            message = f"status {status_code} not in {job.expected_status}"
            return CheckResult.down(
                ErrorKind.STATUS,
                message,
                response_time_ms=elapsed_ms,
                status_code=status_code,
                phases=phases,
            )
        if found is False:
            message = f"keyword {job.keyword!r} not found"
            return CheckResult.down(
                ErrorKind.KEYWORD,
                message,
                response_time_ms=elapsed_ms,
                status_code=status_code,
                phases=phases,
            )
        return CheckResult.up(response_time_ms=elapsed_ms, status_code=status_code, phases=phases)

    async def _fetch(
        self, job: CheckJob, expected: StatusRanges, deadline: float, progress: _Progress
    ) -> tuple[int, bool | None]:
        """The final status code and whether the keyword is in the body (None when there is
        no keyword, or the status is not expected so the body is left unread)."""
        session = self._client()
        url, method = job.url, job.method.upper()
        for _ in range(self._max_redirects + 1):
            phases = progress.next_request()
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError
            with recording(phases):
                async with session.request(
                    method,
                    url,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=remaining),
                ) as response:
                    progress.headers_at = time.perf_counter()
                    status, location = response.status, response.headers.get("Location")
                    if status in _REDIRECTS and location is not None:
                        url = _next_hop(url, location)
                        method = _method_after_redirect(method, status)
                        continue
                    if job.keyword is None or not _is_expected(status, expected):
                        return status, None
                    return status, await _body_contains(response, job.keyword)
        raise _TooManyRedirects(status)


@dataclass(slots=True)
class _Progress:
    """How far one check got: the phases of its latest request's connection, when that
    request's response headers arrived, and the soonest certificate expiry of the requests
    before it."""

    connection: ConnectionPhases = field(default_factory=ConnectionPhases)
    headers_at: float | None = None
    earlier_cert_expiry: datetime | None = None

    def next_request(self) -> ConnectionPhases:
        self.earlier_cert_expiry = self._cert_expiry()
        self.connection, self.headers_at = ConnectionPhases(), None
        return self.connection

    def phases(self) -> Phases:
        c = self.connection
        return Phases(
            dns_ms=_ms(c.dns_started, c.dns_done),
            connect_ms=_ms(c.connect_started, c.connected),
            tls_ms=_ms(c.connected, c.ready) if c.tls else None,
            ttfb_ms=_ms(c.ready, self.headers_at),
            cert_expires_at=self._cert_expiry(),
        )

    def _cert_expiry(self) -> datetime | None:
        current = _not_after(self.connection.certificate)
        if current is None or self.earlier_cert_expiry is None:
            return current or self.earlier_cert_expiry
        return min(current, self.earlier_cert_expiry)


def _ms(start: float | None, end: float | None) -> int | None:
    return None if start is None or end is None else round((end - start) * 1000)


def _not_after(certificate: dict[str, Any] | None) -> datetime | None:
    not_after = certificate.get("notAfter") if certificate else None
    return _parse_cert_time(not_after) if isinstance(not_after, str) else None


@lru_cache(maxsize=4096)  # a monitor's certificate is the same check after check
def _parse_cert_time(text: str) -> datetime:
    return datetime.fromtimestamp(ssl.cert_time_to_seconds(text), UTC)


async def _body_contains(response: aiohttp.ClientResponse, keyword: str) -> bool:
    """Whether ``keyword`` occurs in the first MAX_BODY_BYTES of the decoded body."""
    decoder = codecs.getincrementaldecoder(_text_charset(response))(errors="replace")
    keep = len(keyword) - 1  # enough of the previous text to find a keyword split by a chunk
    text, size = "", 0
    while size < MAX_BODY_BYTES:
        chunk = await response.content.read(min(_READ_CHUNK, MAX_BODY_BYTES - size))
        if not chunk:
            break
        size += len(chunk)
        text = text[max(len(text) - keep, 0) :] + decoder.decode(chunk)
        if keyword in text:
            return True
    return keyword in text[max(len(text) - keep, 0) :] + decoder.decode(b"", final=True)


def _text_charset(response: aiohttp.ClientResponse) -> str:
    charset = response.charset or "utf-8"
    try:
        b"".decode(charset)  # refuses unknown names and bytes-to-bytes codecs alike
    except (LookupError, ValueError):
        return "utf-8"
    return charset


def _classify(exc: BaseException, timeout_ms: int, progress: _Progress) -> tuple[ErrorKind, str]:
    """The kind and one-line message for a failed request. Messages are built from the error's
    parts, not str(exc), which for some aiohttp errors includes the full URL."""
    if is_blocked_error(exc):
        refusal = exc if isinstance(exc, TargetNotAllowed) else exc.__cause__
        known = isinstance(refusal, TargetNotAllowed)
        return ErrorKind.BLOCKED, str(refusal) if known else "refused by the SSRF guard"
    if isinstance(exc, TimeoutError):
        return _timeout(timeout_ms, progress)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return ErrorKind.TLS, _tls_message(exc.certificate_error)
    if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
        return ErrorKind.TLS, _tls_message(getattr(exc, "os_error", exc))
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.os_error.strerror or type(exc.os_error).__name__
        if isinstance(exc, aiohttp.ClientConnectorDNSError) or isinstance(
            exc.os_error, socket.gaierror
        ):
            return ErrorKind.DNS, f"DNS: {exc.host} does not resolve ({reason})"
        if isinstance(exc.os_error, ConnectionRefusedError):
            return ErrorKind.REFUSED, f"connection refused by {exc.host} port {exc.port}"
        return ErrorKind.CONNECTION, f"cannot connect to {exc.host} port {exc.port}: {reason}"
    return ErrorKind.CONNECTION, _connection_message(exc)


def _timeout(timeout_ms: int, progress: _Progress) -> tuple[ErrorKind, str]:
    """A timeout, by the phase it cut short: while resolving, the name's servers did not
    answer in time, a DNS failure; otherwise the target's."""
    connection = progress.connection
    phase = connection.phase
    if phase == "dns":
        return ErrorKind.DNS, f"DNS: no answer for {connection.host} within {timeout_ms} ms"
    if phase == "ready":
        waiting = "waiting for the response" if progress.headers_at is None else "reading the body"
    else:
        waiting = _WAITING[phase]
    return ErrorKind.TIMEOUT, f"timeout after {timeout_ms} ms {waiting}"


_WAITING = {"waiting": "before connecting", "connect": "connecting", "tls": "during TLS handshake"}


def _tls_message(error: BaseException) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        return f"TLS: {error.reason or error.strerror or type(error).__name__}"
    return f"TLS: {error}"


def _connection_message(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server closed the connection without a response"
    if isinstance(exc, aiohttp.ClientResponseError):
        first_line = next(iter(exc.message.strip().splitlines()), "unreadable")
        return f"invalid HTTP response: {first_line}"
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return "invalid URL (only http and https URLs with a host)"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "response body ended early or is malformed"
    if isinstance(exc, OSError) and exc.strerror:
        return f"connection error: {exc.strerror}"
    return f"connection error: {type(exc).__name__}"


if TYPE_CHECKING:
    _satisfies_the_protocol: Check = HttpCheck(allow_private=False)
