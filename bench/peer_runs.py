"""The peers' turn, after runstate has stopped: the check client's ceiling, then the blackbox
exporter, one after the other on the same farm (bench/peers.py has what each does), each
driven flat out for the preset's `peer_seconds`, the farm's CPU measured meanwhile."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from bench.farm.dns import port_53_address
from bench.farm.realistic import RealisticFarm
from bench.peers import Blackbox, find_blackbox, private_resolv_conf_argv
from bench.procs import BenchError, PidGroups, cpu_snapshot, usage_between

if TYPE_CHECKING:
    from bench.run import Run

PEER_URLS = 10_000  # the first monitors' URLs, in the farm's proportions


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def run_peers(run: Run) -> dict[str, Any]:
    """Every target up, runstate stopped: the client ceiling, then the blackbox exporter."""
    farm, preset, options = run.farm, run.preset, run.options
    assert farm is not None
    urls_file = run.work_dir / "urls.txt"
    urls_file.write_text("\n".join(farm.url(i) for i in range(min(farm.monitors, PEER_URLS))))
    concurrency = options.setting("MONITORING_CONCURRENCY", 500)
    max_connections = options.setting("CHECK_MAX_CONNECTIONS", 1000)
    common = ["--urls-file", str(urls_file), "--duration", str(preset.peer_seconds)]
    ceiling_argv = [
        [
            *common,
            "--concurrency",
            str(concurrency),
            "--max-connections",
            str(max_connections),
            "--timeout-ms",
            str(preset.timeout_ms),
        ]
    ] * preset.workers
    out: dict[str, Any] = {
        "ceiling": await drive(run, "ceiling", ceiling_argv, {}, run.runstate_env()),
        "blackbox": None,
    }
    binary = find_blackbox()
    if not options.peers or binary is None:
        out["blackbox_missing"] = (
            "skipped (--no-blackbox)"
            if not options.peers
            else "prometheus-blackbox-exporter is not installed"
        )
        return out
    ca_file, prefix, how = None, None, "the system's DNS, plain HTTP"
    if isinstance(farm, RealisticFarm):
        prefix = _farm_dns_prefix(run, farm)
        if prefix is None:
            out["blackbox_missing"] = (
                "the exporter cannot be pointed at the farm's DNS here (it needs root: a"
                " private /etc/resolv.conf and port 53 on a loopback address)"
            )
            return out
        ca_file, how = farm.pki.ca, f"the farm's DNS ({farm.dns[-1].server}) and CA"
    exporter = Blackbox(
        run.children, binary, run.work_dir, preset.timeout_ms // 1000, ca_file, prefix
    )
    try:
        await exporter.wait_ready()
        probe_argv = [
            [
                *common,
                "--concurrency",
                str(concurrency * preset.workers),
                "--exporter",
                exporter.base,
            ]
        ]
        out["blackbox"] = await drive(run, "probe", probe_argv, {"watched": exporter.pids})
        out["blackbox"]["resolves_with"] = how
    finally:
        run.children.stop(exporter.child)
    return out


def _farm_dns_prefix(run: Run, farm: RealisticFarm) -> list[str] | None:
    """A dnsmasq for the exporter on port 53 of a loopback address of the run's own, and the
    argv prefix that gives the exporter a resolv.conf naming it; None when impossible."""
    resolv_conf = run.work_dir / "exporter-resolv.conf"
    prefix = private_resolv_conf_argv(resolv_conf)
    address = port_53_address() if prefix is not None else None
    if prefix is None or address is None:
        return None
    dns = farm.start_dns(address, 53)
    resolv_conf.write_text(f"nameserver {address}\noptions ndots:1\n")
    resolv_conf.chmod(0o644)
    return prefix if dns.child.alive() else None


async def drive(
    run: Run,
    what: str,
    argvs: list[list[str]],
    watched: PidGroups,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run the driver processes at once; sum what they counted. The CPU of ``watched`` (the
    exporter) and of the farm's processes over the measured window is reported with it."""
    assert run.farm is not None
    seconds = run.preset.peer_seconds
    say(f"peer: {what} x {len(argvs)} for {seconds:g} s")
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.peers",
            what,
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env if env is not None else dict(os.environ),
        )
        for argv in argvs
    ]
    assert processes[0].stdout is not None
    limit = seconds + 60
    try:
        await asyncio.wait_for(processes[0].stdout.readline(), limit)  # {"measuring": true}
    except TimeoutError:
        for process in processes:
            process.kill()
        raise BenchError(f"bench.peers {what} did not start measuring") from None
    groups = {**watched, **run.farm.pid_groups()}
    before = cpu_snapshot(groups)
    results = []
    for process in processes:
        try:
            output, errors = await asyncio.wait_for(process.communicate(), limit)
        except TimeoutError:
            process.kill()
            raise BenchError(f"bench.peers {what} did not finish") from None
        lines = output.decode().splitlines()
        if process.returncode != 0 or not lines:
            raise BenchError(f"bench.peers {what} failed:\n{errors.decode()[-2000:]}")
        results.append(json.loads(lines[-1]))
    usage = {u.kind: u.cpu_seconds for u in usage_between(before, cpu_snapshot(groups))}
    return {
        "processes": len(results),
        "done": sum(r["done"] for r in results),
        "ok": sum(r["ok"] for r in results),
        "per_s": sum(r["per_s"] for r in results),
        "driver_cpu_seconds": sum(r["cpu_seconds"] for r in results),
        "watched_cpu_seconds": usage.pop("watched", 0.0),
        "farm_cpu_seconds": usage,
        "seconds": seconds,
    }
