"""Fixtures of the stage tests: a migrated database on SQLite and on PostgreSQL, a queue back
end in process and on Redis, metrics on a registry of their own, and real HTTP targets, a
webhook receiver that verifies Standard Webhooks signatures and an SMTP server, all on
loopback.

Fixture names start with ``stage_`` (or name the server they start) so they never clash with
the consume-loop tests' ``backend`` and ``queue`` fixtures in this directory.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import json
import secrets
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session
from prometheus_client import CollectorRegistry
from sqlalchemy import Select, delete
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from runstate.checks.base import Check
from runstate.domain.events import CheckJob
from runstate.metrics import PipelineMetrics
from runstate.pipeline.monitor import MonitoringStage
from runstate.queue.backend import QueueBackend, open_backend
from runstate.queue.base import Entry, StreamQueue
from runstate.settings import Settings
from runstate.storage.db import create_engine, session_factory
from runstate.storage.migrate import ensure_region, upgrade_schema
from runstate.storage.tables import (
    AlertChannel,
    Base,
    DailyRollup,
    HourlyRollup,
    User,
    Website,
    WebsiteCheck,
)
from tests.api.server import postgres_database

T = TypeVar("T")
JWT_SECRET = "pipeline-test-secret-that-is-long-enough-0123456789"
SMTP_FROM = "alerts@runstate.example"


def job_for(website: Website, *, timeout_ms: int = 5000) -> CheckJob:
    """A due check of ``website`` now, as the scheduler would enqueue it."""
    return CheckJob(
        website_id=website.id,
        url=website.url,
        method=website.method,
        timeout_ms=timeout_ms,
        expected_status=website.expected_status,
        keyword=website.keyword,
        confirmations=website.confirmations,
        recovery_confirmations=website.recovery_confirmations,
        interval_seconds=website.interval_seconds,
        scheduled_at=datetime.now(UTC),
    )


def free_port() -> int:
    """A loopback port nothing listens on (right now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def eventually(
    condition: Callable[[], Awaitable[bool]], *, timeout: float = 5.0, every: float = 0.02
) -> None:
    """Wait until ``condition()`` holds; fail the test when it does not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        await asyncio.sleep(every)


# --- the database ------------------------------------------------------------------------


@dataclass
class StageDb:
    """A migrated database, with the rows a stage needs inserted straight through the ORM."""

    kind: str  # "sqlite" or "postgres"
    url: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    region_id: int

    async def add(self, *rows: T) -> T:
        async with self.sessions() as session, session.begin():
            session.add_all(rows)
        return rows[-1]

    async def user(self) -> User:
        return await self.add(
            User(email=f"user-{uuid.uuid4().hex[:12]}@example.com", password_hash="x")
        )

    async def website(self, user: User, url: str, **values: Any) -> Website:
        values.setdefault("name", f"monitor {uuid.uuid4().hex[:6]}")
        return await self.add(Website(user_id=user.id, url=url, **values))

    async def channel(self, user: User, kind: str, target: str, **values: Any) -> AlertChannel:
        if kind == "webhook":
            values.setdefault("secret", new_secret())
        return await self.add(AlertChannel(user_id=user.id, type=kind, target=target, **values))

    async def get(self, table: type[T], key: object) -> T | None:
        async with self.sessions() as session:
            return await session.get(table, key)

    async def all(self, query: Select[tuple[T]]) -> list[T]:
        async with self.sessions() as session:
            return list(await session.scalars(query))

    async def delete(self, table: type[Base], key: object) -> None:
        async with self.sessions() as session, session.begin():
            row = await session.get(table, key)
            assert row is not None
            await session.delete(row)

    async def update(self, table: type[Base], key: object, **values: Any) -> None:
        async with self.sessions() as session, session.begin():
            row = await session.get(table, key)
            assert row is not None
            for name, value in values.items():
                setattr(row, name, value)


async def _migrate(url: str) -> None:
    engine = create_engine(url)
    try:
        await upgrade_schema(engine)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def stage_postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A scratch database on the real PostgreSQL server, migrated once for the session (each
    test empties it first). Created and dropped on a thread of its own, whose event loops
    never meet the tests' loop."""
    scratch = postgres_database(postgres_admin_url)
    with ThreadPoolExecutor(1) as thread:
        url = thread.submit(scratch.__enter__).result()
        try:
            thread.submit(asyncio.run, _migrate(url)).result()
            yield url
        finally:
            thread.submit(scratch.__exit__, None, None, None).result()


async def open_stage_db(kind: str, url: str) -> StageDb:
    engine = create_engine(url)
    if kind == "sqlite":
        await upgrade_schema(engine)
    async with engine.begin() as connection:
        # What an earlier test left; the cascades take monitors, incidents, channels and
        # notification logs with their users. Checks and rollups have no foreign key.
        await connection.execute(delete(User))
        for table in (WebsiteCheck, HourlyRollup, DailyRollup):
            await connection.execute(delete(table))
    region_id = await ensure_region(engine, "local")
    return StageDb(kind, url, engine, session_factory(engine), region_id)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def stage_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StageDb]:
    """A migrated database holding nothing but the region: a new SQLite file, or the
    session's scratch database on the real PostgreSQL server, emptied."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'runstate.db'}"
    else:
        url = request.getfixturevalue("stage_postgres_url")
    db = await open_stage_db(request.param, url)
    try:
        yield db
    finally:
        await db.engine.dispose()


# --- the queue ---------------------------------------------------------------------------


@pytest.fixture(params=["in_process", pytest.param("redis", marks=pytest.mark.redis)])
async def stage_backend(
    request: pytest.FixtureRequest, stage_prefix: str
) -> AsyncIterator[QueueBackend]:
    """The in-process broker, or a client of the real Redis (database 15, never flushed here:
    every test names its own streams, groups, monitors and leases, and deletes its streams
    and lease afterwards)."""
    if request.param == "in_process":
        opened = open_backend(None)
    else:
        opened = open_backend(request.getfixturevalue("redis_url"))
    try:
        yield opened
    finally:
        if opened.redis is not None:
            from runstate.queue import keys

            mine = [key async for key in opened.redis.scan_iter(match=f"{stage_prefix}:*")]
            await opened.redis.delete(keys.lease_key(f"{stage_prefix}:scheduler"), *mine)
        await opened.aclose()


@pytest.fixture
async def stage_twin(
    stage_backend: QueueBackend, request: pytest.FixtureRequest
) -> AsyncIterator[QueueBackend]:
    """Another process's view of the same back end: a second Redis client, or the same
    broker (an in-process broker is never shared between processes)."""
    if stage_backend.redis is None:
        yield stage_backend
        return
    other = open_backend(request.getfixturevalue("redis_url"))
    try:
        yield other
    finally:
        await other.aclose()


async def lose_monitor_states(backend: QueueBackend, website_ids: list[uuid.UUID]) -> None:
    """Forget the monitors' states, as when Redis restarts without its data (only these
    monitors' keys: the test Redis is shared with other suites)."""
    if backend.redis is not None:
        from runstate.queue import keys

        await backend.redis.delete(*(keys.monitor_state_key(str(w)) for w in website_ids))
    else:
        from runstate.queue.in_process import InProcessBroker

        assert isinstance(backend.queue, InProcessBroker)
        backend.queue.flush()


