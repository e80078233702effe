"""`python -m bench.status_page`: the public status page of 500 monitors by 90 days, on
PostgreSQL, served by `runstate api` (uvicorn) as a user runs it.

Each run makes its own scratch database (`runstate_bench_status_<id>`), drops it at the end
(unless `--keep`), and measures, in one run:

1. **the page's size**: bytes of HTML (before compression, and gzipped as served to a
   browser that accepts it) for `--monitors` monitors in `--groups` groups, each with
   `--days` days of daily rollups (outages on some days, a few paused periods, an incident
   for every outage; the seeding of `bench.history`), and a few posted incidents with
   their updates;
2. **a cache miss**: the page rendered again after its version is bumped, `--misses` times
   (the server revalidates every `--revalidate` seconds for the run, so that a bump is
   seen soon); the server's own time (the `Server-Timing` header a miss answers with: the
   cheap query, the page's data and the rendering), p50 and p95, and the client's; the
   first rendering of the page (the whole 90 days of every bar read once) apart;
3. **cached hits** with `wrk` (`--connections` connections for `--duration` seconds, one
   thread): the page with `Accept-Encoding: gzip` (as browsers ask), the page without
   compression, a conditional request answered 304, summary.json, and, as the baseline,
   `GET /api/v1/health` — the cheapest route of the application the pages are served by.

The report goes to `bench/results/status-page-<YYYYMMDD-HHMMSS>.md` and is printed.
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
import subprocess
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
from bench.procs import BenchError

RESULTS_DIR = Path(__file__).parent / "results"
SLUG = "bench-status"
TARGETS = {"html_bytes": 500_000, "miss_p95_ms": 100.0, "hits_per_second": 5_000.0}


def say(message: str) -> None:
    print(f"[status-page {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Options:
    monitors: int = 500
    groups: int = 10
    days: int = 90
    posted_incidents: int = 6
    misses: int = 40
    revalidate: float = 1.0
    connections: int = 64
    duration: int = 10
    postgres_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    results_dir: Path = RESULTS_DIR
    keep: bool = False


def parse_args(argv: list[str] | None = None) -> Options:
    d = Options()
    p = argparse.ArgumentParser(
        prog="python -m bench.status_page", description=__doc__.split("\n")[0]
    )
    p.add_argument("--monitors", type=int, default=d.monitors, help="monitors on the page")
    p.add_argument("--groups", type=int, default=d.groups, help="groups they are shown in")
    p.add_argument("--days", type=int, default=d.days, help="days of daily rollups")
    p.add_argument("--posted-incidents", type=int, default=d.posted_incidents)
    p.add_argument("--misses", type=int, default=d.misses, help="cache misses timed")
    p.add_argument("--revalidate", type=float, default=d.revalidate, help="s, for the run")
    p.add_argument("--connections", type=int, default=d.connections, help="wrk connections")
    p.add_argument("--duration", type=int, default=d.duration, help="seconds per wrk run")
    p.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", d.postgres_url),
        help="a user that may create databases",
    )
    p.add_argument("--results-dir", type=Path, default=d.results_dir)
    p.add_argument("--keep", action="store_true", help="keep the scratch database")
    a = p.parse_args(argv)
    for name in ("monitors", "groups", "days", "misses", "connections", "duration"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return Options(**vars(a))


# --- seeding -------------------------------------------------------------------------------

PAGE_INSERT = """
INSERT INTO status_pages (id, user_id, slug, title, description, is_public, version,
    version_changed_at, created_at, updated_at)
