"""The shared resolver (runstate.resolve) against a real DNS server on loopback
(tests/dns_server.py), on a port other than 53, as DNS_SERVERS names it.

Durations are kept small (timeouts of half a second, TTLs of a second or less) and the
assertions about time are generous bounds; ordering is what proves a lookup did not wait.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from runstate.checks.base import ErrorKind
from runstate.checks.http import HttpCheck
from runstate.domain.events import CheckJob
from runstate.domain.status import Status
from runstate.netguard import GuardedResolver, TargetNotAllowed, guarded_connector
from runstate.resolve import CachingResolver, DnsConfig, DnsLookupError
from runstate.settings import load_settings
from tests.dns_server import LocalDnsServer

TIMEOUT = 0.5
MakeResolver = Callable[..., CachingResolver]


@pytest.fixture
async def make_resolver(dns_server: LocalDnsServer) -> AsyncIterator[MakeResolver]:
    """Resolvers on the local DNS server, with short timeouts and no TTL floor unless told."""
    made: list[CachingResolver] = []

    def make(**overrides: Any) -> CachingResolver:
        fields: dict[str, Any] = {
            "servers": (dns_server.address,),
            "timeout_seconds": TIMEOUT,
            "min_ttl_seconds": 0.0,
            "negative_ttl_seconds": 5.0,
        }
        made.append(CachingResolver(DnsConfig(**(fields | overrides))))
        return made[-1]

    yield make
    for resolver in made:
        await resolver.close()


async def addresses(resolver: CachingResolver, name: str, family: int = socket.AF_INET) -> set[str]:
    return {r["host"] for r in await resolver.resolve(name, 443, socket.AddressFamily(family))}


async def test_a_name_resolves_through_dns_servers_on_a_port_other_than_53(
    dns_server: LocalDnsServer,
) -> None:
    dns_server.set_records("app.test", ["192.0.2.10", "2001:db8::10"])
    assert dns_server.port != 53
    resolver = CachingResolver.from_settings(load_settings(DNS_SERVERS=dns_server.address))
    try:
        results = await resolver.resolve("app.test", 443, socket.AF_INET)
        assert results == [
            {
                "hostname": "app.test",
                "host": "192.0.2.10",
                "port": 443,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            }
        ]
        assert await addresses(resolver, "app.test", socket.AF_INET6) == {"2001:db8::10"}
        unspec = await resolver.resolve("app.test", 443, socket.AF_UNSPEC)
        assert {(r["host"], r["family"]) for r in unspec} == {
            ("192.0.2.10", socket.AF_INET),
            ("2001:db8::10", socket.AF_INET6),
        }
    finally:
        await resolver.close()
    assert dns_server.queries["app.test"] >= 1


async def test_a_dns_server_on_ipv6_loopback_is_reached_as_bracketed_address() -> None:
    try:
        server = await LocalDnsServer({"v6.test": ["192.0.2.6"]}, host="::1").start()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        settings = load_settings(DNS_SERVERS=f"{server.address}")
        assert settings.dns_servers == (f"[::1]:{server.port}",)
        resolver = CachingResolver.from_settings(settings)
        assert await addresses(resolver, "v6.test") == {"192.0.2.6"}
        await resolver.close()
    finally:
        await server.stop()


def hosts_file_names() -> dict[str, set[str]]:
    """The IPv4 addresses /etc/hosts gives each name but localhost."""
    names: dict[str, set[str]] = {}
    for line in Path("/etc/hosts").read_text().splitlines():
        address, *aliases = line.split("#")[0].split() or [""]
        if address.count(".") == 3:
            for name in aliases:
                names.setdefault(name.lower(), set()).add(address)
    return {name: found for name, found in names.items() if "localhost" not in name}


async def test_hosts_file_entries_are_read_before_the_dns_servers(
    dns_server: LocalDnsServer, make_resolver: MakeResolver
) -> None:
    if not (names := hosts_file_names()):
        pytest.skip("/etc/hosts names no host but localhost")
    name, expected = next(iter(names.items()))
    assert await addresses(make_resolver(), name) == expected
    assert dns_server.queries[name] == 0


async def test_an_answer_within_its_ttl_is_served_without_asking_again(
    dns_server: LocalDnsServer, make_resolver: MakeResolver
) -> None:
    dns_server.set_records("app.test", ["192.0.2.10"], ttl=60)
    resolver = make_resolver()
    for _ in range(3):
        assert await addresses(resolver, "App.Test") == {"192.0.2.10"}
    assert dns_server.queries["app.test"] == 1
    assert (resolver.stats.misses, resolver.stats.hits) == (1, 2)


async def test_an_answer_is_asked_for_again_when_its_ttl_runs_out(
    dns_server: LocalDnsServer, make_resolver: MakeResolver
) -> None:
    dns_server.set_records("app.test", ["192.0.2.10"], ttl=1)
    resolver = make_resolver()
    assert await addresses(resolver, "app.test") == {"192.0.2.10"}
    dns_server.set_records("app.test", ["192.0.2.11"], ttl=1)
    assert await addresses(resolver, "app.test") == {"192.0.2.10"}
    await asyncio.sleep(1.1)
    assert await addresses(resolver, "app.test") == {"192.0.2.11"}
    assert dns_server.queries["app.test"] == 2


async def test_the_ttl_floor_keeps_an_answer_whose_ttl_is_shorter(
    dns_server: LocalDnsServer, make_resolver: MakeResolver
) -> None:
    dns_server.set_records("app.test", ["192.0.2.10"], ttl=0)
    resolver = make_resolver(min_ttl_seconds=0.4)
    await addresses(resolver, "app.test")
    await addresses(resolver, "app.test")
    assert dns_server.queries["app.test"] == 1
    await asyncio.sleep(0.5)
    await addresses(resolver, "app.test")
    assert dns_server.queries["app.test"] == 2


async def test_the_ttl_ceiling_makes_a_long_lived_answer_asked_for_again(
    dns_server: LocalDnsServer, make_resolver: MakeResolver
) -> None:
    dns_server.set_records("app.test", ["192.0.2.10"], ttl=3600)
    resolver = make_resolver(max_ttl_seconds=0.3, channel_seconds=0.2)
    await addresses(resolver, "app.test")
    await addresses(resolver, "app.test")
    assert dns_server.queries["app.test"] == 1
    dns_server.set_records("app.test", ["192.0.2.11"], ttl=3600)
    await asyncio.sleep(0.4)
    assert await addresses(resolver, "app.test") == {"192.0.2.11"}
    assert dns_server.queries["app.test"] == 2


async def test_a_name_recovers_soon_though_its_zone_says_to_cache_the_nxdomain_for_long(
    dns_server: LocalDnsServer, make_resolver: MakeResolver
) -> None:
    dns_server.negative_ttl = 3600  # c-ares would keep the NXDOMAIN for an hour
    resolver = make_resolver(negative_ttl_seconds=0.2, channel_seconds=0.3)
    with pytest.raises(DnsLookupError, match="NXDOMAIN"):
        await resolver.resolve("new.test", 443)
    dns_server.set_records("new.test", ["192.0.2.20"])
    await asyncio.sleep(0.4)
    assert await addresses(resolver, "new.test") == {"192.0.2.20"}


async def test_a_lookup_in_flight_when_the_channel_is_renewed_still_completes(
    dns_server: LocalDnsServer, make_resolver: MakeResolver
) -> None:
    dns_server.set_records("slow.test", ["192.0.2.70"])
    dns_server.set_records("next.test", ["192.0.2.71"])
    dns_server.delays["slow.test"] = 0.4
    resolver = make_resolver(timeout_seconds=2.0, channel_seconds=0.1)
    slow = asyncio.create_task(addresses(resolver, "slow.test"))
    await asyncio.sleep(0.2)
    assert await addresses(resolver, "next.test") == {"192.0.2.71"}  # on a new channel
    assert await slow == {"192.0.2.70"}


async def test_nxdomain_is_remembered_for_the_negative_ttl_then_asked_again(
    dns_server: LocalDnsServer, make_resolver: MakeResolver
) -> None:
    resolver = make_resolver(negative_ttl_seconds=0.4)
    for _ in range(2):
        with pytest.raises(DnsLookupError) as caught:
            await resolver.resolve("new.test", 443)
        assert caught.value.strerror == "NXDOMAIN"
        assert str(caught.value) == "new.test does not resolve (NXDOMAIN)"
    assert dns_server.queries["new.test"] == 1
    dns_server.set_records("new.test", ["192.0.2.20"])
    await asyncio.sleep(0.5)
    assert await addresses(resolver, "new.test") == {"192.0.2.20"}
    assert dns_server.queries["new.test"] == 2
    assert resolver.stats.failures == 1


async def test_a_name_without_an_address_of_the_family_asked_for_fails(
    dns_server: LocalDnsServer, make_resolver: MakeResolver
) -> None:
    dns_server.set_records("v4only.test", ["192.0.2.30"])
    with pytest.raises(DnsLookupError, match=r"\(no address record\)"):
        await make_resolver().resolve("v4only.test", 443, socket.AF_INET6)


async def test_a_malformed_name_fails_without_a_query(
    dns_server: LocalDnsServer, make_resolver: MakeResolver
) -> None:
    with pytest.raises(DnsLookupError, match=r"\(not a valid host name\)"):
        await make_resolver().resolve("bad..name.test", 443)
    assert sum(dns_server.queries.values()) == 0


async def test_a_dns_server_nothing_listens_on_fails_the_lookup_at_once() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # a port nothing serves
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    resolver = CachingResolver(DnsConfig(servers=(f"127.0.0.1:{port}",), timeout_seconds=5.0))
    started = time.perf_counter()
    try:
        with pytest.raises(DnsLookupError, match=r"\(the DNS server is unreachable\)"):
            await resolver.resolve("app.test", 443)
    finally:
        await resolver.close()
    assert time.perf_counter() - started < 2.5  # refused, not waited out


async def test_a_silent_server_fails_the_lookup_within_dns_timeout_and_is_remembered(
    dns_server: LocalDnsServer, make_resolver: MakeResolver
) -> None:
    dns_server.silent.add("hang.test")
    resolver = make_resolver()
    started = time.perf_counter()
    with pytest.raises(DnsLookupError) as caught:
        await resolver.resolve("hang.test", 443)
    waited = time.perf_counter() - started
    assert caught.value.strerror == f"no answer from the DNS server within {TIMEOUT} s"
    assert TIMEOUT * 0.9 <= waited < TIMEOUT + 1.0
    queries = dns_server.queries["hang.test"]
    started = time.perf_counter()
    with pytest.raises(DnsLookupError, match="no answer"):
        await resolver.resolve("hang.test", 443)
    assert time.perf_counter() - started < TIMEOUT / 2  # the failure was remembered
    assert dns_server.queries["hang.test"] == queries


async def test_a_slow_answer_still_counts_after_the_server_has_been_fast(
    dns_server: LocalDnsServer, make_resolver: MakeResolver
) -> None:
    for i in range(10):
        dns_server.set_records(f"fast{i}.test", ["192.0.2.60"])
    dns_server.set_records("slow.test", ["192.0.2.61"])
    dns_server.delays["slow.test"] = 0.9  # beyond c-ares' own 250 + 500 ms for a fast server
    resolver = make_resolver(timeout_seconds=2.0)
    for i in range(10):
        await addresses(resolver, f"fast{i}.test")
    assert await addresses(resolver, "slow.test") == {"192.0.2.61"}


async def test_silent_names_do_not_hold_up_lookups_of_other_names(
    dns_server: LocalDnsServer, make_resolver: MakeResolver
) -> None:
    dns_server.silent.add("hang.test")  # and every name below it
    for i in range(50):
        dns_server.set_records(f"ok{i}.test", ["192.0.2.40"])
    resolver = make_resolver(timeout_seconds=1.5)
    finished: list[str] = []

    async def lookup(name: str) -> None:
        try:
            await resolver.resolve(name, 443)
        finally:
            finished.append(name)

    silent = [asyncio.create_task(lookup(f"s{i}.hang.test")) for i in range(20)]
    await asyncio.sleep(0.05)  # the silent queries are out first
    healthy = [lookup(f"ok{i}.test") for i in range(50)]
    started = time.perf_counter()
    await asyncio.gather(*healthy)
    assert time.perf_counter() - started < 1.4  # before any silent lookup could give up
    assert len(finished) == 50
    assert all(name.startswith("ok") for name in finished)
    outcomes = await asyncio.gather(*silent, return_exceptions=True)
    assert all(isinstance(outcome, DnsLookupError) for outcome in outcomes)


async def test_concurrent_lookups_of_one_name_send_one_query(
    dns_server: LocalDnsServer, make_resolver: MakeResolver
) -> None:
    dns_server.set_records("app.test", ["192.0.2.10"])
    resolver = make_resolver()
    results = await asyncio.gather(*(addresses(resolver, "app.test") for _ in range(50)))
    assert results == [{"192.0.2.10"}] * 50
    assert dns_server.queries_by_type["app.test", "A"] == 1
    assert (resolver.stats.misses, resolver.stats.joined) == (1, 49)


async def test_a_caller_that_gives_up_does_not_cancel_the_query_others_wait_for(
    dns_server: LocalDnsServer, make_resolver: MakeResolver
) -> None:
    dns_server.silent.add("hang.test")
    resolver = make_resolver()
    impatient = asyncio.create_task(resolver.resolve("hang.test", 443))
    patient = asyncio.create_task(resolver.resolve("hang.test", 443))
    await asyncio.sleep(0.1)
    impatient.cancel()
    with pytest.raises(DnsLookupError, match="no answer"):
        await patient
    assert impatient.cancelled()


async def test_the_cache_drops_the_least_recently_used_name_beyond_its_size(
    dns_server: LocalDnsServer, make_resolver: MakeResolver
) -> None:
    for name in ("a.test", "b.test", "c.test"):
        dns_server.set_records(name, ["192.0.2.50"], ttl=0)
    resolver = make_resolver(cache_size=2, min_ttl_seconds=60.0)
    await addresses(resolver, "a.test")
    await addresses(resolver, "b.test")
    await addresses(resolver, "a.test")  # a is now the most recently used
    await addresses(resolver, "c.test")  # evicts b
    assert (resolver.cached_names, resolver.stats.evictions) == (2, 1)
    await addresses(resolver, "a.test")
    assert dns_server.queries["a.test"] == 1
    await addresses(resolver, "b.test")
    assert dns_server.queries["b.test"] == 2


async def test_the_guard_refuses_a_name_that_resolves_to_a_private_address(
    dns_server: LocalDnsServer, make_resolver: MakeResolver
) -> None:
    dns_server.set_records("internal.test", ["10.1.2.3"])
    dns_server.set_records("public.test", ["8.8.8.8"])
    guard = GuardedResolver(allow_private=False, inner=make_resolver())
    with pytest.raises(TargetNotAllowed, match=r"internal\.test \(10\.1\.2\.3\)"):
        await guard.resolve("internal.test", 443)
    assert [r["host"] for r in await guard.resolve("public.test", 443)] == ["8.8.8.8"]
    with pytest.raises(TargetNotAllowed, match="loopback name"):
        await guard.resolve("localhost", 443)


async def test_close_fails_pending_lookups_and_later_ones(
    dns_server: LocalDnsServer, make_resolver: MakeResolver
) -> None:
    dns_server.silent.add("hang.test")
    resolver = make_resolver(timeout_seconds=5.0)
    pending = asyncio.create_task(resolver.resolve("hang.test", 443))
    await asyncio.sleep(0.05)
    await resolver.close()
    with pytest.raises(DnsLookupError, match="the resolver was closed"):
        await pending
    with pytest.raises(DnsLookupError, match="the resolver was closed"):
        await resolver.resolve("app.test", 443)


def test_a_resolver_is_made_inside_a_running_loop() -> None:
    with pytest.raises(RuntimeError):
        CachingResolver()


@pytest.fixture
async def web_port() -> AsyncIterator[int]:
    """A real aiohttp server on 127.0.0.1 that answers every GET with 200 "ok"."""

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    async with TestServer(app, host="127.0.0.1", port=0) as server:
        assert server.port is not None
        yield server.port


async def get(resolver: CachingResolver, url: str) -> str:
    connector = guarded_connector(allow_private=True, resolver=resolver)
    async with aiohttp.ClientSession(connector=connector) as session, session.get(url) as resp:
        return await resp.text()


async def test_a_request_reaches_the_server_a_name_resolves_to(
    dns_server: LocalDnsServer, make_resolver: MakeResolver, web_port: int
) -> None:
    dns_server.set_records("app.test", ["127.0.0.1"])
    resolver = make_resolver()
    assert await get(resolver, f"http://app.test:{web_port}/") == "ok"
    # The connector closed with its session; the resolver passed in stays open.
    assert await get(resolver, f"http://app.test:{web_port}/") == "ok"
    assert dns_server.queries["app.test"] >= 1


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("missing.test", "NXDOMAIN"),
        ("hang.test", f"no answer from the DNS server within {TIMEOUT} s"),
    ],
)
async def test_a_name_that_does_not_resolve_fails_the_request_as_a_dns_error(
    dns_server: LocalDnsServer, make_resolver: MakeResolver, name: str, reason: str
) -> None:
    dns_server.silent.add("hang.test")
    with pytest.raises(aiohttp.ClientConnectorDNSError) as caught:
        await get(make_resolver(), f"http://{name}:8080/")
    # What the HTTP check reads as ErrorKind.DNS, whichever of the two it looks at.
    assert isinstance(caught.value.os_error, socket.gaierror)
    assert caught.value.os_error.strerror == reason
    assert (caught.value.host, caught.value.port) == (name, 8080)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("missing.test", "NXDOMAIN"),
        ("hang.test", f"no answer from the DNS server within {TIMEOUT} s"),
    ],
)
async def test_the_http_check_reports_a_name_that_does_not_resolve_as_dns(
    dns_server: LocalDnsServer, make_resolver: MakeResolver, name: str, reason: str
) -> None:
    dns_server.silent.add("hang.test")
    check = HttpCheck(allow_private=True, resolver=make_resolver())
    job = CheckJob(
        uuid.uuid4(),
        f"http://{name}:8080/",
        "GET",
        2000,
        "200-399",
        None,
        1,
        1,
        60,
        datetime.now(UTC),
    )
    try:
        result = await check.run(job)
    finally:
        await check.aclose()
    assert (result.status, result.error_kind) == (Status.DOWN, ErrorKind.DNS)
    assert result.error is not None
    assert name in result.error
    assert reason in result.error
