"""Turns per destination host, and the read-ahead slots that waiting checks lend back."""

from __future__ import annotations

import asyncio

from runstate.flow import Slots
from runstate.pipeline.destinations import PerDestinationLimit, destination_of


def test_the_destination_is_the_urls_host_in_lower_case() -> None:
    assert destination_of("https://Shop.Example.COM:8443/a?b=c") == "shop.example.com"
    assert destination_of("http://[2001:db8::1]/") == "2001:db8::1"


async def test_a_waiter_lends_its_slot_back_only_within_the_lending_bound() -> None:
    read_ahead = Slots(4)
    assert await read_ahead.take(4, asyncio.Event()) == 4  # four entries read
    limit = PerDestinationLimit(1, read_ahead, most_lent=1)
    release = asyncio.Event()
    running: list[str] = []

    async def check(name: str) -> None:
        async with limit.turn("busy.example"):
            running.append(name)
            await release.wait()

    tasks = [asyncio.create_task(check(f"c{n}")) for n in range(3)]
    await asyncio.sleep(0.01)
    assert running == ["c0"]
    assert limit.waiting == 2
    # One waiter lent its slot back; the other keeps its own, so reading stops there.
    assert limit.lent == 1
    assert read_ahead.free == 1

    release.set()
    await asyncio.gather(*tasks)
    assert running == ["c0", "c1", "c2"]
    assert (limit.waiting, limit.lent, read_ahead.free) == (0, 0, 0)


async def test_other_hosts_take_their_turns_while_one_host_is_busy() -> None:
    limit = PerDestinationLimit(1, Slots(10), most_lent=10)
    release = asyncio.Event()

    async def hold() -> None:
        async with limit.turn("busy.example"):
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    async with asyncio.timeout(1):
        async with limit.turn("other.example"):
            pass
    release.set()
    await holder
