"""The local DNS server the tests resolve through (tests/dns_server.py), asked by dnslib's own
client over UDP and TCP."""

from __future__ import annotations

import asyncio
import socket

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from tests.dns_server import LocalDnsServer


async def ask(
    server: LocalDnsServer, name: str, qtype: str = "A", *, tcp: bool = False, wait: float = 2
) -> DNSRecord:
    question = DNSRecord.question(name, qtype)
    packet = await asyncio.to_thread(question.send, server.host, server.port, tcp=tcp, timeout=wait)
    return DNSRecord.parse(packet)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_it_answers_records_with_their_ttl(dns_server: LocalDnsServer, tcp: bool) -> None:
    dns_server.set_records("App.Test.", ["192.0.2.1", "2001:db8::1"], ttl=42)
    reply = await ask(dns_server, "app.test", "A", tcp=tcp)
    assert [(str(rr.rdata), rr.ttl) for rr in reply.rr] == [("192.0.2.1", 42)]
    reply = await ask(dns_server, "app.test", "AAAA", tcp=tcp)
    assert [str(rr.rdata) for rr in reply.rr] == ["2001:db8::1"]
    assert dns_server.queries["app.test"] == 2
    assert dns_server.queries_by_type["app.test", "AAAA"] == 1


async def test_an_unknown_name_is_nxdomain_with_an_soa(dns_server: LocalDnsServer) -> None:
    dns_server.negative_ttl = 30
    reply = await ask(dns_server, "missing.test")
    assert reply.header.rcode == RCODE.NXDOMAIN
    assert [(QTYPE[rr.rtype], rr.rdata.times[-1]) for rr in reply.auth] == [("SOA", 30)]


async def test_a_known_name_asked_for_another_type_has_no_answer(
    dns_server: LocalDnsServer,
) -> None:
    dns_server.set_records("v4.test", ["192.0.2.1"])
    reply = await ask(dns_server, "v4.test", "AAAA")
    assert (reply.header.rcode, reply.rr) == (RCODE.NOERROR, [])


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_a_silent_name_and_the_names_below_it_are_never_answered(
    dns_server: LocalDnsServer, tcp: bool
) -> None:
    dns_server.silent.add("hang.test")
    for name in ("hang.test", "www.hang.test"):
        with pytest.raises((TimeoutError, socket.timeout)):
            await ask(dns_server, name, tcp=tcp, wait=0.2)
        assert dns_server.queries[name] == 1
