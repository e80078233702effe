"""`python -m bench.history`: what keeping history costs on PostgreSQL, and how fast it reads.

Each run makes its own scratch databases (`runstate_bench_history_<id>_*`), drops them at the
end (unless `--keep`), and measures, in one run:

1. **bytes per raw check row** (table plus indexes, `pg_total_relation_size`, the
   partitions summed, after VACUUM ANALYZE): the same rows (`--bytes-rows` over
   `--bytes-monitors` monitors, every 60 s, most UP with a status code and phases, some DOWN
   with an error text, inserted in the order the workers write them: minute by minute) in a
   database at schema revision 0005 (a bigint id, foreign keys, an index on
   (website_id, created_at)) and in one at head (no id, the primary key its one index,
   partitioned by day); and the 0005 database migrated to head, timed;
2. **dropping a day's partition while ingest runs**: a day of `--drop-rows` rows, dropped
   by `drop_partitions_before` while a task inserts checks into today's partition at
   `--ingest-rate` a second; the drop's wall time, and the inserts' latency before and
   during it;
3. **a seeded history**: one USER owning `--monitors` monitors, `--days` days of daily
   rollups, `--hourly-days` days of hourly rollups, `--raw-minutes` minutes of raw checks,
   incidents and pause periods sprinkled over them (all set-based: INSERT … SELECT over
   generate_series); the rollups' bytes per row;
4. **the history endpoints**, on `runstate api` (uvicorn) on loopback, timed from the client
   with sequential requests over one kept-alive connection, interleaved with
   `GET /api/v1/health` and `GET /api/v1/me` measured the same way (the baselines);
5. **disk per monitor** with the default retention, from the measured bytes per row.

The report goes to `bench/results/history-<YYYYMMDD-HHMMSS>.md` and is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import math
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

import runstate
from bench.procs import BenchError, busy_cpu_seconds, free_port
from runstate.auth.tokens import AccessTokenIssuer
from runstate.history.latency import LATENCY_BOUNDS_MS, LATENCY_COLUMNS
from runstate.history.partitions import (
    create_partition_sql,
    days_between,
    drop_partitions_before,
    ensure_daily_partitions,
)
from runstate.settings import Settings
from runstate.storage.db import create_engine
from runstate.storage.migrate import MIGRATIONS_DIR

RESULTS_DIR = Path(__file__).parent / "results"
BEFORE_REVISION = "0005"  # the last schema with a surrogate id on website_checks
INTERVAL_SECONDS = 60
DOWN_SHARE = 0.02  # of raw checks
INCIDENT_DAY_SHARE = 0.03  # of monitor-days (and as much per hour) with an outage
TARGETS = {  # the issue's targets, p95 in ms
    "uptime": 200.0,
    "daily": 20.0,
}
DROP_TARGET_SECONDS = 1.0
PICKED_MONITORS = 64  # the per-monitor endpoints cycle over this many, drawn at random


def say(message: str) -> None:
    print(f"[history {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Options:
    monitors: int = 10_000
    days: int = 90
    hourly_days: int = 7
    raw_minutes: int = 60
    bytes_rows: int = 1_000_000
    bytes_monitors: int = 2_000
    drop_rows: int = 100_000
    ingest_rate: float = 200.0
    ingest_margin: float = 3.0
    requests: int = 200
    warmup: int = 20
    postgres_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    results_dir: Path = RESULTS_DIR
    keep: bool = False


def parse_args(argv: list[str] | None = None) -> Options:
    d = Options()
    p = argparse.ArgumentParser(prog="python -m bench.history", description=__doc__.split("\n")[0])
    p.add_argument("--monitors", type=int, default=d.monitors, help="monitors of the one USER")
    p.add_argument("--days", type=int, default=d.days, help="days of daily rollups")
    p.add_argument("--hourly-days", type=int, default=d.hourly_days, help="days of hourly ones")
    p.add_argument("--raw-minutes", type=int, default=d.raw_minutes, help="of raw checks, each")
    p.add_argument("--bytes-rows", type=int, default=d.bytes_rows, help="raw rows for bytes/row")
    p.add_argument("--bytes-monitors", type=int, default=d.bytes_monitors)
    p.add_argument("--drop-rows", type=int, default=d.drop_rows, help="rows of the dropped day")
    p.add_argument("--ingest-rate", type=float, default=d.ingest_rate, help="inserts/s meanwhile")
    p.add_argument(
        "--ingest-margin", type=float, default=d.ingest_margin, help="s of ingest before/after"
    )
    p.add_argument("--requests", type=int, default=d.requests, help="measured, per endpoint")
    p.add_argument("--warmup", type=int, default=d.warmup, help="unmeasured, per endpoint")
    p.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", d.postgres_url),
        help="a user that may create databases",
    )
    p.add_argument("--results-dir", type=Path, default=d.results_dir)
    p.add_argument("--keep", action="store_true", help="keep the scratch databases")
    a = p.parse_args(argv)
    for name in ("monitors", "days", "hourly_days", "raw_minutes", "bytes_monitors", "requests"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.bytes_rows < a.bytes_monitors:
        p.error("--bytes-rows must be at least --bytes-monitors")
    return Options(**{k: v for k, v in vars(a).items()})


# --- the scratch databases -----------------------------------------------------------------


class Database:
    """One scratch database: created empty, migrated to a revision, dropped at the end."""

    def __init__(self, admin_url: str, name: str) -> None:
        self.admin_url = admin_url
        self.name = name
        base, _, _ = admin_url.partition("?")
        self.url = base.rsplit("/", 1)[0] + f"/{name}"

    async def create(self, revision: str) -> None:
        admin = await asyncpg.connect(self.admin_url, timeout=10)
        try:
            await admin.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await admin.close()
        await self.migrate(revision)

    async def migrate(self, revision: str) -> None:
        """The schema brought to ``revision`` by runstate's own migrations."""

        def upgrade(connection: Connection) -> None:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS_DIR))
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

        engine = create_engine(self.url)
        try:
            async with engine.begin() as connection:
                await connection.run_sync(upgrade)
        finally:
            await engine.dispose()

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[asyncpg.Connection]:
        connection = await asyncpg.connect(self.url, timeout=10, command_timeout=3600)
        try:
            yield connection
        finally:
            await connection.close()

    async def drop(self) -> None:
        admin = await asyncpg.connect(self.admin_url, timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await admin.close()


# --- seeding, set-based ----------------------------------------------------------------------


# A uniform draw in [0, 1) that is a function of its arguments: the same rows in every
# database of a run (and every run), whatever the plan.
def _uniform(*terms: str) -> str:
    key = " + ".join(
        f"({t})::bigint * {p}" for t, p in zip(terms, (1, 1_048_576, 7919), strict=False)
    )
    return f"((hashint8({key})::bigint + 2147483648) / 4294967296.0)"


WEBSITE_INSERT = """
INSERT INTO websites (id, user_id, url, name, interval_seconds, timeout_ms, method,
    expected_status, keyword, confirmations, recovery_confirmations, paused, current_status,
    last_checked_at, latest_response_time_ms, status_changed_at, time_added, updated_at)
SELECT m.id, $1, 'https://m' || m.idx || '.example.test/', 'monitor ' || m.idx, 60, 5000,
    'GET', '200-399', NULL, 1, 1, false, 'up', now(), 100, now() - interval '400 days',
    now() - interval '400 days', now()
FROM bench_monitor m ORDER BY m.idx
"""


async def seed_owner(connection: asyncpg.Connection, monitors: int) -> uuid.UUID:
    """One USER owning ``monitors`` monitors (every 60 s); `bench_monitor` (idx, id) maps a
    monitor's index to its id for the seeding statements."""
    user_id = uuid.uuid4()
    await connection.execute(
        "INSERT INTO users (id, email, password_hash, role, created_at)"
        " VALUES ($1, 'history@example.com', '!bench-no-login', 'USER', now())",
        user_id,
    )
    await connection.execute(
        "CREATE TABLE bench_monitor AS SELECT i AS idx, gen_random_uuid() AS id"
        " FROM generate_series(0, $1::int - 1) AS i",
        monitors,
    )
    await connection.execute("CREATE UNIQUE INDEX ON bench_monitor (idx)")
    await connection.execute(WEBSITE_INSERT, user_id)
    return user_id


def raw_checks_sql() -> str:
    """Raw checks of monitors idx < $3, one a minute for $2 minutes ending before $1, in the
    order the workers write them (minute by minute): 98 % UP (200, or 301 on every 20th
    monitor, with phases; https but for every 20th), 2 % DOWN (a timeout, a 503 or a refused
    connection, with the error's text)."""
    u1 = _uniform("k", "m.idx")
    u2 = _uniform("k", "m.idx", "3")
    return f"""
INSERT INTO website_checks (website_id, created_at, region_id, status, response_time_ms,
    status_code, error, dns_ms, connect_ms, tls_ms, ttfb_ms, cert_expires_at)
SELECT id, at, 1,
    CASE WHEN down THEN 'down' ELSE 'up' END,
    CASE WHEN down AND u2 < 0.5 THEN NULL WHEN down AND u2 >= 0.8 THEN NULL ELSE rt END,
    CASE WHEN down AND u2 < 0.5 THEN NULL WHEN down AND u2 >= 0.8 THEN NULL
         WHEN down THEN 503 WHEN idx % 20 = 1 THEN 301 ELSE 200 END,
    CASE WHEN NOT down THEN NULL
         WHEN u2 < 0.5 THEN 'timeout after 5000 ms waiting for the response'
         WHEN u2 < 0.8 THEN 'unexpected status 503 (expected 200-399)'
         ELSE 'connection refused by m' || idx || '.example.test port 443' END,
    CASE WHEN u1 > 0.9 THEN 1 + (idx % 30) ELSE 0 END,
    CASE WHEN down AND u2 >= 0.8 THEN NULL ELSE 1 + idx % 40 END,
    CASE WHEN https AND NOT (down AND u2 >= 0.5) THEN 10 + idx % 60 END,
    CASE WHEN down AND (u2 < 0.5 OR u2 >= 0.8) THEN NULL ELSE rt - 1 - idx % 40 END,
    CASE WHEN https THEN timestamptz '2027-01-01 00:00:00+00' + (idx % 90) * interval '1 day'
    END
FROM (
    SELECT m.id, m.idx, m.idx % 20 <> 0 AS https,
        $1::timestamptz - ($2::int - k) * interval '1 minute'
            + (m.idx % 60) * interval '1 second' + (m.idx * 7 % 1000) * interval '1 ms' AS at,
        {u1} < {DOWN_SHARE} AS down, {u1} AS u1, {u2} AS u2,
        120 + (m.idx % 10) * 40 + floor(power({u2}, 3) * 900)::int AS rt
    FROM generate_series(0, $2::int - 1) AS k
    CROSS JOIN bench_monitor m
    WHERE m.idx < $3::int
    ORDER BY k, m.idx
) AS c
"""  # noqa: S608 - constants


async def seed_raw_checks(
    connection: asyncpg.Connection, end: datetime, minutes: int, monitors: int
) -> int:
    status = await connection.execute(raw_checks_sql(), end, minutes, monitors)
    return int(status.split()[-1])


def _histogram_columns() -> str:
    """Each latency column's count: 60 % of the timed checks in the monitor's main bucket,
    25 % in the one above, 10 % below, the rest two above."""
    parts = []
    for index, column in enumerate(LATENCY_COLUMNS):
        parts.append(
            f"CASE {index} WHEN main THEN c1 WHEN main + 1 THEN c2 WHEN main - 1 THEN c3"
            f" WHEN main + 2 THEN timed - c1 - c2 - c3 ELSE 0 END AS {column}"
        )
    return ",\n    ".join(parts)


def _bucket_of_ms(ms: int) -> int:
    return next((i for i, b in enumerate(LATENCY_BOUNDS_MS) if ms <= b), len(LATENCY_BOUNDS_MS))


def rollups_sql(
    table: str, step: str, bucket_seconds: int, share: float, *, running_totals: bool = False
) -> str:
    """Rollups of every monitor for the buckets from $1 to $2 (the last one partial, up to
    $3), none where the monitor was paused (`bench_pause`); an outage of 1 to 120 minutes
    (capped by the bucket) in ``share`` of them. With ``running_totals`` (the daily rollups)
    each row's `prior_*` columns sum the monitor's earlier rows, as the write path keeps
    them."""
    fast, normal, slow = _bucket_of_ms(80), _bucket_of_ms(250), _bucket_of_ms(700)
    u1 = _uniform("m.idx", "extract(epoch FROM b.start)")
    u2 = _uniform("m.idx", "extract(epoch FROM b.start)", "5")
    full = bucket_seconds // INTERVAL_SECONDS
    columns = ", ".join(LATENCY_COLUMNS)
    prior_columns = prior_values = window = ""
    if running_totals:
        prior_columns = ", prior_checks, prior_up_checks, prior_up_seconds, prior_down_seconds"
        prior_values = "".join(
            f", COALESCE(SUM({value}) OVER earlier, 0)"
            for value in ("checks", "checks - down", "(checks - down) * 60", "down * 60")
        )
        window = (
            "\nWINDOW earlier AS (PARTITION BY id ORDER BY start"
            " ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)"
        )
    return f"""
INSERT INTO {table} (website_id, bucket_start, region_id, checks, up_checks, up_seconds,
    down_seconds, timed_checks, response_time_sum_ms, response_time_min_ms,
    response_time_max_ms, {columns}{prior_columns})
SELECT id, start, 1, checks, checks - down, (checks - down) * 60, down * 60, timed,
    timed::bigint * mean, mean / 3, mean * 6, {columns}{prior_values}
FROM (
    SELECT *, {_histogram_columns()}
    FROM (
        SELECT *, timed * 60 / 100 AS c1, timed * 25 / 100 AS c2, timed * 10 / 100 AS c3
        FROM (
            SELECT *, checks - down / 2 AS timed
            FROM (
                SELECT *, LEAST(down0, checks) AS down
                FROM (
                    SELECT m.id, b.start,
                        LEAST({full}, GREATEST(1, floor(
                            extract(epoch FROM $3::timestamptz - b.start) / 60)))::int AS checks,
                        CASE WHEN {u1} < {share}
                            THEN 1 + floor({u2} * 120)::int ELSE 0 END AS down0,
                        CASE WHEN m.idx % 10 < 6 THEN 80 WHEN m.idx % 10 < 9 THEN 250
                            ELSE 700 END AS mean,
                        CASE WHEN m.idx % 10 < 6 THEN {fast} WHEN m.idx % 10 < 9 THEN {normal}
                            ELSE {slow} END AS main
                    FROM bench_monitor m
                    CROSS JOIN generate_series(
                        $1::timestamptz, $2::timestamptz, interval '{step}') AS b(start)
                    WHERE NOT EXISTS (
                        SELECT 1 FROM bench_pause p WHERE p.idx = m.idx
                        AND b.start + interval '{step}' > p.paused_at
                        AND (p.resumed_at IS NULL OR b.start < p.resumed_at))
                    OFFSET 0  -- a fence: computed once, not inlined into every use above
                ) AS drawn
            ) AS capped
        ) AS timed
    ) AS spread
) AS histogram{window}"""  # noqa: S608 - constants


PAUSES_SQL = """
CREATE TABLE bench_pause AS
SELECT idx, $1::timestamptz - (60 - idx % 30) * interval '1 day' + (idx % 24) * interval '1 hour'
        AS paused_at,
    $1::timestamptz - (60 - idx % 30 - 1 - idx % 5) * interval '1 day' AS resumed_at
FROM bench_monitor WHERE idx % 100 = 7
UNION ALL
SELECT idx, $1::timestamptz - interval '2 days' - (idx % 24) * interval '1 hour', NULL
FROM bench_monitor WHERE idx % 500 = 3
"""


async def seed_history(
    connection: asyncpg.Connection, options: Options, now: datetime, seconds: dict[str, float]
) -> dict[str, int]:
    """Pauses, daily and hourly rollups, incidents and raw checks for every monitor; returns
    the rows written per table, and notes each step's time in ``seconds``."""
    rows: dict[str, int] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        seconds[name] = time.perf_counter() - clock
        clock = time.perf_counter()

    await connection.execute(PAUSES_SQL, now)
    await connection.execute(
        "INSERT INTO website_pauses (website_id, paused_at, resumed_at)"
        " SELECT m.id, p.paused_at, p.resumed_at FROM bench_pause p JOIN bench_monitor m"
        " USING (idx)"
    )
    await connection.execute(
        "UPDATE websites SET paused = true WHERE id IN (SELECT m.id FROM bench_pause p"
        " JOIN bench_monitor m USING (idx) WHERE p.resumed_at IS NULL)"
    )
    rows["website_pauses"] = await _count(connection, "website_pauses")
    lap("pauses")
    today = datetime(now.year, now.month, now.day, tzinfo=UTC)
    this_hour = now.replace(minute=0, second=0, microsecond=0)
    daily = rollups_sql(
        "check_rollups_daily", "1 day", 86_400, INCIDENT_DAY_SHARE, running_totals=True
    )
    await connection.execute(daily, today - timedelta(days=options.days - 1), today, now)
    lap("daily rollups")
    hourly = rollups_sql("check_rollups_hourly", "1 hour", 3_600, INCIDENT_DAY_SHARE / 24)
    first_hour = this_hour - timedelta(hours=options.hourly_days * 24 - 1)
    await connection.execute(hourly, first_hour, this_hour, now)
    lap("hourly rollups")
    # An incident for every outage in the daily rollups, resolved as long after as it lasted.
    offset = _uniform("extract(epoch FROM d.bucket_start)", "7")
    await connection.execute(f"""
INSERT INTO incidents (id, website_id, started_at, resolved_at, is_active, cause)
SELECT gen_random_uuid(), d.website_id, started, started + d.down_seconds * interval '1 second',
    false, 'timeout after 5000 ms waiting for the response'
FROM check_rollups_daily d
CROSS JOIN LATERAL (SELECT d.bucket_start + floor({offset} * 20) * interval '1 hour'
    AS started) AS s
WHERE d.down_seconds > 0 AND started + d.down_seconds * interval '1 second' < now()
""")  # noqa: S608 - constants
    lap("incidents")
    for table in ("check_rollups_daily", "check_rollups_hourly", "incidents"):
        rows[table] = await _count(connection, table)
    rows["website_checks"] = await seed_raw_checks(
        connection, now - timedelta(seconds=61), options.raw_minutes, options.monitors
    )
    lap("raw checks")
    return rows


async def _count(connection: asyncpg.Connection, table: str) -> int:
    return int(await connection.fetchval(f"SELECT count(*) FROM {table}"))  # noqa: S608


async def _partitions_for(url: str, first: datetime, last: datetime) -> None:
    engine = create_engine(url)
    try:
        await ensure_daily_partitions(engine, days_between(first.date(), last.date()))
    finally:
        await engine.dispose()


# --- sizes ---------------------------------------------------------------------------------

SIZE_SQL = """
SELECT coalesce(sum(pg_table_size(c.oid)), 0), coalesce(sum(pg_indexes_size(c.oid)), 0),
    coalesce(sum(pg_total_relation_size(c.oid)), 0)
FROM pg_class c
WHERE c.oid = $1::regclass
   OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = $1::regclass)
"""


@dataclass
class Size:
    table: str
    rows: int
    heap: int
    indexes: int
    total: int

    @property
    def per_row(self) -> float:
        return self.total / self.rows if self.rows else math.nan

    @property
    def heap_per_row(self) -> float:
        return self.heap / self.rows if self.rows else math.nan

    @property
    def indexes_per_row(self) -> float:
        return self.indexes / self.rows if self.rows else math.nan


async def measure_size(connection: asyncpg.Connection, table: str) -> Size:
    """After VACUUM ANALYZE; a partitioned table is the sum of its partitions."""
    await connection.execute(f"VACUUM ANALYZE {table}")
    heap, indexes, total = await connection.fetchrow(SIZE_SQL, table)
    return Size(table, await _count(connection, table), int(heap), int(indexes), int(total))


# --- bytes per raw row, before and after ---------------------------------------------------


@dataclass
class BytesResult:
    before: Size | None = None
    before_insert_s: float = 0.0
    after: Size | None = None
    after_insert_s: float = 0.0
    migrated: Size | None = None
    migrate_s: float = 0.0
    partitions: int = 0


async def bytes_before_and_after(
    admin_url: str, run_id: str, options: Options, now: datetime, keep: list[Database]
) -> tuple[BytesResult, Database]:
    """The same raw rows at revision 0005 and at head; the 0005 database then migrated. The
    head database is returned, for the partition drop."""
    result = BytesResult()
    minutes = math.ceil(options.bytes_rows / options.bytes_monitors)
    end = now - timedelta(minutes=2)
    before = Database(admin_url, f"runstate_bench_history_{run_id}_0005")
    keep.append(before)
    await before.create(BEFORE_REVISION)
    async with before.connect() as connection:
        await seed_owner(connection, options.bytes_monitors)
        started = time.perf_counter()
        await seed_raw_checks(connection, end, minutes, options.bytes_monitors)
        result.before_insert_s = time.perf_counter() - started
        result.before = await measure_size(connection, "website_checks")
    before_size = result.before
    say(f"revision {BEFORE_REVISION}: {before_size.rows:,} rows, {before_size.per_row:.0f} B/row")
    after = Database(admin_url, f"runstate_bench_history_{run_id}_head")
    keep.append(after)
    await after.create("head")
    await _partitions_for(after.url, end - timedelta(minutes=minutes + 1), end)
    async with after.connect() as connection:
        await seed_owner(connection, options.bytes_monitors)
        started = time.perf_counter()
        await seed_raw_checks(connection, end, minutes, options.bytes_monitors)
        result.after_insert_s = time.perf_counter() - started
        result.after = await measure_size(connection, "website_checks")
        result.partitions = int(
            await connection.fetchval(
                "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'website_checks'::regclass AND c.reltuples > 0"
            )
        )
    say(f"head: {result.after.rows:,} rows, {result.after.per_row:.1f} B/row")
    started = time.perf_counter()
    await before.migrate("head")
    result.migrate_s = time.perf_counter() - started
    async with before.connect() as connection:
        result.migrated = await measure_size(connection, "website_checks")
    say(f"0005 migrated to head in {result.migrate_s:.1f} s")
    if not options.keep:
        await before.drop()
        keep.remove(before)
    return result, after


# --- a day's partition dropped while ingest runs -------------------------------------------


@dataclass
class DropResult:
    day: date | None = None
    rows: int = 0
    seconds: float = math.nan
    dropped: list[date] = field(default_factory=list)
    ingest_rate: float = 0.0
    before_ms: list[float] = field(default_factory=list)  # insert latencies before the drop
    during_ms: list[float] = field(default_factory=list)  # … started while it ran
    after_ms: list[float] = field(default_factory=list)
    late_ms: float = 0.0  # the most an insert started after its turn
    failed: int = 0


async def _ingest(
    url: str, rate: float, ids: list[uuid.UUID], stop: asyncio.Event, record: Callable[..., None]
) -> None:
    """One check a 1/``rate`` s into today's partition, as a worker would write it; each
    insert's latency recorded with its start time."""
    connection = await asyncpg.connect(url, timeout=10)
    try:
        start = time.perf_counter()
        n = 0
        while not stop.is_set():
            due = start + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            began = time.perf_counter()
            try:
                await connection.execute(
                    "INSERT INTO website_checks (website_id, created_at, region_id, status,"
                    " response_time_ms, status_code, dns_ms, connect_ms, tls_ms, ttfb_ms)"
                    " VALUES ($1, clock_timestamp(), 1, 'up', 140, 200, 0, 3, 25, 110)",
                    ids[n % len(ids)],
                )
                record(began, (time.perf_counter() - began) * 1000, began - due, ok=True)
            except asyncpg.PostgresError:
                record(began, (time.perf_counter() - began) * 1000, began - due, ok=False)
            n += 1
    finally:
        await connection.close()


async def drop_while_ingesting(database: Database, options: Options, now: datetime) -> DropResult:
    """A day older than the raw retention, filled with ``--drop-rows`` rows, dropped by
    `drop_partitions_before` with ingest running before, during and after."""
    retention = Settings.model_fields["CHECK_RETENTION_DAYS"].default
    day = now.date() - timedelta(days=retention + 1)
    result = DropResult(day=day, ingest_rate=options.ingest_rate)
    # At most 1,439 minutes ending at 23:59, so that every row (up to 61 s after its minute)
    # falls on the day.
    monitors = max(1, min(options.bytes_monitors, math.ceil(options.drop_rows / 1439)))
    minutes = math.ceil(options.drop_rows / monitors)
    async with database.connect() as connection:
        await connection.execute(create_partition_sql(day))
        end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(minutes=1439)
        await seed_raw_checks(connection, end, minutes, monitors)
        result.rows = await _count(connection, f"website_checks_p{day:%Y%m%d}")
        await connection.execute(f"VACUUM ANALYZE website_checks_p{day:%Y%m%d}")
        ids = [r[0] for r in await connection.fetch("SELECT id FROM bench_monitor ORDER BY idx")]
    window: dict[str, float] = {}

    def record(began: float, ms: float, late: float, *, ok: bool) -> None:
        if not ok:
            result.failed += 1
        result.late_ms = max(result.late_ms, late * 1000)
        if "start" not in window:
            result.before_ms.append(ms)
        elif "end" not in window or began < window["end"]:
            result.during_ms.append(ms)
        else:
            result.after_ms.append(ms)

    stop = asyncio.Event()
    ingest = asyncio.create_task(_ingest(database.url, options.ingest_rate, ids, stop, record))
    engine = create_engine(database.url)
    try:
        await asyncio.sleep(options.ingest_margin)
        window["start"] = time.perf_counter()
        result.dropped = await drop_partitions_before(engine, day + timedelta(days=1))
        window["end"] = time.perf_counter()
        result.seconds = window["end"] - window["start"]
        await asyncio.sleep(options.ingest_margin)
    finally:
        stop.set()
        await ingest
        await engine.dispose()
    return result


# --- the endpoints ----------------------------------------------------------------------


@dataclass
class Timing:
    name: str
    path: str
    ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    body_bytes: int = 0
    items: int | None = None
    served: bool = True

    def percentile(self, q: float) -> float:
        if not self.ms:
            return math.nan
        ordered = sorted(self.ms)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class EndpointResult:
    timings: list[Timing] = field(default_factory=list)
    busy_cores: float = math.nan
    seconds: float = 0.0
    queries: list[Timing] = field(default_factory=list)  # the SQL alone, in this process
    queries_error: str = ""
    totals_agree: int = 0  # monitors whose figures from running totals match the summed ones
    totals_compared: int = 0


@contextlib.asynccontextmanager
async def api_process(url: str, secret: str, monitors: int, work: Path) -> AsyncIterator[int]:
    """`runstate api` on a free loopback port, with MAX_MONITORS_PER_USER raised to fit."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNSTATE_", "SMTP_"))}
    for name in ("ADMIN_EMAIL", "ADMIN_PASSWORD", "REDIS_URL", "REDIS_ADDR"):
        env.pop(name, None)
    env.update(
        DATABASE_URL=url,
        JWT_SECRET=secret,
        ACCESS_TOKEN_TTL_SECONDS="86400",  # noqa: S106 - a lifetime, not a secret
        MAX_MONITORS_PER_USER=str(max(monitors, 1_000)),
        HOST="127.0.0.1",
        PORT=str(port),
        APP_ENV="dev",
        LOG_LEVEL="WARNING",
        METRICS_PORT="0",
        RUNSTATE_DATA_DIR=str(work),
    )
    log = (work / "api.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runstate", "api", env=env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as session:
            while True:
                if process.returncode is not None:
                    text = (work / "api.log").read_text(errors="replace")[-2000:]
                    raise BenchError(f"runstate api exited:\n{text}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"http://127.0.0.1:{port}/api/v1/health") as reply:
                        if reply.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise BenchError("runstate api did not answer within 60 s")
                await asyncio.sleep(0.2)
        yield port
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()
        log.close()


def _items(body: bytes) -> int | None:
    """How many entries a JSON answer's `data` holds, where it is a list (or holds one)."""
    try:
        data = json.loads(body).get("data")
    except (ValueError, AttributeError):
        return None
    if isinstance(data, list):
        return len(data)
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        return len(lists[0]) if lists else None
    return None


async def time_endpoints(
    port: int, token: str, website_ids: list[uuid.UUID], options: Options
) -> EndpointResult:
    """Sequential requests over one kept-alive connection, the endpoints interleaved round by
    round (so the machine's other load falls on each alike); warm-up rounds unmeasured. An
    endpoint this build does not serve (404 for a monitor that exists) is reported as such."""
    base = f"http://127.0.0.1:{port}/api/v1"
    picks = random.Random(7).sample(website_ids, min(len(website_ids), PICKED_MONITORS))  # noqa: S311
    endpoints: list[tuple[Timing, Callable[[int], str], bool]] = [
        (Timing("health", "GET /api/v1/health"), lambda _: "/health", False),
        (Timing("me", "GET /api/v1/me"), lambda _: "/me", True),
        (Timing("uptime", "GET /api/v1/uptime?window=90d"), lambda _: "/uptime?window=90d", True),
        (
            Timing("uptime_page", "GET /api/v1/uptime?window=90d&limit=100"),
            lambda _: "/uptime?window=90d&limit=100",
            True,
        ),
        (
            Timing("daily", "GET /api/v1/websites/{id}/daily?days=365"),
            lambda i: f"/websites/{picks[i % len(picks)]}/daily?days=365",
            True,
        ),
        (
            Timing("website_uptime", "GET /api/v1/websites/{id}/uptime"),
            lambda i: f"/websites/{picks[i % len(picks)]}/uptime",
            True,
        ),
    ]
    auth = {"Authorization": f"Bearer {token}"}
    result = EndpointResult(timings=[t for t, _, _ in endpoints])
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def get(path: str, authed: bool) -> tuple[int, bytes, float]:
            began = time.perf_counter()
            async with session.get(base + path, headers=auth if authed else None) as reply:
                body = await reply.read()
            return reply.status, body, (time.perf_counter() - began) * 1000

        for timing, path, authed in endpoints:
            status, body, _ = await get(path(0), authed)
            timing.served = status != 404
            timing.body_bytes = len(body)
            timing.items = _items(body) if status == 200 else None
            if not timing.served:
                say(f"{timing.path}: 404, not served by this build")
        live = [(t, p, a) for t, p, a in endpoints if t.served]
        for i in range(options.warmup):
            for _timing, path, authed in live:
                await get(path(i), authed)
        busy = busy_cpu_seconds()
        started = time.perf_counter()
        for i in range(options.requests):
            for timing, path, authed in live:
                status, _, ms = await get(path(i), authed)
                timing.ms.append(ms)
                timing.statuses[status] = timing.statuses.get(status, 0) + 1
        result.seconds = time.perf_counter() - started
        result.busy_cores = (busy_cpu_seconds() - busy) / result.seconds
    return result


def _same_figures(a: Any, b: Any) -> bool:
    """Equal, floats within a millionth of a percent."""
    left, right = vars(a), vars(b)
    return left.keys() == right.keys() and all(
        math.isclose(x, y, abs_tol=1e-6)
        if isinstance(x, float) and isinstance(y, float)
        else x == y
        for x, y in ((left[k], right[k]) for k in left)
    )


async def time_queries(
    url: str,
    user_id: uuid.UUID,
    website_ids: list[uuid.UUID],
    options: Options,
    result: EndpointResult,
) -> None:
    """The statements behind `/uptime?window=90d` and `/websites/{id}/daily?days=365`, run
    here through runstate.history.uptime as the routes build them, with no HTTP, auth or
    serialisation: how much of an endpoint's time is the database's. Built from the
    module's internals, so a change there is reported, not raised."""
    from sqlalchemy import select

    from runstate.history import uptime
    from runstate.storage.db import session_factory
    from runstate.storage.tables import Website

    rounds = max(5, options.requests // 10)
    # The list's statement as the route builds it on PostgreSQL: from the daily rollups'
    # running totals, where this build has them.
    fast = "running_totals" in inspect.signature(uptime.windows_statement).parameters
    list_options: dict[str, Any] = {"running_totals": True} if fast else {}
    picks = random.Random(7).sample(website_ids, min(len(website_ids), PICKED_MONITORS))  # noqa: S311
    many = Timing("uptime_sql", "uptime of every monitor over 90d (the statement, fetched)")
    daily = Timing("daily_sql", "daily_history(365 days) of one monitor")
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            for i in range(rounds + 2):  # the first two warm up
                now = datetime.now(UTC)
                monitors = (
                    select(Website.id, Website.time_added, Website.name, Website.url)
                    .where(Website.user_id == user_id)
                    .order_by(Website.time_added, Website.id)
                )
                span = uptime.window("90d", now)
                statement = uptime.windows_statement(monitors, [span], **list_options)
                began = time.perf_counter()
                rows = (await session.execute(statement)).all()
                if i >= 2:
                    many.ms.append((time.perf_counter() - began) * 1000)
                    many.items = len(rows)
                began = time.perf_counter()
                days = await uptime.daily_history(session, picks[i % len(picks)], 365, now)
                if i >= 2:
                    daily.ms.append((time.perf_counter() - began) * 1000)
                    daily.items = len(days)
                await session.rollback()
            # The seeded running totals give what summing the rows gives, over a window
            # that holds every seeded day and over one within them.
            for name in ("90d", "30d") if fast else ():
                span = uptime.window(name, datetime.now(UTC))
                pair = [
                    (await session.execute(uptime.windows_statement(monitors, [span], **o))).all()
                    for o in (list_options, {})
                ]
                result.totals_agree += sum(
                    _same_figures(uptime.figures_of(a), uptime.figures_of(b))
                    for a, b in zip(*pair, strict=True)
                )
                result.totals_compared += len(pair[0])
        result.queries = [many, daily]
    except Exception as exc:
        result.queries_error = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        await engine.dispose()


# --- the run -------------------------------------------------------------------------------


@dataclass
class HistoryRun:
    options: Options
    started: datetime
    bytes: BytesResult | None = None
    drop: DropResult | None = None
    seeded: dict[str, int] = field(default_factory=dict)
    seed_seconds: dict[str, float] = field(default_factory=dict)
    rollup_sizes: dict[str, Size] = field(default_factory=dict)
    endpoints: EndpointResult | None = None
    postgres_version: str = ""
    run_id: str = ""
    load: tuple[float, float] = (math.nan, math.nan)


async def timed(run: HistoryRun, name: str, step: Awaitable[Any]) -> Any:
    started = time.perf_counter()
    value = await step
    run.seed_seconds[name] = time.perf_counter() - started
    return value


async def run_history(options: Options) -> HistoryRun:
    run_id = uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    run = HistoryRun(options, now, load=(os.getloadavg()[0], math.nan), run_id=run_id)
    scratch: list[Database] = []
    work = Path(tempfile.mkdtemp(prefix=f"runstate-history-{run_id}-"))
    try:
        say(f"bytes per row: {options.bytes_rows:,} rows over {options.bytes_monitors:,} monitors")
        run.bytes, head = await bytes_before_and_after(
            options.postgres_url, run_id, options, now, scratch
        )
        say(f"dropping a day of {options.drop_rows:,} rows while ingest runs")
        run.drop = await drop_while_ingesting(head, options, now)
        if not options.keep:
            await head.drop()
            scratch.remove(head)
        history = Database(options.postgres_url, f"runstate_bench_history_{run_id}")
        scratch.append(history)
        await history.create("head")
        await _partitions_for(history.url, now - timedelta(minutes=options.raw_minutes + 2), now)
        say(f"seeding {options.monitors:,} monitors x {options.days} days")
        async with history.connect() as connection:
            run.postgres_version = str(await connection.fetchval("SHOW server_version"))
            await timed(run, "monitors", seed_owner(connection, options.monitors))
            run.seeded = await seed_history(connection, options, now, run.seed_seconds)
            run.seeded["websites"] = options.monitors
            for table in ("check_rollups_daily", "check_rollups_hourly", "website_checks"):
                run.rollup_sizes[table] = await measure_size(connection, table)
            await connection.execute("VACUUM ANALYZE")
            website_ids = [r[0] for r in await connection.fetch("SELECT id FROM bench_monitor")]
        say("timing the endpoints on runstate api")
        secret = secrets.token_urlsafe(48)
        user_id = await _owner(history)
        token = AccessTokenIssuer(secret, 86_400).issue(user_id)
        async with api_process(history.url, secret, options.monitors, work) as port:
            run.endpoints = await time_endpoints(port, token, website_ids, options)
        await time_queries(history.url, user_id, website_ids, options, run.endpoints)
    finally:
        if not options.keep:
            shutil.rmtree(work, ignore_errors=True)
            for database in scratch:
                with contextlib.suppress(OSError, asyncpg.PostgresError):
                    await database.drop()
    run.load = (run.load[0], os.getloadavg()[0])
    return run


async def _owner(database: Database) -> uuid.UUID:
    async with database.connect() as connection:
        value: uuid.UUID = await connection.fetchval("SELECT id FROM users WHERE role = 'USER'")
    return value


# --- the report ----------------------------------------------------------------------------


def _n(value: float, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def _size_row(label: str, size: Size | None, insert_s: float | None = None) -> str:
    if size is None:
        return f"| {label} | n/a | | | | | |"
    seconds = _n(insert_s, 1) if insert_s is not None else ""
    return (
        f"| {label} | {size.rows:,} | {_n(size.heap_per_row)} | {_n(size.indexes_per_row)} |"
        f" **{_n(size.per_row)}** | {size.total / 2**20:,.1f} | {seconds} |"
    )


def disk_per_monitor(raw: float, hourly: float, daily: float) -> dict[str, float]:
    """Bytes one monitor (one region, every 60 s) holds at most with the default retention:
    "kept N days" keeps today and the N whole UTC days before it (runstate.history.retention),
    so N + 1 days of raw checks and of hourly rollups just before a day ages out; daily
    rollups are kept forever by default, so a year's worth is added every year."""
    fields = Settings.model_fields
    raw_days = fields["CHECK_RETENTION_DAYS"].default + 1
    hourly_days = fields["HOURLY_ROLLUP_RETENTION_DAYS"].default + 1
    per_day = 86_400 // INTERVAL_SECONDS
    return {
        "raw_rows": raw_days * per_day,
        "raw": raw_days * per_day * raw,
        "hourly_rows": hourly_days * 24,
        "hourly": hourly_days * 24 * hourly,
        "daily_rows": 365,
        "daily": 365 * daily,
        "raw_days": raw_days,
        "hourly_days": hourly_days,
    }


def _latency_row(timing: Timing, baseline: Timing | None) -> str:
    if not timing.served:
        return f"| `{timing.path}` | not served by this build | | | | | | |"
    p95 = timing.percentile(0.95)
    ratio = p95 / baseline.percentile(0.95) if baseline and baseline.ms else math.nan
    target = TARGETS.get(timing.name)
    verdict = "" if target is None else ("yes" if p95 < target else "**no**")
    target_text = "" if target is None else f"< {target:.0f} ms: {verdict}"
    statuses = ", ".join(f"{s} x{n}" for s, n in sorted(timing.statuses.items()))
    items = "" if timing.items is None else f"{timing.items:,} items, "
    return (
        f"| `{timing.path}` | {_n(timing.percentile(0.5), 2)} | {_n(p95, 2)} |"
        f" {_n(timing.percentile(0.99), 2)} | {_n(max(timing.ms), 2)} | {_n(ratio, 1)} |"
        f" {target_text} | {items}{timing.body_bytes:,} B; {statuses} |"
    )


def _stats(values: list[float]) -> str:
    if not values:
        return "n/a | n/a | n/a | 0"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
    return f"{statistics.median(ordered):.2f} | {p99:.2f} | {ordered[-1]:.2f} | {len(ordered):,}"


def _code_version() -> str:
    """The commit of the runstate that ran (``+ changes`` when its tree differs from it)."""
    root = Path(runstate.__file__).resolve().parents[2]

    def git(*args: str) -> str:
        command = ["git", "-C", str(root), *args]
        done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=10)  # noqa: S603
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return f"{commit}{' + changes' if dirty else ''} ({root})"


def render(run: HistoryRun) -> str:
    o = run.options
    lines = [
        f"# runstate history benchmark — {run.started:%Y-%m-%dT%H:%M:%S%z}",
        "",
        f"Code: {_code_version()}.",
        "",
        f"PostgreSQL {run.postgres_version}, {os.cpu_count()} CPUs, Python"
        f" {sys.version.split()[0]}; load average {_n(run.load[0], 2)} at the start,"
        f" {_n(run.load[1], 2)} at the end (other work on the machine counts: compare"
        " ratios to the baselines measured in the same run rather than raw times). Scratch"
        f" databases `runstate_bench_history_{run.run_id}*`"
        f"{', kept' if o.keep else ', dropped at the end'}.",
        "",
        "## Bytes per raw check row",
        "",
        f"The same {o.bytes_rows:,} rows ({o.bytes_monitors:,} monitors every 60 s, "
        f"{1 - DOWN_SHARE:.0%} UP with a status code and phases, {DOWN_SHARE:.0%}"
        " DOWN with an error text), inserted minute by minute as the workers write them, in"
        " one INSERT … SELECT; sizes from `pg_table_size`, `pg_indexes_size` and"
        " `pg_total_relation_size` (a partitioned table: its partitions summed) after"
        " VACUUM ANALYZE.",
        "",
        "| schema | rows | table B/row | indexes B/row | total B/row | total MiB | insert s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    b = run.bytes
    if b is not None:
        lines += [
            _size_row(
                f"revision {BEFORE_REVISION} (bigint id, FKs, index on (website_id, created_at))",
                b.before,
                b.before_insert_s,
            ),
            _size_row(
                f"head (PK (website_id, created_at, region_id),"
                f" in {b.partitions} daily partitions)",
                b.after,
                b.after_insert_s,
            ),
            _size_row(
                f"revision {BEFORE_REVISION} migrated to head (rows copied in key order)",
                b.migrated,
            ),
        ]
        if b.before and b.after:
            lines += [
                "",
                f"Head ÷ {BEFORE_REVISION}: **{b.after.per_row / b.before.per_row:.2f}** of the"
                f" bytes per row ({b.before.per_row - b.after.per_row:,.1f} B less); the"
                f" migration of those {b.before.rows:,} rows to head (copy into partitions,"
                f" hourly and daily rollups backfilled) took **{b.migrate_s:.1f} s**.",
            ]
    lines += _rollup_section(run) + _disk_section(run) + _endpoint_section(run)
    lines += _drop_section(run) + _seed_section(run)
    return "\n".join(lines) + "\n"


def _rollup_section(run: HistoryRun) -> list[str]:
    lines = [
        "",
        "## Bytes per rollup row",
        "",
        "From the seeded history below (after VACUUM ANALYZE); 16 latency-histogram columns"
        " per row.",
        "",
        "| table | rows | table B/row | indexes B/row | total B/row | total MiB | |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for table in ("check_rollups_daily", "check_rollups_hourly", "website_checks"):
        size = run.rollup_sizes.get(table)
        label = f"`{table}`" + (" (the seeded history's raw checks)" if "checks" in table else "")
        lines.append(_size_row(label, size))
    return lines


def _disk_section(run: HistoryRun) -> list[str]:
    sizes = run.rollup_sizes
    if run.bytes is None or run.bytes.after is None or not sizes:
        return []
    d = disk_per_monitor(
        run.bytes.after.per_row,
        sizes["check_rollups_hourly"].per_row,
        sizes["check_rollups_daily"].per_row,
    )
    standing = d["raw"] + d["hourly"] + d["daily"]
    per_year = d["daily"]
    return [
        "",
        "## Disk per monitor with the default retention",
        "",
        f"Raw checks kept {d['raw_days'] - 1:.0f} days (CHECK_RETENTION_DAYS), hourly rollups"
        f" {d['hourly_days'] - 1:.0f} days, daily rollups forever; one region, a check every"
        " 60 s. A setting of N keeps today and the N whole days before it, so a monitor holds"
        " at most N + 1 days of each (the figures below); the raw bytes per row are head's,"
        " inserted in ingest order.",
        "",
        "| kind | rows held | B/row | bytes |",
        "|---|---:|---:|---:|",
        f"| raw checks ({d['raw_days']:.0f} days x 1,440) | {d['raw_rows']:,.0f} |"
        f" {_n(run.bytes.after.per_row)} | {d['raw'] / 1024:,.0f} KiB |",
        f"| hourly rollups ({d['hourly_days']:.0f} days x 24) | {d['hourly_rows']:,.0f} |"
        f" {_n(sizes['check_rollups_hourly'].per_row)} | {d['hourly'] / 1024:,.0f} KiB |",
        f"| daily rollups (one year) | {d['daily_rows']:,.0f} |"
        f" {_n(sizes['check_rollups_daily'].per_row)} | {d['daily'] / 1024:,.0f} KiB |",
        f"| **after one year** | | | **{standing / 2**20:,.2f} MiB** |",
        "",
        f"After the first year a monitor grows by {per_year / 1024:,.0f} KiB a year (its daily"
        f" rollups); the rest is a standing {(d['raw'] + d['hourly']) / 2**20:,.2f} MiB."
        f" 10,000 monitors: {standing * 10_000 / 2**30:,.1f} GiB after a year. Before the"
        f" history change (revision {BEFORE_REVISION}), the same {d['raw_days']:.0f} days of"
        f" raw checks took {d['raw_rows'] * run.bytes.before.per_row / 2**20:,.2f} MiB per"
        " monitor."
        if run.bytes.before
        else "",
    ]


def _endpoint_section(run: HistoryRun) -> list[str]:
    e = run.endpoints
    if e is None:
        return ["", "## Endpoints", "", "Not measured (the run stopped before)."]
    o = run.options
    baseline = next((t for t in e.timings if t.name == "health"), None)
    lines = [
        "",
        "## Endpoints",
        "",
        f"`runstate api` (uvicorn) on loopback, one USER owning {o.monitors:,} monitors"
        f" (MAX_MONITORS_PER_USER raised); {o.warmup} warm-up rounds, then {o.requests}"
        " rounds of sequential requests over one kept-alive connection, each round one"
        " request per endpoint (the per-monitor ones cycle over"
        f" {min(o.monitors, PICKED_MONITORS)} monitors); timed from the"
        f" client. The machine was busy {_n(e.busy_cores, 2)} cores meanwhile"
        f" ({e.seconds:.1f} s).",
        "",
        "| endpoint | p50 ms | p95 ms | p99 ms | max ms | p95 ÷ health p95 | target | answer |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    lines += [_latency_row(t, baseline) for t in e.timings]
    lines += [
        "",
        "The database's share, the same statements run in the harness (no HTTP, no"
        " auth, no serialisation; one session, sequential):",
        "",
    ]
    if e.queries_error:
        lines.append(f"Not measured: {e.queries_error}")
        return lines
    if e.totals_compared:
        lines += [
            "The list's statement reads the daily rollups' running totals (two rows per"
            " monitor), as the route does on PostgreSQL; on the seeded history its figures"
            f" equal those of the statement that sums every row for {e.totals_agree:,} of"
            f" {e.totals_compared:,} (monitor, window) pairs (windows 90d and 30d).",
            "",
        ]
    lines += [
        "| statement | p50 ms | p95 ms | max ms | rows | runs |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for q in e.queries:
        lines.append(
            f"| {q.path} | {_n(q.percentile(0.5), 2)} | {_n(q.percentile(0.95), 2)} |"
            f" {_n(max(q.ms) if q.ms else math.nan, 2)} | {q.items or 0:,} | {len(q.ms)} |"
        )
    return lines


def _drop_section(run: HistoryRun) -> list[str]:
    d = run.drop
    if d is None:
        return []
    verdict = "yes" if d.seconds < DROP_TARGET_SECONDS else "**no**"
    return [
        "",
        "## Dropping a day's partition while ingest runs",
        "",
        f"The partition of {d.day} ({d.rows:,} rows) dropped by `drop_partitions_before`"
        " (DETACH PARTITION … CONCURRENTLY, then DROP TABLE) while one connection inserted"
        f" checks into today's partition at {d.ingest_rate:,.0f} a second,"
        f" {run.options.ingest_margin:g} s before and after: **{d.seconds * 1000:,.0f} ms**"
        f" (target < {DROP_TARGET_SECONDS:.0f} s:"
        f" {verdict}); days dropped: {', '.join(str(x) for x in d.dropped) or 'none'}.",
        "",
        "| inserts | p50 ms | p99 ms | max ms | n |",
        "|---|---:|---:|---:|---:|",
        f"| before the drop | {_stats(d.before_ms)} |",
        f"| started during the drop | {_stats(d.during_ms)} |",
        f"| after it | {_stats(d.after_ms)} |",
        "",
        f"Failed inserts: {d.failed}; the latest an insert started after its turn:"
        f" {d.late_ms:,.1f} ms.",
    ]


def _seed_section(run: HistoryRun) -> list[str]:
    o = run.options
    s = run.seeded
    return [
        "",
        "## The seeded history",
        "",
        f"One USER, {o.monitors:,} monitors every 60 s; daily rollups for {o.days} days (the"
        f" last one partial), hourly rollups for the last {o.hourly_days} days"
        f" ({o.hourly_days * 24} hours, the last partial), raw checks for the last"
        f" {o.raw_minutes} minutes; an outage of 1-120 minutes in {INCIDENT_DAY_SHARE:.0%} of"
        " the monitor-days (and as many per hour in the hourly rollups), with an incident"
        " each; 1% of the monitors paused for 1-5 days within the window and 0.2% paused"
        " for the last 2 days (no rollups while paused). Set-based: INSERT … SELECT over"
        " generate_series.",
        "",
        "| table | rows |",
        "|---|---:|",
        *(f"| `{table}` | {rows:,} |" for table, rows in s.items()),
        "",
        "Seeding took " + ", ".join(f"{k} {v:.1f} s" for k, v in run.seed_seconds.items()) + ".",
    ]


def write_report(run: HistoryRun) -> Path:
    run.options.results_dir.mkdir(parents=True, exist_ok=True)
    path = run.options.results_dir / f"history-{run.started:%Y%m%d-%H%M%S}.md"
    path.write_text(render(run))
    return path


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)
    try:
        run = asyncio.run(run_history(options))
    except BenchError as exc:
        print(f"history benchmark failed: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    path = write_report(run)
    print(path.read_text())
    print(f"report: {path}")


if __name__ == "__main__":
    main()
