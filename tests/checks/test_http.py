"""Tests of the HTTP check against real servers on loopback (aiohttp, raw asyncio, TLS).

Loopback targets need HttpCheck(allow_private=True); the SSRF guard is proved separately
with allow_private=False. There is no internet here: nothing may depend on a public name.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trustme
from aiohttp import web
from aiohttp.test_utils import TestServer

from runstate.checks import CHECKS, CheckResult, ErrorKind, check_class
from runstate.checks.http import (
    MAX_BODY_BYTES,
    USER_AGENT,
    HttpCheck,
    RedirectRefused,
    _next_hop,
    parse_expected_status,
)
from runstate.domain.events import CheckJob
from runstate.domain.status import Status

SECRET = "s3cr3t-token"  # put in every target URL's query; must never reach an error
KEYWORD_AT_START = b"<html>needle" + b"x" * (5 * MAX_BODY_BYTES)
KEYWORD_PAST_LIMIT = b"x" * MAX_BODY_BYTES + b"needle"


def job(url: str, **changes: Any) -> CheckJob:
    fields: dict[str, Any] = {
        "website_id": uuid.uuid4(),
        "url": url,
        "method": "GET",
        "timeout_ms": 2000,
        "expected_status": "200-399",
        "keyword": None,
        "confirmations": 1,
        "recovery_confirmations": 1,
        "interval_seconds": 60,
        "scheduled_at": datetime.now(UTC),
    }
    return CheckJob(**(fields | changes))


def reply(
    make: Callable[[web.Request], web.StreamResponse],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return make(request)

    return handler


class Target:
    """An aiohttp server on 127.0.0.1 with one route per behaviour under test."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []  # (method, path) of every request received
        self.user_agents: list[str] = []
        self.cookies: list[str] = []
        self.release = asyncio.Event()  # lets stalled handlers finish at teardown
        self.app = web.Application(middlewares=[self._record])
        get, any_ = self.app.router.add_get, self.app.router.add_route
        get("/ok", reply(lambda r: self._text("hello, all is ok")))
        get("/slow-ok", self._slow_ok)
        get("/status/{code}", reply(lambda r: web.Response(status=int(r.match_info["code"]))))
        get("/stall", self._stall)
        get("/stall-body", self._stall_body)
        get("/body/start", reply(lambda r: web.Response(body=KEYWORD_AT_START)))
        get("/body/past-limit", reply(lambda r: web.Response(body=KEYWORD_PAST_LIMIT)))
        get("/body/split", reply(lambda r: web.Response(body=b"y" * (64 * 1024 - 3) + b"needle")))
        get("/body/endless", self._endless)
        get("/latin1", self._latin1)
        get("/hop/{n}", self._hop)
        get("/loop", reply(lambda r: self._redirect(302, "/loop")))
        get("/to-ftp", reply(lambda r: self._redirect(302, "ftp://files.example/")))
        get("/set-cookie", self._set_cookie)
        any_(
            "*",
            "/redirect/{code}",
            reply(lambda r: self._redirect(int(r.match_info["code"]), "/method")),
        )
        any_("*", "/method", reply(lambda r: self._text(f"method={r.method}")))

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.seen.append((request.method, request.path))
        self.user_agents.append(request.headers.get("User-Agent", ""))
        self.cookies.append(request.headers.get("Cookie", ""))
        response: web.StreamResponse = await handler(request)
        return response

    @staticmethod
    def _text(text: str) -> web.Response:
        return web.Response(text=text)

    @staticmethod
    def _redirect(code: int, location: str) -> web.Response:
        return web.Response(status=code, headers={"Location": location})

    async def _slow_ok(self, request: web.Request) -> web.Response:
        await asyncio.sleep(0.1)
        return self._text("ok")

    async def _stall(self, request: web.Request) -> web.Response:
        await self.release.wait()
        return self._text("too late")

    async def _stall_body(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"the start of the body, then nothing")
        await self.release.wait()
        return response

    async def _endless(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        chunk = b"z" * 65536
        try:
            while not self.release.is_set():  # until the client hangs up
                await response.write(chunk)
        except ConnectionError:
            pass
        return response

    async def _latin1(self, request: web.Request) -> web.Response:
        body = "un café".encode("latin-1")
        return web.Response(body=body, content_type="text/plain", charset="iso-8859-1")

    async def _hop(self, request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if n == 0:
            return self._text("arrived")
        # One relative and one absolute Location, to resolve both kinds.
        location = f"/hop/{n - 1}" if n % 2 else str(request.url.with_path(f"/hop/{n - 1}"))
        return self._redirect(302, location)

    async def _set_cookie(self, request: web.Request) -> web.Response:
        response = self._text("cookie set")
        response.set_cookie("session", "abc")
        return response


@pytest.fixture
async def target() -> AsyncIterator[tuple[Target, str]]:
    served = Target()
    async with TestServer(served.app, host="127.0.0.1", port=0) as server:
        yield served, f"http://127.0.0.1:{server.port}"
        served.release.set()


@pytest.fixture
async def check() -> AsyncIterator[HttpCheck]:
    made = HttpCheck(allow_private=True)
    yield made
    await made.aclose()


def assert_down(result: CheckResult, kind: ErrorKind) -> None:
    assert (result.status, result.error_kind) == (Status.DOWN, kind), result
    assert result.error
    assert "\n" not in result.error
    assert SECRET not in result.error


async def test_a_200_is_up_with_its_response_time_measured(target: Any, check: HttpCheck) -> None:
    served, base = target
    result = await check.run(job(f"{base}/slow-ok?token={SECRET}"))
    assert (result.status, result.status_code, result.error_kind) == (Status.UP, 200, None)
    assert result.response_time_ms is not None
    assert 100 <= result.response_time_ms < 1000
    assert served.user_agents == [USER_AGENT]
    assert USER_AGENT.startswith("runstate/")


async def test_a_503_is_down_with_the_status_code(target: Any, check: HttpCheck) -> None:
    _, base = target
    result = await check.run(job(f"{base}/status/503"))
    assert_down(result, ErrorKind.STATUS)
    assert result.status_code == 503
    assert result.error == "status 503 not in 200-399"
    assert None not in (result.response_time_ms, result.connect_ms, result.ttfb_ms)


async def test_expected_status_accepts_each_listed_range_and_code(
    target: Any, check: HttpCheck
) -> None:
    _, base = target
    accepts = job(f"{base}/status/418", expected_status="200-299,418")
    assert (await check.run(accepts)).status is Status.UP
    refuses = job(f"{base}/status/302", expected_status="200-299,418")
    assert_down(await check.run(refuses), ErrorKind.STATUS)


def test_parse_expected_status_reads_codes_and_ranges() -> None:
    assert parse_expected_status("200-399") == ((200, 399),)
    assert parse_expected_status("200-299,418") == ((200, 299), (418, 418))
    assert parse_expected_status(" 200 , 301 - 302 ") == ((200, 200), (301, 302))


@pytest.mark.parametrize(
    "text",
    ["", "ok", "200-", "-200", "399-200", "99", "600", "200,,300", "2xx", "200-2x9", "1-2-3"],
)
def test_parse_expected_status_refuses_malformed_text(text: str) -> None:
    with pytest.raises(ValueError, match="expected status"):
        parse_expected_status(text)


async def test_an_unparseable_expected_status_is_down_without_a_request(
    target: Any, check: HttpCheck
) -> None:
    served, base = target
    assert_down(await check.run(job(f"{base}/ok", expected_status="2xx")), ErrorKind.STATUS)
    assert served.seen == []


@pytest.mark.parametrize(
    ("path", "keyword", "up"),
    [
        ("/ok", "all is ok", True),
        ("/ok", "error", False),
        ("/body/start", "needle", True),  # a large body: found in its first part
        ("/body/past-limit", "needle", False),  # only the first MiB is searched
        ("/body/split", "needle", True),  # across the boundary of two reads
        ("/latin1", "café", True),  # decoded with the response's charset
    ],
)
async def test_the_keyword_decides_up_or_down(
    target: Any, check: HttpCheck, path: str, keyword: str, up: bool
) -> None:
    _, base = target
    result = await check.run(job(f"{base}{path}", keyword=keyword))
    if up:
        assert (result.status, result.status_code) == (Status.UP, 200), result
    else:
        assert_down(result, ErrorKind.KEYWORD)
        assert result.error == f"keyword {keyword!r} not found"
        assert result.status_code == 200


async def test_an_endless_body_is_read_only_as_far_as_needed(target: Any, check: HttpCheck) -> None:
    _, base = target
    started = time.perf_counter()
    assert (await check.run(job(f"{base}/body/endless"))).status is Status.UP
    assert_down(await check.run(job(f"{base}/body/endless", keyword="a")), ErrorKind.KEYWORD)
    assert time.perf_counter() - started < 1.5  # neither waited for the 2 s timeout


@pytest.mark.parametrize(
    ("path", "keyword", "waiting"),
    [("/stall", None, "waiting for the response"), ("/stall-body", "never", "reading the body")],
)
async def test_a_slow_target_times_out_within_the_timeout(
    target: Any, check: HttpCheck, path: str, keyword: str | None, waiting: str
) -> None:
    _, base = target
    started = time.perf_counter()
    result = await check.run(job(f"{base}{path}?token={SECRET}", timeout_ms=300, keyword=keyword))
    elapsed = time.perf_counter() - started
    assert_down(result, ErrorKind.TIMEOUT)
    assert result.error == f"timeout after 300 ms {waiting}"
    assert 0.25 < elapsed < 0.8


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port bound but not listening: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_a_port_with_nothing_listening_is_refused(check: HttpCheck, closed_port: int) -> None:
    result = await check.run(job(f"http://127.0.0.1:{closed_port}/?token={SECRET}"))
    assert_down(result, ErrorKind.REFUSED)
    assert result.status_code is None


async def test_a_name_that_does_not_resolve_is_a_dns_failure(check: HttpCheck) -> None:
    result = await check.run(job(f"http://no-such-host.invalid/?token={SECRET}"))
    assert_down(result, ErrorKind.DNS)
    assert result.error is not None
    assert "no-such-host.invalid" in result.error


async def test_a_redirect_chain_is_followed_to_the_final_status(
    target: Any, check: HttpCheck
) -> None:
    served, base = target
    result = await check.run(job(f"{base}/hop/2", keyword="arrived"))
    assert (result.status, result.status_code) == (Status.UP, 200), result
    assert served.seen == [("GET", "/hop/2"), ("GET", "/hop/1"), ("GET", "/hop/0")]


async def test_a_redirect_loop_is_down_after_max_redirects_hops(target: Any) -> None:
    served, base = target
    check = HttpCheck(allow_private=True, max_redirects=3)
    try:
        result = await check.run(job(f"{base}/loop"))
    finally:
        await check.aclose()
    assert_down(result, ErrorKind.REDIRECTS)
    assert result.error == "more than 3 redirects"
    assert result.status_code == 302
    assert len(served.seen) == 4  # the first request and three redirects


async def test_a_redirect_to_a_non_http_scheme_is_not_followed(
    target: Any, check: HttpCheck
) -> None:
    _, base = target
    result = await check.run(job(f"{base}/to-ftp"))
    assert_down(result, ErrorKind.REDIRECTS)
    assert result.error == "redirect to ftp: refused (only http and https)"


@pytest.mark.parametrize(
    ("method", "code", "followed_with"),
    [
        ("POST", 303, "GET"),
        ("PUT", 303, "GET"),
        ("HEAD", 303, "HEAD"),
        ("POST", 302, "GET"),
        ("POST", 301, "GET"),
        ("PUT", 301, "PUT"),
        ("POST", 307, "POST"),
        ("POST", 308, "POST"),
    ],
)
async def test_redirects_change_the_method_as_browsers_do(
    target: Any, check: HttpCheck, method: str, code: int, followed_with: str
) -> None:
    served, base = target
    result = await check.run(job(f"{base}/redirect/{code}", method=method))
    assert result.status is Status.UP, result
    assert served.seen == [(method, f"/redirect/{code}"), (followed_with, "/method")]


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("/b?x=1", "http://a.example/b?x=1"),
        ("c", "http://a.example/dir/c"),
        ("//b.example/p", "http://b.example/p"),
        ("https://b.example:8443/", "https://b.example:8443/"),
        ("HTTP://B.example/", "http://b.example/"),
    ],
)
def test_next_hop_resolves_the_location_against_the_current_url(
    location: str, expected: str
) -> None:
    assert _next_hop("http://a.example/dir/page", location) == expected


