"""The delivery files (Dockerfile, Compose files, env examples, workflows, Git hook) proven
offline, without a Docker engine or the network, with the linters installed in the venv.

Shared helpers live here; each ``test_*.py`` covers one kind of file.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_LOCAL = ROOT / "docker-compose.yml"
COMPOSE_EXTERNAL = ROOT / "docker-compose.external.yml"
ENV_LOCAL_EXAMPLE = ROOT / ".env.local.example"
ENV_EXAMPLE = ROOT / ".env.example"
WORKFLOWS = ROOT / ".github" / "workflows"
PR_CHECK = WORKFLOWS / "pr-check.yml"
PUBLISH_IMAGE = WORKFLOWS / "publish-image.yml"
HOOK = ROOT / ".githooks" / "pre-commit"
PRE_COMMIT_CONFIG = ROOT / ".pre-commit-config.yaml"
DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"

# Values for the required variables of external mode, as a user would put them in .env.
EXTERNAL_REQUIRED = {
    "DATABASE_URL": "postgresql://app:secret@db.example.com/runstate?sslmode=require",
    "REDIS_URL": "rediss://default:secret@cache.example.com:6379",
    "JWT_SECRET": "x" * 48,
}


def tool(name: str) -> Path:
    """A linter installed next to this interpreter (the dev dependencies of uv.lock)."""
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed in {BIN}: run `make install` (uv sync --frozen)")
    return path


def run(*args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output as text, never raising on a non-zero exit."""
    kwargs.setdefault("cwd", ROOT)
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def clean_env(**extra: str) -> dict[str, str]:
    """A minimal environment: nothing of the caller's (DATABASE_URL, a real .env…) leaks in."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    env.update(extra)
    return env


def compose_config(
    compose_file: Path, project_dir: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` by the real Compose implementation (needs no daemon), with
    ``project_dir`` as the project directory: where it looks for .env and the env_files."""
    return run(
        tool("docker-compose"),
        "--file",
        compose_file,
        "--project-directory",
        project_dir,
        "config",
        "--format",
        "json",
        env=clean_env(**(env or {})),
    )


def resolved(
    compose_file: Path, project_dir: Path, env: dict[str, str] | None = None
) -> dict[str, Any]:
    result = compose_config(compose_file, project_dir, env)
    assert result.returncode == 0, f"{compose_file.name} does not resolve:\n{output(result)}"
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as file:
        return yaml.safe_load(file)


# ---- Dockerfile -------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arguments for kw, arguments in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"no {keyword} instruction in the stage FROM {self.base}"
        return found[-1]


def dockerfile_stages(path: Path = DOCKERFILE) -> list[Stage]:
    """The Dockerfile's stages, each a list of (INSTRUCTION, arguments), continuation lines
    joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        keyword = keyword.upper()
        arguments = arguments.strip()
        if keyword == "FROM":
            words = arguments.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, arguments))
    return stages


def exec_form(arguments: str) -> list[str]:
    """The JSON array of an exec-form instruction (ENTRYPOINT, CMD, HEALTHCHECK CMD)."""
    start = arguments.index("[")
    value = json.loads(arguments[start:])
    assert isinstance(value, list), arguments
    return [str(item) for item in value]


def image_env(stage: Stage) -> dict[str, str]:
    """The ENV of the runtime stage, as a container sees it (PATH left out)."""
    env: dict[str, str] = {}
    for arguments in stage.all("ENV"):
        for word in shlex.split(arguments):
            name, sep, value = word.partition("=")
            assert sep, f"use ENV NAME=value, not the legacy form: ENV {arguments}"
            env[name] = value
    env.pop("PATH", None)
    return env


# ---- env files --------------------------------------------------------------------------

ASSIGNMENT = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")


@dataclass
class EnvLine:
    number: int
    name: str
    value: str
    commented: bool
    explanation: str | None


def env_example_lines(path: Path) -> list[EnvLine]:
    """The variable lines of an env example, set (`NAME=value`) or shown commented out
    (`# NAME=value`), each with the comment line just above it, if any."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[EnvLine] = []
    for index, line in enumerate(lines):
        match = ASSIGNMENT.match(line)
        if not match:
            continue
        previous = lines[index - 1] if index else ""
        is_comment = previous.startswith("#") and not ASSIGNMENT.match(previous)
        explanation = previous.lstrip("#").strip() if is_comment else None
        found.append(
            EnvLine(
                number=index + 1,
                name=match.group(2),
                value=match.group(3),
                commented=match.group(1) is not None,
                explanation=explanation or None,
            )
        )
    return found


def locked_version(package: str) -> str:
    lock = tomllib.loads((ROOT / "uv.lock").read_text(encoding="utf-8"))
    for entry in lock["package"]:
        if entry["name"] == package:
            return str(entry["version"])
    raise AssertionError(f"{package} is not in uv.lock")
