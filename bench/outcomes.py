"""What each monitor should have shown, against what it did.

- **Healthy** monitors (answering targets never flipped during the run) must never come out
  DOWN: each such check is a *false DOWN*, counted from `website_checks` with its error,
  in the window and before it (the start-up, when every monitor is first checked at once).
- **Failing** monitors (the realistic farm's failure mix) are judged per kind: how many
  checks, how many DOWN and with which errors, and whether every due check ran. Their
  checks end late by design (a timeout, a slow answer) and a failed check records no
  response time, so the start-on-grid rule for lateness does not apply: a due check counts
  as run when a check of that monitor ended within one interval plus its timeout (and a
  second's slack) after the due time, each check counting for one due time only.
"""

from __future__ import annotations

import bisect
import re
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.farm.base import Farm
from bench.measure import slot_range
from bench.store import CheckRow, DownRow
from runstate.pipeline.schedule import phase_ms

_SLACK_MS = 1_000


@dataclass(frozen=True)
class Roles:
    answering: list[uuid.UUID]  # healthy targets, flipped or not: the grid applies
    healthy: list[uuid.UUID]  # of which never flipped: expected UP throughout
    failing: dict[str, list[uuid.UUID]]  # by failure kind

    @classmethod
    def of(cls, farm: Farm, website_ids: Sequence[uuid.UUID], flipped: set[uuid.UUID]) -> Roles:
        answering = [website_ids[i] for i in farm.healthy()]
        failing: dict[str, list[uuid.UUID]] = {}
        for i, website_id in enumerate(website_ids):
            category = farm.category(i)
            if category != "up":
                failing.setdefault(category, []).append(website_id)
        healthy = [m for m in answering if m not in flipped]
        return cls(answering, healthy, failing)


def _error_kind(error: str | None) -> str:
    """An error message with the host names and ports taken out, to count alike ones."""
    text = re.sub(r"\bm\d+\.", "m<i>.", error or "(no error recorded)")
    return re.sub(r"\bport \d+", "port <p>", text)


def false_down(
    down_rows: Iterable[DownRow], healthy: Iterable[uuid.UUID], window_start: float
) -> dict[str, Any]:
    quiet = set(healthy)
    found = sorted((r for r in down_rows if r[0] in quiet), key=lambda r: r[1])
    in_window = [r for r in found if r[1].timestamp() >= window_start]
    return {
        "healthy_monitors": len(quiet),
        "in_window": len(in_window),
        "before_window": len(found) - len(in_window),
        "errors": dict(Counter(_error_kind(r[2]) for r in found).most_common(5)),
        "examples": [
            {"website_id": str(r[0]), "at": r[1].isoformat(), "error": r[2]} for r in found[:5]
        ],
    }


def _missed(
    ends_ms: list[float], phase: int, interval_ms: int, window: tuple[float, float], grace_ms: float
) -> tuple[int, int]:
    """(due, missed) for one monitor: due times in [start, end - interval), each taking the
    first unused check that ended within ``grace_ms`` after it."""
    due = slot_range(phase, interval_ms, window[0] * 1000, window[1] * 1000 - interval_ms)
    missed, next_free = 0, 0
    for k in due:
        due_ms = phase + k * interval_ms
        j = max(bisect.bisect_left(ends_ms, due_ms), next_free)
        if j < len(ends_ms) and ends_ms[j] < due_ms + grace_ms:
            next_free = j + 1
        else:
            missed += 1
    return len(due), missed


def failing_outcomes(
    roles: Roles,
    rows: Iterable[CheckRow],
    down_rows: Iterable[DownRow],
    window: tuple[float, float],
    interval_seconds: int,
    timeout_ms: int,
) -> dict[str, dict[str, Any]]:
    """Per failure kind: monitors, checks ended in the window, of which DOWN, the commonest
    errors, and due checks missed."""
    kind_of = {m: kind for kind, ids in roles.failing.items() for m in ids}
    ends: dict[uuid.UUID, list[float]] = {m: [] for m in kind_of}
    for website_id, created_at, _ in rows:
        if website_id in ends:
            ends[website_id].append(created_at.timestamp() * 1000)
    downs: dict[str, Counter[str]] = {kind: Counter() for kind in roles.failing}
    for website_id, created_at, error in down_rows:
        kind = kind_of.get(website_id)
        if kind is not None and window[0] <= created_at.timestamp() < window[1]:
            downs[kind][_error_kind(error)] += 1
    interval_ms = interval_seconds * 1000
    grace_ms = interval_ms + timeout_ms + _SLACK_MS
    out: dict[str, dict[str, Any]] = {}
    for kind, ids in roles.failing.items():
        due = missed = checks = 0
        for m in ids:
            times = sorted(ends[m])
            checks += sum(1 for t in times if window[0] * 1000 <= t < window[1] * 1000)
            d, x = _missed(times, phase_ms(m, interval_ms), interval_ms, window, grace_ms)
            due, missed = due + d, missed + x
        out[kind] = {
            "monitors": len(ids),
            "checks": checks,
            "down": sum(downs[kind].values()),
            "errors": dict(downs[kind].most_common(3)),
            "due": due,
            "missed": missed,
        }
    return out


def lines(farm: dict[str, Any], false: dict[str, Any], failing: dict[str, Any]) -> list[str]:
    """The report's section on what the monitors showed."""
    out = [
        f"**False DOWN among healthy monitors** ({false['healthy_monitors']:,} answering"
        f" targets never flipped): **{false['in_window']}** in the window,"
        f" {false['before_window']} before it (start-up).",
    ]
    for example in false["examples"]:
        out.append(f"- `{example['website_id'][:8]}…` at {example['at']}: {example['error']}")
    out.append("")
    if "targets" in farm:
        targets = ", ".join(f"{kind} {n:,}" for kind, n in farm["targets"].items())
        out += [
            f"Targets: {targets} (https: {farm['https_share']:.1%});"
            f" DNS server for runstate {farm['dns_server']}.",
            "",
        ]
    if failing:
        out += [
            "| failure kind | monitors | checks ended in the window | DOWN | due | missed |"
            " commonest errors |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for kind, f in failing.items():
            errors = "; ".join(f"{text} (x{n})" for text, n in f["errors"].items())
            out.append(
                f"| {kind} | {f['monitors']:,} | {f['checks']:,} | {f['down']:,} |"
                f" {f['due']:,} | {f['missed']:,} | {errors} |"
            )
        out += [
            "",
            "A failing monitor's due check counts as run when one of its checks ended within"
            " one interval plus the timeout (and 1 s) of the due time.",
            "",
        ]
    return out
