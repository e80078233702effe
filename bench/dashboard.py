"""`python -m bench.dashboard`: how fast the signed-in dashboard answers with 5,000 monitors.

One run makes a scratch database (`runstate_bench_dashboard_<id>`) on PostgreSQL, drops it at
the end (unless `--keep`), and:

1. seeds one USER owning `--monitors` monitors with `--days` days of daily rollups,
   `--hourly-days` days of hourly ones, incidents, pauses and a few minutes of raw checks
   (bench.history's set-based seeding), and marks one monitor in `--down-every` down;
2. starts `runstate api` (uvicorn) on loopback and signs in through the `/login` form, as a
   browser does (the CSRF token read from the form, the session cookie kept);
3. times, sequentially over one kept-alive connection and interleaved round by round:
   `GET /api/v1/health` (the baseline), the first page of the list `GET /`, the live
   refresh `GET /fragments/monitors`, and a search and a deep page for comparison.

Two times per request: the server's (the `Server-Timing: app;dur=` header the page routes
add: from the route's start, session lookup and queries included, to the rendered
response) and the client's (request sent to body read, over loopback keep-alive). The
health baseline has no Server-Timing: its client time is the floor of the HTTP round trip.

Targets (issue 12): first page < 150 ms and live refresh < 30 ms of server time. The report
goes to `bench/results/dashboard-<YYYYMMDD-HHMMSS>.md` and is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg

from bench import history
from bench.measure import nearest_rank
from bench.procs import BenchError, busy_cpu_seconds
from runstate.auth.passwords import HASHER

RESULTS_DIR = Path(__file__).parent / "results"
BENCH_PASSWORD = "Bench-Passw0rd!"
TARGETS_MS = {"page": 150.0, "fragment": 30.0}  # server time, p95
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_SERVER_TIMING = re.compile(r"app;dur=([0-9.]+)")


def say(message: str) -> None:
    print(f"[dashboard {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Options:
    monitors: int = 5_000
    days: int = 30
    hourly_days: int = 2
    raw_minutes: int = 5
    down_every: int = 100
    requests: int = 300
    warmup: int = 30
    postgres_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    results_dir: Path = RESULTS_DIR
    keep: bool = False


def parse_args(argv: list[str] | None = None) -> Options:
    d = Options()
    p = argparse.ArgumentParser(
        prog="python -m bench.dashboard", description=__doc__.split("\n")[0]
    )
    p.add_argument("--monitors", type=int, default=d.monitors, help="monitors of the one USER")
    p.add_argument("--days", type=int, default=d.days, help="days of daily rollups")
    p.add_argument("--hourly-days", type=int, default=d.hourly_days, help="days of hourly ones")
    p.add_argument("--raw-minutes", type=int, default=d.raw_minutes, help="of raw checks, each")
    p.add_argument("--down-every", type=int, default=d.down_every, help="one monitor in N down")
    p.add_argument("--requests", type=int, default=d.requests, help="measured, per endpoint")
    p.add_argument("--warmup", type=int, default=d.warmup, help="unmeasured, per endpoint")
    p.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", d.postgres_url),
        help="a user that may create databases",
    )
    p.add_argument("--results-dir", type=Path, default=d.results_dir)
    p.add_argument("--keep", action="store_true", help="keep the scratch database")
    a = p.parse_args(argv)
    for name in ("monitors", "days", "hourly_days", "raw_minutes", "down_every", "requests"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return Options(**vars(a))


@dataclass
class Timing:
    name: str
    path: str
    client_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    body_bytes: int = 0


@dataclass
class DashboardRun:
    options: Options
    started: datetime
    timings: list[Timing] = field(default_factory=list)
    seed_seconds: dict[str, float] = field(default_factory=dict)
    seeded: dict[str, int] = field(default_factory=dict)
    down: int = 0
    busy_cores: float = math.nan
    postgres_version: str = ""
    load: tuple[float, float] = (math.nan, math.nan)


# --- seeding ---------------------------------------------------------------------------------


async def seed(database: history.Database, options: Options, run: DashboardRun) -> None:
    now = datetime.now(UTC)
    await history._partitions_for(
        database.url, now - timedelta(minutes=options.raw_minutes + 2), now
    )
    shape = history.Options(
        monitors=options.monitors,
        days=options.days,
        hourly_days=options.hourly_days,
        raw_minutes=options.raw_minutes,
    )
    async with database.connect() as connection:
        run.postgres_version = str(await connection.fetchval("SHOW server_version"))
        await history.seed_owner(connection, options.monitors)
        run.seeded = await history.seed_history(connection, shape, now, run.seed_seconds)
        run.seeded["websites"] = options.monitors
        password_hash = HASHER.hash(BENCH_PASSWORD)
        await connection.execute("UPDATE users SET password_hash = $1", password_hash)
        await connection.execute(
            "UPDATE websites SET current_status = 'down' WHERE id IN"
            " (SELECT id FROM bench_monitor WHERE idx % $1 = 0)",
            options.down_every,
        )
        run.down = int(
            await connection.fetchval(
                "SELECT count(*) FROM websites WHERE current_status = 'down' AND NOT paused"
            )
        )
        await connection.execute("VACUUM ANALYZE")


# --- measuring -------------------------------------------------------------------------------


async def sign_in(session: aiohttp.ClientSession, base: str) -> None:
    """Through the form, as a browser: the token from the page, the cookies kept."""
    async with session.get(f"{base}/login") as reply:
        found = _CSRF.search(await reply.text())
    if found is None:
        raise BenchError("the sign-in form has no CSRF token")
    form = {"csrf_token": found.group(1), "email": "history@example.com"}
    form["password"] = BENCH_PASSWORD
    async with session.post(f"{base}/login", data=form, allow_redirects=False) as reply:
        if reply.status != 303:
            raise BenchError(f"signing in answered {reply.status}: {(await reply.text())[:300]}")


async def time_pages(port: int, options: Options, run: DashboardRun) -> None:
    base = f"http://127.0.0.1:{port}"
    middle = max(1, options.monitors // 50 // 2)
    run.timings = [
        Timing("health", "GET /api/v1/health"),
        Timing("page", "GET /"),
        Timing("fragment", "GET /fragments/monitors"),
        Timing("search", "GET /?q=monitor 12"),
        Timing("deep_page", f"GET /?page={middle}"),
    ]
    paths = {
        "health": "/api/v1/health",
        "page": "/",
        "fragment": "/fragments/monitors",
        "search": "/?q=monitor%2012",
        "deep_page": f"/?page={middle}",
    }
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1, an address
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=jar) as session:
        await sign_in(session, base)

        async def get(timing: Timing, measured: bool) -> None:
            began = time.perf_counter()
            async with session.get(base + paths[timing.name], allow_redirects=False) as reply:
                body = await reply.read()
            client_ms = (time.perf_counter() - began) * 1000
            if reply.status != 200:
                raise BenchError(f"{timing.path} answered {reply.status}")
            timing.body_bytes = len(body)
            if not measured:
                return
            timing.client_ms.append(client_ms)
            timing.statuses[reply.status] = timing.statuses.get(reply.status, 0) + 1
            found = _SERVER_TIMING.search(reply.headers.get("Server-Timing", ""))
            if found:
                timing.server_ms.append(float(found.group(1)))

        for _ in range(options.warmup):
            for timing in run.timings:
                await get(timing, measured=False)
        busy = busy_cpu_seconds()
        started = time.perf_counter()
        for _ in range(options.requests):
            for timing in run.timings:
                await get(timing, measured=True)
        run.busy_cores = (busy_cpu_seconds() - busy) / (time.perf_counter() - started)


async def run_dashboard(options: Options) -> DashboardRun:
    run_id = uuid.uuid4().hex[:8]
    run = DashboardRun(options, datetime.now(UTC), load=(os.getloadavg()[0], math.nan))
    database = history.Database(options.postgres_url, f"runstate_bench_dashboard_{run_id}")
    work = Path(tempfile.mkdtemp(prefix=f"runstate-dashboard-{run_id}-"))
    try:
        await database.create("head")
        say(f"seeding {options.monitors:,} monitors x {options.days} days")
        await seed(database, options, run)
        say("timing the dashboard on runstate api")
        secret = secrets.token_urlsafe(48)
        async with history.api_process(database.url, secret, options.monitors, work) as port:
            await time_pages(port, options, run)
    finally:
        if not options.keep:
            shutil.rmtree(work, ignore_errors=True)
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                await database.drop()
    run.load = (run.load[0], os.getloadavg()[0])
    return run


# --- the report ------------------------------------------------------------------------------


def _figures(values: list[float]) -> str:
    if not values:
        return "n/a | n/a | n/a"
    return (
        f"{statistics.median(values):.2f} | {nearest_rank(values, 0.95):.2f}"
        f" | {nearest_rank(values, 0.99):.2f}"
    )


def _verdict(timing: Timing) -> str:
    target = TARGETS_MS.get(timing.name)
    if target is None or not timing.server_ms:
        return ""
    p95 = nearest_rank(timing.server_ms, 0.95)
    return f"< {target:.0f} ms: {'met' if p95 < target else 'MISSED'}"


def render(run: DashboardRun) -> str:
    o = run.options
    lines = [
        f"# Dashboard benchmark, {run.started:%Y-%m-%d %H:%M} UTC",
        "",
        f"- code: {history._code_version()}",
        f"- PostgreSQL {run.postgres_version}; one USER with {o.monitors:,} monitors, "
        f"{o.days} days of daily rollups, {o.hourly_days} of hourly ones, "
        f"{run.seeded.get('incidents', 0):,} incidents, {run.down} monitors down",
        f"- {o.requests} measured requests per endpoint after {o.warmup} unmeasured, "
        "sequential over one kept-alive loopback connection, interleaved round by round",
        f"- load average {run.load[0]:.2f} before, {run.load[1]:.2f} after; "
        f"{run.busy_cores:.2f} cores busy during the measured rounds",
        "",
        "Server time: the page route's `Server-Timing: app;dur=` (session lookup, queries "
        "and rendering). Client time: request sent to body read.",
        "",
        "| endpoint | server p50 | p95 | p99 | client p50 | p95 | p99 | bytes | target (p95) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in run.timings:
        lines.append(
            f"| {t.path} | {_figures(t.server_ms)} | {_figures(t.client_ms)}"
            f" | {t.body_bytes:,} | {_verdict(t)} |"
        )
    return "\n".join(lines) + "\n"


def write_report(run: DashboardRun) -> Path:
    run.options.results_dir.mkdir(parents=True, exist_ok=True)
    path = run.options.results_dir / f"dashboard-{run.started:%Y%m%d-%H%M%S}.md"
    path.write_text(render(run), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)
    try:
        run = asyncio.run(run_dashboard(options))
    except BenchError as exc:
        print(f"dashboard benchmark failed: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    path = write_report(run)
    print(path.read_text())
    print(f"report: {path}")


if __name__ == "__main__":
    main()
