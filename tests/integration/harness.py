"""What the integration tests drive: real `runstate` processes started as an operator starts
them (the console script, a clean environment), and the real things around them — a target
whose health can be flipped, a webhook receiver that verifies Standard Webhooks signatures
with the standard's own library, and an SMTP server — all on 127.0.0.1.

Everything here is synchronous for the test; the servers run on one background event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import httpx
import redis
from aiohttp import web
from aiosmtpd.controller import Controller
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from runstate.settings import SECRET_SETTINGS, Settings
from tests.api.server import PASSWORD

T = TypeVar("T")

RUNSTATE = Path(sys.executable).parent / "runstate"
# Every setting a runstate process reads, and the `_FILE` variants: none leaks in from the
# environment the tests run in.
SETTING_NAMES = frozenset(Settings.model_fields) | {f"{name}_FILE" for name in SECRET_SETTINGS}
JWT_SECRET = "integration-test-secret-long-enough-for-hs256-0123456789"
SHUTDOWN_TIMEOUT_SECONDS = 3.0
SCHEDULER_LEASE_SECONDS = 2.0
NOTIFY_MAX_ATTEMPTS = 3

# The short timings every test runs with (the defaults are minutes; a test has seconds).
TIMINGS = {
    "MIN_CHECK_INTERVAL_SECONDS": "1",
    "SCHEDULER_POLL_SECONDS": "0.3",
    "SCHEDULER_LEASE_SECONDS": str(SCHEDULER_LEASE_SECONDS),
    "RECLAIM_IDLE_SECONDS": "2",
    "HEARTBEAT_INTERVAL_SECONDS": "1",
    "NOTIFY_RETRY_BASE_SECONDS": "0.05",
    "NOTIFY_RETRY_MAX_SECONDS": "0.3",
    "NOTIFY_MAX_ATTEMPTS": str(NOTIFY_MAX_ATTEMPTS),
    "SHUTDOWN_TIMEOUT_SECONDS": str(SHUTDOWN_TIMEOUT_SECONDS),
    "ALLOW_PRIVATE_TARGETS": "true",
    "JWT_SECRET": JWT_SECRET,
    "AUTH_RATE_LIMIT_PER_IP": "100000",
    "AUTH_RATE_LIMIT_PER_ACCOUNT": "100000",
    "LOG_LEVEL": "INFO",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_port() -> int:
    """A loopback port nothing listens on (bound and released: refused on connect)."""
    return free_port()


class NotYet(Exception):
    """Raised by a probe: the condition does not hold yet."""


# What a probe may meet while the system is busy recovering: answered as "not yet".
TRANSIENT = (NotYet, httpx.TransportError, redis.exceptions.ConnectionError)


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.1,
    guard: Callable[[], None] | None = None,
) -> T:
    """Call ``probe`` until it returns something truthy (returned) or ``timeout`` passes
    (AssertionError naming ``what`` and the last value). ``guard`` runs before each try and
    may fail the wait early (e.g. when a process died)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        if guard is not None:
            guard()
        try:
            value = probe()
        except TRANSIENT as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what}; last: {last!r}"
            )
        time.sleep(interval)


def stay_true(
    what: str,
    probe: Callable[[], bool],
    *,
    seconds: float,
    interval: float = 0.2,
    guard: Callable[[], None] | None = None,
) -> None:
    """Assert that ``probe`` holds at every look for ``seconds`` (a bounded observation)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if guard is not None:
            guard()
        assert probe(), f"{what} stopped holding"
        time.sleep(interval)


# --- a background event loop for the servers -----------------------------------------------


class LoopThread:
    """An asyncio loop on a daemon thread; ``run`` executes a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def _listening_socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


