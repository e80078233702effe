"""`python -m bench.compare BASELINE.json OTHER.json`: two runs' healthy monitors side by
side — throughput (checks started in the window per second, and as a share of those due)
and lateness — with OTHER's figures as ratios of BASELINE's. For the claim that hanging
targets do not slow the healthy ones down: run the same preset with `--hang-share 0` and
`--hang-share 0.02`, and compare."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def healthy_figures(results: dict[str, Any]) -> dict[str, float | None]:
    through, late = results["throughput"], results["lateness_ms"]
    due = through.get("healthy_offered_per_s")
    done = through.get("healthy_checks_per_s")
    return {
        "healthy_checks_per_s": done,
        "share_of_due": done / due if done is not None and due else None,
        "p50_lateness_ms": late["p50"],
        "p99_lateness_ms": late["p99"],
        "missed": results["missed"]["missed_answering"],
        "false_down": results["false_down"]["in_window"],
    }


def _cell(value: float | None) -> str:
    return "na" if value is None else f"{value:,.3f}"


def table(baseline: dict[str, Any], other: dict[str, Any]) -> str:
    a, b = healthy_figures(baseline), healthy_figures(other)
    lines = [
        f"baseline: `{baseline['summary']}`",
        f"other: `{other['summary']}`",
        "",
        "| healthy monitors | baseline | other | other ÷ baseline |",
        "|---|---:|---:|---:|",
    ]
    for name in a:
        x, y = a[name], b[name]
        ratio = y / x if x and y is not None else None
        lines.append(f"| {name} | {_cell(x)} | {_cell(y)} | {_cell(ratio)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("baseline", type=Path)
    parser.add_argument("other", type=Path)
    args = parser.parse_args()
    print(table(json.loads(args.baseline.read_text()), json.loads(args.other.read_text())))


if __name__ == "__main__":
    main()
