"""`python -m bench --preset smoke|10k|100k|up-smoke|up-10k|lab|lab-10k|lab-100k`: one
benchmark run, start to finish, of runstate in one of two modes (bench/modes.py): the
distributed pipeline on PostgreSQL and Redis, or `runstate up` in one process on SQLite and
its in-process queue; on one of two farms (bench/farm/): realistic or lab.

1. the database (a scratch PostgreSQL database or a SQLite file), created and `runstate
   migrate`d, and, in distributed mode, a clean Redis database with stream names of its own;
2. the target farm and a webhook receiver;
3. runstate: `runstate scheduler`, N x `runstate worker monitoring`, `runstate worker
   status-change`, `runstate worker notification` as separate processes, or `runstate up`;
   the monitors seeded meanwhile;
4. once every monitor has been checked once, the measured window: targets flipped down and
   up in cycles, incidents watched (NOTIFY, or a poll), CPU and metrics sampled at both ends;
5. runstate stopped, then side by side on the same farm: the check client's raw ceiling
   and, when installed, prometheus-blackbox-exporter;
6. the report: bench/results/<preset>-<date>.md and .json, and one summary line, last.

The command line is bench/options.py, the peers' turn bench/peer_runs.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from bench import measure, outcomes, profile, report
from bench.farm import Farm, start_farm
from bench.modes import Distributed, Mode, Up
from bench.options import Options, parse_args
from bench.peer_runs import run_peers
from bench.procs import (
    BenchError,
    Child,
    Children,
    busy_cpu_seconds,
    cpu_snapshot,
    free_port,
    log_digest,
    rss_kib,
    usage_between,
)
from bench.seed import seed_rows

FLIP_LEAD_SECONDS = 1.0
DRAIN_SECONDS = 2.0


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Window:
    start: float = 0.0
    end: float = 0.0

    @property
    def seconds(self) -> float:
        return self.end - self.start


def plan_flips(candidates: list[int], size: int, cycles: int, seed: int) -> list[list[int]]:
    """``size`` targets per cycle drawn from ``candidates`` (the healthy ones), a fresh set
    each cycle while any is left. On the lab farm, where every target is a candidate, this is
    the draw the first lab figures were measured with."""
    n = len(candidates)
    order = random.Random(seed).sample(candidates, n)  # noqa: S311 - not security
    return [[order[(c * size + k) % n] for k in range(min(size, n))] for c in range(cycles)]


class Run:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.preset = options.preset
        self.run_id = uuid.uuid4().hex[:8]
        self.work_dir = Path(tempfile.mkdtemp(prefix=f"runstate-bench-{self.run_id}-"))
        self.children = Children(self.work_dir)
        self.mode: Mode = (
            Up(self.work_dir)
            if self.preset.mode == "up"
            else Distributed(
                options.postgres_url, options.redis_url, self.run_id, self.preset.workers
            )
        )
        self.webhook_secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
        self.metrics_ports: dict[str, int] = {}
        self.farm: Farm | None = None
        self.receiver_port = 0
        self.website_ids: list[uuid.UUID] = []
        self.idle_rss_kib: dict[str, int] = {}  # per process kind, before any monitor
        self.window = Window()
        self.timings: dict[str, float] = {}
        self.profiles: dict[str, Any] = {}
        self.logs: dict[str, Any] = {}
        self.environment: dict[str, Any] = {}
        self.failed = True
        self.t0 = time.monotonic()

    def mark(self, name: str) -> None:
        self.timings[name] = round(time.monotonic() - self.t0, 2)

    # --- set-up ---------------------------------------------------------------------------

    def start_receiver(self) -> None:
        self.receiver_port = free_port()
        self.children.start(
            "receiver",
            "receiver",
            [
                sys.executable,
                "-m",
                "bench.receiver",
                "--port",
                str(self.receiver_port),
                "--secret",
                self.webhook_secret,
            ],
        )

    def runstate_env(self) -> dict[str, str]:
        """The environment of every runstate process: default settings, but for loopback
        targets, short intervals, the mode's database and queue, the farm's DNS server and
        CA, and `--env`."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNSTATE_", "SMTP_"))}
        for name in ("ADMIN_EMAIL", "ADMIN_PASSWORD", "DATABASE_URL", "REDIS_URL", "REDIS_ADDR"):
            env.pop(name, None)
        env.update(self.mode.env())
        env.update(
            ALLOW_PRIVATE_TARGETS="true",
            MIN_CHECK_INTERVAL_SECONDS="1",
            HOST="127.0.0.1",
            APP_ENV="dev",
            LOG_LEVEL="INFO",
            HEARTBEAT_INTERVAL_SECONDS="10",
            NOTIFY_RETRY_BASE_SECONDS="0.1",
            RUNSTATE_DATA_DIR=str(self.work_dir / "data"),
        )
        if self.farm is not None:
            env.update(self.farm.runstate_env())
        env.update(self.options.env)
        return env

    def ensure_runstate_alive(self) -> None:
        self.children.ensure_alive(self.mode.kinds)
        if self.farm is not None:
            self.farm.ensure_alive()

    async def wait_runstate_ready(self, session: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + 60
        while True:
            self.ensure_runstate_alive()
            scrapes = [await measure.scrape(session, p) for p in self.metrics_ports.values()]
            answering = all(scrapes)
            if answering and measure.counter(scrapes, "runstate_scheduler_active"):
                return
            if time.monotonic() > deadline:
                what = "the scheduler did not get its lease" if answering else "no metrics"
                raise BenchError(f"runstate did not start within 60 s: {what}")
            await asyncio.sleep(0.2)

    async def wait_first_checks(self) -> None:
        """Until every monitor has been checked once: its status is known, so a flip opens
        an incident, and the start-up (states seeded from the database) is behind."""
        deadline = time.monotonic() + 2 * self.preset.interval + 120
        while True:
            self.ensure_runstate_alive()
            left = await self.mode.store.unchecked_monitors()
            if left == 0:
                return
            if time.monotonic() > deadline:
                raise BenchError(f"{left} monitors were never checked")
            await asyncio.sleep(0.25)

    # --- the measured window --------------------------------------------------------------

    def flip_plan(self) -> list[list[int]]:
        """The targets flipped down in each cycle: see :func:`plan_flips`. A cycle is down
        for one interval plus a margin, then up as long: long enough for every flipped
        monitor to be checked, detected, recovered and alerted within it."""
        assert self.farm is not None
        size = max(1, round(self.preset.down_share * len(self.website_ids)))
        cycles = int((self.preset.duration - FLIP_LEAD_SECONDS) // (2 * self.half_cycle()))
        return plan_flips(self.farm.healthy(), size, cycles, self.options.seed)

    def half_cycle(self) -> float:
        return self.preset.interval + max(2.0, 0.25 * self.preset.interval)

    async def sleep_until(self, moment: float) -> None:
        while (left := moment - time.time()) > 0:
            self.ensure_runstate_alive()
            await asyncio.sleep(min(left, 1.0))

    async def flip_cycles(self) -> list[measure.Flip]:
        assert self.farm is not None
        flips: list[measure.Flip] = []
        half = self.half_cycle()
        plan = self.flip_plan()
        if not plan:
            say(f"the window is too short for a flip cycle ({2 * half + FLIP_LEAD_SECONDS:g} s)")
        for c, targets in enumerate(plan):
            down_at = self.window.start + FLIP_LEAD_SECONDS + 2 * c * half
            await self.sleep_until(down_at)
            went_down = await self.farm.set_down(targets, True)
            say(f"cycle {c + 1}: {len(targets)} targets down")
            await self.sleep_until(down_at + half)
            came_up = await self.farm.set_down(targets, False)
            flips += [measure.Flip(self.website_ids[i], went_down[i], came_up[i]) for i in targets]
            say(f"cycle {c + 1}: targets up again")
        await self.sleep_until(self.window.end)
        return flips

    def pid_groups(self) -> dict[str, Callable[[], list[int]]]:
        def of(kind: str) -> Callable[[], list[int]]:
            return lambda: [c.pid for c in self.children.of_kind(kind)]

        assert self.farm is not None
        groups: dict[str, Callable[[], list[int]]] = {k: of(k) for k in self.mode.kinds}
        groups.update(self.farm.pid_groups())
        groups["webhook receiver"] = of("receiver")
        groups.update(self.mode.service_pids())
        groups["bench harness"] = lambda: [os.getpid()]
        return groups

    async def measured_window(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        groups = self.pid_groups()
        services_before = await self.mode.service_identities()
        before_cpu, busy_before = cpu_snapshot(groups), busy_cpu_seconds()
        before = {n: await measure.scrape(session, p) for n, p in self.metrics_ports.items()}
        stores_before = await self.mode.counters()
        self.window.start = time.time()
        self.window.end = self.window.start + self.preset.duration
        watcher = measure.IncidentWatcher(
            self.mode.store, datetime.fromtimestamp(self.window.start, UTC) - timedelta(60)
        )
        stop = asyncio.Event()
        watching = asyncio.create_task(watcher.run(stop))
        profiles = await self.start_profiles()
        try:
            flips = await self.flip_cycles()
            after_cpu, busy_after = cpu_snapshot(groups), busy_cpu_seconds()
            usage = usage_between(before_cpu, after_cpu)  # peaks read while they still run
            after = {n: await measure.scrape(session, p) for n, p in self.metrics_ports.items()}
            stores_after = await self.mode.counters()
            await asyncio.sleep(DRAIN_SECONDS)  # the last batches commit, the last alerts land
        finally:
            stop.set()
            await watching
        arrivals = await self.receiver_log(session)
        await self.finish_profiles(profiles)
        services_after = await self.mode.service_identities()
        self.environment = {
            "machine_busy_cores": (busy_after - busy_before) / self.window.seconds,
            "run_cores": sum(u.cpu_seconds for u in usage) / self.window.seconds,
            # A restart during the window means the run measured a fault, not runstate.
            "services_restarted": [
                name
                for name, identity in services_before.items()
                if services_after.get(name) != identity
            ],
            "load_average": os.getloadavg(),
        }
        return {
            "flips": flips,
            "watcher": watcher,
            "arrivals": arrivals,
            "usage": usage,
            "scrapes": (before, after),
            "stores": (stores_before, stores_after),
        }

    async def receiver_log(self, session: aiohttp.ClientSession) -> list[dict[str, Any]]:
        async with session.get(f"http://127.0.0.1:{self.receiver_port}/_log") as answer:
            arrivals: list[dict[str, Any]] = await answer.json()
        return arrivals

    # --- profiles (py-spy, when installed and asked for) ---------------------------------

    async def start_profiles(self) -> list[profile.Recording]:
        if not self.options.profile:
            return []
        binary = profile.find_py_spy()
        if binary is None:
            self.profiles = {"error": "py-spy is not installed (pip install py-spy)"}
            say("--profile: py-spy is not installed; no profiles")
            return []
        targets = {c.name: c.pid for c in self.runstate_children() if c.alive()}
        directory = self.options.results_dir / f"profiles-{self.preset.name}-{self.run_id}"
        return await profile.start(binary, targets, self.preset.duration, directory)

    async def finish_profiles(self, recordings: list[profile.Recording]) -> None:
        if recordings:
            self.profiles = await profile.finish(recordings, self.preset.duration)

    # --- after the window ---------------------------------------------------------------

    def runstate_children(self) -> list[Child]:
        return [c for c in self.children.started if c.kind in self.mode.kinds]

    def rss_by_kind(self) -> dict[str, int]:
        """The largest resident set of each kind of runstate process now, in KiB."""
        sizes: dict[str, int] = {}
        for child in self.runstate_children():
            sizes[child.kind] = max(sizes.get(child.kind, 0), rss_kib(child.pid) or 0)
        return sizes

    async def stop_runstate(self) -> None:
        await asyncio.to_thread(self.children.stop_many, self.runstate_children(), 30.0)

    # --- the whole run ------------------------------------------------------------------

    async def execute(self) -> dict[str, Any]:
        try:
            results = await self._execute()
            self.failed = False
            return results
        finally:
            await self.cleanup()

    async def _execute(self) -> dict[str, Any]:
        preset, mode = self.preset, self.mode
        say(
            f"preset {preset.name}, {mode.name} mode: {preset.monitors} monitors every"
            f" {preset.interval} s, {preset.workers} monitoring worker(s),"
            f" window {preset.duration:g} s"
        )
        self.farm = start_farm(
            self.children,
            self.work_dir,
            farm=preset.farm,
            monitors=preset.monitors,
            shares=self.options.shares,
            seed=self.options.seed,
            lab_server=self.options.lab_server,
            lab_processes=preset.farm_processes,
        )
        self.start_receiver()
        await mode.prepare()
        self.mark("migrated")
        self.metrics_ports = mode.start(self.children, self.runstate_env())
        await self.farm.wait_ready()
        rows = seed_rows(
            [self.farm.url(i) for i in range(preset.monitors)],
            interval_seconds=preset.interval,
            timeout_ms=preset.timeout_ms,
            webhook_url=f"http://127.0.0.1:{self.receiver_port}/hook",
            webhook_secret=self.webhook_secret,
        )
        async with aiohttp.ClientSession() as session:
            await self.wait_runstate_ready(session)
            self.mark("pipeline_ready")
            # Before there is any monitor: what each process holds per monitor is then its
            # peak above this, divided by the monitors.
            self.idle_rss_kib = self.rss_by_kind()
            await mode.store.seed(rows)
            self.website_ids = rows.website_ids
            self.mark("seeded")
            say(
                f"farm: {self.farm.name} ({self.farm.kind}); {preset.monitors} monitors in"
                f" {mode.store.description}; waiting for every monitor's first check"
            )
            await self.wait_first_checks()
            self.mark("first_checks_done")
            say("every monitor checked once: measuring")
            window = await self.measured_window(session)
            self.mark("window_done")
        await self.stop_runstate()
        self.logs = {c.name: log_digest(c) for c in self.runstate_children()}
        checks = await mode.store.check_rows(
            datetime.fromtimestamp(self.window.start, UTC),
            datetime.fromtimestamp(self.window.end, UTC) + timedelta(seconds=preset.interval),
        )
        window["down_rows"] = await mode.store.down_checks()
        peers = await run_peers(self)
        self.mark("peers_done")
        return self.analyse(window, checks, peers, len(rows.users))

    def analyse(
        self, window: dict[str, Any], rows: list[Any], peers: dict[str, Any], users: int
    ) -> dict[str, Any]:
        assert self.farm is not None
        span = (self.window.start, self.window.end)
        flipped = {flip.website_id for flip in window["flips"]}
        roles = outcomes.Roles.of(self.farm, self.website_ids, flipped)
        grid = measure.grid_analysis(rows, roles.answering, self.preset.interval, span)
        healthy_grid = measure.grid_analysis(rows, roles.healthy, self.preset.interval, span)
        recorded = sum(1 for _, created_at, _ in rows if created_at.timestamp() < self.window.end)
        return report.build(
            run=self,
            users=users,
            grid=grid,
            healthy_grid=healthy_grid,
            false_down=outcomes.false_down(window["down_rows"], roles.healthy, span[0]),
            failing=outcomes.failing_outcomes(
                roles,
                rows,
                window["down_rows"],
                span,
                self.preset.interval,
                self.preset.timeout_ms,
            ),
            recorded=recorded,
            latencies=measure.latencies(
                window["flips"], window["watcher"], window["arrivals"], set(roles.healthy)
            ),
            usage=window["usage"],
            scrapes=window["scrapes"],
            stores=window["stores"],
            peers=peers,
            profiles=self.profiles,
        )

    async def cleanup(self) -> None:
        await asyncio.to_thread(self.children.stop_all)
        if self.farm is not None:
            self.farm.close()
        with contextlib.suppress(Exception):
            await self.mode.finish(keep=self.options.keep)
        if self.options.keep:
            say(f"kept: {self.mode.kept()}; {self.work_dir}")
            return
        if self.failed:
            say(f"the processes' logs are kept in {self.work_dir}")
        else:
            shutil.rmtree(self.work_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)
    run = Run(options)
    try:
        results = asyncio.run(run.execute())
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    paths = report.write(results, options.results_dir)
    say(f"results: {paths[0]} and {paths[1].name}")
    print(report.markdown(results))
    print(results["summary"], flush=True)
