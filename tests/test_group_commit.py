"""Group commit: concurrent callers, one write; each caller learns of its own item."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from runstate.group_commit import GroupCommit


class Writes:
    """The flush function: records each group; fails while ``failing`` is set; a group
    waits for ``gate`` when one is given."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.failing = False
        self.gate: asyncio.Event | None = None

    async def __call__(self, items: Sequence[int]) -> None:
        self.groups.append(list(items))
        if self.gate is not None:
            await self.gate.wait()
        if self.failing:
            raise ConnectionError("database unavailable")


async def test_a_full_group_is_written_at_once_without_waiting_for_its_age() -> None:
    writes = Writes()
    commit = GroupCommit(writes, max_items=3, max_wait=3600)
    await asyncio.wait_for(asyncio.gather(*(commit.add(n) for n in range(3))), 5)
    assert writes.groups == [[0, 1, 2]]


async def test_a_lone_item_is_written_once_it_has_waited_max_wait() -> None:
    writes = Writes()
    commit = GroupCommit(writes, max_items=100, max_wait=0.05)
    adding = asyncio.create_task(commit.add(7))
    await asyncio.sleep(0.01)
    assert writes.groups == []  # still gathering
    await asyncio.wait_for(adding, 5)
    assert writes.groups == [[7]]


async def test_a_failed_write_fails_the_callers_of_its_group_only() -> None:
    writes = Writes()
    commit = GroupCommit(writes, max_items=2, max_wait=3600)
    writes.failing = True
    results = await asyncio.gather(commit.add(1), commit.add(2), return_exceptions=True)
    assert [type(r) for r in results] == [ConnectionError, ConnectionError]
    writes.failing = False
    await asyncio.wait_for(asyncio.gather(commit.add(3), commit.add(4)), 5)
    assert writes.groups == [[1, 2], [3, 4]]


async def test_items_that_arrive_while_the_writes_are_busy_go_together_into_the_next() -> None:
    writes = Writes()
    writes.gate = asyncio.Event()
    commit = GroupCommit(writes, max_items=2, max_wait=0.01, max_flushes=1)
    first = asyncio.gather(commit.add(1), commit.add(2))
    await asyncio.sleep(0.02)
    later = asyncio.gather(*(commit.add(n) for n in (3, 4, 5)))
    await asyncio.sleep(0.05)
    assert writes.groups == [[1, 2]], "one write at a time"
    writes.gate.set()
    await asyncio.wait_for(asyncio.gather(first, later), 5)
    # The next write takes what gathered meanwhile at once, up to max_items, then the rest.
    assert writes.groups == [[1, 2], [3, 4], [5]]


async def test_a_cancelled_caller_does_not_break_the_write_of_the_others() -> None:
    writes = Writes()
    commit = GroupCommit(writes, max_items=10, max_wait=0.05)
    leaving = asyncio.create_task(commit.add(1))
    staying = asyncio.create_task(commit.add(2))
    await asyncio.sleep(0)
    leaving.cancel()
    await asyncio.wait_for(staying, 5)
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert writes.groups == [[1, 2]]


async def test_a_cancelled_write_cancels_its_callers_instead_of_leaving_them_waiting() -> None:
    writes = Writes()
    writes.gate = asyncio.Event()  # never set: the write hangs until cancelled
    commit = GroupCommit(writes, max_items=2, max_wait=3600)
    callers = asyncio.gather(commit.add(1), commit.add(2), return_exceptions=True)
    await asyncio.sleep(0.01)
    await commit.aclose(grace_seconds=0.05)
    results = await asyncio.wait_for(callers, 5)
    assert [type(r) for r in results] == [asyncio.CancelledError, asyncio.CancelledError]


async def test_after_close_nothing_gathered_is_written_and_nothing_more_is_taken() -> None:
    writes = Writes()
    commit = GroupCommit(writes, max_items=10, max_wait=3600)
    waiting = asyncio.create_task(commit.add(1))
    await asyncio.sleep(0.01)
    await commit.aclose()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, 5)
    with pytest.raises(RuntimeError, match="closed"):
        await commit.add(2)
    assert writes.groups == []
