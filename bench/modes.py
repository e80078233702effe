"""What a run benchmarks (`--mode`, by default the preset's):

- `distributed`: the pipeline as separate processes (`runstate scheduler`, N x `runstate
  worker monitoring`, `runstate worker status-change`, `runstate worker notification`),
  each with its own METRICS_PORT, on a scratch PostgreSQL database and a Redis database,
  with stream names of the run's own;
- `up`: `runstate up`, the whole system (API, scheduler, the three workers) in one process,
  on a SQLite file in the run's work directory and the in-process queue; its metrics are
  on the API port.

A mode owns its database (a :class:`bench.store.Store`), starts runstate's processes, and
names the services (PostgreSQL, Redis) whose CPU the report counts and whose restart it
flags: `up` has none.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import asyncpg
from redis.asyncio import Redis

from bench.measure import redis_calls
from bench.procs import BenchError, Children, free_port, pids_named, postgres_pids
from bench.store import PostgresStore, SqliteStore, Store

MODES = ("distributed", "up")
PidGroups = dict[str, Callable[[], list[int]]]

PIPELINE_KINDS = ("scheduler", "worker-monitoring", "worker-status-change", "worker-notification")
# The scheduler lease and the pending-check marks are global keys (not per stream): an
# earlier run's would hold this run's scheduler back or skip its checks.
GLOBAL_KEYS = ("runstate:lease:scheduler", "runstate:pending-checks")
GLOBAL_PATTERNS = ("runstate:monitor-state:*", "runstate:heartbeat:*")


class Mode(ABC):
    name: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]]  # the kinds of runstate process it starts
    store: Store

    @property
    @abstractmethod
    def description(self) -> str:
        """What runs, on what, for the report."""

    @abstractmethod
    async def prepare(self) -> None:
        """The services reachable, the database created and migrated, the queue empty."""

    def env(self) -> dict[str, str]:
        """Where runstate's processes find their database and queue."""
        return {"DATABASE_URL": self.store.url}

    @abstractmethod
    def start(self, children: Children, env: dict[str, str]) -> dict[str, int]:
        """Start runstate's processes; the port of each one's /metrics, by process name."""

    def service_pids(self) -> PidGroups:
        """The services' processes, by group: their CPU is part of the run's cost."""
        return {}

    async def service_identities(self) -> dict[str, str]:
        """An identity of each service that changes when it restarts."""
        return {}

    async def counters(self) -> dict[str, dict[str, int]]:
        """The services' own counters (transactions, calls), by service."""
        return {}

    async def finish(self, keep: bool) -> None:
        """At the end of the run: the database closed, and dropped unless kept."""
        await (self.store.close() if keep else self.store.drop())

    def kept(self) -> str:
        """What `--keep` leaves behind (besides the work directory)."""
        return f"the {self.store.description} database {self.store.url}"