@pytest.mark.parametrize(
    "location",
    ["ftp://a.example/", "file:///etc/passwd", "javascript:alert(1)", "gopher://a.example/"],
)
def test_next_hop_refuses_non_http_locations(location: str) -> None:
    with pytest.raises(RedirectRefused, match="only http and https"):
        _next_hop("https://a.example/", location)


async def test_the_guard_blocks_loopback_targets_and_their_redirects(target: Any) -> None:
    """With allow_private=False every loopback target is BLOCKED before any byte is sent.

    Limitation: a redirect from an allowed (public) first hop to a private address cannot be
    staged here, as every address on this machine is loopback or private. The per-hop guard is
    the connector's (runstate.netguard, tested in tests/test_netguard.py); this check makes
    every hop through that connector, and _next_hop is tested above.
    """
    served, base = target
    port = base.rsplit(":", 1)[1]
    check = HttpCheck(allow_private=False)
    try:
        for url in [f"{base}/ok", f"{base}/hop/2", f"http://localhost:{port}/ok"]:
            result = await check.run(job(f"{url}?token={SECRET}"))
            assert_down(result, ErrorKind.BLOCKED)
            assert "ALLOW_PRIVATE_TARGETS" in (result.error or "")
    finally:
        await check.aclose()
    assert served.seen == []


