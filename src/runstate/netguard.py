"""SSRF guard: refuse monitor and webhook targets that are not public, globally routable hosts.

Used twice, on purpose. The API calls :func:`check_url_target` when a monitor or webhook is
created, to give the user an early, readable error. The workers make every request through
:func:`guarded_connector`, which checks the address actually connected to, on every redirect
hop, after DNS resolution (so DNS rebinding between the two checks gains nothing). Both are
disabled by the ALLOW_PRIVATE_TARGETS setting, which callers pass in as ``allow_private``.

Policy for IPv6 forms that embed an IPv4 address: IPv4-mapped (``::ffff:a.b.c.d``) and NAT64
well-known-prefix (``64:ff9b::/96``) addresses are judged only by the IPv4 address they carry
(that is where the packets go; DNS64 synthesises the latter for public hosts on IPv6-only
networks, so they must stay usable). 6to4 (``2002::/16``) is refused when its IPv4 address is,
and is otherwise judged as IPv6. IPv4-compatible (``::a.b.c.d``, deprecated), local-use NAT64
(``64:ff9b:1::/48``, whose embedding depends on a local prefix length) and Teredo (``2001::/32``)
are always refused.
"""

from __future__ import annotations

import asyncio
import errno
import re
import socket
from collections.abc import Sequence
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any, TypeAlias

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.client_proto import ResponseHandler
from aiohttp.tracing import Trace
from yarl import URL

from runstate.connection_phases import TimedConnector
from runstate.resolve import CachingResolver

IPAddress: TypeAlias = IPv4Address | IPv6Address

__all__ = [
    "GuardedResolver",
    "IPAddress",
    "TargetNotAllowed",
    "check_address",
    "check_url_target",
    "forbidden_reason",
    "guarded_connector",
    "is_blocked_error",
    "parse_ip_literal",
]


class TargetNotAllowed(ValueError):
    """A URL or address that the guard refuses.

    ``str(e)`` is a one-line message naming ALLOW_PRIVATE_TARGETS; ``target`` is what was
    refused (an address, or "name (address)") and ``reason`` the short reason.
    """

    def __init__(self, target: str, reason: str) -> None:
        self.target = target
        self.reason = reason
        super().__init__(
            f"{target} is not a public address ({reason}); "
            "set ALLOW_PRIVATE_TARGETS=true to allow it"
        )


