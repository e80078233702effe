"""runstate.outages: which errors are outages of runstate's own dependencies, held against
the real errors — a real closed port, a real PostgreSQL connection cut by the server, a
real SQLite file that is locked, read-only or missing — and how an outage is waited out."""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from redis._parsers.base import BaseParser
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy import exc as sa
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from runstate.consumer import Consumer, ConsumerOptions, PermanentFailure, each_entry
from runstate.outages import OutageRetry, describe, is_outage
from runstate.queue.base import Entry, QueueUnavailable
from runstate.queue.redis_streams import RedisStreamQueue
from runstate.storage.db import create_engine
from tests.integration.private_services import PrivateRedis


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def raised(action: Callable[[], Awaitable[object]]) -> BaseException:
    try:
        await action()
    except Exception as exc:
        return exc
    raise AssertionError("no error raised")


async def run_sql(engine: AsyncEngine, *statements: str) -> None:
    async with engine.begin() as connection:
        for statement in statements:
            await connection.execute(text(statement))


async def run_sql_with(engine: AsyncEngine, statement: str, **params: object) -> None:
    async with engine.begin() as connection:
        await connection.execute(text(statement), params)


@pytest.fixture
def sqlite_file(tmp_path: Path) -> Path:
    path = tmp_path / "runstate.db"
    with sqlite3.connect(path) as setup:
        setup.execute("CREATE TABLE t (a INTEGER PRIMARY KEY)")
    return path


# -- the database ----------------------------------------------------------------------------


async def test_postgres_refusing_connections_is_an_outage() -> None:
    engine = create_engine(f"postgresql://postgres@127.0.0.1:{closed_port()}/runstate")
    try:
        error = await raised(lambda: run_sql(engine, "SELECT 1"))
    finally:
        await engine.dispose()
    assert is_outage(error), repr(error)


@pytest.mark.postgres
async def test_a_postgres_connection_cut_by_the_server_is_an_outage(
    postgres_admin_url: str,
) -> None:
    engine = create_engine(postgres_admin_url)
    admin = create_engine(postgres_admin_url)
    try:
        async with engine.connect() as connection:
            pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            await run_sql(admin, f"SELECT pg_terminate_backend({int(pid)})")
            error = await raised(lambda: connection.execute(text("SELECT 1")))
    finally:
        await engine.dispose()
        await admin.dispose()
    assert is_outage(error), repr(error)


@pytest.mark.postgres
async def test_a_postgres_server_that_is_read_only_as_during_a_failover_is_an_outage(
    postgres_admin_url: str,
) -> None:
    engine = create_engine(postgres_admin_url)
    try:
        error = await raised(
            lambda: run_sql(
                engine,
                "CREATE TEMPORARY TABLE IF NOT EXISTS t (a int)",
                "SET TRANSACTION READ ONLY",
                "CREATE TABLE never_made (a int)",
            )
        )
    finally:
        await engine.dispose()
    assert is_outage(error), repr(error)


@pytest.mark.postgres
async def test_errors_of_the_statement_itself_on_postgres_are_no_outage(
    postgres_admin_url: str,
) -> None:
    engine = create_engine(postgres_admin_url)
    table = f"outage_test_{uuid.uuid4().hex[:8]}"
    try:
        syntax = await raised(lambda: run_sql(engine, "SELEC 1"))
        await run_sql(engine, f"CREATE TABLE {table} (a int PRIMARY KEY)")
        await run_sql(engine, f"INSERT INTO {table} VALUES (1)")  # noqa: S608
        duplicate = await raised(lambda: run_sql(engine, f"INSERT INTO {table} VALUES (1)"))  # noqa: S608
        missing = await raised(lambda: run_sql(engine, "SELECT * FROM no_such_table"))
    finally:
        await run_sql(engine, f"DROP TABLE IF EXISTS {table}")
        await engine.dispose()
    assert isinstance(duplicate, IntegrityError)
    for error in (syntax, duplicate, missing):
        assert not is_outage(error), repr(error)


async def test_a_sqlite_file_locked_by_another_writer_is_an_outage(sqlite_file: Path) -> None:
    holder = sqlite3.connect(sqlite_file, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{sqlite_file}", connect_args={"timeout": 0.1}
    )
    try:
        error = await raised(lambda: run_sql(engine, "INSERT INTO t VALUES (1)"))
    finally:
        holder.rollback()
        holder.close()
        await engine.dispose()
    assert "database is locked" in str(error)
    assert is_outage(error), repr(error)


