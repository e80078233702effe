"""What every long-running process does around its work: stop on SIGTERM/SIGINT, log a
heartbeat, and serve its parts (API, scheduler, workers) side by side in one event loop."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import uvicorn
from fastapi import FastAPI

log = logging.getLogger(__name__)

Component = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


async def sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop`` is set; True when stopped."""
    with suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def run_components(components: dict[str, Component]) -> None:
    """Run every component until SIGTERM or SIGINT, then let each finish its in-flight work.

    A component that fails stops the others too: a process that cannot do all of its work
    exits (and its supervisor restarts it) rather than limping on.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = {asyncio.create_task(run(stop), name=name): name for name, run in components.items()}
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        await asyncio.wait(tasks)
        for task in done | set(tasks):
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def heartbeat(
    stop: asyncio.Event, interval: float, describe: Callable[[], dict[str, object]]
) -> None:
    """Log a `heartbeat` line every ``interval`` seconds with what ``describe`` reports."""
    while not await sleep_unless_stopped(stop, interval):
        log.info("heartbeat", extra=describe())


class _Server(uvicorn.Server):
    # The process owns signal handling (`run_components`): uvicorn must neither install its
    # own handlers nor re-raise the signal after shutting down, which would turn a clean
    # stop into death by SIGTERM.
    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def api_component(app: FastAPI, host: str, port: int, shutdown_timeout: float) -> Component:
    async def serve(stop: asyncio.Event) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            loop="none",
            http="httptools",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=int(shutdown_timeout),
        )
        server = _Server(config)
        serving = asyncio.create_task(server.serve())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        stopped.cancel()
        await serving
        if not server.started:
            raise RuntimeError(f"the API could not listen on {host}:{port}")

    return serve
