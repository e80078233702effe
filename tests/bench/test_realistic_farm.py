"""The realistic farm (bench/farm/) does what each of its targets claims, checked from the
outside as a monitor would meet it: names through its dnsmasq, https verified against the
bench CA with the connection closed after each answer, flips, and every failure kind."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.farm.dns import query
from bench.farm.mix import FAILURES, Mix, Shares, slow_delay
from bench.farm.realistic import RealisticFarm
from bench.procs import Children
from tests.bench.tools import require_farm_tools

MONITORS = 400


@pytest.fixture(scope="module")
def farm() -> Iterator[RealisticFarm]:
    require_farm_tools()
    # Not pytest's tmp_path: its parent is private to root, and nginx's workers and dnsmasq
    # drop root before they read the farm's files (the harness uses such a directory too).
    work_dir = Path(tempfile.mkdtemp(prefix="runstate-farm-test-"))
    children = Children(work_dir)
    farm = RealisticFarm(children, work_dir, MONITORS, Shares(), seed=7)
    try:
        asyncio.run(farm.wait_ready())
        yield farm
    finally:
        children.stop_all()
        farm.close()
        shutil.rmtree(work_dir, ignore_errors=True)


def one(farm: RealisticFarm, kind: str) -> int:
    return farm.mix.kinds.index(kind)


async def exchange(
    farm: RealisticFarm, i: int, *, tls: bool = True, wait: float = 2.0
) -> tuple[bytes, bytes]:
    """Connect to target ``i`` at 127.0.0.1 (its name's address), send a GET, read to the
    end: (status line, the rest). Raises what connecting or the handshake raises."""
    kind, host = farm.mix.kinds[i], farm.host(i)
    port = farm.ports.get(kind, farm.ports["https"])
    context = farm.pki.client_context() if tls else None
    async with asyncio.timeout(wait):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname=host if tls else None
        )
        writer.write(f"GET /t/{i} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        answer = await reader.read()
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
    status, _, rest = answer.partition(b"\r\n")
    return status, rest


def test_the_mix_takes_each_share_of_the_monitors_rounded_up() -> None:
    mix = Mix.draw(100_000, Shares(), seed=1)
    counts = mix.counts()
    assert {k: counts[k] for k in FAILURES} == {
        "slow": 1000,
        "blackhole": 500,
        "refused": 500,
        "nxdomain": 500,
        "dns_hang": 200,
    }
    assert mix.https_share() >= 0.9
    assert Mix.draw(100_000, Shares(), seed=1) == mix
    small = Mix.draw(MONITORS, Shares(), seed=1).counts()
    assert all(small[k] >= 1 for k in FAILURES)


async def test_every_monitor_has_its_own_name_and_unknown_names_are_nxdomain(
    farm: RealisticFarm,
) -> None:
    server = (farm.dns[0].address, farm.dns[0].port)
    assert farm.runstate_env()["DNS_SERVERS"] == f"{server[0]}:{server[1]}"
    healthy = farm.healthy()[:3]
    assert len({farm.host(i) for i in healthy}) == 3
    for i in healthy:
        assert await asyncio.to_thread(query, server, farm.host(i)) == ("NOERROR", ["127.0.0.1"])
    rcode, _ = await asyncio.to_thread(query, server, farm.host(one(farm, "nxdomain")))
    assert rcode == "NXDOMAIN"


async def test_a_name_whose_dns_server_never_answers_gets_no_answer(farm: RealisticFarm) -> None:
    server = (farm.dns[0].address, farm.dns[0].port)
    with pytest.raises(TimeoutError):  # no answer, not even an error
        await asyncio.to_thread(query, server, farm.host(one(farm, "dns_hang")), 1.0)


async def test_https_targets_verify_against_the_bench_ca_and_close_after_each_answer(
    farm: RealisticFarm,
) -> None:
    i = one(farm, "https")
    assert farm.url(i).startswith(f"https://m{i}.farm.test:")
    status, rest = await exchange(farm, i)  # read() returning means the server closed
    assert status == b"HTTP/1.1 200 OK"
    assert b"Connection: close" in rest
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.open_connection(
            "127.0.0.1",
            farm.ports["https"],
            ssl=ssl.create_default_context(),  # the system's CAs do not know the bench CA
            server_hostname=farm.host(i),
        )


async def test_a_flipped_target_answers_503_until_flipped_back(farm: RealisticFarm) -> None:
    i = one(farm, "http")
    assert farm.url(i).startswith("http://")
    await farm.set_down([i], True)
    assert (await exchange(farm, i, tls=False))[
        0
    ] == b"HTTP/1.1 503 Service Temporarily Unavailable"
    await farm.set_down([i], False)
    assert await farm.probe(i)


async def test_refused_and_black_holed_targets_refuse_or_stay_silent(farm: RealisticFarm) -> None:
    with pytest.raises(ConnectionRefusedError):
        await exchange(farm, one(farm, "refused"))
    with pytest.raises(TimeoutError):  # accepted, then not even a TLS handshake
        await exchange(farm, one(farm, "blackhole"), wait=1.0)


async def test_a_slow_target_answers_after_its_own_delay(farm: RealisticFarm) -> None:
    slow = [i for i, kind in enumerate(farm.mix.kinds) if kind == "slow"]
    i = min(slow, key=slow_delay)
    delay = slow_delay(i)
    assert 2.0 <= delay <= 8.0
    started = time.monotonic()
    status, _ = await exchange(farm, i, wait=delay + 2)
    assert status == b"HTTP/1.1 200 OK"
    assert time.monotonic() - started >= delay - 0.05
