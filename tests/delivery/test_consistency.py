"""The delivery files agree with the code: every container runs a real `runstate`
sub-command, every variable they mention is a setting the code knows (the `Settings` class
is the source of truth) and every setting is explained in both env examples, with the value
the containers really use."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command

from runstate.cli import app
from runstate.settings import SECRET_SETTINGS, Settings
from tests.delivery import (
    COMPOSE_EXTERNAL,
    COMPOSE_LOCAL,
    DEPLOYMENT_DOC,
    ENV_EXAMPLE,
    ENV_LOCAL_EXAMPLE,
    EXTERNAL_REQUIRED,
    PR_CHECK,
    EnvLine,
    dockerfile_stages,
    env_example_lines,
    exec_form,
    image_env,
    load_yaml,
    resolved,
)

SETTINGS = set(Settings.model_fields)
KNOWN = SETTINGS | {f"{name}_FILE" for name in SECRET_SETTINGS}
COMPOSE_FILES = [COMPOSE_LOCAL, COMPOSE_EXTERNAL]
ENV_EXAMPLES = [ENV_LOCAL_EXAMPLE, ENV_EXAMPLE]
# Each env example documents the containers of one compose file.
MODES = {ENV_LOCAL_EXAMPLE: COMPOSE_LOCAL, ENV_EXAMPLE: COMPOSE_EXTERNAL}
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")


def ids(path: Path) -> str:
    return path.name


def runstate_services(compose_file: Path) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = load_yaml(compose_file)["services"]
    return {name: s for name, s in services.items() if "build" in s}


@pytest.fixture(autouse=True)
def no_settings_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KNOWN:
        monkeypatch.delenv(name, raising=False)


# ---- commands ---------------------------------------------------------------------------


def resolve_command(words: list[str]) -> Any:
    """The `runstate` (sub-)command that ``words`` name, failing unless it is a leaf (a group
    has `commands`)."""
    command: Any = get_command(app)
    line = f"`runstate {' '.join(words)}`"
    for word in words:
        subcommands = getattr(command, "commands", None)
        assert subcommands is not None, f"{line}: {word!r} is one word too many"
        assert word in subcommands, f"{line}: no sub-command {word!r} in {sorted(subcommands)}"
        command = subcommands[word]
    assert getattr(command, "commands", None) is None, (
        f"{line} is a group, not a process: name one of its commands"
    )
    return command


@pytest.mark.parametrize("compose_file", COMPOSE_FILES, ids=ids)
def test_every_compose_service_runs_a_real_runstate_command(compose_file: Path) -> None:
    entrypoint = exec_form(dockerfile_stages()[-1].last("ENTRYPOINT"))
    assert entrypoint == ["runstate"]
    services = runstate_services(compose_file)
    assert services, f"no service of {compose_file.name} builds the runstate image"
    for name, service in services.items():
        assert "entrypoint" not in service, f"{name}: keep the image's `runstate` entrypoint"
        command = service.get("command")
        assert isinstance(command, list), f"{name}: give `command` as a list"
        assert command, f"{name}: no command"
        resolve_command([str(word) for word in command])


def test_every_process_of_the_contract_has_a_service() -> None:
    for compose_file in COMPOSE_FILES:
        commands = {" ".join(s["command"]) for s in runstate_services(compose_file).values()}
        assert commands == {
            "migrate",
            "api",
            "scheduler",
            "worker monitoring",
            "worker status-change",
            "worker notification",
        }, f"{compose_file.name}: {commands}"


# ---- variables --------------------------------------------------------------------------


@pytest.mark.parametrize("compose_file", COMPOSE_FILES, ids=ids)
def test_compose_files_mention_only_known_settings(compose_file: Path) -> None:
    text = compose_file.read_text(encoding="utf-8")
    unknown = set(INTERPOLATION.findall(text)) - KNOWN
    assert not unknown, f"{compose_file.name} interpolates variables runstate ignores: {unknown}"
    for name, service in load_yaml(compose_file)["services"].items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"{name}: write environment as a mapping"
        allowed = (
            {v for v in environment if v.startswith("POSTGRES_")} if name == "postgres" else KNOWN
        )
        unknown = set(environment) - allowed
        assert not unknown, f"{compose_file.name}/{name} sets variables runstate ignores: {unknown}"


def test_the_image_sets_only_known_settings() -> None:
    unknown = (
        set(image_env(dockerfile_stages()[-1]))
        - KNOWN
        - {"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}
    )
    assert not unknown, f"the Dockerfile sets variables runstate ignores: {unknown}"


@pytest.mark.parametrize("example", ENV_EXAMPLES, ids=ids)
def test_env_example_mentions_only_known_settings(example: Path) -> None:
    unknown = [
        f"line {line.number}: {line.name}"
        for line in env_example_lines(example)
        if line.name not in KNOWN
    ]
    assert not unknown, f"{example.name} mentions variables runstate ignores: {unknown}"


@pytest.mark.parametrize("example", ENV_EXAMPLES, ids=ids)
def test_env_example_mentions_every_setting_once(example: Path) -> None:
    names = [line.name for line in env_example_lines(example)]
    missing = sorted(SETTINGS - set(names))
    assert not missing, (
        f"{example.name} lacks these settings (runstate.settings.Settings): {missing}"
    )
    twice = sorted({name for name in names if names.count(name) > 1})
    assert not twice, f"{example.name} mentions these more than once: {twice}"


@pytest.mark.parametrize("example", ENV_EXAMPLES, ids=ids)
def test_every_variable_is_explained_in_one_line(example: Path) -> None:
    bare = [
        f"line {line.number}: {line.name}"
        for line in env_example_lines(example)
        if not line.explanation
    ]
    assert not bare, f"{example.name}: put a one-line comment above each variable: {bare}"


def validated(name: str, value: str) -> Any:
    """The value a process ends up with when ``name`` is set to ``value``."""
    others = {"JWT_SECRET": "x" * 48} if name != "JWT_SECRET" else {}
    return getattr(Settings(**{name: value, **others}), name)


def effective_values(example: Path, tmp_path: Path) -> dict[str, Any]:
    """What the runstate containers of the example's mode use when the example sets nothing:
    the compose file's environment, else the image's ENV, else the Settings default."""
    values: dict[str, Any] = {name: field.default for name, field in Settings.model_fields.items()}
    for name, value in image_env(dockerfile_stages()[-1]).items():
        if name in values:
            values[name] = validated(name, value)
    compose_file = MODES[example]
    external = compose_file == COMPOSE_EXTERNAL
    config = resolved(compose_file, tmp_path, env=EXTERNAL_REQUIRED if external else None)
    for name, value in config["services"]["api"]["environment"].items():
        if name not in values or (external and name in EXTERNAL_REQUIRED):
            continue  # not a setting, or this test's own stand-in for a required value
        values[name] = validated(name, value)
    return values


@pytest.mark.parametrize("example", ENV_EXAMPLES, ids=ids)
def test_commented_out_values_are_what_the_containers_use(example: Path, tmp_path: Path) -> None:
    effective = effective_values(example, tmp_path)
    wrong: list[str] = []
    shown: list[EnvLine] = [
        line for line in env_example_lines(example) if line.commented and line.value
    ]
    for line in shown:
        if line.name not in SETTINGS or (effective[line.name] is None):
            continue  # no default: the value is an example
        if validated(line.name, line.value) != effective[line.name]:
            wrong.append(
                f"line {line.number}: {line.name}={line.value}, "
                f"but the containers use {effective[line.name]!r}"
            )
    assert not wrong, f"{example.name}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("example", ENV_EXAMPLES, ids=ids)
def test_set_values_are_valid_settings(example: Path) -> None:
    for line in env_example_lines(example):
        if not line.commented and line.value and line.name in SETTINGS:
            validated(line.name, line.value)  # raises naming the setting


def test_external_example_leaves_the_secrets_to_fill_in() -> None:
    values = {line.name: line for line in env_example_lines(ENV_EXAMPLE)}
    for name in EXTERNAL_REQUIRED:
        message = f".env.example: `{name}=` must be set and empty: Compose stops until filled in"
        assert not values[name].commented, message
        assert values[name].value == "", message


# ---- documentation ----------------------------------------------------------------------


def test_deployment_doc_names_what_it_must() -> None:
    text = DEPLOYMENT_DOC.read_text(encoding="utf-8")
    for needle in (
        "ghcr.io/<owner>/runstate",
        "sha-",
        "latest",
        "--scale worker-monitoring=",
        "docker compose up -d --build",
        "docker compose -f docker-compose.external.yml up -d --build",
        "git config core.hooksPath .githooks",
    ):
        assert needle in text, f"docs/deployment.md does not mention {needle!r}"


def test_deployment_doc_names_the_required_status_checks() -> None:
    text = DEPLOYMENT_DOC.read_text(encoding="utf-8")
    for job in load_yaml(PR_CHECK)["jobs"].values():
        assert job["name"] in text, (
            f"docs/deployment.md must list the PR check job {job['name']!r} as a required check"
        )