async def stream_entries(queue: StreamQueue, stream: str) -> list[Entry]:
    """Every entry of ``stream`` so far, read through a group of its own (which is left
    behind: it keeps nothing from being read by others)."""
    group = f"reader-{uuid.uuid4().hex[:8]}"
    await queue.ensure_group(stream, group)
    found: list[Entry] = []
    while batch := await queue.read(stream, group, "reader", count=1000, block_ms=10):
        found += batch
    return found


async def publish_and_read(
    queue: StreamQueue, stream: str, items: list[dict[str, str]], *, group: str = "workers"
) -> list[Entry]:
    """Publish ``items`` and read them back through ``group``, as a worker gets them."""
    await queue.ensure_group(stream, group)
    await queue.publish(stream, items)
    entries: list[Entry] = []
    while batch := await queue.read(stream, group, "worker", count=1000, block_ms=10):
        entries += batch
    assert len(entries) == len(items)
    return entries


# --- settings and metrics ---------------------------------------------------------------


@pytest.fixture
def stage_prefix() -> str:
    """Names this test's streams, so that tests sharing the Redis never see each other's."""
    return f"test:{uuid.uuid4().hex[:12]}"


def stage_settings(
    db: StageDb, data_dir: Path, prefix: str, *, smtp_port: int | None = None, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "DATABASE_URL": db.url,
        "RUNSTATE_DATA_DIR": data_dir,
        "JWT_SECRET": JWT_SECRET,
        "ALLOW_PRIVATE_TARGETS": True,
        "MIN_CHECK_INTERVAL_SECONDS": 1,
        "MONITORING_STREAM": f"{prefix}:monitoring",
        "STATUS_CHANGE_STREAM": f"{prefix}:status-change",
        "NOTIFICATION_STREAM": f"{prefix}:notification",
        "RECLAIM_IDLE_SECONDS": 1,
        "NOTIFY_RETRY_BASE_SECONDS": 0.05,
        "NOTIFY_RETRY_MAX_SECONDS": 0.2,
        "NOTIFY_MAX_ATTEMPTS": 3,
        "WEBHOOK_TIMEOUT_SECONDS": 5,
        "SCHEDULER_POLL_SECONDS": 0.3,
        "SCHEDULER_LEASE_SECONDS": 0.6,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": smtp_port or free_port(),
        "SMTP_FROM": SMTP_FROM,
        "SMTP_STARTTLS": False,
        **overrides,
    }
    return Settings(**values)


@pytest.fixture
def stage_registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def stage_metrics(stage_registry: CollectorRegistry) -> PipelineMetrics:
    return PipelineMetrics(stage_registry)


MakeMonitoringStage = Callable[..., MonitoringStage]