_V4_COMPATIBLE = "IPv4-compatible (deprecated)"
# First match wins, so specific entries come before the ranges that contain them.
_V4_RULES: list[tuple[IPv4Network, str]] = [
    (IPv4Network(net), reason)
    for net, reason in [
        ("169.254.169.254/32", "cloud metadata"),  # AWS, GCP, Azure, OpenStack, ...
        ("168.63.129.16/32", "cloud metadata"),  # Azure wire server: public-looking, host-only
        ("0.0.0.0/8", "unspecified"),  # Linux connects 0.0.0.0 to the local host
        ("127.0.0.0/8", "loopback"),
        ("10.0.0.0/8", "private (RFC 1918)"),
        ("172.16.0.0/12", "private (RFC 1918)"),
        ("192.168.0.0/16", "private (RFC 1918)"),
        ("100.64.0.0/10", "shared address space (CGNAT 100.64.0.0/10)"),
        ("169.254.0.0/16", "link-local"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("198.18.0.0/15", "benchmarking"),
        ("192.88.99.0/24", "6to4 relay anycast (deprecated)"),
        ("224.0.0.0/4", "multicast"),  # is_global is True for much of it
        ("255.255.255.255/32", "broadcast"),
        ("240.0.0.0/4", "reserved"),
    ]
]
_V6_RULES: list[tuple[IPv6Network, str]] = [
    (IPv6Network(net), reason)
    for net, reason in [
        ("fd00:ec2::254/128", "cloud metadata"),  # AWS IMDS over IPv6
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local (deprecated)"),
        ("fc00::/7", "unique-local"),
        ("ff00::/8", "multicast"),
        ("100::/64", "discard-only"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("2001:2::/48", "benchmarking"),
        ("2001::/32", "Teredo tunnel"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("::/96", _V4_COMPATIBLE),
    ]
]
_NAT64 = IPv6Network("64:ff9b::/96")
_V4_PART = re.compile(r"0x[0-9a-f]+|0[0-7]*|[1-9][0-9]*")  # hex, octal (or 0), decimal


def _parse_inet_aton(text: str) -> IPv4Address | None:
    """The IPv4 address glibc's inet_aton (hence getaddrinfo) reads from text, if any."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(_V4_PART.fullmatch(p) for p in parts):
        return None
    values = [
        int(p[2:], 16) if p.startswith("0x") else int(p, 8 if p.startswith("0") else 10)
        for p in parts
    ]
    *head, last = values
    # "a.b.c.d", "a.b.c" (c: 16 bits), "a.b" (b: 24 bits), "a" (32 bits).
    last_bits = 8 * (5 - len(values))
    if any(v > 0xFF for v in head) or last >= 1 << last_bits:
        return None
    number = 0
    for v in head:
        number = number << 8 | v
    return IPv4Address(number << last_bits | last)


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address a URL host denotes when it is an IP literal, else None (a real name).

    Accepts bracketed or bare IPv6, with a zone id written "%eth0" or URL-style "%25eth0",
    and every IPv4 spelling inet_aton accepts: "127.0.0.1", "2130706433", "0177.0.0.1",
    "0x7f.0.0.1", "0x7f000001", "127.1", "10.1.1". Trailing dots are ignored.
    """
    text = host.strip().lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.rstrip(".")
    if ":" not in text:
        return _parse_inet_aton(text)
    try:
        return IPv6Address(text.replace("%25", "%", 1))
    except ValueError:
        return None


def _first_match(
    ip: IPAddress, rules: Sequence[tuple[IPv4Network | IPv6Network, str]]
) -> str | None:
    return next((reason for net, reason in rules if ip in net), None)


def forbidden_reason(ip: IPAddress) -> str | None:
    """None for a public, globally routable unicast address; otherwise a short reason.

    IPv6 forms that embed IPv4 follow the policy in the module docstring.
    """
    if isinstance(ip, IPv4Address):
        rule = _first_match(ip, _V4_RULES)
        return rule or (None if ip.is_global else "not globally routable")
    if ip.scope_id:
        # A zone id ties the address to a local interface: never a public target.
        return forbidden_reason(IPv6Address(int(ip))) or "scoped (has a zone id)"
    rule = _first_match(ip, _V6_RULES)
    for kind, v4 in _embedded_ipv4(ip, rule):
        if (reason := forbidden_reason(v4)) is not None:
            return f"{reason}, {kind} {v4}"
    if ip.ipv4_mapped is not None or ip in _NAT64:
        return None  # judged by the (public) IPv4 address alone
    if rule is not None:
        return rule
    if ip.is_reserved:  # unallocated space, which is_global does not always exclude
        return "reserved"
    return None if ip.is_global else "not globally routable"


def _embedded_ipv4(ip: IPv6Address, rule: str | None) -> list[tuple[str, IPv4Address]]:
    low32 = IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.ipv4_mapped is not None:  # the socket layer turns these into plain IPv4
        return [("IPv4-mapped", ip.ipv4_mapped)]
    if ip in _NAT64:
        return [("NAT64", low32)]
    if rule == _V4_COMPATIBLE:
        return [("IPv4-compatible", low32)]
    if ip.sixtofour is not None:
        return [("6to4", ip.sixtofour)]
    return [("Teredo", v4) for v4 in ip.teredo or ()]


def check_address(ip: IPAddress, *, allow_private: bool, name: str | None = None) -> None:
    """Raise TargetNotAllowed unless allow_private or ip is public; name is for the message."""
    if allow_private:
        return
    reason = forbidden_reason(ip)
    if reason is not None:
        raise TargetNotAllowed(f"{name} ({ip})" if name else str(ip), reason)


def _is_localhost_name(host: str) -> bool:
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")  # RFC 6761: always loopback


async def check_url_target(url: str, *, allow_private: bool, resolve_timeout: float = 2.0) -> None:
    """Creation-time check of a monitor or webhook URL; raises TargetNotAllowed.

    IP literals (any spelling) are judged directly; "localhost" and "*.localhost" are refused
    unresolved; other names are resolved and refused if ANY address is not public. A name that
    does not resolve (error or resolve_timeout) is accepted: the workers check again at connect
    time. Does not check the scheme. Raises plain ValueError for a URL that yarl cannot parse
    or that has no host.
    """
    if allow_private:
        return
    host = URL(url).raw_host  # yarl, as aiohttp parses it: no parser differential
    if not host:
        raise ValueError(f"URL has no host: {url!r}")
    ip = parse_ip_literal(host)
    if ip is not None:
        check_address(ip, allow_private=False)
        return
    if _is_localhost_name(host):
        raise TargetNotAllowed(host, "loopback name")
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), resolve_timeout
        )
    except (OSError, UnicodeError, TimeoutError):
        return
    for *_, sockaddr in infos:
        _check_resolved(host, str(sockaddr[0]))


def _check_resolved(host: str, address: str) -> None:
    refusal = _refusal_of_resolved(address)
    if refusal is not None:
        shown, reason = refusal
        raise TargetNotAllowed(f"{host} ({shown})", reason)


@lru_cache(maxsize=1 << 16)
def _refusal_of_resolved(address: str) -> tuple[str, str] | None:
    """(the address as shown, the reason) when a resolved address is refused, else None.

    Cached: every connection passes the guard, and a host's few addresses come back on each.
    """
    ip = parse_ip_literal(address)
    if ip is None:  # cannot happen with a sane resolver; fail closed anyway
        return address, "unparseable resolved address"
    reason = forbidden_reason(ip)
    return None if reason is None else (str(ip), reason)


class GuardedResolver(AbstractResolver):
    """aiohttp resolver for the workers: resolves with the inner resolver and, unless
    allow_private, raises TargetNotAllowed when the name is "localhost"/"*.localhost" or ANY
    resolved address is not public.

    Without an inner resolver it makes a :class:`runstate.resolve.CachingResolver` with the
    default settings (the system's DNS servers) on first use, and ``close()`` closes it. An
    inner resolver passed in belongs to the caller, who closes it (it may be shared).
    aiohttp never calls a resolver for IP-literal hosts: use :func:`guarded_connector`.
    """

    def __init__(self, *, allow_private: bool, inner: AbstractResolver | None = None) -> None:
        self._allow_private = allow_private
        self._inner = inner
        self._owns_inner = inner is None

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if not self._allow_private and _is_localhost_name(host):
            raise TargetNotAllowed(host, "loopback name")
        if self._inner is None:
            self._inner = CachingResolver()  # here: it needs the running loop
        results = await self._inner.resolve(host, port, family)
        if not self._allow_private:
            for result in results:
                _check_resolved(host, result["host"])
        return results

    async def close(self) -> None:
        if self._owns_inner and self._inner is not None:
            await self._inner.close()
            self._inner = None


class _GuardedConnector(TimedConnector):
    """TCPConnector that also checks IP-literal hosts, which bypass the resolver (and marks
    each connection's phases, see :mod:`runstate.connection_phases`)."""

    def __init__(self, *, allow_private: bool, resolver: GuardedResolver, **kwargs: Any) -> None:
        super().__init__(resolver=resolver, **kwargs)
        self._allow_private = allow_private
        self._guarded_resolver = resolver

    async def close(self, *, abort_ssl: bool = False) -> None:
        # aiohttp closes only a resolver it made itself; this one is ours to close (which
        # closes the inner resolver only when the guard made it).
        await super().close(abort_ssl=abort_ssl)
        await self._guarded_resolver.close()

    async def _resolve_host(
        self, host: str, port: int, traces: Sequence[Trace] | None = None
    ) -> list[ResolveResult]:
        ip = parse_ip_literal(host)
        if ip is not None:
            check_address(ip, allow_private=self._allow_private)
            # aiohttp refuses legacy spellings such as "127.1"; we have seen through them.
            host = str(ip)
        return await super()._resolve_host(host, port, traces)

    async def _create_direct_connection(
        self,
        req: aiohttp.ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 (aiohttp's signature)
        *,
        client_error: type[Exception] = aiohttp.ClientConnectorError,
    ) -> tuple[asyncio.Transport, ResponseHandler]:
        try:
            return await super()._create_direct_connection(
                req, traces, timeout, client_error=client_error
            )
        except TargetNotAllowed as exc:
            # Surface as aiohttp's usual connect error so `except aiohttp.ClientError` sees it.
            os_error = PermissionError(errno.EACCES, str(exc))
            os_error.__cause__ = exc
            raise client_error(req.connection_key, os_error) from exc


def guarded_connector(
    *, allow_private: bool, limit: int = 100, ttl_dns_cache: int | None = 10, **kwargs: Any
) -> aiohttp.TCPConnector:
    """A TCPConnector whose every connection (each redirect hop too) passes the guard.

    Must be called with a running event loop. A ``resolver=`` in kwargs is wrapped, not
    replaced, and stays open when the connector closes (its owner closes it); without one,
    names are resolved by a :class:`runstate.resolve.CachingResolver` with the default
    settings, closed with the connector. aiohttp's own DNS cache is off unless
    ``use_dns_cache=True`` is given: the resolver caches, honouring record TTLs, and shares
    concurrent lookups. A refused target raises aiohttp.ClientConnectorError
    (ClientProxyConnectionError for a proxy) with ``os_error`` a PermissionError and
    TargetNotAllowed as ``__cause__``; test with :func:`is_blocked_error`. A name that does
    not resolve raises aiohttp.ClientConnectorDNSError. Proxies are not supported (only the
    proxy's own address would be checked), so do not give the session ``proxy=`` or
    ``trust_env=True``.
    """
    resolver = GuardedResolver(allow_private=allow_private, inner=kwargs.pop("resolver", None))
    kwargs.setdefault("use_dns_cache", False)
    return _GuardedConnector(
        allow_private=allow_private,
        resolver=resolver,
        limit=limit,
        ttl_dns_cache=ttl_dns_cache,
        **kwargs,
    )


def is_blocked_error(exc: BaseException) -> bool:
    """True when exc is, or was caused by, the guard refusing a target (TargetNotAllowed)."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, TargetNotAllowed):
            return True
        linked = [current.__cause__, current.__context__, getattr(current, "os_error", None)]
        if isinstance(current, BaseExceptionGroup):
            linked.extend(current.exceptions)
        pending.extend(e for e in linked if isinstance(e, BaseException))
    return False
