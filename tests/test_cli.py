"""The real `runstate` console script, run as the operator runs it: a subprocess with a clean
environment, in its own working directory (contract §1 and §2)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis

from runstate.settings import SECRET_SETTINGS, Settings
from tests.api.server import PASSWORD, postgres_database

RUNSTATE = Path(sys.executable).parent / "runstate"
# Every setting the process reads (a superset of contract §2) and the `_FILE` variants.
SETTING_NAMES = set(Settings.model_fields) | {f"{name}_FILE" for name in SECRET_SETTINGS}
CLOSED_PORT_URL = "postgresql://postgres@127.0.0.1:1/x"
ADMIN_EMAIL = "root@example.com"
ADMIN_PASSWORD = "seed"  # the admin seed is exempt from the password policy


def clean_env(**values: str) -> dict[str, str]:
    """The test runner's environment without any runstate setting, plus ``values``."""
    env = {key: value for key, value in os.environ.items() if key not in SETTING_NAMES}
    env["NO_COLOR"] = "1"
    env.update(values)
    return env


def runstate(
    *args: str, cwd: Path, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RUNSTATE), *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stderr_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def assert_one_line_error(result: subprocess.CompletedProcess[str], prefix: str) -> str:
    """The process failed with exactly one stderr line starting with ``prefix``."""
    lines = stderr_lines(result)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(prefix), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def command_names(help_text: str) -> set[str]:
    """The first word of every line of a help screen (box-drawing characters removed)."""
    return {line.strip("│ ").split(" ")[0] for line in help_text.splitlines()}


def _fetch(url: str, query: str) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(url)
        try:
            return list(await connection.fetch(query))
        finally:
            await connection.close()

    return asyncio.run(run())


# --- help ---------------------------------------------------------------------------------


