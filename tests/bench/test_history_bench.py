"""The history benchmark (bench/history.py) runs end to end at a tiny scale: a check of the
harness, not of the numbers it reports."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from tests.bench.harness import ROOT

SECTIONS = (
    "## Bytes per raw check row",
    "## Bytes per rollup row",
    "## Disk per monitor with the default retention",
    "## Endpoints",
    "## Dropping a day's partition while ingest runs",
    "## The seeded history",
)


@pytest.fixture
def tiny_run(postgres_admin_url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.history",
            "--monitors=50",
            "--days=10",
            "--hourly-days=2",
            "--raw-minutes=10",
            "--bytes-rows=5000",
            "--bytes-monitors=50",
            "--drop-rows=2000",
            "--ingest-margin=1",
            "--requests=10",
            "--warmup=2",
            "--postgres-url",
            postgres_admin_url,
            "--results-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def _history_databases(admin_url: str, run_id: str) -> list[str]:
    connection = await asyncpg.connect(admin_url)
    try:
        rows = await connection.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE $1",
            f"runstate_bench_history_{run_id}%",
        )
    finally:
        await connection.close()
    return [row[0] for row in rows]


async def test_history_bench_writes_and_prints_a_report_with_every_section(
    tiny_run: subprocess.CompletedProcess[str], postgres_admin_url: str, tmp_path: Path
) -> None:
    assert tiny_run.returncode == 0, tiny_run.stderr[-3000:]
    (report,) = tmp_path.glob("history-*.md")
    text = report.read_text()
    assert text in tiny_run.stdout
    for section in SECTIONS:
        assert section in text
    # The same 5,000 rows before and after, each with a size per row.
    assert re.search(r"\| revision 0005 .*\| 5,000 \| [\d.]+ \| [\d.]+ \| \*\*[\d.]+\*\*", text)
    assert re.search(r"\| head .*\| 5,000 \| [\d.]+ \| [\d.]+ \| \*\*[\d.]+\*\*", text)
    # Ingest never failed while the day was dropped, and the day went.
    assert "Failed inserts: 0;" in text
    assert "days dropped: none" not in text
    # The baselines were measured and every endpoint answered what it served.
    assert re.search(r"\| `GET /api/v1/health` \| [\d.]+ \|", text)
    assert re.search(r"\| `GET /api/v1/me` \| [\d.]+ \|.*200 x10", text)
    assert "500 x" not in text
    # Where the list reads running totals, the seeded ones agree with summing every row.
    agreement = re.search(r"every row for ([\d,]+) of ([\d,]+) \(monitor, window\)", text)
    if agreement is not None:
        assert agreement.group(1) == agreement.group(2)
    # The scratch databases are dropped at the end.
    run_id = re.search(r"`runstate_bench_history_([0-9a-f]{8})\*`, dropped", text)
    assert run_id is not None
    assert await _history_databases(postgres_admin_url, run_id.group(1)) == []
