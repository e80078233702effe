"""What a check costs in CPU, summed by side: runstate's own processes (the pipeline, or
`runstate up`), the services it needs (PostgreSQL, Redis: distributed mode), the farm
(nginx, DNS, the slow server: shown apart, it is the targets' work, not runstate's), and
the rest (the webhook receiver, the harness). In milliseconds per check, which is CPU
seconds per 1,000 checks."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bench.procs import Usage


def _side(usage: list[Usage], kinds: Iterable[str], checks: int, seconds: float) -> dict[str, Any]:
    chosen = set(kinds)
    cpu = sum(u.cpu_seconds for u in usage if u.kind in chosen)
    return {
        "kinds": sorted(chosen & {u.kind for u in usage}),
        "cpu_seconds": round(cpu, 3),
        "ms_per_check": cpu * 1000 / checks if checks else None,
        "cores": cpu / seconds if seconds else None,
    }


def totals(
    usage: list[Usage],
    *,
    runstate: Iterable[str],
    services: Iterable[str],
    farm: Iterable[str],
    checks: int,
    seconds: float,
) -> dict[str, Any]:
    runstate, services, farm = list(runstate), list(services), list(farm)
    rest = [u.kind for u in usage if u.kind not in {*runstate, *services, *farm}]
    return {
        "runstate": _side(usage, runstate, checks, seconds),
        "runstate_with_services": _side(usage, [*runstate, *services], checks, seconds),
        "farm": _side(usage, farm, checks, seconds),
        "rest": _side(usage, rest, checks, seconds),
    }


def _ms(value: float | None) -> str:
    return "na" if value is None else f"{value:.3f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def blackbox_ratios(cost: dict[str, Any], blackbox: dict[str, Any] | None) -> dict[str, Any]:
    """The exporter's CPU per probe against runstate's per check (≥ 1: runstate spends no
    more), and the farm's CPU per probe in the exporter's turn against per check in
    runstate's."""
    if not blackbox or not blackbox.get("done"):
        return {}
    per_probe = blackbox["watched_cpu_seconds"] * 1000 / blackbox["done"]
    farm_per_probe = sum(blackbox.get("farm_cpu_seconds", {}).values()) * 1000 / blackbox["done"]
    return {
        "exporter_ms_per_probe": per_probe,
        "farm_ms_per_probe": farm_per_probe,
        "vs_runstate_all_processes": _ratio(
            per_probe, cost["runstate_with_services"]["ms_per_check"]
        ),
        "vs_runstate_alone": _ratio(per_probe, cost["runstate"]["ms_per_check"]),
    }


def lines(cost: dict[str, Any], ratios: dict[str, Any]) -> list[str]:
    labels = {
        "runstate": "runstate's own processes",
        "runstate_with_services": "runstate with PostgreSQL and Redis (all its processes)",
        "farm": "the farm (targets, DNS): apart, not runstate's",
        "rest": "the rest (webhook receiver, harness)",
    }
    out = ["| CPU by side | ms / check | cores | process kinds |", "|---|---:|---:|---|"]
    for key, label in labels.items():
        side = cost[key]
        cores = "na" if side["cores"] is None else f"{side['cores']:.2f}"
        out.append(
            f"| {label} | {_ms(side['ms_per_check'])} | {cores} | {', '.join(side['kinds'])} |"
        )
    out.append("")
    if ratios:
        out += [
            f"The blackbox exporter spent **{_ms(ratios['exporter_ms_per_probe'])} ms per probe**"
            f" (the farm {_ms(ratios['farm_ms_per_probe'])} ms per probe meanwhile): that ÷"
            " runstate's CPU per check over all its processes ="
            f" **{_fmt(ratios['vs_runstate_all_processes'])}**, over its own processes alone"
            f" = {_fmt(ratios['vs_runstate_alone'])} (≥ 1: runstate spends no more per check).",
            "",
        ]
    return out


def _fmt(value: float | None) -> str:
    return "na" if value is None else f"{value:.2f}"
