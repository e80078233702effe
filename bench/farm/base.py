"""What every farm offers the harness: a URL per monitor, a way to flip a target down and
up, which monitors should stay UP, its processes (by group, for the CPU table), and the
settings runstate needs to reach it (a DNS server, a CA)."""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench.procs import BenchError

PidGroups = dict[str, Callable[[], list[int]]]


class Farm(ABC):
    name: str  # "lab" or "realistic"
    kind: str  # what serves it, for the report
    monitors: int

    @abstractmethod
    def url(self, i: int) -> str:
        """The URL monitor ``i`` checks."""

    @abstractmethod
    async def set_down(self, ids: Iterable[int], down: bool) -> dict[int, float]:
        """Make targets ``ids`` answer 503 (``down``) or 200 again; returns once in force,
        with the time (epoch seconds) just before each target's change: no check can have
        seen the new state earlier, and it was in force a few microseconds later."""

    @abstractmethod
    def pid_groups(self) -> PidGroups:
        """The farm's processes by group (`farm: nginx`, `farm: dns`, …): its own CPU,
        reported apart from runstate's."""

    @abstractmethod
    async def probe(self, i: int) -> bool:
        """Whether target ``i`` answers 200 now, reached as a monitor reaches it."""

    def pids(self) -> list[int]:
        return [pid for pids in self.pid_groups().values() for pid in pids()]

    def category(self, i: int) -> str:
        """What target ``i`` does: `up` (answers 200, or 503 while flipped) or a failure."""
        return "up"

    def healthy(self) -> list[int]:
        """The monitors expected UP whenever they are not flipped down: flips are drawn
        from them, and lateness and false DOWN are judged on those never flipped."""
        return list(range(self.monitors))

    def runstate_env(self) -> dict[str, str]:
        """Settings every runstate process needs to reach the farm."""
        return {}

    def describe(self) -> dict[str, Any]:
        return {"farm": self.name, "served_by": self.kind}

    async def wait_ready(self, deadline_seconds: float = 20.0) -> None:
        """Until a healthy target answers 200 the way a monitor reaches it."""
        deadline = time.monotonic() + deadline_seconds
        first = self.healthy()[0]
        while not await self.probe(first):
            self.ensure_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"the {self.name} farm did not answer on {self.url(first)}")
            await asyncio.sleep(0.05)

    def ensure_alive(self) -> None:  # noqa: B027 - most farms have nothing to check
        """Raise BenchError when one of the farm's processes has exited."""

    def close(self) -> None:  # noqa: B027 - most farms hold nothing
        """Let go of what the harness itself holds for the farm (sockets); its processes
        are stopped with the run's other children."""


def flip_by_files(folder: Path, ids: Iterable[int], down: bool) -> dict[int, float]:
    """nginx answers 503 for target i while the file ``folder/i`` exists (one stat per
    request: no reload, no connection dropped): create or remove those files, and return
    the time just before each target's change."""
    changed: dict[int, float] = {}
    for i in ids:
        path = folder / str(i)
        changed[i] = time.time()
        if down:
            path.touch()
        else:
            path.unlink(missing_ok=True)
    return changed
