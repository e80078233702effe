"""What the browser tests drive and watch: Debian's chromium, the whole of runstate in one
process (`runstate up`), and a loopback HTTP site that can be switched to failing."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage
from playwright.sync_api import Error as PlaywrightError

from runstate.settings import SECRET_SETTINGS, Settings

RUNSTATE = Path(sys.executable).parent / "runstate"
REPOSITORY = Path(__file__).resolve().parents[3]
SCREENSHOTS = REPOSITORY / "test-artifacts" / "screenshots"
AXE = REPOSITORY / "src" / "runstate" / "web" / "static" / "vendor" / "axe.min.js"
DEBIAN_CHROMIUM = "/usr/bin/chromium"
# Every setting runstate reads, and their `_FILE` variants: none leaks in from the runner.
SETTING_NAMES = set(Settings.model_fields) | {f"{name}_FILE" for name in SECRET_SETTINGS}


def chromium_path() -> str:
    """The browser to drive: $CHROMIUM when set, else Debian's. When neither is there the
    test is skipped with the way to install it, and fails on CI (where it must be found)."""
    wanted = os.environ.get("CHROMIUM") or DEBIAN_CHROMIUM
    found = shutil.which(wanted)
    if found is not None:
        return found
    message = (
        f"no browser at {wanted}: install Debian's chromium (`apt-get install chromium`)"
        " or point CHROMIUM at a Chromium binary"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the monitored site ----------------------------------------------------------------------


class Target:
    """A site on a loopback port that answers 200 while healthy and 500 once stopped."""

    def __init__(self) -> None:
        self.healthy = True
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = (200, b"all good") if target.healthy else (500, b"broken")
                self.send_response(status)
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_HEAD(self) -> None:
                self.do_GET()

            def log_message(self, format: str, *args: object) -> None:
                pass  # one line per check would drown the test's output

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/health"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """The site breaks: every request gets a 500."""
        self.healthy = False

    def recover(self) -> None:
        self.healthy = True

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# --- runstate ------------------------------------------------------------------------------


@dataclass
class RunningSystem:
    """`runstate up` on a loopback port, on SQLite or PostgreSQL."""

    backend: str
    base_url: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _environment(data_dir: Path, port: int, database_url: str | None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in SETTING_NAMES}
    env.update(
        NO_COLOR="1",
        PORT=str(port),
        RUNSTATE_DATA_DIR=str(data_dir),
        ALLOW_PRIVATE_TARGETS="true",
        # A monitor checked every second or two, and found as soon as it is due.
        MIN_CHECK_INTERVAL_SECONDS="1",
        # The public page asks the database whether it changed at most once a second.
        STATUS_PAGE_REVALIDATE_SECONDS="1",
        SCHEDULER_POLL_SECONDS="0.2",
        SIGNUP_ENABLED="true",
        # The test's browser signs in many times from one address.
        AUTH_RATE_LIMIT_PER_IP="1000",
    )
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    return env


def _wait_until_serving(system: RunningSystem, deadline_seconds: float = 60) -> None:
    deadline = time.monotonic() + deadline_seconds
    while True:
        if system.process.poll() is not None:
            raise AssertionError(f"runstate up stopped at start:\n{system.log_tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"runstate up did not answer in time:\n{system.log_tail()}")
        try:
            if httpx.get(f"{system.base_url}/api/v1/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)


@contextmanager
def running_system(
    backend: str, data_dir: Path, database_url: str | None = None
) -> Iterator[RunningSystem]:
    """`runstate up` with its data in ``data_dir`` (SQLite unless ``database_url``), once it
    answers; stopped with SIGTERM afterwards."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = data_dir / "runstate.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(RUNSTATE), "up"],
            cwd=data_dir,
            env=_environment(data_dir, port, database_url),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    system = RunningSystem(backend, f"http://127.0.0.1:{port}", process, log)
    try:
        _wait_until_serving(system)
        yield system
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def shoot_every_tab(context: BrowserContext, prefix: Path) -> None:
    """A screenshot of every tab of ``context`` as it is now: what a failed test leaves
    behind to show where it stopped (``<prefix>-<n>.png``)."""
    for number, page in enumerate(context.pages, 1):
        with contextlib.suppress(PlaywrightError):
            page.screenshot(path=f"{prefix}-{number}.png", full_page=True)


def record_errors(context: BrowserContext) -> list[str]:
    """A list that fills with what the browser reports as broken on any page of ``context``:
    uncaught script errors, and console errors (a resource that failed to load among them)."""
    errors: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"{message.location.get('url')}: {message.text}")

    context.on("weberror", lambda error: errors.append(f"script error: {error.error}"))
    context.on("console", console)
    return errors
