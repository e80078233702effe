"""The Compose files, parsed and resolved by the real Compose implementation (no daemon
needed): local mode with its own PostgreSQL and Redis, external mode on cloud services with
its required variables, and the wiring a one-command start depends on."""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, start_http_server

from tests.delivery import (
    COMPOSE_EXTERNAL,
    COMPOSE_LOCAL,
    ENV_EXAMPLE,
    ENV_LOCAL_EXAMPLE,
    EXTERNAL_REQUIRED,
    compose_config,
    output,
    resolved,
    run,
    tool,
)

RUNSTATE_SERVICES = {
    "migrate",
    "api",
    "scheduler",
    "worker-monitoring",
    "worker-status-change",
    "worker-notification",
}
PIPELINE_SERVICES = RUNSTATE_SERVICES - {"migrate", "api"}


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """docker-compose.yml resolved in an empty project directory: no .env.local."""
    return resolved(COMPOSE_LOCAL, tmp_path_factory.mktemp("local"))


@pytest.fixture(scope="module")
def external(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """docker-compose.external.yml resolved with a .env holding the required values."""
    project = tmp_path_factory.mktemp("external")
    (project / ".env").write_text("".join(f"{k}={v}\n" for k, v in EXTERNAL_REQUIRED.items()))
    return resolved(COMPOSE_EXTERNAL, project)


def test_both_files_match_the_compose_specification_schema() -> None:
    result = run(
        tool("check-jsonschema"),
        "--builtin-schema",
        "vendor.compose-spec",
        COMPOSE_LOCAL,
        COMPOSE_EXTERNAL,
    )
    assert result.returncode == 0, output(result)


# ---- local mode -------------------------------------------------------------------------


def test_local_mode_resolves_without_any_env_file(tmp_path: Path) -> None:
    result = compose_config(COMPOSE_LOCAL, tmp_path)
    assert result.returncode == 0, (
        f"`docker compose up` must work on a fresh clone:\n{output(result)}"
    )


def test_local_mode_reads_env_local_but_keeps_its_own_wiring(tmp_path: Path) -> None:
    shutil.copy(ENV_LOCAL_EXAMPLE, tmp_path / ".env.local")
    with (tmp_path / ".env.local").open("a") as file:
        file.write("LOG_LEVEL=DEBUG\nDATABASE_URL=postgresql://elsewhere/db\n")
    config = resolved(COMPOSE_LOCAL, tmp_path)
    for name in RUNSTATE_SERVICES:
        environment = config["services"][name]["environment"]
        assert environment["LOG_LEVEL"] == "DEBUG", f"{name} does not read .env.local"
        assert environment["DATABASE_URL"].endswith("@postgres:5432/runstate"), (
            f"{name}: .env.local must not redirect local mode to another database"
        )


def test_local_mode_has_every_service(local: dict[str, Any]) -> None:
    assert set(local["services"]) == RUNSTATE_SERVICES | {"postgres", "redis"}


def test_services_reach_each_other_by_service_name(local: dict[str, Any]) -> None:
    for name in RUNSTATE_SERVICES:
        environment = local["services"][name]["environment"]
        assert "@postgres:5432/" in environment["DATABASE_URL"], f"{name}: {environment}"
        assert environment["REDIS_URL"].startswith("redis://redis:6379"), f"{name}: {environment}"
        assert environment["HOST"] == "0.0.0.0", f"{name} must listen on every interface"  # noqa: S104


def test_postgres_is_healthchecked_with_pg_isready_on_a_named_volume(local: dict[str, Any]) -> None:
    postgres = local["services"]["postgres"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    volumes = [v for v in postgres.get("volumes", []) if v["type"] == "volume"]
    assert volumes, "postgres needs a named volume"
    assert volumes[0]["source"] in local["volumes"], "postgres needs a named volume"
    assert volumes[0]["target"] == "/var/lib/postgresql/data"


def test_redis_is_healthchecked_with_redis_cli_ping(local: dict[str, Any]) -> None:
    assert "redis-cli ping" in " ".join(local["services"]["redis"]["healthcheck"]["test"])


def test_nothing_starts_before_its_dependencies(local: dict[str, Any]) -> None:
    services = local["services"]
    assert services["migrate"]["depends_on"] == {
        "postgres": {"condition": "service_healthy", "required": True}
    }
    for name in RUNSTATE_SERVICES - {"migrate"}:
        conditions = {dep: v["condition"] for dep, v in services[name]["depends_on"].items()}
        assert conditions == {
            "postgres": "service_healthy",
            "redis": "service_healthy",
            "migrate": "service_completed_successfully",
        }, f"{name} depends on {conditions}"


def test_restart_policies(local: dict[str, Any], external: dict[str, Any]) -> None:
    for config in (local, external):
        for name, service in config["services"].items():
            expected = "no" if name == "migrate" else "unless-stopped"
            assert service.get("restart") == expected, f"{name}: restart {service.get('restart')}"


def test_api_port_is_published_and_workers_can_scale(
    local: dict[str, Any], external: dict[str, Any]
) -> None:
    for config in (local, external):
        ports = config["services"]["api"]["ports"]
        assert [(p["target"], p["published"]) for p in ports] == [(3001, "3001")], ports
        for name in PIPELINE_SERVICES | {"migrate"}:
            service = config["services"][name]
            # --scale N needs neither a fixed container name nor a fixed host port.
            assert "container_name" not in service, f"{name} has a container_name"
            assert not service.get("ports"), f"{name} publishes ports: it could not scale"


def test_every_runstate_service_builds_the_one_image(
    local: dict[str, Any], external: dict[str, Any]
) -> None:
    for config in (local, external):
        images = {config["services"][name]["image"] for name in RUNSTATE_SERVICES}
        assert len(images) == 1, f"one image for every process, found {images}"
        for name in RUNSTATE_SERVICES:
            build = config["services"][name]["build"]
            assert Path(build["dockerfile"]).name == "Dockerfile", build


def test_long_running_services_have_a_healthcheck(local: dict[str, Any]) -> None:
    services = local["services"]
    assert services["migrate"]["healthcheck"] == {"disable": True}
    assert "healthcheck" not in services["api"], "the api uses the image's HEALTHCHECK"
    for name in PIPELINE_SERVICES:
        test = services[name]["healthcheck"]["test"]
        assert test[0] == "CMD", f"{name}: {test}"
        assert "METRICS_PORT" in " ".join(test), f"{name}: {test}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_pipeline_healthcheck_passes_on_live_metrics_and_fails_without(
    local: dict[str, Any],
) -> None:
    test = local["services"]["worker-monitoring"]["healthcheck"]["test"]
    assert test[1] == "python", test
    command = [sys.executable, *test[2:]]
    server, thread = start_http_server(0, addr="127.0.0.1", registry=CollectorRegistry())
    try:
        alive = run(*command, env={"METRICS_PORT": str(server.server_port)}, timeout=30)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert alive.returncode == 0, f"fails against a live metrics port:\n{output(alive)}"
    dead = run(*command, env={"METRICS_PORT": str(free_port())}, timeout=30)
    assert dead.returncode != 0, "passes while nothing serves METRICS_PORT"
    off = run(*command, env={"METRICS_PORT": "0"}, timeout=30)
    assert off.returncode == 0, (
        f"METRICS_PORT=0 (metrics off) must not be unhealthy:\n{output(off)}"
    )


# ---- external mode ----------------------------------------------------------------------


def test_external_mode_has_no_database_or_redis_container(external: dict[str, Any]) -> None:
    assert set(external["services"]) == RUNSTATE_SERVICES
    assert not external.get("volumes"), "no data lives on this host in external mode"
    for name in RUNSTATE_SERVICES - {"migrate"}:
        assert set(external["services"][name]["depends_on"]) == {"migrate"}


def test_external_mode_passes_the_cloud_urls_through(external: dict[str, Any]) -> None:
    for name in RUNSTATE_SERVICES:
        environment = external["services"][name]["environment"]
        for variable, value in EXTERNAL_REQUIRED.items():
            assert environment[variable] == value, f"{name}: {variable}={environment[variable]}"
        assert environment["APP_ENV"] == "production"


@pytest.mark.parametrize("missing", sorted(EXTERNAL_REQUIRED))
def test_external_mode_fails_loudly_without_a_required_variable(
    tmp_path: Path, missing: str
) -> None:
    present = {k: v for k, v in EXTERNAL_REQUIRED.items() if k != missing}
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in present.items()))
    result = compose_config(COMPOSE_EXTERNAL, tmp_path)
    assert result.returncode != 0, f"resolved although {missing} is missing"
    assert f"required variable {missing} is missing a value" in result.stderr, output(result)
    assert f"set {missing} in .env" in result.stderr, "the message must say where to set it"
    for other in present:
        assert f"variable {other} is" not in result.stderr, output(result)


def test_external_mode_refuses_the_unfilled_example(tmp_path: Path) -> None:
    shutil.copy(ENV_EXAMPLE, tmp_path / ".env")
    result = compose_config(COMPOSE_EXTERNAL, tmp_path)
    assert result.returncode != 0, ".env.example copied as-is must not start anything"
    for variable in EXTERNAL_REQUIRED:
        assert f"required variable {variable} is missing a value" in result.stderr, output(result)


def test_external_mode_takes_the_required_values_from_the_shell_too(tmp_path: Path) -> None:
    config = resolved(COMPOSE_EXTERNAL, tmp_path, env=EXTERNAL_REQUIRED)
    assert config["services"]["api"]["environment"]["REDIS_URL"].startswith("rediss://")


def test_example_urls_use_tls() -> None:
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    external = COMPOSE_EXTERNAL.read_text(encoding="utf-8")
    for needle in ("sslmode=require", "rediss://"):
        assert needle in text, f".env.example must show {needle}"
        assert needle in external, f"docker-compose.external.yml must show {needle}"
