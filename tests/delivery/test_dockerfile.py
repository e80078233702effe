"""The Dockerfile and .dockerignore: lint-clean, two stages, locked dependencies cached
apart from the source, a non-root runtime with only the environment, and a HEALTHCHECK
that really answers against the API."""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
import uvicorn

from runstate.api.app import create_app
from runstate.settings import Settings
from tests.delivery import (
    DOCKERFILE,
    DOCKERIGNORE,
    PR_CHECK,
    ROOT,
    Stage,
    dockerfile_stages,
    exec_form,
    load_yaml,
    output,
    run,
    tool,
)


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    found = dockerfile_stages()
    assert len(found) == 2, f"expected a builder and a runtime stage, found {len(found)}"
    return found


@pytest.fixture(scope="module")
def builder(stages: list[Stage]) -> Stage:
    return stages[0]


@pytest.fixture(scope="module")
def runtime(stages: list[Stage]) -> Stage:
    return stages[-1]


def test_hadolint_reports_nothing(tmp_path: Path) -> None:
    config = tmp_path / "hadolint.yaml"
    config.write_text("{}\n")  # no user or project configuration can relax the rules
    result = run(
        tool("hadolint"),
        "--config",
        config,
        "--format",
        "json",
        "--failure-threshold",
        "style",
        "--disable-ignore-pragma",
        DOCKERFILE,
    )
    findings = json.loads(result.stdout or "[]")
    report = "\n".join(
        f"Dockerfile:{f['line']} {f['code']} ({f['level']}): {f['message']}" for f in findings
    )
    assert not findings, f"hadolint:\n{report}"
    assert result.returncode == 0, output(result)


def test_builder_and_runtime_use_the_same_pinned_slim_python(
    builder: Stage, runtime: Stage
) -> None:
    # The environment's interpreter is a symlink to the base image's python3.11: both stages
    # must be the same image for it to resolve at run time.
    assert builder.base == runtime.base, (
        f"builder FROM {builder.base} but runtime FROM {runtime.base}: the copied .venv "
        "points at the builder's interpreter, so they must be identical"
    )
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim-[a-z]+", runtime.base), (
        f"base image {runtime.base}: expected a pinned python:3.11…-slim-<debian> tag"
    )


def test_uv_comes_from_a_pinned_image_the_ci_uses_too(builder: Stage) -> None:
    sources = [a for a in builder.all("COPY") if "astral-sh/uv" in a]
    assert sources, "the builder must COPY uv from ghcr.io/astral-sh/uv:<version>"
    match = re.search(r"--from=ghcr\.io/astral-sh/uv:(\d+\.\d+\.\d+)\s", sources[0])
    assert match, f"pin uv to an exact version: COPY {sources[0]}"
    workflow = load_yaml(PR_CHECK)
    assert str(workflow["env"]["UV_VERSION"]) == match.group(1), (
        f"the Dockerfile uses uv {match.group(1)}, pr-check.yml uv {workflow['env']['UV_VERSION']}"
        ": keep them the same"
    )


def test_dependencies_are_installed_in_a_layer_before_the_source(builder: Stage) -> None:
    steps = [f"{keyword} {arguments}" for keyword, arguments in builder.instructions]

    def index(pattern: str) -> int:
        for position, step in enumerate(steps):
            if re.search(pattern, step):
                return position
        raise AssertionError(f"no builder step matches {pattern!r} in:\n" + "\n".join(steps))

    lock = index(r"^COPY .*\buv\.lock\b")
    dependencies = index(r"^RUN .*uv sync .*--no-install-project")
    source = index(r"^COPY .*\bsrc\b")
    project = index(r"^RUN (?!.*--no-install-project).*uv sync ")
    assert lock < dependencies < source < project, (
        "order must be: COPY pyproject.toml uv.lock, uv sync --no-install-project, "
        "COPY src, uv sync (so a source change keeps the dependency layer cached)"
    )
    for position in (dependencies, project):
        for flag in ("--frozen", "--no-dev", "--no-editable"):
            assert flag in steps[position], f"{steps[position]!r} lacks {flag}"


def test_runtime_stage_holds_only_the_environment(builder: Stage, runtime: Stage) -> None:
    copies = runtime.all("COPY") + runtime.all("ADD")
    assert copies, "the runtime stage must copy the environment from the builder"
    for arguments in copies:
        message = f"the runtime stage copies only the builder's environment, not: COPY {arguments}"
        assert f"--from={builder.name}" in arguments, message
        assert "/app/.venv" in arguments, message
    for arguments in runtime.all("RUN"):
        assert not re.search(r"\b(apt-get|apt|pip|uv)\b", arguments), (
            f"nothing is installed in the runtime stage: RUN {arguments}"
        )


def test_runtime_runs_as_a_numeric_non_root_user(runtime: Stage) -> None:
    user = runtime.last("USER")
    assert re.fullmatch(r"\d+(:\d+)?", user), f"USER {user}: use numeric ids (uid:gid)"
    assert int(user.split(":")[0]) != 0, "USER must not be root"