async def test_a_sqlite_file_that_cannot_be_written_or_opened_is_an_outage(
    sqlite_file: Path, tmp_path: Path
) -> None:
    read_only = create_async_engine(f"sqlite+aiosqlite:///file:{sqlite_file}?mode=ro&uri=true")
    gone = create_async_engine(
        f"sqlite+aiosqlite:///file:{tmp_path / 'gone' / 'runstate.db'}?mode=rw&uri=true"
    )
    try:
        unwritable = await raised(lambda: run_sql(read_only, "INSERT INTO t VALUES (1)"))
        unopenable = await raised(lambda: run_sql(gone, "SELECT 1"))
    finally:
        await read_only.dispose()
        await gone.dispose()
    assert "readonly database" in str(unwritable)
    assert "unable to open" in str(unopenable)
    assert is_outage(unwritable), repr(unwritable)
    assert is_outage(unopenable), repr(unopenable)


async def test_errors_of_the_statement_itself_on_sqlite_are_no_outage(sqlite_file: Path) -> None:
    engine = create_engine(f"sqlite:///{sqlite_file}")
    try:
        missing = await raised(lambda: run_sql(engine, "SELECT * FROM no_such_table"))
        await run_sql(engine, "INSERT INTO t VALUES (1)")
        duplicate = await raised(lambda: run_sql(engine, "INSERT INTO t VALUES (1)"))
    finally:
        await engine.dispose()
    assert "no such table" in str(missing)
    assert not is_outage(missing)
    assert not is_outage(duplicate)


@pytest.mark.postgres
async def test_an_argument_asyncpg_cannot_send_is_a_bug_not_an_outage(
    postgres_admin_url: str,
) -> None:
    engine = create_engine(postgres_admin_url)
    try:
        out_of_range = await raised(
            lambda: run_sql_with(engine, "SELECT CAST(:n AS integer)", n=2**40)
        )
        # Refused by asyncpg itself with an InterfaceError (UnsupportedClientFeatureError),
        # which SQLAlchemy raises as its InterfaceError.
        unsendable = await raised(lambda: run_sql_with(engine, "SELECT CAST(:r AS record)", r=(1,)))
    finally:
        await engine.dispose()
    assert "out of int32 range" in str(out_of_range)
    assert isinstance(unsendable, sa.InterfaceError), repr(unsendable)
    assert "anonymous composite types" in str(unsendable)
    for error in (out_of_range, unsendable):
        assert not is_outage(error), repr(error)


@pytest.mark.postgres
async def test_a_closed_asyncpg_connection_is_an_outage(postgres_admin_url: str) -> None:
    connection = await asyncpg.connect(postgres_admin_url)
    await connection.close()
    error = await raised(lambda: connection.execute("SELECT 1"))
    assert isinstance(error, asyncpg.InterfaceError)
    assert is_outage(error), repr(error)
    assert not is_outage(asyncpg.ClientConfigurationError("connection is closed"))


async def test_a_parameter_sqlite_cannot_bind_is_a_bug_not_an_outage(sqlite_file: Path) -> None:
    engine = create_engine(f"sqlite:///{sqlite_file}")
    try:
        error = await raised(lambda: run_sql_with(engine, "SELECT :v", v=object()))
    finally:
        await engine.dispose()
    assert "Error binding parameter" in str(error)
    assert not is_outage(error), repr(error)
    # Python 3.10 and older raise sqlite3.InterfaceError for it, which SQLAlchemy wraps so:
    older = sa.InterfaceError.instance(
        "SELECT ?",
        (object(),),
        sqlite3.InterfaceError("Error binding parameter 0 - probably unsupported type."),
        sqlite3.Error,
    )
    assert isinstance(older, sa.InterfaceError)
    assert not is_outage(older), repr(older)


# -- Redis and the rest ----------------------------------------------------------------------


async def test_redis_refusing_connections_is_an_outage_raw_and_through_the_queue() -> None:
    client = Redis.from_url(f"redis://127.0.0.1:{closed_port()}/0", socket_connect_timeout=2)
    try:
        raw = await raised(client.ping)
        queue = RedisStreamQueue(client)
        through_queue = await raised(lambda: queue.length("test:outages"))
    finally:
        await client.aclose()
    assert is_outage(raw), repr(raw)
    assert isinstance(through_queue, QueueUnavailable)
    assert is_outage(through_queue)


