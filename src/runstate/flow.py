"""Flow control shared by the workers: how much work a consumer takes on, and how the
verdicts of concurrent entries come back as each is ready."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Mapping
from typing import TypeVar

T = TypeVar("T")


class Slots:
    """A pool of slots taken and given back in any amount: a consumer's read-ahead.

    The consumer takes one slot per entry it reads and gives it back when the entry is
    settled. A handler may lend slots back while an entry waits on something that is not
    the worker's own work (a busy destination, see the monitoring stage) and take them
    again, without waiting, when the entry resumes: ``free`` may then dip below zero
    for a moment, and nothing more is read until it is positive again.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self._freed = asyncio.Event()

    async def take(self, most: int, stop: asyncio.Event) -> int:
        """Wait for a free slot, then take up to ``most``; 0 when ``stop`` is set first."""
        while self.free <= 0 and not stop.is_set():
            self._freed.clear()
            await first_of(self._freed.wait(), stop.wait())
        if stop.is_set():
            return 0
        taken = min(most, self.free)
        self.free -= taken
        return taken

    def take_now(self, count: int) -> None:
        self.free -= count

    def give_back(self, count: int) -> None:
        self.free += count
        if self.free > 0:
            self._freed.set()


async def as_settled(running: Mapping[str, Awaitable[T]]) -> AsyncGenerator[dict[str, T], None]:
    """Run every entry's coroutine concurrently and yield the results as they finish, those
    that finish together in one part. Closing the iterator early (shutdown) cancels what is
    still running and waits for it."""
    finished: list[asyncio.Future[T]] = []
    woken = asyncio.Event()

    def on_done(task: asyncio.Future[T]) -> None:
        finished.append(task)
        woken.set()

    # A done callback per task, not asyncio.wait over the ones left: that would visit every
    # unfinished task again on each completion (quadratic in the batch size).
    tasks: dict[asyncio.Future[T], str] = {}
    for entry_id, coro in running.items():
        started = asyncio.ensure_future(coro)
        started.add_done_callback(on_done)
        tasks[started] = entry_id
    left = len(tasks)
    try:
        while left:
            await woken.wait()
            woken.clear()
            part, finished[:] = finished[:], []
            left -= len(part)
            yield {tasks[done]: done.result() for done in part}
    finally:
        unfinished = [pending for pending in tasks if not pending.done()]
        for pending in unfinished:
            pending.cancel()
        if unfinished:
            await asyncio.wait(unfinished)


async def first_of(*waits: Awaitable[object]) -> None:
    """Return when the first of ``waits`` is done; the others are cancelled."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
