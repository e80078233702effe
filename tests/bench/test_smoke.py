"""The benchmark harness (bench/) runs its smoke preset end to end: a check of the harness,
not of the numbers it reports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

ROOT = Path(__file__).resolve().parents[2]
NUMBER = r"(\d+(?:\.\d+)?|na)"
SUMMARY = re.compile(
    rf"summary preset=smoke monitors=(\d+) checks_per_s={NUMBER} p99_lateness_ms={NUMBER}"
    rf" missed=(\d+) ratio_vs_client_ceiling={NUMBER} ratio_vs_blackbox={NUMBER}"
)
# The bench's own Redis database: 15 is the unit tests', 14 the integration tests'.
BENCH_REDIS_DB = 13


async def _bench_databases(admin_url: str, run_id: str) -> list[str]:
    connection = await asyncpg.connect(admin_url)
    try:
        rows = await connection.fetch(
            "SELECT datname FROM pg_database WHERE datname = $1", f"runstate_bench_{run_id}"
        )
    finally:
        await connection.close()
    return [row[0] for row in rows]


@pytest.fixture
def smoke_run(
    postgres_admin_url: str, redis_url: str, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    bench_redis = urlunsplit(urlsplit(redis_url)._replace(path=f"/{BENCH_REDIS_DB}"))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--preset",
            "smoke",
            "--postgres-url",
            postgres_admin_url,
            "--redis-url",
            bench_redis,
            "--results-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


async def test_smoke_preset_runs_end_to_end_and_prints_its_summary_last(
    smoke_run: subprocess.CompletedProcess[str], postgres_admin_url: str, tmp_path: Path
) -> None:
    assert smoke_run.returncode == 0, smoke_run.stderr[-4000:]
    last = smoke_run.stdout.strip().splitlines()[-1]
    match = SUMMARY.fullmatch(last)
    assert match, f"the last line is not the summary: {last!r}"
    assert int(match[1]) == 300
    assert float(match[2]) > 0, "no check was recorded"

    (md,) = tmp_path.glob("smoke-*.md")
    (js,) = tmp_path.glob("smoke-*.json")
    results = json.loads(js.read_text())
    assert results["summary"] == last
    assert last in md.read_text()
    # Every stage was measured: checks recorded, targets flipped and their incidents and
    # webhooks seen, the client ceiling driven.
    assert results["throughput"]["checks_recorded"] > 0
    assert results["latency_ms"]["flips"] > 0
    assert results["latency_ms"]["detection"]["n"] > 0
    assert results["latency_ms"]["webhooks_received"] > 0
    assert results["peers"]["client_ceiling"]["done"] > 0
    kinds = {row["kind"] for row in results["processes"]}
    assert {"scheduler", "worker-monitoring", "worker-status-change"} <= kinds
    # The scratch database is dropped at the end.
    assert await _bench_databases(postgres_admin_url, results["run_id"]) == []