async def test_an_error_caused_by_an_outage_is_an_outage_and_a_plain_bug_is_not() -> None:
    async def record_the_change() -> None:
        try:
            await asyncio.open_connection("127.0.0.1", closed_port())
        except OSError as exc:
            raise RuntimeError("could not record the change") from exc

    assert is_outage(await raised(record_the_change))
    assert not is_outage(RuntimeError("bug"))
    assert not is_outage(ValueError("bad field"))
    assert not is_outage(PermanentFailure("malformed"))
    assert not is_outage(OSError(2, "No such file or directory"))


async def test_a_bug_raised_from_none_while_handling_an_outage_is_no_outage() -> None:
    async def record_the_change() -> None:
        try:
            await asyncio.open_connection("127.0.0.1", closed_port())
        except OSError:
            raise RuntimeError("the fallback is broken") from None

    async def record_it_while_down() -> None:
        try:
            await asyncio.open_connection("127.0.0.1", closed_port())
        except OSError:
            raise RuntimeError("could not record it")  # noqa: B904 - the context is the cause

    assert not is_outage(await raised(record_the_change))
    assert is_outage(await raised(record_it_while_down))


def test_describe_keeps_the_first_line_of_the_message_only() -> None:
    error = RuntimeError("(sqlite3.OperationalError) database is locked\n[SQL: INSERT …]")
    assert describe(error) == "RuntimeError: (sqlite3.OperationalError) database is locked"
    assert describe(RuntimeError()) == "RuntimeError"


# -- waiting an outage out ---------------------------------------------------------------------


async def test_an_outage_is_retried_in_place_until_it_ends_and_logged_once_each_way(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = closed_port()
    calls = 0

    async def record() -> str:
        nonlocal calls
        calls += 1
        if calls <= 4:
            await asyncio.open_connection("127.0.0.1", port)  # refused: the database is down
        return "recorded"

    retry = OutageRetry("check results", max_seconds=0.05, base_seconds=0.01)
    with caplog.at_level(logging.WARNING, logger="runstate.outages"):
        assert await retry.run(record) == "recorded"
    assert calls == 5
    assert retry.outages == 1
    assert not retry.in_outage
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "dependency unavailable; retrying in place until it is back",
        "dependency available again",
    ]


async def test_an_error_that_is_no_outage_is_raised_at_once() -> None:
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("bad entry")

    with pytest.raises(ValueError, match="bad entry"):
        await OutageRetry("handler", max_seconds=0.05).run(broken)
    assert calls == 1


def test_pauses_grow_and_never_exceed_the_cap() -> None:
    retry = OutageRetry("handler", max_seconds=2.0, base_seconds=0.1)
    pauses = [retry.pause(attempt) for attempt in range(1, 30)]
    assert all(0.1 <= pause <= 2.0 for pause in pauses)
    assert max(pauses[10:]) > 0.2  # the ceiling grew


# -- Redis answering that it cannot serve now --------------------------------------------------


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[tuple[PrivateRedis, Redis]]:
    """A redis-server of this test's own, to make a replica, full or broken at will."""
    server = PrivateRedis(tmp_path)
    server.start()
    client = Redis.from_url(server.url, socket_timeout=10)
    try:
        yield server, client
    finally:
        await client.aclose()
        server.close()


async def test_a_read_only_replica_is_an_outage_raw_and_through_the_queue(
    private_redis: tuple[PrivateRedis, Redis],
) -> None:
    _, client = private_redis
    queue = RedisStreamQueue(client)
    await queue.ensure_group("s", "g")
    # A failover left us talking to a replica (of a master that is gone).
    await client.execute_command("REPLICAOF", "127.0.0.1", str(closed_port()))
    await client.config_set("replica-read-only", "yes")
    raw = await raised(lambda: client.xadd("s", {"a": "1"}))
    assert is_outage(raw), repr(raw)
    for operation in (
        lambda: queue.publish("s", [{"a": "1"}]),
        lambda: queue.read("s", "g", "c", count=1, block_ms=10),
        lambda: queue.reclaim("s", "g", "c", min_idle_ms=0, count=1),
        lambda: queue.record_failures("s", "g", ["1-1"]),
        lambda: queue.ack("s", "g", ["1-1"]),
        lambda: queue.trim_acknowledged("s"),
    ):
        error = await raised(operation)
        assert isinstance(error, QueueUnavailable), repr(error)
        assert "read only replica" in str(error)
    # And a replica that may not serve stale data answers MASTERDOWN even to a read.
    await client.config_set("replica-serve-stale-data", "no")
    masterdown = await raised(lambda: client.xlen("s"))
    assert is_outage(masterdown), repr(masterdown)
    assert isinstance(await raised(lambda: queue.length("s")), QueueUnavailable)