@pytest.mark.parametrize("url", ["ftp://files.example/", "http://", "not a url"])
async def test_a_job_url_that_is_not_http_is_down_not_an_exception(
    check: HttpCheck, url: str
) -> None:
    result = await check.run(job(url))
    assert_down(result, ErrorKind.CONNECTION)
    assert result.error == "invalid URL (only http and https URLs with a host)"


async def test_an_unexpected_status_is_judged_before_the_keyword(
    target: Any, check: HttpCheck
) -> None:
    _, base = target
    result = await check.run(job(f"{base}/status/500", keyword="anything"))
    assert_down(result, ErrorKind.STATUS)
    assert result.status_code == 500


async def test_head_is_sent_as_head(target: Any, check: HttpCheck) -> None:
    served, base = target
    result = await check.run(job(f"{base}/ok", method="HEAD"))
    assert (result.status, result.status_code) == (Status.UP, 200)
    assert served.seen == [("HEAD", "/ok")]


async def test_cookies_are_not_kept_between_checks(target: Any, check: HttpCheck) -> None:
    served, base = target
    await check.run(job(f"{base}/set-cookie"))
    await check.run(job(f"{base}/ok"))
    assert served.cookies == ["", ""]


async def raw_server(respond: Callable[[asyncio.StreamWriter], Awaitable[None]]) -> Any:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await respond(writer)
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def close_at_once(writer: asyncio.StreamWriter) -> None:
    pass


