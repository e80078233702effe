"""`--profile`: sample the pipeline's processes with py-spy over the measured window and
summarise where their CPU went (py-spy skips idle threads, so a sample is CPU spent).

py-spy is not a dependency of the project: install it (`pip install py-spy`, into the venv
or anywhere on PATH) or name it with BENCH_PY_SPY. Without it `--profile` only says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_LINE = re.compile(r":\d+\)$")


def find_py_spy() -> str | None:
    named = os.environ.get("BENCH_PY_SPY")
    if named:
        return named
    beside = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside) if beside.is_file() else None)


@dataclass
class Recording:
    name: str
    output: Path
    process: asyncio.subprocess.Process


async def start(
    binary: str, targets: dict[str, int], seconds: float, directory: Path
) -> list[Recording]:
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    recordings = []
    for name, pid in targets.items():
        output = directory / f"{name}.txt"
        process = await asyncio.create_subprocess_exec(
            binary,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(int(seconds), 1)),
            "--rate",
            "100",
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(output),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        recordings.append(Recording(name, output, process))
    return recordings


def _frame(raw: str) -> str:
    return _LINE.sub(")", raw.strip())


# Frames that only wrap the whole process (the CLI, the event loop's entry): every sample
# passes through them, so they say nothing about where the time goes.
_WRAPPERS = ("runstate/cli.py", "runstate/__main__.py", "runstate/runtime.py")
# The event loop's own frame: its self time is uvloop's native code (polling, I/O syscalls,
# callbacks' scheduling), which py-spy without --native cannot see into.
_LOOP_FRAME = "Runner.run (asyncio/runners.py)"


def _package(frame: str) -> str:
    if frame == _LOOP_FRAME:
        return "event loop (uvloop, native I/O)"
    where = frame[frame.rfind("(") + 1 : -1]
    top = where.split("/", 1)[0]
    return top.removesuffix(".py") if "/" in where else f"stdlib {top.removesuffix('.py')}"


def summarise(path: Path, top: int = 15) -> dict[str, Any]:
    """Shares of all samples: by package of the leaf frame, by leaf frame (self), and by
    runstate's own frames anywhere on the stack (inclusive)."""
    own: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";")]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        packages[_package(frames[-1])] += count
        for frame in set(frames):
            if "(runstate/" in frame and not frame.endswith(tuple(w + ")" for w in _WRAPPERS)):
                inclusive[frame] += count

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(frame, round(100 * n / total, 1)) for frame, n in counter.most_common(top)]

    return {
        "samples": total,
        "self_by_package_pct": shares(packages),
        "self_pct": shares(own),
        "runstate_inclusive_pct": shares(inclusive),
    }


async def finish(recordings: list[Recording], seconds: float) -> dict[str, Any]:
    profiles: dict[str, Any] = {}
    for recording in recordings:
        try:
            _, errors = await asyncio.wait_for(recording.process.communicate(), seconds + 60)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                recording.process.kill()
            profiles[recording.name] = {"error": "py-spy did not finish"}
            continue
        if recording.process.returncode != 0 or not recording.output.is_file():
            profiles[recording.name] = {"error": errors.decode(errors="replace")[-500:]}
            continue
        profiles[recording.name] = {"raw": str(recording.output), **summarise(recording.output)}
    return profiles