async def test_redis_out_of_memory_is_an_outage_raw_and_through_the_queue(
    private_redis: tuple[PrivateRedis, Redis],
) -> None:
    _, client = private_redis
    queue = RedisStreamQueue(client)
    await queue.ensure_group("s", "g")
    await client.config_set("maxmemory-policy", "noeviction")
    await client.config_set("maxmemory", "1")
    try:
        raw = await raised(lambda: client.xadd("s", {"a": "1"}))
        through_queue = await raised(lambda: queue.publish("s", [{"a": "1"}]))
    finally:
        await client.config_set("maxmemory", "0")
    assert "OOM" in repr(raw) or "maxmemory" in str(raw)
    assert is_outage(raw), repr(raw)
    assert isinstance(through_queue, QueueUnavailable), repr(through_queue)


async def test_redis_refusing_writes_after_a_failed_snapshot_is_an_outage(
    private_redis: tuple[PrivateRedis, Redis], tmp_path: Path
) -> None:
    _, client = private_redis
    queue = RedisStreamQueue(client)
    await client.config_set("save", "3600 1")
    await client.config_set("stop-writes-on-bgsave-error", "yes")
    # The server's working directory vanishes: its snapshot cannot be written.
    for path in tmp_path.iterdir():
        path.unlink()
    tmp_path.rmdir()
    await client.bgsave()
    for _ in range(100):
        if (await client.info("persistence"))["rdb_last_bgsave_status"] == "err":
            break
        await asyncio.sleep(0.05)
    raw = await raised(lambda: client.xadd("s", {"a": "1"}))
    through_queue = await raised(lambda: queue.publish("s", [{"a": "1"}]))
    await client.config_set("save", "")
    assert str(raw).startswith("MISCONF"), repr(raw)
    assert is_outage(raw), repr(raw)
    assert isinstance(through_queue, QueueUnavailable), repr(through_queue)


def test_redis_loading_or_moving_a_slot_is_an_outage_and_other_replies_are_not() -> None:
    # Parsed as redis-py parses the server's reply.
    loading = BaseParser.parse_error("LOADING Redis is loading the dataset in memory")
    try_again = BaseParser.parse_error("TRYAGAIN Multiple keys request during rehashing")
    wrong_type = BaseParser.parse_error(
        "WRONGTYPE Operation against a key holding the wrong kind of value"
    )
    assert is_outage(loading)
    assert is_outage(try_again)
    assert isinstance(wrong_type, ResponseError)
    assert not is_outage(wrong_type)


async def test_a_wrong_reply_is_raised_as_it_is_through_the_queue(
    private_redis: tuple[PrivateRedis, Redis],
) -> None:
    _, client = private_redis
    await client.set("s", "not a stream")
    error = await raised(lambda: RedisStreamQueue(client).length("s"))
    assert isinstance(error, ResponseError)
    assert not isinstance(error, QueueUnavailable)
    assert not is_outage(error)


async def test_a_consumer_outlives_redis_turning_read_only_and_goes_on_when_it_is_writable(
    private_redis: tuple[PrivateRedis, Redis],
) -> None:
    _, client = private_redis
    queue = RedisStreamQueue(client, max_block_ms=100)
    handled: list[Entry] = []

    async def handle(entry: Entry) -> None:
        handled.append(entry)

    consumer = Consumer(
        queue,
        "s",
        "g",
        "c",
        each_entry(handle, 4),
        "s:dlq",
        ConsumerOptions(block_ms=100, outage_retry_max_seconds=0.2),
    )
    await queue.ensure_group("s", "g")
    await client.execute_command("REPLICAOF", "127.0.0.1", str(closed_port()))
    await client.config_set("replica-read-only", "yes")
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))
    try:
        for _ in range(100):
            if consumer.counters.outages:
                break
            await asyncio.sleep(0.05)
        assert consumer.counters.outages == 1
        assert not running.done()  # READONLY on XREADGROUP no longer kills the worker
        await client.execute_command("REPLICAOF", "NO", "ONE")
        await queue.publish("s", [{"n": "1"}])
        for _ in range(100):
            if handled:
                break
            await asyncio.sleep(0.05)
        assert [e.fields for e in handled] == [{"n": "1"}]
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