VALUES ($1, $2, $3, 'Example Cloud status', 'Every service of Example Cloud, watched every
minute from one region.', true, 1, now(), now(), now())
"""

PAGE_MONITORS_INSERT = """
INSERT INTO status_page_monitors (status_page_id, website_id, group_name, position)
SELECT $1, m.id, 'Group ' || (m.idx % $2::int + 1), m.idx FROM bench_monitor m
"""

UPDATES = (
    ("investigating", "We are looking into reports of slow responses from the API."),
    ("identified", "A database failover left one replica behind; we are rebuilding it."),
    ("monitoring", "The replica is back in service; we are watching error rates."),
    ("resolved", "Response times have been normal for an hour."),
)


async def seed_posted_incidents(
    connection: asyncpg.Connection, page_id: uuid.UUID, count: int, now: datetime
) -> None:
    """``count`` incidents posted on the page over the last weeks, each with the four
    updates of a resolved incident, but for the newest, still being monitored."""
    for n in range(count):
        opened = now - timedelta(days=n * 9 + 1, hours=n)
        open_one = n == 0
        steps = UPDATES[:3] if open_one else UPDATES
        incident_id = uuid.uuid4()
        last = opened + timedelta(minutes=25 * (len(steps) - 1))
        await connection.execute(
            "INSERT INTO status_page_incidents (id, status_page_id, title, impact, status,"
            " created_at, updated_at, resolved_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            incident_id,
            page_id,
            f"Elevated API latency in region {n + 1}",
            ("minor", "major")[n % 2],
            steps[-1][0],
            opened,
            last,
            None if open_one else last,
        )
        for k, (status, body) in enumerate(steps):
            await connection.execute(
                "INSERT INTO status_page_incident_updates (id, incident_id, status, body,"
                " created_at) VALUES ($1, $2, $3, $4, $5)",
                uuid.uuid4(),
                incident_id,
                status,
                body,
                opened + timedelta(minutes=25 * k),
            )


async def seed(database: history.Database, options: Options, now: datetime) -> uuid.UUID:
    """The monitors, their history and the page; returns the page's id."""
    seeding = history.Options(
        monitors=options.monitors, days=options.days, hourly_days=2, raw_minutes=2
    )
    page_id = uuid.uuid4()
    async with database.connect() as connection:
        user_id = await history.seed_owner(connection, options.monitors)
        await history.seed_history(connection, seeding, now, {})
        # The monitors' last check: a minute ago, as a running pipeline keeps it.
        await connection.execute("UPDATE websites SET last_checked_at = $1", now)
        await connection.execute(PAGE_INSERT, page_id, user_id, SLUG)
        await connection.execute(PAGE_MONITORS_INSERT, page_id, options.groups)
        await seed_posted_incidents(connection, page_id, options.posted_incidents, now)
        await connection.execute("VACUUM ANALYZE")
    return page_id


# --- measuring -----------------------------------------------------------------------------


@dataclass
class WrkRun:
    name: str
    url: str
    headers: dict[str, str]
    requests_per_second: float = math.nan
    latency_p50_ms: float = math.nan
    latency_p99_ms: float = math.nan
    bytes_per_second: float = math.nan
    errors: str = ""
    statuses: str = ""


@dataclass
class Run:
    options: Options
    started: datetime
    html_bytes: int = 0
    gzip_bytes: int = 0
    summary_bytes: int = 0
    first_render_ms: float = math.nan
    miss_server_ms: list[float] = field(default_factory=list)
    miss_client_ms: list[float] = field(default_factory=list)
    miss_data_ms: list[float] = field(default_factory=list)
    wrk: list[WrkRun] = field(default_factory=list)
    postgres_version: str = ""
    load: tuple[float, float] = (math.nan, math.nan)


SERVER_TIMING = re.compile(r"render;dur=([0-9.]+)")
DATA_TIMING = re.compile(r"data;dur=([0-9.]+)")


async def _get(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str], float]:
    started = time.perf_counter()
    async with session.get(url, headers=headers or {}, auto_decompress=False) as reply:
        body = await reply.read()
        elapsed = (time.perf_counter() - started) * 1000
        return reply.status, body, {k.lower(): v for k, v in reply.headers.items()}, elapsed


async def measure_page(run: Run, base: str, database: history.Database) -> str:
    """Sizes, the first rendering and the misses; the page's current ETag (identity)."""
    page = f"{base}/status/{SLUG}"
    identity = {"Accept-Encoding": "identity"}
    async with aiohttp.ClientSession() as session:
        status, body, headers, _ = await _get(session, page, identity)
        if status != 200:
            raise BenchError(f"GET {page}: {status}")
        run.html_bytes = len(body)
        found = SERVER_TIMING.search(headers.get("server-timing", ""))
        run.first_render_ms = float(found.group(1)) if found else math.nan
        _, zipped, _, _ = await _get(session, page, {"Accept-Encoding": "gzip"})
        run.gzip_bytes = len(zipped)
        _, summary, _, _ = await _get(session, f"{page}/summary.json", identity)
        run.summary_bytes = len(summary)
        async with database.connect() as connection:
            for _ in range(run.options.misses):
                await connection.execute("UPDATE status_pages SET version = version + 1")
                await asyncio.sleep(run.options.revalidate + 0.05)
                status, _, headers, client_ms = await _get(session, page, identity)
                found = SERVER_TIMING.search(headers.get("server-timing", ""))
                if status != 200 or not found:
                    raise BenchError(f"a miss was not rendered: {status} {headers}")
                run.miss_server_ms.append(float(found.group(1)))
                data = DATA_TIMING.search(headers.get("server-timing", ""))
                run.miss_data_ms.append(float(data.group(1)) if data else math.nan)
                run.miss_client_ms.append(client_ms)
        _, _, headers, _ = await _get(session, page, identity)
        return headers["etag"]


