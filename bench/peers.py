"""What runstate is compared with, on the same farm, in the same run:

- `ceiling`: the raw ceiling of the check client: `HttpCheck(allow_private=True).run(job)`,
  the class the monitoring workers use, with their connection limit and their resolver
  (the DNS_* settings), in a tight loop at their concurrency, without the pipeline (no
  queue, no database, no state);
- `probe`: prometheus-blackbox-exporter (Debian's), when installed, with an `http_2xx`
  module, driven through `GET /probe` at full concurrency. On the realistic farm it trusts
  the bench CA (`tls_config.ca_file`) and resolves with the farm's DNS: Go's resolver only
  reads /etc/resolv.conf and only asks port 53, so the exporter runs in a mount namespace
  of its own (`unshare --mount`) where /etc/resolv.conf is a file naming a dnsmasq on a
  loopback address of the run's, port 53. The exporter opens a connection per probe
  anyway, and nginx closes it after the answer.

Each driver is its own process (`python -m bench.peers ceiling|probe …`) printing one JSON
line: what it counted over the measured window, after a short warm-up, and the CPU seconds
it spent meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from bench.procs import BenchError, Child, Children, free_port

BLACKBOX_PATHS = ("/usr/bin/prometheus-blackbox-exporter",)
WARMUP_SECONDS = 1.0

_BLACKBOX_CONFIG = """\
modules:
  http_2xx:
    prober: http
    timeout: {timeout}s
    http:
      method: GET
      preferred_ip_protocol: ip4
      ip_protocol_fallback: false
"""
_TLS_CONFIG = """\
      tls_config:
        ca_file: {ca}
"""
# Bind the generated resolv.conf over /etc/resolv.conf in this namespace only, then exec.
_WITH_RESOLV_CONF = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'


def find_blackbox() -> str | None:
    for name in ("prometheus-blackbox-exporter", "blackbox_exporter"):
        found = shutil.which(name)
        if found:
            return found
    return next((p for p in BLACKBOX_PATHS if Path(p).is_file()), None)


def private_resolv_conf_argv(resolv_conf: Path) -> list[str] | None:
    """The argv prefix that runs a command with ``resolv_conf`` as its /etc/resolv.conf (a
    private mount namespace: root only), or None when that cannot be done here."""
    unshare, sh = shutil.which("unshare"), shutil.which("sh")
    if unshare is None or sh is None or os.geteuid() != 0:
        return None
    return [
        unshare,
        "--mount",
        "--propagation",
        "private",
        "--",
        sh,
        "-c",
        _WITH_RESOLV_CONF,
        str(resolv_conf),
    ]


class Blackbox:
    """A blackbox exporter as a child process, with a generated config: trusting ``ca_file``
    when given, run under ``prefix`` (see :func:`private_resolv_conf_argv`) when given."""

    def __init__(
        self,
        children: Children,
        binary: str,
        work_dir: Path,
        timeout_s: int,
        ca_file: Path | None = None,
        prefix: list[str] | None = None,
    ) -> None:
        config = work_dir / "blackbox.yml"
        text = _BLACKBOX_CONFIG.format(timeout=timeout_s)
        if ca_file is not None:
            text += _TLS_CONFIG.format(ca=ca_file)
        config.write_text(text)
        self.port = free_port()
        self.child: Child = children.start(
            "blackbox-exporter",
            "blackbox-exporter",
            [
                *(prefix or []),
                binary,
                f"--config.file={config}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
        )

    def pids(self) -> list[int]:
        return [self.child.pid] if self.child.alive() else []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_ready(self, deadline_seconds: float = 20.0) -> None:
        deadline = time.monotonic() + deadline_seconds
        async with aiohttp.ClientSession() as session:
            while True:
                if not self.child.alive():
                    raise BenchError(f"blackbox exporter exited:\n{self.child.log_tail()}")
                try:
                    async with session.get(f"{self.base}/metrics") as answer:
                        if answer.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise BenchError("blackbox exporter did not start listening")
                await asyncio.sleep(0.1)


# --- the driver processes --------------------------------------------------------------


async def _tight_loop(
    concurrency: int, duration: float, once: Callable[[int], Awaitable[bool]]
) -> dict[str, Any]:
    """Run ``once(i)`` back to back in ``concurrency`` tasks; count what completes within
    the measured window (after WARMUP_SECONDS) and the CPU this process spent in it. A line
    `{"measuring": true}` on stdout tells the harness when the window opens. What is still
    running when it closes (a black-holed target's request, say) is cancelled."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from, stop_at = start + WARMUP_SECONDS, start + WARMUP_SECONDS + duration
    counts = {"done": 0, "ok": 0}
    cpu: dict[str, float] = {}

    def window_opens() -> None:
        cpu["start"] = time.process_time()
        sys.stdout.write(json.dumps({"measuring": True}) + "\n")
        sys.stdout.flush()

    def window_closes() -> None:
        cpu["end"] = time.process_time()

    loop.call_at(measure_from, window_opens)
    loop.call_at(stop_at, window_closes)

    async def worker(k: int) -> None:
        i = k
        while loop.time() < stop_at:
            ok = await once(i)
            i += concurrency
            if measure_from <= loop.time() < stop_at:
                counts["done"] += 1
                counts["ok"] += ok

    tasks = [asyncio.create_task(worker(k)) for k in range(concurrency)]
    await asyncio.sleep(max(stop_at - loop.time(), 0.0))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "done": counts["done"],
        "ok": counts["ok"],
        "seconds": duration,
        "per_s": counts["done"] / duration,
        "cpu_seconds": cpu.get("end", 0.0) - cpu.get("start", 0.0),
    }


