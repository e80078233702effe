"""What every long-running process does around its work: stop on SIGTERM/SIGINT, log a
heartbeat, and serve its parts (API, scheduler, workers) side by side in one event loop."""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import socket
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the web stack is imported by the processes that serve the API only
    from fastapi import FastAPI

log = logging.getLogger(__name__)

# Beyond the shutdown timeout: time for components to close connections after draining.
SHUTDOWN_GRACE = 5.0

Component = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


class ComponentFailed(Exception):
    """A component of the process stopped with an error (logged, with its traceback, when
    it happened); the process stops too."""

    def __init__(self, component: str) -> None:
        super().__init__(f"the {component} component failed")
        self.component = component


async def sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop`` is set; True when stopped."""
    with suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def run_components(components: dict[str, Component], shutdown_timeout: float = 10.0) -> None:
    """Run every component until SIGTERM or SIGINT, then let each finish its in-flight work
    within ``shutdown_timeout`` (plus a little for closing); what is still running then is
    cancelled, so a stop is always bounded.

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
        _, lingering = await asyncio.wait(tasks, timeout=shutdown_timeout + SHUTDOWN_GRACE)
        for task in lingering:
            log.warning(
                "component did not stop in time; cancelling it", extra={"component": tasks[task]}
            )
            task.cancel()
        if lingering:
            await asyncio.wait(lingering)
        failed = [
            task
            for task in [*done, *(t for t in tasks if t not in done)]
            if not task.cancelled() and task.exception() is not None
        ]
        for task in failed:
            error = task.exception()
            log.error(
                "component failed; stopping the process",
                extra={"component": tasks[task], "error": f"{type(error).__name__}: {error}"},
                exc_info=error,
            )
        if failed:
            raise ComponentFailed(tasks[failed[0]]) from failed[0].exception()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def heartbeat(
    stop: asyncio.Event, interval: float, describe: Callable[[], dict[str, object]]
) -> None:
    """Log a `heartbeat` line every ``interval`` seconds with what ``describe`` reports."""
    while not await sleep_unless_stopped(stop, interval):
        log.info("heartbeat", extra=describe())


def bind_api_socket(host: str, port: int) -> socket.socket:
    """The API's listening socket, bound now: an address that is not this machine's or a
    port in use stops the process at start-up (OSError), before it does any work, instead
    of after its other parts have started."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def api_component(app: FastAPI, sock: socket.socket, shutdown_timeout: float) -> Component:
    """Serve ``app`` on ``sock`` (from :func:`bind_api_socket`) until told to stop, then give
    open requests ``shutdown_timeout`` seconds."""
    import uvicorn

    class _Server(uvicorn.Server):
        # The process owns signal handling (`run_components`): uvicorn must neither install
        # its own handlers nor re-raise the signal after shutting down, which would turn a
        # clean stop into death by SIGTERM.
        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    async def serve(stop: asyncio.Event) -> None:
        config = uvicorn.Config(
            app,
            loop="none",
            http="httptools",
            log_config=None,
            access_log=False,
            # Whole seconds, and never 0, which uvicorn reads as "wait for ever".
            timeout_graceful_shutdown=max(1, math.ceil(shutdown_timeout)),
        )
        server = _Server(config)

        async def run_server() -> None:
            # uvicorn ends a failed start-up with sys.exit(); as a task's SystemExit that
            # would escape the event loop past every clean-up.
            try:
                await server.serve(sockets=[sock])
            except SystemExit as exc:
                raise RuntimeError(
                    f"the API stopped at start-up (uvicorn exit {exc.code})"
                ) from None

        serving = asyncio.create_task(run_server())
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
            server.should_exit = True
            stopped.cancel()
            await serving
        finally:
            sock.close()
        if not server.started:
            raise RuntimeError("the API did not start")

    return serve
