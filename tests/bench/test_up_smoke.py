"""The benchmark harness runs `runstate up` (one process, SQLite, in-process queue) end to
end with its up-smoke preset, on the realistic farm: a check of the harness, not of the
numbers it reports. It needs neither PostgreSQL nor Redis, but nginx and dnsmasq."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tests.bench.harness import check_realistic_farm, check_run, run_bench
from tests.bench.tools import require_farm_tools


def test_up_smoke_preset_runs_runstate_up_alone_and_prints_its_summary_last(
    tmp_path: Path,
) -> None:
    require_farm_tools()
    results = check_run(
        run_bench("--preset", "up-smoke", results_dir=tmp_path), "up-smoke", 300, tmp_path
    )

    assert results["mode"] == "up"
    check_realistic_farm(results)
    kinds = {row["kind"] for row in results["processes"]}
    assert "runstate up" in kinds
    assert not any(kind.startswith(("scheduler", "worker-", "postgres", "redis")) for kind in kinds)
    assert results["per_1k_checks"] == {}  # no PostgreSQL or Redis to count with
    # The work directory, the SQLite file in it, is removed at the end.
    assert not list(Path(tempfile.gettempdir()).glob(f"runstate-bench-{results['run_id']}-*"))
