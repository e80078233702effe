"""Tests of the SSRF guard, against real sockets, a real resolver and a real aiohttp server.

There is no internet here: nothing may depend on resolving a public name.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import AsyncIterator
from ipaddress import IPv4Address, ip_address

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from runstate.netguard import (
    GuardedResolver,
    TargetNotAllowed,
    check_address,
    check_url_target,
    forbidden_reason,
    guarded_connector,
    is_blocked_error,
    parse_ip_literal,
)

# (host as written in a URL, the start of the reason forbidden_reason gives)
REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("::1", "loopback"),
    ("[::1]", "loopback"),
    ("10.0.0.1", "private (RFC 1918)"),
    ("10.255.255.255", "private (RFC 1918)"),
    ("172.16.0.1", "private (RFC 1918)"),
    ("172.31.255.254", "private (RFC 1918)"),
    ("192.168.0.1", "private (RFC 1918)"),
    ("192.168.255.254", "private (RFC 1918)"),
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("[fe80::1%25eth0]", "link-local"),
    ("169.254.169.254", "cloud metadata"),
    ("fd00:ec2::254", "cloud metadata"),
    ("100.64.0.1", "shared address space (CGNAT 100.64.0.0/10)"),
    ("100.127.255.254", "shared address space (CGNAT 100.64.0.0/10)"),
    ("fc00::1", "unique-local"),
    ("fdff:ffff::1", "unique-local"),
    ("::ffff:127.0.0.1", "loopback, IPv4-mapped 127.0.0.1"),
    ("::ffff:10.0.0.1", "private (RFC 1918), IPv4-mapped 10.0.0.1"),
    ("::ffff:169.254.169.254", "cloud metadata"),
    ("64:ff9b::7f00:1", "loopback, NAT64 127.0.0.1"),
    ("64:ff9b::10.0.0.1", "private (RFC 1918), NAT64"),
    ("64:ff9b:1::8.8.8.8", "local-use NAT64"),
    ("2002:7f00:1::1", "loopback, 6to4 127.0.0.1"),
    ("2002:a9fe:a9fe::1", "cloud metadata, 6to4"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "documentation, Teredo 192.0.2.45"),
    ("2001:0:808:808:0:0:f7f7:f7f7", "Teredo tunnel"),  # both embedded addresses public
    ("::127.0.0.1", "loopback, IPv4-compatible 127.0.0.1"),
    ("::8.8.8.8", "IPv4-compatible (deprecated)"),
    ("0.0.0.0", "unspecified"),  # noqa: S104 (an address to refuse, not to bind)
    ("0.1.2.3", "unspecified"),
    ("::", "unspecified"),
    ("2130706433", "loopback"),
    ("017700000001", "loopback"),
    ("0177.0.0.1", "loopback"),
    ("0x7f.0.0.1", "loopback"),
    ("0x7f000001", "loopback"),
    ("0X7F.1", "loopback"),
    ("127.1", "loopback"),
    ("10.1.1", "private (RFC 1918)"),
    ("127.0.0.1.", "loopback"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("ff02::1", "multicast"),
    ("255.255.255.255", "broadcast"),
    ("240.0.0.1", "reserved"),
    ("192.0.2.1", "documentation"),
    ("2001:db8::1", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("2606:4700:4700::1111%eth0", "scoped"),
]
PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "2606:4700:4700::1111",
    "[2001:4860:4860::8888]",
    "::ffff:8.8.8.8",
    "64:ff9b::8.8.8.8",
    "2002:808:808::1",
]


@pytest.mark.parametrize(("host", "reason"), REFUSED)
def test_non_public_addresses_are_refused_unless_allowed(host: str, reason: str) -> None:
    ip = parse_ip_literal(host)
    assert ip is not None
    assert (forbidden_reason(ip) or "").startswith(reason)
    with pytest.raises(TargetNotAllowed) as caught:
        check_address(ip, allow_private=False)
    assert caught.value.reason == forbidden_reason(ip)
    check_address(ip, allow_private=True)


@pytest.mark.parametrize("host", PUBLIC)
def test_public_addresses_are_allowed(host: str) -> None:
    ip = parse_ip_literal(host)
    assert ip is not None
    assert forbidden_reason(ip) is None
    check_address(ip, allow_private=False)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.1.1", "10.1.0.1"),
        ("1.2.65535", "1.2.255.255"),
        ("0xffffffff", "255.255.255.255"),
        ("[::1]", "::1"),
        ("[FE80::1%25eth0]", "fe80::1%eth0"),
        ("8.8.8.8.", "8.8.8.8"),
    ],
)
def test_parse_ip_literal_reads_every_spelling(host: str, expected: str) -> None:
    assert parse_ip_literal(host) == ip_address(expected)


@pytest.mark.parametrize(
    "host",
    [
        "example.com",
        "localhost",
        "08.1",
        "1e5",
        "0x",
        "256.1.1.1",
        "1.2.3.4.5",
        "1..2",
        "",
        "[::g]",
    ],
)
def test_parse_ip_literal_returns_none_for_names(host: str) -> None:
    assert parse_ip_literal(host) is None


@pytest.mark.skipif(sys.platform != "linux", reason="compares with glibc's inet_aton")
@pytest.mark.parametrize(
    "text",
    ["2130706433", "0177.0.0.1", "0x7f.1", "00000000000000000177.1", "1.0xffffff", "1.0x1000000",
     "0x100000000", "1.2.65536", "1.2.3.0400", "08", "0x", "09.1.1.1", "4294967295", "1.2.3"],
)  # fmt: skip
def test_ipv4_forms_match_the_system_inet_aton(text: str) -> None:
    try:
        expected: IPv4Address | None = IPv4Address(socket.inet_aton(text))
    except OSError:
        expected = None
    assert parse_ip_literal(text) == expected


def test_message_is_one_line_and_names_the_setting() -> None:
    with pytest.raises(TargetNotAllowed) as caught:
        check_address(IPv4Address("127.0.0.1"), allow_private=False)
    message = str(caught.value)
    assert message == (
        "127.0.0.1 is not a public address (loopback); set ALLOW_PRIVATE_TARGETS=true to allow it"
    )
    assert isinstance(caught.value, ValueError)


@pytest.fixture
def loopback_name() -> str:
    """A real name (not localhost) that this machine resolves to a non-public address."""
    name = socket.gethostname()
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except OSError:
        pytest.skip(f"{name} does not resolve")
    if not any(forbidden_reason(ip_address(str(info[4][0]))) for info in infos):
        pytest.skip(f"{name} resolves only to public addresses")
    return name


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost/",
        "http://LOCALHOST./x",
        "http://foo.localhost/",
        "http://[::1]:8080/",
        "http://2130706433/",
        "https://0x7f.0.0.1/",
        "http://127.1:9/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:10.0.0.1]/",
        "http://user:pw@10.0.0.1/",
    ],
)
async def test_check_url_target_refuses_private_urls(url: str) -> None:
    with pytest.raises(TargetNotAllowed, match="ALLOW_PRIVATE_TARGETS"):
        await check_url_target(url, allow_private=False)
    await check_url_target(url, allow_private=True)


async def test_check_url_target_refuses_a_name_resolving_to_loopback(loopback_name: str) -> None:
    with pytest.raises(TargetNotAllowed, match=f"^{loopback_name} \\("):
        await check_url_target(f"http://{loopback_name}:8080/", allow_private=False)


async def test_check_url_target_accepts_public_and_unresolvable() -> None:
    await check_url_target("https://8.8.8.8/", allow_private=False)
    await check_url_target("https://[2606:4700:4700::1111]/", allow_private=False)
    # Accepted: the workers check again when they connect.
    await check_url_target("https://no-such-host.invalid/", allow_private=False)


async def test_check_url_target_rejects_a_url_without_host() -> None:
    with pytest.raises(ValueError, match="no host"):
        await check_url_target("/relative/path", allow_private=False)


async def test_guarded_resolver(loopback_name: str) -> None:
    resolver = GuardedResolver(allow_private=False)
    for name in ("localhost", "a.localhost", loopback_name):
        with pytest.raises(TargetNotAllowed):
            await resolver.resolve(name, 80)
    allowing = GuardedResolver(allow_private=True)
    results = await allowing.resolve("localhost", 80)
    assert any(r["host"] == "127.0.0.1" for r in results)
    await resolver.close()
    await allowing.close()


@pytest.fixture
async def server_port() -> AsyncIterator[int]:
    """A real aiohttp server on 127.0.0.1, on an ephemeral port."""

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", hello)
    async with TestServer(app, host="127.0.0.1", port=0) as server:
        assert server.port is not None
        yield server.port


async def _get(url: str, *, allow_private: bool) -> int:
    connector = guarded_connector(allow_private=allow_private)
    async with aiohttp.ClientSession(connector=connector) as session, session.get(url) as resp:
        await resp.read()
        return resp.status


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "localhost", "127.1", "2130706433", "0x7f.0.0.1", "[::1]", "name"]
)
async def test_guarded_connector_blocks_loopback(
    server_port: int, host: str, request: pytest.FixtureRequest
) -> None:
    if host == "name":
        host = request.getfixturevalue("loopback_name")
    with pytest.raises(aiohttp.ClientConnectorError) as caught:
        await _get(f"http://{host}:{server_port}/", allow_private=False)
    assert is_blocked_error(caught.value)
    assert isinstance(caught.value.os_error, PermissionError)
    assert "ALLOW_PRIVATE_TARGETS" in str(caught.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.1", "2130706433"])
async def test_guarded_connector_connects_when_allowed(server_port: int, host: str) -> None:
    assert await _get(f"http://{host}:{server_port}/", allow_private=True) == 200


async def test_an_ordinary_connect_error_is_not_blocked() -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(aiohttp.ClientConnectorError) as caught:
        await _get(f"http://127.0.0.1:{port}/", allow_private=True)
    assert not is_blocked_error(caught.value)


def _raise_chained() -> None:
    try:
        try:
            raise TargetNotAllowed("10.0.0.1", "private (RFC 1918)")
        except TargetNotAllowed as inner:
            raise OSError("explicit cause") from inner
    except OSError:
        raise RuntimeError("implicit context")  # noqa: B904 (the point of the test)


def test_is_blocked_error_walks_the_chain() -> None:
    with pytest.raises(RuntimeError) as caught:
        _raise_chained()
    assert is_blocked_error(caught.value)
    assert not is_blocked_error(RuntimeError("unrelated"))
    looping = ValueError("a")
    looping.__context__ = ValueError("b")
    looping.__context__.__context__ = looping
    assert not is_blocked_error(looping)
    assert is_blocked_error(ExceptionGroup("g", [ValueError(), TargetNotAllowed("x", "y")]))
