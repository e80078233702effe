"""Running `python -m bench` from a test, and what every run must have produced."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
NUMBER = r"(\d+(?:\.\d+)?|na)"


def run_bench(*args: str, results_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args, "--results-dir", str(results_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def check_run(
    run: subprocess.CompletedProcess[str], preset: str, monitors: int, results_dir: Path
) -> dict[str, Any]:
    """The run succeeded, printed its summary line last, wrote it into both reports, and
    measured every stage: checks recorded, targets flipped and their incidents and webhooks
    seen, the client ceiling driven. Returns the JSON report."""
    assert run.returncode == 0, run.stderr[-4000:]
    last = run.stdout.strip().splitlines()[-1]
    summary = re.compile(
        rf"summary preset={re.escape(preset)} monitors=(\d+) checks_per_s={NUMBER}"
        rf" p99_lateness_ms={NUMBER} missed=(\d+) ratio_vs_client_ceiling={NUMBER}"
        rf" ratio_vs_blackbox={NUMBER} farm=(?P<farm>realistic|lab) false_down=(\d+)"
        rf" cpu_ratio_vs_blackbox={NUMBER}"
    )
    match = summary.fullmatch(last)
    assert match, f"the last line is not the summary: {last!r}"
    assert int(match[1]) == monitors
    assert float(match[2]) > 0, "no check was recorded"

    (md,) = results_dir.glob(f"{preset}-*.md")
    (js,) = results_dir.glob(f"{preset}-*.json")
    results: dict[str, Any] = json.loads(js.read_text())
    assert results["summary"] == last
    assert last in md.read_text()
    assert results["throughput"]["checks_recorded"] > 0
    assert results["latency_ms"]["flips"] > 0
    assert results["latency_ms"]["detection"]["n"] > 0
    assert results["latency_ms"]["webhooks_received"] > 0
    assert results["peers"]["client_ceiling"]["done"] > 0
    assert results["config"]["farm_details"]["farm"] == match["farm"]
    return results


def check_realistic_farm(results: dict[str, Any]) -> None:
    """The run was on the realistic farm, and runstate met each of its failure kinds through
    the farm's DNS server and CA: every failing monitor was checked and came out DOWN, and
    the healthy ones (https, verified against the bench CA) were checked too."""
    farm = results["config"]["farm_details"]
    assert farm["farm"] == "realistic"
    assert farm["https_share"] >= 0.9
    assert set(results["failing"]) == {"slow", "blackhole", "refused", "nxdomain", "dns_hang"}
    for kind in ("blackhole", "refused", "nxdomain", "dns_hang"):
        assert results["failing"][kind]["down"] > 0, kind
    assert "DNS" in " ".join(results["failing"]["nxdomain"]["errors"])
    assert results["false_down"]["healthy_monitors"] > 0
    assert results["lateness_ms"]["n"] > 0
