"""The GitHub Actions workflows: actionlint (with shellcheck on every `run:`), the
workflow JSON schema, and what each one must do: the PR gate and the GHCR publication."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.delivery import (
    COMPOSE_LOCAL,
    DOCKERFILE,
    PR_CHECK,
    PUBLISH_IMAGE,
    WORKFLOWS,
    dockerfile_stages,
    load_yaml,
    output,
    run,
    tool,
)

WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.yml")) + sorted(WORKFLOWS.glob("*.yaml"))


def triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the key `on` as the boolean true.
    value = workflow.get("on", workflow.get(True))
    return value if isinstance(value, dict) else {name: None for name in value}


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job.get("steps", []))


def uses(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in steps(job) if str(s.get("uses", "")).split("@")[0] == action]


def runs(job: dict[str, Any]) -> str:
    return "\n".join(str(s.get("run", "")) for s in steps(job))


@pytest.fixture(scope="module")
def pr_check() -> dict[Any, Any]:
    return load_yaml(PR_CHECK)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def publish() -> dict[Any, Any]:
    return load_yaml(PUBLISH_IMAGE)  # type: ignore[no-any-return]


def test_the_two_workflows_exist() -> None:
    assert PR_CHECK in WORKFLOW_FILES, WORKFLOW_FILES
    assert PUBLISH_IMAGE in WORKFLOW_FILES, WORKFLOW_FILES


def test_actionlint_reports_nothing() -> None:
    result = run(
        tool("actionlint"),
        "-no-color",
        "-shellcheck",
        tool("shellcheck"),
        *WORKFLOW_FILES,
    )
    assert result.returncode == 0, output(result)


@pytest.mark.parametrize(
    "schema", ["vendor.github-workflows", "custom.github-workflows-require-timeout"]
)
def test_workflows_match_the_schema(schema: str) -> None:
    result = run(tool("check-jsonschema"), "--builtin-schema", schema, *WORKFLOW_FILES)
    assert result.returncode == 0, output(result)


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: Path(p).name)
def test_least_privilege_permissions(path: Path) -> None:
    workflow = load_yaml(path)
    assert workflow.get("permissions") == {"contents": "read"}, (
        f"{path.name}: the workflow-level permissions must be exactly `contents: read`"
    )
    for name, job in workflow["jobs"].items():
        granted = job.get("permissions", {})
        extra = {scope for scope, level in granted.items() if level != "read"}
        if path == PUBLISH_IMAGE:
            assert extra <= {"packages"}, f"{name} asks for {granted}"
        else:
            assert not extra, f"{path.name}/{name} asks for write access: {granted}"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: Path(p).name)
def test_actions_are_pinned_to_a_version(path: Path) -> None:
    for name, job in load_yaml(path)["jobs"].items():
        for step in steps(job):
            if "uses" not in step:
                continue
            action = str(step["uses"])
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@(v\d+(\.\d+){0,2}|[0-9a-f]{40})", action), (
                f"{path.name}/{name}: pin {action} to a major version (or a full SHA)"
            )


# The first major version of each action that runs on Node 24: GitHub runners dropped
# Node 20 in September 2026, so an older major no longer starts.
NODE24_MAJORS = {
    "actions/checkout": 5,
    "actions/setup-python": 6,
    "astral-sh/setup-uv": 7,
    "docker/login-action": 4,
    "docker/setup-buildx-action": 4,
    "docker/metadata-action": 6,
    "docker/build-push-action": 7,
}


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: Path(p).name)
def test_actions_run_on_a_supported_node_runtime(path: Path) -> None:
    for name, job in load_yaml(path)["jobs"].items():
        for step in steps(job):
            action, _, ref = str(step.get("uses", "")).partition("@")
            if action not in NODE24_MAJORS or not ref.startswith("v"):
                continue
            major = int(ref[1:].split(".")[0])
            assert major >= NODE24_MAJORS[action], (
                f"{path.name}/{name}: {action}@{ref} runs on Node 20, which runners no longer "
                f"have: use v{NODE24_MAJORS[action]} or later"
            )
            if action == "astral-sh/setup-uv" and major >= 8:
                assert re.fullmatch(r"v\d+\.\d+\.\d+", ref), (
                    f"{path.name}/{name}: setup-uv publishes no major tags since v8: "
                    f"use a full version such as v8.3.2, not {ref}"
                )


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: Path(p).name)
def test_checkout_does_not_keep_the_token(path: Path) -> None:
    for name, job in load_yaml(path)["jobs"].items():
        for step in uses(job, "actions/checkout"):
            assert step.get("with", {}).get("persist-credentials") is False, (
                f"{path.name}/{name}: checkout with persist-credentials: false"
            )


# ---- pr-check.yml -----------------------------------------------------------------------


def test_pr_check_runs_on_pull_requests(pr_check: dict[Any, Any]) -> None:
    assert "pull_request" in triggers(pr_check)


def test_pr_check_sets_up_python_and_uv_with_a_cache_keyed_on_the_lock(
    pr_check: dict[Any, Any],
) -> None:
    job = pr_check["jobs"]["checks"]
    assert uses(job, "actions/setup-python"), "set up Python with actions/setup-python"
    (setup_uv,) = uses(job, "astral-sh/setup-uv")
    options = setup_uv["with"]
    assert options.get("enable-cache") is True, "cache the dependencies"
    assert options.get("cache-dependency-glob") == "uv.lock", "key the cache on uv.lock"
    python = dockerfile_stages(DOCKERFILE)[-1].base.split(":")[1].split("-")[0]
    assert str(pr_check["env"]["UV_PYTHON"]) == python, "CI tests the image's Python version"


def test_pr_check_runs_every_gate(pr_check: dict[Any, Any]) -> None:
    script = runs(pr_check["jobs"]["checks"])
    for gate in (
        "uv sync --frozen",
        "ruff format --check",
        "ruff check",
        "mypy",
        "pytest",
        "uv build --wheel",
    ):
        assert gate in script, f"pr-check.yml does not run `{gate}`"


def test_pr_check_tests_on_postgres_and_redis_service_containers(
    pr_check: dict[Any, Any],
) -> None:
    job = pr_check["jobs"]["checks"]
    services = job["services"]
    assert set(services) == {"postgres", "redis"}
    compose = load_yaml(COMPOSE_LOCAL)["services"]
    for name in services:
        assert services[name]["image"] == compose[name]["image"], (
            f"CI tests on {services[name]['image']}, local mode runs {compose[name]['image']}"
        )
        assert "--health-cmd" in services[name]["options"], f"{name}: wait until it is healthy"
    assert job["env"]["CI"] == "true", "with CI=true a missing service fails instead of skipping"


def test_pr_check_builds_the_image_without_pushing(pr_check: dict[Any, Any]) -> None:
    builds = [s for job in pr_check["jobs"].values() for s in uses(job, "docker/build-push-action")]
    assert builds, "pr-check.yml must build the image"
    for step in builds:
        assert step["with"].get("push") is False, "a pull request never pushes an image"


# ---- publish-image.yml ------------------------------------------------------------------


def test_publish_runs_on_main_and_by_hand(publish: dict[Any, Any]) -> None:
    on = triggers(publish)
    assert set(on) == {"push", "workflow_dispatch"}, on
    assert on["push"] == {"branches": ["main"]}


@pytest.fixture(scope="module")
def publish_job(publish: dict[Any, Any]) -> dict[str, Any]:
    (job,) = publish["jobs"].values()
    return job  # type: ignore[no-any-return]


def test_publish_may_write_packages(publish_job: dict[str, Any]) -> None:
    assert publish_job["permissions"] == {"contents": "read", "packages": "write"}


def test_docker_hub_login_is_skipped_without_its_secrets(publish_job: dict[str, Any]) -> None:
    logins = uses(publish_job, "docker/login-action")
    hub = [s for s in logins if "registry" not in s.get("with", {})]
    assert len(hub) == 1, "one optional Docker Hub login (no registry: Docker Hub)"
    condition = str(hub[0].get("if", ""))
    message = "the Docker Hub login must be skipped when the secrets are absent"
    assert "DOCKERHUB_USERNAME" in condition, message
    assert "!= ''" in condition, message
    steps_order = [str(s.get("uses", s.get("name"))) for s in steps(publish_job)]
    build = next(i for i, s in enumerate(steps_order) if s.startswith("docker/build-push-action"))
    assert steps_order.index(str(hub[0]["uses"])) < build


def test_publish_logs_in_to_ghcr_with_the_workflow_token(publish_job: dict[str, Any]) -> None:
    ghcr = [s for s in uses(publish_job, "docker/login-action") if s["with"].get("registry")]
    assert len(ghcr) == 1, "one login to GHCR"
    assert ghcr[0]["with"]["registry"] == "ghcr.io"
    assert ghcr[0]["with"]["password"] == "${{ secrets.GITHUB_TOKEN }}"
    assert uses(publish_job, "docker/setup-buildx-action"), "set up Buildx"


def test_publish_tags_latest_and_the_short_sha(publish_job: dict[str, Any]) -> None:
    (meta,) = uses(publish_job, "docker/metadata-action")
    assert meta["with"]["images"] == "ghcr.io/${{ github.repository_owner }}/runstate"
    tags = meta["with"]["tags"]
    assert re.search(r"type=raw,value=latest\b", tags), tags
    assert re.search(r"type=sha,prefix=sha-,format=short\b", tags), tags


def test_publish_pushes_with_the_metadata_and_the_gha_cache(publish_job: dict[str, Any]) -> None:
    (build,) = uses(publish_job, "docker/build-push-action")
    options = build["with"]
    meta_id = uses(publish_job, "docker/metadata-action")[0]["id"]
    assert options["push"] is True
    assert options["tags"] == f"${{{{ steps.{meta_id}.outputs.tags }}}}"
    assert options["labels"] == f"${{{{ steps.{meta_id}.outputs.labels }}}}"
    assert options["cache-from"] == "type=gha"
    assert options["cache-to"] == "type=gha,mode=max"
