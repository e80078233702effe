"""The lab farm: `http://127.0.0.1:<port>/t/<i>` answers 200 "ok", or 503 while target i
is flipped down; plain HTTP on one address, kept alive, every target healthy. It is the
farm the first benchmarks ran on (`--farm lab`, presets `lab`, `lab-10k`, `lab-100k`),
kept as it was so those figures stay reproducible beside the realistic farm's.

Two implementations behind one interface:

- nginx (Debian's), when installed: one master and its workers as a child process with a
  generated config; a target is down while the file `<dir>/down/t/<i>` exists (one `stat`
  per request, no reload, so no keep-alive connection is dropped by a flip);
- otherwise an aiohttp server in its own processes (`python -m bench.farm.lab --port P`),
  one port per process, holding the down set in memory and flipped through `POST /_ctl`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import aiohttp
from aiohttp import web

from bench.farm.base import Farm, PidGroups, flip_by_files
from bench.farm.nginx import LAB_CONNECTIONS, find_nginx, start_nginx
from bench.procs import BenchError, Child, Children, free_port, with_descendants


class LabFarm(Farm):
    name = "lab"
    ports: list[int]

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i % len(self.ports)]}/t/{i}"

    async def probe(self, i: int) -> bool:
        try:
            async with aiohttp.ClientSession() as session, session.get(self.url(i)) as answer:
                return answer.status == 200
        except aiohttp.ClientError:
            return False

    async def wait_ready(self, deadline_seconds: float = 20.0) -> None:
        deadline = time.monotonic() + deadline_seconds
        for i in range(len(self.ports)):  # one target on each port
            while not await self.probe(i):
                if time.monotonic() > deadline:
                    raise BenchError(f"the {self.kind} farm did not answer on {self.url(i)}")
                await asyncio.sleep(0.05)


class AiohttpFarm(LabFarm):
    kind = "aiohttp"

    def __init__(self, children: Children, processes: int, monitors: int) -> None:
        self.monitors = monitors
        self.ports = [free_port() for _ in range(processes)]
        self.children: list[Child] = [
            children.start(
                "farm",
                f"farm-{n}",
                [sys.executable, "-m", "bench.farm.lab", "--port", str(port)],
            )
            for n, port in enumerate(self.ports)
        ]

    async def set_down(self, ids: Iterable[int], down: bool) -> dict[int, float]:
        by_port: dict[int, list[int]] = {}
        for i in ids:
            by_port.setdefault(self.ports[i % len(self.ports)], []).append(i)
        changed: dict[int, float] = {}
        async with aiohttp.ClientSession() as session:
            for port, chosen in by_port.items():
                body = {"down" if down else "up": chosen}
                at = time.time()
                async with session.post(f"http://127.0.0.1:{port}/_ctl", json=body) as answer:
                    if answer.status != 200:
                        raise BenchError(f"the farm on port {port} refused a flip")
                changed.update(dict.fromkeys(chosen, at))
        return changed

    def pid_groups(self) -> PidGroups:
        return {"farm (aiohttp)": lambda: [c.pid for c in self.children if c.alive()]}


class NginxFarm(LabFarm):
    kind = "nginx"

    def __init__(
        self, children: Children, binary: str, work_dir: Path, workers: int, monitors: int
    ) -> None:
        self.monitors = monitors
        self.dir = work_dir / "nginx"
        (self.dir / "tmp").mkdir(parents=True)
        (self.dir / "down" / "t").mkdir(parents=True)
        for path in (self.dir, self.dir / "down", self.dir / "down" / "t"):
            path.chmod(0o755)  # nginx's workers may run as another user
        self.dir.parent.chmod(0o755)
        self.ports = [free_port()]
        self.child = start_nginx(
            children,
            binary,
            self.dir,
            workers=workers,
            connections=LAB_CONNECTIONS,
            listeners=f"        listen 127.0.0.1:{self.ports[0]} backlog=4096;",
        )

    async def set_down(self, ids: Iterable[int], down: bool) -> dict[int, float]:
        return flip_by_files(self.dir / "down" / "t", ids, down)

    def pid_groups(self) -> PidGroups:
        return {
            "farm (nginx)": lambda: with_descendants(self.child.pid) if self.child.alive() else []
        }


def start_lab_farm(
    children: Children,
    work_dir: Path,
    server: str,
    monitors: int,
    aiohttp_processes: int,
    nginx_workers: int,
) -> LabFarm:
    """``server``: "auto" (nginx when installed), "nginx" or "aiohttp"."""
    binary = find_nginx()
    if server == "nginx" and binary is None:
        raise BenchError("--lab-server nginx: nginx is not installed (apt-get install nginx)")
    if server != "aiohttp" and binary is not None:
        return NginxFarm(children, binary, work_dir, nginx_workers, monitors)
    return AiohttpFarm(children, aiohttp_processes, monitors)


# --- the aiohttp farm process -----------------------------------------------------------


def _app() -> web.Application:
    down: set[int] = set()

    async def target(request: web.Request) -> web.Response:
        try:
            i = int(request.match_info["i"])
        except ValueError:
            return web.Response(status=404, text="no such target\n")
        if i in down:
            return web.Response(status=503, text="down\n")
        return web.Response(text="ok\n")

    async def control(request: web.Request) -> web.Response:
        body = await request.json()
        down.update(body.get("down", ()))
        down.difference_update(body.get("up", ()))
        return web.json_response({"down": len(down)})

    app = web.Application()
    app.router.add_get("/t/{i}", target)
    app.router.add_post("/_ctl", control)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="one process of the aiohttp target farm")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    import uvloop

    web.run_app(
        _app(),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        backlog=4096,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
