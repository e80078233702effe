"""The fixed latency histogram every rollup keeps, and the percentiles read from it.

A rollup cannot keep every response time, but it can keep how many fell under each of a
fixed list of bounds. Sums of histograms are histograms, so a day, a month or a thousand
monitors add up bucket by bucket, and p50, p95 and p99 come from the buckets: within the
bucket that holds the wanted rank, the value is interpolated linearly, then clamped to the
range's true minimum and maximum (which the rollups keep exactly).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Upper bounds, in milliseconds, of every bucket but the last (which holds the rest). Dense
# where web responses are, so that a p95 read from them is within a bucket's width.
LATENCY_BOUNDS_MS: tuple[int, ...] = (
    10, 25, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2500, 5000, 10000,
)  # fmt: skip

# The rollup column of each bucket, in order: "rt_le_10" … "rt_le_10000", then "rt_over".
LATENCY_COLUMNS: tuple[str, ...] = (*(f"rt_le_{b}" for b in LATENCY_BOUNDS_MS), "rt_over")


def bucket_index(response_time_ms: int) -> int:
    """The index of the bucket that counts ``response_time_ms``."""
    for index, bound in enumerate(LATENCY_BOUNDS_MS):
        if response_time_ms <= bound:
            return index
    return len(LATENCY_BOUNDS_MS)


def percentile(
    counts: Sequence[int], fraction: float, *, minimum: int | None, maximum: int | None
) -> float | None:
    """The ``fraction`` quantile (0 < fraction <= 1) of the values counted in ``counts``
    (one count per bucket, in LATENCY_COLUMNS order), or None when nothing was counted."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = fraction * total
    below = 0
    for index, count in enumerate(counts):
        if count and below + count >= rank:
            low = 0.0 if index == 0 else float(LATENCY_BOUNDS_MS[index - 1])
            if index < len(LATENCY_BOUNDS_MS):
                high = float(LATENCY_BOUNDS_MS[index])
            else:  # the open-ended last bucket reaches up to the true maximum
                high = float(maximum) if maximum is not None else low
            value = low + (high - low) * (rank - below) / count
            if minimum is not None:
                value = max(value, float(minimum))
            if maximum is not None:
                value = min(value, float(maximum))
            return value
        below += count
    return float(maximum) if maximum is not None else None


@dataclass(frozen=True)
class Latency:
    """Response times over a period, from the rollups (null when none was measured)."""

    avg_ms: float | None
    min_ms: int | None
    max_ms: int | None
    p95_ms: float | None


# The columns latency_from reads, in its order.
LATENCY_FIELDS: tuple[str, ...] = ("timed_checks", "rt_sum", "rt_min", "rt_max", *LATENCY_COLUMNS)


def latency_of(row: Any) -> Latency:
    """The latency of a row of summed rollups (timed_checks, rt_sum, rt_min, rt_max and the
    histogram's columns)."""
    return latency_from([getattr(row, name) for name in LATENCY_FIELDS])


def latency_from(values: Sequence[Any]) -> Latency:
    """The latency of the summed rollup columns LATENCY_FIELDS, in that order."""
    timed_checks, rt_sum, rt_min, rt_max = values[:4]
    timed = int(timed_checks or 0)
    if not timed:
        return Latency(None, None, None, None)
    counts = [int(count or 0) for count in values[4:]]
    p95 = percentile(counts, 0.95, minimum=rt_min, maximum=rt_max)
    return Latency(round(rt_sum / timed, 1), rt_min, rt_max, p95)