def wrk(run: WrkRun, options: Options) -> WrkRun:
    command = ["wrk", "-t1", f"-c{options.connections}", f"-d{options.duration}s", "--latency"]
    for name, value in run.headers.items():
        command += ["-H", f"{name}: {value}"]
    done = subprocess.run(  # noqa: S603 - our own arguments
        [*command, run.url],
        capture_output=True,
        text=True,
        check=True,
        timeout=options.duration + 60,
    )
    out = done.stdout
    if found := re.search(r"Requests/sec:\s+([0-9.]+)", out):
        run.requests_per_second = float(found.group(1))
    if found := re.search(r"Transfer/sec:\s+([0-9.]+)(\w+)", out):
        scale = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9}.get(found.group(2), math.nan)
        run.bytes_per_second = float(found.group(1)) * scale
    for quantile, attribute in (("50%", "latency_p50_ms"), ("99%", "latency_p99_ms")):
        if found := re.search(rf"{quantile}\s+([0-9.]+)(us|ms|s)", out):
            factor = {"us": 1e-3, "ms": 1.0, "s": 1e3}[found.group(2)]
            setattr(run, attribute, float(found.group(1)) * factor)
    if found := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        run.statuses = f"{found.group(1)} non-2xx/3xx"
    if found := re.search(r"Socket errors: (.*)", out):
        run.errors = found.group(1).strip()
    return run


def measure_hits(run: Run, base: str, etag: str) -> None:
    page = f"{base}/status/{SLUG}"
    runs = [
        WrkRun("page, gzip (as browsers ask)", page, {"Accept-Encoding": "gzip"}),
        WrkRun("page, uncompressed", page, {}),
        WrkRun("page, If-None-Match (304)", page, {"If-None-Match": etag}),
        WrkRun("summary.json", f"{page}/summary.json", {}),
        WrkRun("baseline: GET /api/v1/health", f"{base}/api/v1/health", {}),
    ]
    for one in runs:
        say(f"wrk: {one.name}")
        run.wrk.append(wrk(one, run.options))


async def run_bench(options: Options) -> Run:
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed (Debian: apt-get install wrk)")
    run_id = uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    run = Run(options, now, load=(os.getloadavg()[0], math.nan))
    database = history.Database(options.postgres_url, f"runstate_bench_status_{run_id}")
    work = Path(tempfile.mkdtemp(prefix=f"runstate-status-{run_id}-"))
    os.environ["STATUS_PAGE_REVALIDATE_SECONDS"] = str(options.revalidate)
    try:
        await database.create("head")
        await history._partitions_for(database.url, now - timedelta(minutes=5), now)
        say(f"seeding {options.monitors:,} monitors x {options.days} days")
        await seed(database, options, now)
        async with database.connect() as connection:
            run.postgres_version = str(await connection.fetchval("SHOW server_version"))
        secret = secrets.token_urlsafe(48)
        async with history.api_process(database.url, secret, options.monitors, work) as port:
            base = f"http://127.0.0.1:{port}"
            say("sizes, first rendering and cache misses")
            etag = await measure_page(run, base, database)
            measure_hits(run, base, etag)
    finally:
        os.environ.pop("STATUS_PAGE_REVALIDATE_SECONDS", None)
        if not options.keep:
            shutil.rmtree(work, ignore_errors=True)
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                await database.drop()
    run.load = (run.load[0], os.getloadavg()[0])
    return run


# --- the report ----------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _target(name: str, measured: str, ok: bool) -> str:
    return f"| {name} | {measured} | {_verdict(ok)} |"


