"""`python -m bench --preset smoke|10k|100k`: one benchmark run, start to finish.

1. a scratch database (created, `runstate migrate`d, seeded by COPY) and a clean Redis
   database with stream names of its own;
2. the target farm (nginx when installed, else aiohttp processes) and a webhook receiver;
3. the distributed pipeline as separate processes: `runstate scheduler`, N x `runstate
   worker monitoring`, `runstate worker status-change`, `runstate worker notification`;
4. once every monitor has been checked once, the measured window: targets flipped down and
   up in cycles, incidents watched (NOTIFY), CPU and metrics sampled at both ends;
5. the pipeline stopped, then side by side on the same farm: the check client's raw
   ceiling and, when installed, prometheus-blackbox-exporter;
6. the report: bench/results/<preset>-<date>.md and .json, and one summary line, last.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from redis.asyncio import Redis

from bench import measure, profile, report
from bench.farm import Farm, start_farm
from bench.peers import Blackbox, find_blackbox
from bench.presets import PRESETS, Preset
from bench.procs import (
    BenchError,
    Children,
    busy_cpu_seconds,
    cpu_snapshot,
    free_port,
    log_digest,
    pids_named,
    postgres_pids,
    usage_between,
)
from bench.seed import create_database, drop_database, migrate, seed

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
# Database 15 is the unit tests', 14 the integration tests' (which flush it): the scheduler
# lease and the pending-check marks are global keys, so the bench needs a database of its own.
DEFAULT_REDIS = "redis://127.0.0.1:6379/13"
RESULTS_DIR = Path(__file__).parent / "results"
PIPELINE_KINDS = ("scheduler", "worker-monitoring", "worker-status-change", "worker-notification")
GLOBAL_KEYS = ("runstate:lease:scheduler", "runstate:pending-checks")
GLOBAL_PATTERNS = ("runstate:monitor-state:*", "runstate:heartbeat:*")
FLIP_LEAD_SECONDS = 1.0
DRAIN_SECONDS = 2.0


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Options:
    preset: Preset
    postgres_url: str
    redis_url: str
    farm: str
    results_dir: Path
    keep: bool
    seed: int
    profile: bool
    peers: bool
    env: dict[str, str] = field(default_factory=dict)

    def setting(self, name: str, default: int) -> int:
        return int(self.env.get(name, default))


@dataclass
class Window:
    start: float = 0.0
    end: float = 0.0

    @property
    def seconds(self) -> float:
        return self.end - self.start


class Run:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.preset = options.preset
        self.run_id = uuid.uuid4().hex[:8]
        self.dbname = f"runstate_bench_{self.run_id}"
        self.work_dir = Path(tempfile.mkdtemp(prefix=f"runstate-bench-{self.run_id}-"))
        self.children = Children(self.work_dir)
        self.database_url = ""
        self.webhook_secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
        self.metrics_ports: dict[str, int] = {}
        self.farm: Farm | None = None
        self.receiver_port = 0
        self.website_ids: list[uuid.UUID] = []
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

    async def check_services(self) -> None:
        try:
            connection = await asyncpg.connect(self.options.postgres_url, timeout=5)
            await connection.close()
        except (OSError, asyncpg.PostgresError) as exc:
            raise BenchError(f"PostgreSQL at {self.options.postgres_url}: {exc}") from exc
        redis = Redis.from_url(self.options.redis_url, socket_connect_timeout=5)
        try:
            await redis.ping()
        except Exception as exc:
            raise BenchError(f"Redis at {self.options.redis_url}: {exc}") from exc
        finally:
            await redis.aclose()

    def stream(self, name: str) -> str:
        return f"bench:{self.run_id}:{name}"

    async def clear_redis(self, streams: bool) -> None:
        """Forget the global keys (lease, pending marks, monitor states) of any earlier run
        and, at the end, this run's streams."""
        redis = Redis.from_url(self.options.redis_url)
        try:
            names: list[str] = list(GLOBAL_KEYS)
            for pattern in GLOBAL_PATTERNS + ((f"bench:{self.run_id}:*",) if streams else ()):
                names += [key.decode() async for key in redis.scan_iter(pattern, count=5000)]
            for start in range(0, len(names), 5000):
                await redis.delete(*names[start : start + 5000])
        finally:
            await redis.aclose()

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

    def pipeline_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNSTATE_", "SMTP_"))}
        env.update(
            DATABASE_URL=self.database_url,
            REDIS_URL=self.options.redis_url,
            MONITORING_STREAM=self.stream("monitoring"),
            STATUS_CHANGE_STREAM=self.stream("status-change"),
            NOTIFICATION_STREAM=self.stream("notification"),
            ALLOW_PRIVATE_TARGETS="true",
            MIN_CHECK_INTERVAL_SECONDS="1",
            HOST="127.0.0.1",
            APP_ENV="dev",
            LOG_LEVEL="INFO",
            HEARTBEAT_INTERVAL_SECONDS="10",
            NOTIFY_RETRY_BASE_SECONDS="0.1",
            RUNSTATE_DATA_DIR=str(self.work_dir / "data"),
        )
        for name in ("ADMIN_EMAIL", "ADMIN_PASSWORD", "REDIS_ADDR"):
            env.pop(name, None)
        env.update(self.options.env)
        return env

    def start_pipeline(self) -> None:
        env = self.pipeline_env()
        commands = [("scheduler", "scheduler", ["scheduler"])]
        commands += [
            ("worker-monitoring", f"worker-monitoring-{n}", ["worker", "monitoring"])
            for n in range(self.preset.workers)
        ]
        commands += [
            ("worker-status-change", "worker-status-change", ["worker", "status-change"]),
            ("worker-notification", "worker-notification", ["worker", "notification"]),
        ]
        for kind, name, argv in commands:
            port = free_port()
            self.metrics_ports[name] = port
            self.children.start(
                kind,
                name,
                [sys.executable, "-m", "runstate", *argv],
                {**env, "METRICS_PORT": str(port)},
            )

    async def wait_pipeline_ready(self, session: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + 60
        while True:
            self.children.ensure_alive(PIPELINE_KINDS)
            scrapes = {n: await measure.scrape(session, p) for n, p in self.metrics_ports.items()}
            answering = all(scrapes.values())
            if answering and measure.counter([scrapes["scheduler"]], "runstate_scheduler_active"):
                return
            if time.monotonic() > deadline:
                what = "the scheduler did not get its lease" if answering else "no metrics"
                raise BenchError(f"the pipeline did not start within 60 s: {what}")
            await asyncio.sleep(0.2)

    async def wait_first_checks(self) -> None:
        """Until every monitor has been checked once: its status is known, so a flip opens
        an incident, and the start-up (states seeded from the database) is behind."""
        deadline = time.monotonic() + 2 * self.preset.interval + 120
        connection = await asyncpg.connect(self.database_url, timeout=10)
        try:
            while True:
                self.children.ensure_alive(PIPELINE_KINDS)
                left = await connection.fetchval(
                    "SELECT count(*) FROM websites WHERE last_checked_at IS NULL"
                )
                if left == 0:
                    return
                if time.monotonic() > deadline:
                    raise BenchError(f"{left} monitors were never checked")
                await asyncio.sleep(0.25)
        finally:
            await connection.close()

    # --- the measured window --------------------------------------------------------------

    def flip_plan(self) -> list[list[int]]:
        """The targets flipped down in each cycle (a fresh set each time while any is left).
        A cycle is down for one interval plus a margin, then up as long: long enough for
        every flipped monitor to be checked, detected, recovered and alerted within it."""
        n = len(self.website_ids)
        size = max(1, round(self.preset.down_share * n))
        half = self.half_cycle()
        cycles = int((self.preset.duration - FLIP_LEAD_SECONDS) // (2 * half))
        rng = random.Random(self.options.seed)  # noqa: S311 - not security
        order = rng.sample(range(n), n)
        return [[order[(c * size + k) % n] for k in range(min(size, n))] for c in range(cycles)]

    def half_cycle(self) -> float:
        return self.preset.interval + max(2.0, 0.25 * self.preset.interval)

    async def sleep_until(self, moment: float) -> None:
        while (left := moment - time.time()) > 0:
            self.children.ensure_alive(PIPELINE_KINDS)
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
        farm = self.farm
        groups: dict[str, Callable[[], list[int]]] = {k: of(k) for k in PIPELINE_KINDS}
        groups[f"farm ({farm.kind})"] = farm.pids
        groups["webhook receiver"] = of("receiver")
        groups["postgres: backends of the bench db"] = lambda: postgres_pids(self.dbname)[
            "backends"
        ]
        groups["postgres: autovacuum in the bench db"] = lambda: postgres_pids(self.dbname)[
            "autovacuum"
        ]
        groups["postgres: background (shared)"] = lambda: postgres_pids(self.dbname)["background"]
        groups["redis-server (whole server)"] = lambda: pids_named("redis-server")
        groups["bench harness"] = lambda: [os.getpid()]
        return groups

    async def measured_window(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        groups = self.pid_groups()
        services_before = await self.services_identity()
        before_cpu, busy_before = cpu_snapshot(groups), busy_cpu_seconds()
        before = {n: await measure.scrape(session, p) for n, p in self.metrics_ports.items()}
        stores_before = await self.store_counters()
        self.window.start = time.time()
        self.window.end = self.window.start + self.preset.duration
        watcher = measure.IncidentWatcher(
            self.database_url, datetime.fromtimestamp(self.window.start, UTC) - timedelta(60)
        )
        stop = asyncio.Event()
        watching = asyncio.create_task(watcher.run(stop))
        profiles = await self.start_profiles()
        try:
            flips = await self.flip_cycles()
            after_cpu, busy_after = cpu_snapshot(groups), busy_cpu_seconds()
            usage = usage_between(before_cpu, after_cpu)  # peaks read while they still run
            after = {n: await measure.scrape(session, p) for n, p in self.metrics_ports.items()}
            stores_after = await self.store_counters()
            await asyncio.sleep(DRAIN_SECONDS)  # the last batches commit, the last alerts land
        finally:
            stop.set()
            await watching
        arrivals = await self.receiver_log(session)
        await self.finish_profiles(profiles)
        services_after = await self.services_identity()
        self.environment = {
            "machine_busy_cores": (busy_after - busy_before) / self.window.seconds,
            "run_cores": sum(u.cpu_seconds for u in usage) / self.window.seconds,
            "postgres_restarted": services_before[0] != services_after[0],
            "redis_restarted": services_before[1] != services_after[1],
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

    async def store_counters(self) -> dict[str, dict[str, int]]:
        redis = Redis.from_url(self.options.redis_url)
        try:
            calls = await measure.redis_calls(redis)
        finally:
            await redis.aclose()
        return {"postgres": await measure.database_counters(self.database_url), "redis": calls}

    async def services_identity(self) -> tuple[str, str]:
        """When PostgreSQL started and which Redis this is: a change during the window means
        a restart, which the report flags (such a run measured a fault, not the pipeline)."""
        postgres = redis_id = ""
        with contextlib.suppress(Exception):
            connection = await asyncpg.connect(self.options.postgres_url, timeout=5)
            try:
                postgres = str(await connection.fetchval("SELECT pg_postmaster_start_time()"))
            finally:
                await connection.close()
        with contextlib.suppress(Exception):
            redis = Redis.from_url(self.options.redis_url, socket_connect_timeout=5)
            try:
                redis_id = str((await redis.info("server")).get("run_id"))
            finally:
                await redis.aclose()
        return postgres, redis_id

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
        targets = {
            c.name: c.pid for c in self.children.started if c.kind in PIPELINE_KINDS and c.alive()
        }
        directory = self.options.results_dir / f"profiles-{self.preset.name}-{self.run_id}"
        return await profile.start(binary, targets, self.preset.duration, directory)

    async def finish_profiles(self, recordings: list[profile.Recording]) -> None:
        if recordings:
            self.profiles = await profile.finish(recordings, self.preset.duration)

    # --- after the window ---------------------------------------------------------------

    async def stop_pipeline(self) -> None:
        children = [c for c in self.children.started if c.kind in PIPELINE_KINDS]
        await asyncio.to_thread(self.children.stop_many, children, 30.0)

    async def peers(self) -> dict[str, Any]:
        """The client ceiling, then the blackbox exporter, one after the other on the same
        farm, with every target up and the pipeline stopped."""
        assert self.farm is not None
        urls_file = self.work_dir / "urls.txt"
        count = min(len(self.website_ids), 10_000)
        urls_file.write_text("\n".join(self.farm.url(i) for i in range(count)))
        concurrency = self.options.setting("MONITORING_CONCURRENCY", 500)
        max_connections = self.options.setting("CHECK_MAX_CONNECTIONS", 1000)
        seconds = self.preset.peer_seconds
        common = ["--urls-file", str(urls_file), "--duration", str(seconds)]
        ceiling_argv = [
            [*common, "--concurrency", str(concurrency), "--max-connections", str(max_connections)]
        ] * self.preset.workers
        out: dict[str, Any] = {
            "ceiling": await self.drive("ceiling", ceiling_argv, self.farm.pids),
            "blackbox": None,
        }
        binary = find_blackbox()
        if not self.options.peers or binary is None:
            out["blackbox_missing"] = (
                "skipped (--no-blackbox)"
                if not self.options.peers
                else "prometheus-blackbox-exporter is not installed"
            )
            return out
        exporter = Blackbox(self.children, binary, self.work_dir, self.preset.timeout_ms // 1000)
        try:
            await exporter.wait_ready()
            probe_argv = [
                [
                    *common,
                    "--concurrency",
                    str(concurrency * self.preset.workers),
                    "--exporter",
                    exporter.base,
                ]
            ]
            out["blackbox"] = await self.drive("probe", probe_argv, exporter.pids)
        finally:
            self.children.stop(exporter.child)
        return out

    async def drive(
        self, what: str, argvs: list[list[str]], watched: Callable[[], list[int]]
    ) -> dict[str, Any]:
        """Run the driver processes at once; sum what they counted. ``watched`` are the
        processes whose CPU over the measured window is reported with it (the farm for the
        ceiling, the exporter for the probes)."""
        say(f"peer: {what} x {len(argvs)} for {self.preset.peer_seconds:g} s")
        processes = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.peers",
                what,
                *argv,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            for argv in argvs
        ]
        assert processes[0].stdout is not None
        limit = self.preset.peer_seconds + 60
        try:
            await asyncio.wait_for(processes[0].stdout.readline(), limit)  # {"measuring": true}
        except TimeoutError:
            for process in processes:
                process.kill()
            raise BenchError(f"bench.peers {what} did not start measuring") from None
        before = cpu_snapshot({"watched": watched})
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
        watched_cpu = usage_between(before, cpu_snapshot({"watched": watched}))[0].cpu_seconds
        done = sum(r["done"] for r in results)
        return {
            "processes": len(results),
            "done": done,
            "ok": sum(r["ok"] for r in results),
            "per_s": sum(r["per_s"] for r in results),
            "driver_cpu_seconds": sum(r["cpu_seconds"] for r in results),
            "watched_cpu_seconds": watched_cpu,
            "seconds": self.preset.peer_seconds,
        }

    # --- the whole run ------------------------------------------------------------------

    async def execute(self) -> dict[str, Any]:
        try:
            results = await self._execute()
            self.failed = False
            return results
        finally:
            await self.cleanup()

    async def _execute(self) -> dict[str, Any]:
        preset = self.preset
        await self.check_services()
        say(
            f"preset {preset.name}: {preset.monitors} monitors every {preset.interval} s,"
            f" {preset.workers} monitoring worker(s), window {preset.duration:g} s"
        )
        self.farm = start_farm(
            self.children, self.work_dir, self.options.farm, preset.farm_processes, 1
        )
        self.start_receiver()
        self.database_url = await create_database(self.options.postgres_url, self.dbname)
        await asyncio.gather(migrate(self.database_url, {}), self.clear_redis(streams=False))
        await measure.install_incident_trigger(self.database_url)
        self.mark("migrated")
        # The processes import while the monitors are inserted; the scheduler picks them up
        # on its next poll, as it would monitors added through the API.
        self.start_pipeline()
        await self.farm.wait_ready()
        urls = [self.farm.url(i) for i in range(preset.monitors)]
        seeded = await seed(
            self.database_url,
            urls,
            interval_seconds=preset.interval,
            timeout_ms=preset.timeout_ms,
            webhook_url=f"http://127.0.0.1:{self.receiver_port}/hook",
            webhook_secret=self.webhook_secret,
        )
        self.website_ids = seeded.website_ids
        self.mark("seeded")
        say(
            f"farm: {self.farm.kind}; {preset.monitors} monitors in {self.dbname}; pipeline up next"
        )
        async with aiohttp.ClientSession() as session:
            await self.wait_pipeline_ready(session)
            self.mark("pipeline_ready")
            say("pipeline ready; waiting for every monitor's first check")
            await self.wait_first_checks()
            self.mark("first_checks_done")
            say("every monitor checked once: measuring")
            window = await self.measured_window(session)
            self.mark("window_done")
        await self.stop_pipeline()
        self.logs = {
            c.name: log_digest(c) for c in self.children.started if c.kind in PIPELINE_KINDS
        }
        rows = await measure.check_rows(
            self.database_url,
            datetime.fromtimestamp(self.window.start, UTC),
            datetime.fromtimestamp(self.window.end, UTC) + timedelta(seconds=preset.interval),
        )
        peers = await self.peers()
        self.mark("peers_done")
        return self.analyse(window, rows, peers, seeded.users)

    def analyse(
        self, window: dict[str, Any], rows: list[Any], peers: dict[str, Any], users: int
    ) -> dict[str, Any]:
        assert self.farm is not None
        grid = measure.grid_analysis(
            rows, self.website_ids, self.preset.interval, (self.window.start, self.window.end)
        )
        recorded = sum(1 for _, created_at, _ in rows if created_at.timestamp() < self.window.end)
        return report.build(
            run=self,
            users=users,
            grid=grid,
            recorded=recorded,
            latencies=measure.latencies(window["flips"], window["watcher"], window["arrivals"]),
            usage=window["usage"],
            scrapes=window["scrapes"],
            stores=window["stores"],
            peers=peers,
            profiles=self.profiles,
        )

    async def cleanup(self) -> None:
        await asyncio.to_thread(self.children.stop_all)
        if self.options.keep:
            say(f"kept: database {self.dbname}, streams bench:{self.run_id}:*, {self.work_dir}")
            return
        with contextlib.suppress(Exception):
            await self.clear_redis(streams=True)
        if self.database_url:
            with contextlib.suppress(Exception):
                await drop_database(self.options.postgres_url, self.dbname)
        if self.failed:
            say(f"the processes' logs are kept in {self.work_dir}")
        else:
            shutil.rmtree(self.work_dir, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmark runstate's distributed pipeline."
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="smoke")
    parser.add_argument("--monitors", type=int, help="override the preset's monitor count")
    parser.add_argument("--interval", type=int, help="seconds between checks of a monitor")
    parser.add_argument("--duration", type=float, help="seconds of the measured window")
    parser.add_argument("--workers", type=int, help="monitoring worker processes")
    parser.add_argument("--down-share", type=float, help="share of targets flipped per cycle")
    parser.add_argument("--peer-seconds", type=float, help="seconds of each peer's measurement")
    parser.add_argument("--farm", choices=["auto", "nginx", "aiohttp"], default="auto")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for every pipeline process (e.g. CONSUMER_BATCH_SIZE=200)",
    )
    parser.add_argument("--no-blackbox", action="store_true", help="skip the blackbox exporter")
    parser.add_argument("--profile", action="store_true", help="py-spy the pipeline's processes")
    parser.add_argument(
        "--postgres-url", default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES)
    )
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS))
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--seed", type=int, default=1, help="which targets are flipped")
    parser.add_argument("--keep", action="store_true", help="keep the database, streams and logs")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    overrides = {
        name: value
        for name, value in (
            ("monitors", args.monitors),
            ("interval", args.interval),
            ("duration", args.duration),
            ("workers", args.workers),
            ("down_share", args.down_share),
            ("peer_seconds", args.peer_seconds),
        )
        if value is not None
    }
    env = dict(item.split("=", 1) for item in args.env)
    return Options(
        preset=replace(preset, **overrides),
        postgres_url=args.postgres_url,
        redis_url=args.redis_url,
        farm=args.farm,
        results_dir=args.results_dir,
        keep=args.keep,
        seed=args.seed,
        profile=args.profile,
        peers=not args.no_blackbox,
        env=env,
    )


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
