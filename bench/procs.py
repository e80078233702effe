"""The child processes of a run, and what /proc says about their CPU time and memory.

No psutil: CPU seconds are `utime + stime` from /proc/<pid>/stat and the peak resident set
is `VmHWM` from /proc/<pid>/status, which is all the report needs (Linux only).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


class BenchError(RuntimeError):
    """The run cannot go on; ``str(error)`` says why in one line (plus a log tail)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of one process; None when it is gone."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the name may hold spaces and parentheses
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _status_kib(pid: int, name: str) -> int | None:
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_kib(pid: int) -> int | None:
    """The peak resident set size (VmHWM) of one process; None when it is gone."""
    return _status_kib(pid, "VmHWM")


def rss_kib(pid: int) -> int | None:
    """The resident set size (VmRSS) of one process now; None when it is gone."""
    return _status_kib(pid, "VmRSS")


def _all_processes() -> Iterable[tuple[int, int, str, str]]:
    """(pid, ppid, comm, cmdline) of every process we can read."""
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        yield int(entry.name), ppid, comm, cmdline.strip()


def with_descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (nginx's workers, for instance)."""
    children: dict[int, list[int]] = {}
    for child, parent, _, _ in _all_processes():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def postgres_pids(database: str) -> dict[str, list[int]]:
    """The server's processes by role: the client backends connected to ``database``, the
    autovacuum workers busy in it, and the background processes every database shares
    (checkpointer, WAL writer, …)."""
    found: dict[str, list[int]] = {"backends": [], "autovacuum": [], "background": []}
    for pid, _, comm, cmdline in _all_processes():
        if comm != "postgres" and not cmdline.startswith("postgres"):
            continue
        if f" {database} " in f"{cmdline} ":
            role = "autovacuum" if "autovacuum worker" in cmdline else "backends"
            found[role].append(pid)
        elif "(" not in cmdline and "[local]" not in cmdline and "worker" not in cmdline:
            found["background"].append(pid)  # not another database's backend or worker
    return found


def pids_named(name: str) -> list[int]:
    return [pid for pid, _, comm, _ in _all_processes() if comm == name]


@dataclass
class Child:
    kind: str
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Children:
    """Every process the run started, stopped in reverse order at the end, whatever happens."""

    log_dir: Path
    started: list[Child] = field(default_factory=list)

    def start(
        self, kind: str, name: str, argv: list[str], env: Mapping[str, str] | None = None
    ) -> Child:
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(  # noqa: S603 - argv built by the harness
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                start_new_session=True,  # a Ctrl-C on the harness does not hit them first
            )
        child = Child(kind, name, popen, log_path)
        self.started.append(child)
        return child

    def of_kind(self, kind: str) -> list[Child]:
        return [c for c in self.started if c.kind == kind and c.alive()]

    def ensure_alive(self, kinds: Iterable[str]) -> None:
        for child in self.started:
            if child.kind in kinds and not child.alive():
                raise BenchError(
                    f"{child.name} exited with code {child.popen.returncode}:\n{child.log_tail()}"
                )

    def stop(self, child: Child, timeout: float = 15.0, sig: int = signal.SIGTERM) -> None:
        if child.alive():
            child.popen.send_signal(sig)
            try:
                child.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                child.popen.kill()
                child.popen.wait(5)

    def stop_many(self, children: list[Child], timeout: float = 15.0) -> None:
        """SIGTERM all of them at once, then wait for each (killing the ones that hang)."""
        for child in children:
            if child.alive():
                child.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in children:
            try:
                child.popen.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                child.popen.kill()
                child.popen.wait(5)

    def stop_all(self) -> None:
        self.stop_many(list(reversed(self.started)), timeout=20.0)


def _cause(traceback: object) -> str:
    """The exception line of a logged traceback (SQLAlchemy adds a link line after it)."""
    lines = [line for line in str(traceback or "").splitlines() if line and line[0] != " "]
    causes = [line for line in lines if not line.startswith(("(Background", "[SQL", "Traceback"))]
    return causes[-1] if causes else ""


def log_digest(child: Child) -> dict[str, Any]:
    """From a runstate process's JSON log: its last heartbeat's consumer counters (handled,
    retried, dead-lettered, reclaimed) and its warnings and errors."""
    heartbeat: Any = None
    problems: Counter[str] = Counter()
    examples: dict[str, str] = {}
    try:
        lines = child.log_path.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        # `runstate up` logs the API's heartbeat too, which has no consumers.
        if entry.get("msg") == "heartbeat" and "consumers" in entry:
            heartbeat = entry["consumers"]
        if entry.get("level") in ("warning", "error", "critical"):
            key = f"{entry['level']}: {entry.get('msg')}"
            problems[key] += 1
            examples.setdefault(key, str(entry.get("error") or _cause(entry.get("exc"))))
    return {
        "consumers": heartbeat,
        "warnings_and_errors": sum(problems.values()),
        "messages": dict(problems.most_common(5)),
        "examples": {key: examples[key][:300] for key, _ in problems.most_common(5)},
    }


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy (not idle, not waiting on I/O)."""
    fields = [int(v) for v in (PROC / "stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / CLK_TCK


PidGroups = Mapping[str, Callable[[], list[int]]]


@dataclass
class Usage:
    """CPU seconds and peak memory of one kind of process over a window."""

    kind: str
    processes: int
    cpu_seconds: float
    peak_rss_kib_max: int
    peak_rss_kib_sum: int


def cpu_snapshot(groups: PidGroups) -> dict[str, dict[int, float]]:
    snapshot: dict[str, dict[int, float]] = {}
    for kind, pids in groups.items():
        seconds = {pid: cpu_seconds(pid) for pid in pids()}
        snapshot[kind] = {pid: s for pid, s in seconds.items() if s is not None}
    return snapshot


def usage_between(
    before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]
) -> list[Usage]:
    """Per kind: CPU spent between the snapshots (a process born in between counts from its
    start) and the peak RSS of its processes now."""
    usages = []
    for kind, now in after.items():
        then = before.get(kind, {})
        cpu = sum(max(seconds - then.get(pid, 0.0), 0.0) for pid, seconds in now.items())
        peaks = [p for p in (peak_rss_kib(pid) for pid in now) if p is not None]
        usages.append(Usage(kind, len(now), cpu, max(peaks, default=0), sum(peaks)))
    return usages
