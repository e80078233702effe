"""Targets as the internet has them, on the whole system run both ways (embedded and
distributed): names served by a DNS server (a local one, through DNS_SERVERS), TLS with a
certificate from a CA runstate trusts through SSL_CERT_FILE, targets that hang, names whose
DNS server never answers, a certificate that expires, a server that stops accepting."""

from __future__ import annotations

import datetime as dt
import itertools
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from tests.dns_server import LocalDnsServer
from tests.integration.harness import Cluster, LoopThread, System, Target, User, metric

SHOP = "shop.test"
TARPIT = "tarpit.test"
SILENT_ZONE = "blackhole.test"
# A check of a tarpit holds its slot for 8 s; one of a name nobody answers for, for 2 s.
TARPIT_TIMING = {"interval_seconds": 10, "timeout_ms": 8000}
DARK_TIMING = {"interval_seconds": 2, "timeout_ms": 2000}


@pytest.fixture
def dns(loop_thread: LoopThread) -> Iterator[LocalDnsServer]:
    server = LocalDnsServer({SHOP: ["127.0.0.1"], TARPIT: ["127.0.0.1"]}, silent={SILENT_ZONE})
    loop_thread.run(server.__aenter__())
    try:
        yield server
    finally:
        loop_thread.run(server.__aexit__(None, None, None))


@pytest.fixture
def ca(tmp_path: Path) -> trustme.CA:
    return trustme.CA()


@pytest.fixture(params=["embedded", "distributed"])
def system(
    request: pytest.FixtureRequest,
    cluster: Cluster,
    dns: LocalDnsServer,
    ca: trustme.CA,
    tmp_path: Path,
) -> System:
    """runstate resolving through the local DNS server and trusting the test CA."""
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cluster.env.update(DNS_SERVERS=dns.address, SSL_CERT_FILE=str(ca_file))
    found: System = request.getfixturevalue(request.param)
    return found


