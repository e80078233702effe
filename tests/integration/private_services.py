"""PostgreSQL and Redis servers of a test's own, to stop and start at will: the machine's
shared servers serve other suites and must never go down.

PostgreSQL is a fresh cluster (``initdb``) run by the ``postgres`` OS user with ``pg_ctl``
in a temporary directory, on a free port; Redis is ``redis-server`` keeping nothing on disk,
so a restart loses everything, as a Redis without persistence does. Both need the server
binaries, and PostgreSQL needs root (to run as ``postgres``): the tests that use them are
skipped elsewhere (failed on CI).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


def unavailable(problem: str) -> None:
    """Skip the test (fail it on CI): a private server cannot be had here."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(problem)
    pytest.skip(problem)


class PrivatePostgres:
    """A PostgreSQL cluster of its own on 127.0.0.1:``port`` (trust authentication)."""

    def __init__(self) -> None:
        binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not binaries:
            unavailable("no PostgreSQL server binaries under /usr/lib/postgresql")
        if os.geteuid() != 0:
            unavailable("a private PostgreSQL runs as the postgres user: needs root")
        self.bin = binaries[-1].parent
        self.port = _free_port()
        # Not under the test's tmp_path: the postgres user cannot enter root's 0700 dirs.
        self.home = Path(tempfile.mkdtemp(prefix="runstate-pg-"))
        self.data = self.home / "data"
        shutil.chown(self.home, "postgres", "postgres")
        self._as_postgres(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"
        )

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, tool: str, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bin / tool), *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.home} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c full_page_writes=off"
        )
        log = str(self.home / "server.log")
        self._as_postgres("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        """A fast shutdown: every session is cut, nothing is accepted until `start`."""
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.home, ignore_errors=True)


class PrivateRedis:
    """``redis-server`` on 127.0.0.1:``port``, keeping nothing on disk."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server is not installed")
        assert binary is not None
        self.binary = binary
        self.workdir = workdir
        self.port = _free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = (self.workdir / "redis.log").open("ab")
        options = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self._proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), *options, "--dir", str(self.workdir)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 10
        while not _answers(self.port):
            if time.monotonic() > deadline or self._proc.poll() is not None:
                raise RuntimeError("the private redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        """Gone at once, its data with it (a crash of a Redis without persistence)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(10)
            self._proc = None

    def close(self) -> None:
        self.stop()