def test_help_lists_one_command_per_process(tmp_path: Path) -> None:
    result = runstate("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert {"up", "api", "scheduler", "worker", "migrate", "dlq"} <= command_names(result.stdout)


def test_worker_help_lists_the_three_workers(tmp_path: Path) -> None:
    result = runstate("worker", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert {"monitoring", "status-change", "notification"} <= command_names(result.stdout)


# --- migrate ------------------------------------------------------------------------------


def test_migrate_on_sqlite_is_idempotent_and_seeds_the_admin_once(tmp_path: Path) -> None:
    database = tmp_path / "x.db"
    env = {
        "DATABASE_URL": f"sqlite:///{database}",
        "ADMIN_EMAIL": ADMIN_EMAIL,
        "ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    first = runstate("migrate", cwd=tmp_path, **env)
    assert first.returncode == 0, first.stderr
    second = runstate("migrate", cwd=tmp_path, **env)
    assert second.returncode == 0, second.stderr

    with sqlite3.connect(database) as connection:
        admins = connection.execute("SELECT email, role FROM users").fetchall()
        versions = connection.execute("SELECT version_num FROM alembic_version").fetchall()
        regions = connection.execute("SELECT name FROM regions").fetchall()
    assert admins == [(ADMIN_EMAIL, "ADMIN")]
    assert len(versions) == 1
    assert regions == [("local",)]


def test_migrate_on_postgres_is_idempotent(postgres_admin_url: str, tmp_path: Path) -> None:
    with postgres_database(postgres_admin_url) as url:
        for _ in range(2):
            result = runstate("migrate", cwd=tmp_path, DATABASE_URL=url)
            assert result.returncode == 0, result.stderr
        assert len(_fetch(url, "SELECT version_num FROM alembic_version")) == 1
        assert [row["name"] for row in _fetch(url, "SELECT name FROM regions")] == ["local"]


def test_concurrent_migrations_of_a_fresh_postgres_database_all_succeed(
    postgres_admin_url: str, tmp_path: Path
) -> None:
    with postgres_database(postgres_admin_url) as url:
        env = clean_env(DATABASE_URL=url, ADMIN_EMAIL=ADMIN_EMAIL, ADMIN_PASSWORD=ADMIN_PASSWORD)
        processes = [
            subprocess.Popen(
                [str(RUNSTATE), "migrate"],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)  # three, not two: more chances for an unlocked race to show
        ]
        try:
            outcomes = [process.communicate(timeout=60) for process in processes]
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        for process, (_, stderr) in zip(processes, outcomes, strict=True):
            assert process.returncode == 0, stderr
        assert len(_fetch(url, "SELECT version_num FROM alembic_version")) == 1
        assert [row["name"] for row in _fetch(url, "SELECT name FROM regions")] == ["local"]
        admins = _fetch(url, "SELECT email, role FROM users")
        assert [(row["email"], row["role"]) for row in admins] == [(ADMIN_EMAIL, "ADMIN")]


# --- failing fast with one line -----------------------------------------------------------


def test_api_without_database_url_exits_2_naming_database_url(tmp_path: Path) -> None:
    result = runstate("api", cwd=tmp_path, timeout=15)
    assert result.returncode == 2
    assert_one_line_error(result, "runstate: DATABASE_URL:")


@pytest.mark.parametrize("command", ["api", "migrate"])
def test_an_unreachable_database_stops_the_process_with_one_line_naming_database_url(
    tmp_path: Path, command: str
) -> None:
    started = time.monotonic()
    result = runstate(command, cwd=tmp_path, timeout=15, DATABASE_URL=CLOSED_PORT_URL)
    assert time.monotonic() - started < 15
    assert result.returncode != 0
    assert_one_line_error(result, "runstate: DATABASE_URL:")


def test_api_on_an_unmigrated_database_says_to_run_migrate(
    postgres_admin_url: str, tmp_path: Path
) -> None:
    with postgres_database(postgres_admin_url) as url:
        result = runstate("api", cwd=tmp_path, timeout=30, DATABASE_URL=url)
    assert result.returncode != 0
    line = assert_one_line_error(result, "runstate:")
    assert "runstate migrate" in line


def test_up_in_production_without_jwt_secret_exits_2_naming_jwt_secret(tmp_path: Path) -> None:
    result = runstate("up", cwd=tmp_path, timeout=15, APP_ENV="production")
    assert result.returncode == 2
    assert_one_line_error(result, "runstate: JWT_SECRET")


def test_up_with_a_port_that_is_not_a_number_exits_2_naming_port(tmp_path: Path) -> None:
    result = runstate("up", cwd=tmp_path, timeout=15, PORT="abc")
    assert result.returncode == 2
    assert_one_line_error(result, "runstate: PORT:")


@pytest.mark.parametrize("jwt_secret", [None, "s" * 40], ids=["generated", "set"])
def test_up_with_a_data_dir_it_cannot_write_exits_2_with_one_line_naming_it(
    tmp_path: Path, jwt_secret: str | None
) -> None:
    # A path under a regular file: no process can make it, root included (the tests run as
    # root, for whom permission bits would not stop anything).
    (tmp_path / "a-file").write_text("")
    env = {"RUNSTATE_DATA_DIR": str(tmp_path / "a-file" / "data"), "PORT": str(free_port())}
    result = runstate("up", cwd=tmp_path, timeout=15, **env, **_set_if(JWT_SECRET=jwt_secret))
    assert result.returncode == 2
    line = assert_one_line_error(result, "runstate: RUNSTATE_DATA_DIR: cannot ")
    assert "writable by user" in line


def _set_if(**values: str | None) -> dict[str, str]:
    return {name: value for name, value in values.items() if value is not None}


# --- runstate up --------------------------------------------------------------------------


@dataclass
class RunningUp:
    process: subprocess.Popen[bytes]
    base_url: str
    stdout: Path
    stderr: Path

    def stop(self) -> int:
        """SIGTERM, then the exit code (the test fails when it takes more than 15 s)."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=15)

    def log_lines(self) -> list[str]:
        text = self.stdout.read_text() + self.stderr.read_text()
        return [line for line in text.splitlines() if line.strip()]


@contextmanager
def running_up(cwd: Path, name: str) -> Iterator[RunningUp]:
    """`runstate up` in ``cwd`` on a free port, once `/api/v1/health` answers 200."""
    port = free_port()
    stdout, stderr = cwd / f"{name}.stdout", cwd / f"{name}.stderr"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [str(RUNSTATE), "up"], cwd=cwd, env=clean_env(PORT=str(port)), stdout=out, stderr=err
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, stderr.read_text()
            assert time.monotonic() < deadline, "runstate up did not answer within 30 s"
            try:
                if httpx.get(f"{base_url}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield RunningUp(process, base_url, stdout, stderr)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_up_serves_the_api_on_its_own_sqlite_file_and_stops_cleanly_on_sigterm(
    tmp_path: Path,
) -> None:
    with running_up(tmp_path, "up") as up:
        health = httpx.get(f"{up.base_url}/api/v1/health", timeout=10)
        assert health.status_code == 200
        assert (tmp_path / ".runstate" / "runstate.db").is_file()
        secret = tmp_path / ".runstate" / "jwt-secret"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert len(secret.read_text().strip()) >= 32
        exit_code = up.stop()
        lines = up.log_lines()
    assert lines, "runstate up logged nothing"
    for line in lines:
        assert isinstance(json.loads(line), dict), line
    assert exit_code == 0


def test_tokens_issued_before_a_restart_of_up_still_work_after_it(tmp_path: Path) -> None:
    email = f"restart-{uuid.uuid4().hex[:10]}@example.com"
    with running_up(tmp_path, "first") as first:
        with httpx.Client(base_url=f"{first.base_url}/api/v1", timeout=30) as client:
            signup = client.post("/signup", json={"email": email, "password": PASSWORD})
            assert signup.status_code == 201, signup.text
            signin = client.post("/signin", json={"email": email, "password": PASSWORD})
            assert signin.status_code == 200, signin.text
        first.stop()
    tokens = signin.json()["data"]

    with running_up(tmp_path, "second") as second:
        with httpx.Client(base_url=f"{second.base_url}/api/v1", timeout=30) as client:
            me = client.get("/me", headers={"authorization": f"Bearer {tokens['access_token']}"})
            refreshed = client.post(
                "/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
            )
        second.stop()
    assert me.status_code == 200, me.text
    assert me.json()["data"]["email"] == email
    assert refreshed.status_code == 200, refreshed.text


# --- the pipeline processes ---------------------------------------------------------------


PIPELINE_COMMANDS = [
    ["scheduler"],
    ["worker", "monitoring"],
    ["worker", "status-change"],
    ["worker", "notification"],
]


@pytest.mark.parametrize("command", PIPELINE_COMMANDS, ids=" ".join)
def test_a_pipeline_process_without_database_url_exits_2_naming_it(
    tmp_path: Path, command: list[str]
) -> None:
    result = runstate(*command, cwd=tmp_path, timeout=15, REDIS_URL="redis://127.0.0.1:6379/15")
    assert result.returncode == 2
    assert_one_line_error(result, "runstate: DATABASE_URL:")


@pytest.mark.parametrize("command", PIPELINE_COMMANDS, ids=" ".join)
def test_a_pipeline_process_without_redis_exits_2_naming_redis_url(
    tmp_path: Path, command: list[str]
) -> None:
    result = runstate(*command, cwd=tmp_path, timeout=15, DATABASE_URL="postgresql://x@h/db")
    assert result.returncode == 2
    assert_one_line_error(result, "runstate: REDIS_URL:")


def test_a_pipeline_process_whose_metrics_port_is_taken_stops_at_once_naming_it(
    tmp_path: Path,
) -> None:
    # Another process (a pod's other container, host networking) listens on the port: going
    # on without metrics would let this process's health check probe the other one's.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        result = runstate(
            "worker",
            "monitoring",
            cwd=tmp_path,
            timeout=15,
            DATABASE_URL=CLOSED_PORT_URL,
            REDIS_URL="redis://127.0.0.1:1/0",
            METRICS_PORT=str(taken),
        )
    assert result.returncode != 0
    line = assert_one_line_error(
        result, f"runstate: METRICS_PORT: cannot listen on 127.0.0.1:{taken}"
    )
    assert "give each process its own port" in line


def test_a_pipeline_process_with_unreachable_redis_fails_fast_naming_redis_url(
    tmp_path: Path,
) -> None:
    result = runstate(
        "worker",
        "monitoring",
        cwd=tmp_path,
        timeout=30,
        DATABASE_URL="postgresql://postgres@127.0.0.1:5432/postgres",
        REDIS_URL="redis://127.0.0.1:1/0",
    )
    assert result.returncode == 1
    assert_one_line_error(result, "runstate: REDIS_URL: cannot reach Redis")


# --- dlq ------------------------------------------------------------------------------------


@dataclass
class DeadLetterStreams:
    """Stream names of their own in the test Redis, the environment naming them, and a
    client to seed and inspect them."""

    client: redis.Redis
    env: dict[str, str]
    monitoring: str

    def dead_letter(self, stream: str, fields: dict[str, str], reason: str) -> str:
        """Dead-letter an entry as the consume loop does; its dead-letter id."""
        entry_id = self.client.xadd(stream, {"n": "0"}).decode()
        self.client.xdel(stream, entry_id)
        letter = {
            **fields,
            "dead_letter_reason": reason,
            "dead_letter_stream": stream,
            "dead_letter_entry_id": entry_id,
            "dead_letter_deliveries": "5",
        }
        return str(self.client.xadd(f"{stream}:dlq", letter).decode())

    def entries(self, stream: str) -> list[tuple[str, dict[str, str]]]:
        return [
            (i.decode(), {k.decode(): v.decode() for k, v in raw.items()})
            for i, raw in self.client.xrange(stream)
        ]


@pytest.fixture
def dlq_streams(redis_url: str) -> Iterator[DeadLetterStreams]:
    prefix = f"test:{uuid.uuid4().hex[:10]}"
    env = {
        "REDIS_URL": redis_url,
        "MONITORING_STREAM": f"{prefix}:monitoring",
        "STATUS_CHANGE_STREAM": f"{prefix}:status-change",
        "NOTIFICATION_STREAM": f"{prefix}:notification",
    }
    client = redis.Redis.from_url(redis_url)
    try:
        yield DeadLetterStreams(client, env, env["MONITORING_STREAM"])
    finally:
        client.delete(*(key for key in client.scan_iter(match=f"{prefix}:*")))
        client.close()


def job_fields(url: str = "https://example.com/") -> dict[str, str]:
    return {"website_id": str(uuid.uuid4()), "url": url, "scheduled_at": "2026-11-30T10:00:00Z"}


def test_dlq_list_shows_each_dead_letter_with_its_reason_and_fields_and_no_password(
    tmp_path: Path, dlq_streams: DeadLetterStreams
) -> None:
    streams = dlq_streams
    job = job_fields("https://ops:hunter2@example.com/health")
    first = streams.dead_letter(streams.monitoring, job, "failed 5 times; last: boom")
    second = streams.dead_letter(streams.monitoring, job_fields(), "malformed check job")

    for name in ("monitoring", streams.monitoring, f"{streams.monitoring}:dlq"):
        result = runstate("dlq", "list", name, cwd=tmp_path, timeout=30, **streams.env)
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert out.startswith(f"{first}  "), out
        head = out.splitlines()[0]
        assert "deliveries 5" in head
        assert head.endswith("failed 5 times; last: boom")
        assert f"    website_id: {job['website_id']}" in out
        assert "    url: https://ops:***@example.com/health" in out
        assert "hunter2" not in out
        assert "dead_letter_" not in out
        assert second in out
        assert out.splitlines()[-1] == f"2 dead letters in {streams.monitoring}:dlq"

    as_json = runstate("dlq", "list", "monitoring", "--json", cwd=tmp_path, **streams.env)
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [row["id"] for row in rows] == [first, second]
    assert rows[0]["fields"]["website_id"] == job["website_id"]
    assert rows[0]["reason"] == "failed 5 times; last: boom"
    assert rows[0]["deliveries"] == "5"


def test_dlq_replay_puts_the_original_entries_back_and_removes_only_them(
    tmp_path: Path, dlq_streams: DeadLetterStreams
) -> None:
    streams = dlq_streams
    jobs = [job_fields() for _ in range(3)]
    ids = [streams.dead_letter(streams.monitoring, job, "failed") for job in jobs]

    result = runstate("dlq", "replay", "monitoring", ids[0], ids[2], cwd=tmp_path, **streams.env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"replayed 2 dead letters onto {streams.monitoring}"
    assert [fields for _, fields in streams.entries(streams.monitoring)] == [jobs[0], jobs[2]]
    assert [i for i, _ in streams.entries(f"{streams.monitoring}:dlq")] == [ids[1]]

    everything = runstate("dlq", "replay", "monitoring", "--all", cwd=tmp_path, **streams.env)
    assert everything.returncode == 0, everything.stderr
    assert [fields for _, fields in streams.entries(streams.monitoring)] == [
        jobs[0],
        jobs[2],
        jobs[1],
    ]
    assert streams.entries(f"{streams.monitoring}:dlq") == []


def test_dlq_drop_removes_the_named_dead_letters_or_all_of_them(
    tmp_path: Path, dlq_streams: DeadLetterStreams
) -> None:
    streams = dlq_streams
    stream = streams.env["STATUS_CHANGE_STREAM"]
    ids = [streams.dead_letter(stream, {"event_id": str(n)}, "malformed") for n in range(3)]

    one = runstate("dlq", "drop", "status-change", ids[1], cwd=tmp_path, **streams.env)
    assert one.returncode == 0, one.stderr
    assert one.stdout.strip() == f"dropped 1 dead letter from {stream}:dlq"
    assert [i for i, _ in streams.entries(f"{stream}:dlq")] == [ids[0], ids[2]]

    rest = runstate("dlq", "drop", stream, "--all", cwd=tmp_path, **streams.env)
    assert rest.returncode == 0, rest.stderr
    assert streams.entries(f"{stream}:dlq") == []
    assert streams.entries(stream) == [], "nothing replayed"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["list", "checks"], "runstate: unknown stream 'checks': use one of monitoring, "),
        (["replay", "monitoring", "1-0"], "runstate: no dead letter 1-0 in "),
        (["drop", "monitoring", "yesterday"], "runstate: no dead letter yesterday in "),
        (["replay", "monitoring"], "runstate: name the dead letters by id, or give --all"),
        (["drop", "monitoring", "1-0", "--all"], "runstate: give dead-letter ids or --all"),
    ],
)
def test_dlq_refuses_unknown_streams_and_ids_with_one_line_and_changes_nothing(
    tmp_path: Path, dlq_streams: DeadLetterStreams, args: list[str], error: str
) -> None:
    streams = dlq_streams
    kept = streams.dead_letter(streams.monitoring, job_fields(), "failed")
    result = runstate("dlq", *args, cwd=tmp_path, timeout=30, **streams.env)
    assert result.returncode == 2
    assert_one_line_error(result, error)
    assert [i for i, _ in streams.entries(f"{streams.monitoring}:dlq")] == [kept]
    assert streams.entries(streams.monitoring) == []


def test_dlq_without_redis_says_in_one_line_that_up_keeps_its_dead_letters_in_memory(
    tmp_path: Path,
) -> None:
    result = runstate("dlq", "list", "monitoring", cwd=tmp_path, timeout=15)
    assert result.returncode == 2
    line = assert_one_line_error(result, "runstate: REDIS_URL: dead letters are kept in Redis")
    assert "`runstate up` without it keeps them in its own memory" in line


def test_dlq_with_an_unreachable_redis_fails_with_one_line_naming_redis_url(
    tmp_path: Path,
) -> None:
    result = runstate(
        "dlq", "list", "monitoring", cwd=tmp_path, timeout=30, REDIS_URL="redis://127.0.0.1:1/0"
    )
    assert result.returncode == 1
    assert_one_line_error(result, "runstate: REDIS_URL: cannot reach Redis at redis://127.0.0.1:1")