async def reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def garbage(writer: asyncio.StreamWriter) -> None:
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    await writer.drain()


@pytest.mark.parametrize("respond", [close_at_once, reset, garbage])
async def test_a_broken_connection_is_a_connection_failure_not_an_exception(
    check: HttpCheck, respond: Callable[[asyncio.StreamWriter], Awaitable[None]]
) -> None:
    server = await raw_server(respond)
    port = server.sockets[0].getsockname()[1]
    async with server:
        result = await check.run(job(f"http://127.0.0.1:{port}/?token={SECRET}"))
    assert_down(result, ErrorKind.CONNECTION)


# --- TLS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(cert: trustme.LeafCert | trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    if isinstance(cert, trustme.CA):  # the CA's own certificate: self-signed
        with cert.cert_pem.tempfile() as crt, cert.private_key_pem.tempfile() as key:
            context.load_cert_chain(crt, key)
    else:
        cert.configure_cert(context)
    return context


async def tls_check(ca: trustme.CA | None, cert: trustme.LeafCert | trustme.CA) -> CheckResult:
    client_context = None
    if ca is not None:
        client_context = ssl.create_default_context()
        ca.configure_trust(client_context)
    check = HttpCheck(allow_private=True, ssl_context=client_context)
    app = web.Application()
    app.router.add_get("/", reply(lambda r: web.Response(text="secure")))
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server(ssl=server_context(cert))  # TestServer(ssl=...) is ignored
    try:
        async with server:
            return await check.run(job(f"https://127.0.0.1:{server.port}/?token={SECRET}"))
    finally:
        await check.aclose()