class Distributed(Mode):
    name = "distributed"
    kinds = PIPELINE_KINDS

    def __init__(self, postgres_url: str, redis_url: str, run_id: str, workers: int) -> None:
        self.store: PostgresStore = PostgresStore(postgres_url, f"runstate_bench_{run_id}")
        self.postgres_url = postgres_url
        self.redis_url = redis_url
        self.run_id = run_id
        self.workers = workers

    @property
    def description(self) -> str:
        return (
            f"the distributed pipeline: `runstate scheduler`, {self.workers} x `runstate worker"
            " monitoring`, `runstate worker status-change` and `runstate worker notification`"
            " as separate processes, on PostgreSQL and Redis"
        )

    def stream(self, name: str) -> str:
        return f"bench:{self.run_id}:{name}"

    async def prepare(self) -> None:
        await self._check_services()
        await asyncio.gather(self.store.create(), self._clear_redis(streams=False))

    async def _check_services(self) -> None:
        try:
            connection = await asyncpg.connect(self.postgres_url, timeout=5)
            await connection.close()
        except (OSError, asyncpg.PostgresError) as exc:
            raise BenchError(f"PostgreSQL at {self.postgres_url}: {exc}") from exc
        redis = Redis.from_url(self.redis_url, socket_connect_timeout=5)
        try:
            await redis.ping()
        except Exception as exc:
            raise BenchError(f"Redis at {self.redis_url}: {exc}") from exc
        finally:
            await redis.aclose()

    async def _clear_redis(self, streams: bool) -> None:
        """Forget the global keys (lease, pending marks, monitor states) of any earlier run
        and, at the end, this run's streams."""
        redis = Redis.from_url(self.redis_url)
        try:
            names: list[str] = list(GLOBAL_KEYS)
            for pattern in GLOBAL_PATTERNS + ((self.stream("*"),) if streams else ()):
                names += [key.decode() async for key in redis.scan_iter(pattern, count=5000)]
            for start in range(0, len(names), 5000):
                await redis.delete(*names[start : start + 5000])
        finally:
            await redis.aclose()

    def env(self) -> dict[str, str]:
        return {
            **super().env(),
            "REDIS_URL": self.redis_url,
            "MONITORING_STREAM": self.stream("monitoring"),
            "STATUS_CHANGE_STREAM": self.stream("status-change"),
            "NOTIFICATION_STREAM": self.stream("notification"),
        }

    def start(self, children: Children, env: dict[str, str]) -> dict[str, int]:
        commands = [("scheduler", "scheduler", ["scheduler"])]
        commands += [
            ("worker-monitoring", f"worker-monitoring-{n}", ["worker", "monitoring"])
            for n in range(self.workers)
        ]
        commands += [
            ("worker-status-change", "worker-status-change", ["worker", "status-change"]),
            ("worker-notification", "worker-notification", ["worker", "notification"]),
        ]
        ports: dict[str, int] = {}
        for kind, name, argv in commands:
            ports[name] = free_port()
            children.start(
                kind,
                name,
                [sys.executable, "-m", "runstate", *argv],
                {**env, "METRICS_PORT": str(ports[name])},
            )
        return ports

    def service_pids(self) -> PidGroups:
        database = self.store.name
        return {
            "postgres: backends of the bench db": lambda: postgres_pids(database)["backends"],
            "postgres: autovacuum in the bench db": lambda: postgres_pids(database)["autovacuum"],
            "postgres: background (shared)": lambda: postgres_pids(database)["background"],
            "redis-server (whole server)": lambda: pids_named("redis-server"),
        }

    async def service_identities(self) -> dict[str, str]:
        """When PostgreSQL started and which Redis this is."""
        identities = {"PostgreSQL": "", "Redis": ""}
        with contextlib.suppress(Exception):
            connection = await asyncpg.connect(self.postgres_url, timeout=5)
            try:
                started = await connection.fetchval("SELECT pg_postmaster_start_time()")
                identities["PostgreSQL"] = str(started)
            finally:
                await connection.close()
        with contextlib.suppress(Exception):
            redis = Redis.from_url(self.redis_url, socket_connect_timeout=5)
            try:
                identities["Redis"] = str((await redis.info("server")).get("run_id"))
            finally:
                await redis.aclose()
        return identities

    async def counters(self) -> dict[str, dict[str, int]]:
        redis = Redis.from_url(self.redis_url)
        try:
            calls = await redis_calls(redis)
        finally:
            await redis.aclose()
        return {"postgres": await self.store.counters(), "redis_calls": calls}

    async def finish(self, keep: bool) -> None:
        if not keep:
            await self._clear_redis(streams=True)
        await super().finish(keep)

    def kept(self) -> str:
        return f"{super().kept()}, streams {self.stream('*')}"


class Up(Mode):
    name = "up"
    kinds = ("runstate up",)
    description = (
        "`runstate up`: the API, the scheduler and the three workers in one process, on a"
        " SQLite file and the in-process queue"
    )

    def __init__(self, work_dir: Path) -> None:
        self.store: SqliteStore = SqliteStore(work_dir / "runstate.db")

    async def prepare(self) -> None:
        await self.store.create()  # `runstate up` would migrate by itself, but later

    def start(self, children: Children, env: dict[str, str]) -> dict[str, int]:
        port = free_port()  # the API's, which serves /metrics for the whole process
        children.start(
            "runstate up",
            "runstate-up",
            [sys.executable, "-m", "runstate", "up"],
            {**env, "PORT": str(port)},
        )
        return {"runstate-up": port}
