"""The pre-commit hook, run for real by `git commit` in a scratch repository: it formats
the staged Python files, re-stages only those and leaves every other file alone."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.delivery import (
    BIN,
    DEPLOYMENT_DOC,
    HOOK,
    PRE_COMMIT_CONFIG,
    load_yaml,
    locked_version,
    output,
    run,
    tool,
)

BADLY_FORMATTED = "def add( a,b ):\n  return a+b\n"
FORMATTED = "def add(a, b):\n    return a + b\n"


def test_shellcheck_reports_nothing() -> None:
    result = run(tool("shellcheck"), "--shell=bash", "--severity=style", HOOK)
    assert result.returncode == 0, output(result)


def test_hook_is_executable() -> None:
    assert os.access(HOOK, os.X_OK), f"chmod +x {HOOK.relative_to(HOOK.parents[1])}"


def test_hook_never_stages_everything() -> None:
    lines = HOOK.read_text(encoding="utf-8").splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    for sweeping in ("git add .", "git add -A", "git add --all", "git add -u", "commit -a"):
        assert sweeping not in text, f"the hook must not run `{sweeping}`"


def test_activation_is_documented() -> None:
    command = "git config core.hooksPath .githooks"
    assert command in HOOK.read_text(encoding="utf-8")
    assert command in DEPLOYMENT_DOC.read_text(encoding="utf-8")


def test_pre_commit_framework_config_uses_the_locked_ruff() -> None:
    config = load_yaml(PRE_COMMIT_CONFIG)
    (ruff,) = [r for r in config["repos"] if r["repo"].endswith("/ruff-pre-commit")]
    assert ruff["rev"] == f"v{locked_version('ruff')}", (
        f".pre-commit-config.yaml runs ruff {ruff['rev']}, uv.lock has {locked_version('ruff')}"
    )
    assert [hook["id"] for hook in ruff["hooks"]] == ["ruff-check", "ruff-format"]


class Repo:
    """A scratch Git repository using the project's hook, isolated from any user config."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.env = {
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(path),
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "Test",
            "GIT_AUTHOR_EMAIL": "test@example.com",
            "GIT_COMMITTER_NAME": "Test",
            "GIT_COMMITTER_EMAIL": "test@example.com",
        }
        self.git("init", "--quiet", "--initial-branch=main")
        hooks = path / ".githooks"
        hooks.mkdir()
        shutil.copy2(HOOK, hooks / "pre-commit")
        self.git("config", "core.hooksPath", ".githooks")

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = run("git", *args, cwd=self.path, env=self.env)
        if check:
            assert result.returncode == 0, f"git {' '.join(args)}:\n{output(result)}"
        return result

    def write(self, name: str, text: str) -> None:
        (self.path / name).write_text(text)

    def read(self, name: str) -> str:
        return (self.path / name).read_text()

    def committed(self, name: str) -> str:
        return self.git("show", f"HEAD:{name}").stdout

    def staged(self, name: str) -> str:
        return self.git("show", f":{name}").stdout


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    if shutil.which("git") is None:
        pytest.fail("git is needed to test the pre-commit hook")
    repo = Repo(tmp_path)
    repo.write("unstaged.py", "x = 1\n")
    repo.write("partial.py", "y = 2\n")
    repo.git("add", ".githooks", "unstaged.py", "partial.py")
    repo.git("commit", "--quiet", "--no-verify", "-m", "base")
    return repo


def test_formats_the_staged_file_and_leaves_the_others_alone(repo: Repo) -> None:
    repo.write("staged file.py", BADLY_FORMATTED)  # a space in the name, too
    repo.write("unstaged.py", "x   =   1\n")  # modified, not staged
    repo.write("untracked.py", "z   =   3\n")
    repo.git("add", "staged file.py")

    commit = repo.git("commit", "--quiet", "-m", "add", check=False)

    assert commit.returncode == 0, f"the hook refused a fixable commit:\n{output(commit)}"
    assert repo.committed("staged file.py") == FORMATTED, "the commit holds the unformatted file"
    assert repo.read("staged file.py") == FORMATTED, "the working file must match the commit"
    assert repo.read("unstaged.py") == "x   =   1\n", "the hook touched an unstaged file"
    assert repo.committed("unstaged.py") == "x = 1\n", "an unstaged change was committed"
    assert repo.read("untracked.py") == "z   =   3\n", "the hook touched an untracked file"
    status = repo.git("status", "--porcelain").stdout.splitlines()
    assert sorted(status) == [" M unstaged.py", "?? untracked.py"], status


def test_autofixes_lint_on_the_staged_file(repo: Repo) -> None:
    repo.write("imports.py", "import os\nimport sys\n\nprint(sys.argv)\n")
    repo.git("add", "imports.py")
    commit = repo.git("commit", "--quiet", "-m", "imports", check=False)
    assert commit.returncode == 0, output(commit)
    assert "import os" not in repo.committed("imports.py"), "ruff check --fix was not applied"


def test_stops_a_commit_with_a_lint_error_it_cannot_fix(repo: Repo) -> None:
    repo.write("broken.py", "print(undefined_name)\n")
    repo.git("add", "broken.py")
    commit = repo.git("commit", "--quiet", "-m", "broken", check=False)
    assert commit.returncode != 0, "a commit with an undefined name went through"
    assert "F821" in commit.stdout + commit.stderr, output(commit)
    assert repo.git("rev-list", "--count", "HEAD").stdout.strip() == "1"


def test_a_partly_staged_file_is_checked_not_swept_in(repo: Repo) -> None:
    repo.write("partial.py", "y  =  2\n")
    repo.git("add", "partial.py")
    repo.write("partial.py", "y  =  2\nw = 'not for this commit'\n")

    commit = repo.git("commit", "--quiet", "-m", "partial", check=False)

    assert commit.returncode != 0, "an unformatted partly staged file was committed"
    assert "unstaged changes" in commit.stderr, output(commit)
    assert repo.staged("partial.py") == "y  =  2\n", "the hook changed the staged content"
    assert repo.read("partial.py") == "y  =  2\nw = 'not for this commit'\n"


def test_a_clean_partly_staged_file_commits_without_its_unstaged_part(repo: Repo) -> None:
    repo.write("partial.py", "y = 3\n")
    repo.git("add", "partial.py")
    repo.write("partial.py", "y = 3\nw   =   4\n")
    commit = repo.git("commit", "--quiet", "-m", "partial", check=False)
    assert commit.returncode == 0, output(commit)
    assert repo.committed("partial.py") == "y = 3\n"
    assert repo.read("partial.py") == "y = 3\nw   =   4\n"


def test_nothing_to_do_without_staged_python(repo: Repo) -> None:
    repo.write("notes.txt", "not   python\n")
    repo.write("unstaged.py", "x   =   1\n")
    repo.git("add", "notes.txt")
    commit = repo.git("commit", "--quiet", "-m", "notes", check=False)
    assert commit.returncode == 0, output(commit)
    assert repo.read("unstaged.py") == "x   =   1\n"