def server_context(ca: trustme.CA, *, expired: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    issue_certificate(context, ca, expired=expired)
    return context


def issue_certificate(context: ssl.SSLContext, ca: trustme.CA, *, expired: bool) -> None:
    """Give ``context`` a certificate for SHOP; new handshakes present it from now on."""
    now = dt.datetime.now(dt.UTC)
    if expired:
        leaf = ca.issue_cert(
            SHOP, not_before=now - dt.timedelta(days=10), not_after=now - dt.timedelta(days=1)
        )
    else:
        leaf = ca.issue_cert(SHOP)
    leaf.configure_cert(context)


def checks_of(user: User, website_id: str) -> list[dict[str, Any]]:
    """The monitor's checks, oldest first."""
    return list(reversed(user.checks(website_id)))


def at(check: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(check["created_at"])


def test_healthy_monitors_stay_on_time_and_up_while_another_users_monitors_hang(
    system: System, target: Target, loop_thread: LoopThread
) -> None:
    """Forty monitors of one user on a target that accepts and never answers, each holding
    its check for its 8 s timeout; another user's monitors are checked every second all
    the while, and stay UP."""
    tarpit = Target(loop_thread)
    tarpit.delay = 3600.0
    try:
        mallory, alice = system.user(), system.user()
        tarpits = [
            mallory.add_monitor(f"http://{TARPIT}:{tarpit.port}/t{n}", f"tar {n}", **TARPIT_TIMING)
            for n in range(40)
        ]
        healthy = [
            alice.add_monitor(f"http://{SHOP}:{target.port}/p{n}", f"shop {n}") for n in range(5)
        ]
        system.wait_for(
            "a tarpit check to time out",
            lambda: any(c["status"] == "down" for c in checks_of(mallory, tarpits[0]["id"])),
            timeout=30,
        )
        for monitor in healthy:
            checks = checks_of(alice, monitor["id"])
            assert {c["status"] for c in checks} == {"up"}, checks
            recent = [c for c in checks if at(c) >= at(checks[-1]) - dt.timedelta(seconds=8)]
            assert len(recent) >= 4, f"checked {len(recent)} times in the last 8 s: {checks}"
            gaps = [(at(b) - at(a)).total_seconds() for a, b in itertools.pairwise(checks)]
            # Every second, give or take a busy machine; a monitor held up by the hanging
            # checks would wait their 8 s timeout.
            assert max(gaps) < 4.0, f"a healthy monitor waited {max(gaps):.1f} s: {gaps}"
    finally:
        tarpit.stop_listening()


def test_names_whose_dns_server_never_answers_make_only_their_own_monitors_down(
    system: System, target: Target
) -> None:
    bob, alice = system.user(), system.user()
    silent = [
        bob.add_monitor(f"http://m{n}.{SILENT_ZONE}:{target.port}/", f"dark {n}", **DARK_TIMING)
        for n in range(10)
    ]
    healthy = [
        alice.add_monitor(f"http://{SHOP}:{target.port}/p{n}", f"shop {n}") for n in range(5)
    ]
    for monitor in silent:
        [first, *_] = system.wait_for(
            "a check of a name nobody answers for",
            lambda monitor=monitor: checks_of(bob, monitor["id"]),
            timeout=20,
        )
        assert first["status"] == "down", first
        assert first["error"].startswith("DNS"), first
        # The check ended by its own timeout (2 s), not by some later one.
        created = dt.datetime.fromisoformat(monitor["time_added"])
        assert (at(first) - created).total_seconds() < 2.0 + 3.0, (monitor, first)
    for monitor in healthy:
        checks = checks_of(alice, monitor["id"])
        assert checks, monitor
        assert {c["status"] for c in checks} == {"up"}, checks
        assert alice.incidents(monitor["id"]) == []
    # The monitoring worker's metrics show the failed lookups (each gives up after
    # DNS_TIMEOUT_SECONDS, 5 s, while its check has long timed out) and the cache at work.
    system.wait_for(
        "the failed lookups counted",
        lambda: (
            (metric(monitoring_metrics(system), "runstate_dns_failures_total") or 0) >= len(silent)
        ),
        timeout=15,
    )
    exposed = monitoring_metrics(system)
    assert (metric(exposed, "runstate_dns_lookups_total", answer="cache") or 0) > 0


def monitoring_metrics(system: System) -> str:
    if system.mode == "embedded":
        return httpx.get(f"{system.base_url}/metrics", timeout=5).text
    return system.cluster.proc("worker-monitoring").metrics()


def test_a_certificate_that_expired_between_two_checks_is_caught_by_the_next(
    system: System, loop_thread: LoopThread, ca: trustme.CA
) -> None:
    context = server_context(ca)
    site = Target(loop_thread, ssl_context=context)
    try:
        user = system.user()
        url = f"https://{SHOP}:{site.port}/"
        website_id = user.add_monitor(url, "secure shop")["id"]
        system.wait_for(
            "two UP checks over TLS",
            lambda: len([c for c in checks_of(user, website_id) if c["status"] == "up"]) >= 2,
            timeout=20,
        )
        up = checks_of(user, website_id)[-1]
        assert up["tls_ms"] is not None, up
        assert up["cert_expires_at"] is not None, up

        issue_certificate(context, ca, expired=True)

        [incident] = system.wait_for("an incident", lambda: user.incidents(website_id), timeout=20)
        assert "TLS" in (incident["cause"] or ""), incident
        assert "expired" in (incident["cause"] or ""), incident
    finally:
        site.stop_listening()


def test_a_server_that_stops_accepting_new_connections_is_down_on_the_next_check(
    system: System, target: Target
) -> None:
    """The server keeps its open connections alive but accepts no new one: a check that
    reused an old connection would still see it UP; a visitor would not."""
    user = system.user()
    website_id = user.add_monitor(f"http://{SHOP}:{target.port}/", "shop")["id"]
    system.wait_for(
        "two UP checks",
        lambda: len([c for c in checks_of(user, website_id) if c["status"] == "up"]) >= 2,
        timeout=20,
    )

    target.stop_accepting()

    [incident] = system.wait_for("an incident", lambda: user.incidents(website_id), timeout=20)
    assert "refused" in (incident["cause"] or ""), incident