async def test_https_with_a_ca_trusted_through_ssl_context_is_up(ca: trustme.CA) -> None:
    result = await tls_check(ca, ca.issue_cert("127.0.0.1", "localhost"))
    assert (result.status, result.status_code) == (Status.UP, 200), result


async def test_https_with_a_private_ca_is_down_with_tls_by_default(ca: trustme.CA) -> None:
    result = await tls_check(None, ca.issue_cert("127.0.0.1", "localhost"))
    assert_down(result, ErrorKind.TLS)
    assert "certificate" in (result.error or "")
    assert (result.error or "").startswith("TLS: certificate verify failed: ")


async def test_https_with_an_expired_certificate_is_down_with_tls(ca: trustme.CA) -> None:
    past = datetime.now(UTC) - timedelta(days=30)
    cert = ca.issue_cert("127.0.0.1", not_before=past - timedelta(days=1), not_after=past)
    result = await tls_check(ca, cert)
    assert_down(result, ErrorKind.TLS)
    assert "expired" in (result.error or "")


async def test_https_with_a_self_signed_certificate_is_down_with_tls() -> None:
    result = await tls_check(None, trustme.CA())
    assert_down(result, ErrorKind.TLS)
    assert "self-signed" in (result.error or "").replace(" signed", "-signed")


async def test_https_with_a_certificate_for_another_name_is_down_with_tls(
    ca: trustme.CA,
) -> None:
    result = await tls_check(ca, ca.issue_cert("other.example"))
    assert_down(result, ErrorKind.TLS)
    assert "mismatch" in (result.error or "").lower()


# --- the registry -------------------------------------------------------------------------


def test_every_registered_check_kind_loads_and_has_the_check_methods() -> None:
    assert CHECKS["http"] == "runstate.checks.http.HttpCheck"
    assert check_class("http") is HttpCheck
    for kind in CHECKS:
        cls = check_class(kind)
        assert callable(getattr(cls, "run", None))
        assert callable(getattr(cls, "aclose", None))


async def test_a_check_can_run_again_after_aclose(target: Any) -> None:
    _, base = target
    check = HttpCheck(allow_private=True)
    assert (await check.run(job(f"{base}/ok"))).status is Status.UP
    await check.aclose()
    assert (await check.run(job(f"{base}/ok"))).status is Status.UP
    await check.aclose()