@pytest.fixture
def make_monitoring_stage(
    stage_db: StageDb,
    stage_backend: QueueBackend,
    stage_metrics: PipelineMetrics,
    stage_prefix: str,
) -> MakeMonitoringStage:
    """A monitoring stage on the test's database and queue: ``make(check, concurrency=50)``."""

    def make(check: Check, **options: Any) -> MonitoringStage:
        return MonitoringStage(
            sessions=stage_db.sessions,
            states=stage_backend.states,
            pending=stage_backend.pending,
            check=check,
            region_id=stage_db.region_id,
            status_change_stream=f"{stage_prefix}:status-change",
            metrics=stage_metrics,
            **options,
        )

    return make


# --- HTTP targets ------------------------------------------------------------------------


@dataclass
class Targets:
    """An HTTP server on loopback: ``/status/<name>`` answers with the code set for ``name``
    in ``codes`` (200 until set); a name in ``held`` answers only once its event is set."""

    base: str
    codes: dict[str, int] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)
    held: dict[str, asyncio.Event] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return f"{self.base}/status/{name}"


@pytest.fixture
async def http_targets() -> AsyncIterator[Targets]:
    targets = Targets(base="")

    async def answer(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        targets.hits.append(name)
        if name in targets.held:
            await targets.held[name].wait()
        return web.Response(status=targets.codes.get(name, 200), text="hello")

    app = web.Application()
    app.router.add_route("*", "/status/{name}", answer)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    targets.base = f"http://127.0.0.1:{server.port}"
    try:
        yield targets
    finally:
        await server.close()


# --- the webhook receiver ----------------------------------------------------------------


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass
class HookRequest:
    headers: dict[str, str]
    body: bytes
    verified: bool
    at: float  # time.monotonic() on arrival

    @property
    def payload(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Hook:
    """One webhook endpoint: answers the scripted replies in order, then ``then`` forever."""

    url: str
    replies: list[tuple[int, dict[str, str]]]
    then: int = 200
    secret: str = field(default_factory=new_secret)
    requests: list[HookRequest] = field(default_factory=list)


@dataclass
class WebhookReceiver:
    base: str = ""
    hooks: dict[str, Hook] = field(default_factory=dict)

    def hook(self, *replies: int | tuple[int, dict[str, str]], then: int = 200) -> Hook:
        path = f"/hooks/{uuid.uuid4().hex[:10]}"
        scripted = [r if isinstance(r, tuple) else (r, {}) for r in replies]
        created = Hook(f"{self.base}{path}", scripted, then)
        self.hooks[path] = created
        return created


@pytest.fixture
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    """Records every POST with whether its signature verifies (Standard Webhooks' own
    library, keyed by the hook's secret)."""
    receiver = WebhookReceiver()

    async def receive(request: web.Request) -> web.Response:
        hook = receiver.hooks.get(request.path)
        if hook is None:
            return web.Response(status=404)
        body = await request.read()
        headers = {key.lower(): value for key, value in request.headers.items()}
        try:
            Webhook(hook.secret).verify(body, headers)
            verified = True
        except WebhookVerificationError:
            verified = False
        hook.requests.append(HookRequest(headers, body, verified, time.monotonic()))
        status, reply_headers = hook.replies.pop(0) if hook.replies else (hook.then, {})
        return web.Response(status=status, headers=reply_headers)

    app = web.Application()
    app.router.add_post("/hooks/{name}", receive)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    receiver.base = f"http://127.0.0.1:{server.port}"
    try:
        yield receiver
    finally:
        await server.close()


# --- the SMTP server ---------------------------------------------------------------------


@dataclass
class Mail:
    recipients: list[str]
    message: EmailMessage


class _MailRecorder:
    def __init__(self) -> None:
        self.mails: list[Mail] = []

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.mails.append(Mail(list(envelope.rcpt_tos), parsed))
        return "250 OK"


@dataclass
class SmtpServer:
    port: int
    recorder: _MailRecorder

    @property
    def mails(self) -> list[Mail]:
        return self.recorder.mails


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """aiosmtpd on 127.0.0.1, plain SMTP without AUTH, recording every message."""
    recorder = _MailRecorder()
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpServer(port, recorder)
    finally:
        controller.stop()


def utc_ms(moment: datetime) -> datetime:
    """``moment`` to the millisecond, as stream entries carry times."""
    return moment.astimezone(UTC).replace(microsecond=moment.microsecond // 1000 * 1000)


# --- a cuttable link to Redis -------------------------------------------------------------


class TcpProxy:
    """Forwards a loopback port to ``upstream``; ``cut()`` drops every connection and stops
    listening (the server seems gone), ``restore()`` listens again on the same port."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
            self._writers.discard(writer)


@pytest.fixture
async def redis_proxy(redis_url: str) -> AsyncIterator[tuple[TcpProxy, str]]:
    """A proxy in front of the test Redis, and the Redis URL that goes through it."""
    parts = urlsplit(redis_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    await proxy.restore()
    try:
        yield proxy, f"redis://127.0.0.1:{proxy.port}{parts.path or '/15'}"
    finally:
        await proxy.cut()