class _AiohttpServer:
    """An aiohttp application on a fixed loopback port that can stop and resume listening;
    over TLS when given ``ssl_context``."""

    def __init__(
        self,
        loop: LoopThread,
        app_factory: Callable[[], web.Application],
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._loop = loop
        self._app_factory = app_factory
        self._ssl_context = ssl_context
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None
        self.port = 0
        self.start_listening()

    @property
    def base_url(self) -> str:
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def _start(self) -> None:
        sock = _listening_socket(self.port)
        self.port = int(sock.getsockname()[1])
        runner = web.AppRunner(self._app_factory(), access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        self._site = web.SockSite(runner, sock, ssl_context=self._ssl_context)
        await self._site.start()
        self._runner = runner

    async def _stop(self) -> None:
        if self._runner is not None:
            # cleanup closes the kept-alive connections too: a client's pool cannot reach a
            # server that stopped listening.
            await self._runner.cleanup()
            self._runner = None

    async def _stop_accepting(self) -> None:
        if self._site is not None:
            await self._site.stop()  # closes the listening socket only

    def start_listening(self) -> None:
        self._loop.run(self._start())

    def stop_listening(self) -> None:
        self._loop.run(self._stop())

    def stop_accepting(self) -> None:
        """Refuse new connections while the open ones stay open (and kept alive)."""
        self._loop.run(self._stop_accepting())


class Target(_AiohttpServer):
    """A monitored site: every path answers 200 while ``healthy``, 503 otherwise, after
    ``delay`` seconds; ``stop_listening`` makes connections be refused."""

    def __init__(self, loop: LoopThread, ssl_context: ssl.SSLContext | None = None) -> None:
        self.healthy = True
        self.delay = 0.0
        super().__init__(loop, self._app, ssl_context)

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.healthy:
            return web.Response(status=200, text="ok")
        return web.Response(status=503, text="down for maintenance")

    @property
    def url(self) -> str:
        return f"{self.base_url}/health"


@dataclass
class Hook:
    """How one webhook path answers: ``status`` after ``delay`` seconds."""

    status: int = 200
    delay: float = 0.0
    secret: str | None = None


@dataclass(frozen=True)
class Received:
    hook: str
    webhook_id: str
    payload: dict[str, Any]
    verified: bool


class WebhookReceiver(_AiohttpServer):
    """Receives webhooks on ``/hooks/<name>``; records each request (webhook-id, payload and
    whether its Standard Webhooks signature verified with the channel's secret) *before*
    answering as its ``Hook`` says."""

    def __init__(self, loop: LoopThread) -> None:
        self.hooks: dict[str, Hook] = {}
        self.received: list[Received] = []
        super().__init__(loop, self._app)

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hooks/{name}", self._handle)
        return app

    def hook(self, name: str, *, status: int = 200, delay: float = 0.0) -> str:
        """Configure ``name`` and return its URL."""
        self.hooks[name] = Hook(status=status, delay=delay)
        return f"{self.base_url}/hooks/{name}"

    def secret(self, name: str, secret: str) -> None:
        self.hooks[name].secret = secret

    async def _handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        hook = self.hooks.get(name, Hook(status=404))
        body = await request.read()
        headers = {key.lower(): value for key, value in request.headers.items()}
        verified = False
        if hook.secret is not None:
            try:
                Webhook(hook.secret).verify(body, headers)
                verified = True
            except WebhookVerificationError:
                verified = False
        try:
            payload = json.loads(body)
        except ValueError:
            payload = {"unparsable": body.decode(errors="replace")}
        self.received.append(Received(name, headers.get("webhook-id", ""), payload, verified))
        if hook.delay:
            await asyncio.sleep(hook.delay)
        return web.Response(status=hook.status, text="recorded")

    def of(self, name: str, event: str | None = None) -> list[Received]:
        return [
            r
            for r in list(self.received)
            if r.hook == name and (event is None or r.payload.get("event") == event)
        ]


class Mailbox:
    """aiosmtpd handler: records every message."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        return "250 OK"

    def subjects(self, word: str | None = None) -> list[str]:
        subjects = [str(message["Subject"]) for message in list(self.messages)]
        return [s for s in subjects if word is None or word in s]


class SmtpServer:
    def __init__(self) -> None:
        self.mailbox = Mailbox()
        self.port = free_port()
        self._controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


# --- metrics --------------------------------------------------------------------------------


def metric(text: str, name: str, **labels: str) -> float | None:
    """The sum of the samples called ``name`` whose labels include ``labels``; None if none."""
    values = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    ]
    return sum(values) if values else None


# --- processes ----------------------------------------------------------------------------


@dataclass
class Proc:
    """One running `runstate` process; its stderr (the JSON log) and stdout go to files."""

    name: str
    args: tuple[str, ...]
    popen: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    port: int | None = None  # the API's, when it serves one
    metrics_port: int | None = None
    meant_to_stop: bool = False  # killed or stopped by the test: its death is no failure

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        return self.stderr.read_text(errors="replace")

    def log_lines(self) -> list[str]:
        return [line for line in self.log_text().splitlines() if line.strip()]

    def json_log(self) -> list[dict[str, Any]]:
        """Every line of the log as a JSON object (AssertionError on one that is not)."""
        entries = []
        for line in self.log_lines():
            try:
                entry = json.loads(line)
            except ValueError:
                raise AssertionError(
                    f"{self.name} logged a line that is not JSON: {line}"
                ) from None
            assert isinstance(entry, dict), f"{self.name} logged a non-object: {line}"
            entries.append(entry)
        return entries

    def logged(self, message: str) -> list[dict[str, Any]]:
        """The log entries whose message is ``message`` (lines that are not JSON ignored)."""
        found = []
        for line in self.log_lines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and entry.get("msg") == message:
                    found.append(entry)
        return found

    def tail(self, lines: int = 40, width: int = 3000) -> str:
        """The last ``lines`` lines of the log, heartbeats left out but the last one, each
        cut to ``width`` characters."""
        out = self.stdout.read_text(errors="replace").strip()
        logged = self.log_lines()
        beats = [i for i, line in enumerate(logged) if '"msg":"heartbeat"' in line]
        kept = [line for i, line in enumerate(logged) if i not in beats[:-1]]
        text = "\n".join(line[:width] for line in kept[-lines:])
        return text + (f"\n[stdout]\n{out[-2000:]}" if out else "")

    def metrics(self) -> str:
        assert self.metrics_port is not None, f"{self.name} serves no metrics port"
        answer = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5)
        answer.raise_for_status()
        return answer.text

    def kill9(self) -> None:
        self.meant_to_stop = True
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)


@dataclass
class Stopped:
    name: str
    returncode: int | None  # None: still running when the wait ended
    seconds: float


class Cluster:
    """The `runstate` processes of one test, started with one environment built from scratch:
    the test runner's environment without any runstate setting, then ``env``."""

    def __init__(self, workdir: Path, label: str, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.label = label
        self.env = env
        self.procs: list[Proc] = []

    @classmethod
    def for_test(cls, workdir: Path, **env: str) -> Cluster:
        label = f"t{uuid.uuid4().hex[:10]}"
        base = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
        base.update({"NO_COLOR": "1", "PYTHONUNBUFFERED": "1", **TIMINGS})
        for stage in ("MONITORING", "STATUS_CHANGE", "NOTIFICATION"):
            word = stage.lower().replace("_", "-")
            base[f"{stage}_STREAM"] = f"{label}:{word}"
            base[f"{stage}_GROUP"] = f"{label}-{word}-group"
        base.update(env)
        return cls(workdir, label, base)

    def _files(self, name: str) -> tuple[Path, Path]:
        return self.workdir / f"{name}.stdout", self.workdir / f"{name}.stderr"

    def start(self, name: str, *args: str, api: bool = False, **env: str) -> Proc:
        """Start ``runstate *args`` as ``name`` (unique per test); a free METRICS_PORT (and
        PORT for an API) is chosen unless ``env`` sets it."""
        assert all(p.name != name for p in self.procs), f"two processes named {name}"
        values = {**self.env, **env}
        values.setdefault("METRICS_PORT", str(free_port()))
        if api:
            values.setdefault("PORT", str(free_port()))
        stdout, stderr = self._files(name)
        with stdout.open("ab") as out, stderr.open("ab") as err:
            popen = subprocess.Popen(
                [str(RUNSTATE), *args],
                cwd=self.workdir,
                env=values,
                stdout=out,
                stderr=err,
                start_new_session=True,  # the test's own signals (Ctrl-C) do not reach it
            )
        metrics_port = int(values["METRICS_PORT"]) or None
        proc = Proc(
            name,
            args,
            popen,
            stdout,
            stderr,
            port=int(values["PORT"]) if api else None,
            metrics_port=None if args and args[0] in ("up", "api") else metrics_port,
        )
        self.procs.append(proc)
        return proc

    def run(self, name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``runstate *args`` to completion (e.g. `migrate`); its output kept like a
        process's."""
        stdout, stderr = self._files(name)
        result = subprocess.run(
            [str(RUNSTATE), *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        stdout.write_text(result.stdout)
        stderr.write_text(result.stderr)
        return result

    def proc(self, name: str) -> Proc:
        return next(p for p in self.procs if p.name == name)

    def check_alive(self) -> None:
        """Fail at once, with its log, when a process died that the test did not stop."""
        for proc in self.procs:
            if not proc.meant_to_stop and not proc.alive():
                raise AssertionError(
                    f"{proc.name} (pid {proc.pid}) exited with {proc.popen.returncode}:\n"
                    f"{proc.tail(lines=5, width=400)}"
                )

    def wait_for(self, what: str, probe: Callable[[], T | None], *, timeout: float) -> T:
        return wait_for(what, probe, timeout=timeout, guard=self.check_alive)

    def wait_logged(self, proc: Proc, message: str, *, timeout: float = 30) -> dict[str, Any]:
        return self.wait_for(
            f"{proc.name} to log {message!r}",
            lambda: next(iter(proc.logged(message)), None),
            timeout=timeout,
        )

    def stop(self, procs: Iterable[Proc] | None = None) -> list[Stopped]:
        """SIGTERM to each (all at once), then how each ended: exit code and seconds taken
        (``returncode`` None when it was still running SHUTDOWN_TIMEOUT_SECONDS + 5 s on)."""
        chosen = [p for p in (self.procs if procs is None else procs) if p.alive()]
        started = time.monotonic()
        for proc in chosen:
            proc.meant_to_stop = True
            proc.popen.send_signal(signal.SIGTERM)
        deadline = started + SHUTDOWN_TIMEOUT_SECONDS + 5
        results = []
        for proc in chosen:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(max(deadline - time.monotonic(), 0.01))
            results.append(Stopped(proc.name, proc.popen.poll(), time.monotonic() - started))
        return results

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.alive():
                proc.popen.kill()
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(10)

    def report(self) -> str:
        """The tail of every process's log, for a failed test."""
        parts = []
        for proc in self.procs:
            state = "running" if proc.alive() else f"exited {proc.popen.returncode}"
            parts.append(f"===== {proc.name} (pid {proc.pid}, {state}) =====\n{proc.tail()}")
        return "\n".join(parts)


# --- the HTTP API, as a user uses it --------------------------------------------------------


class ApiError(NotYet):
    """An unexpected status from the API (a probe retries it; a step fails on it)."""


class User:
    """A signed-up, signed-in user of a running API."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.Client(base_url=f"{base_url}/api/v1", timeout=10)
        self.email = f"it-{uuid.uuid4().hex[:12]}@example.com"
        self.call("POST", "/signup", 201, json={"email": self.email, "password": PASSWORD})
        tokens = self.call("POST", "/signin", json={"email": self.email, "password": PASSWORD})
        self.http.headers["authorization"] = f"Bearer {tokens['access_token']}"

    def call(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        answer = self.http.request(method, path, **kwargs)
        if answer.status_code != expect:
            raise ApiError(f"{method} {path}: {answer.status_code} {answer.text}")
        return answer.json()["data"]

    def add_webhook(self, url: str, notify_on: str = "BOTH") -> dict[str, Any]:
        body = {"type": "webhook", "target": url, "notify_on": notify_on}
        channel: dict[str, Any] = self.call("POST", "/channels", 201, json=body)
        assert str(channel["secret"]).startswith("whsec_"), channel
        return channel

    def add_email(self, address: str, notify_on: str = "BOTH") -> dict[str, Any]:
        body = {"type": "email", "target": address, "notify_on": notify_on}
        channel: dict[str, Any] = self.call("POST", "/channels", 201, json=body)
        return channel

    def add_monitor(self, url: str, name: str, **fields: Any) -> dict[str, Any]:
        body = {"url": url, "name": name, "interval_seconds": 1, "timeout_ms": 500, **fields}
        monitor: dict[str, Any] = self.call("POST", "/websites", 201, json=body)
        return monitor

    def website(self, website_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.call("GET", f"/websites/{website_id}")
        return found

    def incidents(self, website_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.call("GET", f"/websites/{website_id}/incidents")[
            "incidents"
        ]
        return found

    def notifications(self, website_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.call("GET", f"/websites/{website_id}/notifications")[
            "notifications"
        ]
        return found

    def checks(self, website_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.call(
            "GET", f"/websites/{website_id}/checks", params={"limit": 100}
        )["checks"]
        return found

    def channels(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.call("GET", "/channels")["channels"]
        return found

    def close(self) -> None:
        self.http.close()


# --- the two ways to run the system ---------------------------------------------------------


@dataclass
class System:
    """A running runstate, embedded (`runstate up`) or distributed (one process per part)."""

    mode: str
    cluster: Cluster
    api: Proc
    redis: redis.Redis | None = None
    users: list[User] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api.port}"

    def user(self) -> User:
        created = User(self.base_url)
        self.users.append(created)
        return created

    def wait_for(self, what: str, probe: Callable[[], T | None], *, timeout: float) -> T:
        return self.cluster.wait_for(what, probe, timeout=timeout)

    @property
    def env(self) -> dict[str, str]:
        return self.cluster.env

    def close(self) -> None:
        for user in self.users:
            user.close()


def wait_until_serving(cluster: Cluster, api: Proc, timeout: float = 60) -> None:
    def healthy() -> bool:
        return httpx.get(f"http://127.0.0.1:{api.port}/api/v1/health", timeout=2).status_code == 200

    cluster.wait_for(f"{api.name} to answer /api/v1/health", healthy, timeout=timeout)


def start_embedded(cluster: Cluster) -> System:
    """`runstate up` on its own SQLite file and in-process queue."""
    cluster.env["RUNSTATE_DATA_DIR"] = str(cluster.workdir / "data")
    up = cluster.start("up", "up", api=True)
    wait_until_serving(cluster, up)
    return System("embedded", cluster, up)


PIPELINE = {
    "worker-monitoring": ("worker", "monitoring"),
    "worker-status-change": ("worker", "status-change"),
    "worker-notification": ("worker", "notification"),
}


def start_distributed(
    cluster: Cluster, database_url: str, redis_url: str, *, schedulers: int = 1
) -> System:
    """`runstate migrate`, then the API, ``schedulers`` schedulers (`scheduler`,
    `scheduler-2`, …) and the three workers, each its own process."""
    cluster.env.update(DATABASE_URL=database_url, REDIS_URL=redis_url)
    migrated = cluster.run("migrate", "migrate")
    assert migrated.returncode == 0, migrated.stderr
    api = cluster.start("api", "api", api=True)
    started = [api]
    for number in range(1, schedulers + 1):
        name = "scheduler" if number == 1 else f"scheduler-{number}"
        started.append(cluster.start(name, "scheduler"))
    started += [cluster.start(name, *args) for name, args in PIPELINE.items()]
    wait_until_serving(cluster, api)
    for proc in started[1:]:
        cluster.wait_logged(proc, "starting")
    return System("distributed", cluster, api, redis.Redis.from_url(redis_url))


def start_worker(system: System, name: str, kind: str) -> Proc:
    """Another `runstate worker <kind>`, running once it logs that it starts."""
    proc = system.cluster.start(name, "worker", kind)
    system.cluster.wait_logged(proc, "starting")
    return proc