async def ceiling(
    urls: list[str], concurrency: int, duration: float, max_connections: int, timeout_ms: int
) -> dict[str, Any]:
    from runstate.checks.http import HttpCheck
    from runstate.domain.events import CheckJob
    from runstate.domain.status import Status
    from runstate.resolve import CachingResolver
    from runstate.settings import load_settings

    now = datetime.now(UTC)
    jobs = [
        CheckJob(
            website_id=uuid.uuid4(),
            url=url,
            method="GET",
            timeout_ms=timeout_ms,
            expected_status="200-399",
            keyword=None,
            confirmations=1,
            recovery_confirmations=1,
            interval_seconds=60,
            scheduled_at=now,
        )
        for url in urls
    ]
    # As a monitoring worker builds it: the resolver from the DNS_* settings (the farm's
    # DNS_SERVERS), the CA from SSL_CERT_FILE.
    resolver = CachingResolver.from_settings(load_settings())
    check = HttpCheck(allow_private=True, max_connections=max_connections, resolver=resolver)

    async def once(i: int) -> bool:
        result = await check.run(jobs[i % len(jobs)])
        return result.status is Status.UP

    try:
        return await _tight_loop(concurrency, duration, once)
    finally:
        await check.aclose()
        await resolver.close()


async def probe(
    exporter: str, urls: list[str], concurrency: int, duration: float
) -> dict[str, Any]:
    probes = [f"{exporter}/probe?module=http_2xx&target={quote(url, safe='')}" for url in urls]
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def once(i: int) -> bool:
            try:
                async with session.get(probes[i % len(probes)]) as answer:
                    return b"\nprobe_success 1" in await answer.read()
            except aiohttp.ClientError:
                return False

        return await _tight_loop(concurrency, duration, once)


def main() -> None:
    parser = argparse.ArgumentParser(description="the benchmark's peers")
    parser.add_argument("what", choices=["ceiling", "probe"])
    parser.add_argument("--urls-file", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--max-connections", type=int, default=1000)
    parser.add_argument("--timeout-ms", type=int, default=10_000)
    parser.add_argument("--exporter", default="")
    args = parser.parse_args()
    urls = args.urls_file.read_text().split()
    import uvloop

    if args.what == "ceiling":
        work = ceiling(urls, args.concurrency, args.duration, args.max_connections, args.timeout_ms)
    else:
        work = probe(args.exporter, urls, args.concurrency, args.duration)
    result = uvloop.run(work)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