def _timing_row(label: str, values: list[float]) -> str:
    p50, p95 = nearest_rank(values, 0.5), nearest_rank(values, 0.95)
    worst = max(values, default=math.nan)
    return f"| {label} | {p50:.1f} | {p95:.1f} | {worst:.1f} | {len(values)} |"


def _wrk_row(w: WrkRun, baseline: WrkRun | None) -> str:
    ratio = w.requests_per_second / baseline.requests_per_second if baseline else math.nan
    errors = "; ".join(e for e in (w.statuses, w.errors) if e) or "none"
    return (
        f"| {w.name} | {w.requests_per_second:,.0f} | {ratio:.1f}x | {w.latency_p50_ms:.2f}"
        f" | {w.latency_p99_ms:.2f} | {w.bytes_per_second / 1e6:,.1f} | {errors} |"
    )


def render(run: Run) -> str:
    o = run.options
    baseline = next((w for w in run.wrk if w.name.startswith("baseline")), None)
    hits = run.wrk[0].requests_per_second if run.wrk else math.nan
    miss_p95 = nearest_rank(run.miss_server_ms, 0.95)
    lines = [
        f"# Status page benchmark, {run.started:%Y-%m-%d %H:%M} UTC",
        "",
        f"- code: {history._code_version()}",
        f"- PostgreSQL {run.postgres_version}; {os.cpu_count()} CPUs; load average"
        f" {run.load[0]:.2f} before, {run.load[1]:.2f} after",
        f"- page: {o.monitors:,} monitors in {o.groups} groups, {o.days} days of daily rollups"
        " each (outages on ~3 % of the days, each with its incident; a few pauses),"
        f" {o.posted_incidents} posted incidents with their updates",
        "- `runstate api` (uvicorn, httptools, uvloop) on loopback; status pages revalidated"
        f" every {o.revalidate:g} s for the run",
        "",
        "## Targets",
        "",
        "| target | measured | |",
        "|---|---:|---|",
        _target(
            "HTML < 500 KB",
            f"{run.html_bytes / 1000:,.1f} KB",
            run.html_bytes < TARGETS["html_bytes"],
        ),
        _target(
            "cache miss < 100 ms (server, p95)",
            f"{miss_p95:.1f} ms",
            miss_p95 < TARGETS["miss_p95_ms"],
        ),
        _target(
            "cached hit >= 5,000 req/s",
            f"{hits:,.0f} req/s",
            hits >= TARGETS["hits_per_second"],
        ),
        "",
        "## Size",
        "",
        f"- HTML: {run.html_bytes:,} bytes ({run.html_bytes / o.monitors:,.0f} per monitor);"
        f" gzipped as served: {run.gzip_bytes:,} bytes",
        f"- summary.json: {run.summary_bytes:,} bytes",
        "",
        "## Cache misses",
        "",
        "Each after `UPDATE status_pages SET version = version + 1` and the revalidation"
        " interval; server time from `Server-Timing` (the cheap query, the data, the"
        " rendering and gzip), client time around the request.",
        "",
        "| | p50 ms | p95 ms | max ms | n |",
        "|---|---:|---:|---:|---:|",
        _timing_row("server", run.miss_server_ms),
        _timing_row("of which reading the data", run.miss_data_ms),
        _timing_row("client", run.miss_client_ms),
        "",
        f"The first rendering after start (every bar's {o.days} days read whole, once a day"
        f" per page): {run.first_render_ms:.1f} ms.",
        "",
        "## Cached hits",
        "",
        f"`wrk -t1 -c{o.connections} -d{o.duration}s --latency` on the same machine as the"
        " server (they share its CPUs).",
        "",
        "| request | req/s | vs baseline | p50 ms | p99 ms | MB/s | errors |",
        "|---|---:|---:|---:|---:|---:|---|",
        *(_wrk_row(w, baseline) for w in run.wrk),
    ]
    return "\n".join(lines) + "\n"


def write_report(run: Run) -> Path:
    run.options.results_dir.mkdir(parents=True, exist_ok=True)
    path = run.options.results_dir / f"status-page-{run.started:%Y%m%d-%H%M%S}.md"
    path.write_text(render(run))
    return path


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)
    try:
        run = asyncio.run(run_bench(options))
    except BenchError as exc:
        print(f"status page benchmark failed: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    path = write_report(run)
    print(path.read_text())
    print(f"report: {path}")


if __name__ == "__main__":
    main()