def test_exposes_the_api_and_the_metrics_port(runtime: Stage) -> None:
    ports = {
        word.split("/")[0] for arguments in runtime.all("EXPOSE") for word in arguments.split()
    }
    defaults = Settings.model_fields
    for setting in ("PORT", "METRICS_PORT"):
        port = str(defaults[setting].default)
        assert port in ports, f"EXPOSE lacks {port}, the default {setting}"


def test_one_image_serves_every_process_through_the_runstate_entrypoint(runtime: Stage) -> None:
    from typer.main import get_command

    from runstate.cli import app

    assert exec_form(runtime.last("ENTRYPOINT")) == ["runstate"]
    command = exec_form(runtime.last("CMD"))
    cli = get_command(app)
    assert command, "CMD: the default process"
    assert command[0] in cli.commands, f"CMD {command} is not a runstate command"  # type: ignore[attr-defined]


def healthcheck_command(runtime: Stage) -> list[str]:
    arguments = runtime.last("HEALTHCHECK")
    assert " CMD " in f" {arguments} ", f"HEALTHCHECK {arguments}: expected a CMD"
    return exec_form(arguments)


def test_healthcheck_needs_no_curl(runtime: Stage) -> None:
    command = healthcheck_command(runtime)
    assert command[0] == "python", f"HEALTHCHECK {command}: use the image's python"
    assert not {"curl", "wget"} & set(" ".join(command).split()), "no curl or wget in the image"


def test_healthcheck_path_is_a_get_route_of_the_api(runtime: Stage, tmp_path: Path) -> None:
    code = " ".join(healthcheck_command(runtime))
    paths = re.findall(r"'(/[^']*)'", code)
    assert len(paths) == 1, f"expected one path in the HEALTHCHECK, found {paths}"
    schema = create_app(Settings(RUNSTATE_DATA_DIR=tmp_path)).openapi()
    routes = sorted(path for path, item in schema["paths"].items() if "get" in item)
    assert paths[0] in routes, (
        f"HEALTHCHECK calls {paths[0]}, not a GET route of create_app(): {routes}"
    )


@contextmanager
def live_api(tmp_path: Path) -> Iterator[int]:
    """The real API on a free loopback port, without its lifespan (the health route needs no
    database); yields the port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    app = create_app(Settings(RUNSTATE_DATA_DIR=tmp_path))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "the API did not start"
        assert time.monotonic() < deadline, "the API did not start within 30 s"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_healthcheck_command_passes_on_a_live_api_and_fails_without_one(
    runtime: Stage, tmp_path: Path
) -> None:
    command = [sys.executable, *healthcheck_command(runtime)[1:]]
    with live_api(tmp_path) as port:
        alive = run(*command, env={"PORT": str(port)}, timeout=30)
    assert alive.returncode == 0, f"the HEALTHCHECK fails against a live API:\n{output(alive)}"
    dead = run(*command, env={"PORT": str(free_port())}, timeout=30)
    assert dead.returncode != 0, "the HEALTHCHECK passes while nothing listens on PORT"


# ---- .dockerignore ----------------------------------------------------------------------


def _segments_match(pattern: list[str], path: list[str]) -> bool:
    if not pattern:
        return not path
    if pattern[0] == "**":
        return any(_segments_match(pattern[1:], path[i:]) for i in range(len(path) + 1))
    return (
        bool(path) and fnmatchcase(path[0], pattern[0]) and _segments_match(pattern[1:], path[1:])
    )


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a parent directory
    matches everything below it."""
    parts = path.split("/")
    excluded = False
    for raw in patterns:
        negated = raw.startswith("!")
        pattern = raw.removeprefix("!").strip("/").split("/")
        if any(_segments_match(pattern, parts[:n]) for n in range(1, len(parts) + 1)):
            excluded = not negated
    return excluded


def test_dockerignore_lets_in_the_build_inputs_and_nothing_secret(builder: Stage) -> None:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    sources = []
    for arguments in builder.all("COPY"):
        if "--from=" in arguments:
            continue
        words = [word for word in arguments.split() if not word.startswith("--")]
        sources += words[:-1]
    assert sources, "the builder copies no files from the context?"
    for source in sources:
        for path in (ROOT / source).rglob("*") if (ROOT / source).is_dir() else [ROOT / source]:
            relative = path.relative_to(ROOT).as_posix()
            if "__pycache__" in relative or not path.is_file():
                continue
            assert not dockerignored(relative, patterns), (
                f"{relative} is COPYed by the Dockerfile but excluded by .dockerignore"
            )
    for secret in (
        ".env",
        ".env.local",
        ".env.production",
        ".git/config",
        ".venv/bin/python",
        "tests/conftest.py",
        ".runstate/jwt-secret",
        "src/runstate/__pycache__/x.pyc",
    ):
        assert dockerignored(secret, patterns), f"{secret} would be sent to the build context"
