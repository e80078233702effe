"""The benchmark harness (bench/) runs its smoke preset end to end on the realistic farm
(names on a local dnsmasq, https on nginx, the failure mix): a check of the harness, not of
the numbers it reports. On CI a missing nginx or dnsmasq fails it (.ci/run installs them)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tests.bench.harness import check_realistic_farm, check_run, run_bench
from tests.bench.tools import require_farm_tools

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
    require_farm_tools()
    bench_redis = urlunsplit(urlsplit(redis_url)._replace(path=f"/{BENCH_REDIS_DB}"))
    return run_bench(
        "--preset",
        "smoke",
        "--postgres-url",
        postgres_admin_url,
        "--redis-url",
        bench_redis,
        results_dir=tmp_path,
    )


async def test_smoke_preset_runs_end_to_end_and_prints_its_summary_last(
    smoke_run: subprocess.CompletedProcess[str], postgres_admin_url: str, tmp_path: Path
) -> None:
    results = check_run(smoke_run, "smoke", 300, tmp_path)
    assert results["mode"] == "distributed"
    check_realistic_farm(results)
    kinds = {row["kind"] for row in results["processes"]}
    assert {"scheduler", "worker-monitoring", "worker-status-change"} <= kinds
    # The scratch database is dropped at the end.
    assert await _bench_databases(postgres_admin_url, results["run_id"]) == []
