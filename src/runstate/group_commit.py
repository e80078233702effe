"""Group commit: many concurrent callers, one write.

The monitoring stage finishes checks one at a time, at any moment; writing each result in a
transaction of its own would cost the database a commit per check. A :class:`GroupCommit`
gathers what its callers add and writes it together, yet each caller learns on its own when
its item is durable, so nothing waits for an unrelated slow check.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupCommit(Generic[T]):
    """Hands the items of concurrent :meth:`add` calls to ``flush`` together: as soon as
    ``max_items`` have gathered, or when the oldest has waited ``max_wait`` seconds,
    whichever comes first.

    ``add`` returns once the flush that took its item has returned, and raises what that
    flush raised. At most ``max_flushes`` flushes run at once (a slow database is not
    hammered with more); items that arrive meanwhile gather, and the next flush takes them
    all as soon as one ends.
    """

    def __init__(
        self,
        flush: Callable[[Sequence[T]], Awaitable[None]],
        *,
        max_items: int,
        max_wait: float,
        max_flushes: int = 2,
    ) -> None:
        self._flush = flush
        self.max_items = max_items
        self.max_wait = max_wait
        self.max_flushes = max_flushes
        self._gathered: list[tuple[T, asyncio.Future[None]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()
        self._closed = False

    async def add(self, item: T) -> None:
        if self._closed:
            raise RuntimeError("closed: nothing more is written")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._gathered.append((item, future))
        if len(self._gathered) >= self.max_items:
            self._start_flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.max_wait, self._start_flush)
        await future

    def _start_flush(self) -> None:
        if self._closed or len(self._flushing) >= self.max_flushes or not self._gathered:
            return  # a running flush starts the next one when it ends
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        taken, self._gathered = self._gathered[: self.max_items], self._gathered[self.max_items :]
        task = asyncio.create_task(self._run(taken))
        self._flushing.add(task)
        task.add_done_callback(self._flush_ended)
        if self._gathered and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.max_wait, self._start_flush)

    async def _run(self, taken: list[tuple[T, asyncio.Future[None]]]) -> None:
        outcome: BaseException | None = None
        try:
            await self._flush([item for item, _ in taken])
        except BaseException as exc:
            outcome = exc
            if not isinstance(exc, Exception):
                raise  # cancelled (at close) or exiting; the callers hear of it below
        finally:
            for _, future in taken:
                if future.done():  # a caller cancelled meanwhile no longer listens
                    continue
                if outcome is None:
                    future.set_result(None)
                elif isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.cancel()

    def _flush_ended(self, task: asyncio.Task[None]) -> None:
        self._flushing.discard(task)
        # What gathered during the flush has waited long enough: take it at once.
        self._start_flush()

    async def aclose(self, grace_seconds: float = 10.0) -> None:
        """Start no more flushes, give those under way ``grace_seconds`` to end, then
        cancel them. Items not yet taken are not written: their callers are told the write
        was cancelled (at shutdown the entries behind them stay pending)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for _, future in self._gathered:
            future.cancel()
        self._gathered = []
        if self._flushing:
            _, unfinished = await asyncio.wait(set(self._flushing), timeout=grace_seconds)
            for task in unfinished:
                task.cancel()
            if unfinished:
                await asyncio.wait(unfinished)
